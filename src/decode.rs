//! Bytes → a borrowed view of one TCP segment.
//!
//! [`decode`] walks a frame's link and IP headers (with `etherparse`'s header slices, which read
//! fields in place) down to the TCP header, and returns a [`Segment`]: a zero-copy view over the
//! TCP header bytes plus the few facts from the IP header that the RTT estimator needs. Anything
//! that is not a usable TCP segment comes back as a [`Skip`] reason, which the worker counts.
//!
//! Two rules make this usable on real captures:
//! - A frame cut by the snap length is still used when its TCP header, options included, is
//!   complete. The payload length comes from the IP header, never from the captured bytes.
//! - Non-first fragments carry no TCP header and are skipped (counted as fragments).
//!
//! Encapsulated TCP is decoded to its inner segment, off the fast path: VXLAN (UDP port 4789,
//! RFC 7348), Geneve (UDP port 6081, RFC 8926), GRE version 0 with or without checksum, key and
//! sequence number (RFC 2784, RFC 2890) carrying IP, Ethernet, MPLS or ERSPAN types I–III, IP in
//! IP in all four combinations of IPv4 and IPv6 (RFC 2003, RFC 4213, RFC 2473), and MPLS label
//! stacks (RFC 3032) over Ethernet or GRE, with an Ethernet pseudowire's control word
//! (RFC 4448). A segment found inside one IP packet is inner; one level is decoded, and a tunnel
//! inside the inner packet is counted ([`Skip::NestedTunnel`]) and skipped. A tunnel whose
//! headers are impossible or whose inner packet disagrees with the outer one about its length is
//! counted as [`Skip::BadTunnel`]; a snap-length cut is [`Skip::Truncated`], as for plain frames.
//! The segment carries the inner addresses and ports only: the flow is the inner 5-tuple, and
//! the tunnel's identity (VNI, GRE key, outer addresses) is not part of it.
//!
//! This module deliberately knows nothing about flows or RTT: it never looks past one frame.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ip_number, EtherType, Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6ExtensionsSlice,
    Ipv6HeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice,
};

use crate::capture::LinkType;

/// Why a frame was not turned into a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6, or IP carrying something other than TCP.
    NotTcp,
    /// Cut short before the end of the TCP header (snap length or a broken capture).
    Truncated,
    /// A header field is impossible (bad version, lengths that contradict each other).
    Malformed,
    /// A non-first IP fragment: it has no TCP header.
    Fragment,
    /// The capture's link type is one metro does not decode.
    UnknownLink,
    /// A tunnel inside a tunnel: one level of encapsulation is decoded.
    NestedTunnel,
    /// A tunnel header that is impossible or unsupported (GRE with unknown flags or version,
    /// VXLAN without its VNI flag, an MPLS label stack that never ends), or an inner packet that
    /// disagrees with the outer headers about its length.
    BadTunnel,
}

impl Skip {
    /// Every reason, in the order counters are printed.
    pub const ALL: [Skip; 7] = [
        Skip::NotTcp,
        Skip::Truncated,
        Skip::Malformed,
        Skip::Fragment,
        Skip::UnknownLink,
        Skip::NestedTunnel,
        Skip::BadTunnel,
    ];

    /// The reasons printed even when their count is 0 (the tunnel reasons appear only when
    /// counted, so that outputs of captures without tunnels keep their fields).
    pub const ALWAYS_SHOWN: usize = 5;

    /// True when the counter of this reason is printed even at 0.
    pub fn always_shown(self) -> bool {
        self.index() < Skip::ALWAYS_SHOWN
    }

    /// A stable snake_case name, used in JSON output and metric names.
    pub fn name(self) -> &'static str {
        match self {
            Skip::NotTcp => "not_tcp",
            Skip::Truncated => "truncated",
            Skip::Malformed => "malformed",
            Skip::Fragment => "fragment",
            Skip::UnknownLink => "unknown_link",
            Skip::NestedTunnel => "tunnel_nested",
            Skip::BadTunnel => "tunnel_bad",
        }
    }

    /// Index into a counter array ordered as [`Skip::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An IP address stored as 16 bytes; IPv4 is kept IPv4-mapped (`::ffff:a.b.c.d`) so that both
/// families share one flow key type and compare with plain byte equality.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// Wraps an IPv4 address (as its four bytes in network order).
    #[inline]
    pub fn v4(octets: [u8; 4]) -> Addr {
        // Built as one 128-bit word, which stays in registers; byte stores would be written to
        // the stack piecewise and then read back whole, which the CPU cannot forward.
        let v = (0xffff_u128 << 32) | u128::from(u32::from_be_bytes(octets));
        Addr(v.to_be_bytes())
    }

    /// Wraps an IPv6 address (as its sixteen bytes in network order).
    #[inline]
    pub fn v6(octets: [u8; 16]) -> Addr {
        Addr(octets)
    }

    /// True when this is an IPv4-mapped address.
    #[inline]
    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0u8; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    /// The standard library form: IPv4 for mapped addresses, IPv6 otherwise.
    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::v4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Addr::v4(v4.octets()),
                None => Addr::v6(v6.octets()),
            },
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

/// Byte offsets of the TCP header fields (RFC 9293 §3.1), named once.
mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const OPTIONS: usize = 20;
}

/// Splits a complete TCP header into its fixed part and its options.
#[inline]
fn split_tcp(tcp: &[u8]) -> Result<(&[u8; field::OPTIONS], &[u8]), Skip> {
    tcp.split_first_chunk().ok_or(Skip::Truncated)
}

