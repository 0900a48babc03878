//! Flow churn against the steady state, at a million flows.
//!
//! Two replays, each through its own worker whose table is bounded at 1,000,000 flows, both timed
//! over `Worker::handle` only (frames are built in batches outside the timed part), in the
//! thread's CPU time:
//! - *steady*: 1,000,000 established request/response flows (created first, untimed), then
//!   exchanges on them in a scattered order: request, response, ACK;
//! - *churn*: 10,000,000 short flows (SYN, SYN/ACK, ACK, request, response, ACK with FIN, FIN/ACK)
//!   through the same bound, so that from the millionth flow on every new flow evicts one.
//!
//! Flows run 4,096 at a time, interleaved packet by packet, with 100 ns between packets. A round
//! runs the two replays in turns of about 24,000,000 packets each (about two seconds), so that a
//! shared machine's load falls on both alike. It prints each round's time per packet of each
//! replay and their ratio churn / steady, then the replays' medians over the rounds, their ratio,
//! and the median of the rounds' ratios.
//! Run: `cargo bench --bench flow_churn` (`FLOW_CHURN_ROUNDS=N`, default 3; `FLOW_CHURN_FLOWS=N`
//! short flows, default 10,000,000; `FLOW_CHURN_CHUNK=N` packets a turn, default 24,000,000;
//! `FLOW_CHURN_ONLY=steady` or `churn` runs that replay alone, for counting one under valgrind;
//! `FLOW_CHURN_ONLY=flood` runs the churn replay with its SYNs only, a SYN flood, whose evictions
//! find no closing flow to take).

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;

use metro::capture::LinkType;
use metro::worker::{Worker, WorkerConfig};

// The test bed is the tests' one module, shared by path: benches cannot name a tests/ module.
#[path = "../tests/support/mod.rs"]
mod support;

use support::tcp4;

use tcp4::{Frames, Seg, ACK, FIN, SYN};

const MAX_FLOWS: u32 = 1_000_000;
/// Flows in progress at once.
const BATCH: u32 = 4_096;
const GAP_NS: u64 = 100;

/// Addresses and ports of flow `i`: 200 client hosts, each with 60,000 ports to each server, so
/// that the flows are many and the host pairs few, as between a gateway's busiest clients and
/// servers (recording at many pairs is the hot-path benchmark's `pairs_100k` mix).
fn ends(i: u32) -> ([u8; 4], u16, [u8; 4], u16) {
    let client = [10, 0, 0, (i % 200) as u8];
    let port = 1_024 + (i / 200 % 60_000) as u16;
    let server = [192, 168, (i / 200 / 60_000) as u8, 10];
    (client, port, server, 443)
}

/// A segment of flow `i`, from the client when `c2s`.
fn seg(i: u32, c2s: bool, seq: u32, ack: u32, flags: u8, payload: u16) -> Seg {
    let (c, cp, s, sp) = ends(i);
    let (src, sport, dst, dport) = if c2s { (c, cp, s, sp) } else { (s, sp, c, cp) };
    Seg {
        src,
        sport,
        dst,
        dport,
        seq,
        ack,
        flags,
        payload,
    }
}

/// The client's and server's initial sequence numbers of flow `i`.
fn isn(i: u32) -> (u32, u32) {
    (i.wrapping_mul(2_654_435_761), i.wrapping_mul(40_503))
}

struct Clock(u64);

impl Clock {
    fn tick(&mut self) -> u64 {
        self.0 += GAP_NS;
        self.0
    }
}

/// CPU time this thread has used: on a shared machine, wall-clock time would count the time
/// other processes had the CPU too.
fn cpu_time() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage(RUSAGE_THREAD)");
    let d = |t: TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1_000);
    d(u.user_time()) + d(u.system_time())
}

/// A worker bounded at `MAX_FLOWS`, and the CPU time and packets of the batches it was timed on.
struct Meter {
    w: Worker,
    spent: Duration,
    packets: u64,
}

impl Meter {
    fn new() -> Meter {
        let w = Worker::new(
            0,
            &WorkerConfig {
                max_flows: MAX_FLOWS as usize,
                ..WorkerConfig::default()
            },
        );
        Meter {
            w,
            spent: Duration::ZERO,
            packets: 0,
        }
    }

    /// Feeds `f` to the worker, untimed.
    fn feed(&mut self, f: &Frames) {
        f.each(|fr| self.w.handle(LinkType::Ethernet, fr));
    }

    /// Feeds `f` to the worker, timing `Worker::handle` alone.
    fn timed(&mut self, f: &Frames) {
        let t = cpu_time();
        self.feed(f);
        self.spent += cpu_time() - t;
        self.packets += f.len() as u64;
    }

