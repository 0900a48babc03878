//! Names for go-metro mode: whitelisted host names to addresses, and whitelisted addresses to
//! the names their `src:`/`dst:` tags carry.
//!
//! Tag values must be the names go-metro sends, or dashboards and monitors lose their series
//! when metro replaces it. go-metro names an address with Go's `net.LookupAddr` and keeps the
//! last name of the list, so [`reverse_name`] does what Go's own resolver does, not what the C
//! library's `getnameinfo` does:
//! - `/etc/hosts` first: every name of every line for the address, in order (so the last alias
//!   of the last line wins), a name with a dot inside and none at its end getting a trailing
//!   dot (Go's `absDomainName`);
//! - otherwise a PTR query to the servers of `/etc/resolv.conf` (its `timeout:` and `attempts:`
//!   options, Go's defaults of 5 s and 2, at most 3 servers, `127.0.0.1` and `::1` when none is
//!   given), each answer as sent, with its trailing dot;
//! - any name that is not a valid domain name makes the whole look-up fail, as Go's
//!   `LookupAddr` then returns an error with the names that were valid, and go-metro keeps none.
//!
//! Host names (`hosts:`, and names in `ips:` that go-metro hands to libpcap) are resolved
//! through the C library (`getaddrinfo`), as libpcap does. [`resolve_whitelist`] turns an
//! instance's `ips` and `hosts` into the ranges its capture keeps, and [`name_addresses`] fills
//! in the names its tags carry; both log what they find in go-metro's words. DogStatsD's
//! address is resolved here too ([`statsd_addr`]).
//!
//! What this module does not do: decide when to look up (that is [`crate::daemon`]); DNS over
//! TCP (an answer too large for UDP is read as far as it came).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use tracing::{debug, error, info, warn};

use crate::capture::filter::Net;
use crate::config::WhitelistEntry;
use crate::report::statsd::Names;

/// Where Go reads static names.
pub const HOSTS_FILE: &str = "/etc/hosts";
/// Where Go reads its name servers and their options.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How long metro waits for the addresses of one host name (`getaddrinfo` has no timeout of
/// its own): go-metro's resolver gives up after 5 s a try.
pub const HOST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no name was found.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// No name exists for the address (NXDOMAIN, or an answer without PTR records).
    #[error("no name found")]
    NotFound,
    /// An answer held a name that is not a domain name; Go rejects the whole answer.
    #[error("the answer holds a name that is not a domain name: {0:?}")]
    Malformed(String),
    /// No server answered.
    #[error("no name server answered ({0})")]
    NoAnswer(String),
}

/// The name go-metro tags `ip` with: the last of Go's `net.LookupAddr` list.
pub fn reverse_name(ip: IpAddr) -> Result<String, DnsError> {
    lookup_addr(ip)?.pop().ok_or(DnsError::NotFound)
}

/// Go's `net.LookupAddr`: the names of `ip` from `/etc/hosts`, or else from DNS.
pub fn lookup_addr(ip: IpAddr) -> Result<Vec<String>, DnsError> {
    let hosts = std::fs::read_to_string(HOSTS_FILE).unwrap_or_default();
    let names = hosts_names(&hosts, ip);
    let names = if names.is_empty() {
        let conf = ResolvConf::parse(&std::fs::read_to_string(RESOLV_CONF).unwrap_or_default());
        query_ptr(&conf, ip)?
    } else {
        names
    };
    match names.iter().find(|n| !is_domain_name(n)) {
        Some(bad) => Err(DnsError::Malformed(bad.clone())),
        None if names.is_empty() => Err(DnsError::NotFound),
        None => Ok(names),
    }
}

/// The names `/etc/hosts` gives `ip`, as Go's `lookupStaticAddr` lists them.
pub fn hosts_names(text: &str, ip: IpAddr) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split([' ', '\t', '\r']).filter(|f| !f.is_empty());
        let Some(addr) = fields.next() else { continue };
        // Go drops an IPv6 zone before comparing.
        let addr = addr.split('%').next().unwrap_or(addr);
        if addr.parse::<IpAddr>().ok() != Some(ip) {
            continue;
        }
        out.extend(fields.map(abs_domain_name));
    }
    out
}

/// Go's `absDomainName`: a name with a dot inside gets a trailing dot; `localhost` and other
/// single labels stay as written.
fn abs_domain_name(name: &str) -> String {
    if name.contains('.') && !name.ends_with('.') {
        format!("{name}.")
    } else {
        name.to_string()
    }
}

