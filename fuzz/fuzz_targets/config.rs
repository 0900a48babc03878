//! go-metro's YAML configuration on any text: a configuration or an error that names the
//! file, never a panic or a hang (anchors and aliases included).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = metro::config::parse(Path::new("/etc/go-metro.yaml"), text) {
        assert!(e.to_string().contains("go-metro.yaml"), "{e}");
    }
});
