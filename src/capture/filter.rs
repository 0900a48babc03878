//! The kernel filter: a classic BPF program that metro generates itself.
//!
//! Every capture socket runs this program in the kernel before a frame is copied into its ring,
//! so frames metro would skip anyway never cost a copy. The program keeps:
//! - TCP over IPv4, and TCP over IPv6 when TCP is the first next header or follows a fragment
//!   header (as tcpdump's `tcp` does); IPv6 whose first next header is a hop-by-hop, routing or
//!   destination options header is kept too, whatever it carries, because classic BPF cannot
//!   walk a chain of them: the decoder walks it and counts what is not TCP;
//! - tunnels the decoder opens (see `crate::decode`): IPv4 or IPv6 carrying IP in IP (protocols
//!   4 and 41), GRE (47), or UDP to VXLAN's port 4789 or Geneve's 6081, and MPLS frames
//!   (EtherTypes 0x8847, 0x8848), whatever they carry: classic BPF cannot follow every
//!   encapsulation to the inner TCP header, so the decoder counts what is not TCP. Neither the
//!   loopback nor the whitelist test applies to them (those name inner hosts, which the workers
//!   check);
//! - on Ethernet, frames with no VLAN tag or with one 802.1Q / 802.1ad tag;
//! - never a packet from or to 127.0.0.1 or ::1 (go-metro's `not host 127.0.0.1`);
//! - with a whitelist, only packets whose source or destination lies in one of its ranges.
//!
//! It returns the snap length for a kept frame, which is how the kernel cuts frames to `snaplen`.
//!
//! This module only builds programs; it does not attach them (that is socket code, in
//! [`super::ring`]) and it knows nothing of libpcap's filter language: a `-f` expression is
//! compiled by [`super::expr`] and joined to this program with [`and`]. Jumps in classic BPF reach at most 255 instructions ahead, so the code is
//! laid out with every conditional jump local, and sections are entered with `ja`, whose offset
//! is 32 bits.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// An address range of a whitelist, `ADDR/PREFIX` (IPv4 or IPv6); a bare address is a /32 or
/// /128. The kernel filter keeps packets to or from its ranges ([`ip_prefix`](Net::ip_prefix)),
/// and the workers keep only samples acknowledged by a host inside one ([`contains`](Net::contains)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The address as 16 bytes, IPv4 mapped (`::ffff:a.b.c.d`), as the workers store addresses.
    addr: [u8; 16],
    /// Prefix length counted over the 128-bit (IPv4-mapped) form.
    bits: u8,
}

/// `ip` as 16 bytes, IPv4 mapped.
fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl Net {
    /// A single address.
    pub fn host(ip: IpAddr) -> Net {
        Net {
            addr: mapped(ip),
            bits: 128,
        }
    }

    /// The range as a standard address and a prefix length over it (0–32 for IPv4, 0–128 for
    /// IPv6), as the kernel filter compares it.
    pub fn ip_prefix(&self) -> (IpAddr, u8) {
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.bits >= 96 => (IpAddr::V4(v4), self.bits - 96),
            _ => (IpAddr::V6(v6), self.bits),
        }
    }

    /// True when `a` (16 bytes, IPv4 mapped) is inside the range.
    #[inline]
    pub fn contains(&self, a: &[u8; 16]) -> bool {
        let full = (self.bits / 8) as usize;
        if self.addr[..full] != a[..full] {
            return false;
        }
        let rem = self.bits % 8;
        rem == 0 || {
            let mask = 0xffu8 << (8 - rem);
            self.addr[full] & mask == a[full] & mask
        }
    }
}

impl FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Net, String> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR range"))?;
        let (max, offset) = if ip.is_ipv4() { (32, 96) } else { (128, 0) };
        let len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("'{s}' has a bad prefix length (0 to {max})"))?,
            None => max,
        };
        let mut addr = mapped(ip);
        let bits = len + offset;
        // Clear host bits so that contains() compares prefixes only.
        for (i, b) in addr.iter_mut().enumerate() {
            let keep = (bits as usize).saturating_sub(i * 8).min(8) as u32;
            *b &= (0xffu16 << (8 - keep)) as u8;
        }
        Ok(Net { addr, bits })
    }
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode: class, size, mode and source bits.
    pub code: u16,
    /// Instructions to skip when a conditional jump is taken.
    pub jt: u8,
    /// Instructions to skip when it is not.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