/// Go's `isDomainName` (RFC 1035 with RFC 3696's leniency: `_` allowed, labels of letters,
/// digits and inner hyphens, at most 63 bytes each and 254 in all with the final dot).
pub fn is_domain_name(s: &str) -> bool {
    if s == "." {
        return true;
    }
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 254 || (b.len() == 254 && b[253] != b'.') {
        return false;
    }
    let mut last = b'.';
    let mut non_numeric = false;
    let mut part_len = 0;
    for &c in b {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                non_numeric = true;
                part_len += 1;
            }
            b'0'..=b'9' => part_len += 1,
            b'-' => {
                if last == b'.' {
                    return false;
                }
                part_len += 1;
                non_numeric = true;
            }
            b'.' => {
                if last == b'.' || last == b'-' || part_len > 63 || part_len == 0 {
                    return false;
                }
                part_len = 0;
            }
            _ => return false,
        }
        last = c;
    }
    !(last == b'-' || part_len > 63) && non_numeric
}

/// The parts of `/etc/resolv.conf` a PTR query needs, with Go's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// At most 3, as Go (and the C library) use.
    pub servers: Vec<SocketAddr>,
    /// How long one try waits (`options timeout:N`, default 5 s).
    pub timeout: Duration,
    /// How many rounds over the servers (`options attempts:N`, default 2).
    pub attempts: u32,
}

impl ResolvConf {
    /// Reads the text of a `resolv.conf`.
    pub fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for line in text.lines() {
            if line.starts_with(['#', ';']) {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["nameserver", addr, ..] if c.servers.len() < 3 => {
                    if let Ok(ip) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>() {
                        c.servers.push(SocketAddr::new(ip, 53));
                    }
                }
                ["options", opts @ ..] => {
                    for o in opts {
                        if let Some(n) = o.strip_prefix("timeout:").and_then(|n| n.parse().ok()) {
                            c.timeout = Duration::from_secs(u64::max(n, 1));
                        } else if let Some(n) =
                            o.strip_prefix("attempts:").and_then(|n| n.parse().ok())
                        {
                            c.attempts = u32::max(n, 1);
                        }
                    }
                }
                _ => {}
            }
        }
        if c.servers.is_empty() {
            c.servers = vec![
                SocketAddr::from(([127, 0, 0, 1], 53)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 53)),
            ];
        }
        c
    }
}

/// `4.3.2.1.in-addr.arpa.` or the nibbles of an IPv6 address under `ip6.arpa.`.
pub fn reverse_zone(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(73);
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

const TYPE_PTR: u16 = 12;
const CLASS_IN: u16 = 1;

/// A PTR query for `name` with message id `id`, recursion desired.
fn ptr_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_PTR.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// What one server said.
enum Reply {
    /// PTR names, in the order of the answer section.
    Names(Vec<String>),
    /// The name does not exist, or has no PTR record: asking another server will not help.
    NotFound,
    /// SERVFAIL, REFUSED, a broken or mismatched message: try the next server.
    Failed(String),
}

/// Reads a name at `at`, following compression pointers; returns it with its trailing dot and
/// the offset after it in the message (after the first pointer, if any).
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    // Each pointer must go backwards, so a loop cannot last.
    let mut limit = at;
    loop {
        let len = *msg.get(at)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                if name.is_empty() {
                    name.push('.');
                }
                return Some((name, end.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = msg.get(at + 1..at + 1 + len)?;
                name.push_str(&String::from_utf8_lossy(label));
                name.push('.');
                if name.len() > 255 {
                    return None;
                }
                at += 1 + len;
            }
            0xc0 => {
                let ptr = (len & 0x3f) << 8 | *msg.get(at + 1)? as usize;
                if ptr >= limit {
                    return None;
                }
                end.get_or_insert(at + 2);
                limit = ptr;
                at = ptr;
            }
            _ => return None,
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// Parses the answer to [`ptr_query`] `id` for `qname`.
fn parse_reply(msg: &[u8], id: u16, qname: &str) -> Option<Reply> {
    let flags = u16_at(msg, 2)?;
    if u16_at(msg, 0)? != id || flags & 0x8000 == 0 {
        return None;
    }
    let rcode = flags & 0x0f;
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        let (name, next) = read_name(msg, at)?;
        if !name.eq_ignore_ascii_case(qname) {
            return None;
        }
        at = next + 4;
    }
    match rcode {
        0 => {}
        3 => return Some(Reply::NotFound),
        r => return Some(Reply::Failed(format!("response code {r}"))),
    }
    let mut names = Vec::new();
    for _ in 0..an {
        let (_, next) = read_name(msg, at)?;
        let (rtype, rclass, rdlen) = (
            u16_at(msg, next)?,
            u16_at(msg, next + 2)?,
            u16_at(msg, next + 8)? as usize,
        );
        let data = next + 10;
        if msg.len() < data + rdlen {
            break;
        }
        if rtype == TYPE_PTR && rclass == CLASS_IN {
            names.push(read_name(msg, data)?.0);
        }
        at = data + rdlen;
    }
    Some(if names.is_empty() {
        Reply::NotFound
    } else {
        Reply::Names(names)
    })
}

/// Asks `server` once, waiting at most `timeout`.
fn ask(server: SocketAddr, qname: &str, timeout: Duration) -> io::Result<Reply> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)?;
    let id = message_id();
    sock.send(&ptr_query(id, qname))?;
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf)?;
        // A reply to another query, or garbage: keep waiting for ours, as Go does.
        if let Some(r) = parse_reply(&buf[..n], id, qname) {
            return Ok(r);
        }
    }
}

