//! TPACKET_V3 receive rings: AF_PACKET sockets, their mmap'd rings, and one fanout group.
//!
//! Each worker owns one socket and its ring. The kernel fills a ring block by block; a block
//! belongs to the kernel while its `block_status` is `TP_STATUS_KERNEL` and to us once the kernel
//! sets `TP_STATUS_USER`. We read that word with Acquire ordering (the kernel writes the block,
//! issues `smp_wmb()` and then sets the status, in `prb_close_block`), read the frames in place,
//! and hand the block back by storing `TP_STATUS_KERNEL` with Release ordering, so our reads of
//! the block happen before the kernel may fill it again. Blocks are walked strictly in ring order,
//! as the kernel fills them (the plain walk of the kernel's `psock_tpacket` selftest).
//!
//! All sockets of one capture join one `PACKET_FANOUT` group in `PACKET_FANOUT_HASH` mode: the
//! kernel spreads packets by a symmetric flow hash, so both directions of a TCP connection reach
//! the same worker, and `PACKET_FANOUT_FLAG_DEFRAG` reassembles IPv4 fragments first so that all
//! pieces hash alike. Outgoing packets are kept (no ignore-outgoing flag): an RTT needs both the
//! data and its ACK.
//!
//! The socket and ring code here and the file map in [`super::mapped`] are where metro's `unsafe`
//! lives (the other block is the cache hint in [`crate::flow::prefetch`]): each use sits in a small
//! function with a `SAFETY` comment. It knows nothing of what the frames contain; the filter that selects them is built
//! by [`super::filter`], and frames go to the worker as [`Frame`]s borrowed from the ring.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType};

use super::filter::Insn;
use super::Frame;

/// Byte offsets in the ring's headers (`linux/if_packet.h`), named once and checked against
/// `libc`'s structs by a test.
mod field {
    /// `tpacket_block_desc.hdr.bh1.block_status`.
    pub const BLOCK_STATUS: usize = 8;
    /// `tpacket_block_desc.hdr.bh1.num_pkts`.
    pub const NUM_PKTS: usize = 12;
    /// `tpacket_block_desc.hdr.bh1.offset_to_first_pkt`.
    pub const FIRST_PKT: usize = 16;
    /// Length of the block header fields read here.
    pub const BLOCK_HDR: usize = 20;
    /// `tpacket3_hdr.tp_next_offset`.
    pub const NEXT: usize = 0;
    /// `tpacket3_hdr.tp_sec`.
    pub const SEC: usize = 4;
    /// `tpacket3_hdr.tp_nsec`.
    pub const NSEC: usize = 8;
    /// `tpacket3_hdr.tp_snaplen`.
    pub const SNAPLEN: usize = 12;
    /// `tpacket3_hdr.tp_len`.
    pub const LEN: usize = 16;
    /// `tpacket3_hdr.tp_mac`.
    pub const MAC: usize = 24;
    /// Length of the frame header fields read here.
    pub const FRAME_HDR: usize = 26;
}

/// `tp_frame_size` for the V3 ring request: the kernel only checks it for consistency, since V3
/// packs frames of any length into blocks (2048, as in `psock_tpacket`).
const FRAME_SIZE: u32 = 2048;

/// Why a socket or ring could not be set up, or failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The process may not open packet sockets.
    #[error("capturing needs CAP_NET_RAW: run as root or `setcap cap_net_raw+ep {binary}`")]
    Permission {
        /// This program's path, for the `setcap` command.
        binary: String,
    },
    /// The kernel refused the ring's size.
    #[error(
        "the kernel refused a ring of {blocks} blocks of {block_size} bytes ({source}): \
         use smaller or fewer blocks"
    )]
    RingSize {
        /// Blocks asked for.
        blocks: u32,
        /// Bytes per block asked for.
        block_size: u32,
        /// What the kernel said.
        source: io::Error,
    },
    /// The kernel's verifier refused the generated filter.
    #[error(
        "the kernel refused metro's packet filter ({0}); this is a bug in metro, please report it"
    )]
    Filter(io::Error),
    /// Any other system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
}

fn sys(op: &'static str) -> impl FnOnce(io::Error) -> RingError {
    move |source| RingError::Sys { op, source }
}

/// Plain old data: C structs and integers that any bit pattern the kernel writes leaves valid.
trait Pod: Copy {}
impl Pod for u32 {}
impl Pod for libc::c_int {}
impl Pod for libc::tpacket_stats_v3 {}
impl Pod for libc::tpacket_req3 {}
impl Pod for libc::packet_mreq {}