/// Opcode bits, from `linux/bpf_common.h`.
pub mod op {
    /// Load into A.
    pub const LD: u16 = 0x00;
    /// Load into X.
    pub const LDX: u16 = 0x01;
    /// Arithmetic on A.
    pub const ALU: u16 = 0x04;
    /// Jumps.
    pub const JMP: u16 = 0x05;
    /// Return.
    pub const RET: u16 = 0x06;
    /// 32-bit load.
    pub const W: u16 = 0x00;
    /// 16-bit load.
    pub const H: u16 = 0x08;
    /// 8-bit load.
    pub const B: u16 = 0x10;
    /// Immediate operand.
    pub const IMM: u16 = 0x00;
    /// A += operand.
    pub const ADD: u16 = 0x00;
    /// A <<= operand.
    pub const LSH: u16 = 0x60;
    /// The operand is X.
    pub const X: u16 = 0x08;
    /// Register moves.
    pub const MISC: u16 = 0x07;
    /// X = A.
    pub const TAX: u16 = 0x00;
    /// Packet load at a constant offset.
    pub const ABS: u16 = 0x20;
    /// Packet load at X plus a constant offset.
    pub const IND: u16 = 0x40;
    /// A &= k.
    pub const AND: u16 = 0x50;
    /// Unconditional jump by k.
    pub const JA: u16 = 0x00;
    /// Jump if A == k.
    pub const JEQ: u16 = 0x10;
    /// Constant operand.
    pub const K: u16 = 0x00;
}

/// What the bytes at the start of a captured frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An Ethernet header (also what `lo` gives a packet socket).
    Ethernet,
    /// The IP header itself (tun devices, raw-IP links).
    RawIp,
}

/// Why no program could be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The whitelist needs more instructions than the kernel accepts.
    #[error(
        "the whitelist needs a {0}-instruction kernel filter, more than the kernel's {MAX_INSNS}: \
         list fewer hosts, or cover them with CIDR ranges"
    )]
    TooLong(usize),
    /// A prefix length is longer than its address.
    #[error("bad prefix length /{1} for {0}")]
    BadPrefix(IpAddr, u8),
    /// The first of two programs to combine returns a computed value.
    #[error("cannot combine kernel filters: the first returns a computed length")]
    Combine,
}

/// Byte offsets inside the IPv4 and IPv6 headers (RFC 791 §3.1, RFC 8200 §3).
mod field {
    pub const ETH_TYPE: u32 = 12;
    pub const ETH_HLEN: u32 = 14;
    pub const VLAN_HLEN: u32 = 4;
    pub const V4_PROTO: u32 = 9;
    pub const V4_SRC: u32 = 12;
    pub const V4_DST: u32 = 16;
    pub const V6_NEXT: u32 = 6;
    pub const V6_SRC: u32 = 8;
    pub const V6_DST: u32 = 24;
    pub const V6_HLEN: u32 = 40;
    /// The next-header byte of a fragment header that directly follows the IPv6 header.
    pub const V6_FRAG_NEXT: u32 = V6_HLEN;
}

const ETHERTYPE_IPV4: u32 = 0x0800;
const ETHERTYPE_IPV6: u32 = 0x86dd;
const ETHERTYPE_VLAN: u32 = 0x8100;
const ETHERTYPE_QINQ: u32 = 0x88a8;
/// The tag protocol id of QinQ before 802.1ad, which the decoder also follows.
const ETHERTYPE_QINQ_OLD: u32 = 0x9100;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Protocols that carry a tunnel the decoder opens: IPv4 in IP, IPv6 in IP, GRE.
const IPPROTO_TUNNELS: [u32; 3] = [4, 41, 47];
/// UDP destination ports of the tunnels the decoder opens: VXLAN, Geneve.
const UDP_TUNNEL_PORTS: [u32; 2] = [4789, 6081];
const ETHERTYPE_MPLS: [u32; 2] = [0x8847, 0x8848];
const IPPROTO_FRAGMENT: u32 = 44;
/// IPv6 extension headers that may come before TCP and that the filter leaves to the decoder:
/// every one the decoder walks (the `filter` fuzz target checks that none is dropped here).
const IPV6_EXT_HEADERS: [u32; 7] = [
    0,   // hop-by-hop options
    43,  // routing
    60,  // destination options
    51,  // authentication header
    135, // mobility
    139, // host identity protocol
    140, // shim6
];
const LOOPBACK_V4: u32 = 0x7f00_0001;

#[derive(Clone, Copy)]
struct Label(usize);