    /// ns per timed packet.
    fn ns_per_packet(&self) -> f64 {
        self.spent.as_nanos() as f64 / self.packets as f64
    }

    /// The worker's counters, for the replay's checks.
    fn counters(&mut self) -> metro::record::Counters {
        self.w.take_interval(Default::default()).counters
    }
}

/// One replay, fed batch by batch.
trait Replay {
    /// Builds and feeds the next batch; false once there is none.
    fn step(&mut self) -> bool;
    /// Checks the worker's counters at the end; returns ns per timed packet.
    fn finish(self) -> f64;
}

/// The steady replay: `exchanges` request/response exchanges over `MAX_FLOWS` established flows.
struct Steady {
    m: Meter,
    clock: Clock,
    f: Frames,
    /// Exchanges per flow so far, to continue its sequence numbers.
    done: Vec<u32>,
    n: u32,
    exchanges: u32,
}

impl Steady {
    /// Opens the flows, untimed; each then has sent one byte of SYN each way.
    fn new(exchanges: u32) -> Steady {
        let mut m = Meter::new();
        let mut clock = Clock(1_700_000_000_000_000_000);
        let mut f = Frames::default();
        for start in (0..MAX_FLOWS).step_by(BATCH as usize) {
            f.clear();
            let flows = start..(start + BATCH).min(MAX_FLOWS);
            for i in flows.clone() {
                let (c, _) = isn(i);
                f.add(clock.tick(), &seg(i, true, c, 0, SYN, 0));
            }
            for i in flows.clone() {
                let (c, s) = isn(i);
                f.add(clock.tick(), &seg(i, false, s, c + 1, SYN | ACK, 0));
            }
            for i in flows {
                let (c, s) = isn(i);
                f.add(clock.tick(), &seg(i, true, c + 1, s + 1, ACK, 0));
            }
            m.feed(&f);
        }
        Steady {
            m,
            clock,
            f,
            done: vec![0; MAX_FLOWS as usize],
            n: 0,
            exchanges,
        }
    }
}

impl Replay for Steady {
    fn step(&mut self) -> bool {
        if self.n >= self.exchanges {
            return false;
        }
        let (f, clock, done) = (&mut self.f, &mut self.clock, &mut self.done);
        f.clear();
        // A scattered batch of distinct flows (an odd stride over 2^20 visits each once).
        let batch: Vec<u32> = (self.n..self.n + BATCH)
            .map(|k| k.wrapping_mul(0x9e37_79b1) & 0xf_ffff)
            .filter(|&i| i < MAX_FLOWS)
            .collect();
        for &i in &batch {
            let (c, s) = isn(i);
            let k = done[i as usize];
            f.add(
                clock.tick(),
                &seg(i, true, c + 1 + 100 * k, s + 1 + 200 * k, ACK, 100),
            );
        }
        for &i in &batch {
            let (c, s) = isn(i);
            let k = done[i as usize];
            f.add(
                clock.tick(),
                &seg(i, false, s + 1 + 200 * k, c + 101 + 100 * k, ACK, 200),
            );
        }
        for &i in &batch {
            let (c, s) = isn(i);
            let k = done[i as usize];
            f.add(
                clock.tick(),
                &seg(i, true, c + 101 + 100 * k, s + 201 + 200 * k, ACK, 0),
            );
            done[i as usize] += 1;
        }
        self.m.timed(f);
        self.n += BATCH;
        true
    }

    fn finish(mut self) -> f64 {
        let st = self.m.counters();
        assert_eq!(st.table.evicted, 0);
        assert_eq!(
            st.samples,
            2 * self.m.packets / 3 + 2 * u64::from(MAX_FLOWS),
            "every handshake and every exchange gives two samples"
        );
        self.m.ns_per_packet()
    }
}

/// The churn replay: `flows` short flows (or, with `syn_only`, their SYNs alone).
struct Churn {
    m: Meter,
    clock: Clock,
    f: Frames,
    start: u32,
    flows: u32,
    syn_only: bool,
}

impl Churn {
    fn new(flows: u32, syn_only: bool) -> Churn {
        Churn {
            m: Meter::new(),
            clock: Clock(1_700_000_000_000_000_000),
            f: Frames::default(),
            start: 0,
            flows,
            syn_only,
        }
    }
}