/// Byte offsets in an untagged Ethernet II frame carrying IPv4 without options: the layout of
/// nearly every frame on a busy link, which [`decode`] reads directly before falling back to the
/// general walk (RFC 894, RFC 791 §3.1).
mod eth_ipv4 {
    use std::ops::Range;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const VERSION_IHL: usize = 14;
    pub const TOTAL_LEN: Range<usize> = 16..18;
    pub const FRAG: Range<usize> = 20..22;
    pub const PROTOCOL: usize = 23;
    pub const SRC: Range<usize> = 26..30;
    pub const DST: Range<usize> = 30..34;
    pub const TCP: usize = 34;
    /// IPv4, header length 5 words.
    pub const V4_NO_OPTIONS: u8 = 0x45;
    /// The fragment offset bits of the flags/offset field.
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// TCP flag bits in the flags byte (offset 13).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
}

/// TCP option kinds metro reads (RFC 9293 §3.2, RFC 7323 §3).
mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const TIMESTAMP: u8 = 8;
    pub const TIMESTAMP_LEN: usize = 10;
    /// NOP, NOP, then the timestamp option's kind and length, as one big-endian word.
    pub const NOP_NOP_TIMESTAMP: u32 = u32::from_be_bytes([NOP, NOP, TIMESTAMP, 10]);
}

/// A zero-copy view of one TCP segment inside a captured frame.
///
/// The TCP header, options included, is known to be complete; every accessor indexes it without
/// further checks.
#[derive(Clone)]
pub struct Segment<'a> {
    addrs: Addrs,
    /// The fixed 20 bytes of the TCP header.
    tcp: &'a [u8; field::OPTIONS],
    /// The TCP options, complete.
    opts: &'a [u8],
    payload_len: u32,
}

/// A segment's source and destination addresses, IPv4 kept as numbers until asked for.
#[derive(Clone, Copy)]
enum Addrs {
    V4(u32, u32),
    V6(Addr, Addr),
}

impl<'a> Segment<'a> {
    /// Source IP address.
    #[inline]
    pub fn src(&self) -> Addr {
        match self.addrs {
            Addrs::V4(s, _) => Addr::v4(s.to_be_bytes()),
            Addrs::V6(s, _) => s,
        }
    }

    /// Destination IP address.
    #[inline]
    pub fn dst(&self) -> Addr {
        match self.addrs {
            Addrs::V4(_, d) => Addr::v4(d.to_be_bytes()),
            Addrs::V6(_, d) => d,
        }
    }

    /// For IPv4, the source and destination addresses as numbers (the wire's big-endian read).
    #[inline]
    pub fn v4(&self) -> Option<(u32, u32)> {
        match self.addrs {
            Addrs::V4(s, d) => Some((s, d)),
            Addrs::V6(..) => None,
        }
    }

    /// Source TCP port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(&self.tcp[field::SRC_PORT])
    }

    /// Destination TCP port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(&self.tcp[field::DST_PORT])
    }

    /// Sequence number of the first byte (or of the SYN).
    #[inline]
    pub fn seq(&self) -> u32 {
        be32(&self.tcp[field::SEQ])
    }

    /// Acknowledgment number: the next sequence number the sender of this segment expects.
    #[inline]
    pub fn ack(&self) -> u32 {
        be32(&self.tcp[field::ACK])
    }

    /// The flags byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.tcp[field::FLAGS]
    }

    /// Payload bytes, from the IP header's length fields (not from what was captured).
    #[inline]
    pub fn payload_len(&self) -> u32 {
        self.payload_len
    }

    /// Sequence space the segment occupies: payload plus one for SYN and one for FIN.
    #[inline]
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        let mut len = self.payload_len;
        if f & flags::SYN != 0 {
            len = len.wrapping_add(1);
        }
        if f & flags::FIN != 0 && f & flags::RST == 0 {
            len = len.wrapping_add(1);
        }
        len
    }

    /// The TCP timestamp option (RFC 7323 §3), as `(TSval, TSecr)`, if present and well-formed.
    #[inline]
    pub fn timestamps(&self) -> Option<(u32, u32)> {
        let (tsval, tsecr, present) = self.timestamp_fields();
        present.then_some((tsval, tsecr))
    }

    /// [`Segment::timestamps`] as the RTT estimator's packet holds it: `(TSval, TSecr, true)`,
    /// or zeros and false. Returned without an `Option`, so that nothing is tested again after
    /// the fast and slow paths join: each path already knows its values.
    #[inline]
    pub fn timestamp_fields(&self) -> (u32, u32, bool) {
        // Fast path: the layout every stack sends, NOP NOP TS.
        if let Some(o) = self.opts.first_chunk::<12>() {
            if be32(&o[..4]) == option::NOP_NOP_TIMESTAMP {
                return (be32(&o[4..8]), be32(&o[8..12]), true);
            }
        }
        if self.opts.is_empty() {
            return (0, 0, false);
        }
        match find_timestamps(self.opts) {
            Some(ts) => ((ts >> 32) as u32, ts as u32, true),
            None => (0, 0, false),
        }
    }
}