/// A tiny assembler: instructions plus forward labels, resolved at the end.
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    /// (instruction index, label, which field: 0 = jt, 1 = jf, 2 = k of `ja`).
    fixups: Vec<(usize, Label, u8)>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn emit(&mut self, code: u16, k: u32) {
        self.insns.push(Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        });
    }

    fn ld_abs(&mut self, size: u16, off: u32) {
        self.emit(op::LD | size | op::ABS, off);
    }

    /// Loads from the packet at X + `off` (X holds the offset of the IP header).
    fn ld_ind(&mut self, size: u16, off: u32) {
        self.emit(op::LD | size | op::IND, off);
    }

    fn ldx_imm(&mut self, k: u32) {
        self.emit(op::LDX | op::W | op::IMM, k);
    }

    fn and(&mut self, k: u32) {
        self.emit(op::ALU | op::AND | op::K, k);
    }

    fn ret(&mut self, k: u32) {
        self.emit(op::RET | op::K, k);
    }

    fn ja(&mut self, to: Label) {
        self.fixups.push((self.insns.len(), to, 2));
        self.emit(op::JMP | op::JA, 0);
    }

    /// `if A == k goto jt else goto jf`; `None` means the next instruction.
    fn jeq(&mut self, k: u32, jt: Option<Label>, jf: Option<Label>) {
        let at = self.insns.len();
        if let Some(l) = jt {
            self.fixups.push((at, l, 0));
        }
        if let Some(l) = jf {
            self.fixups.push((at, l, 1));
        }
        self.emit(op::JMP | op::JEQ | op::K, k);
    }

    /// `if A == k` return `ret`, else fall through.
    fn jeq_ret(&mut self, k: u32, ret: u32) {
        self.insns.push(Insn {
            code: op::JMP | op::JEQ | op::K,
            jt: 0,
            jf: 1,
            k,
        });
        self.ret(ret);
    }

    /// `if A == k goto far`, through an `ja` so the target may be anywhere.
    fn jeq_far(&mut self, k: u32, far: Label) {
        self.insns.push(Insn {
            code: op::JMP | op::JEQ | op::K,
            jt: 0,
            jf: 1,
            k,
        });
        self.ja(far);
    }

    fn finish(mut self) -> Result<Vec<Insn>, FilterError> {
        if self.insns.len() > MAX_INSNS {
            return Err(FilterError::TooLong(self.insns.len()));
        }
        for &(at, l, which) in &self.fixups {
            let to = self.labels[l.0].expect("every label used is bound");
            let off = to
                .checked_sub(at + 1)
                .expect("jumps in classic BPF only go forward");
            match which {
                2 => self.insns[at].k = off as u32,
                _ => {
                    // Code generation keeps conditional jumps local; this only fires on a bug.
                    let off = u8::try_from(off).expect("conditional jump within 255 instructions");
                    if which == 0 {
                        self.insns[at].jt = off;
                    } else {
                        self.insns[at].jf = off;
                    }
                }
            }
        }
        Ok(self.insns)
    }
}

/// An address range as the program compares it: 32-bit words in network order, with masks.
struct Range {
    words: Vec<(u32, u32)>,
}

impl Range {
    fn new(octets: &[u8], prefix: u8) -> Range {
        let mut words = Vec::new();
        for (i, chunk) in octets.chunks(4).enumerate() {
            let bits = (prefix as usize).saturating_sub(i * 32).min(32);
            if bits == 0 {
                break;
            }
            let mask = if bits == 32 {
                u32::MAX
            } else {
                !(u32::MAX >> bits)
            };
            let w = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            words.push((w & mask, mask));
        }
        Range { words }
    }
}

