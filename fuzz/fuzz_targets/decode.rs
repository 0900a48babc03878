//! The decoder on any bytes, under every link type: a segment or a counted reason to skip,
//! never a panic; a decoded segment's fields lie within the frame it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metro::capture::LinkType;
use metro::decode::decode;

const LINKS: [u32; 8] = [1, 101, 113, 276, 0, 108, 228, 229];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let Some(link) = LinkType::from_linktype(LINKS[usize::from(pick) % LINKS.len()]) else {
        return;
    };
    // The wire length is at least what was captured; a longer one says the frame was cut.
    let extra = u32::from(pick >> 4) * 100;
    if let Ok(seg) = decode(link, frame, frame.len() as u32 + extra) {
        let _ = (seg.src(), seg.dst(), seg.src_port(), seg.dst_port(), seg.ack());
        let _ = (seg.timestamps(), seg.timestamp_fields());
        assert!(seg.seq_len() >= seg.payload_len());
        assert!(seg.seq_len() - seg.payload_len() <= 2, "SYN and FIN count one each");
    }
});