/// [`Segment::timestamps`] for options in any other layout: a walk over them, kept out of line
/// so that the fast path's loads stay apart from the walk's where it is inlined. Returns
/// `TSval << 32 | TSecr`: one word, returned in registers with its flag (a pair of words would
/// be returned through memory, and the fast path's values with it).
#[inline(never)]
fn find_timestamps(opts: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            option::END => return None,
            option::NOP => i += 1,
            kind => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if kind == option::TIMESTAMP && len == option::TIMESTAMP_LEN {
                    let (tsval, tsecr) = (be32(&opts[i + 2..i + 6]), be32(&opts[i + 6..i + 10]));
                    return Some(u64::from(tsval) << 32 | u64::from(tsecr));
                }
                i += len;
            }
        }
    }
    None
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("src", &self.src())
            .field("sport", &self.src_port())
            .field("dst", &self.dst())
            .field("dport", &self.dst_port())
            .field("seq", &self.seq())
            .field("ack", &self.ack())
            .field("flags", &format_args!("{:#04x}", self.flags()))
            .field("len", &self.payload_len)
            .finish()
    }
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// EtherType values metro follows (IEEE 802.1Q, 802.1ad and the pre-standard QinQ tag).
mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const QINQ_OLD: u16 = 0x9100;
    pub const MPLS: u16 = 0x8847;
    pub const MPLS_MULTICAST: u16 = 0x8848;
    /// Transparent Ethernet bridging: an Ethernet frame in GRE or Geneve.
    pub const TEB: u16 = 0x6558;
    /// ERSPAN types I and II (in GRE).
    pub const ERSPAN: u16 = 0x88be;
    /// ERSPAN type III (in GRE).
    pub const ERSPAN_3: u16 = 0x22eb;
}

/// How many stacked VLAN tags are followed before giving up (QinQ is two; be generous).
const MAX_VLAN_TAGS: usize = 4;

/// Decodes one frame of the given link type down to its TCP segment.
///
/// `wire_len` is the frame's original length; it is used only when the IP header's own length
/// is zero (TSO/GRO super-frames captured on Linux may carry a zero IPv4 total length).
#[inline(always)]
pub fn decode(link: LinkType, data: &[u8], wire_len: u32) -> Result<Segment<'_>, Skip> {
    decode_counting(link, data, wire_len, &mut 0)
}

/// [`decode`], adding one to `encapsulated` when the segment was found inside a tunnel or under
/// an MPLS label stack. The fast path never touches the counter, so counting costs plain
/// frames nothing.
#[inline(always)]
pub fn decode_counting<'a>(
    link: LinkType,
    data: &'a [u8],
    wire_len: u32,
    encapsulated: &mut u64,
) -> Result<Segment<'a>, Skip> {
    if link == LinkType::Ethernet {
        if let Some(seg) = eth_ipv4_tcp(data) {
            return Ok(seg);
        }
    }
    decode_general(link, data, wire_len, encapsulated)
}

/// Every link type and every header layout, with the reason when a frame is skipped. Kept out
/// of line so that the fast path stays small where it is inlined.
#[inline(never)]
fn decode_general<'a>(
    link: LinkType,
    data: &'a [u8],
    wire_len: u32,
    encapsulated: &mut u64,
) -> Result<Segment<'a>, Skip> {
    let (l3, ethertype) = match link {
        LinkType::Ethernet => ethernet(data)?,
        LinkType::Raw => (0, version_ethertype(data)?),
        LinkType::Ipv4 => (0, ethertype::IPV4),
        LinkType::Ipv6 => (0, ethertype::IPV6),
        LinkType::Null | LinkType::Loop => {
            let fam = data.get(..4).ok_or(Skip::Truncated)?;
            let fam = [fam[0], fam[1], fam[2], fam[3]];
            let value = if link == LinkType::Loop {
                u32::from_be_bytes(fam)
            } else {
                // The capturing host's byte order is unknown: a family fits in the low byte,
                // so whichever order gives a small number is the right one.
                let le = u32::from_le_bytes(fam);
                if le < 256 {
                    le
                } else {
                    u32::from_be_bytes(fam)
                }
            };
            // AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD/OpenBSD), 28 (FreeBSD),
            // 30 (macOS) or 10 (Linux).
            let et = match value {
                2 => ethertype::IPV4,
                24 | 28 | 30 | 10 => ethertype::IPV6,
                _ => return Err(Skip::NotTcp),
            };
            (4, et)
        }
        LinkType::LinuxSll => {
            // struct sll_header: pkttype, hatype, halen, addr[8], protocol — 16 bytes.
            let hdr = data.get(..16).ok_or(Skip::Truncated)?;
            (16, be16(&hdr[14..16]))
        }
        LinkType::LinuxSll2 => {
            // struct sll2_header: protocol, reserved, ifindex, hatype, pkttype, halen, addr[8].
            let hdr = data.get(..20).ok_or(Skip::Truncated)?;
            (20, be16(&hdr[0..2]))
        }
    };
    let rest = &data[l3..];
    let extra = (wire_len as usize).saturating_sub(data.len());
    let mut inner = false;
    let seg = match ethertype {
        ethertype::IPV4 => ipv4(rest, rest.len() + extra, Level::Outer, &mut inner),
        ethertype::IPV6 => ipv6(rest, rest.len() + extra, Level::Outer, &mut inner),
        ethertype::MPLS | ethertype::MPLS_MULTICAST => {
            inner = true;
            mpls(rest, rest.len() + extra, Level::Outer, &mut inner)
        }
        _ => Err(Skip::NotTcp),
    }?;
    if inner {
        *encapsulated += 1;
    }
    Ok(seg)
}

