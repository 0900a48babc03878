//! Network interfaces: finding one by name, its addresses, and whether it is still there.
//!
//! Live capture needs three facts about an interface before it opens a socket: its index (to bind
//! to), its link type (to know where the IP header starts), and its own addresses (so halves
//! acknowledged by this host are not reported, their "RTT" being the local stack's ACK delay).
//! While capturing, it also needs to notice the interface going down, coming back, or vanishing.
//!
//! Everything here goes through `getifaddrs` and `if_nametoindex` in the calling thread's network
//! namespace. Live capture reads the addresses again while it runs ([`status`]), so an address
//! added later is local from then on.
//!
//! [`ANY`] names every interface at once, as libpcap's `any` device does: index 0, always up,
//! cooked framing (from the network header), and every interface's addresses.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::{if_nameindex, if_nametoindex, InterfaceFlags};
use nix::sys::socket::SockaddrStorage;

use super::filter::Framing;
use super::ring::ANY_IFINDEX;
use super::LinkType;

/// `ARPHRD_*` values (from `linux/if_arp.h`) of links metro can decode.
mod arphrd {
    pub const ETHER: u16 = 1;
    pub const PPP: u16 = 512;
    pub const RAWIP: u16 = 519;
    pub const LOOPBACK: u16 = 772;
    pub const NONE: u16 = 0xfffe;
}

/// What metro learned about an interface.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index, which the capture sockets bind to.
    pub index: u32,
    /// True when it is administratively up.
    pub up: bool,
    /// Its `ARPHRD_*` link type.
    pub hatype: u16,
    /// Its IPv4 and IPv6 addresses.
    pub addrs: Vec<IpAddr>,
}

/// The name that captures on every interface (go-metro's libpcap lists it as a device).
pub const ANY: &str = "any";

impl Interface {
    /// How frames captured on this interface are framed, or `None` for a link metro cannot decode.
    pub fn framing(&self) -> Option<(LinkType, Framing)> {
        if self.index == ANY_IFINDEX {
            return Some((LinkType::Raw, Framing::RawIp));
        }
        match self.hatype {
            arphrd::ETHER | arphrd::LOOPBACK => Some((LinkType::Ethernet, Framing::Ethernet)),
            arphrd::NONE | arphrd::RAWIP | arphrd::PPP => Some((LinkType::Raw, Framing::RawIp)),
            _ => None,
        }
    }
}

/// Why an interface could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No interface has that name.
    #[error("cannot open interface {name}: no such device (interfaces here: {available})")]
    NoSuchDevice {
        /// The name asked for.
        name: String,
        /// The interfaces that do exist, comma-separated.
        available: String,
    },
    /// The system could not be asked.
    #[error("cannot look up interface {name}: {source}")]
    Lookup {
        /// The name asked for.
        name: String,
        /// What failed.
        source: Errno,
    },
}

/// Where an interface stands, as seen while capturing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Present and up.
    Up,
    /// Present but down: nothing arrives until it comes back up.
    Down,
    /// Gone, or replaced by another interface of the same name.
    Gone,
}