fn set_opt<T: Pod>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live, initialised `T` for the whole call and the length given is
    // exactly its size; the kernel only reads that many bytes from it. `T: Pod` holds no pointers.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_opt<T: Pod>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    init: T,
) -> io::Result<T> {
    let mut val = init;
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is a live `T` and `len` its size, so the kernel writes at most `len` bytes into
    // memory we own; `T: Pod` means any bytes it writes leave a valid `T`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut val as *mut T).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(val)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kernel counters of one socket since the last read (`PACKET_STATISTICS` clears them).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SocketStats {
    /// Packets that passed the filter, dropped ones included.
    pub packets: u64,
    /// Packets dropped because the ring was full.
    pub drops: u64,
    /// Times the ring froze because every block was full.
    pub freezes: u64,
}

/// What a wait on the socket saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Data may be ready, or the wait timed out.
    Ready,
    /// The socket has a pending error (`ENETDOWN` when the interface went down), now cleared.
    Error(Errno),
}

/// An AF_PACKET socket in raw mode.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket that receives nothing until [`PacketSocket::bind`]. A `cooked` socket
    /// (`SOCK_DGRAM`) delivers frames from their network header on: the only framing that one
    /// socket bound to every interface (`interface: any`) can give, as their link headers
    /// differ; libpcap's `any` device is cooked for the same reason.
    pub fn open(cooked: bool) -> Result<PacketSocket, RingError> {
        let kind = if cooked {
            SockType::Datagram
        } else {
            SockType::Raw
        };
        // Protocol 0: no packet is queued before the filter, ring and fanout are in place.
        match socket::socket(AddressFamily::Packet, kind, SockFlag::SOCK_CLOEXEC, None) {
            Ok(fd) => Ok(PacketSocket { fd }),
            Err(Errno::EPERM | Errno::EACCES) => Err(RingError::Permission {
                binary: std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "metro".into()),
            }),
            Err(e) => Err(RingError::Sys {
                op: "opening a packet socket",
                source: e.into(),
            }),
        }
    }

    /// Replaces the socket's filter (`SO_ATTACH_FILTER`); the kernel verifies it first.
    pub fn attach_filter(&self, prog: &[Insn]) -> Result<(), RingError> {
        let fprog = libc::sock_fprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `fprog` points at `prog`, which outlives the call, and gives its exact length;
        // `Insn` is `#[repr(C)]` with the layout of `struct sock_filter` (checked by a test in
        // `filter`). The kernel copies the instructions and only reads through the pointer.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(RingError::Filter(io::Error::last_os_error()))
        }
    }

    fn set_v3(&self) -> Result<(), RingError> {
        let v = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        set_opt(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, &v)
            .map_err(sys("selecting TPACKET_V3"))
    }

    /// Binds the socket to interface `ifindex` (0: every interface) for every protocol;
    /// packets start to arrive.
    pub fn bind(&self, ifindex: u32) -> Result<(), RingError> {
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as libc::c_ushort,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex as libc::c_int,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: the pointer and length describe `sll`, a fully initialised `sockaddr_ll` that
        // lives for the whole call; the kernel only reads it.
        let r = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(RingError::Sys {
                op: "binding the packet socket to the interface",
                source: io::Error::last_os_error(),
            })
        }
    }

    /// Joins fanout group `id` in hash mode with defragmentation; with `None`, creates a group
    /// with an id the kernel picks (`PACKET_FANOUT_FLAG_UNIQUEID`) and returns it.
    pub fn join_fanout(&self, id: Option<u16>) -> Result<u16, RingError> {
        let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
        let fd = self.fd.as_fd();
        match id {
            Some(id) => {
                let arg: u32 = u32::from(id) | (mode << 16);
                set_opt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                    .map_err(sys("joining the fanout group"))?;
                Ok(id)
            }
            None => {
                let arg: u32 = (mode | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16;
                set_opt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
                    .map_err(sys("creating the fanout group"))?;
                let got: u32 = get_opt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, 0u32)
                    .map_err(sys("reading the fanout group id"))?;
                Ok(got as u16)
            }
        }
    }

    /// Puts the interface in promiscuous mode for as long as this socket is open.
    pub fn add_promiscuous(&self, ifindex: u32) -> Result<(), RingError> {
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_opt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )
        .map_err(sys("entering promiscuous mode"))
    }

    /// Reads and clears the socket's kernel counters.
    pub fn take_stats(&self) -> io::Result<SocketStats> {
        let zero = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let s = get_opt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            zero,
        )?;
        Ok(SocketStats {
            packets: u64::from(s.tp_packets),
            drops: u64::from(s.tp_drops),
            freezes: u64::from(s.tp_freeze_q_cnt),
        })
    }

    /// Waits up to `timeout` for a block or an error; clears and returns a pending error.
    pub fn wait(&self, timeout: Duration) -> io::Result<Wake> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(
            self.fd.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLERR,
        )];
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLERR) {
            let e = socket::getsockopt(&self.fd, sockopt::SocketError)?;
            if e != 0 {
                return Ok(Wake::Error(Errno::from_raw(e)));
            }
        }
        Ok(Wake::Ready)
    }
}