/// A message id that differs between queries, so that a late answer to one is not read as the
/// answer to the next.
fn message_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u16
}

/// The PTR names of `ip` from the servers of `conf`, trying each server `attempts` times.
fn query_ptr(conf: &ResolvConf, ip: IpAddr) -> Result<Vec<String>, DnsError> {
    let qname = reverse_zone(ip);
    let mut last = String::from("no server");
    for _ in 0..conf.attempts {
        for &server in &conf.servers {
            match ask(server, &qname, conf.timeout) {
                Ok(Reply::Names(n)) => return Ok(n),
                Ok(Reply::NotFound) => return Err(DnsError::NotFound),
                Ok(Reply::Failed(why)) => last = format!("{server}: {why}"),
                Err(e) => last = format!("{server}: {e}"),
            }
        }
    }
    Err(DnsError::NoAnswer(last))
}

/// The addresses of `host` from the C library (files, then DNS, as `nsswitch.conf` says), in
/// its order without repeats, waiting at most [`HOST_TIMEOUT`].
pub fn lookup_host(host: &str) -> io::Result<Vec<IpAddr>> {
    let pending = lookup_host_async(host);
    wait_host(&pending, Instant::now() + HOST_TIMEOUT)
}

/// Starts looking up `host` on a thread of its own.
fn lookup_host_async(host: &str) -> Receiver<io::Result<Vec<IpAddr>>> {
    let (tx, rx) = bounded(1);
    let host = host.to_string();
    let spawned = thread::Builder::new()
        .name("metro-dns".into())
        .spawn(move || {
            let _ = tx.send(dns_lookup::lookup_host(&host));
        });
    if let Err(e) = spawned {
        let (tx, rx2) = bounded(1);
        let _ = tx.send(Err(e));
        return rx2;
    }
    rx
}

fn wait_host(rx: &Receiver<io::Result<Vec<IpAddr>>>, deadline: Instant) -> io::Result<Vec<IpAddr>> {
    match rx.recv_deadline(deadline) {
        Ok(Ok(mut ips)) => {
            let mut seen = Vec::with_capacity(ips.len());
            ips.retain(|ip| {
                let new = !seen.contains(ip);
                seen.push(*ip);
                new
            });
            Ok(ips)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", HOST_TIMEOUT.as_secs()),
        )),
    }
}

/// Looks up every host of `hosts` at once, each within [`HOST_TIMEOUT`]; each with its result.
pub fn lookup_hosts(hosts: &[String]) -> Vec<(String, io::Result<Vec<IpAddr>>)> {
    let pending: Vec<_> = hosts.iter().map(|h| (h, lookup_host_async(h))).collect();
    let deadline = Instant::now() + HOST_TIMEOUT;
    pending
        .into_iter()
        .map(|(h, rx)| (h.clone(), wait_host(&rx, deadline)))
        .collect()
}

/// An instance's whitelist, resolved.
#[derive(Debug, Default)]
pub struct Whitelist {
    /// The ranges and addresses whose halves are reported.
    pub nets: Vec<Net>,
    /// go-metro's filter terms for them (`host 10.0.0.1`, `net 10.0.0.0/8`, `host NAME`), for
    /// the log line and the messages.
    pub terms: Vec<String>,
    /// The single addresses among them, from `ips` and from `hosts`: when all are this host's
    /// own, the whitelist covers no other host.
    pub singles: Vec<IpAddr>,
}

/// A name in `ips` without an address: go-metro's libpcap cannot compile `host NAME` either.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {name:?} in `ips` ({why})")]
pub struct UnresolvedName {
    /// The name, as written.
    pub name: String,
    /// What the resolver said.
    pub why: String,
}

