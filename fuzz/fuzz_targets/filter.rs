//! The kernel filter metro writes, run in the project's classic BPF interpreter, against the
//! decoder: every frame the decoder turns into a TCP segment that metro would measure (not
//! loopback, at most one VLAN tag, which is what the filter reads) is kept by the filter, whole
//! or cut to the snap length; with a whitelist taken from the input, when one of its ends is
//! whitelisted.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use metro::capture::filter::{compile, interpret, Framing};
use metro::capture::LinkType;
use metro::decode::decode;

const SNAPLEN: u32 = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (link, framing) = if pick & 1 == 0 {
        (LinkType::Ethernet, Framing::Ethernet)
    } else {
        (LinkType::Raw, Framing::RawIp)
    };
    // With bit 1 set, the next 5 bytes are a whitelisted IPv4 range (address, prefix).
    let (white, frame) = if pick & 2 != 0 && rest.len() >= 5 {
        let ip = IpAddr::from([rest[0], rest[1], rest[2], rest[3]]);
        (Some(vec![(ip, rest[4] % 33)]), &rest[5..])
    } else {
        (None, rest)
    };
    let prog = compile(framing, white.as_deref(), SNAPLEN).expect("metro's filter compiles");
    let verdict = interpret(&prog, frame);
    assert!(verdict == 0 || verdict == SNAPLEN);
    let Ok(seg) = decode(link, frame, frame.len() as u32) else {
        return;
    };
    let (src, dst) = (seg.src().ip(), seg.dst().ip());
    if src.is_loopback() || dst.is_loopback() {
        return;
    }
    if framing == Framing::Ethernet && frame.len() >= 18 {
        let outer = u16::from_be_bytes([frame[12], frame[13]]);
        let inner = u16::from_be_bytes([frame[16], frame[17]]);
        let tag = |t: u16| t == 0x8100 || t == 0x88a8 || t == 0x9100;
        if tag(outer) && tag(inner) {
            return;
        }
    }
    if let Some(w) = &white {
        let (IpAddr::V4(net), prefix) = w[0] else {
            return;
        };
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let inside = |ip: IpAddr| match ip {
            IpAddr::V4(a) => u32::from(a) & mask == u32::from(net) & mask,
            // An IPv4 whitelist keeps no IPv6 host.
            IpAddr::V6(_) => false,
        };
        if !inside(src) && !inside(dst) {
            return;
        }
    }
    assert_eq!(verdict, SNAPLEN, "the filter drops a segment the decoder keeps: {src} -> {dst}");
});