/// Sizes of one ring.
#[derive(Debug, Clone, Copy)]
pub struct RingSize {
    /// Bytes per block: a multiple of the page size.
    pub block_size: u32,
    /// Blocks in the ring.
    pub blocks: u32,
    /// How long the kernel waits before handing over a block that is not full.
    pub block_timeout: Duration,
}

/// A TPACKET_V3 receive ring, mapped into this process.
pub struct Ring {
    sock: Arc<PacketSocket>,
    base: NonNull<u8>,
    block_size: usize,
    blocks: usize,
    next: usize,
}

// SAFETY: the mapping is owned by this `Ring` alone (nothing else in the process holds a pointer
// into it), so moving the `Ring` to a worker thread moves sole access with it.
unsafe impl Send for Ring {}

impl Ring {
    /// Sets `sock` up for TPACKET_V3 with a ring of `size`, and maps the ring.
    pub fn new(sock: Arc<PacketSocket>, size: RingSize) -> Result<Ring, RingError> {
        sock.set_v3()?;
        let req = libc::tpacket_req3 {
            tp_block_size: size.block_size,
            tp_block_nr: size.blocks,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: (size.block_size / FRAME_SIZE) * size.blocks,
            tp_retire_blk_tov: size.block_timeout.as_millis().clamp(1, u32::MAX as u128) as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_opt(
            sock.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
        )
        .map_err(|source| RingError::RingSize {
            blocks: size.blocks,
            block_size: size.block_size,
            source,
        })?;
        let len = size.block_size as usize * size.blocks as usize;
        let base = map_ring(sock.fd.as_fd(), len).map_err(sys("mapping the ring"))?;
        Ok(Ring {
            sock,
            base,
            block_size: size.block_size as usize,
            blocks: size.blocks as usize,
            next: 0,
        })
    }

    /// The socket this ring belongs to.
    pub fn socket(&self) -> &Arc<PacketSocket> {
        &self.sock
    }

    fn status(&self, block: usize) -> &AtomicU32 {
        debug_assert!(block < self.blocks);
        // SAFETY: `block < self.blocks`, so the word lies inside the mapping, which lives as long
        // as `self`; blocks start on page boundaries and the field is at offset 8, so it is
        // 4-byte aligned. The kernel accesses this word concurrently, which is why it is only ever
        // touched through an atomic.
        unsafe {
            AtomicU32::from_ptr(
                self.base
                    .as_ptr()
                    .add(block * self.block_size + field::BLOCK_STATUS)
                    .cast(),
            )
        }
    }

    /// The next block in ring order, if the kernel has handed it over.
    #[inline]
    pub fn next_block(&mut self) -> Option<Block<'_>> {
        let at = self.next;
        if self.status(at).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the Acquire load above saw TP_STATUS_USER, so the kernel has finished writing
        // this block (it sets the status after `smp_wmb()`) and will not write it again until
        // `Block::drop` stores TP_STATUS_KERNEL. The slice lies inside the mapping, and the
        // returned `Block` borrows `self` mutably, so no second view of it exists and no frame
        // borrowed from it outlives the hand-back.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(at * self.block_size),
                self.block_size,
            )
        };
        Some(Block {
            ring: self,
            bytes,
            at,
        })
    }
}

fn map_ring(fd: BorrowedFd<'_>, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of the socket's ring, at an address the kernel picks, so it
    // overlaps nothing of ours; `len` is the ring's exact size as set with PACKET_RX_RING.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned a null mapping"))
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are exactly the mapping made in `Ring::new`; no `Block`
        // can be alive (it would borrow `self`), so nothing points into the mapping any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.block_size * self.blocks);
        }
    }
}

/// A ring block handed over by the kernel; it goes back to the kernel when dropped.
pub struct Block<'r> {
    ring: &'r mut Ring,
    bytes: &'r [u8],
    at: usize,
}

impl Block<'_> {
    /// The block's frames, in the order the kernel wrote them.
    #[inline]
    pub fn frames(&self) -> Frames<'_> {
        let b = self.bytes;
        let (count, first) = if b.len() >= field::BLOCK_HDR {
            (
                read_u32(b, field::NUM_PKTS),
                read_u32(b, field::FIRST_PKT) as usize,
            )
        } else {
            (0, 0)
        };
        Frames {
            bytes: b,
            off: first,
            left: count,
        }
    }
}

