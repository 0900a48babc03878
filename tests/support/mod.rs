//! Test bed for the live tests: network namespaces, the metro process, traffic, a delay line.
//!
//! Everything runs inside namespaces created here with names unique to the run (`mlv` + PID +
//! a counter), and is torn down by guards' `Drop`, also when a test fails. No interface in the
//! root namespace is touched and no address is given outside the namespaces, so no packet can
//! leave the machine.
//!
//! Tests that need root use [`root_or_skip`] and [`mark_ran`] (see `root.rs`).
//!
//! The threads whose timing is part of every RTT measured (the delay line's, the servers') run
//! under `SCHED_FIFO` when the kernel allows it ([`realtime`]); otherwise they say so and go on.
//!
//! The packet-socket helpers here use `libc` directly; each `unsafe` block says what it relies on.

// Each test binary uses a part of the test bed.
#![allow(dead_code, unused_imports)]

pub mod counting_alloc;
pub mod intervals;
pub mod root;
pub mod statsd;
pub mod tcp4;
pub mod traffic;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, IoSliceMut, Read, Write};
use std::mem::size_of;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags};
use nix::sched::CloneFlags;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;

/// The metro binary under test.
pub const METRO: &str = env!("CARGO_BIN_EXE_metro");

/// A path under the repository's `testdata/`.
pub fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// A scratch directory for one test, under the system's temporary directory, removed when
/// dropped (also when the test fails). Its name holds the test binary's PID, so runs never share one.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// An empty directory named after `name`.
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("metro-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    /// Writes `text` to the file `name` in it; returns its path.
    pub fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The path of `name` in it.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

/// The directory itself, so that `dir.join(…)` and `&dir` read as a path.
impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// metro run to its end with `args`: its exit status, standard output and standard error.
pub fn metro(args: &[&str]) -> std::process::Output {
    Command::new(METRO).args(args).output().expect("metro runs")
}

/// One of go-metro's own captures, which the repository carries in `testdata/go-metro/`.
pub fn go_metro_capture(name: &str) -> std::path::PathBuf {
    let p = testdata("go-metro").join(name);
    assert!(
        p.exists(),
        "{} is missing: the repository carries go-metro's captures there",
        p.display()
    );
    p
}

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

/// A server that echoes whatever each connection sends, until the peer closes.
pub fn echo_server(ns: &Netns, addrs: Vec<SocketAddr>) -> mpsc::Receiver<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    for addr in addrs {
        let ready = ready_tx.clone();
        ns.spawn(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            let _ = ready.send(());
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    ready_rx
}

/// Turns IPv6 off in a namespace, so router solicitations and MLD stay out of captures.
pub fn disable_ipv6(ns: &Netns) {
    ns.sysctl("net.ipv6.conf.all.disable_ipv6=1");
    ns.sysctl("net.ipv6.conf.default.disable_ipv6=1");
}

/// Two new namespaces `a` and `b` joined by a veth pair, `eth0` in both (fixed MACs), with IPv6
/// off.
pub fn wired_pair() -> (Netns, Netns) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    disable_ipv6(&a);
    disable_ipv6(&b);
    wire_eth0(&a, &b);
    (a, b)
}

/// [`wired_pair`] with `a` at `10.NET.0.1/24` and `b` at `10.NET.0.2/24`, and an [`echo_server`]
/// ready on each of `ports` of `b`'s address: the bed of most live tests.
pub fn echo_pair(net: u8, ports: &[u16]) -> (Netns, Netns) {
    let (a, b) = wired_pair();
    a.ip(&["addr", "add", &format!("10.{net}.0.1/24"), "dev", "eth0"]);
    b.ip(&["addr", "add", &format!("10.{net}.0.2/24"), "dev", "eth0"]);
    let addrs = ports
        .iter()
        .map(|&p| SocketAddr::from(([10, net, 0, 2], p)))
        .collect();
    let ready = echo_server(&b, addrs);
    for _ in ports {
        ready
            .recv_timeout(Duration::from_secs(5))
            .expect("the echo server listens");
    }
    (a, b)
}

/// (Re)creates the veth pair of [`wired_pair`]: `eth0` in `a` and in `b`, with its fixed MACs.
pub fn wire_eth0(a: &Netns, b: &Netns) {
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

    /// Starts `metro ARGS` in go-metro mode in `ns` and waits until it says it is capturing.
    /// go-metro mode logs to standard output (seelog's console), which is read here as
    /// standard error is read for the other modes.
    pub fn start_daemon(ns: &Netns, args: &[&str]) -> Metro {
        let mut m = Metro::spawn_with(ns, args, true);
        m.wait_stderr("capturing on", Duration::from_secs(10));
        m
    }

    /// Starts `metro ARGS` in `ns` without waiting.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Metro {
        Metro::spawn_with(ns, args, false)
    }

    /// Starts `metro ARGS` in `ns`; with `merged`, its standard output goes where its standard
    /// error goes. (`sh` execs metro, so the child is still metro.)
    fn spawn_with(ns: &Netns, args: &[&str], merged: bool) -> Metro {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]);
        if merged {
            cmd.args(["sh", "-c", "exec \"$0\" \"$@\" 1>&2", METRO]);
        } else {
            cmd.arg(METRO);
        }
        let mut child = cmd
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

    /// metro's process id (`ip netns exec` execs metro: the child is metro).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line of metro's stderr contains `what`; panics on timeout or exit.
    pub fn wait_stderr(&mut self, what: &str, timeout: Duration) {
        self.wait_stderr_times(what, 1, timeout);
    }

    /// Waits until `n` lines of metro's stderr contain `what`; panics on timeout or exit.
    pub fn wait_stderr_times(&mut self, what: &str, n: usize, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let seen = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(what))
                .count();
            if seen >= n {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "metro exited ({st}) before printing {what:?} {n} times; stderr:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                t0.elapsed() < timeout,
                "metro did not print {what:?} {n} times within {timeout:?}; stderr:\n{}",
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

/// Real-time priority (`SCHED_FIFO`) of the delay line's threads: above the servers', so a
/// frame falling due preempts a server's reply.
pub const RT_DELAY_LINE: i32 = 20;
/// Real-time priority of the test servers, whose time to answer is part of every RTT measured.
/// Both are above every normal task: metro, the traffic clients, and whatever else the machine
/// runs (a compiler, on a CI box).
pub const RT_SERVER: i32 = 10;

/// Puts the calling thread under `SCHED_FIFO` at `priority`, with a timer slack of 1 ns.
///
/// On a small machine that is busy, a thread of the normal scheduler that wakes up waits for a
/// time slice, often milliseconds; a real-time thread runs at once (the kernel's real-time
/// throttling still leaves 5 % of each second to the rest). Fails if the kernel refuses: not
/// root, or a control group without a real-time budget.
pub fn realtime(priority: i32) -> Result<(), String> {
    // Real-time threads have no timer slack; this is for the case they stay normal.
    let _ = nix::sys::prctl::set_timerslack(1);
    // chrt (util-linux) sets the policy of one thread by its id, without unsafe code here.
    let tid = nix::unistd::gettid().to_string();
    let out = Command::new("chrt")
        .args(["--fifo", "--pid", &priority.to_string(), &tid])
        .output()
        .map_err(|e| format!("cannot run chrt: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// [`realtime`], or, if the kernel refuses, the normal scheduler and a line on standard error
/// saying so (once per process): the test still runs, its timings are just less tight.
pub fn realtime_or_say(who: &str, priority: i32) -> bool {
    static SAID: AtomicBool = AtomicBool::new(false);
    match realtime(priority) {
        Ok(()) => true,
        Err(e) => {
            if !SAID.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "test bed: SCHED_FIFO refused for the {who} ({e}): it runs under the normal \
                     scheduler, and on a busy machine late wake-ups will widen the RTTs measured"
                );
            }
            false
        }
    }
}

/// A user-space delay line between two interfaces of the calling namespace: every frame read
/// on one is sent out of the other `delay` after its kernel receive timestamp.
///
/// It follows the test bed's recipe: `PACKET_VNET_HDR` on both sockets (so checksum-offloaded and
/// TSO frames cross intact), no `PACKET_QDISC_BYPASS` (that path drops GSO frames),
/// `PACKET_IGNORE_OUTGOING` on the receive side (not to read its own sends), `SO_TIMESTAMPNS`.
/// Deadlines never go backwards, and each direction sends under its lock, so frames are never
/// reordered.
///
/// A frame sent late adds to the RTT of the exchange it belongs to, so the line is built not to
/// be late on a small, busy, virtual machine:
/// - its threads run under `SCHED_FIFO` ([`RT_DELAY_LINE`]) when the kernel allows it, so a
///   compiler running alongside does not delay their wake-ups;
/// - they sleep until [`SPIN_NS`] before a deadline and spin for the rest;
/// - there are two threads, pinned to two CPUs, each the *primary* of one direction (it spins
///   for that direction's deadlines) and the *backup* of the other (it wakes just after that
///   direction's deadlines and sends what its primary has not): a virtual CPU is now and then
///   held by the host for milliseconds, even under `SCHED_FIFO`, but seldom both at once.
///
/// [`DelayLine::lateness`] says how late it was.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    dirs: Arc<[Direction; 2]>,
    workers: Vec<Arc<Mutex<WorkerStats>>>,
}

/// Sleep until this close to a deadline, then spin: on a virtual CPU, a real-time thread wakes
/// ~50 µs late typically, and seldom more than 300 µs late unless the host holds the CPU.
const SPIN_NS: u64 = 300_000;

/// A backup sends a frame only once it is this late: until then, its primary is on it.
const BACKUP_GRACE_NS: u64 = 50_000;

/// Frames up to a 64 KB GSO super-frame plus the 10-byte virtio header.
const FRAME_MAX: usize = 70_000;

/// One direction of the line.
struct Direction {
    name: &'static str,
    rx: OwnedFd,
    tx: OwnedFd,
    delay_ns: u64,
    state: Mutex<DirState>,
}

struct DirState {
    buf: Vec<u8>,
    /// Frames waiting, with their deadlines (ns since the epoch).
    queue: VecDeque<(u64, Vec<u8>)>,
    /// Frame buffers for reuse, allocated at full size, so the line stops allocating once warm.
    spare: Vec<Vec<u8>>,
    last_deadline: u64,
    /// Send time minus deadline, ns, per frame (0 when on time).
    late_ns: Vec<u64>,
}

/// What one thread of the line measured.
#[derive(Default)]
struct WorkerStats {
    cpu: Option<usize>,
    realtime: bool,
    /// How much later than asked the thread woke from its timed sleeps, ns.
    wake_late_ns: Vec<u64>,
    /// Frames it sent as the backup of their direction, its primary having been late.
    rescued: u64,
    /// The thread's involuntary context switches and page faults (minor + major).
    nivcsw: u64,
    faults: u64,
}

impl DelayLine {
    /// Starts the line in `ns`, delaying each direction by `rtt / 2`.
    pub fn start(ns: &Netns, a: &str, b: &str, rtt: Duration) -> DelayLine {
        let (a, b) = (a.to_string(), b.to_string());
        let delay_ns = (rtt / 2).as_nanos() as u64;
        let dirs = ns
            .spawn(move || {
                [
                    Direction::open("a>b", &a, &b, delay_ns),
                    Direction::open("b>a", &b, &a, delay_ns),
                ]
            })
            .join()
            .expect("delay line sockets");
        let dirs = Arc::new(dirs);
        let stop = Arc::new(AtomicBool::new(false));
        // Two CPUs this process may use, one per thread; with one CPU, one thread does it all.
        let cpus: Vec<usize> = nix::sched::sched_getaffinity(Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .take(2)
                    .collect()
            })
            .unwrap_or_default();
        let n = cpus.len().max(1);
        let bells: Arc<Vec<EventFd>> = Arc::new(
            (0..n)
                .map(|_| {
                    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                        .expect("eventfd")
                })
                .collect(),
        );
        let (mut threads, mut workers) = (Vec::new(), Vec::new());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for t in 0..n {
            let (dirs, stop, ready) = (Arc::clone(&dirs), Arc::clone(&stop), ready_tx.clone());
            let bells = Arc::clone(&bells);
            let cpu = cpus.get(t).copied();
            let stats = Arc::new(Mutex::new(WorkerStats::default()));
            workers.push(Arc::clone(&stats));
            // Thread t is the primary of direction t; a lone thread, of both.
            let primary = [t == 0 || n == 1, t == 1 || n == 1];
            threads.push(thread::spawn(move || {
                let mut pinned = None;
                if let Some(c) = cpu {
                    let mut set = nix::sched::CpuSet::new();
                    if set.set(c).is_ok()
                        && nix::sched::sched_setaffinity(Pid::from_raw(0), &set).is_ok()
                    {
                        pinned = Some(c);
                    }
                }
                {
                    let mut st = stats.lock().unwrap();
                    st.cpu = pinned;
                    st.realtime = realtime_or_say("delay line", RT_DELAY_LINE);
                }
                let _ = ready.send(());
                delay_worker(&dirs, primary, &bells, t, &stop, &stats);
            }));
        }
        for _ in 0..n {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("delay line ready");
        }
        DelayLine {
            stop,
            threads,
            dirs,
            workers,
        }
    }

    /// What the line measured since the last call.
    pub fn lateness(&self) -> Lateness {
        let dirs = self
            .dirs
            .iter()
            .map(|d| {
                let mut late = std::mem::take(&mut d.state.lock().unwrap().late_ns);
                late.sort_unstable();
                (d.name, late)
            })
            .collect();
        let workers = self
            .workers
            .iter()
            .map(|w| {
                // Take what was measured; the thread's CPU and policy stay for the next report.
                let mut w = w.lock().unwrap();
                let mut r = std::mem::take(&mut *w);
                (w.cpu, w.realtime) = (r.cpu, r.realtime);
                r.wake_late_ns.sort_unstable();
                r
            })
            .collect();
        Lateness { dirs, workers }
    }
}