/// The common case read in place: untagged Ethernet, IPv4 without options, not a fragment, TCP
/// with its header complete. Anything else (or anything odd) returns `None`, and the general
/// walk decides, with the precise reason to skip.
#[inline(always)]
fn eth_ipv4_tcp(data: &[u8]) -> Option<Segment<'_>> {
    use eth_ipv4 as f;
    let fixed = data.first_chunk::<{ f::TCP + field::OPTIONS }>()?;
    if be16(&fixed[f::ETHERTYPE]) != ethertype::IPV4
        || fixed[f::VERSION_IHL] != f::V4_NO_OPTIONS
        || fixed[f::PROTOCOL] != ip_number::TCP.0
        || be16(&fixed[f::FRAG]) & f::FRAG_OFFSET_MASK != 0
    {
        return None;
    }
    let tcp_len = usize::from(fixed[f::TCP + field::DATA_OFFSET] >> 4) * 4;
    // A data offset below five words makes this range end before it starts: `None`, too.
    let opts = data.get(f::TCP + field::OPTIONS..f::TCP + tcp_len)?;
    let (_, tcp) = fixed.split_last_chunk::<{ field::OPTIONS }>()?;
    let total = usize::from(be16(&fixed[f::TOTAL_LEN]));
    let payload = total.checked_sub(20 + tcp_len)?;
    let b = |r: std::ops::Range<usize>| {
        [
            fixed[r.start],
            fixed[r.start + 1],
            fixed[r.start + 2],
            fixed[r.start + 3],
        ]
    };
    Some(Segment {
        addrs: Addrs::V4(u32::from_be_bytes(b(f::SRC)), u32::from_be_bytes(b(f::DST))),
        tcp,
        opts,
        payload_len: payload as u32,
    })
}

/// Walks Ethernet II and any VLAN tags; returns the L3 offset and EtherType.
#[inline]
fn ethernet(data: &[u8]) -> Result<(usize, u16), Skip> {
    let eth = Ethernet2HeaderSlice::from_slice(data).map_err(|_| Skip::Truncated)?;
    let mut off = eth.slice().len();
    let mut et = eth.ether_type();
    for _ in 0..MAX_VLAN_TAGS {
        match et.0 {
            ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD => {
                let tag =
                    SingleVlanHeaderSlice::from_slice(&data[off..]).map_err(|_| Skip::Truncated)?;
                off += tag.slice().len();
                et = tag.ether_type();
            }
            _ => return Ok((off, et.0)),
        }
    }
    if matches!(et, EtherType::VLAN_TAGGED_FRAME) {
        return Err(Skip::Malformed);
    }
    Ok((off, et.0))
}

/// For raw IP link types: the IP version nibble names the protocol.
#[inline]
fn version_ethertype(data: &[u8]) -> Result<u16, Skip> {
    match data.first().ok_or(Skip::Truncated)? >> 4 {
        4 => Ok(ethertype::IPV4),
        6 => Ok(ethertype::IPV6),
        _ => Err(Skip::Malformed),
    }
}

/// An IPv4 packet: its TCP segment, or at [`Level::Outer`] the segment of the tunnel it
/// carries. `wire_len` is the packet's length as far as the frame (or, inner, the outer
/// headers) tells it.
#[inline]
fn ipv4<'a>(
    data: &'a [u8],
    wire_len: usize,
    level: Level,
    inner: &mut bool,
) -> Result<Segment<'a>, Skip> {
    use etherparse::err::ipv4::HeaderSliceError;
    let ip = Ipv4HeaderSlice::from_slice(data).map_err(|e| match e {
        HeaderSliceError::Len(_) => Skip::Truncated,
        HeaderSliceError::Content(_) => Skip::Malformed,
    })?;
    let ihl = ip.slice().len();
    let total = match ip.total_len() as usize {
        // Linux may capture TSO/GRO super-frames with a zero total length; trust the wire.
        0 => wire_len,
        n => n,
    };
    if ip.protocol() != ip_number::TCP {
        let fragmented = ip.fragments_offset().value() != 0 || ip.more_fragments();
        let payload_len = total.checked_sub(ihl);
        return not_tcp(
            ip.protocol().0,
            &data[ihl..],
            payload_len,
            fragmented,
            level,
            inner,
        );
    }
    if ip.fragments_offset().value() != 0 {
        return Err(Skip::Fragment);
    }
    if level == Level::Inner && total > wire_len {
        return Err(Skip::BadTunnel);
    }
    let tcp_all = tcp(&data[ihl..])?;
    let payload = total
        .checked_sub(ihl + tcp_all.len())
        .ok_or(Skip::Malformed)?;
    let (tcp, opts) = split_tcp(tcp_all)?;
    Ok(Segment {
        addrs: Addrs::V4(
            u32::from_be_bytes(ip.source()),
            u32::from_be_bytes(ip.destination()),
        ),
        tcp,
        opts,
        payload_len: payload as u32,
    })
}

/// An IPv6 packet: as [`ipv4`].
#[inline]
fn ipv6<'a>(
    data: &'a [u8],
    wire_len: usize,
    level: Level,
    inner: &mut bool,
) -> Result<Segment<'a>, Skip> {
    use etherparse::err::ipv6::HeaderSliceError;
    let ip = Ipv6HeaderSlice::from_slice(data).map_err(|e| match e {
        HeaderSliceError::Len(_) => Skip::Truncated,
        HeaderSliceError::Content(_) => Skip::Malformed,
    })?;
    let after = &data[ip.slice().len()..];
    let (proto, tcp_bytes) = if is_ipv6_ext(ip.next_header()) {
        use etherparse::err::ipv6_exts::HeaderSliceError as ExtError;
        let (exts, proto, rest) = Ipv6ExtensionsSlice::from_slice(ip.next_header(), after)
            .map_err(|e| match e {
                ExtError::Len(_) => Skip::Truncated,
                ExtError::Content(_) => Skip::Malformed,
            })?;
        if exts.is_fragmenting_payload() {
            // A fragment header with a non-zero offset or more-fragments set: only the first
            // fragment carries TCP, and its length would not be the segment's. Skip them all.
            return Err(Skip::Fragment);
        }
        (proto, rest)
    } else {
        (ip.next_header(), after)
    };
    let ext_len = after.len() - tcp_bytes.len();
    let payload_total = match ip.payload_length() as usize {
        // A zero payload length is a jumbogram or a GRO super-frame: trust the wire.
        0 => wire_len.saturating_sub(ip.slice().len()),
        n => n,
    };
    if level == Level::Inner && ip.slice().len() + payload_total > wire_len {
        return Err(Skip::BadTunnel);
    }
    if proto != ip_number::TCP {
        let rest_len = payload_total.checked_sub(ext_len);
        return not_tcp(proto.0, tcp_bytes, rest_len, false, level, inner);
    }
    let tcp_all = tcp(tcp_bytes)?;
    let payload = payload_total
        .checked_sub(ext_len + tcp_all.len())
        .ok_or(Skip::Malformed)?;
    let (tcp, opts) = split_tcp(tcp_all)?;
    Ok(Segment {
        addrs: Addrs::V6(Addr::v6(ip.source()), Addr::v6(ip.destination())),
        tcp,
        opts,
        payload_len: payload as u32,
    })
}

