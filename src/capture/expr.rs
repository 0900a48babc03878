//! `-f EXPR`: a libpcap filter expression, compiled into the classic BPF that metro attaches.
//!
//! go-metro hands `-f` to libpcap. metro evaluates its default, `tcp`, without libpcap: its own
//! kernel filter ([`super::filter`]) keeps TCP already. Built with the `libpcap` cargo feature,
//! metro compiles any other expression with libpcap's `pcap_compile`, on a dead handle of the
//! interface's link type (Ethernet, or raw IP), and reads the instructions back. The live capture
//! then attaches metro's own program *and* this one ([`super::filter::and`]): the expression
//! narrows what metro keeps (TCP, not loopback, the whitelisted hosts) and never widens it, as
//! go-metro's filter was the expression *and* the whitelisted hosts. The workers still check the
//! whitelist, whatever the kernel passed.
//!
//! Without the feature, [`compile`] refuses every expression but `tcp`, saying how to get one.
//!
//! What this does not do: filter capture files (file instances are read whole), or use
//! libpcap anywhere else (metro captures through its own rings, without libpcap).

use super::filter::{Framing, Insn};

/// go-metro's default capture filter, the one expression metro needs no libpcap for.
pub const DEFAULT: &str = "tcp";

/// Why an expression gives no program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// This metro has no libpcap to compile the expression with.
    #[error(
        "-f {0:?}: this metro was built without libpcap, so it cannot compile filter expressions other than `tcp`; drop -f (the instances' `ips`/`hosts` whitelist selects hosts), or build metro with `--features libpcap`"
    )]
    NoLibpcap(String),
    /// libpcap refused the expression.
    #[error(
        "-f {expr:?}: libpcap cannot compile this filter expression ({reason}); correct it (the syntax is tcpdump's, see `man 7 pcap-filter`) or drop -f"
    )]
    Invalid {
        /// The expression.
        expr: String,
        /// libpcap's words.
        reason: String,
    },
}

/// True for the expression metro applies without libpcap (`tcp`, go-metro's default).
pub fn is_default(expr: &str) -> bool {
    expr.trim() == DEFAULT
}

/// Refuses an expression metro cannot evaluate, before anything starts: without libpcap, every
/// one but `tcp`; with it, those libpcap cannot compile (checked for Ethernet framing; a raw-IP
/// interface compiles it again for its own).
pub fn check(expr: &str) -> Result<(), ExprError> {
    if is_default(expr) {
        return Ok(());
    }
    compile(expr, Framing::Ethernet).map(|_| ())
}

/// Compiles `expr` for frames that start as `framing` says.
///
/// The program returns libpcap's snap length for a kept frame; [`super::filter::and`] cuts it to
/// metro's.
#[cfg(feature = "libpcap")]
pub fn compile(expr: &str, framing: Framing) -> Result<Vec<Insn>, ExprError> {
    use pcap::{Capture, Linktype};

    let invalid = |reason: String| ExprError::Invalid {
        expr: expr.to_string(),
        reason,
    };
    let linktype = match framing {
        Framing::Ethernet => Linktype::ETHERNET,
        // DLT_RAW as Linux's libpcap numbers it (12); LINKTYPE_RAW (101) is only a file format's.
        Framing::RawIp => Linktype(12),
    };
    let dead = Capture::dead(linktype).map_err(|e| invalid(e.to_string()))?;
    // Optimised, as tcpdump compiles; netmask unknown (only `ip broadcast` needs one).
    let prog = dead
        .compile(expr, true)
        .map_err(|e| invalid(e.to_string()))?;
    prog.get_instructions()
        .iter()
        // The crate keeps `bpf_insn`'s fields private; its Display prints them as
        // "code jt jf k" in decimal, which is read back here rather than reaching in with unsafe.
        .map(|i| parse_insn(&i.to_string()))
        .collect::<Option<Vec<Insn>>>()
        .ok_or_else(|| invalid("libpcap printed an instruction metro cannot read".into()))
}

/// Without libpcap, only [`DEFAULT`] can be applied, and it needs no program of its own.
#[cfg(not(feature = "libpcap"))]
pub fn compile(expr: &str, _framing: Framing) -> Result<Vec<Insn>, ExprError> {
    Err(ExprError::NoLibpcap(expr.to_string()))
}

/// Reads one instruction printed as "code jt jf k".
#[cfg_attr(not(feature = "libpcap"), allow(dead_code))]
fn parse_insn(text: &str) -> Option<Insn> {
    let mut f = text.split_ascii_whitespace();
    let insn = Insn {
        code: f.next()?.parse().ok()?,
        jt: f.next()?.parse().ok()?,
        jf: f.next()?.parse().ok()?,
        k: f.next()?.parse().ok()?,
    };
    f.next().is_none().then_some(insn)
}