impl Drop for Block<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: every read of this block above happens before the kernel sees it as its own.
        self.ring
            .status(self.at)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.ring.next = (self.at + 1) % self.ring.blocks;
    }
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The frames of one block. Offsets come from the kernel; each is checked against the block's
/// bounds anyway, so a damaged block ends the walk instead of reading outside it.
pub struct Frames<'b> {
    bytes: &'b [u8],
    off: usize,
    left: u32,
}

impl<'b> Iterator for Frames<'b> {
    type Item = Frame<'b>;

    #[inline]
    fn next(&mut self) -> Option<Frame<'b>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.bytes;
        let h = self.off;
        if h.checked_add(field::FRAME_HDR)? > b.len() {
            self.left = 0;
            return None;
        }
        let sec = u64::from(read_u32(b, h + field::SEC));
        let nsec = u64::from(read_u32(b, h + field::NSEC));
        let snaplen = read_u32(b, h + field::SNAPLEN) as usize;
        let wire_len = read_u32(b, h + field::LEN);
        let mac = u16::from_ne_bytes([b[h + field::MAC], b[h + field::MAC + 1]]) as usize;
        let next = read_u32(b, h + field::NEXT) as usize;
        let Some(data) = b.get(h + mac..h + mac + snaplen) else {
            self.left = 0;
            return None;
        };
        if next == 0 {
            self.left = 0;
        }
        self.off = h + next;
        Some(Frame {
            ts_ns: sec * 1_000_000_000 + nsec,
            data,
            wire_len: wire_len.max(snaplen as u32),
        })
    }
}

/// The interface index that binds a packet socket to every interface.
pub const ANY_IFINDEX: u32 = 0;

/// Opens `n` sockets with rings on interface `ifindex`, all in one new fanout group; on
/// [`ANY_IFINDEX`] the sockets are cooked (see [`PacketSocket::open`]).
///
/// Every socket carries `hold` (a filter that keeps nothing) until the whole group has joined:
/// while members join, the kernel's hash-to-member mapping changes, and a flow's packets could
/// otherwise land on two workers. The caller attaches the real filter afterwards.
pub fn open_group(
    ifindex: u32,
    n: usize,
    size: RingSize,
    promiscuous: bool,
    hold: &[Insn],
) -> Result<Vec<Ring>, RingError> {
    let mut rings = Vec::with_capacity(n);
    let mut group = None;
    for i in 0..n {
        let sock = Arc::new(PacketSocket::open(ifindex == ANY_IFINDEX)?);
        sock.attach_filter(hold)?;
        let ring = Ring::new(Arc::clone(&sock), size)?;
        sock.bind(ifindex)?;
        group = Some(sock.join_fanout(group)?);
        if promiscuous && i == 0 {
            sock.add_promiscuous(ifindex)?;
        }
        rings.push(ring);
    }
    Ok(rings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn field_offsets_match_the_kernel_headers() {
        let hdr = offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(
            hdr + offset_of!(libc::tpacket_hdr_v1, block_status),
            field::BLOCK_STATUS
        );
        assert_eq!(
            hdr + offset_of!(libc::tpacket_hdr_v1, num_pkts),
            field::NUM_PKTS
        );
        assert_eq!(
            hdr + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt),
            field::FIRST_PKT
        );
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_next_offset), field::NEXT);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_sec), field::SEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_nsec), field::NSEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), field::SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), field::LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), field::MAC);
    }

    fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn frames_are_walked_by_next_offset_and_bounded_by_the_block() {
        let mut b = vec![0u8; 512];
        put(&mut b, field::NUM_PKTS, 3);
        put(&mut b, field::FIRST_PKT, 48);
        // Frame 1 at 48: 4 bytes at mac offset 32; next at +64.
        put(&mut b, 48 + field::NEXT, 64);
        put(&mut b, 48 + field::SEC, 7);
        put(&mut b, 48 + field::NSEC, 5);
        put(&mut b, 48 + field::SNAPLEN, 4);
        put(&mut b, 48 + field::LEN, 1500);
        b[48 + field::MAC] = 32;
        b[80..84].copy_from_slice(&[1, 2, 3, 4]);
        // Frame 2 at 112 claims more bytes than the block holds: the walk stops.
        put(&mut b, 112 + field::NEXT, 64);
        put(&mut b, 112 + field::SNAPLEN, 4096);
        b[112 + field::MAC] = 32;
        let frames = Frames {
            bytes: &b,
            off: 48,
            left: 3,
        };
        let got: Vec<_> = frames
            .map(|f| (f.ts_ns, f.data.to_vec(), f.wire_len))
            .collect();
        assert_eq!(got, vec![(7_000_000_005, vec![1, 2, 3, 4], 1500)]);
    }
}
