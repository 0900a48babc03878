//! Tests that need root, and the proof that they ran.
//!
//! A test that needs root calls [`root_or_skip`] first: when not root it prints
//! `SKIPPED (needs root): …` and returns, unless `METRO_REQUIRE_ROOT_TESTS=1`, which makes it fail.
//! A root test that completes calls [`mark_ran`], which prints `ROOT TEST RAN: name` and appends
//! the name to the file named by `METRO_ROOT_TESTS_RAN`, if set; `scripts/test` checks that file,
//! so a CI run in which the root tests silently did not run fails.

#![allow(dead_code)]

use std::io::Write;

/// True when running as root; otherwise says why the test is skipped (or fails, in CI).
pub fn root_or_skip(name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("METRO_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{name} needs root, and METRO_REQUIRE_ROOT_TESTS=1 forbids skipping it");
    }
    eprintln!("SKIPPED (needs root): {name}");
    false
}

/// Records that a root test ran to its end.
pub fn mark_ran(name: &str) {
    println!("ROOT TEST RAN: {name}");
    if let Ok(path) = std::env::var("METRO_ROOT_TESTS_RAN") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{name}");
        }
    }
}
