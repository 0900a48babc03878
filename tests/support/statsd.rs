//! The tests' DogStatsD: a real UDP socket that keeps every datagram with its arrival time, and a
//! strict parser of DogStatsD's line format.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Collects every datagram sent to `port`.
pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Receiver {
    /// A receiver on 127.0.0.1, in the calling thread's network namespace.
    pub fn start() -> Receiver {
        Receiver::on(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// A receiver reading `s` (which may belong to another network namespace).
    pub fn on(s: UdpSocket) -> Receiver {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let port = s.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.recv(&mut buf) {
                    Ok(n) => g.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8(buf[..n].to_vec()).expect("datagram is UTF-8"),
                    )),
                    Err(_) => {
                        if Arc::strong_count(&g) == 1 {
                            return;
                        }
                    }
                }
            }
        });
        Receiver { port, got }
    }

    /// Every metric line received so far, parsed strictly.
    pub fn metrics(&self) -> Vec<Metric> {
        self.timed().into_iter().map(|(_, m)| m).collect()
    }

    /// Every metric line received so far, with the arrival time of its datagram.
    pub fn timed(&self) -> Vec<(Instant, Metric)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(t, d)| {
                assert!(d.len() <= 1432, "datagram of {} bytes", d.len());
                d.split('\n')
                    .map(|l| (*t, parse_line(l)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The reports received so far: metro sends each interval as a run of metrics that ends
    /// with `metro.statsd.errors`. Each comes with the arrival time of its last datagram.
    pub fn reports(&self) -> Vec<Report> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        for (t, m) in self.timed() {
            let last = m.name == "metro.statsd.errors";
            cur.push(m);
            if last {
                out.push(Report {
                    at: t,
                    metrics: std::mem::take(&mut cur),
                });
            }
        }
        out
    }

    pub fn wait_for(&self, pred: impl Fn(&[Metric]) -> bool, timeout: Duration) -> Vec<Metric> {
        let end = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) || Instant::now() > end {
                return m;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One interval's metrics, as metro sent them.
#[derive(Debug, Clone)]
pub struct Report {
    pub at: Instant,
    pub metrics: Vec<Metric>,
}

impl Report {
    /// The metrics named `name`.
    pub fn all(&self, name: &str) -> Vec<&Metric> {
        self.metrics.iter().filter(|m| m.name == name).collect()
    }

    /// The value of the one metric named `name`; panics unless there is exactly one.
    pub fn one(&self, name: &str) -> f64 {
        let m = self.all(name);
        assert_eq!(m.len(), 1, "{name} in {:#?}", self.metrics);
        m[0].value
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub kind: String,
    pub tags: Vec<String>,
}

/// `name:value|type[|@rate][|#tag,tag…]`, nothing else (DogStatsD's datagram format).
pub fn parse_line(line: &str) -> Metric {
    let bad = |why: &str| -> ! { panic!("not a DogStatsD metric ({why}): {line:?}") };
    let (name, rest) = line.split_once(':').unwrap_or_else(|| bad("no ':'"));
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        bad("metric name");
    }
    let mut fields = rest.split('|');
    let value = fields.next().unwrap_or_else(|| bad("no value"));
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
    {
        bad("value is not a plain decimal");
    }
    let value: f64 = value.parse().unwrap_or_else(|_| bad("value"));
    let kind = fields.next().unwrap_or_else(|| bad("no type")).to_string();
    if !["g", "c", "ms", "h", "s", "d"].contains(&kind.as_str()) {
        bad("type");
    }
    let mut tags = Vec::new();
    for f in fields {
        if let Some(t) = f.strip_prefix('#') {
            tags = t.split(',').map(str::to_string).collect();
            if tags.iter().any(|t| t.is_empty()) {
                bad("empty tag");
            }
        } else if let Some(r) = f.strip_prefix('@') {
            r.parse::<f64>().unwrap_or_else(|_| bad("sample rate"));
        } else {
            bad("unknown field");
        }
    }
    Metric {
        name: name.to_string(),
        value,
        kind,
        tags,
    }
}
