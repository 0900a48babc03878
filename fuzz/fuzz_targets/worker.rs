//! The whole worker pipeline — decode, flow table (small, so eviction and expiry run), RTT
//! estimator, recorder — on the frames of any capture (the input is read as pcap/pcapng, so
//! seeds from testdata/ mutate into realistic frame sequences). Besides never panicking:
//! every sample's RTT lies within the capture's time span, and the counts add up (every frame
//! is TCP or skipped for one reason; with no local or whitelisted hosts every sample is kept).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use metro::capture::file::FileSource;
use metro::flow::Ttl;
use metro::record::IntervalStats;
use metro::worker::{Worker, WorkerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(mut src) = FileSource::from_reader(Path::new("fuzz.pcap"), std::io::Cursor::new(data.to_vec()))
    else {
        return;
    };
    let cfg = WorkerConfig {
        max_flows: 16,
        max_rings: 4,
        max_pairs: 8,
        ttl: Ttl {
            idle_ns: 2_000_000_000,
            closed_ns: 500_000_000,
        },
        keep_samples: true,
        ..WorkerConfig::default()
    };
    let mut w = Worker::new(0, &cfg);
    let (mut first, mut last, mut frames) = (u64::MAX, 0u64, 0u64);
    let _ = src.for_each(|link, f| {
        first = first.min(f.ts_ns);
        last = last.max(f.ts_ns);
        frames += 1;
        w.handle(link, f);
    });
    let samples: Vec<_> = w.drain_samples().collect();
    let stats = w.take_interval(IntervalStats::default());
    let c = &stats.counters;
    assert_eq!(c.packets, frames);
    assert_eq!(c.tcp + c.skipped.iter().sum::<u64>(), c.packets);
    assert_eq!(c.filtered, 0);
    assert_eq!(samples.len() as u64, c.samples);
    for s in &samples {
        assert!(s.rtt_ns <= last - first, "RTT {} longer than the capture {}", s.rtt_ns, last - first);
        assert!(s.ts_ns >= first && s.ts_ns <= last);
    }
});