/// Builds the program that keeps what the module doc says, cut to `snaplen` bytes.
///
/// `hosts` is the whitelist as (address, prefix length) ranges; `None` keeps every host.
pub fn compile(
    framing: Framing,
    hosts: Option<&[(IpAddr, u8)]>,
    snaplen: u32,
) -> Result<Vec<Insn>, FilterError> {
    let keep = snaplen.max(1);
    let mut v4_ranges = Vec::new();
    let mut v6_ranges = Vec::new();
    let mut v4_all = false;
    for &(ip, prefix) in hosts.unwrap_or(&[]) {
        match ip {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return Err(FilterError::BadPrefix(ip, prefix));
                }
                v4_ranges.push(Range::new(&a.octets(), prefix));
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return Err(FilterError::BadPrefix(ip, prefix));
                }
                // A range such as ::/0 that holds all of ::ffff:0:0/96 also holds every IPv4
                // host, as the worker's whitelist (which stores IPv4 as mapped) sees it.
                let mapped =
                    Range::new(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0], 96);
                let r = Range::new(&a.octets(), prefix);
                if prefix <= 96
                    && r.words
                        .iter()
                        .zip(&mapped.words)
                        .all(|(&(w, m), &(mw, _))| mw & m == w)
                {
                    v4_all = true;
                }
                v6_ranges.push(r);
            }
        }
    }
    let whitelist = hosts.is_some();

    let mut a = Asm::new();
    let v4 = a.label();
    let v6 = a.label();
    match framing {
        Framing::Ethernet => {
            let tagged = a.label();
            a.ld_abs(op::H, field::ETH_TYPE);
            a.jeq(ETHERTYPE_VLAN, Some(tagged), None);
            a.jeq(ETHERTYPE_QINQ, Some(tagged), None);
            a.jeq(ETHERTYPE_QINQ_OLD, Some(tagged), None);
            a.ldx_imm(field::ETH_HLEN);
            a.jeq_far(ETHERTYPE_IPV4, v4);
            a.jeq_far(ETHERTYPE_IPV6, v6);
            for et in ETHERTYPE_MPLS {
                a.jeq_ret(et, keep);
            }
            a.ret(0);
            a.bind(tagged);
            a.ld_abs(op::H, field::ETH_TYPE + field::VLAN_HLEN);
            a.ldx_imm(field::ETH_HLEN + field::VLAN_HLEN);
            a.jeq_far(ETHERTYPE_IPV4, v4);
            a.jeq_far(ETHERTYPE_IPV6, v6);
            for et in ETHERTYPE_MPLS {
                a.jeq_ret(et, keep);
            }
            a.ret(0);
        }
        Framing::RawIp => {
            a.ld_abs(op::B, 0);
            a.and(0xf0);
            a.ldx_imm(0);
            a.jeq_far(0x40, v4);
            a.jeq_far(0x60, v6);
            a.ret(0);
        }
    }

    // IPv4: TCP, not loopback, then the whitelist.
    a.bind(v4);
    a.ld_ind(op::B, field::V4_PROTO);
    let v4_tcp = a.label();
    a.jeq(IPPROTO_TCP, Some(v4_tcp), None);
    emit_tunnel_match(&mut a, None, keep);
    a.bind(v4_tcp);
    for off in [field::V4_SRC, field::V4_DST] {
        a.ld_ind(op::W, off);
        a.jeq_ret(LOOPBACK_V4, 0);
    }
    if !whitelist || v4_all {
        a.ret(keep);
    } else {
        for r in &v4_ranges {
            for off in [field::V4_SRC, field::V4_DST] {
                emit_range_match(&mut a, r, off, keep);
            }
        }
        a.ret(0);
    }

    // IPv6: TCP directly or after a fragment header, not ::1, then the whitelist.
    a.bind(v6);
    let v6_tcp = a.label();
    a.ld_ind(op::B, field::V6_NEXT);
    a.jeq(IPPROTO_TCP, Some(v6_tcp), None);
    for ext in IPV6_EXT_HEADERS {
        a.jeq(ext, Some(v6_tcp), None);
    }
    let frag = a.label();
    a.jeq(IPPROTO_FRAGMENT, Some(frag), None);
    emit_tunnel_match(&mut a, Some(field::V6_HLEN), keep);
    a.bind(frag);
    a.ld_ind(op::B, field::V6_FRAG_NEXT);
    a.jeq(IPPROTO_TCP, Some(v6_tcp), None);
    for ext in IPV6_EXT_HEADERS.iter().chain(&[IPPROTO_FRAGMENT]) {
        a.jeq(*ext, Some(v6_tcp), None);
    }
    a.ret(0);
    a.bind(v6_tcp);
    let loopback = Range::new(&std::net::Ipv6Addr::LOCALHOST.octets(), 128);
    for off in [field::V6_SRC, field::V6_DST] {
        emit_range_match(&mut a, &loopback, off, 0);
    }
    if !whitelist {
        a.ret(keep);
    } else {
        for r in &v6_ranges {
            for off in [field::V6_SRC, field::V6_DST] {
                emit_range_match(&mut a, r, off, keep);
            }
        }
        a.ret(0);
    }
    a.finish()
}

/// With A holding an IP packet's protocol (X its offset), returns `keep` for a tunnel the decoder
/// opens and 0 for anything else. `udp_at` is where UDP starts past X, or `None` for IPv4, whose
/// header length is read from the packet (X then moves to the UDP header).
fn emit_tunnel_match(a: &mut Asm, udp_at: Option<u32>, keep: u32) {
    for proto in IPPROTO_TUNNELS {
        a.jeq_ret(proto, keep);
    }
    let udp = a.label();
    a.jeq(IPPROTO_UDP, Some(udp), None);
    a.ret(0);
    a.bind(udp);
    let port_at = match udp_at {
        Some(off) => off + 2,
        None => {
            // X += 4 × IHL, the IPv4 header length (RFC 791 §3.1).
            a.ld_ind(op::B, 0);
            a.and(0x0f);
            a.emit(op::ALU | op::LSH | op::K, 2);
            a.emit(op::ALU | op::ADD | op::X, 0);
            a.emit(op::MISC | op::TAX, 0);
            2
        }
    };
    a.ld_ind(op::H, port_at);
    for port in UDP_TUNNEL_PORTS {
        a.jeq_ret(port, keep);
    }
    a.ret(0);
}

/// Returns `ret` when the address at X + `off` lies in `r`; falls through otherwise.
fn emit_range_match(a: &mut Asm, r: &Range, off: u32, ret: u32) {
    let miss = a.label();
    for (i, &(value, mask)) in r.words.iter().enumerate() {
        a.ld_ind(op::W, off + 4 * i as u32);
        if mask != u32::MAX {
            a.and(mask);
        }
        a.jeq(value, None, Some(miss));
    }
    a.ret(ret);
    a.bind(miss);
}