impl Replay for Churn {
    fn step(&mut self) -> bool {
        if self.start >= self.flows {
            return false;
        }
        let (f, clock) = (&mut self.f, &mut self.clock);
        f.clear();
        let batch = self.start..(self.start + BATCH).min(self.flows);
        let steps: [&dyn Fn(u32, u32, u32) -> Seg; 7] = [
            &|i, c, _| seg(i, true, c, 0, SYN, 0),
            &|i, c, s| seg(i, false, s, c + 1, SYN | ACK, 0),
            &|i, c, s| seg(i, true, c + 1, s + 1, ACK, 0),
            &|i, c, s| seg(i, true, c + 1, s + 1, ACK, 100),
            &|i, c, s| seg(i, false, s + 1, c + 101, ACK, 200),
            &|i, c, s| seg(i, true, c + 101, s + 201, ACK | FIN, 0),
            &|i, c, s| seg(i, false, s + 201, c + 102, ACK | FIN, 0),
        ];
        let steps = if self.syn_only {
            &steps[..1]
        } else {
            &steps[..]
        };
        for step in steps {
            for i in batch.clone() {
                let (c, s) = isn(i);
                f.add(clock.tick(), &step(i, c, s));
            }
        }
        self.m.timed(f);
        self.start += BATCH;
        true
    }

    fn finish(mut self) -> f64 {
        let st = self.m.counters();
        assert_eq!(st.table.created, u64::from(self.flows));
        assert_eq!(
            st.table.evicted,
            u64::from(self.flows.saturating_sub(MAX_FLOWS)),
            "{st:?}"
        );
        self.m.ns_per_packet()
    }
}

/// Runs `r` to its end alone; ns per packet.
fn alone(mut r: impl Replay) -> f64 {
    while r.step() {}
    r.finish()
}

/// Packets one replay runs ahead of the other before they swap in [`together`] (unless
/// `FLOW_CHURN_CHUNK` says otherwise): about two seconds, short enough that both replays meet
/// the same load on a shared machine, long enough that each has the caches to itself for most of
/// its turn. Shorter turns favour the churn: the steady replay keeps much of its 16 MB index in
/// the last-level cache, which the churn's turns then take from it.
const CHUNK: u64 = 24_000_000;

/// Runs both replays in turns of about `chunk` packets each; ns per packet of each.
fn together(mut s: Steady, mut c: Churn, chunk: u64) -> (f64, f64) {
    let mut steady_turn = true;
    loop {
        let (sp, cp) = (s.m.packets, c.m.packets);
        if steady_turn && sp >= cp + chunk {
            steady_turn = false;
        } else if !steady_turn && cp >= sp + chunk {
            steady_turn = true;
        }
        let stepped = if steady_turn { s.step() } else { c.step() };
        if !stepped {
            // One is done: the other runs to its end.
            while s.step() || c.step() {}
            break;
        }
    }
    (s.finish(), c.finish())
}

/// The number in environment variable `k`, or `d` when it is unset or not a number.
fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Some(last) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
        core_affinity::set_for_current(last);
    }
    let rounds: u32 = env("FLOW_CHURN_ROUNDS", 3);
    let flows: u32 = env("FLOW_CHURN_FLOWS", 10_000_000);
    // As many packets in the steady replay as in the churn one, about.
    let exchanges = flows / 3 * 7;
    let chunk: u64 = env("FLOW_CHURN_CHUNK", CHUNK);
    let only = std::env::var("FLOW_CHURN_ONLY").unwrap_or_default();
    match only.as_str() {
        "steady" => return println!("steady {:.1} ns/packet", alone(Steady::new(exchanges))),
        "churn" => return println!("churn {:.1} ns/packet", alone(Churn::new(flows, false))),
        "flood" => return println!("flood {:.1} ns/packet", alone(Churn::new(flows, true))),
        "" => {}
        other => panic!("FLOW_CHURN_ONLY={other}: steady, churn or flood"),
    }
    let (mut s, mut c, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (steady, churn) = together(Steady::new(exchanges), Churn::new(flows, false), chunk);
        s.push(steady);
        c.push(churn);
        ratios.push(churn / steady);
        println!(
            "round {}: steady {steady:.1} ns/packet, churn {churn:.1} ns/packet, churn / steady {:.2}",
            r + 1,
            churn / steady
        );
    }
    let (s, c) = (median(s), median(c));
    // A round's two replays run interleaved, so its own ratio is the one a shared machine's load
    // changes least.
    println!(
        "medians: steady {s:.1} ns/packet (1,000,000 flows), churn {c:.1} ns/packet ({flows} short flows through a bound of 1,000,000): churn / steady = {:.2}; median of the rounds' ratios {:.2}",
        c / s,
        median(ratios)
    );
}