/// Resolves an instance's `ips` and `hosts` as go-metro does: an address or a range is kept as
/// written; a name in `ips` is resolved (go-metro's libpcap resolves `host NAME`), and one
/// without an address stops the instance; a host of `hosts` that does not resolve is logged and
/// left out. The addresses of `hosts` are named after their host in `names`.
pub fn resolve_whitelist(
    ips: &[WhitelistEntry],
    hosts: &[String],
    names: &Names,
) -> Result<Whitelist, UnresolvedName> {
    let mut w = Whitelist::default();
    let ips_names: Vec<String> = ips
        .iter()
        .filter(|e| e.net.is_none())
        .map(|e| e.text.clone())
        .collect();
    let mut resolved = lookup_hosts(&ips_names).into_iter();
    for e in ips {
        match (e.net, e.single) {
            (Some(net), Some(ip)) => {
                w.nets.push(net);
                w.singles.push(ip);
                w.terms.push(format!("host {ip}"));
            }
            (Some(net), None) => {
                w.nets.push(net);
                w.terms.push(format!("net {}", e.text));
            }
            // The tags carry the addresses: go-metro finds no name for a name.
            (None, _) => match resolved.next() {
                Some((name, Ok(addrs))) if !addrs.is_empty() => {
                    for ip in addrs {
                        info!("{name} resolving to: {ip}");
                        w.nets.push(Net::host(ip));
                    }
                    w.terms.push(format!("host {name}"));
                }
                Some((name, r)) => {
                    let why = r.err().map_or("no address".to_string(), |e| e.to_string());
                    return Err(UnresolvedName { name, why });
                }
                None => {}
            },
        }
    }
    for (host, r) in lookup_hosts(hosts) {
        let addrs = match r {
            Ok(addrs) => addrs,
            Err(e) => {
                error!("Error resolving name for: {host} ({e})");
                continue;
            }
        };
        for ip in addrs {
            info!("{host} resolving to: {ip}");
            w.nets.push(Net::host(ip));
            w.singles.push(ip);
            w.terms.push(format!("host {ip}"));
            names
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ip, host.clone());
        }
    }
    Ok(w)
}

/// Names whitelisted addresses as go-metro does, in order: each name of Go's `LookupAddr` list
/// is logged, and the last one is kept for the tags; a failure is logged and the tag carries
/// the address.
pub fn name_addresses(ips: &[IpAddr], names: &Names) {
    for &ip in ips {
        if names.read().map(|n| n.contains_key(&ip)).unwrap_or(false) {
            continue;
        }
        match lookup_addr(ip) {
            Ok(list) => {
                for name in &list {
                    info!("{name} resolving to: {ip}");
                }
                if let Some(last) = list.last() {
                    names
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ip, last.clone());
                }
            }
            Err(e) => {
                error!("Problem looking up hostnames for: {ip}");
                debug!("{ip}: {e}");
            }
        }
    }
}

/// [`name_addresses`] on a thread of its own, so that capture does not wait for DNS; until a
/// name is found, tags carry the address.
pub fn name_addresses_in_background(ips: Vec<IpAddr>, names: Names) {
    if ips.is_empty() {
        return;
    }
    let spawned = thread::Builder::new()
        .name("metro-rdns".into())
        .spawn(move || name_addresses(&ips, &names));
    if let Err(e) = spawned {
        warn!("cannot start the name look-up thread: {e}; tags carry addresses");
    }
}

/// `statsd_ip` names no host metro can find.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {0:?}; give DogStatsD's IP address")]
pub struct StatsdAddrError(String);