/// Where an IP header sits: the frame's own (outer), or one inside a tunnel (inner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Outer,
    Inner,
}

/// IP protocol numbers that carry tunnels.
mod ip_proto {
    /// IPv4 in IP (RFC 2003).
    pub const IPIP: u8 = 4;
    /// IPv6 in IP (RFC 4213, RFC 2473).
    pub const IPV6: u8 = 41;
    /// GRE (RFC 2784).
    pub const GRE: u8 = 47;
    pub const UDP: u8 = 17;
}

/// The UDP header (RFC 768) and the ports of the tunnels carried in it.
mod udp {
    use std::ops::Range;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LEN: Range<usize> = 4..6;
    pub const HLEN: usize = 8;
    /// VXLAN's IANA port (RFC 7348 §5).
    pub const VXLAN: u16 = 4789;
    /// Geneve's IANA port (RFC 8926 §3.3).
    pub const GENEVE: u16 = 6081;
}

/// The VXLAN header (RFC 7348 §5).
mod vxlan {
    pub const FLAGS: usize = 0;
    /// The I flag: the VNI is valid; a receiver must drop a header without it.
    pub const I_FLAG: u8 = 0x08;
    pub const HLEN: usize = 8;
}

/// The Geneve header (RFC 8926 §3.4).
mod geneve {
    use std::ops::Range;
    /// Version (2 bits) and options length in 4-byte words (6 bits).
    pub const VER_OPT_LEN: usize = 0;
    pub const VERSION_MASK: u8 = 0xc0;
    pub const OPT_LEN_MASK: u8 = 0x3f;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const HLEN: usize = 8;
}

/// The GRE header (RFC 2784 §2, RFC 2890 §2).
mod gre {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    /// Reserved0 bits 6–12 and the version: all zero in version 0.
    pub const VERSION: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    /// Checksum present (followed by 2 reserved bytes).
    pub const C: u8 = 0x80;
    /// Key present.
    pub const K: u8 = 0x20;
    /// Sequence number present.
    pub const S: u8 = 0x10;
    /// RFC 1701's routing, strict source route and recursion control, which RFC 2784 retired:
    /// a receiver that does not implement them must discard the packet.
    pub const RETIRED: u8 = 0x4f;
    /// Each optional field's size.
    pub const OPTION_LEN: usize = 4;
}

/// ERSPAN headers inside GRE (draft-foschiano-erspan §4).
mod erspan {
    /// Type II: version 1 in the first nibble, 8 bytes.
    pub const V2_HLEN: usize = 8;
    pub const V2_VERSION: u8 = 1;
    /// Type III: version 2, 12 bytes, and 8 more when the last byte's O flag is set.
    pub const V3_HLEN: usize = 12;
    pub const V3_VERSION: u8 = 2;
    pub const V3_O_FLAG: u8 = 0x01;
    pub const V3_PLATFORM_LEN: usize = 8;
}

/// MPLS label stack entries (RFC 3032 §2.1).
mod mpls {
    pub const ENTRY_LEN: usize = 4;
    /// Byte 2's low bit: the bottom of the stack.
    pub const BOTTOM: u8 = 0x01;
    /// Stacks deeper than this are taken as never ending (real ones hold a few labels).
    pub const MAX_ENTRIES: usize = 16;
    /// An Ethernet pseudowire's control word (RFC 4448 §3): first nibble 0, 4 bytes.
    pub const CONTROL_WORD_LEN: usize = 4;
}

/// An IP packet that is not TCP: at [`Level::Outer`], the segment of a tunnel it carries;
/// otherwise the reason to skip it. `payload` is what was captured after the IP header(s) and
/// `payload_len` what the IP header says follows (`None` when it says less than its own
/// length).
#[inline]
fn not_tcp<'a>(
    proto: u8,
    payload: &'a [u8],
    payload_len: Option<usize>,
    fragmented: bool,
    level: Level,
    inner: &mut bool,
) -> Result<Segment<'a>, Skip> {
    let udp_tunnel = || {
        proto == ip_proto::UDP
            && payload
                .get(udp::DST_PORT)
                .is_some_and(|p| matches!(be16(p), udp::VXLAN | udp::GENEVE))
    };
    if !matches!(proto, ip_proto::IPIP | ip_proto::IPV6 | ip_proto::GRE) && !udp_tunnel() {
        return Err(Skip::NotTcp);
    }
    if level == Level::Inner {
        return Err(Skip::NestedTunnel);
    }
    if fragmented {
        return Err(Skip::Fragment);
    }
    let len = payload_len.ok_or(Skip::Malformed)?;
    *inner = true;
    tunnel(proto, payload, len)
}

