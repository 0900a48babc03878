#!/usr/bin/env python3
"""synth.py: metro's capture generator (Python 3.11, standard library only).

Why this exists
---------------
metro's tests need captures whose right answer is known exactly. Real captures only come with
the answers that peer tools compute, and those follow other rules: tshark has no Karn's rule and
times from the segment whose end equals the ACK number; tcptrace applies Karn's rule but takes
late (reordered) segments for retransmissions and skips ACKs inside TSO super-frames. So this
script *builds* captures segment by segment, and writes beside each one the samples metro must
print for it.

How the expected samples are derived
------------------------------------
Every scenario is a short program that places each TCP segment at a capture time, as seen at one
capture point. When the program emits an ACK that, by construction, is the first to cover a
data segment, it says so on the spot (`sample=<the data segment>`), and the sample is
``(ACK capture time) - (capture time of that segment)``. Nothing is measured after the fact.
The rules (the same as metro's, see src/rtt.rs):

1. An ACK whose cumulative ack number A is higher (mod 2^32) than every earlier ack from that
   side, and that covers new bytes of seen data segments (SYN and FIN count one byte each),
   gives one sample timed from the newest (by capture time) segment with bytes in the newly
   covered range [previous highest ack, A). An ACK inside a TSO super-frame covers it.
   Duplicate ACKs, window updates, old ACKs, SACK blocks and ACKs beyond anything seen sent
   give nothing.
2. Karn's rule: if that newest segment carries bytes sent more than once, no sample, unless the
   ACK's TSecr equals the TSval of exactly one transmission of those bytes; the sample is then
   timed from that transmission, method ``ts``.
3. Method ``syn`` when the segment timed from carried SYN, else ``seq``.

As a safety net, ``testdata`` and ``check`` also decode every written frame again (link,
IPv4/IPv6 with extension headers, TCP options) and re-apply the rules independently; the
script stops if that re-derivation disagrees with what the scenario declared. The rules leave
one point open: may an ACK whose newly covered range also holds bytes never seen sent (a capture
gap) still give a sample? The re-derivation runs each capture under both readings, so no
expected file depends on it. (An ACK beyond anything seen still counts as an ack number seen:
later ACKs must be higher than it, as rule 1 reads literally.)

Output per scenario, in testdata/
---------------------------------
``<name>.pcap`` or ``<name>.pcapng``, and ``<name>.expected.json``::

    {"capture": "<file>", "description": "...", "packets": <frames in the file>,
     "skipped_truncated": N, "skipped_fragment": N,
     "samples": [{"ts_ns","src","sport","dst","dport","rtt_ns","method"}, ...],
     "sample_frames": [[ack_frame, data_frame], ...],
     "pairs": [{"src","dst","samples","min_ns","max_ns","sum_ns"}, ...]}

``samples`` are in ACK capture order and have exactly the fields of metro's
``--samples --format json`` lines (without ``"type"``): src/sport is the data sender, dst/dport
the side that acknowledged. ``sample_frames`` gives, for each sample, the 1-based frame numbers
(as tshark counts them) of the ACK and of the data segment timed from; it is for debugging.
``pairs`` aggregates samples per (src, dst) address pair, sorted by src then dst.
IPv6 addresses are in RFC 5952 form, the same as Rust's ``Ipv6Addr`` Display.

Usage
-----
    scripts/synth.py [testdata] [--outdir DIR] [--only NAME ...]
        Regenerate every scenario (default command). Deterministic: same bytes every run.
    scripts/synth.py check [--outdir DIR]
        Regenerate into a temporary folder; exit 1 if any file differs from DIR (testdata/).
    scripts/synth.py bench --out FILE [--packets 1000000] [--flows 2000] [--seed S]
                           [--expected FILE.json]
        A large Ethernet/IPv4 pcap (snaplen 96) of many concurrent bulk and request/response
        flows, for benchmarks. Writes an expected file only when --expected is given.
    scripts/synth.py gateway | flows-1m [--flows N] [--clients N] [--servers N]
                           [--servers-per-client N] [--seed S] [--out FILE | --force]
        Gateway-scale Ethernet/IPv4 pcaps (snaplen 96) for scripts/bench-gateway, built by a
        lean writer (see scale_capture): `gateway` has 100,000 overlapping request/response
        flows between 20,000 clients and 5,000 servers (~1.47 M frames, 200,000 host pairs),
        `flows-1m` 1,000,000 flows open at once over the same pairs (~6 M frames). Without
        --out the capture is cached in target/bench-data/ under the generator's version and a
        hash of the parameters, reused when it is there, and its path printed; a .json beside
        it gives frames, flows, pairs and the samples metro must count. Not part of `check`.
    scripts/synth.py peers [--outdir DIR]
        Compare each expected file with tshark's tcp.analysis.ack_rtt (informational).
    scripts/synth.py list
        Name every scenario and its sample count.

Agreement with tshark (``peers``)
---------------------------------
tshark's ack_rtt equals every expected sample except where the rules differ on purpose:
Karn cases (tshark times the ACK of a retransmission from the original, and gives samples where
metro gives none), ``ts`` samples, a gap filled in ``reorder`` (tshark times from the segment
whose end is the ACK number, metro from the late segment), ACKs inside TSO super-frames
(tshark gives none) and the frame of ``snaplen`` cut inside its TCP options (tshark reads it).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import ipaddress
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from operator import attrgetter
from pathlib import Path

US = 1_000
MS = 1_000_000
SEC = 1_000_000_000
# 2023-11-14 22:13:20 UTC. A fixed epoch keeps every run byte-identical.
EPOCH = 1_700_000_000 * SEC
MOD = 1 << 32

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
TPID_8021Q, TPID_8021AD = 0x8100, 0x88A8

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTDIR = ROOT / "testdata"


def other(side: str) -> str:
    return "s" if side == "c" else "c"


# ---------------------------------------------------------------------------------------------
# Wire formats
# ---------------------------------------------------------------------------------------------

def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum of non-zero data.

    The one's-complement sum of the 16-bit words is congruent, modulo 0xFFFF, to the bytes read
    as one big-endian number (2^16 = 1 mod 0xFFFF), and one big-integer remainder is much faster
    than summing words in Python. A remainder of 0 means the folded sum was 0xFFFF.
    """
    if len(data) % 2:
        data += b"\0"
    r = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF - r if r else 0


def tcp_options(*, mss=None, sack_perm=False, ts=None, wscale=None, sack=()) -> bytes:
    """TCP options in Linux's order, padded with NOPs to a multiple of 4 bytes.

    `ts` is (TSval, TSecr). A SYN gets MSS, SACK_PERM, TS, NOP, WS (Linux); without TS the
    SACK_PERM and WS are NOP-aligned. Other segments get NOP NOP TS and then NOP NOP SACK.
    """
    o = b""
    if mss is not None:
        o += struct.pack("!BBH", 2, 4, mss)
    if mss is not None and ts is not None:
        o += (b"\x04\x02" if sack_perm else b"\x01\x01") + struct.pack("!BBII", 8, 10, *ts)
        if wscale is not None:
            o += struct.pack("!BBBB", 1, 3, 3, wscale)
    elif mss is not None:
        if sack_perm:
            o += b"\x01\x01\x04\x02"
        if wscale is not None:
            o += struct.pack("!BBBB", 1, 3, 3, wscale)
    else:
        if ts is not None:
            o += struct.pack("!BBBBII", 1, 1, 8, 10, *ts)
        if sack:
            o += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(sack))
            for left, right in sack:
                o += struct.pack("!II", left % MOD, right % MOD)
    assert len(o) % 4 == 0 and len(o) <= 40, o
    return o


def tcp_header(src: bytes, dst: bytes, sport, dport, seq, ack, flags, win, opts, paylen) -> bytes:
    """A TCP header whose checksum is right for a payload of `paylen` zero bytes.

    Zero bytes add nothing to a one's-complement sum, so the payload itself is never needed:
    frames cut by the snap length still carry a correct checksum.
    """
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq % MOD, ack % MOD,
                      ((20 + len(opts)) // 4) << 4, flags, win, 0, 0) + opts
    length = len(hdr) + paylen
    if len(src) == 16:
        pseudo = src + dst + struct.pack("!IxxxB", length, 6)
    else:
        pseudo = src + dst + struct.pack("!xBH", 6, length)
    return hdr[:16] + struct.pack("!H", checksum(pseudo + hdr)) + hdr[18:]


def ipv4_header(src: bytes, dst: bytes, payload_len, ident, *, ttl=64, proto=6, options=b"",
                df=True, mf=False, frag_offset=0) -> bytes:
    """IPv4 header; total length = header + `payload_len` (the truth metro must use)."""
    assert len(options) % 4 == 0
    ihl = 5 + len(options) // 4
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | frag_offset
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + payload_len, ident & 0xFFFF,
                    flags, ttl, proto, 0, src, dst) + options
    return h[:10] + struct.pack("!H", checksum(h)) + h[12:]


def ipv6_header(src: bytes, dst: bytes, payload_len, *, ext=(), hlim=64, flow=0) -> bytes:
    """IPv6 header plus extension headers. `ext` is [(type, body)], each body 6 + 8n bytes;
    the payload length counts the extension headers and the TCP segment."""
    chain = b""
    types = [t for t, _ in ext] + [6]
    for i, (_, body) in enumerate(ext):
        assert (len(body) + 2) % 8 == 0
        chain += struct.pack("!BB", types[i + 1], (len(body) + 2) // 8 - 1) + body
    return struct.pack("!IHBB16s16s", 0x60000000 | flow, len(chain) + payload_len, types[0],
                       hlim, src, dst) + chain


def mac(s: str) -> bytes:
    return bytes(int(x, 16) for x in s.split(":"))


class Ethernet:
    """Ethernet II, optionally with 802.1Q / 802.1ad tags (outermost first).

    Frames shorter than 60 bytes are zero-padded as on the wire, so the frame length is larger
    than the IP packet: the IP header, not the frame, says how long the segment is.
    """
    linktype = LINKTYPE_ETHERNET
    min_frame = 60

    def __init__(self, mac_c="02:00:5e:10:00:01", mac_s="02:00:5e:20:00:02", tags=()):
        self.macs = {"c": mac(mac_c), "s": mac(mac_s)}
        self.tags = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags)

    def prefix(self, side, v6):
        return (self.macs[other(side)] + self.macs[side] + self.tags
                + struct.pack("!H", ETH_IPV6 if v6 else ETH_IPV4))


class LinuxSLL:
    """LINKTYPE_LINUX_SLL (tcpdump -i any): packet type 4 = sent by this host, 0 = to it."""
    linktype = LINKTYPE_LINUX_SLL
    min_frame = 0

    def __init__(self, local="c", mac_c="02:00:5e:10:00:01", mac_s="02:00:5e:20:00:02"):
        self.local = local
        self.macs = {"c": mac(mac_c), "s": mac(mac_s)}

    def prefix(self, side, v6):
        pkttype = 4 if side == self.local else 0
        return struct.pack("!HHH8sH", pkttype, 1, 6, self.macs[side],
                           ETH_IPV6 if v6 else ETH_IPV4)


class LinuxSLL2:
    """LINKTYPE_LINUX_SLL2: protocol first, then interface index, ARPHRD, packet type, address."""
    linktype = LINKTYPE_LINUX_SLL2
    min_frame = 0

    def __init__(self, local="c", ifindex=2, mac_c="02:00:5e:10:00:01", mac_s="02:00:5e:20:00:02"):
        self.local = local
        self.ifindex = ifindex
        self.macs = {"c": mac(mac_c), "s": mac(mac_s)}

    def prefix(self, side, v6):
        pkttype = 4 if side == self.local else 0
        return struct.pack("!HHIHBB8s", ETH_IPV6 if v6 else ETH_IPV4, 0, self.ifindex, 1,
                           pkttype, 6, self.macs[side])


class Null:
    """LINKTYPE_NULL (BSD loopback): a 4-byte address family in the capturing host's byte
    order (little-endian here, as is the file). 2 = IPv4; IPv6 is 24, 28 or 30 by OS."""
    linktype = LINKTYPE_NULL
    min_frame = 0

    def __init__(self, v6_family=30):
        self.v6_family = v6_family

    def prefix(self, side, v6):
        return struct.pack("<I", self.v6_family if v6 else 2)


class Raw:
    """LINKTYPE_RAW: the frame starts with the IP header; its version nibble says which."""
    linktype = LINKTYPE_RAW
    min_frame = 0

    def prefix(self, side, v6):
        return b""


ETH_TEB, ETH_MPLS, ETH_ERSPAN, ETH_ERSPAN3 = 0x6558, 0x8847, 0x88BE, 0x22EB
VXLAN_PORT, GENEVE_PORT = 4789, 6081
# The tunnel endpoints (RFC 5737 / RFC 3849 documentation ranges, apart from the flows' own).
VTEP4 = {"c": "203.0.113.1", "s": "203.0.113.2"}
VTEP6 = {"c": "2001:db8:ffff::1", "s": "2001:db8:ffff::2"}