/// DogStatsD's address: an IP (as go-metro requires) or, from metro, a host name.
pub fn statsd_addr(host: &str, port: u16) -> Result<SocketAddr, StatsdAddrError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| StatsdAddrError(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_of_addresses_fill_in_and_failures_leave_the_address() {
        let names = Names::default();
        // 127.0.0.1 is named in every /etc/hosts: the last name of its lines is kept.
        let lo = ip("127.0.0.1");
        let hosts = std::fs::read_to_string(HOSTS_FILE).unwrap();
        let want = hosts_names(&hosts, lo).pop();
        assert!(want.is_some(), "{hosts}");
        name_addresses(&[lo], &names);
        assert_eq!(names.read().unwrap().get(&lo).cloned(), want);
    }

    #[test]
    fn statsd_address_takes_an_ip_or_a_name() {
        assert_eq!(
            statsd_addr("127.0.0.1", 8125).unwrap(),
            "127.0.0.1:8125".parse().unwrap()
        );
        assert_eq!(statsd_addr("::1", 9).unwrap(), "[::1]:9".parse().unwrap());
        assert!(statsd_addr("metro-no-such-host.invalid", 8125).is_err());
    }

    #[test]
    fn hosts_lines_give_every_name_in_order_with_gos_trailing_dots() {
        let text = "127.0.0.1 localhost\n# 10.199.0.2 commented\n10.199.0.2\tca-srv ca-srv-alias # tail\n\
                    10.199.0.3 srv.example.test srv\n10.199.0.2 late.example.\nbad line\n::1 localhost ip6-loopback\n";
        assert_eq!(
            hosts_names(text, ip("10.199.0.2")),
            vec!["ca-srv", "ca-srv-alias", "late.example."]
        );
        assert_eq!(
            hosts_names(text, ip("10.199.0.3")),
            vec!["srv.example.test.", "srv"]
        );
        assert_eq!(
            hosts_names(text, ip("::1")),
            vec!["localhost", "ip6-loopback"]
        );
        assert!(hosts_names(text, ip("10.199.0.9")).is_empty());
    }

    #[test]
    fn domain_names_are_checked_as_go_checks_them() {
        for ok in ["a", "srv.example.test.", "ca_srv-alias", "x1.y2", "."] {
            assert!(is_domain_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a",
            "a-",
            "a b",
            "1.2.3",
            "é.example",
            &"a".repeat(64),
        ] {
            assert!(!is_domain_name(bad), "{bad}");
        }
    }

    #[test]
    fn resolv_conf_takes_three_servers_and_gos_options() {
        let c = ResolvConf::parse(
            "# c\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver 10.0.0.3\nnameserver 10.0.0.4\noptions rotate timeout:1 attempts:3\n",
        );
        assert_eq!(
            c.servers,
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "10.0.0.3:53".parse().unwrap()
            ]
        );
        assert_eq!((c.timeout, c.attempts), (Duration::from_secs(1), 3));
        let d = ResolvConf::parse("");
        assert_eq!(d.servers.len(), 2);
        assert_eq!((d.timeout, d.attempts), (Duration::from_secs(5), 2));
    }

    #[test]
    fn reverse_zones_are_the_arpa_names() {
        assert_eq!(reverse_zone(ip("10.199.0.2")), "2.0.199.10.in-addr.arpa.");
        assert_eq!(
            reverse_zone(ip("2001:db8::1")),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }

    /// An answer as a server writes it: the question, then PTR records whose names point back
    /// into the question (compression).
    fn answer(id: u16, qname: &str, rcode: u8, names: &[&str]) -> Vec<u8> {
        let mut m = ptr_query(id, qname);
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = names.len() as u8;
        for n in names {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&[0, 12, 0, 1, 0, 0, 0, 60]);
            let mut rd = Vec::new();
            for l in n.split('.').filter(|l| !l.is_empty()) {
                rd.push(l.len() as u8);
                rd.extend_from_slice(l.as_bytes());
            }
            rd.push(0);
            m.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            m.extend_from_slice(&rd);
        }
        m
    }

    #[test]
    fn replies_parse_with_compression_and_keep_their_order() {
        let q = "2.0.199.10.in-addr.arpa.";
        let m = answer(7, q, 0, &["a.example.test", "b.example.test"]);
        match parse_reply(&m, 7, q) {
            Some(Reply::Names(n)) => assert_eq!(n, vec!["a.example.test.", "b.example.test."]),
            _ => panic!("names expected"),
        }
        assert!(parse_reply(&m, 8, q).is_none(), "another query's id");
        assert!(parse_reply(&m, 7, "3.0.199.10.in-addr.arpa.").is_none());
        assert!(matches!(
            parse_reply(&answer(7, q, 3, &[]), 7, q),
            Some(Reply::NotFound)
        ));
        assert!(matches!(
            parse_reply(&answer(7, q, 2, &[]), 7, q),
            Some(Reply::Failed(_))
        ));
        for cut in 0..m.len() {
            // A message cut anywhere never panics.
            let _ = parse_reply(&m[..cut], 7, q);
        }
        let mut looped = m.clone();
        let at = looped.len() - 2;
        looped[at - 1] = 0xc0;
        looped[at] = 12;
        let _ = parse_reply(&looped, 7, q);
    }

    #[test]
    fn a_local_server_answers_a_query() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let h = thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let q = read_name(&buf[..n], 12).unwrap().0;
            server
                .send_to(&answer(id, &q, 0, &["one.example", "two.example"]), from)
                .unwrap();
        });
        let conf = ResolvConf {
            servers: vec![addr],
            timeout: Duration::from_secs(2),
            attempts: 1,
        };
        assert_eq!(
            query_ptr(&conf, ip("192.0.2.1")).unwrap(),
            vec!["one.example.", "two.example."]
        );
        h.join().unwrap();
    }
}