/// The inner segment of a tunnel, from its outer IP payload: `payload` as captured, `len` as
/// the outer IP header says. Out of line and cold: plain frames never come here.
#[cold]
#[inline(never)]
fn tunnel(proto: u8, payload: &[u8], len: usize) -> Result<Segment<'_>, Skip> {
    // What follows the outer packet (Ethernet padding) is not the tunnel's.
    let payload = &payload[..payload.len().min(len)];
    let mut unused = false;
    match proto {
        ip_proto::IPIP => ipv4_in(payload, len),
        ip_proto::IPV6 => ipv6_in(payload, len),
        ip_proto::GRE => {
            let hdr = payload.get(..gre::HLEN).ok_or(Skip::Truncated)?;
            let flags = hdr[gre::FLAGS];
            if flags & gre::RETIRED != 0 || hdr[gre::VERSION] != 0 {
                return Err(Skip::BadTunnel);
            }
            let options = [gre::C, gre::K, gre::S]
                .iter()
                .filter(|&&f| flags & f != 0)
                .count();
            let hlen = gre::HLEN + options * gre::OPTION_LEN;
            let (body, body_len) = after(payload, len, hlen)?;
            match be16(&hdr[gre::PROTOCOL]) {
                ethertype::ERSPAN if flags & gre::S == 0 => ethernet_in(body, body_len),
                ethertype::ERSPAN => {
                    let version = body.first().ok_or(Skip::Truncated)? >> 4;
                    if version != erspan::V2_VERSION {
                        return Err(Skip::BadTunnel);
                    }
                    let (frame, frame_len) = after(body, body_len, erspan::V2_HLEN)?;
                    ethernet_in(frame, frame_len)
                }
                ethertype::ERSPAN_3 => {
                    let hdr = body.get(..erspan::V3_HLEN).ok_or(Skip::Truncated)?;
                    if hdr[0] >> 4 != erspan::V3_VERSION {
                        return Err(Skip::BadTunnel);
                    }
                    let mut hlen = erspan::V3_HLEN;
                    if hdr[erspan::V3_HLEN - 1] & erspan::V3_O_FLAG != 0 {
                        hlen += erspan::V3_PLATFORM_LEN;
                    }
                    let (frame, frame_len) = after(body, body_len, hlen)?;
                    ethernet_in(frame, frame_len)
                }
                et => network_in(et, body, body_len, &mut unused),
            }
        }
        ip_proto::UDP => {
            let hdr = payload.get(..udp::HLEN).ok_or(Skip::Truncated)?;
            // The UDP length bounds the tunnel; one that claims more than the IP packet holds,
            // or less than its own header, is a lie. Zero is a length too large for the field
            // (a BIG TCP or GRO super-frame, as a jumbogram's, RFC 2675 §4): the IP's holds.
            let udp_len = match usize::from(be16(&hdr[udp::LEN])) {
                0 => len,
                n => n,
            };
            if udp_len < udp::HLEN || udp_len > len {
                return Err(Skip::BadTunnel);
            }
            let (body, body_len) = after(payload, udp_len, udp::HLEN)?;
            if be16(&hdr[udp::DST_PORT]) == udp::VXLAN {
                let v = body.get(..vxlan::HLEN).ok_or(Skip::Truncated)?;
                if v[vxlan::FLAGS] & vxlan::I_FLAG == 0 {
                    return Err(Skip::BadTunnel);
                }
                let (frame, frame_len) = after(body, body_len, vxlan::HLEN)?;
                ethernet_in(frame, frame_len)
            } else {
                let g = body.get(..geneve::HLEN).ok_or(Skip::Truncated)?;
                if g[geneve::VER_OPT_LEN] & geneve::VERSION_MASK != 0 {
                    return Err(Skip::BadTunnel);
                }
                let opts = usize::from(g[geneve::VER_OPT_LEN] & geneve::OPT_LEN_MASK) * 4;
                let (inner, inner_len) = after(body, body_len, geneve::HLEN + opts)?;
                network_in(be16(&g[geneve::PROTOCOL]), inner, inner_len, &mut unused)
            }
        }
        _ => Err(Skip::NotTcp),
    }
}

/// What follows a header of `hlen` bytes: the captured bytes and the length the outer headers
/// give. A header longer than that length is a tunnel that disagrees with itself.
#[inline]
fn after(data: &[u8], len: usize, hlen: usize) -> Result<(&[u8], usize), Skip> {
    let rest = len.checked_sub(hlen).ok_or(Skip::BadTunnel)?;
    let bytes = data.get(hlen..).ok_or(Skip::Truncated)?;
    Ok((bytes, rest))
}

/// An Ethernet frame inside a tunnel.
fn ethernet_in(frame: &[u8], len: usize) -> Result<Segment<'_>, Skip> {
    let (off, et) = ethernet(frame)?;
    let (rest, rest_len) = after(frame, len, off)?;
    network_in(et, rest, rest_len, &mut false)
}

/// A network-layer packet inside a tunnel, named by its EtherType.
fn network_in<'a>(
    et: u16,
    data: &'a [u8],
    len: usize,
    inner: &mut bool,
) -> Result<Segment<'a>, Skip> {
    match et {
        ethertype::IPV4 => ipv4_in(data, len),
        ethertype::IPV6 => ipv6_in(data, len),
        ethertype::TEB => ethernet_in(data, len),
        ethertype::MPLS | ethertype::MPLS_MULTICAST => mpls(data, len, Level::Inner, inner),
        _ => Err(Skip::NotTcp),
    }
}

/// An IPv4 packet inside a tunnel, which must fit in what the outer headers give it.
fn ipv4_in(data: &[u8], len: usize) -> Result<Segment<'_>, Skip> {
    if data.first().is_some_and(|b| b >> 4 != 4) {
        return Err(Skip::BadTunnel);
    }
    ipv4(data, len, Level::Inner, &mut false)
}