class Tunnel:
    """Ethernet frames that carry each segment inside a tunnel between two endpoints (the
    client's side `c` and the server's side `s`), as an underlay link between them sees it.

    `kind`: "vxlan" (UDP 4789, VNI, an inner Ethernet frame), "geneve" (UDP 6081, `options`
    bytes of TLVs, an inner Ethernet frame when `inner_eth`, else the IP packet by its
    EtherType), "gre" (RFC 2784/2890: `csum`, `key` and `seq` fields as asked, the IP packet, an
    Ethernet frame when `inner_eth` (0x6558), or an MPLS stack when `labels`), "erspan1",
    "erspan2", "erspan3" (GRE 0x88be without or with the sequence number and ERSPAN's 8-byte
    header, or 0x22eb with the 12-byte type III header and its 8-byte platform subheader), "ip"
    (IPv4 or IPv6 directly in the outer IP, protocol 4 or 41), "mpls" (no outer IP: an MPLS
    label stack on the Ethernet link, with an Ethernet pseudowire's control word and frame when
    `inner_eth`). The outer IP is IPv6 when `outer_v6`. VXLAN's and Geneve's UDP source port
    differs per direction, as a sender's flow hash makes it. Every length field is the truth
    unless `lie` names one to break (see `sc_tunnel_bad`).
    """
    linktype = LINKTYPE_ETHERNET
    min_frame = 60

    def __init__(self, kind, *, outer_v6=False, inner_eth=False, key=None, seq=False,
                 csum=False, options=b"", labels=(), vni=4242, gre_flags=0, gre_version=0,
                 vxlan_flags=0x08, udp_len_delta=0, inner_len_delta=0, nest=False):
        self.kind, self.outer_v6, self.inner_eth = kind, outer_v6, inner_eth
        self.key, self.seq, self.csum, self.options = key, seq, csum, options
        self.labels, self.vni = labels, vni
        self.gre_flags, self.gre_version, self.vxlan_flags = gre_flags, gre_version, vxlan_flags
        self.udp_len_delta, self.inner_len_delta, self.nest = udp_len_delta, inner_len_delta, nest
        self.macs = {"c": mac("02:00:5e:70:00:01"), "s": mac("02:00:5e:80:00:02")}
        self.inner_macs = {"c": mac("02:00:5e:10:00:01"), "s": mac("02:00:5e:20:00:02")}
        self.seqno = {"c": 0, "s": 0}
        self.ident = {"c": 0x100, "s": 0x200}

    def prefix(self, side, v6):
        return b""

    def inner_ethernet(self, side, v6):
        return (self.inner_macs[other(side)] + self.inner_macs[side]
                + struct.pack("!H", ETH_IPV6 if v6 else ETH_IPV4))

    def stack(self):
        return b"".join(struct.pack("!I", (label << 12) | (1 if i == len(self.labels) - 1 else 0)
                                    << 8 | 64) for i, label in enumerate(self.labels))

    def encapsulate(self, side, v6, packet, n):
        """The frame's head for an inner IP `packet` (headers) followed by `n` payload bytes."""
        if self.inner_len_delta:
            # An inner IP header that claims more than the tunnel carries.
            field = 4 if v6 else 2
            old = struct.unpack_from("!H", packet, field)[0]
            packet = packet[:field] + struct.pack("!H", old + self.inner_len_delta) \
                + packet[field + 2:]
        etype = ETH_IPV6 if v6 else ETH_IPV4
        if self.kind == "mpls":
            if self.inner_eth:
                body = self.stack() + bytes(4) + self.inner_ethernet(side, v6) + packet
            else:
                body = self.stack() + packet
            return self.macs[other(side)] + self.macs[side] + struct.pack("!H", ETH_MPLS) + body
        if self.kind in ("vxlan", "geneve"):
            inner = (self.inner_ethernet(side, v6) if self.inner_eth or self.kind == "vxlan"
                     else b"") + packet
            if self.kind == "vxlan":
                tun = struct.pack("!BxxxI", self.vxlan_flags, self.vni << 8)
                dport = VXLAN_PORT
            else:
                proto = ETH_TEB if self.inner_eth else etype
                tun = struct.pack("!BBHI", len(self.options) // 4, 0, proto,
                                  self.vni << 8) + self.options
                dport = GENEVE_PORT
            if self.nest:
                # The inner packet is itself an IP-in-IP tunnel: one level too many.
                inner = self.inner_ethernet(side, False)[:-2] + struct.pack("!H", ETH_IPV4) \
                    + ipv4_header(bytes(4), bytes(4), len(packet) + n, 1, proto=41 if v6 else 4) \
                    + packet
            sport = 49152 + (1000 if side == "c" else 2345)
            ulen = 8 + len(tun) + len(inner) + n
            l4 = struct.pack("!HHHH", sport, dport, ulen + self.udp_len_delta, 0) + tun + inner
            proto4 = 17
        elif self.kind == "ip":
            l4, proto4 = packet, 41 if v6 else 4
        else:
            flags, proto = self.gre_flags, etype
            opt = b""
            inner = packet
            if self.kind == "gre" and self.inner_eth:
                proto, inner = ETH_TEB, self.inner_ethernet(side, v6) + packet
            elif self.kind == "gre" and self.labels:
                proto, inner = ETH_MPLS, self.stack() + packet
            elif self.kind == "erspan1":
                proto, inner = ETH_ERSPAN, self.inner_ethernet(side, v6) + packet
            elif self.kind == "erspan2":
                # Version 1, VLAN 0, COS 0, En 0, T 0, session 7; reserved, index 0.
                proto = ETH_ERSPAN
                inner = struct.pack("!HHI", 0x1000, 7, 0) + self.inner_ethernet(side, v6) + packet
            elif self.kind == "erspan3":
                # Version 2, session 7, a timestamp, SGT 0, and the O flag: a platform subheader.
                proto = ETH_ERSPAN3
                inner = struct.pack("!HHIHH", 0x2000, 7, 0x01020304, 0, 0x0001) + bytes(8) \
                    + self.inner_ethernet(side, v6) + packet
            if self.csum:
                flags |= 0x80
            if self.key is not None:
                flags |= 0x20
            if self.seq or self.kind in ("erspan2", "erspan3"):
                flags |= 0x10
            if flags & 0x20:
                opt += struct.pack("!I", self.key)
            if flags & 0x10:
                opt += struct.pack("!I", self.seqno[side])
                self.seqno[side] += 1
            head = struct.pack("!BBH", flags, self.gre_version, proto)
            if flags & 0x80:
                c = checksum(head + bytes(4) + opt + inner)      # the payload's zeros add nothing
                opt = struct.pack("!HH", c, 0) + opt
            l4, proto4 = head + opt + inner, 47
        me, peer = (VTEP6 if self.outer_v6 else VTEP4)[side], \
            (VTEP6 if self.outer_v6 else VTEP4)[other(side)]
        length = len(l4) + n
        if self.outer_v6:
            ip = ipv6_header(ipaddress.IPv6Address(me).packed, ipaddress.IPv6Address(peer).packed,
                             length)
            ip = ip[:6] + bytes([proto4]) + ip[7:]
        else:
            ip = ipv4_header(ipaddress.IPv4Address(me).packed, ipaddress.IPv4Address(peer).packed,
                             length, self.ident[side], proto=proto4, df=False)
            self.ident[side] += 1
        return (self.macs[other(side)] + self.macs[side]
                + struct.pack("!H", ETH_IPV6 if self.outer_v6 else ETH_IPV4) + ip + l4)


# ---------------------------------------------------------------------------------------------
# Captures, frames and expected samples
# ---------------------------------------------------------------------------------------------

class Frame:
    """One captured record: `head` bytes followed by `zeros` zero bytes (payload and padding)."""
    __slots__ = ("t", "order", "head", "zeros", "iface", "caplen", "num")

    def __init__(self, t, order, head, zeros, iface, caplen):
        self.t, self.order, self.head, self.zeros = t, order, head, zeros
        self.iface, self.caplen, self.num = iface, caplen, 0

    @property
    def wire_len(self):
        return len(self.head) + self.zeros


class Interface:
    def __init__(self, linktype, snaplen=262144, tsresol=6, name=None):
        self.linktype, self.snaplen, self.tsresol, self.name = linktype, snaplen, tsresol, name


class Capture:
    """A capture being built: frames, and the samples metro must find in them.

    `fmt` is "pcap" (microseconds, or nanoseconds with tsresol=9) or "pcapng". Every interface
    of one capture must use one time unit in pcap; pcapng interfaces may differ.
    """

    def __init__(self, name, description, interfaces, fmt="pcap"):
        self.name, self.description, self.fmt = name, description, fmt
        self.interfaces = interfaces
        if fmt == "pcap":
            assert len(interfaces) == 1
        self.frames: list[Frame] = []
        self.expected: list[tuple] = []   # (ack Seg, data Seg, method)
        self.skipped_truncated = 0
        self.skipped_fragment = 0
        self.skipped_tunnel_bad = 0
        self.skipped_tunnel_nested = 0
        self.encapsulated = 0
        self.by_port = False           # also expect per (src, dst, server port) aggregates
        self.file = None               # file name, when not <name>.<fmt>
        self._units = [10 ** (9 - i.tsresol) for i in interfaces]
        self._finalized = False

    @property
    def filename(self):
        return self.file or f"{self.name}.{self.fmt}"

    def unit(self, iface=0):
        """The smallest time step this interface can store, in ns."""
        return self._units[iface]

    def add(self, t, head, zeros, iface=0, caplen=None) -> Frame:
        if t % self._units[iface]:
            raise ValueError(f"{self.name}: time {t} is not a multiple of the interface unit")
        f = Frame(t, len(self.frames), head, zeros, iface, caplen)
        self.frames.append(f)
        return f

    def expect(self, ack, data, method):
        assert ack.frame is not None and data.frame is not None, "both segments must be captured"
        assert method in ("syn", "seq", "ts")
        self.expected.append((ack, data, method))

    def finalize(self):
        """Puts frames in capture-time order (ties keep creation order) and numbers them."""
        if not self._finalized:
            self.frames.sort(key=attrgetter("t"))      # stable: ties keep creation order
            for i, f in enumerate(self.frames, 1):
                f.num = i
            self.expected.sort(key=lambda e: e[0].frame.num)
            self._finalized = True

    def caplen(self, f: Frame) -> int:
        snap = self.interfaces[f.iface].snaplen
        return min(f.wire_len, f.caplen if f.caplen is not None else snap, snap)

    def frame_bytes(self, f: Frame) -> bytes:
        n = self.caplen(f)
        data = f.head[:n]
        return data + bytes(n - len(data))

    def samples(self):
        out = []
        for ack, data, method in self.expected:
            out.append({
                "ts_ns": ack.t,
                "src": data.conn.sides[data.side].ip, "sport": data.conn.sides[data.side].port,
                "dst": ack.conn.sides[ack.side].ip, "dport": ack.conn.sides[ack.side].port,
                "rtt_ns": ack.t - data.t,
                "method": method,
            })
        return out

    # -- writing ------------------------------------------------------------------------------

    def capture_bytes(self) -> bytes:
        self.finalize()
        return pcap_bytes(self) if self.fmt == "pcap" else pcapng_bytes(self)

    def expected_json(self) -> str:
        self.finalize()
        samples = self.samples()
        head = {
            "capture": self.filename,
            "description": self.description,
            "packets": len(self.frames),
            "skipped_truncated": self.skipped_truncated,
            "skipped_fragment": self.skipped_fragment,
        }
        # Only for captures with tunnels, so that the others' files keep their bytes.
        for k in ("skipped_tunnel_bad", "skipped_tunnel_nested", "encapsulated"):
            if getattr(self, k):
                head[k] = getattr(self, k)
        if self.by_port:
            # The server port is the side that accepted the connection ("s"): the SYN's
            # destination, and in scenarios without a handshake also the smaller port.
            ported = [dict(s, port=d.conn.sides["s"].port)
                      for s, (_, d, _) in zip(samples, self.expected)]
            head["ports"] = pairs_of(ported, by_port=True)
        frames = [[a.frame.num, d.frame.num] for a, d, _ in self.expected]
        return render_expected(head, samples, frames, pairs_of(samples))


def pairs_of(samples, by_port=False):
    pairs = {}
    for s in samples:
        k = (s["src"], s["dst"], s["port"]) if by_port else (s["src"], s["dst"])
        p = pairs.setdefault(k, [0, None, None, 0])
        r = s["rtt_ns"]
        p[0] += 1
        p[1] = r if p[1] is None else min(p[1], r)
        p[2] = r if p[2] is None else max(p[2], r)
        p[3] += r
    return [{"src": k[0], "dst": k[1], **({"port": k[2]} if by_port else {}), "samples": v[0],
             "min_ns": v[1], "max_ns": v[2], "sum_ns": v[3]} for k, v in sorted(pairs.items())]


