//! The pcap/pcapng reader on any bytes: every frame it hands out lies within the input and
//! within its wire length, and it ends (with or without an error), never panics or loops.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use metro::capture::file::FileSource;
use metro::decode::decode;

fuzz_target!(|data: &[u8]| {
    let Ok(mut src) = FileSource::from_reader(Path::new("fuzz.pcap"), std::io::Cursor::new(data.to_vec()))
    else {
        return;
    };
    let mut frames = 0u64;
    let _ = src.for_each(|link, f| {
        frames += 1;
        assert!(f.data.len() <= data.len());
        assert!(f.data.len() as u64 <= u64::from(f.wire_len));
        let _ = decode(link, f.data, f.wire_len);
    });
    assert!(frames <= src.stats().records);
});