/// A program that keeps a frame only when `first` and then `second` both keep it, cut to `keep`
/// bytes.
///
/// `first` runs as it is, except that each of its accepting returns becomes a jump to the start of
/// `second` (a `ja`, whose 32-bit offset reaches anywhere). `second` starts with fresh registers
/// as far as it can tell: a classic program must set A, X and the scratch words before it reads
/// them, which the kernel checks (`bpf_check_classic`). Its accepting returns are cut to `keep`.
/// `first` must return constants only, as [`compile`]'s programs do.
pub fn and(first: &[Insn], second: &[Insn], keep: u32) -> Result<Vec<Insn>, FilterError> {
    let total = first.len() + second.len();
    if total > MAX_INSNS {
        return Err(FilterError::TooLong(total));
    }
    let mut out = Vec::with_capacity(total);
    for (i, insn) in first.iter().enumerate() {
        if insn.code & 0x07 == op::RET {
            if insn.code != op::RET | op::K {
                return Err(FilterError::Combine);
            }
            if insn.k != 0 {
                out.push(Insn {
                    code: op::JMP | op::JA,
                    jt: 0,
                    jf: 0,
                    k: (first.len() - i - 1) as u32,
                });
                continue;
            }
        }
        out.push(*insn);
    }
    for insn in second {
        let mut insn = *insn;
        if insn.code == op::RET | op::K && insn.k != 0 {
            insn.k = keep.max(1);
        }
        out.push(insn);
    }
    Ok(out)
}

/// A program that keeps nothing: sockets carry it until every member of the fanout group has
/// joined, and while a duty cycle pauses capture.
pub fn drop_all() -> Vec<Insn> {
    vec![Insn {
        code: op::RET | op::K,
        jt: 0,
        jf: 0,
        k: 0,
    }]
}

