//! What `--pcap` names: one capture, or several read as one.
//!
//! Each name is a file, `-` for standard input, or a glob (`trace-*.pcap`, matched in its
//! folder when no file has that very name, so a quoted pattern works as an unquoted one does in
//! a shell). Several captures, such as the files `tcpdump -C` or `-G` rotates through, are
//! merged by capture time: each file's next frame waits in a one-frame buffer and the earliest
//! goes first (ties in the order the files were named), so a flow that spans two files keeps
//! its state and every ACK meets the data it acknowledges. Within one file the file's order is
//! kept. Memory is one frame per file beside each reader's own bounded buffer.
//!
//! A single capture is read straight from its reader's buffer, without the copy that merging
//! needs.

use std::path::{Path, PathBuf};

use super::file::{FileError, FileSource, FileStats, STDIN};
use super::{Frame, LinkType};

/// Why the names given do not make a set of captures.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A capture could not be opened.
    #[error(transparent)]
    File(#[from] FileError),
    /// A glob matched nothing.
    #[error("no file matches {0}; check the pattern and its folder (`ls {0}`)")]
    NoMatch(String),
    /// Standard input named twice.
    #[error("standard input (`-`) can be read only once; name it once")]
    StdinTwice,
}

/// One or several captures, read as one in capture-time order.
pub struct Captures {
    sources: Vec<Head>,
}

/// A capture and its next frame, copied out of the reader's buffer.
struct Head {
    source: FileSource,
    link: LinkType,
    ts_ns: u64,
    wire_len: u32,
    data: Vec<u8>,
    /// False once the capture has ended (or failed).
    ready: bool,
}

impl Head {
    /// Reads the next frame into the buffer; false at the end.
    fn advance(&mut self) -> Result<bool, FileError> {
        let Head {
            source,
            link,
            ts_ns,
            wire_len,
            data,
            ready,
        } = self;
        *ready = source.read_while(|l, f| {
            *link = l;
            *ts_ns = f.ts_ns;
            *wire_len = f.wire_len;
            data.clear();
            data.extend_from_slice(f.data);
            false
        })?;
        Ok(*ready)
    }
}

impl Captures {
    /// Opens every capture the names give (globs expanded), in order; any that cannot be opened
    /// stops here, before anything is read.
    pub fn open(names: &[PathBuf]) -> Result<Captures, InputError> {
        let mut paths = Vec::new();
        for name in names {
            paths.extend(expand(name)?);
        }
        if paths.iter().filter(|p| p.as_os_str() == STDIN).count() > 1 {
            return Err(InputError::StdinTwice);
        }
        let mut sources = Vec::with_capacity(paths.len());
        for p in &paths {
            sources.push(Head {
                source: FileSource::open_mapped(p)?,
                link: LinkType::Ethernet,
                ts_ns: 0,
                wire_len: 0,
                data: Vec::new(),
                ready: false,
            });
        }
        Ok(Captures { sources })
    }

    /// How many captures are read.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when no capture was named.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// What the readers saw besides packets, summed.
    pub fn stats(&self) -> FileStats {
        let mut sum = FileStats::default();
        for h in &self.sources {
            let s = h.source.stats();
            sum.records += s.records;
            sum.unknown_link += s.unknown_link;
            sum.untimed += s.untimed;
        }
        sum
    }

    /// Calls `f` with every packet, earliest first across captures, until every capture has
    /// ended or one fails (the packets before the failure have been passed on).
    pub fn for_each(&mut self, mut f: impl FnMut(LinkType, &Frame<'_>)) -> Result<(), FileError> {
        if let [one] = self.sources.as_mut_slice() {
            return one.source.for_each(f);
        }
        for h in &mut self.sources {
            h.advance()?;
        }
        loop {
            let mut next: Option<usize> = None;
            for (i, h) in self.sources.iter().enumerate() {
                if h.ready && next.is_none_or(|n| h.ts_ns < self.sources[n].ts_ns) {
                    next = Some(i);
                }
            }
            let Some(i) = next else {
                return Ok(());
            };
            let h = &mut self.sources[i];
            f(
                h.link,
                &Frame {
                    ts_ns: h.ts_ns,
                    data: &h.data,
                    wire_len: h.wire_len,
                },
            );
            h.advance()?;
        }
    }
}

/// The files a name stands for: itself when it exists (or is `-`), else the files its glob
/// matches in its folder, sorted.
fn expand(name: &Path) -> Result<Vec<PathBuf>, InputError> {
    let text = name.to_string_lossy();
    let is_glob = text.contains(['*', '?']);
    if !is_glob || name.as_os_str() == STDIN || name.exists() {
        return Ok(vec![name.to_owned()]);
    }
    let dir = match name.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let pattern = name
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir.to_string_lossy().contains(['*', '?']) {
        // Only the last component is matched; a pattern in a folder name is left to the shell.
        return Err(InputError::NoMatch(text.into_owned()));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|_| InputError::NoMatch(text.to_string()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            glob_match(
                pattern.as_bytes(),
                e.file_name().to_string_lossy().as_bytes(),
            )
        })
        .map(|e| {
            if name.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
                dir.join(e.file_name())
            } else {
                PathBuf::from(e.file_name())
            }
        })
        .filter(|p| p.is_file())
        .collect();
    if found.is_empty() {
        return Err(InputError::NoMatch(text.into_owned()));
    }
    found.sort();
    Ok(found)
}

/// A shell glob's `*` (any run of characters) and `?` (any one), over the whole name.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // The classic two-pointer walk: on a mismatch, let the last `*` take one more character.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_match(b"trace-*.pcap", b"trace-01.pcap"));
        assert!(glob_match(b"trace-*.pcap", b"trace-.pcap"));
        assert!(!glob_match(b"trace-*.pcap", b"trace-01.pcapng"));
        assert!(glob_match(b"t?.pcap*", b"t1.pcap.gz"));
        assert!(!glob_match(b"t?.pcap", b"t12.pcap"));
        assert!(glob_match(b"*a*b", b"xaxxb"));
        assert!(!glob_match(b"*a*b", b"xaxxbc"));
    }

    #[test]
    fn a_glob_that_matches_nothing_says_so() {
        let e = expand(Path::new("/nonexistent-folder-of-metro/x*.pcap")).unwrap_err();
        assert!(e.to_string().contains("no file matches"), "{e}");
    }
}