/// An IPv6 packet inside a tunnel, as [`ipv4_in`].
fn ipv6_in(data: &[u8], len: usize) -> Result<Segment<'_>, Skip> {
    if data.first().is_some_and(|b| b >> 4 != 6) {
        return Err(Skip::BadTunnel);
    }
    ipv6(data, len, Level::Inner, &mut false)
}

/// An MPLS label stack and the packet under it: IPv4 or IPv6 by its version nibble, or an
/// Ethernet pseudowire behind its control word. The stack itself is no IP level: IP under a
/// stack on the link is the frame's own (`level` is where the stack sits).
#[cold]
#[inline(never)]
fn mpls<'a>(
    data: &'a [u8],
    len: usize,
    level: Level,
    inner: &mut bool,
) -> Result<Segment<'a>, Skip> {
    let mut off = 0;
    loop {
        if off / mpls::ENTRY_LEN == mpls::MAX_ENTRIES {
            return Err(Skip::BadTunnel);
        }
        let entry = data
            .get(off..off + mpls::ENTRY_LEN)
            .ok_or(Skip::Truncated)?;
        off += mpls::ENTRY_LEN;
        if entry[2] & mpls::BOTTOM != 0 {
            break;
        }
    }
    let (rest, rest_len) = after(data, len, off)?;
    match rest.first().ok_or(Skip::Truncated)? >> 4 {
        4 => ipv4(rest, rest_len, level, inner),
        6 => ipv6(rest, rest_len, level, inner),
        0 => {
            let (frame, frame_len) = after(rest, rest_len, mpls::CONTROL_WORD_LEN)?;
            let (eth_off, et) = ethernet(frame)?;
            let (l3, l3_len) = after(frame, frame_len, eth_off)?;
            match et {
                ethertype::IPV4 => ipv4(l3, l3_len, level, inner),
                ethertype::IPV6 => ipv6(l3, l3_len, level, inner),
                _ => Err(Skip::NotTcp),
            }
        }
        _ => Err(Skip::NotTcp),
    }
}

/// The IPv6 extension headers that may stand between the IPv6 header and TCP (RFC 8200 §4).
#[inline]
fn is_ipv6_ext(n: IpNumber) -> bool {
    matches!(
        n,
        ip_number::IPV6_HOP_BY_HOP
            | ip_number::IPV6_ROUTE
            | ip_number::IPV6_FRAG
            | ip_number::IPV6_DEST_OPTIONS
            | ip_number::AUTH
            | ip_number::IPV6_NO_NEXT_HEADER
    ) || n.0 == 135 // Mobility
        || n.0 == 139 // HIP
        || n.0 == 140 // Shim6
}

