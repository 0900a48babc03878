//! Where frames come from.
//!
//! Every source hands the worker the same thing: a [`Frame`], a slice of bytes it borrows for the
//! length of one call, with the time the frame was captured. Files are read by [`file`](mod@file)
//! (several as one, by [`input`]); live
//! interfaces by the TPACKET_V3 ring ([`ring`]), behind a kernel filter metro builds itself
//! ([`filter`]), narrowed by a libpcap expression when `-f` gives one ([`expr`]), on an interface
//! found by name ([`iface`]). The worker never learns which one it
//! is fed by, so a capture file replays exactly as the same traffic would live.

pub mod expr;
pub mod file;
pub mod filter;
pub mod iface;
pub mod input;
pub mod mapped;
pub mod ring;

/// One captured frame, borrowed from a file buffer or a capture ring.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture time, in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The captured bytes, starting at the link-layer header. May be cut by the snap length.
    pub data: &'a [u8],
    /// The frame's length on the wire, which is at least `data.len()`.
    pub wire_len: u32,
}

/// The link-layer framing of a capture source, from its pcap `LINKTYPE_*` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET` (1): Ethernet II, possibly with 802.1Q / QinQ tags.
    Ethernet,
    /// `LINKTYPE_NULL` (0): BSD loopback, a 4-byte address family in the capturing host's byte order.
    Null,
    /// `LINKTYPE_LOOP` (108): OpenBSD loopback, a 4-byte address family in network byte order.
    Loop,
    /// `LINKTYPE_RAW` (101): a bare IPv4 or IPv6 packet.
    Raw,
    /// `LINKTYPE_IPV4` (228): a bare IPv4 packet.
    Ipv4,
    /// `LINKTYPE_IPV6` (229): a bare IPv6 packet.
    Ipv6,
    /// `LINKTYPE_LINUX_SLL` (113): Linux "cooked" capture, version 1.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux "cooked" capture, version 2.
    LinuxSll2,
}

impl LinkType {
    /// Maps a pcap `LINKTYPE_*` number to a link type metro decodes, or `None`.
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        Some(match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            // DLT_RAW has two numbers in the wild: 12 on most BSDs, 14 on OpenBSD.
            101 | 12 | 14 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}