def render_expected(head, samples, frames, pairs) -> str:
    """Pretty at the top level, one compact line per sample, so diffs stay readable."""
    def block(items):
        if not items:
            return "[]"
        return "[\n" + ",\n".join("    " + json.dumps(x, separators=(",", ":"))
                                  for x in items) + "\n  ]"
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append(f'  "samples": {block(samples)},')
    lines.append(f'  "sample_frames": {block(frames)},')
    lines.append(f'  "pairs": {block(pairs)}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def pcap_bytes(cap: Capture) -> bytes:
    iface = cap.interfaces[0]
    nano = iface.tsresol == 9
    assert iface.tsresol in (6, 9)
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, iface.snaplen, iface.linktype)]
    div = 1 if nano else US
    snap, pack, append = iface.snaplen, struct.Struct("<IIII").pack, out.append
    zeros = bytes(snap)
    for f in cap.frames:         # the bench writes a million of these: keep it inline
        sec, frac = divmod(f.t, SEC)
        wire = len(f.head) + f.zeros
        n = min(wire, snap if f.caplen is None else min(f.caplen, snap))
        append(pack(sec, frac // div, n, wire))
        append(f.head[:n])
        if n > len(f.head):
            append(zeros[:n - len(f.head)])
    return b"".join(out)


def pcapng_option(code, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


def pcapng_block(btype, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng_bytes(cap: Capture) -> bytes:
    out = [pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for iface in cap.interfaces:
        opts = b""
        if iface.name:
            opts += pcapng_option(2, iface.name.encode())          # if_name
        if iface.tsresol != 6:
            opts += pcapng_option(9, bytes([iface.tsresol]))       # if_tsresol: 10^-n s
        if opts:
            opts += struct.pack("<HH", 0, 0)                       # opt_endofopt
        out.append(pcapng_block(1, struct.pack("<HHI", iface.linktype, 0, iface.snaplen) + opts))
    for f in cap.frames:
        ticks = f.t // cap.unit(f.iface)
        data = cap.frame_bytes(f)
        body = struct.pack("<IIIII", f.iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                           f.wire_len) + data + bytes(-len(data) % 4)
        out.append(pcapng_block(6, body))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# TCP connections
# ---------------------------------------------------------------------------------------------

class Side:
    __slots__ = ("ip", "ipb", "port", "isn", "nxt", "ts_base", "win", "ip_id", "ttl",
                 "ip_options", "ext")

    def __init__(self, ip, port, isn, ts_base, win, ip_id, ttl, ip_options, ext):
        addr = ipaddress.ip_address(ip)
        self.ip = str(addr)            # RFC 5952 form, as Rust prints it
        self.ipb = addr.packed
        self.port, self.isn, self.nxt = port, isn % MOD, isn % MOD
        self.ts_base, self.win, self.ip_id, self.ttl = ts_base, win, ip_id, ttl
        self.ip_options, self.ext = ip_options, ext


class Seg:
    """One segment as emitted: capture time, sequence range and TSval."""
    __slots__ = ("conn", "side", "t", "seq", "end", "flags", "paylen", "tsval", "frame")

    def __init__(self, conn, side, t, seq, end, flags, paylen, tsval, frame):
        self.conn, self.side, self.t, self.seq, self.end = conn, side, t, seq, end
        self.flags, self.paylen, self.tsval, self.frame = flags, paylen, tsval, frame


class Conn:
    """One TCP connection as seen at the capture point: side "c" opened it, "s" accepted it.

    `rtt` gives, per side, the time from the capture point to that side and back: the earliest
    a side's reply to a captured segment can itself be captured. The TCP timestamp clock of each
    side ticks once per millisecond (as Linux's does), from `ts_base` at EPOCH.
    """

    def __init__(self, cap, link, cli, srv, *, rtt, isn=(1_000_000, 2_000_000), ts=False,
                 sack=False, mss=1448, iface=0, ip_options=None, ext=None, ts_base=None,
                 win=(502, 509), ttl=(64, 56)):
        self.cap, self.link, self.iface = cap, link, iface
        self.v6 = ":" in cli[0]
        ip_options = ip_options or {}
        ext = ext or {}
        ts_base = ts_base or (0x1C2D3E4F + cli[1], 0x6A5B4C3D + srv[1])
        self.sides = {
            "c": Side(cli[0], cli[1], isn[0], ts_base[0], win[0], (cli[1] * 7) & 0xFFFF,
                      ttl[0], ip_options.get("c", b""), ext.get("c", ())),
            "s": Side(srv[0], srv[1], isn[1], ts_base[1], win[1], (srv[1] * 13) & 0xFFFF,
                      ttl[1], ip_options.get("s", b""), ext.get("s", ())),
        }
        self.rtt = dict(rtt)
        self.ts, self.sack, self.mss = ts, sack, mss
        self.last_tsval = {"c": 0, "s": 0}   # newest TSval emitted by each side
        self.last_t = -1
        self.nframes = 0
        self._prefix = {(s, v): link.prefix(s, v) for s in "cs" for v in (False, True)}

    def tsval_at(self, side, t):
        return (self.sides[side].ts_base + (t - EPOCH) // MS) % MOD

    def send(self, side, t, n=0, *, syn=False, fin=False, psh=None, seq=None, ack=None,
             tsval=None, tsecr=None, sack=(), win=None, caplen=None, ip_options=None,
             captured=True, advance=True, sample=None, method=None) -> Seg:
        """Emits one segment from `side` at capture time `t` and returns it.

        Defaults: seq = the side's next sequence number (advanced unless `advance` is False),
        ack = everything the other side has sent so far, TSecr = the other side's newest TSval.
        `sample=<Seg>` declares that this ACK must give a sample timed from that segment
        (method ``syn`` if it carried SYN, else ``seq``, unless `method` says otherwise).
        `captured=False` builds the segment (it still uses sequence space) but leaves it out of
        the capture, as a sniffer that dropped it would.
        """
        if t <= self.last_t:
            raise ValueError(f"{self.cap.name}: segments of one connection must be emitted in "
                             f"strictly increasing time ({t} after {self.last_t})")
        me, peer = self.sides[side], self.sides[other(side)]
        first_syn = syn and side == "c"
        seq = me.nxt if seq is None else seq % MOD
        seqlen = n + (1 if syn else 0) + (1 if fin else 0)
        if advance:
            me.nxt = (seq + seqlen) % MOD
        if psh is None:
            psh = n > 0
        flags = (SYN if syn else 0) | (FIN if fin else 0) | (PSH if psh else 0) \
            | (0 if first_syn else ACK)
        ackno = 0 if first_syn else (peer.nxt if ack is None else ack % MOD)
        if self.ts:
            if tsval is None:
                tsval = self.tsval_at(side, t)
            if tsecr is None:
                tsecr = 0 if first_syn else self.last_tsval[other(side)]
            ts = (tsval % MOD, tsecr % MOD)
        else:
            assert tsval is None and tsecr is None
            ts = None
        if syn:
            opts = tcp_options(mss=self.mss + (12 if self.ts else 0), sack_perm=self.sack,
                               ts=ts, wscale=7)
            window = 64240 if side == "c" else 65160
        else:
            # The common case (NOP NOP TS, or nothing) without tcp_options()'s generality.
            opts = (b"\x01\x01\x08\x0a" + struct.pack("!II", *ts) if ts else b"") \
                if not sack else tcp_options(ts=ts, sack=sack)
            window = me.win if win is None else win
        tcp = tcp_header(me.ipb, peer.ipb, me.port, peer.port, seq, ackno, flags, window, opts, n)
        if self.v6:
            l3 = ipv6_header(me.ipb, peer.ipb, len(tcp) + n, ext=me.ext, hlim=me.ttl)
        else:
            opts4 = me.ip_options if ip_options is None else ip_options
            l3 = ipv4_header(me.ipb, peer.ipb, len(tcp) + n, me.ip_id, ttl=me.ttl, options=opts4)
            me.ip_id += 1
        if hasattr(self.link, "encapsulate"):
            head = self.link.encapsulate(side, self.v6, l3 + tcp, n)
        else:
            head = self._prefix[(side, self.v6)] + l3 + tcp
        zeros = n + max(0, self.link.min_frame - len(head) - n)
        frame = None
        if captured:
            self.last_t = t
            frame = self.cap.add(t, head, zeros, self.iface, caplen)
            self.nframes += 1
        if ts is not None:
            self.last_tsval[side] = ts[0]
        seg = Seg(self, side, t, seq, (seq + seqlen) % MOD, flags, n,
                  ts[0] if ts else None, frame)
        if sample is not None:
            self.cap.expect(seg, sample, method or ("syn" if sample.flags & SYN else "seq"))
        return seg

    def ack(self, side, t, **kw) -> Seg:
        """A pure ACK (no data)."""
        return self.send(side, t, 0, **kw)

    def resend(self, t, seg, **kw) -> Seg:
        """Retransmits `seg` (same sequence range and SYN/FIN flags), with a fresh TSval."""
        return self.send(seg.side, t, seg.paylen, syn=bool(seg.flags & SYN),
                         fin=bool(seg.flags & FIN), psh=bool(seg.flags & PSH), seq=seg.seq,
                         advance=False, **kw)


# ---------------------------------------------------------------------------------------------
# Building blocks shared by scenarios
# ---------------------------------------------------------------------------------------------

def split(nbytes, mss):
    sizes = [mss] * (nbytes // mss)
    if nbytes % mss:
        sizes.append(nbytes % mss)
    return sizes


def run_events(conn, events, unit):
    """Runs (t, priority, action) events in time order, one unit apart at least, so that a
    connection's segments have strictly increasing capture times. Returns the last time."""
    events.sort(key=lambda e: (e[0], e[1]))
    last = conn.last_t
    for t, _, action in events:
        t = max(t, last + unit)
        action(t)
        last = t
    return last


def handshake(conn, t, *, srv_delay=None, cli_delay=None):
    """SYN, SYN/ACK, ACK: two `syn` samples, one per half. Returns the time of the ACK."""
    syn = conn.send("c", t, syn=True)
    synack = conn.send("s", t + (srv_delay or conn.rtt["s"]), syn=True, sample=syn)
    ack = conn.ack("c", synack.t + (cli_delay or conn.rtt["c"]), sample=synack)
    return ack.t


def exchange(conn, t, req, resp, *, think, gap=12 * US, final_delay=0, srv_delack=40 * MS):
    """A request of `req` bytes from the client and a response of `resp` bytes.

    The server's first response segment acknowledges the request (sample for the client half);
    if it thinks longer than its delayed-ACK timer, a pure ACK comes first instead. The client
    acknowledges every second response segment, and the last one after `final_delay`; each such
    ACK is timed from the newest segment it covers. Returns the time of the last segment.
    """
    unit = conn.cap.unit(conn.iface)
    reqs, resps = split(req, conn.mss), split(resp, conn.mss)
    assert len(reqs) <= 2, "the server acknowledges the request once, after its last segment"
    rq, rs = [], []
    events = []
    for i, n in enumerate(reqs):
        last = i == len(reqs) - 1
        events.append((t + i * gap, 0, lambda tt, n=n, last=last:
                       rq.append(conn.send("c", tt, n, psh=last))))
    t_req = t + (len(reqs) - 1) * gap
    pure_ack = think > srv_delack
    if pure_ack:
        events.append((t_req + conn.rtt["s"] + srv_delack, 1,
                       lambda tt: conn.ack("s", tt, sample=rq[-1])))
    t_resp = t_req + conn.rtt["s"] + think
    for j, n in enumerate(resps):
        last = j == len(resps) - 1
        events.append((t_resp + j * gap, 0, lambda tt, n=n, j=j, last=last:
                       rs.append(conn.send("s", tt, n, psh=last,
                                           sample=rq[-1] if j == 0 and not pure_ack else None))))
        if j % 2 == 1 or last:
            delay = conn.rtt["c"] + (final_delay if j % 2 == 0 else 0)
            events.append((t_resp + j * gap + delay, 1, lambda tt, j=j:
                           conn.ack("c", tt, ack=rs[j].end, sample=rs[j])))
    return run_events(conn, events, unit)


def close(conn, t, first="c"):
    """FIN from `first`, FIN/ACK from the other side, last ACK: one sample per half."""
    second = other(first)
    f1 = conn.send(first, t, fin=True)
    f2 = conn.send(second, t + conn.rtt[second], fin=True, sample=f1)
    return conn.ack(first, f2.t + conn.rtt[first], sample=f2).t


def bulk(conn, sender, t, nseg, *, window, ack_every=2, gap=12 * US, jitter=0, rng=None,
         delack=40 * MS, release=5 * US, first_sample=None):
    """`nseg` full segments from `sender`, captured where they are sent.

    At most `window` segments are in flight; the receiver acknowledges every `ack_every`-th
    segment one RTT (plus up to `jitter`) after it was captured, and a trailing odd segment
    after its delayed-ACK timer. Each ACK is timed from the newest segment it covers: the last
    of its group, since segments leave in sequence order. An ACK frees room, and the sender
    sends again `release` later. The first segment carries the sample `first_sample`.
    Returns (segments, time of the last ACK).
    """
    unit = conn.cap.unit(conn.iface)
    recv = other(sender)
    segs, pending = [], []
    sent = acked = head = 0
    t_send, last_ack = t, t
    while acked < nseg:
        t_ack = pending[head][0] if head < len(pending) else None
        if sent < nseg and sent - acked < window and (t_ack is None or t_send < t_ack):
            segs.append(conn.send(sender, t_send, conn.mss, psh=sent == nseg - 1,
                                  sample=first_sample if sent == 0 else None))
            sent += 1
            if sent % ack_every == 0 or sent == nseg:
                j = rng.randrange(jitter // unit + 1) * unit if jitter else 0
                ta = t_send + conn.rtt[recv] + j + (delack if sent % ack_every else 0)
                last_ack = max(ta, last_ack + unit)
                pending.append((last_ack, sent - 1))
            t_send += gap
        else:
            ta, i = pending[head]
            head += 1
            conn.ack(recv, ta, ack=segs[i].end, sample=segs[i])
            acked = i + 1
            t_send = max(t_send, ta + release)
    return segs, last_ack


def simple_flow(conn, t, exchanges=((211, 1771), (97, 2896)), think=1_013 * US,
                idle=250_007 * US):
    """Handshake, request/response exchanges, then the client closes.
    Samples: 2 + 2 per exchange (response segments ≤ 2 MSS) + 2."""
    t = handshake(conn, t)
    for req, resp in exchanges:
        t = exchange(conn, t + idle, req, resp, think=think)
    return close(conn, t + idle)


# Documentation address ranges (RFC 5737 / RFC 3849): nothing here points at a real host.
CLIENT4, SERVER4 = "192.0.2.10", "198.51.100.20"
CLIENT6, SERVER6 = "2001:db8:0:1::10", "2001:db8:0:2::20"
T0 = EPOCH + 123_457 * US


def eth_capture(name, description, snaplen=262144, tsresol=6, linktype=LINKTYPE_ETHERNET):
    return Capture(name, description, [Interface(linktype, snaplen, tsresol)])


# ---------------------------------------------------------------------------------------------
# Scenarios: one function each, returning a Capture
# ---------------------------------------------------------------------------------------------

def sc_handshake():
    cap = eth_capture("handshake", (
        "SYN, SYN/ACK, ACK only; IPv4 over Ethernet, captured at the client. "
        "Client half: SYN -> SYN/ACK = 23.457 ms (syn). Server half: SYN/ACK -> ACK = 41 us (syn)."))
    conn = Conn(cap, Ethernet(), (CLIENT4, 51234), (SERVER4, 443),
                rtt={"s": 23_457 * US, "c": 41 * US}, sack=True)
    handshake(conn, T0)
    return cap


def reqresp(name, ts):
    with_ts = "with" if ts else "without"
    cap = eth_capture(name, (
        f"Request/response over one IPv4 connection {with_ts} TCP timestamps, captured at the "
        "client (RTT to the server 23.457 ms, client stack 41 us). Handshake (2 syn); exchange 1: "
        "the first response segment acks the request, the client acks the 2-segment response "
        "(timed from its 2nd segment); exchange 2: a 2-segment request, the server's delayed "
        "pure ACK 40 ms later (timed from the 2nd request segment), then a 3-segment response "
        "acked after segments 2 and 3, then a window update (no sample); exchange 3: the "
        "response carries FIN (acked as one range), then the client's FIN is acked. "
        "All samples are plain seq/ack: timestamps only matter for retransmissions."))
    conn = Conn(cap, Ethernet(), (CLIENT4, 51234), (SERVER4, 80),
                rtt={"s": 23_457 * US, "c": 41 * US}, ts=ts, sack=True)
    R, d = conn.rtt["s"], conn.rtt["c"]
    t = handshake(conn, T0)
    # Exchange 1: 317-byte request, 1448 + 612 response; server thinks 1.013 ms.
    req = conn.send("c", t + 153 * US, 317)
    r1 = conn.send("s", req.t + R + 1_013 * US, 1448, psh=False, sample=req)
    r2 = conn.send("s", r1.t + 13 * US, 612)
    a = conn.ack("c", r2.t + d, sample=r2)
    # Exchange 2: 1448 + 389 request; the server thinks 47.311 ms, so its delayed ACK fires.
    q1 = conn.send("c", a.t + 1_500_017 * US, 1448, psh=False)
    q2 = conn.send("c", q1.t + 7 * US, 389)
    conn.ack("s", q2.t + R + 40 * MS, sample=q2)
    s1 = conn.send("s", q2.t + R + 47_311 * US, 1448, psh=False)
    s2 = conn.send("s", s1.t + 13 * US, 1448, psh=False)
    s3 = conn.send("s", s2.t + 13 * US, 531)
    conn.ack("c", s2.t + d, ack=s2.end, sample=s2)
    a = conn.ack("c", s3.t + d, sample=s3)
    a = conn.ack("c", a.t + 2_003 * US, win=1021)              # window update: no sample
    # Exchange 3: the response ends with FIN; the client then closes too.
    req = conn.send("c", a.t + 800_011 * US, 211)
    r = conn.send("s", req.t + R + 519 * US, 733, fin=True, sample=req)
    a = conn.ack("c", r.t + d, sample=r)
    f = conn.send("c", a.t + 97 * US, fin=True)
    conn.ack("s", f.t + R, sample=f)
    return cap


def sc_reqresp_ts():
    return reqresp("reqresp_ts", True)


def sc_reqresp_nots():
    return reqresp("reqresp_nots", False)


def sc_bulk_delack():
    cap = eth_capture("bulk_delack", (
        "Bulk transfer server -> client, captured at the server: 200 segments of 1448 bytes, at "
        "most 20 in flight, 12 us apart; the client acks every second segment 12.345 ms (+0..0.6 "
        "ms jitter) after it was captured, so every ACK covers two segments and is timed from "
        "the second (the newest). A freed window is refilled 5 us after each ACK. Plus the "
        "handshake (2 syn), the request (acked by the first data segment, 41 us) and the "
        "server-initiated close (2 samples). Snaplen 128 keeps the file small: data frames "
        "are cut after 62 payload bytes, the IP total length gives the rest."), snaplen=128)
    rng = random.Random(20231114)
    conn = Conn(cap, Ethernet(mac_c="02:00:5e:30:00:07"), ("203.0.113.7", 40112),
                (SERVER4, 443), rtt={"c": 12_345 * US, "s": 37 * US}, ts=True, sack=True)
    t = handshake(conn, T0)
    req = conn.send("c", t + 5 * US, 190)
    _, t = bulk(conn, "s", req.t + 41 * US, 200, window=20, ack_every=2, jitter=600 * US,
                rng=rng, first_sample=req)
    close(conn, t + 101 * US, first="s")
    return cap


def loss_flows(cap, ts):
    """The three (four with timestamps) loss flows of loss_nots / loss_ts."""
    host = SERVER4
    R = 31_337 * US
    kind = "ts" if ts else "seq"

    # Flow A: fast retransmit. Segment 4 of 12 is lost after the capture point.
    a = Conn(cap, Ethernet(), ("203.0.113.50", 41001), (host, 443),
             rtt={"c": R, "s": 53 * US}, ts=ts)
    t = handshake(a, T0)
    req = a.send("c", t + 11 * US, 211)
    segs = []
    t0 = req.t + 67 * US
    for i in range(12):
        segs.append(a.send("s", t0 + i * 12 * US, 1448, psh=False,
                           sample=req if i == 0 else None))
    acks = []
    for i in range(4):   # quick ACKs for segments 0..3
        acks.append(a.ack("c", segs[i].t + R, ack=segs[i].end, sample=segs[i]))
    dup_tsecr = {"tsecr": segs[3].tsval} if ts else {}
    dups = [a.ack("c", segs[i].t + R, ack=segs[3].end, **dup_tsecr) for i in (5, 6, 7)]
    retx = a.resend(dups[2].t + 9 * US, segs[4])
    for i in range(8, 12):
        a.ack("c", segs[i].t + R, ack=segs[3].end, **dup_tsecr)
    # The retransmission fills the hole: the ACK jumps to the end of segment 11. Its newest
    # covered segment is the retransmission: Karn, unless TSecr names the retransmission.
    if ts:
        jump = a.ack("c", retx.t + R, ack=segs[11].end, tsecr=retx.tsval, sample=retx,
                     method="ts")
    else:
        jump = a.ack("c", retx.t + R, ack=segs[11].end)
    s12 = a.send("s", jump.t + 11 * US, 1448, psh=False)
    s13 = a.send("s", s12.t + 12 * US, 1448)
    a.ack("c", s13.t + R, ack=s13.end, sample=s13)
    close(a, a.last_t + 100_003 * US, first="s")

    # Flow B: tail loss repaired by an RTO retransmission (and, with timestamps, a spurious one).
    b = Conn(cap, Ethernet(), ("203.0.113.51", 41002), (host, 443),
             rtt={"c": R, "s": 53 * US}, ts=ts)
    t = handshake(b, a.last_t + 500_009 * US)
    req = b.send("c", t + 11 * US, 317)
    s1 = b.send("s", req.t + 67 * US, 1448, psh=False, sample=req)
    s2 = b.send("s", s1.t + 12 * US, 1448, psh=False)
    s3 = b.send("s", s2.t + 12 * US, 377)                       # lost after the capture point
    b.ack("c", s2.t + R, ack=s2.end, sample=s2)
    retx = b.resend(s3.t + 231 * MS, s3)                        # RTO
    if ts:
        last = b.ack("c", retx.t + R, ack=s3.end, tsecr=retx.tsval, sample=retx, method="ts")
    else:
        last = b.ack("c", retx.t + R, ack=s3.end)
    if ts:
        # Spurious RTO: the ACK was only late. It echoes the original's TSval, so the sample
        # is timed from the original (251.903 ms); the dup ACK for the retransmission gives none.
        req = b.send("c", last.t + 300_007 * US, 211)
        s4 = b.send("s", req.t + 67 * US, 519, sample=req)
        s4r = b.resend(s4.t + 231 * MS, s4)
        late = b.ack("c", s4.t + 251_903 * US, ack=s4.end, tsecr=s4.tsval, sample=s4,
                     method="ts")
        assert late.t > s4r.t
        b.ack("c", s4r.t + R, ack=s4.end, tsecr=s4r.tsval)
    close(b, b.last_t + 100_003 * US, first="c")

    # Flow C: the host's own outgoing connection; its first SYN is lost after the capture point
    # and resent after 1 s. Without timestamps the SYN/ACK gives no sample (Karn); with them it
    # echoes the resent SYN's TSval: a `ts` sample timed from the resent SYN.
    R2 = 7_919 * US
    c = Conn(cap, Ethernet(), (host, 40001), ("203.0.113.5", 5432),
             rtt={"s": R2, "c": 29 * US}, ts=ts)
    syn = c.send("c", b.last_t + 700_001 * US, syn=True)
    syn2 = c.resend(syn.t + 1_003_117 * US, syn)
    if ts:
        assert syn2.tsval != syn.tsval
        sa = c.send("s", syn2.t + R2, syn=True, tsecr=syn2.tsval, sample=syn2, method="ts")
    else:
        sa = c.send("s", syn2.t + R2, syn=True)
    ack = c.ack("c", sa.t + 29 * US, sample=sa)
    t = exchange(c, ack.t + 5 * US, 97, 311, think=331 * US)
    close(c, t + 50_001 * US, first="c")

    if ts:
        # Flow D: a LAN peer 213 us away. The fast retransmit leaves within the same 1 ms
        # timestamp tick as the original, so both copies carry the same TSval and the ACK's
        # TSecr names two transmissions: no sample.
        R3 = 213 * US
        d = Conn(cap, Ethernet(), ("198.51.100.77", 41003), (host, 443),
                 rtt={"c": R3, "s": 53 * US}, ts=True)
        t = handshake(d, c.last_t + 400_003 * US)
        req = d.send("c", t + 11 * US, 99)
        t1 = (t // MS + 3) * MS + 17 * US        # early in a millisecond tick
        segs = [d.send("s", t1 + i * 12 * US, 1448, psh=False, sample=req if i == 0 else None)
                for i in range(8)]
        d.ack("c", segs[0].t + R3, ack=segs[0].end, sample=segs[0])
        d.ack("c", segs[1].t + R3, ack=segs[1].end, sample=segs[1])
        dups = [d.ack("c", segs[i].t + R3, ack=segs[1].end, tsecr=segs[1].tsval)
                for i in (3, 4, 5)]
        retx = d.resend(dups[2].t + 9 * US, segs[2])
        assert retx.tsval == segs[2].tsval, "both copies must share one TSval"
        d.ack("c", segs[6].t + R3, ack=segs[1].end, tsecr=segs[1].tsval)
        d.ack("c", segs[7].t + R3, ack=segs[1].end, tsecr=segs[1].tsval)
        d.ack("c", retx.t + R3, ack=segs[7].end, tsecr=retx.tsval)     # ambiguous: nothing
        s8 = d.send("s", d.last_t + 7 * US, 1448)
        d.ack("c", s8.t + R3, ack=s8.end, sample=s8)
        close(d, d.last_t + 10_007 * US, first="c")
    return kind


def sc_loss_nots():
    cap = eth_capture("loss_nots", (
        "Loss without timestamps, captured at 198.51.100.20. Flow A (:41001): fast retransmit: "
        "segment 4 of 12 lost after the capture point, 3 dup ACKs, retransmission, the ACK "
        "jumps to the end of segment 11: its newest covered segment is the retransmission, so "
        "Karn gives no sample; the next ACK (2 new segments) gives one. Flow B (:41002): the last "
        "response segment lost, resent on RTO 231 ms later, its ACK gives no sample (Karn). "
        "Flow C (:40001, the host's own outgoing connection): the SYN is lost and resent after "
        "1 s; the SYN/ACK gives no sample (Karn), the handshake ACK does (syn)."))
    loss_flows(cap, ts=False)
    return cap


def sc_loss_ts():
    cap = eth_capture("loss_ts", (
        "The flows of loss_nots with TCP timestamps, captured at 198.51.100.20. Flow A: the "
        "jump ACK after the fast retransmit echoes the retransmission's TSval: a `ts` sample "
        "timed from the retransmission. Flow B: RTO after tail loss, the ACK echoes the "
        "retransmission (ts sample from it); then a spurious RTO: the late ACK echoes the "
        "original's TSval (ts sample from the original, 251.903 ms) and the dup ACK for the "
        "retransmission gives nothing. Flow C: resent SYN, the SYN/ACK echoes the resent SYN's "
        "TSval: a sample timed from the resent SYN, method `ts` (Karn settled by timestamps "
        "takes precedence over `syn`). Flow D (LAN, 213 us): the fast retransmit shares the "
        "original's TSval (same 1 ms tick), so the ACK's TSecr names two copies: no sample."))
    loss_flows(cap, ts=True)
    return cap


def sc_sack():
    cap = eth_capture("sack", (
        "Two losses with SACK and timestamps, captured at the sender 198.51.100.20. Segments 5 "
        "and 10 of 16 are lost after the capture point; the dup ACKs carry growing SACK blocks "
        "(which give nothing). Segment 5 is fast-retransmitted: the partial ACK to the end of "
        "segment 9 echoes its TSval (ts sample from the retransmission); then segment 10 is "
        "resent and the ACK to the end of segment 15 echoes it (ts sample). Then two new "
        "segments are acked normally (seq)."))
    R = 17_011 * US
    conn = Conn(cap, Ethernet(), ("203.0.113.60", 42424), (SERVER4, 443),
                rtt={"c": R, "s": 43 * US}, ts=True, sack=True)
    t = handshake(conn, T0)
    req = conn.send("c", t + 9 * US, 173)
    t0 = req.t + 61 * US
    segs = [conn.send("s", t0 + i * 12 * US, 1448, psh=False, sample=req if i == 0 else None)
            for i in range(16)]
    for i in range(5):
        conn.ack("c", segs[i].t + R, ack=segs[i].end, sample=segs[i])
    in_order = segs[4]            # the receiver's cumulative point until segment 5 is repaired
    blocks = []                   # SACK blocks as [first, last] segment indexes
    dups = []
    for i in range(6, 16):
        if i == 10:               # lost, like segment 5
            continue
        if blocks and blocks[-1][1] == i - 1:
            blocks[-1][1] = i
        else:
            blocks.append([i, i])
        sack = [(segs[b[0]].seq, segs[b[1]].end) for b in reversed(blocks)]  # newest first
        dups.append(conn.ack("c", segs[i].t + R, ack=in_order.end, sack=sack,
                             tsecr=in_order.tsval))
        if len(dups) == 3:
            retx5 = conn.resend(dups[-1].t + 7 * US, segs[5])
    partial = conn.ack("c", retx5.t + R, ack=segs[9].end, tsecr=retx5.tsval,
                       sack=[(segs[11].seq, segs[15].end)], sample=retx5, method="ts")
    retx10 = conn.resend(partial.t + 7 * US, segs[10])
    full = conn.ack("c", retx10.t + R, ack=segs[15].end, tsecr=retx10.tsval, sample=retx10,
                    method="ts")
    n1 = conn.send("s", full.t + 5 * US, 1448, psh=False)
    n2 = conn.send("s", n1.t + 12 * US, 1448)
    conn.ack("c", n2.t + R, ack=n2.end, sample=n2)
    close(conn, conn.last_t + 50_021 * US, first="s")
    return cap


def sc_reorder():
    cap = eth_capture("reorder", (
        "Reordering seen at a tap between client 192.0.2.10 (3.217 ms away) and server "
        "198.51.100.20 (19.001 ms away). The server's data segments reach the tap in the order "
        "0 1 2 4 3 5 6 7 9 10 8 11 12 13; the client acks every segment, with dup ACKs while a "
        "gap is open. Filling a gap makes the ACK cover the late segment and the ones after it; "
        "the sample is timed from the late segment (newest by capture time), not from the one "
        "whose end equals the ACK number (where tshark times from). A late segment is new data, "
        "not a retransmission. Then two client ACKs reach the tap in swapped order: the second "
        "(lower) one gives nothing."))
    conn = Conn(cap, Ethernet(), (CLIENT4, 50500), (SERVER4, 8080),
                rtt={"c": 3_217 * US, "s": 19_001 * US})
    Rc = conn.rtt["c"]
    t = handshake(conn, T0)
    req = conn.send("c", t + 23 * US, 120)
    # Sequence numbers are fixed when the server sends; the tap sees the segments in `order`,
    # 15 us apart, all before the first ACK comes back.
    order = [0, 1, 2, 4, 3, 5, 6, 7, 9, 10, 8, 11, 12, 13]
    base = conn.sides["s"].nxt
    conn.sides["s"].nxt = (base + 1448 * len(order)) % MOD
    t0 = req.t + conn.rtt["s"] + 503 * US
    segs = {}
    for k, i in enumerate(order):
        segs[i] = conn.send("s", t0 + k * 15 * US, 1448, psh=False, seq=base + 1448 * i,
                            advance=False, sample=req if k == 0 else None)
    assert t0 + len(order) * 15 * US < t0 + Rc
    # The client acks each arrival Rc later. An arrival that extends the in-order prefix (in
    # order, or filling a gap) moves the ACK to the prefix's end: the newest covered segment by
    # capture time is the one that just arrived. Any other arrival gives a dup ACK.
    arrived, cum = set(), 0             # cum: how many segments arrived in order
    for i in order:
        arrived.add(i)
        if i == cum:
            while cum in arrived:
                cum += 1
            last = conn.ack("c", segs[i].t + Rc, ack=segs[cum - 1].end, sample=segs[i])
        else:
            last = conn.ack("c", segs[i].t + Rc, ack=segs[cum - 1].end)
    last = last.t
    # ACK reordering: two more segments, whose ACKs reach the tap swapped.
    d1 = conn.send("s", last + 401 * US, 1448, psh=False)
    d2 = conn.send("s", d1.t + 12 * US, 1448)
    conn.ack("c", d2.t + Rc, ack=d2.end, sample=d2)
    conn.ack("c", d2.t + Rc + 19 * US, ack=d1.end)            # old ACK: nothing
    close(conn, conn.last_t + 100_003 * US, first="c")
    return cap


def sc_wrap():
    cap = eth_capture("wrap", (
        "Bulk flow whose sequence numbers wrap past 2^32, captured at the server. Client ISN "
        "2^32-150: its 300-byte request straddles the wrap, so the server's ack numbers wrap "
        "(to 151). Server ISN 2^32-10001: data segment 6 straddles the wrap and the ACK to the "
        "end of segment 7 jumps from 4294965984 to 1584. 100 segments, 16 in flight, the client "
        "acks every second segment (timed from the second); 11.113 ms RTT with jitter. "
        "Snaplen 128."), snaplen=128)
    rng = random.Random(4294967296)
    conn = Conn(cap, Ethernet(), ("203.0.113.9", 39999), (SERVER4, 443),
                rtt={"c": 11_113 * US, "s": 31 * US}, isn=(MOD - 150, MOD - 10_001),
                ts=True, sack=True)
    t = handshake(conn, T0)
    req = conn.send("c", t + 5 * US, 300)
    assert conn.sides["c"].nxt == 151
    _, t = bulk(conn, "s", req.t + 47 * US, 100, window=16, ack_every=2, jitter=400 * US,
                rng=rng, first_sample=req)
    close(conn, t + 101 * US, first="s")
    return cap


def tso_flow(conn, t, Rc):
    """TSO super-frames of 9 MSS (13032 bytes) acked in 2-MSS steps (one ACK per 24 us).

    SF1 and SF2 leave 3 us apart; ACK k (k = 1..9) acknowledges 2896 k bytes. ACKs 1-4 land
    inside SF1 (timed from SF1); ACK 5 covers SF1's tail and SF2's head (timed from SF2, the
    newest); ACKs 6-9 land in or at the end of SF2. After ACK 2 the sender sends SF3 (4 MSS),
    after ACK 6 SF4 (2 MSS); their ACKs follow.
    """
    mss = conn.mss
    req = conn.send("c", t + 7 * US, 411)
    sf1 = conn.send("s", req.t + 53 * US, 9 * mss, psh=False, sample=req)
    sf2 = conn.send("s", sf1.t + 3 * US, 9 * mss, psh=False)
    base = sf1.seq
    sfs = [sf1, sf2]

    def covering(a):
        """The newest super-frame with bytes in (.., a]: the last one starting below a."""
        return max((s for s in sfs if (s.seq - base) % MOD < a), key=lambda s: s.t)

    last = None
    for k in range(1, 10):
        a = 2 * mss * k
        last = conn.ack("c", sf1.t + Rc + 24 * US * k, ack=base + a, sample=covering(a))
        if k == 2:
            sfs.append(conn.send("s", last.t + 5 * US, 4 * mss, psh=False))
        if k == 6:
            sfs.append(conn.send("s", last.t + 5 * US, 2 * mss))
    sf3, sf4 = sfs[2], sfs[3]
    a3 = conn.ack("c", sf3.t + Rc + 24 * US, ack=sf3.seq + 2 * mss, sample=sf3)
    a3 = conn.ack("c", max(sf3.t + Rc + 48 * US, a3.t + US), ack=sf3.end, sample=sf3)
    conn.ack("c", max(sf4.t + Rc + 24 * US, a3.t + US), ack=sf4.end, sample=sf4)
    return close(conn, conn.last_t + 100_003 * US, first="s")


def sc_tso():
    cap = eth_capture("tso", (
        "TSO super-frames captured at the sender with snaplen 128: each data frame is one IP "
        "packet of 9 x 1448 = 13032 payload bytes (IPv4 total length 13084; IPv6 payload "
        "length 13064) cut to 128 bytes, so only the IP header tells its length. The receiver "
        "acks every 2896 bytes, so most ACKs land inside a super-frame and each gives a sample "
        "timed from the super-frame it covers; the ACK covering the tail of SF1 and the head "
        "of SF2 is timed from SF2 (newest). Later 4-MSS and 2-MSS super-frames are acked inside "
        "and at their ends. An IPv4 flow, then the same over IPv6. Timestamps on."),
        snaplen=128)
    c4 = Conn(cap, Ethernet(), ("192.0.2.33", 53000), (SERVER4, 8443),
              rtt={"c": 9_871 * US, "s": 29 * US}, ts=True, sack=True)
    t = handshake(c4, T0)
    t = tso_flow(c4, t, c4.rtt["c"])
    c6 = Conn(cap, Ethernet(), ("2001:db8:0:1::33", 53001), (SERVER6, 8443),
              rtt={"c": 9_871 * US, "s": 29 * US}, ts=True, sack=True)
    t = handshake(c6, t + 300_007 * US)
    tso_flow(c6, t, c6.rtt["c"])
    return cap


def sc_ipv6_ext():
    # Hop-by-hop: Router Alert (MLD) + PadN(0) = 6 bytes of options -> 8-byte header.
    hbh = bytes([5, 2, 0, 0, 1, 0])
    # Destination options: PadN carrying 12 zero bytes -> 16-byte header.
    dopt16 = bytes([1, 12]) + bytes(12)
    # Destination options: PadN(4) -> 8-byte header (on the server's packets).
    dopt8 = bytes([1, 4]) + bytes(4)
    # Routing header type 4 (SRH, RFC 8754), segments left 0, one segment: the destination.
    srh = bytes([4, 0, 0, 0, 0, 0]) + ipaddress.ip_address(SERVER6).packed
    cap = eth_capture("ipv6_ext", (
        "IPv6 with extension headers before TCP, captured at the client. Client packets carry "
        "hop-by-hop options (8 bytes), destination options (16) and a type-4 routing header "
        "(24) before TCP; server packets carry destination options (8). Payload length counts "
        "the extension headers. Handshake, two exchanges, client close: 8 samples."))
    conn = Conn(cap, Ethernet(), (CLIENT6, 50123), (SERVER6, 443),
                rtt={"s": 17_293 * US, "c": 43 * US}, ts=True, sack=True,
                ext={"c": [(0, hbh), (60, dopt16), (43, srh)], "s": [(60, dopt8)]})
    simple_flow(conn, T0)
    return cap


def sc_vlan():
    cap = eth_capture("vlan", (
        "Ethernet with one 802.1Q tag (TPID 0x8100, VID 100, PCP 3) on every frame; IPv4 "
        "request/response captured at the client: handshake, two exchanges, close: 8 samples."))
    conn = Conn(cap, Ethernet(tags=[(TPID_8021Q, (3 << 13) | 100)]), (CLIENT4, 51000),
                (SERVER4, 443), rtt={"s": 5_003 * US, "c": 39 * US}, ts=True, sack=True)
    simple_flow(conn, T0)
    return cap


def sc_qinq():
    cap = eth_capture("qinq", (
        "Ethernet with QinQ tags (outer 802.1ad TPID 0x88a8 VID 200, inner 802.1Q 0x8100 VID "
        "100); an IPv4 and an IPv6 request/response flow captured at the client: 8 samples "
        "each."))
    tags = [(TPID_8021AD, 200), (TPID_8021Q, 100)]
    c4 = Conn(cap, Ethernet(tags=tags), (CLIENT4, 51001), (SERVER4, 443),
              rtt={"s": 7_001 * US, "c": 37 * US}, ts=True, sack=True)
    t = simple_flow(c4, T0)
    c6 = Conn(cap, Ethernet(tags=tags), (CLIENT6, 51002), (SERVER6, 443),
              rtt={"s": 7_013 * US, "c": 37 * US}, sack=True)
    simple_flow(c6, t + 100_003 * US)
    return cap


def sc_sll():
    cap = eth_capture("sll", (
        "LINKTYPE_LINUX_SLL (113, `tcpdump -i any`), captured at the client: packet type 4 "
        "(outgoing) for the client's packets, 0 (to us) for the server's. An IPv4 and an IPv6 "
        "request/response flow: 8 samples each."), linktype=LINKTYPE_LINUX_SLL)
    c4 = Conn(cap, LinuxSLL(), (CLIENT4, 52000), (SERVER4, 443),
              rtt={"s": 13_007 * US, "c": 33 * US}, ts=True, sack=True)
    t = simple_flow(c4, T0)
    c6 = Conn(cap, LinuxSLL(), (CLIENT6, 52001), (SERVER6, 443),
              rtt={"s": 13_009 * US, "c": 33 * US}, ts=True, sack=True)
    simple_flow(c6, t + 100_003 * US)
    return cap


def sc_sll2():
    cap = eth_capture("sll2", (
        "LINKTYPE_LINUX_SLL2 (276, 20-byte header: protocol, interface index 2, ARPHRD, packet "
        "type, address), captured at the client. An IPv4 and an IPv6 request/response flow: "
        "8 samples each."), linktype=LINKTYPE_LINUX_SLL2)
    c4 = Conn(cap, LinuxSLL2(), (CLIENT4, 53000), (SERVER4, 443),
              rtt={"s": 13_011 * US, "c": 35 * US}, ts=True, sack=True)
    t = simple_flow(c4, T0)
    c6 = Conn(cap, LinuxSLL2(), (CLIENT6, 53001), (SERVER6, 443),
              rtt={"s": 13_013 * US, "c": 35 * US}, ts=True, sack=True)
    simple_flow(c6, t + 100_003 * US)
    return cap


def sc_ns_pcapng():
    cap = Capture("ns_pcapng", (
        "pcapng with two Ethernet interfaces: interface 0 (eth0) has if_tsresol = 9 "
        "(nanoseconds) and carries an IPv4 flow whose times and RTTs are ns-exact (4.567891 "
        "ms to the server, 37.129 us client stack); interface 1 (eth1) has no if_tsresol "
        "(default microseconds) and carries an IPv6 flow at whole microseconds. 8 samples "
        "each."), [Interface(LINKTYPE_ETHERNET, 262144, 9, "eth0"),
                   Interface(LINKTYPE_ETHERNET, 262144, 6, "eth1")], fmt="pcapng")
    c4 = Conn(cap, Ethernet(), (CLIENT4, 54000), (SERVER4, 443), iface=0,
              rtt={"s": 4_567_891, "c": 37_129}, ts=True, sack=True)
    simple_flow(c4, T0 + 1, think=1_013_571, idle=250_007_333)
    c6 = Conn(cap, Ethernet(), (CLIENT6, 54001), (SERVER6, 443), iface=1,
              rtt={"s": 4_571 * US, "c": 39 * US}, ts=True, sack=True)
    simple_flow(c6, T0 + 200_003 * US)
    return cap


def sc_ns_pcap():
    cap = eth_capture("ns_pcap", (
        "Classic pcap with the nanosecond magic (0xa1b23c4d, `tcpdump --time-stamp-precision="
        "nano`); an IPv4 request/response flow with ns-exact times (RTT 2.345679 ms, client "
        "stack 31.417 us): 8 samples."), tsresol=9)
    conn = Conn(cap, Ethernet(), (CLIENT4, 55000), (SERVER4, 443),
                rtt={"s": 2_345_679, "c": 31_417}, ts=True, sack=True)
    simple_flow(conn, T0 + 3, think=987_653, idle=100_000_001)
    return cap


def sc_snaplen():
    cap = eth_capture("snaplen", (
        "Frames cut short (per-record captured length below the wire length), IPv4 with "
        "timestamps, captured at the client. Usable: data frames cut right after the TCP "
        "options (66 bytes): their payload length comes from the IP total length. Skipped as "
        "truncated (4): a request cut inside its TCP options (the server's ACK for it then "
        "acks bytes never seen: nothing); a server pure ACK cut inside the IP header (the "
        "response's first segment is then the first ACK of request 3); a response segment cut "
        "inside the TCP fixed header (the client's ACK for it covers only unseen bytes: "
        "nothing; its ACK of the next segment gives a sample); a client ACK with IPv4 options "
        "cut inside those options (the client's FIN then carries the first ACK of response 4)."))
    R, d = 21_001 * US, 47 * US
    conn = Conn(cap, Ethernet(), (CLIENT4, 56000), (SERVER4, 80), rtt={"s": R, "c": d},
                ts=True, sack=True)
    full_hdr = 14 + 20 + 32      # Ethernet + IPv4 + TCP with NOP NOP TS
    t = handshake(conn, T0)
    # 1: request and response cut after the TCP options; both usable.
    q = conn.send("c", t + 200_003 * US, 517, caplen=full_hdr)
    r = conn.send("s", q.t + R + 401 * US, 1200, caplen=full_hdr, sample=q)
    a = conn.ack("c", r.t + d, sample=r)
    # 2: request cut inside the TCP options: skipped, so its ACK acks unseen bytes.
    q = conn.send("c", a.t + 200_003 * US, 211, caplen=full_hdr - 6)
    cap.skipped_truncated += 1
    r = conn.send("s", q.t + R + 401 * US, 800, caplen=full_hdr)
    a = conn.ack("c", r.t + d, sample=r)
    # 3: the server's pure ACK is cut inside the IP header; the response's first segment is
    # then the first ACK seen for the request. Its second segment is cut inside the TCP header.
    q = conn.send("c", a.t + 200_003 * US, 300)
    conn.ack("s", q.t + R, caplen=14 + 12)
    cap.skipped_truncated += 1
    r1 = conn.send("s", q.t + R + 40 * MS + 3 * US, 1448, psh=False, caplen=full_hdr, sample=q)
    r2 = conn.send("s", r1.t + 13 * US, 1448, psh=False, caplen=14 + 20 + 10)
    cap.skipped_truncated += 1
    r3 = conn.send("s", r2.t + 13 * US, 99, caplen=full_hdr)
    conn.ack("c", r1.t + d, ack=r1.end, sample=r1)
    conn.ack("c", r2.t + d, ack=r2.end)              # covers only r2, never seen: nothing
    a = conn.ack("c", r3.t + d, ack=r3.end, sample=r3)
    # 4: the client's ACK carries IPv4 options (Router Alert + NOPs) and is cut inside them.
    q = conn.send("c", a.t + 200_003 * US, 100)
    r = conn.send("s", q.t + R + 401 * US, 500, sample=q)
    conn.ack("c", r.t + d, ip_options=b"\x94\x04\x00\x00\x01\x01\x01\x00", caplen=14 + 20 + 2)
    cap.skipped_truncated += 1
    f = conn.send("c", r.t + 1_000_003 * US, fin=True, sample=r)
    f2 = conn.send("s", f.t + R, fin=True, sample=f)
    conn.ack("c", f2.t + d, sample=f2)
    return cap


def sc_raw_ipv4():
    cap = eth_capture("raw_ipv4", (
        "LINKTYPE_RAW (101): frames start at the IP header. An IPv4 flow whose client packets "
        "carry IP options (Router Alert, IHL 6) and server packets a 12-byte Record Route "
        "option (IHL 8); then an IPv6 flow in the same file (version nibble 6). Captured at "
        "the client: 8 samples each."), linktype=LINKTYPE_RAW)
    rr = bytes([7, 11, 4]) + bytes(8) + b"\x00"      # Record Route, 2 empty slots, then EOL
    c4 = Conn(cap, Raw(), (CLIENT4, 57000), (SERVER4, 443),
              rtt={"s": 3_001 * US, "c": 29 * US}, ts=True, sack=True,
              ip_options={"c": b"\x94\x04\x00\x00", "s": rr})
    t = simple_flow(c4, T0)
    c6 = Conn(cap, Raw(), (CLIENT6, 57001), (SERVER6, 443),
              rtt={"s": 3_011 * US, "c": 29 * US}, ts=True, sack=True)
    simple_flow(c6, t + 100_003 * US)
    return cap


def sc_null_loopback():
    cap = eth_capture("null_loopback", (
        "LINKTYPE_NULL (0), BSD loopback: a 4-byte address family in host byte order "
        "(little-endian, as is the file): 2 for IPv4 (127.0.0.1 -> 127.0.0.1), 30 (macOS) "
        "for the first IPv6 flow and 24 (NetBSD/OpenBSD) for the second (::1 -> ::1). Both "
        "ends share an address, so only the ports tell the halves apart. 8 samples each."),
        linktype=LINKTYPE_NULL)
    t = T0
    for fam_ip, port, fam in (("127.0.0.1", 58000, 30), ("::1", 58001, 30), ("::1", 58002, 24)):
        conn = Conn(cap, Null(fam), (fam_ip, port), (fam_ip, 8080),
                    rtt={"s": 113 * US, "c": 17 * US}, ts=True, sack=True, mss=16344)
        t = simple_flow(conn, t, exchanges=((211, 17771), (97, 3000))) + 100_003 * US
    return cap


def sc_fragments():
    cap = eth_capture("fragments", (
        "An IPv4 request/response flow (6 samples) plus two non-first IPv4 fragments (offset "
        "1480 with MF set, and offset 2960 without), protocol TCP, from the server to the "
        "client. Their payload looks like a TCP ACK for the client's outstanding request; it "
        "must not be read as one: both are skipped as fragments."))
    conn = Conn(cap, Ethernet(), (CLIENT4, 59000), (SERVER4, 443),
                rtt={"s": 8_009 * US, "c": 41 * US}, ts=True, sack=True)
    R = conn.rtt["s"]
    t = handshake(conn, T0)
    req = conn.send("c", t + 100_003 * US, 211)
    cli, srv = conn.sides["c"], conn.sides["s"]
    link = conn.link
    for k, (off, mf) in enumerate(((185, True), (370, False))):
        fake = tcp_header(srv.ipb, cli.ipb, srv.port, cli.port, srv.nxt, cli.nxt, ACK, 509,
                          b"", 0)
        body = fake + bytes(24)
        ip = ipv4_header(srv.ipb, cli.ipb, len(body), 0x5A5A, ttl=56, df=False, mf=mf,
                         frag_offset=off)
        head = link.prefix("s", False) + ip + body
        cap.add(req.t + 1_001 * US + k * 11 * US, head, max(0, 60 - len(head)))
        cap.skipped_fragment += 1
    r1 = conn.send("s", req.t + R + 1_013 * US, 1448, psh=False, sample=req)
    r2 = conn.send("s", r1.t + 13 * US, 311)
    a = conn.ack("c", r2.t + 41 * US, sample=r2)
    close(conn, a.t + 100_003 * US)
    return cap


def sc_capture_gap():
    cap = eth_capture("capture_gap", (
        "Segments the sniffer missed (sent, but absent from the capture), captured at the "
        "server. Bulk part: segment 5 of 10 is missing; its ACK covers only unseen bytes and "
        "gives nothing, the next ACKs give samples as usual. Request/response part: the only "
        "response segment is missing, so the client's ACK acks beyond anything the server was "
        "seen to send: nothing. The next exchange gives samples as usual."))
    R = 14_009 * US
    conn = Conn(cap, Ethernet(), ("203.0.113.70", 43000), (SERVER4, 443),
                rtt={"c": R, "s": 41 * US}, ts=True, sack=True)
    t = handshake(conn, T0)
    req = conn.send("c", t + 7 * US, 150)
    segs = [conn.send("s", req.t + 51 * US + i * 12 * US, 1448, psh=i == 9,
                      captured=i != 5, sample=req if i == 0 else None) for i in range(10)]
    for i, s in enumerate(segs):
        conn.ack("c", s.t + R, ack=s.end, sample=s if i != 5 else None)
    req = conn.send("c", conn.last_t + 300_007 * US, 211)
    r = conn.send("s", req.t + 1_003 * US, 900, captured=False)
    conn.ack("c", r.t + R, ack=r.end)            # beyond anything seen from the server
    # The server's next segment acknowledges the request and is the first ACK of it seen.
    t = exchange(conn, conn.last_t + 300_007 * US, 97, 2896, think=501 * US)
    close(conn, t + 100_003 * US, first="c")
    return cap


# -- many flows -------------------------------------------------------------------------------

def mixed_flows(cap, rng, nflows, *, budget, spread, v6_share, ts_share=0.7, bulk_share=0.6,
                window=(8, 40)):
    """Concurrent flows, captured beside the servers (as a server-side sniffer would be).

    Each flow: handshake, then request/response exchanges or bulk downloads (delayed or
    per-segment ACKs) until it has emitted about `budget` frames (±50 %), then a close.
    Every ACK's sample is declared by `handshake`, `exchange`, `bulk` and `close`.
    """
    servers4 = [f"198.51.100.{i}" for i in range(10, 22)]
    servers6 = [f"2001:db8:100::{i:x}" for i in range(10, 14)]
    port_of = {}
    for i in range(nflows):
        v6 = rng.random() < v6_share
        if v6:
            srv = rng.choice(servers6)
            cli = f"2001:db8:200::{rng.randrange(1, 0xFFFF):x}"
        else:
            srv = rng.choice(servers4)
            cli = f"203.0.113.{rng.randrange(1, 255)}" if rng.random() < 0.6 else \
                f"192.0.2.{rng.randrange(1, 255)}"
        sport = rng.choice((443, 443, 443, 80, 8080))
        cport = port_of.get((cli, srv, sport), 32768 + rng.randrange(28000))
        port_of[(cli, srv, sport)] = cport + 1
        # RTT to the client: 0.3-180 ms, log-uniform, whole microseconds; server stack 20-90 us.
        rc = int(300 * (600 ** rng.random())) * US
        rs = rng.randrange(20, 91) * US
        conn = Conn(cap, Ethernet(mac_c=f"02:00:5e:40:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"),
                    (cli, cport), (srv, sport), rtt={"c": rc, "s": rs},
                    isn=(rng.randrange(MOD), rng.randrange(MOD)),
                    ts=rng.random() < ts_share, sack=True,
                    ts_base=(rng.randrange(MOD), rng.randrange(MOD)))
        want = rng.randrange(budget // 2, budget * 3 // 2 + 1)
        is_bulk = rng.random() < bulk_share
        t = handshake(conn, EPOCH + rng.randrange(spread // US) * US)
        while conn.nframes < want - 4:
            t += rng.randrange(1, 400_000) * US if not is_bulk else rng.randrange(50, 20_000) * US
            if is_bulk:
                req = conn.send("c", t, rng.randrange(80, 600))
                nseg = max(2, min(rng.randrange(20, 300), (want - conn.nframes) * 2 // 3))
                _, t = bulk(conn, "s", req.t + rng.randrange(30, 3000) * US, nseg,
                            window=rng.randrange(*window), ack_every=rng.choice((1, 2, 2, 2)),
                            jitter=rng.randrange(0, rc // 20 + 1, US) if rc >= 20 * US else 0,
                            rng=rng, first_sample=req)
            else:
                resp = rng.choice((rng.randrange(60, 1448), rng.randrange(1448, 6 * 1448)))
                think = rng.choice((rng.randrange(20, 2000), rng.randrange(2000, 90_000))) * US
                t = exchange(conn, t, rng.randrange(60, 1448), resp, think=think)
        close(conn, t + rng.randrange(1, 100_000) * US, first=rng.choice("cs"))


def sc_mix_small():
    cap = eth_capture("mix_small", (
        "A benchmark-like mix captured beside the servers with snaplen 96: 300 concurrent "
        "flows started within 0.3 s (about 85 % IPv4, 15 % IPv6, 70 % with timestamps), 60 % "
        "bulk downloads (8-40 segments in flight, ACK every segment or, mostly, every second) "
        "and 40 % request/response, RTTs to the clients 0.3-180 ms (log-uniform), random "
        "ISNs (some flows wrap). About 13 k frames, so that testdata stays under 3 MB. No "
        "loss: every sample is syn or seq, declared by the same builders as the small "
        "scenarios."), snaplen=96)
    mixed_flows(cap, random.Random(300), 300, budget=40, spread=300 * MS, v6_share=0.15)
    return cap


def sc_ports():
    cap = eth_capture("ports", (
        "One IPv4 client and one server, four connections one after the other, for metro's "
        "per-port series (--by port): port 443 (RTT to the server 5 ms, 4 exchanges), 5432 "
        "(20 ms, 3 exchanges), 50000 from client port 40000 (7 ms, 2 exchanges; the SYN names "
        "the server, whose port is the larger), then 8080 from client port 45000 without a "
        "handshake (11 ms, 1 exchange and a close; the smaller port is the server's). Client "
        "stack 41-44 us. Each port's busiest-first order is also its order in time, so that a "
        "cap of 2 ports keeps 443 and 5432 whatever the workers."))
    t = T0
    for i, (cport, sport, rs, exchanges, opened) in enumerate((
            (51000, 443, 5 * MS, 4, True), (51001, 5432, 20 * MS, 3, True),
            (40000, 50000, 7 * MS, 2, True), (45000, 8080, 11 * MS, 1, False))):
        conn = Conn(cap, Ethernet(), (CLIENT4, cport), (SERVER4, sport),
                    rtt={"s": rs, "c": (41 + i) * US}, sack=True)
        if opened:
            t = simple_flow(conn, t, exchanges=((211, 1771),) * exchanges)
        else:
            t = exchange(conn, t, 211, 1771, think=1_013 * US)
            t = close(conn, t + 250_007 * US)
        t += 1_000_003 * US
    cap.by_port = True
    return cap


def tunnel_capture(name, description, links):
    """One request/response flow per link in `links` ([(Tunnel, inner IPv6?)]), one after the
    other, each with its own ports and RTTs: 8 samples each. Every frame is encapsulated."""
    cap = eth_capture(name, description)
    t = T0
    for i, (link, v6) in enumerate(links):
        cli, srv = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
        conn = Conn(cap, link, (cli, 60000 + i), (srv, 443),
                    rtt={"s": (4_001 + 1_000 * i) * US, "c": (31 + i) * US}, ts=True, sack=True)
        t = simple_flow(conn, t) + 100_003 * US
    cap.encapsulated = len(cap.frames)
    return cap


def sc_vxlan():
    return tunnel_capture("vxlan", (
        "VXLAN (UDP 4789, VNI 4242, RFC 7348), captured on the underlay between the two "
        "tunnel endpoints, whose UDP source ports differ per direction: an inner IPv4 flow over "
        "an IPv4 underlay, an inner IPv6 flow over an IPv6 underlay. 8 samples each, timed "
        "from the inner segments."), [(Tunnel("vxlan"), False), (Tunnel("vxlan", outer_v6=True),
                                                              True)])


def sc_geneve():
    opt = struct.pack("!HBB", 0x0102, 0x80, 1) + bytes(4)     # one 8-byte option TLV
    return tunnel_capture("geneve", (
        "Geneve (UDP 6081, RFC 8926): an inner Ethernet frame (protocol 0x6558) behind 8 bytes "
        "of options carrying IPv4, and an inner IPv6 packet named by its EtherType, without "
        "options, over an IPv6 underlay. 8 samples each."), [
        (Tunnel("geneve", inner_eth=True, options=opt), False),
        (Tunnel("geneve", outer_v6=True), True)])


def sc_gre():
    return tunnel_capture("gre", (
        "GRE (RFC 2784, RFC 2890) over IPv4: IPv4 without optional fields; with a key; with a "
        "key and sequence numbers; with checksum, key and sequence numbers carrying IPv6; an "
        "Ethernet frame (0x6558, as a gretap device sends); an MPLS label stack of two labels "
        "(RFC 4023); and over an IPv6 underlay. 8 samples each."), [
        (Tunnel("gre"), False),
        (Tunnel("gre", key=77), False),
        (Tunnel("gre", key=77, seq=True), False),
        (Tunnel("gre", key=78, seq=True, csum=True), True),
        (Tunnel("gre", inner_eth=True), False),
        (Tunnel("gre", labels=(1001, 2002)), False),
        (Tunnel("gre", outer_v6=True), True)])


def sc_erspan():
    return tunnel_capture("erspan", (
        "Mirrored traffic in ERSPAN: type I (GRE 0x88be without a sequence number, the frame "
        "right after GRE), type II (GRE 0x88be with a sequence number and the 8-byte ERSPAN "
        "header), type III (GRE 0x22eb, 12-byte header and an 8-byte platform subheader). "
        "8 samples each."), [(Tunnel("erspan1"), False), (Tunnel("erspan2"), False),
                             (Tunnel("erspan3"), True)])


def sc_ip_in_ip():
    return tunnel_capture("ip_in_ip", (
        "IP in IP, all four combinations: IPv4 in IPv4 (protocol 4, RFC 2003), IPv6 in IPv4 "
        "(41, 6in4, RFC 4213), IPv4 in IPv6 (4) and IPv6 in IPv6 (41, RFC 2473). 8 samples "
        "each."), [(Tunnel("ip"), False), (Tunnel("ip"), True),
                   (Tunnel("ip", outer_v6=True), False), (Tunnel("ip", outer_v6=True), True)])


def sc_mpls():
    return tunnel_capture("mpls", (
        "MPLS on Ethernet (0x8847, RFC 3032): IPv4 under two labels, IPv6 under one, IPv4 under "
        "three, and an Ethernet pseudowire (RFC 4448: control word, then the customer's "
        "Ethernet frame) under two. 8 samples each."), [
        (Tunnel("mpls", labels=(16, 17)), False), (Tunnel("mpls", labels=(18,)), True),
        (Tunnel("mpls", labels=(19, 20, 21)), False),
        (Tunnel("mpls", labels=(22, 23), inner_eth=True), False)])


def sc_tunnel_bad():
    cap = eth_capture("tunnel_bad", (
        "A VXLAN flow (6 samples) with bad tunnel frames in between, each carrying what would "
        "be a TCP ACK of the client's outstanding request, which must not be read as one. "
        "Counted as tunnel_bad (7): a VXLAN UDP length larger than the IP packet, one smaller "
        "than the VXLAN header, a VXLAN header without its I flag, GRE with the retired "
        "routing flag, GRE version 1, an MPLS label stack of 17 labels without a bottom, an "
        "inner IPv4 total length 8 bytes more than the tunnel carries. Counted as "
        "tunnel_nested (1): IPv4 in IPv4 inside VXLAN."))
    good = Tunnel("vxlan")
    conn = Conn(cap, good, (CLIENT4, 61000), (SERVER4, 443),
                rtt={"s": 6_007 * US, "c": 43 * US}, ts=True, sack=True)
    t = handshake(conn, T0)
    req = conn.send("c", t + 100_003 * US, 211)
    bad = [Tunnel("vxlan", udp_len_delta=1), Tunnel("vxlan", udp_len_delta=-(8 + 8 + 14 + 52 - 12)),
           Tunnel("vxlan", vxlan_flags=0), Tunnel("gre", gre_flags=0x40),
           Tunnel("gre", gre_version=1), Tunnel("mpls", labels=tuple(range(100, 117))),
           Tunnel("vxlan", inner_len_delta=8), Tunnel("vxlan", nest=True)]
    for k, link in enumerate(bad):
        if link.kind == "mpls":
            # Every entry's bottom-of-stack bit clear.
            link.stack = lambda link=link: b"".join(struct.pack("!I", (x << 12) | 64)
                                                    for x in link.labels)
        srv, cli = conn.sides["s"], conn.sides["c"]
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", conn.tsval_at("s", req.t), 0)
        fake = tcp_header(srv.ipb, cli.ipb, srv.port, cli.port, srv.nxt, cli.nxt, ACK, 509,
                          opts, 0)
        ip = ipv4_header(srv.ipb, cli.ipb, len(fake), 0x4000 + k)
        cap.add(req.t + (100 + k) * US, link.encapsulate("s", False, ip + fake, 0), 0)
    cap.skipped_tunnel_bad = 7
    cap.skipped_tunnel_nested = 1
    r = conn.send("s", req.t + 6_007 * US + 401 * US, 1771, sample=req)
    a = conn.ack("c", r.t + 43 * US, sample=r)
    close(conn, a.t + 250_007 * US)
    cap.encapsulated = len(cap.frames) - 8
    return cap


SCENARIOS = {f.__name__[3:]: f for f in (
    sc_handshake, sc_reqresp_ts, sc_reqresp_nots, sc_bulk_delack, sc_loss_nots, sc_loss_ts,
    sc_sack, sc_reorder, sc_wrap, sc_tso, sc_ipv6_ext, sc_vlan, sc_qinq, sc_sll, sc_sll2,
    sc_ns_pcapng, sc_ns_pcap, sc_snaplen, sc_raw_ipv4, sc_null_loopback, sc_fragments,
    sc_capture_gap, sc_mix_small, sc_vxlan, sc_geneve, sc_gre, sc_erspan, sc_ip_in_ip,
    sc_mpls, sc_tunnel_bad, sc_ports)}


# ---------------------------------------------------------------------------------------------
# Independent re-derivation: decode the written bytes, apply the rules, compare
# ---------------------------------------------------------------------------------------------

class Decoded:
    __slots__ = ("src", "sport", "dst", "dport", "seq", "ack", "flags", "seqlen", "tsval",
                 "tsecr", "encapsulated")


def decode(linktype, data: bytes, wire_len: int):
    """Returns a Decoded, or one of "truncated", "fragment", "other"."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return "truncated"
        off, et = 14, struct.unpack_from("!H", data, 12)[0]
        while et in (TPID_8021Q, TPID_8021AD):
            if n < off + 4:
                return "truncated"
            et = struct.unpack_from("!H", data, off + 2)[0]
            off += 4
        v = {ETH_IPV4: 4, ETH_IPV6: 6}.get(et)
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return "truncated"
        off, v = 16, {ETH_IPV4: 4, ETH_IPV6: 6}.get(struct.unpack_from("!H", data, 14)[0])
    elif linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            return "truncated"
        off, v = 20, {ETH_IPV4: 4, ETH_IPV6: 6}.get(struct.unpack_from("!H", data, 0)[0])
    elif linktype == LINKTYPE_NULL:
        if n < 4:
            return "truncated"
        fam = struct.unpack_from("<I", data, 0)[0]
        off, v = 4, 4 if fam == 2 else 6 if fam in (24, 28, 30) else None
    elif linktype == LINKTYPE_RAW:
        if n < 1:
            return "truncated"
        off, v = 0, data[0] >> 4
    else:
        raise ValueError(linktype)
    if linktype == LINKTYPE_ETHERNET and et == ETH_MPLS:
        d = mpls_decode(data, off, n, 0)
        if isinstance(d, Decoded):
            d.encapsulated = True
        return d
    return decode_ip(data, off, v, n, 0)


def mpls_decode(data, off, n, depth):
    """An MPLS label stack (RFC 3032) and what is under it: IPv4, IPv6 or a control word and
    an Ethernet frame (RFC 4448)."""
    for _ in range(16):
        if n < off + 4:
            return "truncated"
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    else:
        return "tunnel_bad"
    if n < off + 1:
        return "truncated"
    v = data[off] >> 4
    if v == 0:
        off += 4 + 14
        if n < off:
            return "truncated"
        v = {ETH_IPV4: 4, ETH_IPV6: 6}.get(struct.unpack_from("!H", data, off - 2)[0])
    return decode_ip(data, off, v, n, depth)


def tunnel_decode(data, off, proto, end, n):
    """The inner packet of a tunnel whose outer IP payload is data[off:end]: (offset, IP
    version, inner end, is MPLS) or a skip reason."""
    if proto in (4, 41):
        return off, 4 if proto == 4 else 6, end, False
    if proto == 47:
        if n < off + 4:
            return "truncated"
        flags, ver, et = struct.unpack_from("!BBH", data, off)
        if flags & 0x4F or ver:
            return "tunnel_bad"
        off += 4 + 4 * bin(flags & 0xB0).count("1")
        if et == ETH_ERSPAN and flags & 0x10:
            if data[off] >> 4 != 1:
                return "tunnel_bad"
            off, et = off + 8, ETH_TEB
        elif et == ETH_ERSPAN:
            et = ETH_TEB
        elif et == ETH_ERSPAN3:
            off, et = off + 12 + (8 if data[off + 11] & 1 else 0), ETH_TEB
    else:
        if n < off + 8:
            return "truncated"
        dport, ulen = struct.unpack_from("!HH", data, off + 2)
        ulen = ulen or end - off
        if ulen < 8 or off + ulen > end:
            return "tunnel_bad"
        end = off + ulen
        off += 8
        if dport == VXLAN_PORT:
            if not data[off] & 0x08:
                return "tunnel_bad"
            off, et = off + 8, ETH_TEB
        else:
            if data[off] >> 6:
                return "tunnel_bad"
            et = struct.unpack_from("!H", data, off + 2)[0]
            off += 8 + (data[off] & 0x3F) * 4
    if et == ETH_TEB:
        off, et = off + 14, struct.unpack_from("!H", data, off + 12)[0]
    if et == ETH_MPLS:
        return off, None, end, True
    return off, {ETH_IPV4: 4, ETH_IPV6: 6}.get(et), end, False


def decode_ip(data, off, v, n, depth, end=None):
    """An IP packet at `off` (version `v`); at depth 0, the tunnel it carries, if any. `end`
    is where the outer headers say the inner packet must end."""
    if v == 4:
        if n < off + 20:
            return "truncated"
        ihl = (data[off] & 15) * 4
        if n < off + ihl:
            return "truncated"
        total, fl, proto = struct.unpack_from("!H", data, off + 2)[0], \
            struct.unpack_from("!H", data, off + 6)[0], data[off + 9]
        if end is not None and off + total > end:
            return "tunnel_bad"
        if fl & 0x1FFF:
            return "fragment"
        src, dst = str(ipaddress.IPv4Address(data[off + 12:off + 16])), \
            str(ipaddress.IPv4Address(data[off + 16:off + 20]))
        l4, l4len = off + ihl, total - ihl
        pend = off + total
    elif v == 6:
        if n < off + 40:
            return "truncated"
        plen, nh = struct.unpack_from("!HB", data, off + 4)
        if end is not None and off + 40 + plen > end:
            return "tunnel_bad"
        pend = off + 40 + plen
        src, dst = str(ipaddress.IPv6Address(data[off + 8:off + 24])), \
            str(ipaddress.IPv6Address(data[off + 24:off + 40]))
        p, l4len = off + 40, plen
        while nh in (0, 43, 60, 44):
            if n < p + 8:
                return "truncated"
            if nh == 44:
                if struct.unpack_from("!H", data, p + 2)[0] & 0xFFF8:
                    return "fragment"
                hl = 8
            else:
                hl = (data[p + 1] + 1) * 8
            nh = data[p]
            p, l4len = p + hl, l4len - hl
        proto, l4 = nh, p
    else:
        return "other"
    if proto in (4, 41, 47) or proto == 17 and n >= l4 + 4 and \
            struct.unpack_from("!H", data, l4 + 2)[0] in (VXLAN_PORT, GENEVE_PORT):
        if depth:
            return "tunnel_nested"
        t = tunnel_decode(data, l4, proto, pend, n)
        if isinstance(t, str):
            return t
        off, v, end, is_mpls = t
        d = mpls_decode(data, off, n, 1) if is_mpls else decode_ip(data, off, v, n, 1, end)
        if isinstance(d, Decoded):
            d.encapsulated = True
        return d
    if proto != 6:
        return "other"
    if n < l4 + 20:
        return "truncated"
    doff = (data[l4 + 12] >> 4) * 4
    if n < l4 + doff:
        return "truncated"
    d = Decoded()
    d.encapsulated = False
    d.src, d.dst = src, dst
    d.sport, d.dport, d.seq, d.ack = struct.unpack_from("!HHII", data, l4)
    d.flags = data[l4 + 13]
    d.seqlen = l4len - doff + (1 if d.flags & SYN else 0) + (1 if d.flags & FIN else 0)
    d.tsval = d.tsecr = None
    i = l4 + 20
    while i < l4 + doff:
        kind = data[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        ln = data[i + 1]
        if kind == 8 and ln == 10:
            d.tsval, d.tsecr = struct.unpack_from("!II", data, i + 2)
        i += max(ln, 2)
    return d


def s32(x):
    x %= MOD
    return x - MOD if x >= 1 << 31 else x


def derive(cap: Capture, *, holes_block: bool):
    """Applies the rules to the decoded frames. Returns ([(ack_num, data_num, method)], skips).

    Sequence numbers are unwrapped per half around the newest number seen, so comparisons are
    modular. `holes_block` says whether never-seen bytes in a covered range forbid a sample.
    """
    halves = {}   # (src, sport, dst, dport) -> state
    out = []
    skips = {"truncated": 0, "fragment": 0, "other": 0, "tunnel_bad": 0, "tunnel_nested": 0,
             "encapsulated": 0}

    def half(key):
        h = halves.get(key)
        if h is None:
            h = halves[key] = {"ref": None, "sent": [], "snd_max": None, "high": None}
        return h

    def unwrap(h, x):
        if h["ref"] is None:
            h["ref"] = x % MOD
            return x % MOD
        u = h["ref"] + s32(x - h["ref"])
        h["ref"] = max(h["ref"], u)
        return u

    for f in cap.frames:
        d = decode(cap.interfaces[f.iface].linktype, cap.frame_bytes(f), f.wire_len)
        if isinstance(d, str):
            skips[d] += 1
            continue
        skips["encapsulated"] += d.encapsulated
        if d.seqlen > 0:
            h = half((d.src, d.sport, d.dst, d.dport))
            s = unwrap(h, d.seq)
            e = s + d.seqlen
            h["sent"].append((s, e, f.num, d.tsval, bool(d.flags & SYN)))
            h["snd_max"] = e if h["snd_max"] is None else max(h["snd_max"], e)
        if not d.flags & ACK:
            continue
        h = halves.get((d.dst, d.dport, d.src, d.sport))
        if h is None or not h["sent"]:
            continue
        a = unwrap(h, d.ack)
        if h["high"] is not None and a <= h["high"]:
            continue
        if a > h["snd_max"]:
            h["high"] = a
            continue
        lo = h["high"] if h["high"] is not None else -(1 << 62)
        h["high"] = a
        covered = [x for x in h["sent"] if x[0] < a and x[1] > lo]
        if not covered:
            continue
        if holes_block:
            # Any byte of [max(lo, lowest covered), a) not in a seen segment is a hole.
            edge = max(lo, min(x[0] for x in covered))
            for s, e in sorted((x[0], x[1]) for x in covered):
                if s > edge:
                    break
                edge = max(edge, e)
            if edge < a:
                continue
        newest = max(covered, key=lambda x: x[2])
        copies = [x for x in h["sent"] if x[0] < newest[1] and x[1] > newest[0]]
        if len(copies) > 1:
            if d.tsecr is None:
                continue
            match = [x for x in copies if x[3] == d.tsecr]
            if len(match) == 1:
                out.append((f.num, match[0][2], "ts"))
            continue
        out.append((f.num, newest[2], "syn" if newest[4] else "seq"))
    return out, skips


def verify(cap: Capture):
    """Raises if the re-derived samples or skip counts differ from the declared ones."""
    cap.finalize()
    declared = [(a.frame.num, d.frame.num, m) for a, d, m in cap.expected]
    for holes in (False, True):
        got, skips = derive(cap, holes_block=holes)
        if got != declared:
            diff = sorted(set(got) ^ set(declared))
            raise SystemExit(f"{cap.name}: re-derived samples differ (holes_block={holes}); "
                             f"[ack, data, method] only on one side: {diff[:10]}")
        if [skips[k] for k in ("truncated", "fragment", "tunnel_bad", "tunnel_nested",
                               "encapsulated")] != [
                cap.skipped_truncated, cap.skipped_fragment, cap.skipped_tunnel_bad,
                cap.skipped_tunnel_nested, cap.encapsulated]:
            raise SystemExit(f"{cap.name}: skip counts differ: {skips}")



# ---------------------------------------------------------------------------------------------
# Gateway-scale captures (scripts/bench-gateway): millions of frames, written straight to disk
# ---------------------------------------------------------------------------------------------
#
# The scenario builders above keep every frame and every expected sample as Python objects,
# about 20 us a frame; a capture of 6 M frames needs something leaner. These captures are built
# by a small event loop instead: each flow is a sequence of steps (handshake, exchanges, close),
# a heap orders the steps by start time, and each step's frames wait in a second heap until no
# step still to run can start before them. Both heaps stay small: a step spans a few RTTs. Frames
# are packed with one precompiled struct, checksums summed arithmetically (payload bytes are
# zeros and add nothing), and written in large chunks. Only sample counts are kept, not the
# samples: `expected` in the .json beside the capture is what metro must count.

SCALE_VERSION = 1      # bump when the bytes a given set of parameters writes change
SCALE_PRESETS = {
    # Issue 12's gateway: 100k overlapping request/response flows between 20k clients and 5k
    # servers, one flow per (client, server) pair, so ~200k (sender, acknowledger) pairs.
    "gateway": dict(flows=100_000, clients=20_000, servers=5_000, servers_per_client=5,
                    spread_ms=2_000, exchanges=(1, 3), response_segments=(1, 3), close=True,
                    think_ms=(5, 1_500)),
    # 1 M flows open at once (no close, one exchange each) over the same host pairs: the flow
    # table's scale, with the pair count of the gateway capture.
    "flows-1m": dict(flows=1_000_000, clients=20_000, servers=5_000, servers_per_client=5,
                     spread_ms=4_000, exchanges=(1, 1), response_segments=(1, 1), close=False,
                     think_ms=(100, 3_000)),
}
BENCH_DATA = ROOT / "target" / "bench-data"


def scale_capture(path, *, flows, clients, servers, servers_per_client, spread_ms, exchanges,
                  response_segments, close, think_ms, seed, snaplen=96):
    """Writes an Ethernet/IPv4 pcap (us, `snaplen`) of `flows` TCP flows, captured at a gateway
    between `clients` clients (10.1.0.0 + k) and `servers` servers (172.16.0.0 + k). Each client
    talks to `servers_per_client` servers; flow i uses (client, server) pair i mod (clients x
    servers_per_client), so up to that many pairs carry traffic, twice as many (sender,
    acknowledger) pairs. A flow: a handshake (MSS, SACK-permitted and window scale, no
    timestamps) at a uniform random time in the first `spread_ms`, then `exchanges` (a range)
    request/response exchanges, each after a client think time in `think_ms`, with a response
    of `response_segments` full or partial segments, the client acknowledging every second one
    and the last; then, with `close`, FIN, FIN/ACK, ACK. RTTs, from the capture point to a host
    and back: 1-30 ms to each client and 2-60 ms to each server (log-uniform per host), times a
    factor 0.85-1.15 per pair and side, plus 0-8 % jitter per segment; a server answers after
    50-800 us. No loss, no reordering: every first ACK of new bytes is a sample. Returns the
    summary written beside the capture."""
    rng = random.Random(seed)
    if not 1 <= servers_per_client <= servers:
        raise ValueError("servers_per_client must be between 1 and servers")
    npairs = clients * servers_per_client
    cli_ip = [struct.pack("!I", 0x0A010000 + k) for k in range(clients)]
    srv_ip = [struct.pack("!I", 0xAC100000 + k) for k in range(servers)]
    cli_sum = [(0x0A01 + (k >> 16)) + (k & 0xFFFF) for k in range(clients)]
    srv_sum = [(0xAC10 + (k >> 16)) + (k & 0xFFFF) for k in range(servers)]
    cli_rtt = [int(1_000 * 30 ** rng.random()) for _ in range(clients)]
    srv_rtt = [int(2_000 * 30 ** rng.random()) for _ in range(servers)]
    srv_of = [rng.sample(range(servers), servers_per_client) for _ in range(clients)]
    pair_fc = [rng.uniform(0.85, 1.15) for _ in range(npairs)]
    pair_fs = [rng.uniform(0.85, 1.15) for _ in range(npairs)]
    next_port = [0] * clients

    mac_c, mac_s = mac("02:00:5e:50:00:01"), mac("02:00:5e:60:00:02")  # client side, server side
    head = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH").pack
    syn_opts = bytes.fromhex("020405b40101040201030307")   # MSS 1460, NOP NOP SACK-perm, NOP WS 7
    syn_opts_sum = sum(struct.unpack("!6H", syn_opts))
    zeros = bytes(snaplen)
    mss = 1460
    fheap, serial = [], 0
    rnd = rng.random

    def frame(t, src, dst, ssum, dsum, sport, dport, seq, ack, flags, n, ipid, ttl, win, dmac,
              smac, syn=False):
        """Queues one frame; `ssum`/`dsum` are the addresses' 16-bit word sums."""
        nonlocal serial
        thl = 32 if syn else 20
        tot = 20 + thl + n
        s = 0x4500 + tot + ipid + 0x4000 + (ttl << 8 | 6) + ssum + dsum
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        ipc = ~s & 0xFFFF
        s = (ssum + dsum + 6 + thl + n + sport + dport + (seq >> 16) + (seq & 0xFFFF)
             + (ack >> 16) + (ack & 0xFFFF) + ((thl << 10) | flags) + win
             + (syn_opts_sum if syn else 0))
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        h = head(dmac, smac, 0x0800, 0x45, 0, tot, ipid, 0x4000, ttl, 6, ipc, src, dst,
                 sport, dport, seq, ack, thl << 2, flags, win, ~s & 0xFFFF, 0)
        if syn:
            h += syn_opts
        wire = max(60, 14 + tot)
        cap = min(wire, snaplen)
        if cap > len(h):
            h += zeros[:cap - len(h)]
        serial += 1
        heapq.heappush(fheap, (t, serial, h[:cap], wire))

    # Per open flow: [client, server, pair, cport, sport, c_nxt, s_nxt, c_ipid, s_ipid,
    # exchanges left (None until the handshake)]; None before it opens, False once done.
    state = [None] * flows
    steps = [(rng.randrange(spread_ms * 1_000), i) for i in range(flows)]
    heapq.heapify(steps)
    counts = {"frames": 0, "samples": 0}
    open_now = max_open = 0
    t_last = 0
    base = EPOCH // US

    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        rec = struct.Struct("<IIII").pack
        chunk = []

        def flush(until):
            nonlocal t_last
            pop = heapq.heappop
            while fheap and fheap[0][0] < until:
                t, _, data, wire = pop(fheap)
                sec, usec = divmod(base + t, 1_000_000)
                chunk.append(rec(sec, usec, len(data), wire))
                chunk.append(data)
                t_last = t
                counts["frames"] += 1
            if len(chunk) > 200_000 or until == float("inf"):
                out.write(b"".join(chunk))
                chunk.clear()

        while steps:
            t, i = heapq.heappop(steps)
            flush(t)
            st = state[i]
            if st is None:                       # handshake
                p = i % npairs
                c = p // servers_per_client
                s = srv_of[c][p % servers_per_client]
                cport = 32768 + next_port[c] % 28000
                next_port[c] += 1
                sport = (443, 443, 443, 80, 8080)[rng.randrange(5)]
                st = state[i] = [c, s, p, cport, sport, rng.randrange(MOD), rng.randrange(MOD),
                                 rng.randrange(65536), rng.randrange(65536), None]
                open_now += 1
                max_open = max(max_open, open_now)
            c, s, p, cport, sport, cn, sn, cid, sid, left = st
            rc = int(cli_rtt[c] * pair_fc[p])
            rs = int(srv_rtt[s] * pair_fs[p])
            ci, si, cs, ss = cli_ip[c], srv_ip[s], cli_sum[c], srv_sum[s]

            def to_srv(tt, seq, ack, flags, n=0, syn=False):
                nonlocal cid
                frame(tt, ci, si, cs, ss, cport, sport, seq, ack, flags, n, cid, 64,
                      64240 if syn else 502, mac_s, mac_c, syn)
                cid = (cid + 1) & 0xFFFF

            def to_cli(tt, seq, ack, flags, n=0, syn=False):
                nonlocal sid
                frame(tt, si, ci, ss, cs, sport, cport, seq, ack, flags, n, sid, 56,
                      65160 if syn else 509, mac_c, mac_s, syn)
                sid = (sid + 1) & 0xFFFF

            def late(rtt):
                return rtt + int(rnd() * rtt * 0.08)

            if st[9] is None:                    # handshake, just set up above
                st[9] = rng.randint(*exchanges)
                synack = t + late(rs)
                ack = synack + late(rc)
                to_srv(t, cn, 0, SYN, syn=True)
                to_cli(synack, sn, (cn + 1) % MOD, SYN | ACK, syn=True)
                cn, sn = (cn + 1) % MOD, (sn + 1) % MOD
                to_srv(ack, cn, sn, ACK)
                counts["samples"] += 2
                t_end = ack
            elif st[9] > 0:                      # one exchange
                st[9] -= 1
                req = rng.randrange(60, 1200)
                nseg = rng.randint(*response_segments)
                last = rng.randrange(40, mss + 1)
                to_srv(t, cn, sn, PSH | ACK, req)
                cn = (cn + req) % MOD
                ts = t + late(rs) + 50 + int(rnd() * 750)
                t_ack = ts
                for j in range(nseg):
                    n = mss if j < nseg - 1 else last
                    to_cli(ts, sn, cn, ACK | (PSH if j == nseg - 1 else 0), n)
                    sn = (sn + n) % MOD
                    if j % 2 == 1 or j == nseg - 1:
                        t_ack = max(ts + late(rc), t_ack + 1)
                        to_srv(t_ack, cn, sn, ACK)
                        counts["samples"] += 1
                    ts += 12
                counts["samples"] += 1           # the first response segment acks the request
                t_end = t_ack
            else:                                # close, from the client
                fin_ack = t + late(rs)
                last_ack = fin_ack + late(rc)
                to_srv(t, cn, sn, FIN | ACK)
                cn = (cn + 1) % MOD
                to_cli(fin_ack, sn, cn, FIN | ACK)
                sn = (sn + 1) % MOD
                to_srv(last_ack, cn, sn, ACK)
                counts["samples"] += 2
                open_now -= 1
                state[i] = False
                st = t_end = None
            if st is not None:
                st[5], st[6], st[7], st[8] = cn, sn, cid, sid
                if st[9] > 0 or close:
                    think = int((think_ms[0] + rnd() * (think_ms[1] - think_ms[0])) * 1_000)
                    heapq.heappush(steps, (t_end + think, i))
                else:
                    state[i] = False             # open to the end of the capture
        flush(float("inf"))

    return {
        "version": SCALE_VERSION, "capture": Path(path).name, "frames": counts["frames"],
        "flows": flows, "max_open_flows": max_open,
        "pairs": 2 * min(flows, npairs), "expected_samples": counts["samples"],
        "duration_s": round(t_last / 1e6, 3), "bytes": Path(path).stat().st_size,
    }


def cmd_scale(args):
    """Writes a gateway-scale capture, or reuses the cached one made with the same parameters."""
    params = dict(SCALE_PRESETS[args.cmd])
    for k in ("flows", "clients", "servers", "servers_per_client"):
        if getattr(args, k) is not None:
            params[k] = getattr(args, k)
    params["seed"] = args.seed
    tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(args.out) if args.out else \
        BENCH_DATA / f"{args.cmd}-v{SCALE_VERSION}-{params['flows']}-flows-{tag}.pcap"
    meta = out.with_suffix(".json")
    if args.out or args.force or not (out.exists() and meta.exists()):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")    # a run cut short leaves no cached capture
        t0 = time.monotonic()
        summary = scale_capture(tmp, **params)
        summary.update(capture=out.name, params=params,
                       generated_in_s=round(time.monotonic() - t0, 1))
        tmp.replace(out)
        meta.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"{out}: {summary['frames']} frames, {summary['flows']} flows, {summary['pairs']} "
              f"pairs, {summary['expected_samples']} samples, {summary['bytes']} bytes, "
              f"written in {summary['generated_in_s']} s", file=sys.stderr)
    print(out)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def write_scenarios(outdir: Path, only=None, quiet=False):
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in SCENARIOS.items():
        if only and name not in only:
            continue
        cap = fn()
        verify(cap)
        data = cap.capture_bytes()
        (outdir / cap.filename).write_bytes(data)
        (outdir / f"{name}.expected.json").write_text(cap.expected_json())
        written += [cap.filename, f"{name}.expected.json"]
        if not quiet:
            print(f"{name:15} {len(cap.frames):6} frames {len(cap.expected):5} samples "
                  f"{len(data):8} bytes  {cap.filename}")
    return written


def cmd_testdata(args):
    write_scenarios(Path(args.outdir), set(args.only) if args.only else None)


def cmd_check(args):
    outdir = Path(args.outdir)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_scenarios(Path(tmp), quiet=True)
        bad = []
        for name in files:
            old = outdir / name
            if not old.exists() or old.read_bytes() != (Path(tmp) / name).read_bytes():
                bad.append(name)
    if bad:
        print("differ from a fresh run (run scripts/synth.py to regenerate):", *bad, sep="\n  ")
        sys.exit(1)
    print(f"{len(files)} files match a fresh run")


def cmd_list(args):
    for name, fn in SCENARIOS.items():
        cap = fn()
        print(f"{name:15} {len(cap.expected):5} samples  {cap.description}")


def cmd_bench(args):
    rng = random.Random(args.seed)
    cap = Capture("bench", (
        f"Benchmark capture: {args.flows} concurrent flows, about {args.packets} frames, "
        f"IPv4 over Ethernet, snaplen 96, seed {args.seed}."),
        [Interface(LINKTYPE_ETHERNET, 96, 6)])
    mixed_flows(cap, rng, args.flows, budget=max(12, args.packets // args.flows),
                spread=SEC, v6_share=0.0)
    data = cap.capture_bytes()
    Path(args.out).write_bytes(data)
    print(f"{args.out}: {len(cap.frames)} frames, {len(cap.expected)} samples, "
          f"{len(data)} bytes")
    if args.expected:
        cap.file = Path(args.out).name
        Path(args.expected).write_text(cap.expected_json())


def cmd_peers(args):
    """For each scenario, compare metro's expected samples with tshark's ack_rtt."""
    if not shutil.which("tshark"):
        sys.exit("tshark not found")
    outdir = Path(args.outdir)
    for name in SCENARIOS:
        exp_path = outdir / f"{name}.expected.json"
        if not exp_path.exists():
            continue
        exp = json.loads(exp_path.read_text())
        res = subprocess.run(
            ["tshark", "-r", str(outdir / exp["capture"]), "-Y", "tcp.analysis.ack_rtt",
             "-T", "fields", "-e", "frame.number", "-e", "tcp.analysis.ack_rtt"],
            capture_output=True, text=True, check=True)
        theirs = {}
        for line in res.stdout.split("\n"):
            if line.strip():
                num, rtt = line.split("\t")
                theirs[int(num)] = round(float(rtt) * SEC)
        ours = {a: s["rtt_ns"] for (a, _), s in zip(exp["sample_frames"], exp["samples"])}
        same = sum(1 for k, v in ours.items() if theirs.get(k) == v)
        differ = sorted(k for k in ours if k in theirs and theirs[k] != ours[k])
        only_ours = sorted(k for k in ours if k not in theirs)
        only_theirs = sorted(k for k in theirs if k not in ours)
        print(f"{name:15} metro {len(ours):5}  tshark {len(theirs):5}  same {same:5}  "
              f"differ {differ[:6]}  metro-only {only_ours[:6]}  tshark-only {only_theirs[:6]}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="synth.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("testdata", help="regenerate every scenario (default)")
    t.add_argument("--outdir", default=str(DEFAULT_OUTDIR))
    t.add_argument("--only", nargs="*", help="scenario names")
    c = sub.add_parser("check", help="exit 1 if testdata differs from a fresh run")
    c.add_argument("--outdir", default=str(DEFAULT_OUTDIR))
    b = sub.add_parser("bench", help="write a large benchmark capture")
    b.add_argument("--out", required=True)
    b.add_argument("--packets", type=int, default=1_000_000)
    b.add_argument("--flows", type=int, default=2000)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--expected", help="also write an expected-samples file here")
    for name, what in (("gateway", "100k request/response flows, ~200k host pairs"),
                       ("flows-1m", "1 M concurrent flows over the gateway's host pairs")):
        g = sub.add_parser(name, help=f"a cached gateway-scale capture: {what}")
        g.add_argument("--out", help="write here (always) instead of the cache")
        g.add_argument("--force", action="store_true", help="write the cached capture again")
        for k in ("flows", "clients", "servers", "servers-per-client"):
            g.add_argument(f"--{k}", type=int)
        g.add_argument("--seed", type=int, default=1)
    q = sub.add_parser("peers", help="compare expected samples with tshark's ack_rtt")
    q.add_argument("--outdir", default=str(DEFAULT_OUTDIR))
    sub.add_parser("list", help="name each scenario and its sample count")
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["testdata"] + argv
    args = p.parse_args(argv)
    {"testdata": cmd_testdata, "check": cmd_check, "bench": cmd_bench, "peers": cmd_peers,
     "list": cmd_list, "gateway": cmd_scale, "flows-1m": cmd_scale}[args.cmd](args)


if __name__ == "__main__":
    main()