/// The root tests' bookkeeping, shared with the integration tests (`tests/support/root.rs`).
#[cfg(all(test, feature = "libpcap"))]
#[path = "../../tests/support/root.rs"]
mod root_test;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_is_the_default() {
        assert!(is_default("tcp"));
        assert!(is_default(" tcp "));
        assert!(!is_default("tcp port 80"));
        assert!(!is_default("udp"));
    }

    #[test]
    fn filters_other_than_tcp_need_libpcap_and_must_compile() {
        assert!(check("tcp").is_ok());
        assert!(check(" tcp ").is_ok());
        #[cfg(not(feature = "libpcap"))]
        assert_eq!(
            check("tcp port 80").unwrap_err().to_string(),
            "-f \"tcp port 80\": this metro was built without libpcap, so it cannot compile filter expressions other than `tcp`; drop -f (the instances' `ips`/`hosts` whitelist selects hosts), or build metro with `--features libpcap`"
        );
        #[cfg(feature = "libpcap")]
        {
            assert!(check("tcp port 80").is_ok());
            let e = check("tcp port eighty").unwrap_err().to_string();
            assert!(
                e.starts_with(
                    "-f \"tcp port eighty\": libpcap cannot compile this filter expression ("
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn instructions_read_back_from_their_printed_form() {
        assert_eq!(
            parse_insn("21 0 5 34525"),
            Some(Insn {
                code: 0x15,
                jt: 0,
                jf: 5,
                k: 0x86dd
            })
        );
        assert_eq!(parse_insn("6 0 0 4294967295").unwrap().k, u32::MAX);
        assert_eq!(parse_insn("21 0 5"), None);
        assert_eq!(parse_insn("21 0 5 1 2"), None);
        assert_eq!(parse_insn("21 0 300 1"), None);
    }

    #[cfg(not(feature = "libpcap"))]
    #[test]
    fn without_libpcap_other_expressions_are_refused_with_the_way_out() {
        let e = compile("tcp port 80", Framing::Ethernet).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-f \"tcp port 80\": this metro was built without libpcap, so it cannot compile filter expressions other than `tcp`; drop -f (the instances' `ips`/`hosts` whitelist selects hosts), or build metro with `--features libpcap`"
        );
    }

    #[cfg(feature = "libpcap")]
    mod libpcap {
        use super::super::*;
        use crate::capture::expr::root_test;
        use crate::capture::filter::{self, interpret};

        /// Ethernet + IPv4 (or IPv6) + a 20-byte TCP header, ports as given.
        fn frame(v6: bool, sport: u16, dport: u16, proto: u8) -> Vec<u8> {
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
            if v6 {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, proto, 64]);
                f.extend_from_slice(
                    &"2001:db8::1"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets(),
                );
                f.extend_from_slice(
                    &"2001:db8::2"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets(),
                );
            } else {
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0]);
                f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            }
            f.extend_from_slice(&sport.to_be_bytes());
            f.extend_from_slice(&dport.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
            f
        }

        #[test]
        fn tcp_port_80_keeps_port_80_either_way_and_nothing_else() {
            let p = compile("tcp port 80", Framing::Ethernet).unwrap();
            assert!(p.len() > 10, "{p:?}");
            for v6 in [false, true] {
                assert_ne!(interpret(&p, &frame(v6, 40000, 80, 6)), 0, "v6 {v6}");
                assert_ne!(interpret(&p, &frame(v6, 80, 40000, 6)), 0, "v6 {v6}");
                assert_eq!(interpret(&p, &frame(v6, 40000, 81, 6)), 0, "v6 {v6}");
                assert_eq!(interpret(&p, &frame(v6, 40000, 80, 17)), 0, "UDP, v6 {v6}");
            }
            // IPv4 with options: libpcap finds the TCP header with `ldxb 4*([14]&0xf)`.
            let mut opts = frame(false, 40000, 80, 6);
            opts[14] = 0x46;
            opts.splice(34..34, [1, 1, 1, 0]);
            assert_ne!(interpret(&p, &opts), 0);
        }

        #[test]
        fn combined_with_metros_filter_the_whitelist_and_snap_length_still_hold() {
            let hosts = [("10.0.0.2".parse().unwrap(), 32)];
            let metro = filter::compile(Framing::Ethernet, Some(&hosts), 200).unwrap();
            let user = compile("tcp dst port 80", Framing::Ethernet).unwrap();
            let both = filter::and(&metro, &user, 200).unwrap();
            assert_eq!(interpret(&both, &frame(false, 40000, 80, 6)), 200);
            assert_eq!(
                interpret(&both, &frame(false, 80, 40000, 6)),
                0,
                "not dst port 80"
            );
            // Whitelisted host, but IPv6 2001:db8::2 is not on the list.
            assert_eq!(interpret(&both, &frame(true, 40000, 80, 6)), 0);
        }

        #[test]
        fn raw_ip_links_compile_without_a_link_header() {
            let p = compile("tcp port 80", Framing::RawIp).unwrap();
            let f = frame(false, 40000, 80, 6);
            assert_ne!(interpret(&p, &f[14..]), 0);
            let f = frame(false, 40000, 22, 6);
            assert_eq!(interpret(&p, &f[14..]), 0);
        }

        #[test]
        fn a_bad_expression_names_itself_and_says_what_to_do() {
            let e = compile("tcp portx 80", Framing::Ethernet).unwrap_err();
            let s = e.to_string();
            assert!(
                s.starts_with(
                    "-f \"tcp portx 80\": libpcap cannot compile this filter expression ("
                ) && s.contains("syntax error")
                    && s.ends_with(
                        "correct it (the syntax is tcpdump's, see `man 7 pcap-filter`) or drop -f"
                    ),
                "{s}"
            );
        }

        /// The kernel's own check (`bpf_check_classic`) accepts the combined program. Opening a
        /// packet socket needs CAP_NET_RAW, so this is a root test; without root only the
        /// interpreter checks the program (the tests above).
        #[test]
        fn the_kernel_accepts_the_combined_program() {
            const NAME: &str = "the_kernel_accepts_the_combined_program";
            let metro = filter::compile(Framing::Ethernet, None, 256).unwrap();
            let user = compile(
                "tcp port 80 or (tcp[tcpflags] & tcp-syn != 0)",
                Framing::Ethernet,
            )
            .unwrap();
            let both = filter::and(&metro, &user, 256).unwrap();
            if !root_test::root_or_skip(NAME) {
                return;
            }
            crate::capture::ring::PacketSocket::open(false)
                .expect("as root, a packet socket opens")
                .attach_filter(&both)
                .expect("the kernel accepts the program");
            root_test::mark_ran(NAME);
        }
    }
}
