//! Test bed for the live tests: network namespaces, the metro process, traffic, a delay line.
//!
//! Everything runs inside namespaces created here with names unique to the run (`mlv` + PID +
//! a counter), and is torn down by guards' `Drop`, also when a test fails. No interface in the
//! root namespace is touched and no address is given outside the namespaces, so no packet can
//! leave the machine.
//!
//! Tests that need root use [`root_or_skip`] and [`mark_ran`] (see `root.rs`).
//!
//! The packet-socket helpers here use `libc` directly; each `unsafe` block says what it relies on.

#![allow(dead_code)]

mod root;
pub mod statsd;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSliceMut, Read};
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;

/// The metro binary under test.
pub const METRO: &str = env!("CARGO_BIN_EXE_metro");

/// Serialises the tests that load the machine, so timings are not disturbed by each other.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

pub use root::{mark_ran, root_or_skip};

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted (after killing what runs in it) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `mlv<PID>-<n><tag>`, with `lo` up.
    pub fn new(tag: &str) -> Netns {
        Netns::with_prefix("mlv", tag)
    }

    /// Creates `<prefix><PID>-<n><tag>`, with `lo` up.
    pub fn with_prefix(prefix: &str, tag: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}{}-{}{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS …`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `ip netns exec NS …`.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, kv: &str) {
        self.exec(&["sysctl", "-qw", kv]);
    }

    /// Runs `f` on a new thread whose network namespace is this one.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let f_ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(f_ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    fn kill_all(&self) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for p in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        thread::sleep(Duration::from_millis(50));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Turns IPv6 off in a namespace, so router solicitations and MLD stay out of captures.
pub fn disable_ipv6(ns: &Netns) {
    ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
    ns.sysctl("net.ipv6.conf.default.disable_ipv6=1");
}

/// Joins two namespaces with a veth pair, `eth0` in both (fixed MACs), with IPv6 off.
pub fn wire_two(a: &Netns, b: &Netns) {
    disable_ipv6(a);
    disable_ipv6(b);
    veth(
        a,
        "eth0",
        "02:00:00:00:03:01",
        b,
        "eth0",
        "02:00:00:00:03:02",
    );
}

/// Wires three namespaces as `cli — mid — srv` for a delay line in `mid`: veths with fixed MACs
/// (`eth0` in `cli` and `srv`, `c0` and `s0` in `mid`), IPv6 off, `cli_ip` and `srv_ip` in one
/// /24 on the two `eth0`s, permanent neighbour entries (without them ARP would cross the delay
/// line too, and the first exchange would pay twice), and no cached TCP metrics (a new connection
/// must not start from the RTT a previous run left behind).
pub fn wire_three(cli: &Netns, mid: &Netns, srv: &Netns, cli_ip: &str, srv_ip: &str) {
    let (cli_mac, srv_mac) = ("02:00:00:00:02:01", "02:00:00:00:02:02");
    veth(cli, "eth0", cli_mac, mid, "c0", "02:00:00:00:02:11");
    veth(mid, "s0", "02:00:00:00:02:12", srv, "eth0", srv_mac);
    for ns in [cli, mid, srv] {
        disable_ipv6(ns);
    }
    for (ns, me, peer, peer_mac) in [
        (cli, cli_ip, srv_ip, srv_mac),
        (srv, srv_ip, cli_ip, cli_mac),
    ] {
        ns.ip(&["addr", "add", &format!("{me}/24"), "dev", "eth0"]);
        ns.ip(&[
            "neigh",
            "replace",
            peer,
            "lladdr",
            peer_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        ns.sysctl("net.ipv4.tcp_no_metrics_save=1");
    }
}

/// Connects `a:ia` and `b:ib` with a veth pair created directly inside the namespaces, sets fixed
/// MACs and brings both ends up.
pub fn veth(a: &Netns, ia: &str, mac_a: &str, b: &Netns, ib: &str, mac_b: &str) {
    sh(&[
        "ip", "link", "add", ia, "netns", &a.name, "address", mac_a, "type", "veth", "peer",
        "name", ib, "netns", &b.name, "address", mac_b,
    ]);
    a.ip(&["link", "set", ia, "up"]);
    b.ip(&["link", "set", ib, "up"]);
}

/// A running metro, inside a namespace.
pub struct Metro {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_done: Option<JoinHandle<()>>,
}

/// What a stopped metro printed.
pub struct MetroOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Metro {
    /// Starts `metro ARGS` in `ns` and waits until it says it is capturing.
    pub fn start(ns: &Netns, args: &[&str]) -> Metro {
        let mut m = Metro::spawn(ns, args);
        m.wait_stderr("capturing on", Duration::from_secs(10));
        m
    }

    /// Starts `metro ARGS` in `ns` without waiting.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Metro {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, METRO])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start metro");
        let mut out = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let stderr_done = thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        Metro {
            child,
            stdout: Some(stdout),
            stderr,
            stderr_done: Some(stderr_done),
        }
    }

    /// Waits until a line of metro's stderr contains `what`; panics on timeout or exit.
    pub fn wait_stderr(&mut self, what: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            if self.stderr.lock().unwrap().iter().any(|l| l.contains(what)) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "metro exited ({st}) before printing {what:?}; stderr:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                t0.elapsed() < timeout,
                "metro did not print {what:?} within {timeout:?}; stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT and collects the output.
    pub fn stop(self) -> MetroOutput {
        self.stop_with(Signal::SIGINT)
    }

    /// Sends `sig` and collects the output. (`ip netns exec` execs metro: the child is metro.)
    pub fn stop_with(mut self, sig: Signal) -> MetroOutput {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
        self.wait(Duration::from_secs(15))
    }

    /// metro's standard error so far.
    pub fn stderr_now(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for metro to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> MetroOutput {
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait for metro") {
                break st;
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "metro did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let _ = self.stderr_done.take().unwrap().join();
        let stderr = self.stderr.lock().unwrap().join("\n");
        assert!(!stderr.contains("panicked"), "metro panicked:\n{stderr}");
        MetroOutput {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Metro {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON lines of metro's output with `"type":"<kind>"`.
pub fn lines_of(out: &str, kind: &str) -> Vec<serde_json::Value> {
    let tag = format!("\"type\":\"{kind}\"");
    out.lines()
        .filter(|l| l.contains(&tag))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect()
}

/// Reads the kernel's view of a TCP connection (`getsockopt(TCP_INFO)`).
pub fn tcp_info(fd: RawFd) -> libc::tcp_info {
    // SAFETY: `tcp_info` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a live `tcp_info` and `len` its size; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: passes a live c_int and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt({level}, {name}): {}",
        std::io::Error::last_os_error()
    );
}

/// A raw AF_PACKET socket bound to `iface` (in the calling thread's namespace). With `rx`, it
/// receives every protocol; otherwise it only sends.
pub fn packet_socket(iface: &str, rx: bool) -> OwnedFd {
    let proto = if rx {
        (libc::ETH_P_ALL as u16).to_be() as libc::c_int
    } else {
        0
    };
    // SAFETY: plain system call with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex(iface).expect("interface index");
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: proto as u16,
        sll_ifindex: index as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: pointer and length describe `sll`, alive for the call; the kernel only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind to {iface}: {}", std::io::Error::last_os_error());
    fd
}

/// Sends one frame on a socket from [`packet_socket`]; false if the kernel had no room.
pub fn send_frame(fd: &OwnedFd, frame: &[u8]) -> bool {
    nix::sys::socket::send(fd.as_raw_fd(), frame, MsgFlags::empty()).is_ok()
}

/// An Ethernet + IPv4 + TCP frame of 60 bytes (ACK flag, no payload).
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x98, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    f.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(60, 0);
    f
}

/// A user-space delay line between two interfaces of the calling namespace: every frame read
/// on one is sent out of the other `delay` after its kernel receive timestamp.
///
/// It follows the test bed's recipe: `PACKET_VNET_HDR` on both sockets (so checksum-offloaded and
/// TSO frames cross intact), no `PACKET_QDISC_BYPASS` (that path drops GSO frames),
/// `PACKET_IGNORE_OUTGOING` on the receive side (not to read its own sends), `SO_TIMESTAMPNS`.
/// Deadlines never go backwards, so frames are never reordered.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Per direction, what the thread measured since the last [`DelayLine::lateness`].
    stats: Vec<Arc<Mutex<LineStats>>>,
}

/// What one direction of a delay line measured.
#[derive(Default)]
struct LineStats {
    /// Send time minus deadline, ns, per frame (0 when on time or early).
    late_ns: Vec<u64>,
    /// The thread's involuntary context switches and page faults (minor + major) so far.
    nivcsw: u64,
    faults: u64,
}

/// How late a delay line sent its frames (send time − deadline), per direction.
pub struct Lateness(Vec<(String, Vec<u64>, u64, u64)>);

impl std::fmt::Display for Lateness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (dir, late, nivcsw, faults)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            let q = |p: f64| -> f64 {
                if late.is_empty() {
                    0.0
                } else {
                    late[((late.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
                }
            };
            let over = |us: u64| late.iter().filter(|&&l| l > us * 1000).count();
            write!(
                f,
                "{dir}: {} frames late by p50 {:.1} µs, p99 {:.1}, p99.9 {:.1}, max {:.1}; \
                 >100 µs {}, >1 ms {}; {nivcsw} preemptions, {faults} page faults",
                late.len(),
                q(0.5),
                q(0.99),
                q(0.999),
                q(1.0),
                over(100),
                over(1000),
            )?;
        }
        Ok(())
    }
}

impl DelayLine {
    /// Starts one thread per direction in `ns`, each delaying by `rtt / 2`.
    pub fn start(ns: &Netns, a: &str, b: &str, rtt: Duration) -> DelayLine {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            let st = Arc::new(Mutex::new(LineStats::default()));
            stats.push(Arc::clone(&st));
            let (from, to, stop) = (from.to_string(), to.to_string(), Arc::clone(&stop));
            let (tx, rx) = std::sync::mpsc::channel();
            threads.push(ns.spawn(move || {
                let rx_fd = packet_socket(&from, true);
                let tx_fd = packet_socket(&to, false);
                for fd in [&rx_fd, &tx_fd] {
                    set_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1);
                }
                set_int(
                    rx_fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_IGNORE_OUTGOING,
                    1,
                );
                setsockopt(&rx_fd, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
                let _ = tx.send(());
                delay_loop(&rx_fd, &tx_fd, rtt / 2, &stop, &st);
            }));
            rx.recv_timeout(Duration::from_secs(5))
                .expect("delay line ready");
        }
        DelayLine {
            stop,
            threads,
            stats,
        }
    }

    /// The lateness of the frames sent since the last call, per direction (`a>b`, then `b>a`),
    /// with each thread's involuntary context switches and page faults over the same time.
    pub fn lateness(&self) -> Lateness {
        Lateness(
            self.stats
                .iter()
                .zip(["a>b", "b>a"])
                .map(|(st, dir)| {
                    let mut st = st.lock().unwrap();
                    let mut late = std::mem::take(&mut st.late_ns);
                    late.sort_unstable();
                    let r = (dir.to_string(), late, st.nivcsw, st.faults);
                    st.nivcsw = 0;
                    st.faults = 0;
                    r
                })
                .collect(),
        )
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The calling thread's involuntary context switches and page faults so far.
fn thread_usage() -> (u64, u64) {
    // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live `rusage` the kernel fills in for the calling thread.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if r != 0 {
        return (0, 0);
    }
    (ru.ru_nivcsw as u64, (ru.ru_minflt + ru.ru_majflt) as u64)
}

fn delay_loop(
    rx: &OwnedFd,
    tx: &OwnedFd,
    delay: Duration,
    stop: &AtomicBool,
    stats: &Mutex<LineStats>,
) {
    let delay = delay.as_nanos() as u64;
    // Frames up to a 64 KB GSO super-frame plus the 10-byte virtio header.
    let mut buf = vec![0u8; 70_000];
    let mut queue: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut last_deadline = 0u64;
    // Sleep in poll until this close to a deadline, then spin: timer slack would make us late.
    const SPIN_NS: u64 = 300_000;
    let mut late = Vec::with_capacity(1024);
    let mut usage = thread_usage();
    while !stop.load(Ordering::Relaxed) {
        let now = now_ns();
        let wait_ns = match queue.front() {
            Some(&(d, _)) => d.saturating_sub(now).saturating_sub(SPIN_NS),
            None => 50_000_000,
        };
        if wait_ns > 0 {
            let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(rx), PollFlags::POLLIN)];
            let ts = TimeSpec::from_duration(Duration::from_nanos(wait_ns));
            let _ = nix::poll::ppoll(&mut fds, Some(ts), None);
        }
        // Read every frame waiting.
        loop {
            let mut cmsg = nix::cmsg_space!(TimeSpec);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<()>(
                rx.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            );
            let Ok(msg) = r else { break };
            let mut ts = now_ns();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmTimestampns(t) = c {
                        ts = t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64;
                    }
                }
            }
            let len = msg.bytes;
            let deadline = (ts + delay).max(last_deadline);
            last_deadline = deadline;
            let mut v = spare.pop().unwrap_or_default();
            v.clear();
            v.extend_from_slice(&buf[..len]);
            queue.push_back((deadline, v));
        }
        // Send what is due, spinning for the last few hundred microseconds.
        while let Some(&(d, _)) = queue.front() {
            let now = now_ns();
            if d > now + SPIN_NS {
                break;
            }
            let mut now = now_ns();
            while now < d {
                std::hint::spin_loop();
                now = now_ns();
            }
            late.push(now - d);
            let (_, frame) = queue.pop_front().unwrap();
            let _ = nix::sys::socket::send(tx.as_raw_fd(), &frame, MsgFlags::empty());
            spare.push(frame);
        }
        if !late.is_empty() {
            let u = thread_usage();
            let mut st = stats.lock().unwrap();
            st.late_ns.append(&mut late);
            st.nivcsw += u.0 - usage.0;
            st.faults += u.1 - usage.1;
            usage = u;
        }
    }
}
