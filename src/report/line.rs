//! One output line built on the stack, with the numbers and addresses a gateway's report writes
//! hundreds of thousands of times per interval.
//!
//! `std::fmt` formats an `f64` with a fixed number of places by exact decimal expansion, which
//! costs about a tenth of a microsecond a number. Every reported RTT but the mean and the jitter
//! is a whole number of nanoseconds, and for those the places are the integer's own digits: the
//! same text comes out of integer arithmetic (the functions below fall back to `std::fmt` where
//! they could differ, so the text is always exactly what `{:.N}` prints for `ns as f64 / 1e6`).

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::net::IpAddr;

use crate::decode::Addr;
use crate::record::ServicePort;

/// A line being built: longer than any line the reports write (two IPv6 addresses and ten
/// numbers), so a push never runs out of room in practice; if one would, the line is cut and
/// [`Line::finish`] says so rather than writing a wrong line.
pub struct Line {
    buf: [u8; 512],
    len: usize,
    overflowed: bool,
}

impl Default for Line {
    fn default() -> Line {
        Line::new()
    }
}

impl Line {
    /// An empty line.
    pub fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
            overflowed: false,
        }
    }

    /// Appends bytes.
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        match self.buf.get_mut(self.len..self.len + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s);
                self.len += s.len();
            }
            None => self.overflowed = true,
        }
    }

    /// Appends a string.
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        self.push(s.as_bytes());
    }

    /// Appends an unsigned integer in decimal.
    pub fn push_u64(&mut self, v: u64) {
        let mut digits = [0u8; 20];
        let n = decimal(v, &mut digits);
        self.push(&digits[20 - n..]);
    }

    /// Appends `ns` nanoseconds as milliseconds with `places` decimal places: the
    /// text `format!("{:.places$}", ns as f64 / 1e6)` gives.
    pub fn push_ms(&mut self, ns: u64, places: usize) {
        match ms_digits(ns, places) {
            Some((whole, frac)) => {
                self.push_u64(whole);
                if places > 0 {
                    // Zeros to the left of `frac`'s own digits pad it to `places`.
                    let mut digits = [b'0'; 20];
                    decimal(frac, &mut digits);
                    self.push(b".");
                    self.push(&digits[20 - places..]);
                }
            }
            None => {
                let _ = write!(self, "{:.places$}", ns as f64 / 1e6);
            }
        }
    }

    /// Appends a host's address, or `other` for the series of pairs past `max_pairs`.
    pub fn push_host(&mut self, addr: &Addr, other: bool) {
        if other {
            return self.push_str("other");
        }
        match addr.ip() {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b".");
                    }
                    self.push_u64(u64::from(octet));
                }
            }
            ip @ IpAddr::V6(_) => {
                let _ = write!(self, "{ip}");
            }
        }
    }

    /// Appends a series' server port: its number, or `other` as given.
    pub fn push_port(&mut self, port: ServicePort, other: &str) {
        match port {
            ServicePort::Port(n) => self.push_u64(u64::from(n)),
            ServicePort::Other => self.push_str(other),
        }
    }

    /// Appends what `push` appends, right-aligned in `width` columns (as `{:>width$}`).
    pub fn push_right(&mut self, width: usize, push: impl FnOnce(&mut Line)) {
        let start = self.len;
        push(self);
        let written = self.len - start;
        if written < width && !self.overflowed {
            let pad = width - written;
            if self.len + pad > self.buf.len() {
                self.overflowed = true;
                return;
            }
            self.buf.copy_within(start..self.len, start + pad);
            self.buf[start..start + pad].fill(b' ');
            self.len += pad;
        }
    }

    /// Appends what `push` appends, left-aligned in `width` columns (as `{:<width$}`).
    pub fn push_left(&mut self, width: usize, push: impl FnOnce(&mut Line)) {
        let start = self.len;
        push(self);
        for _ in self.len - start..width {
            self.push(b" ");
        }
    }

    /// Writes the line, or fails if it did not fit.
    pub fn finish(&self, out: &mut impl Write) -> io::Result<()> {
        if self.overflowed {
            return Err(io::Error::other("report line longer than 512 bytes"));
        }
        out.write_all(&self.buf[..self.len])
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// Writes `v`'s decimal digits at the end of `out` and returns how many there are.
fn decimal(mut v: u64, out: &mut [u8; 20]) -> usize {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return out.len() - i;
        }
    }
}

