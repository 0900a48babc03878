//! Least privilege, seen from outside: a running metro's `/proc/PID/status` (and every thread's)
//! holds CAP_NET_RAW alone live and nothing offline, `NoNewPrivs: 1`, `Seccomp: 2` and, with
//! `--user` or `user:`, that user's ids; in that state live capture works, an interface that is
//! re-created is captured again, the log still rotates, and an offline run as root still reads
//! its file. A call outside the filter kills the process at once (SIGSYS), never hangs.
//!
//! The root tests use network namespaces made here (`mlv<PID>-…`, see `support`); without root
//! they print `SKIPPED (needs root): …` and pass, unless `METRO_REQUIRE_ROOT_TESTS=1`.

mod support;
use support::Scratch;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use support::statsd::Receiver;
use support::*;

/// CAP_NET_RAW's bit in the `Cap*` lines of `/proc/PID/status`.
const NET_RAW: u64 = 1 << 13;
const PORT: u16 = 7113;
const MSG: usize = 64;

/// The `Name:\tvalue` lines of a status file.
fn status_of(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(st: &'a [(String, String)], name: &str) -> &'a str {
    st.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in status"))
}

fn caps(st: &[(String, String)], name: &str) -> u64 {
    u64::from_str_radix(field(st, name), 16).unwrap()
}

/// Every thread's status: the process's own line is its main thread's, and capabilities and
/// filters are per thread.
fn threads_of(pid: u32) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let st = status_of(&t.join("status"));
        out.push((field(&st, "Name").to_string(), st));
    }
    out
}

/// Checks a live metro's every thread: CAP_NET_RAW alone (bounding set too when `bounding`),
/// no inheritable or ambient capability, NO_NEW_PRIVS and the process's two seccomp filters;
/// workers stack a third. Returns the thread names seen.
fn assert_live_confined(pid: u32, bounding: bool) -> Vec<String> {
    // Workers name and then confine themselves once their ring is theirs, just after metro says
    // it captures: ready once every thread but the main one has its name, and every worker its
    // own filter.
    let t0 = Instant::now();
    let threads = loop {
        let threads = threads_of(pid);
        let workers: Vec<_> = threads
            .iter()
            .filter(|(n, _)| n.starts_with("metro-w"))
            .collect();
        let unnamed = threads.iter().filter(|(n, _)| n == "metro").count();
        let ready = !workers.is_empty()
            && unnamed == 1
            && workers
                .iter()
                .all(|(_, st)| field(st, "Seccomp_filters") == "3");
        if ready || t0.elapsed() > Duration::from_secs(5) {
            break threads;
        }
        thread::sleep(Duration::from_millis(20));
    };
    for (name, st) in &threads {
        assert_eq!(caps(st, "CapEff"), NET_RAW, "{name}: CapEff");
        assert_eq!(caps(st, "CapPrm"), NET_RAW, "{name}: CapPrm");
        assert_eq!(caps(st, "CapInh"), 0, "{name}: CapInh");
        assert_eq!(caps(st, "CapAmb"), 0, "{name}: CapAmb");
        if bounding {
            assert_eq!(caps(st, "CapBnd"), NET_RAW, "{name}: CapBnd");
        }
        assert_eq!(field(st, "NoNewPrivs"), "1", "{name}");
        assert_eq!(field(st, "Seccomp"), "2", "{name}");
        let filters: u32 = field(st, "Seccomp_filters").parse().unwrap();
        let want = if name.starts_with("metro-w") { 3 } else { 2 };
        assert_eq!(filters, want, "{name}: Seccomp_filters");
    }
    threads.into_iter().map(|(n, _)| n).collect()
}

/// `n` request/response exchanges from `ns` to `to` on one connection.
fn exchanges(ns: &Netns, to: SocketAddr, n: usize) {
    ns.spawn(move || {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        c.set_nodelay(true).unwrap();
        let mut b = [0u8; MSG];
        for _ in 0..n {
            c.write_all(&b).unwrap();
            c.read_exact(&mut b).unwrap();
        }
    })
    .join()
    .expect("client");
}

