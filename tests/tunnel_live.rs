//! Live capture of kernel TCP inside a kernel tunnel: VXLAN between two network namespaces,
//! metro capturing the underlay veth, where every frame of the connection is encapsulated.
//! (VXLAN is the tunnel this test bed's kernel builds; the other encapsulations are covered by
//! generated captures and the kernel filter's interpreter tests.)
//!
//! Needs root (namespaces, tunnel devices, CAP_NET_RAW); without it the test prints
//! `SKIPPED (needs root): …` and passes, unless `METRO_REQUIRE_ROOT_TESTS=1` (see `support`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use support::*;

/// Request/response exchanges over one connection to `to`: the handshake's SYN/ACK and each
/// request's ACK give one sample each towards the server.
fn exchanges(ns: &Netns, to: &'static str, n: u8) -> thread::JoinHandle<()> {
    ns.spawn(move || {
        let to: SocketAddr = to.parse().unwrap();
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        c.set_nodelay(true).unwrap();
        for i in 0..n {
            c.write_all(&[i; 300]).unwrap();
            let mut b = [0u8; 300];
            c.read_exact(&mut b).unwrap();
            thread::sleep(Duration::from_millis(10));
        }
    })
}

#[test]
fn tcp_inside_a_kernel_vxlan_tunnel_is_measured_on_the_underlay() {
    const NAME: &str = "tcp_inside_a_kernel_vxlan_tunnel_is_measured_on_the_underlay";
    if !root_or_skip(NAME) {
        return;
    }
    let _g = heavy();
    let a = Netns::with_prefix("tn", "a");
    let b = Netns::with_prefix("tn", "b");
    disable_ipv6(&a);
    disable_ipv6(&b);
    wire_eth0(&a, &b);
    for (ns, me, peer, vx) in [
        (&a, "10.84.0.1", "10.84.0.2", "10.85.0.1/24"),
        (&b, "10.84.0.2", "10.84.0.1", "10.85.0.2/24"),
    ] {
        ns.ip(&["addr", "add", &format!("{me}/24"), "dev", "eth0"]);
        ns.ip(&[
            "link", "add", "vx0", "type", "vxlan", "id", "42", "local", me, "remote", peer,
            "dstport", "4789", "dev", "eth0",
        ]);
        ns.ip(&["addr", "add", vx, "dev", "vx0"]);
        ns.ip(&["link", "set", "vx0", "up"]);
    }
    let server = echo_server(&b, vec!["10.85.0.2:7000".parse().unwrap()]);
    server.recv_timeout(Duration::from_secs(5)).unwrap();
    let metro = Metro::start(
        &a,
        &[
            "--interface",
            "eth0",
            "--workers",
            "1",
            "--format",
            "json",
            "--interval",
            "0.5",
        ],
    );
    exchanges(&a, "10.85.0.2:7000", 30).join().expect("client");
    thread::sleep(Duration::from_millis(300));
    let out = metro.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let towards = |server: &str| -> u64 {
        lines_of(&out.stdout, "pair")
            .iter()
            .filter(|p| p["src"] == server.replace(".2", ".1") && p["dst"] == server)
            .map(|p| p["samples"].as_u64().unwrap())
            .sum()
    };
    // Summed over the interval reports.
    let counters = lines_of(&out.stdout, "counters");
    let encapsulated: u64 = counters
        .iter()
        .map(|c| c["encapsulated"].as_u64().unwrap_or(0))
        .sum();
    let n = towards("10.85.0.2");
    assert!(
        n >= 31,
        "{n} samples towards the server (the SYN/ACK and 30 requests)\n{}\n{}",
        out.stdout,
        out.stderr
    );
    // The connection's frames came through the tunnel: at least a handshake and 30 requests
    // and responses.
    assert!(encapsulated >= 63, "{encapsulated}\n{}", out.stdout);
    assert!(
        !out.stdout.contains("\"tunnel_bad\""),
        "the kernel's tunnels are well-formed: {}",
        out.stdout
    );
    mark_ran(NAME);
}
