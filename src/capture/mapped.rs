//! A regular file read through a memory map that slides along it.
//!
//! Reading a capture with `read` copies every byte out of the page cache into a buffer, and a
//! buffered parser then moves the unread tail of that buffer on every refill: on a capture of
//! a million small frames that is about a tenth of the time metro takes. Through a map the
//! reader borrows each frame straight from the page cache instead.
//!
//! The map covers one window of the file at a time ([`WINDOW`] bytes, or more when a caller
//! asks for more at once), populated when it is made (`MAP_POPULATE`), so reading it takes no
//! page fault; it is replaced when the reader asks for bytes past its end. Mapped pages count
//! in the process's resident memory, so a window bounds what the file adds to it, whatever the
//! file's size. The file's size is asked again at the end of what is known of it, so a capture
//! still being appended to is read as far as it goes, as `read` would.
//!
//! A file cut shorter by another program while a window of it is mapped makes reading the lost
//! pages raise SIGBUS, where `read` would see the end of the file: so only files read once and
//! whole (`--pcap` offline) are mapped, and captures written while they are read (go-metro
//! mode's file instances, pipes) are streamed.
//!
//! This module and [`super::ring`] are the only ones with `unsafe`: each use has a `SAFETY`
//! comment.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Bytes a window maps unless more are asked for: large enough that remapping (two system
/// calls) costs nothing next to reading the window, small enough to add little resident memory.
pub const WINDOW: usize = 8 << 20;

/// A regular file and the window of it that is mapped.
pub struct MappedFile {
    file: File,
    /// The file's size when last asked.
    size: u64,
    map: Option<Map>,
}

/// One mapping of part of a file.
struct Map {
    ptr: NonNull<u8>,
    len: usize,
    /// The file offset of its first byte, a multiple of the page size.
    offset: u64,
}

// SAFETY: a `Map` owns its mapping exclusively (nothing else holds its address) and only reads
// it, so it may move to another thread.
unsafe impl Send for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what `mmap` returned and was given, the mapping is
        // unmapped only here, and no borrow of its bytes outlives `&self` (see `MappedFile::view`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl MappedFile {
    /// The file, to be read through windows; the file back when it is not a regular file (a
    /// pipe, a terminal, a device), which can only be read as a stream.
    pub fn new(file: File) -> Result<MappedFile, File> {
        match file.metadata() {
            Ok(meta) if meta.file_type().is_file() => Ok(MappedFile {
                file,
                size: meta.len(),
                map: None,
            }),
            _ => Err(file),
        }
    }

    /// The file's bytes from `offset` on, at least `want` of them unless the file ends sooner
    /// (then up to its end: empty at or past it). Remaps when the current window does not hold
    /// them; asks the file's size again only at the end of what is known of it (see
    /// [`MappedFile::reload`]).
    pub fn view(&mut self, offset: u64, want: usize) -> io::Result<&[u8]> {
        let end = offset.saturating_add(want as u64).min(self.size);
        let held = self.map.as_ref().is_some_and(|m| {
            let m_end = m.offset + m.len as u64;
            m.offset <= offset && offset < m_end && end <= m_end
        });
        if !held {
            self.remap(offset, want)?;
        }
        Ok(match &self.map {
            Some(m) if m.offset <= offset && offset < m.offset + m.len as u64 => {
                // SAFETY: the mapping is `len` readable bytes from `ptr`, kept until the next
                // `remap` or the drop, both of which need `&mut self` and so end this borrow.
                // The file is only read through it (PROT_READ, MAP_PRIVATE).
                let all = unsafe { std::slice::from_raw_parts(m.ptr.as_ptr(), m.len) };
                &all[(offset - m.offset) as usize..]
            }
            _ => &[],
        })
    }

    /// [`MappedFile::view`] after asking the file's size again: for bytes that ran short at
    /// what was the file's end.
    pub fn reload(&mut self, offset: u64, want: usize) -> io::Result<&[u8]> {
        let size = self.file.metadata()?.len();
        if size != self.size {
            self.size = size;
            self.map = None;
        }
        self.view(offset, want)
    }

    /// Maps a window that starts at or just before `offset` and holds `want` bytes from it, as
    /// far as the file goes.
    fn remap(&mut self, offset: u64, want: usize) -> io::Result<()> {
        self.map = None;
        if offset.saturating_add(want as u64) > self.size {
            self.size = self.file.metadata()?.len();
        }
        let page = page_size();
        let start = offset - offset % page;
        if start >= self.size {
            return Ok(());
        }
        let len = (want.max(WINDOW) as u64 + (offset - start)).min(self.size - start) as usize;
        // SAFETY: a fresh private, read-only mapping of `len` bytes of an open file at a
        // page-aligned offset below its size; the kernel picks the address, so nothing of ours
        // is overwritten. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                self.file.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        self.map = Some(Map {
            ptr,
            len,
            offset: start,
        });
        Ok(())
    }

    /// The file, to be read as a stream instead.
    pub fn into_file(self) -> File {
        self.file
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: &[u8]) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "metro-mapped-{}-{}",
            std::process::id(),
            bytes.len()
        ));
        std::fs::write(&path, bytes).unwrap();
        let f = File::open(&path).unwrap();
        (path, f)
    }

    #[test]
    fn views_cross_windows_and_end_at_the_file_end() {
        let bytes: Vec<u8> = (0..WINDOW * 2 + 1000).map(|i| (i % 251) as u8).collect();
        let (path, f) = temp_file(&bytes);
        let mut m = MappedFile::new(f).ok().unwrap();
        for offset in [0, 1, 4095, 4096, WINDOW - 10, WINDOW, 2 * WINDOW + 999] {
            let v = m.view(offset as u64, 100).unwrap();
            let want = 100.min(bytes.len() - offset);
            assert!(v.len() >= want, "{offset}");
            assert_eq!(&v[..want], &bytes[offset..offset + want], "{offset}");
            assert_eq!(v.len(), v.len().min(bytes.len() - offset));
        }
        // More than a window at once.
        let v = m.view(10, WINDOW + 500).unwrap();
        assert_eq!(&v[..WINDOW + 500], &bytes[10..WINDOW + 510]);
        assert!(m.view(bytes.len() as u64, 16).unwrap().is_empty());
        assert!(m.view(u64::MAX - 3, 16).unwrap().is_empty());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_file_that_grows_is_read_as_far_as_it_goes() {
        let (path, f) = temp_file(&[1; 100]);
        let mut m = MappedFile::new(f).ok().unwrap();
        assert_eq!(m.view(0, 16).unwrap().len(), 100);
        assert!(m.view(100, 16).unwrap().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[2; 50])
            .unwrap();
        assert_eq!(
            m.view(0, 200).unwrap().len(),
            100,
            "the known size, until reloaded"
        );
        assert_eq!(m.reload(0, 200).unwrap().len(), 150);
        assert_eq!(m.view(100, 16).unwrap(), &[2; 50]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn only_regular_files_are_mapped() {
        let f = File::open("/dev/null").unwrap();
        assert!(MappedFile::new(f).is_err());
    }
}