/// Ad hoc live capture as root: every thread keeps CAP_NET_RAW alone, bounding set included,
/// under NO_NEW_PRIVS and seccomp (workers with their own second filter); capture in that
/// state times the exchanges towards the server, and SIGINT still ends the run cleanly with
/// its last report, not with SIGSYS.
#[test]
fn live_capture_keeps_only_cap_net_raw_under_seccomp() {
    const NAME: &str = "live_capture_keeps_only_cap_net_raw_under_seccomp";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let (a, b) = wired_pair();
    a.ip(&["addr", "add", "10.87.0.1/24", "dev", "eth0"]);
    b.ip(&["addr", "add", "10.87.0.2/24", "dev", "eth0"]);
    echo_server(&b, vec![SocketAddr::from(([0, 0, 0, 0], PORT))])
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    let metro = Metro::start(
        &a,
        &[
            "--interface",
            "eth0",
            "--workers",
            "2",
            "--interval",
            "1",
            "--format",
            "json",
        ],
    );
    let names = assert_live_confined(metro.pid(), true);
    assert!(
        names.iter().filter(|n| n.starts_with("metro-w")).count() == 2,
        "two workers: {names:?}"
    );
    exchanges(&a, SocketAddr::from(([10, 87, 0, 2], PORT)), 30);
    thread::sleep(Duration::from_millis(300));
    let out = metro.stop();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}: {}",
        out.status,
        out.stderr
    );
    let samples: u64 = lines_of(&out.stdout, "pair")
        .iter()
        .filter(|p| p["dst"] == "10.87.0.2")
        .map(|p| p["samples"].as_u64().unwrap())
        .sum();
    // 30 exchanges, and the handshake's SYN/ACK → ACK half is the client's own.
    assert!(
        samples >= 30,
        "samples towards the server: {samples}\n{}",
        out.stdout
    );
    mark_ran(NAME);
}