/// Names of the interfaces in this network namespace, in index order.
pub fn names() -> Vec<String> {
    match if_nameindex() {
        Ok(list) => list
            .iter()
            .map(|i| i.name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every address of every interface.
fn all_addrs() -> Option<Vec<IpAddr>> {
    let list = getifaddrs().ok()?;
    let mut out: Vec<IpAddr> = list
        .filter_map(|a| a.address.as_ref().and_then(ip_of))
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// Looks up `name`: its index, state, link type and addresses.
pub fn lookup(name: &str) -> Result<Interface, IfaceError> {
    if name == ANY {
        return Ok(Interface {
            name: name.to_string(),
            index: ANY_IFINDEX,
            up: true,
            hatype: 0,
            addrs: all_addrs().unwrap_or_default(),
        });
    }
    let index = match if_nametoindex(name) {
        Ok(i) if i != 0 => i,
        // glibc reports an unknown name as ENODEV; a name too long for IFNAMSIZ as EINVAL or
        // ENAMETOOLONG, and no interface can have it either.
        Err(Errno::ENODEV | Errno::ENXIO | Errno::EINVAL | Errno::ENAMETOOLONG) | Ok(_) => {
            return Err(IfaceError::NoSuchDevice {
                name: name.to_string(),
                available: names().join(", "),
            })
        }
        Err(e) => {
            return Err(IfaceError::Lookup {
                name: name.to_string(),
                source: e,
            })
        }
    };
    let mut iface = Interface {
        name: name.to_string(),
        index,
        up: false,
        hatype: 0,
        addrs: Vec::new(),
    };
    let list = getifaddrs().map_err(|e| IfaceError::Lookup {
        name: name.to_string(),
        source: e,
    })?;
    for ifa in list.filter(|a| a.interface_name == name) {
        iface.up = ifa.flags.contains(InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        if let Some(ll) = addr.as_link_addr() {
            iface.hatype = ll.hatype();
        } else if let Some(ip) = ip_of(&addr) {
            iface.addrs.push(ip);
        }
    }
    Ok(iface)
}

/// The IP address in a `getifaddrs` entry, if it holds one (IPv4 or IPv6).
pub fn ip_of(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}

/// Whether the interface with `name` and `index` is still there, and up, and its addresses now
/// (`None` when they cannot be read this time).
pub fn status(name: &str, index: u32) -> (Status, Option<Vec<IpAddr>>) {
    if index == ANY_IFINDEX {
        return (Status::Up, all_addrs());
    }
    match if_nametoindex(name) {
        Ok(i) if i == index => {}
        _ => return (Status::Gone, None),
    }
    let Ok(list) = getifaddrs() else {
        // Cannot tell: assume nothing changed rather than report a false outage.
        return (Status::Up, None);
    };
    let mut found = None;
    let mut addrs = Vec::new();
    for ifa in list.filter(|a| a.interface_name == name) {
        found = Some(if ifa.flags.contains(InterfaceFlags::IFF_UP) {
            Status::Up
        } else {
            Status::Down
        });
        addrs.extend(ifa.address.as_ref().and_then(ip_of));
    }
    match found {
        Some(s) => (s, Some(addrs)),
        None => (Status::Gone, None),
    }
}

/// How often [`wait_until_up`] looks for the interface.
const WAIT_RETRY: Duration = Duration::from_millis(250);

/// Waits until an interface called `name` exists and is up; false if `stop` was set first.
pub fn wait_until_up(name: &str, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        if lookup(name).is_ok_and(|i| i.up) {
            return true;
        }
        thread::sleep(WAIT_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_names_the_ones_that_exist() {
        let e = lookup("metro-no-such0").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "cannot open interface metro-no-such0: no such device (interfaces here: "
            ),
            "{e}"
        );
        assert!(e.contains("lo"), "{e}");
    }

    #[test]
    fn loopback_is_ethernet_framed_and_has_its_address() {
        let lo = lookup("lo").unwrap();
        assert_eq!(lo.framing().unwrap().0, LinkType::Ethernet);
        assert!(lo.addrs.contains(&"127.0.0.1".parse().unwrap()), "{lo:?}");
        let (st, addrs) = status("lo", lo.index);
        assert_eq!(st, Status::Up);
        assert!(addrs.unwrap().contains(&"127.0.0.1".parse().unwrap()));
        assert_eq!(status("lo", lo.index + 1000), (Status::Gone, None));
    }

    #[test]
    fn any_is_every_interface_cooked() {
        let any = lookup(ANY).unwrap();
        assert_eq!(any.index, 0);
        assert!(any.up);
        assert_eq!(any.framing(), Some((LinkType::Raw, Framing::RawIp)));
        assert!(any.addrs.contains(&"127.0.0.1".parse().unwrap()), "{any:?}");
        assert_eq!(status(ANY, 0).0, Status::Up);
    }
}