/// The whole milliseconds and the `places` decimal digits (as an integer) that `{:.places$}`
/// prints for `ns as f64 / 1e6`, or `None` where integer rounding could differ from it.
///
/// The division is correctly rounded, so the `f64` is within half an ulp of `ns / 10^6`. With
/// six places the true value has no further digits, and below 2^33 ms half an ulp is under
/// half a unit of the last place, so the digits are the integer's (more places would show the
/// `f64`'s own error, and are left to `std::fmt`). With fewer places
/// the rounding is decided by the digits cut off; a cut-off part of exactly one half is left
/// to `std::fmt` (which rounds the `f64`, a hair above or below the half), and elsewhere the
/// true value is at least 1 ns from the half-way point while below 2^23 ms the `f64` is within
/// less than 1 ns of it.
fn ms_digits(ns: u64, places: usize) -> Option<(u64, u64)> {
    if places > 6 {
        return None;
    }
    if places == 6 {
        return (ns < 1 << 52).then_some((ns / 1_000_000, ns % 1_000_000));
    }
    if ns >= 8_000_000_000_000 {
        return None;
    }
    let unit = 10u64.pow(6 - places as u32);
    let (q, r) = (ns / unit, ns % unit);
    let q = match (2 * r).cmp(&unit) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => return None,
    };
    let per_ms = 10u64.pow(places as u32);
    Some((q / per_ms, q % per_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ns: u64, places: usize) -> String {
        let mut l = Line::new();
        l.push_ms(ns, places);
        String::from_utf8(l.buf[..l.len].to_vec()).unwrap()
    }

    #[test]
    fn milliseconds_print_as_std_prints_them() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values: Vec<u64> = (0..2_000).collect();
        values.extend([
            499,
            500,
            501,
            999_499,
            999_500,
            999_501,
            1_000_000,
            1_234_500,
            59_999_999_500,
            7_999_999_999_999,
            8_000_000_000_000,
            1 << 52,
            u64::MAX,
        ]);
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly RTT-sized values, some huge ones, and many exact half-way points.
            let v = match x % 4 {
                0 => x >> 34,
                1 => (x >> 44) * 1000 + 500,
                2 => x >> 20,
                _ => x,
            };
            values.push(v);
        }
        for v in values {
            for places in [0, 1, 3, 6, 9] {
                assert_eq!(
                    ms(v, places),
                    format!("{:.places$}", v as f64 / 1e6),
                    "{v} ns, {places} places"
                );
            }
        }
    }

    #[test]
    fn hosts_print_as_std_prints_them() {
        for ip in [
            "0.0.0.0",
            "10.1.255.7",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let addr = match ip {
                IpAddr::V4(v4) => Addr::v4(v4.octets()),
                IpAddr::V6(v6) => Addr::v6(v6.octets()),
            };
            let mut l = Line::new();
            l.push_host(&addr, false);
            l.push(b" ");
            l.push_host(&addr, true);
            assert_eq!(&l.buf[..l.len], format!("{ip} other").as_bytes());
        }
    }

    #[test]
    fn columns_align_as_std_aligns_them() {
        let mut l = Line::new();
        l.push_left(6, |l| l.push_str("ab"));
        l.push_right(9, |l| l.push_ms(1_234_567, 3));
        l.push_right(2, |l| l.push_u64(12345));
        l.push_left(2, |l| l.push_str("xyz"));
        let want = format!("{:<6}{:>9.3}{:>2}{:<2}", "ab", 1.234567, 12345, "xyz");
        assert_eq!(&l.buf[..l.len], want.as_bytes());
    }

    #[test]
    fn a_line_too_long_is_an_error_not_a_cut_line() {
        let mut l = Line::new();
        for _ in 0..600 {
            l.push(b"x");
        }
        assert!(l.finish(&mut Vec::new()).is_err());
    }
}