/// go-metro mode with `user: nobody`: after setup metro runs as nobody (its uid, gid and
/// groups), keeping CAP_NET_RAW alone, confined; its log, opened before the switch in a
/// directory nobody may write, rotates under the filter; the interface is deleted and
/// re-created, and metro, as nobody, captures the new one: the pair's gauge comes back.
#[test]
fn as_another_user_a_recreated_interface_is_captured_again() {
    const NAME: &str = "as_another_user_a_recreated_interface_is_captured_again";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user called nobody");
    let (a, b) = wired_pair();
    let address = |a: &Netns, b: &Netns| {
        a.ip(&["addr", "add", "10.88.0.1/24", "dev", "eth0"]);
        b.ip(&["addr", "add", "10.88.0.2/24", "dev", "eth0"]);
    };
    address(&a, &b);
    echo_server(&b, vec![SocketAddr::from(([0, 0, 0, 0], PORT))])
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    let rx = Receiver::on(
        a.spawn(|| UdpSocket::bind("127.0.0.1:0").unwrap())
            .join()
            .unwrap(),
    );
    let dir = Scratch::new("user");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
    let log = dir.0.join("metro.log");
    // One line short of go-metro's 100 KB rotation: the first line logged after the switch
    // rotates the file.
    fs::write(&log, vec![b'#'; 99_990]).unwrap();
    let cfg = dir.0.join("go-metro.yaml");
    fs::write(
        &cfg,
        format!(
            "init_config:\n  statsd_ip: 127.0.0.1\n  statsd_port: {}\n  log_level: info\n  log_to_file: true\n  report_interval: 1\n  workers: 1\n  user: nobody\ninstances:\n  - interface: eth0\n    ips: [10.88.0.2]\n",
            rx.port
        ),
    )
    .unwrap();
    let metro = Metro::spawn(
        &a,
        &[
            &format!("-cfg={}", cfg.display()),
            &format!("-log={}", log.display()),
        ],
    );
    let logged = |what: &str, n: usize| {
        let t0 = Instant::now();
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.matches(what).count() >= n {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what:?} not logged {n} times; log:\n{text}\nstderr: {}",
                metro.stderr_now()
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    logged("capturing on eth0", 1);
    assert!(dir.0.join("metro.log.1").exists(), "the log did not rotate");

    let pid = metro.pid();
    let st = status_of(Path::new(&format!("/proc/{pid}/status")));
    let uid = nobody.uid.as_raw().to_string();
    let gid = nobody.gid.as_raw().to_string();
    assert_eq!(field(&st, "Uid"), [uid.as_str(); 4].join("\t"));
    assert_eq!(field(&st, "Gid"), [gid.as_str(); 4].join("\t"));
    let groups: Vec<&str> = field(&st, "Groups").split_whitespace().collect();
    assert!(
        groups.iter().all(|g| *g == gid),
        "supplementary groups of nobody only: {groups:?}"
    );
    assert_live_confined(pid, true);

    let server = SocketAddr::from(([10, 88, 0, 2], PORT));
    let has_rtt = |m: &[support::statsd::Metric]| m.iter().any(|m| m.name == "system.net.tcp.rtt");
    exchanges(&a, server, 20);
    assert!(
        has_rtt(&rx.wait_for(has_rtt, Duration::from_secs(5))),
        "no gauge before the interface went: {}",
        metro.stderr_now()
    );
    a.ip(&["link", "del", "eth0"]);
    logged("disappeared: waiting for it to come back", 1);
    thread::sleep(Duration::from_millis(600));
    wire_eth0(&a, &b);
    address(&a, &b);
    logged("capturing on eth0", 2);
    let before = rx.metrics().len();
    exchanges(&a, server, 20);
    let after = rx.wait_for(
        |m| has_rtt(&m[before.min(m.len())..]),
        Duration::from_secs(5),
    );
    assert!(
        has_rtt(&after[before..]),
        "no gauge after the interface came back: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    // The new workers, as nobody, are confined as the first were.
    assert_live_confined(pid, true);
    let out = metro.stop_with(Signal::SIGTERM);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}: {}",
        out.status,
        out.stderr
    );
    mark_ran(NAME);
}