/// A classic BPF interpreter with the kernel's semantics (`bpf_prog_run` on a converted classic
/// program): a load past the end of the packet, or a division by zero, returns 0 (drop). For
/// tests: it checks what [`compile`], [`and`] and libpcap's programs keep, instruction by
/// instruction, and the fuzz targets (built with `--cfg fuzzing`) run it against the decoder.
/// Ancillary loads (`SKF_AD_*`, negative offsets) are not modelled.
#[cfg(any(test, fuzzing))]
pub fn interpret(prog: &[Insn], pkt: &[u8]) -> u32 {
    const ST: u16 = 0x02;
    const STX: u16 = 0x03;
    const MISC: u16 = 0x07;
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let mut mem = [0u32; 16];
    let load = |off: u64, size: u16| -> Option<u32> {
        let n = match size {
            op::W => 4,
            op::H => 2,
            _ => 1,
        };
        let off = usize::try_from(off).ok()?;
        let b = pkt.get(off..off.checked_add(n)?)?;
        Some(b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)))
    };
    loop {
        let i = *prog.get(pc).expect("the program ran off its end");
        pc += 1;
        let class = i.code & 0x07;
        let size = i.code & 0x18;
        let mode = i.code & 0xe0;
        let src = if i.code & 0x08 != 0 { x } else { i.k };
        match class {
            op::LD => {
                a = match mode {
                    op::IMM => i.k,
                    0x80 => pkt.len() as u32,
                    0x60 => mem[i.k as usize],
                    op::ABS | op::IND => {
                        let base = if mode == op::IND { u64::from(x) } else { 0 };
                        assert!(i.k < 0x8000_0000, "ancillary load {:#x}", i.k);
                        match load(base + u64::from(i.k), size) {
                            Some(v) => v,
                            None => return 0,
                        }
                    }
                    _ => panic!("unknown load mode {:#x}", i.code),
                }
            }
            op::LDX => {
                x = match mode {
                    op::IMM => i.k,
                    0x80 => pkt.len() as u32,
                    0x60 => mem[i.k as usize],
                    // BPF_MSH: 4 * (the low nibble of a byte), the IPv4 header length.
                    0xa0 => match load(u64::from(i.k), op::B) {
                        Some(v) => 4 * (v & 0xf),
                        None => return 0,
                    },
                    _ => panic!("unknown ldx mode {:#x}", i.code),
                }
            }
            ST => mem[i.k as usize] = a,
            STX => mem[i.k as usize] = x,
            op::ALU => {
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 | 0x90 if src == 0 => return 0,
                    0x30 => a / src,
                    0x90 => a % src,
                    0x40 => a | src,
                    op::AND => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0xa0 => a ^ src,
                    _ => panic!("unknown alu op {:#x}", i.code),
                }
            }
            op::JMP => {
                let taken = match i.code & 0xf0 {
                    op::JA => {
                        pc += i.k as usize;
                        continue;
                    }
                    op::JEQ => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => panic!("unknown jump {:#x}", i.code),
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
            op::RET => {
                return match i.code & 0x18 {
                    0x10 => a,
                    0x08 => x,
                    _ => i.k,
                }
            }
            MISC => {
                if i.code & 0xf8 == 0 {
                    x = a;
                } else {
                    a = x;
                }
            }
            _ => unreachable!("three bits of class"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges_match_their_members_only() {
        let m = |s: &str| mapped(s.parse().unwrap());
        let n: Net = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(&m("10.1.200.3")));
        assert!(!n.contains(&m("10.2.0.1")));
        assert_eq!(n.ip_prefix(), ("10.1.0.0".parse().unwrap(), 16));
        let n: Net = "2001:db8::/33".parse().unwrap();
        assert!(n.contains(&m("2001:db8:7fff::1")));
        assert!(!n.contains(&m("2001:db8:8000::1")));
        assert_eq!(n.ip_prefix(), ("2001:db8::".parse().unwrap(), 33));
        let n: Net = "192.168.1.7".parse().unwrap();
        assert!(n.contains(&m("192.168.1.7")));
        assert!(!n.contains(&m("192.168.1.8")));
        assert_eq!(Net::host("192.168.1.7".parse().unwrap()), n);
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("nonsense".parse::<Net>().is_err());
    }

    fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
        interpret(prog, pkt)
    }

    fn tcp_header() -> [u8; 20] {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x10;
        t
    }

    fn eth(ethertype: u16, vlan: bool, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&7u16.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(&tcp_header());
        h
    }

    fn ipv6(next: u8, src: &str, dst: &str) -> Vec<u8> {
        let src: std::net::Ipv6Addr = src.parse().unwrap();
        let dst: std::net::Ipv6Addr = dst.parse().unwrap();
        let mut h = vec![0x60, 0, 0, 0, 0, 20, next, 64];
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        if next == 44 {
            h.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 1]);
        }
        h.extend_from_slice(&tcp_header());
        h
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    #[test]
    fn keeps_tcp_over_ipv4_and_ipv6_with_and_without_a_vlan_tag() {
        let p = compile(Framing::Ethernet, None, 256).unwrap();
        assert_eq!(run(&p, &eth(0x0800, false, &ipv4(6, A, B))), 256);
        assert_eq!(run(&p, &eth(0x0800, true, &ipv4(6, A, B))), 256);
        // A tag with 802.1ad's or the older QinQ protocol id, as the decoder follows them (the
        // `filter` fuzz target found the older one dropped).
        for tpid in [0x88a8u16, 0x9100] {
            let mut f = eth(0x0800, true, &ipv4(6, A, B));
            f[12..14].copy_from_slice(&tpid.to_be_bytes());
            assert_eq!(run(&p, &f), 256, "{tpid:#x}");
        }
        let v6 = ipv6(6, "2001:db8::1", "2001:db8::2");
        assert_eq!(run(&p, &eth(0x86dd, false, &v6)), 256);
        assert_eq!(run(&p, &eth(0x86dd, true, &v6)), 256);
        let frag = ipv6(44, "2001:db8::1", "2001:db8::2");
        assert_eq!(run(&p, &eth(0x86dd, false, &frag)), 256);
        // Extension header chains are left to the decoder; other next headers are dropped.
        for next in [0, 43, 60, 51, 135, 139, 140] {
            let ext = ipv6(next, "2001:db8::1", "2001:db8::2");
            assert_eq!(
                run(&p, &eth(0x86dd, false, &ext)),
                256,
                "next header {next}"
            );
        }
        let udp = ipv6(17, "2001:db8::1", "2001:db8::2");
        assert_eq!(run(&p, &eth(0x86dd, false, &udp)), 0);
        let lo = ipv6(0, "::1", "::1");
        assert_eq!(run(&p, &eth(0x86dd, false, &lo)), 0);
    }

    #[test]
    fn drops_udp_arp_and_cut_frames() {
        let p = compile(Framing::Ethernet, None, 256).unwrap();
        assert_eq!(run(&p, &eth(0x0800, false, &ipv4(17, A, B))), 0);
        assert_eq!(
            run(&p, &eth(0x86dd, false, &ipv6(17, "2001:db8::1", "::2"))),
            0
        );
        assert_eq!(run(&p, &eth(0x0806, false, &[0u8; 28])), 0);
        assert_eq!(run(&p, &eth(0x0800, false, &[0x45, 0, 0])), 0);
        assert_eq!(run(&p, &[0u8; 10]), 0);
    }

    #[test]
    fn drops_loopback_hosts() {
        let p = compile(Framing::Ethernet, None, 256).unwrap();
        let lo = [127, 0, 0, 1];
        assert_eq!(run(&p, &eth(0x0800, false, &ipv4(6, lo, B))), 0);
        assert_eq!(run(&p, &eth(0x0800, false, &ipv4(6, A, lo))), 0);
        assert_eq!(run(&p, &eth(0x86dd, false, &ipv6(6, "::1", "::1"))), 0);
        assert_eq!(
            run(&p, &eth(0x86dd, false, &ipv6(6, "2001:db8::1", "::1"))),
            0
        );
        // Other 127/8 hosts and ::2 are ordinary hosts to go-metro's filter.
        assert_eq!(
            run(&p, &eth(0x0800, false, &ipv4(6, [127, 0, 0, 2], B))),
            256
        );
        assert_eq!(run(&p, &eth(0x86dd, false, &ipv6(6, "::2", "::3"))), 256);
    }

    #[test]
    fn whitelist_keeps_packets_to_or_from_listed_hosts_and_ranges() {
        let hosts = [
            ("192.168.7.9".parse().unwrap(), 32),
            ("172.16.0.0".parse().unwrap(), 12),
            ("2001:db8:aa::".parse().unwrap(), 48),
            ("2001:db8::5".parse().unwrap(), 128),
        ];
        let p = compile(Framing::Ethernet, Some(&hosts), 128).unwrap();
        let v4 = |s, d| run(&p, &eth(0x0800, false, &ipv4(6, s, d)));
        assert_eq!(v4([192, 168, 7, 9], B), 128);
        assert_eq!(v4(A, [192, 168, 7, 9]), 128);
        assert_eq!(v4(A, [192, 168, 7, 8]), 0);
        assert_eq!(v4([172, 31, 255, 1], A), 128);
        assert_eq!(v4([172, 32, 0, 1], A), 0);
        let v6 = |s, d| run(&p, &eth(0x86dd, true, &ipv6(6, s, d)));
        assert_eq!(v6("2001:db8:aa:ffff::1", "2001:db8::9"), 128);
        assert_eq!(v6("2001:db8::9", "2001:db8:aa::1"), 128);
        assert_eq!(v6("2001:db8:ab::1", "2001:db8::9"), 0);
        assert_eq!(v6("2001:db8::9", "2001:db8::5"), 128);
        assert_eq!(v6("2001:db8::9", "2001:db8::6"), 0);
    }

    #[test]
    fn whitelist_of_one_family_drops_the_other() {
        let hosts = [("10.0.0.0".parse().unwrap(), 8)];
        let p = compile(Framing::Ethernet, Some(&hosts), 96).unwrap();
        assert_eq!(run(&p, &eth(0x0800, false, &ipv4(6, A, B))), 96);
        let v6 = ipv6(6, "2001:db8::1", "2001:db8::2");
        assert_eq!(run(&p, &eth(0x86dd, false, &v6)), 0);
        let all = [("::".parse().unwrap(), 0)];
        let p = compile(Framing::Ethernet, Some(&all), 96).unwrap();
        assert_eq!(run(&p, &eth(0x0800, false, &ipv4(6, A, B))), 96);
        assert_eq!(run(&p, &eth(0x86dd, false, &v6)), 96);
    }

    #[test]
    fn raw_ip_framing_reads_the_ip_header_at_offset_zero() {
        let p = compile(Framing::RawIp, None, 200).unwrap();
        assert_eq!(run(&p, &ipv4(6, A, B)), 200);
        assert_eq!(run(&p, &ipv4(17, A, B)), 0);
        assert_eq!(run(&p, &ipv6(6, "2001:db8::1", "2001:db8::2")), 200);
    }

    #[test]
    fn long_whitelists_compile_with_far_jumps_and_too_long_ones_are_refused() {
        let hosts: Vec<(IpAddr, u8)> = (0..400u32)
            .map(|i| (IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 32))
            .collect();
        let p = compile(Framing::Ethernet, Some(&hosts), 256).unwrap();
        assert!(p.len() > 255 && p.len() <= MAX_INSNS, "{}", p.len());
        let v6 = ipv6(6, "2001:db8::1", "2001:db8::2");
        // The IPv6 section sits past every IPv4 range; its whitelist is empty.
        assert_eq!(run(&p, &eth(0x86dd, false, &v6)), 0);
        assert_eq!(
            run(&p, &eth(0x0800, false, &ipv4(6, A, [10, 0, 1, 143]))),
            256
        );
        let too_many: Vec<(IpAddr, u8)> = (0..1000u32)
            .map(|i| (IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 32))
            .collect();
        assert!(matches!(
            compile(Framing::Ethernet, Some(&too_many), 256),
            Err(FilterError::TooLong(_))
        ));
    }

    #[test]
    fn and_keeps_what_both_keep_cut_to_the_snap_length() {
        let hosts = [("10.0.0.2".parse().unwrap(), 32)];
        let first = compile(Framing::Ethernet, Some(&hosts), 96).unwrap();
        // A second program that keeps TCP towards port 80 only, returning libpcap's 65535.
        let mut a = Asm::new();
        a.ldx_imm(field::ETH_HLEN + 20);
        a.ld_ind(op::H, 2);
        a.jeq_ret(80, 65535);
        a.ret(0);
        let second = a.finish().unwrap();
        let both = and(&first, &second, 96).unwrap();
        assert_eq!(both.len(), first.len() + second.len());
        let to = |dst: [u8; 4], port: u16| {
            let mut f = eth(0x0800, false, &ipv4(6, A, dst));
            f[14 + 22..14 + 24].copy_from_slice(&port.to_be_bytes());
            run(&both, &f)
        };
        assert_eq!(to(B, 80), 96);
        assert_eq!(to(B, 81), 0, "the second program drops it");
        assert_eq!(to([192, 0, 2, 1], 80), 0, "the first drops it");
        let lo = eth(0x0800, false, &ipv4(6, [127, 0, 0, 1], B));
        assert_eq!(run(&both, &lo), 0);
        let too_long = vec![second[0]; MAX_INSNS];
        assert!(matches!(
            and(&first, &too_long, 96),
            Err(FilterError::TooLong(_))
        ));
    }

    /// An IPv4 or IPv6 packet (by `v6`) of protocol `proto` whose payload is `payload`.
    fn ip_carrying(v6: bool, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = if v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, payload.len() as u8, proto, 64];
            h.extend_from_slice(&[0x20, 1, 0x0d, 0xb8]);
            h.extend_from_slice(&[0; 12]);
            h.extend_from_slice(&[0x20, 1, 0x0d, 0xb8]);
            h.extend_from_slice(&[0; 11]);
            h.push(2);
            h
        } else {
            let mut h = vec![
                0x45,
                0,
                0,
                20 + payload.len() as u8,
                0,
                0,
                0,
                0,
                64,
                proto,
                0,
                0,
            ];
            h.extend_from_slice(&A);
            h.extend_from_slice(&B);
            h
        };
        h.extend_from_slice(payload);
        h
    }

    fn udp_to(port: u16) -> Vec<u8> {
        let mut u = vec![0xc0, 0x01];
        u.extend_from_slice(&port.to_be_bytes());
        u.extend_from_slice(&[0, 16, 0, 0]);
        u.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x10, 0x92, 0]);
        u
    }

    #[test]
    fn keeps_tunnels_the_decoder_opens_and_not_other_udp() {
        let p = compile(Framing::Ethernet, None, 256).unwrap();
        for v6 in [false, true] {
            let et = if v6 { 0x86dd } else { 0x0800 };
            for proto in [4, 41, 47] {
                let f = eth(et, false, &ip_carrying(v6, proto, &[0u8; 40]));
                assert_eq!(run(&p, &f), 256, "v6 {v6} protocol {proto}");
            }
            for (port, kept) in [(4789, 256), (6081, 256), (53, 0), (4790, 0)] {
                let f = eth(et, v6, &ip_carrying(v6, 17, &udp_to(port)));
                assert_eq!(run(&p, &f), kept, "v6 {v6} UDP port {port}");
            }
            assert_eq!(run(&p, &eth(et, false, &ip_carrying(v6, 1, &[0; 8]))), 0);
        }
        // IPv4 with options: the UDP header is found past them.
        let mut opts = ip_carrying(false, 17, &udp_to(4789));
        opts[0] = 0x46;
        opts.splice(20..20, [0x94, 4, 0, 0]);
        assert_eq!(run(&p, &eth(0x0800, false, &opts)), 256);
        for et in [0x8847, 0x8848] {
            assert_eq!(run(&p, &eth(et, false, &[0, 0x10, 0x11, 64])), 256);
            assert_eq!(run(&p, &eth(et, true, &[0, 0x10, 0x11, 64])), 256);
        }
        // Tunnels are kept whatever the outer hosts: the whitelist names inner ones.
        let hosts = [("192.0.2.1".parse().unwrap(), 32)];
        let w = compile(Framing::Ethernet, Some(&hosts), 128).unwrap();
        let f = eth(0x0800, false, &ip_carrying(false, 17, &udp_to(4789)));
        assert_eq!(run(&w, &f), 128);
        assert_eq!(run(&w, &eth(0x0800, false, &ipv4(6, A, B))), 0);
        let raw = compile(Framing::RawIp, None, 200).unwrap();
        assert_eq!(run(&raw, &ip_carrying(false, 47, &[0; 24])), 200);
    }

    #[test]
    fn drop_all_drops_everything() {
        assert_eq!(run(&drop_all(), &eth(0x0800, false, &ipv4(6, A, B))), 0);
    }

    #[test]
    fn insn_matches_the_kernel_struct() {
        assert_eq!(
            std::mem::size_of::<Insn>(),
            std::mem::size_of::<libc::sock_filter>()
        );
        assert_eq!(std::mem::offset_of!(Insn, k), 4);
    }
}