impl Direction {
    /// Opens the sockets of one direction, in the calling thread's namespace.
    fn open(name: &'static str, from: &str, to: &str, delay_ns: u64) -> Direction {
        let rx = packet_socket(from, true);
        let tx = packet_socket(to, false);
        for fd in [&rx, &tx] {
            set_int(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1);
        }
        set_int(
            rx.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            1,
        );
        setsockopt(&rx, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
        Direction {
            name,
            rx,
            tx,
            delay_ns,
            state: Mutex::new(DirState {
                buf: vec![0u8; FRAME_MAX],
                queue: VecDeque::with_capacity(4096),
                spare: Vec::new(),
                last_deadline: 0,
                late_ns: Vec::with_capacity(4096),
            }),
        }
    }

    /// Sends every frame due `grace_ns` ago, then reads every frame waiting. Returns the next
    /// deadline, how many frames were sent and whether frames were queued.
    fn service(&self, grace_ns: u64) -> (Option<u64>, u64, bool) {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let mut sent = 0;
        while let Some(&(d, _)) = st.queue.front() {
            let now = now_ns();
            if d + grace_ns > now {
                break;
            }
            st.late_ns.push(now - d);
            let (_, frame) = st.queue.pop_front().unwrap();
            let _ = nix::sys::socket::send(self.tx.as_raw_fd(), &frame, MsgFlags::empty());
            st.spare.push(frame);
            sent += 1;
        }
        let mut queued = false;
        loop {
            let mut cmsg = nix::cmsg_space!(TimeSpec);
            let mut iov = [IoSliceMut::new(&mut st.buf)];
            let r = recvmsg::<()>(
                self.rx.as_raw_fd(),
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
            let deadline = (ts + self.delay_ns).max(st.last_deadline);
            st.last_deadline = deadline;
            let mut v = st
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(FRAME_MAX));
            v.clear();
            v.extend_from_slice(&st.buf[..len]);
            st.queue.push_back((deadline, v));
            queued = true;
        }
        (st.queue.front().map(|&(d, _)| d), sent, queued)
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

/// One thread of the line: services both directions, spinning for the deadlines of those it is
/// the primary of, and waking at the deadlines of the others to send what is still due.
///
/// `bells[me]` wakes this thread; it rings the others' whenever it queues frames, so that every
/// thread knows every deadline even when another one drained the socket it polls.
fn delay_worker(
    dirs: &[Direction; 2],
    primary: [bool; 2],
    bells: &[EventFd],
    me: usize,
    stop: &AtomicBool,
    stats: &Mutex<WorkerStats>,
) {
    let mut usage = thread_usage();
    let (mut wake_late, mut rescued) = (Vec::with_capacity(4096), 0u64);
    while !stop.load(Ordering::Relaxed) {
        // Before looking at the queues: a ring from now on makes the ppoll below return.
        let _ = bells[me].read();
        let mut spin_until = None;
        let mut wake_at = u64::MAX;
        let mut queued = false;
        for (k, d) in dirs.iter().enumerate() {
            let grace = if primary[k] { 0 } else { BACKUP_GRACE_NS };
            let (next, sent, q) = d.service(grace);
            queued |= q;
            if !primary[k] {
                rescued += sent;
            }
            if let Some(next) = next {
                if primary[k] {
                    spin_until = Some(spin_until.map_or(next, |s: u64| s.min(next)));
                    wake_at = wake_at.min(next.saturating_sub(SPIN_NS));
                } else {
                    wake_at = wake_at.min(next + BACKUP_GRACE_NS);
                }
            }
        }
        if queued {
            for (j, bell) in bells.iter().enumerate() {
                if j != me {
                    let _ = bell.write(1);
                }
            }
        }
        let now = now_ns();
        if wake_at <= now {
            // A deadline of ours is less than SPIN_NS away.
            if let Some(s) = spin_until.filter(|&s| s <= now + SPIN_NS) {
                while now_ns() < s {
                    std::hint::spin_loop();
                }
            }
        } else {
            let wait_ns = (wake_at - now).min(50_000_000);
            let mut fds = [
                PollFd::new(dirs[0].rx.as_fd(), PollFlags::POLLIN),
                PollFd::new(dirs[1].rx.as_fd(), PollFlags::POLLIN),
                PollFd::new(bells[me].as_fd(), PollFlags::POLLIN),
            ];
            let ts = TimeSpec::from_duration(Duration::from_nanos(wait_ns));
            let r = nix::poll::ppoll(&mut fds, Some(ts), None);
            if r == Ok(0) && wake_at != u64::MAX {
                wake_late.push(now_ns().saturating_sub(now + wait_ns));
            }
        }
        if !wake_late.is_empty() || rescued > 0 {
            let u = thread_usage();
            let mut st = stats.lock().unwrap();
            st.wake_late_ns.append(&mut wake_late);
            st.rescued += std::mem::take(&mut rescued);
            st.nivcsw += u.0 - usage.0;
            st.faults += u.1 - usage.1;
            usage = u;
        }
    }
}

/// What a delay line measured: how late it sent its frames (send time − deadline), per
/// direction, and per thread how late it woke from its timed sleeps.
pub struct Lateness {
    dirs: Vec<(&'static str, Vec<u64>)>,
    workers: Vec<WorkerStats>,
}

/// The `p` quantile of sorted nanoseconds, in µs.
fn quantile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

impl std::fmt::Display for Lateness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (dir, late) in &self.dirs {
            let over = |us: u64| late.iter().filter(|&&l| l > us * 1000).count();
            write!(
                f,
                "{dir}: {} frames late by p50 {:.1} µs, p99 {:.1}, p99.9 {:.1}, max {:.1}; \
                 >100 µs {}, >1 ms {}; ",
                late.len(),
                quantile_us(late, 0.5),
                quantile_us(late, 0.99),
                quantile_us(late, 0.999),
                quantile_us(late, 1.0),
                over(100),
                over(1000),
            )?;
        }
        for (i, w) in self.workers.iter().enumerate() {
            let wake = &w.wake_late_ns;
            write!(
                f,
                "{}thread {i} (cpu {}, {}): {} timed wake-ups late by p50 {:.1} µs, p99 {:.1}, \
                 max {:.1}; {} frames rescued; {} preemptions, {} page faults",
                if i > 0 { "; " } else { "" },
                w.cpu.map_or("any".to_string(), |c| c.to_string()),
                if w.realtime { "SCHED_FIFO" } else { "normal" },
                wake.len(),
                quantile_us(wake, 0.5),
                quantile_us(wake, 0.99),
                quantile_us(wake, 1.0),
                w.rescued,
                w.nivcsw,
                w.faults,
            )?;
        }
        Ok(())
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
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => (
            u.involuntary_context_switches() as u64,
            (u.minor_page_faults() + u.major_page_faults()) as u64,
        ),
        Err(_) => (0, 0),
    }
}