/// As packages install it: a copy of metro with `cap_net_raw+ep`, run by an ordinary user
/// (nobody). It keeps CAP_NET_RAW alone in its effective and permitted sets, no inheritable or
/// ambient capability (its bounding set it may not change, and NO_NEW_PRIVS makes it moot), is
/// confined, and captures: the exchanges towards the server are timed.
#[test]
fn a_file_capability_binary_run_by_a_user_keeps_cap_net_raw_alone() {
    const NAME: &str = "a_file_capability_binary_run_by_a_user_keeps_cap_net_raw_alone";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let dir = Scratch::new("filecap");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.0.join("metro");
    fs::copy(METRO, &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    sh(&["setcap", "cap_net_raw+ep", bin.to_str().unwrap()]);
    let (a, b) = wired_pair();
    a.ip(&["addr", "add", "10.90.0.1/24", "dev", "eth0"]);
    b.ip(&["addr", "add", "10.90.0.2/24", "dev", "eth0"]);
    echo_server(&b, vec![SocketAddr::from(([0, 0, 0, 0], PORT))])
        .recv_timeout(Duration::from_secs(5))
        .unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.name,
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
        ])
        .args([
            "--clear-groups",
            bin.to_str().unwrap(),
            "--interface",
            "eth0",
        ])
        .args(["--workers", "1", "--duration", "4", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `ip netns exec` and setpriv exec: the child is metro.
    let pid = child.id();
    let t0 = Instant::now();
    loop {
        let st = status_of(Path::new(&format!("/proc/{pid}/status")));
        if field(&st, "Seccomp") == "2" && threads_of(pid).len() >= 3 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never confined");
        thread::sleep(Duration::from_millis(20));
    }
    let st = status_of(Path::new(&format!("/proc/{pid}/status")));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let uid = nobody.uid.as_raw().to_string();
    assert_eq!(field(&st, "Uid"), [uid.as_str(); 4].join("\t"));
    assert_live_confined(pid, false);
    exchanges(&a, SocketAddr::from(([10, 90, 0, 2], PORT)), 30);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: u64 = lines_of(&stdout, "pair")
        .iter()
        .filter(|p| p["dst"] == "10.90.0.2")
        .map(|p| p["samples"].as_u64().unwrap())
        .sum();
    assert!(
        samples >= 30,
        "samples towards the server: {samples}\n{stdout}"
    );
    mark_ran(NAME);
}

/// Offline as root: metro drops every capability and confines itself before it opens its file
/// (seen while it waits to open a FIFO), and then reads it: tshark's three samples of
/// go-metro's `test_tcp.pcap` towards the server (72.322 to 74.599 ms).
#[test]
fn offline_as_root_drops_every_capability_before_opening_its_file() {
    const NAME: &str = "offline_as_root_drops_every_capability_before_opening_its_file";
    if !root_or_skip(NAME) {
        return;
    }
    let dir = Scratch::new("offline");
    let fifo = dir.0.join("capture.pcap");
    sh(&["mkfifo", "-m", "0600", fifo.to_str().unwrap()]);
    let child = Command::new(METRO)
        .args(["--pcap", fifo.to_str().unwrap(), "--format", "json"])
        .args(["--local", "192.168.1.116"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t0 = Instant::now();
    let st = loop {
        let st = status_of(Path::new(&format!("/proc/{pid}/status")));
        if field(&st, "Seccomp") == "2" {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never confined");
        thread::sleep(Duration::from_millis(10));
    };
    for c in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(caps(&st, c), 0, "{c}");
    }
    assert_eq!(field(&st, "NoNewPrivs"), "1");
    assert_eq!(field(&st, "Uid"), "0\t0\t0\t0");
    let bytes = fs::read("testdata/go-metro/test_tcp.pcap").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs = lines_of(&stdout, "pair");
    assert_eq!(pairs.len(), 1, "{stdout}");
    assert_eq!(pairs[0]["dst"], "107.6.106.82");
    assert_eq!(pairs[0]["samples"], 3);
    assert_eq!(pairs[0]["min_ms"], 72.322);
    assert_eq!(pairs[0]["max_ms"], 74.599);
    mark_ran(NAME);
}

/// The filter is enforced, and loudly: a confined process that tries to start a program (a new
/// process, outside every allow-list) is killed with SIGSYS at once. Run in a
/// child copy of this test binary, which confines itself when `METRO_PV_CHILD` is set.
#[test]
fn a_call_outside_the_filter_kills_the_process_with_sigsys() {
    if std::env::var_os("METRO_PV_CHILD").is_some() {
        metro::privilege::confine_process(metro::privilege::Seccomp::Kill).unwrap();
        // A new process (clone without CLONE_THREAD, once clone3 says ENOSYS) kills at once.
        let _ = Command::new("/bin/true").status();
        // Were it allowed, changing user is not.
        let _ = nix::unistd::setuid(nix::unistd::Uid::current());
        // Not reached: the parent sees SIGSYS, not this exit status.
        std::process::exit(42);
    }
    let exe = std::env::current_exe().unwrap();
    let t0 = Instant::now();
    let st = Command::new(exe)
        .args([
            "--exact",
            "a_call_outside_the_filter_kills_the_process_with_sigsys",
            "--nocapture",
        ])
        .env("METRO_PV_CHILD", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.signal(), Some(libc::SIGSYS), "{st:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}