#[inline]
fn tcp(data: &[u8]) -> Result<&[u8], Skip> {
    use etherparse::err::tcp::HeaderSliceError;
    TcpHeaderSlice::from_slice(data)
        .map(|t| t.slice())
        .map_err(|e| match e {
            HeaderSliceError::Len(_) => Skip::Truncated,
            HeaderSliceError::Content(_) => Skip::Malformed,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an Ethernet + IPv4 + TCP frame with the given TCP options and payload size.
    fn eth_ipv4_tcp(opts: &[u8], payload: usize, flags_byte: u8) -> Vec<u8> {
        let tcp_len = 20 + opts.len();
        let total = 20 + tcp_len + payload;
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0, 80]);
        f.extend_from_slice(&1000u32.to_be_bytes());
        f.extend_from_slice(&2000u32.to_be_bytes());
        f.push(((tcp_len / 4) as u8) << 4);
        f.push(flags_byte);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(opts);
        f.extend(std::iter::repeat_n(0xaa, payload));
        f
    }

    const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];

    #[test]
    fn reads_fields_and_timestamps() {
        let f = eth_ipv4_tcp(&TS_OPTS, 100, flags::ACK);
        let s = decode(LinkType::Ethernet, &f, f.len() as u32).unwrap();
        assert_eq!(s.src().to_string(), "10.0.0.1");
        assert_eq!(s.dst().to_string(), "10.0.0.2");
        assert_eq!((s.src_port(), s.dst_port()), (12345, 80));
        assert_eq!((s.seq(), s.ack()), (1000, 2000));
        assert_eq!(s.payload_len(), 100);
        assert_eq!(s.seq_len(), 100);
        assert_eq!(s.timestamps(), Some((7, 9)));
    }

    #[test]
    fn snap_cut_after_options_keeps_ip_payload_length() {
        let f = eth_ipv4_tcp(&TS_OPTS, 1448, flags::ACK);
        let cut = &f[..14 + 20 + 32];
        let s = decode(LinkType::Ethernet, cut, f.len() as u32).unwrap();
        assert_eq!(s.payload_len(), 1448);
    }

    #[test]
    fn snap_cut_inside_options_is_truncated() {
        let f = eth_ipv4_tcp(&TS_OPTS, 10, flags::ACK);
        let cut = &f[..14 + 20 + 25];
        assert_eq!(
            decode(LinkType::Ethernet, cut, f.len() as u32).unwrap_err(),
            Skip::Truncated
        );
    }

    #[test]
    fn syn_and_fin_take_sequence_space() {
        let f = eth_ipv4_tcp(&[], 0, flags::SYN);
        assert_eq!(decode(LinkType::Ethernet, &f, 0).unwrap().seq_len(), 1);
        let f = eth_ipv4_tcp(&[], 5, flags::FIN | flags::ACK);
        assert_eq!(decode(LinkType::Ethernet, &f, 0).unwrap().seq_len(), 6);
    }

    #[test]
    fn timestamps_found_after_other_options() {
        // MSS, SACK-permitted, TS, NOP, window scale: a SYN's usual layout.
        let opts = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let f = eth_ipv4_tcp(&opts, 0, flags::SYN);
        let s = decode(LinkType::Ethernet, &f, 0).unwrap();
        assert_eq!(s.timestamps(), Some((256, 0)));
    }

    #[test]
    fn broken_option_length_gives_no_timestamps_and_no_panic() {
        let opts = [2, 0, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
        let f = eth_ipv4_tcp(&opts, 0, flags::ACK);
        assert_eq!(
            decode(LinkType::Ethernet, &f, 0).unwrap().timestamps(),
            None
        );
    }

    #[test]
    fn ipv4_total_length_shorter_than_headers_is_malformed() {
        let mut f = eth_ipv4_tcp(&[], 0, flags::ACK);
        f[16] = 0;
        f[17] = 30;
        assert_eq!(
            decode(LinkType::Ethernet, &f, 0).unwrap_err(),
            Skip::Malformed
        );
    }

    #[test]
    fn non_first_fragment_is_skipped() {
        let mut f = eth_ipv4_tcp(&[], 0, flags::ACK);
        f[14 + 7] = 0x10;
        assert_eq!(
            decode(LinkType::Ethernet, &f, 0).unwrap_err(),
            Skip::Fragment
        );
    }

    #[test]
    fn fast_path_agrees_with_the_general_walk() {
        let mut frames = vec![
            eth_ipv4_tcp(&TS_OPTS, 1448, flags::ACK),
            eth_ipv4_tcp(&[], 0, flags::SYN),
            eth_ipv4_tcp(&TS_OPTS, 3, flags::FIN | flags::ACK),
        ];
        // Cut inside the options, a zero total length, a bad data offset, a fragment.
        let base = eth_ipv4_tcp(&TS_OPTS, 10, flags::ACK);
        frames.push(base[..14 + 20 + 25].to_vec());
        let mut f = base.clone();
        f[16] = 0;
        f[17] = 0;
        frames.push(f);
        let mut f = base.clone();
        f[14 + 20 + 12] = 0x40;
        frames.push(f);
        let mut f = base.clone();
        f[14 + 7] = 0x08;
        frames.push(f);
        for f in &frames {
            let wire = f.len() as u32 + 5;
            let fast = decode(LinkType::Ethernet, f, wire);
            // LinkType::Raw on the same bytes past the Ethernet header takes the general walk.
            let slow = decode(LinkType::Raw, &f[14..], wire - 14);
            match (fast, slow) {
                (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("fast {a:?} vs general {b:?}"),
            }
        }
    }

    /// The frames of a classic little-endian pcap file.
    fn pcap_frames(file: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut i = 24;
        while i + 16 <= file.len() {
            let caplen = u32::from_le_bytes(file[i + 8..i + 12].try_into().unwrap()) as usize;
            out.push(&file[i + 16..i + 16 + caplen]);
            i += 16 + caplen;
        }
        out
    }

    #[test]
    fn tunnel_frames_decode_to_the_inner_segment_and_damage_never_panics() {
        let captures: [&[u8]; 6] = [
            include_bytes!("../testdata/vxlan.pcap"),
            include_bytes!("../testdata/geneve.pcap"),
            include_bytes!("../testdata/gre.pcap"),
            include_bytes!("../testdata/erspan.pcap"),
            include_bytes!("../testdata/ip_in_ip.pcap"),
            include_bytes!("../testdata/mpls.pcap"),
        ];
        for file in captures {
            for f in pcap_frames(file) {
                let mut n = 0;
                let s = decode_counting(LinkType::Ethernet, f, f.len() as u32, &mut n).unwrap();
                assert_eq!(n, 1, "counted as encapsulated");
                assert!(s.dst_port() == 443 || s.src_port() == 443);
                let inner = s.src().to_string();
                assert!(
                    [
                        "192.0.2.10",
                        "198.51.100.20",
                        "2001:db8:0:1::10",
                        "2001:db8:0:2::20"
                    ]
                    .contains(&inner.as_str()),
                    "{inner}"
                );
                for cut in 0..f.len() {
                    let _ = decode(LinkType::Ethernet, &f[..cut], f.len() as u32);
                }
                let mut g = f.to_vec();
                for i in 0..g.len().min(160) {
                    for bit in [0x01, 0x10, 0x80] {
                        g[i] ^= bit;
                        let _ = decode(LinkType::Ethernet, &g, g.len() as u32);
                        g[i] ^= bit;
                    }
                }
            }
        }
    }

    #[test]
    fn a_label_stack_that_never_ends_is_a_bad_tunnel() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&0x8847u16.to_be_bytes());
        for label in 0..40u32 {
            f.extend_from_slice(&((label << 12) | 64).to_be_bytes());
        }
        assert_eq!(
            decode(LinkType::Ethernet, &f, f.len() as u32).unwrap_err(),
            Skip::BadTunnel
        );
        // Cut before 16 labels: the capture is short, not the stack bad.
        assert_eq!(
            decode(LinkType::Ethernet, &f[..14 + 20], 200).unwrap_err(),
            Skip::Truncated
        );
    }

    #[test]
    fn every_prefix_of_a_frame_decodes_or_skips_without_panic() {
        let f = eth_ipv4_tcp(&TS_OPTS, 3, flags::ACK);
        for link in [
            LinkType::Ethernet,
            LinkType::Raw,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Null,
        ] {
            for n in 0..f.len() {
                let _ = decode(link, &f[..n], f.len() as u32);
            }
        }
    }
}
