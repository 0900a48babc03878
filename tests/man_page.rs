//! The man page and completions that `examples/gen-docs.rs` writes from the clap definition: `man`
//! renders the page, and every flag `metro --help` lists appears in it and in every completion.
//!
//! The page is rendered by the real `man -l` (man-db and groff, which `scripts/test` installs), in
//! the C locale so that groff's hyphens come out as ASCII `-`.

use std::collections::BTreeSet;
use std::process::Command;

#[path = "../examples/gen-docs.rs"]
mod gen_docs;
mod support;

use support::{Scratch, METRO};

/// The long flags `metro --help` lists, as `--name`.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(METRO).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags: BTreeSet<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split([' ', ',', '=', '[', '<']))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect();
    // The flags metro has today, so that a parser that finds nothing cannot pass.
    for f in [
        "--cfg",
        "--log",
        "--f",
        "--st",
        "--pcap",
        "--interface",
        "--help",
        "--version",
    ] {
        assert!(flags.contains(f), "{f} is not in `metro --help`: {flags:?}");
    }
    flags
}

fn render(page: &std::path::Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("LC_ALL", "C")
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "")
        .env_remove("MANPAGER")
        .env("PAGER", "cat")
        .output()
        .expect("`man` runs (apt-get install man-db groff-base)");
    assert!(
        out.status.success(),
        "man -l {} failed: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_renders_the_page_with_every_flag_of_help() {
    let dir = Scratch::new("page");
    let files = gen_docs::write_all(&dir.0).unwrap();
    assert_eq!(files.len(), 4);
    let text = render(&dir.0.join("metro.1"));
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == section),
            "no {section} section in the rendered page:\n{text}"
        );
    }
    let missing: Vec<String> = help_flags()
        .into_iter()
        .filter(|f| !text.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "flags of `metro --help` missing from the man page: {missing:?}\n{text}"
    );
    for path in ["/etc/metro/go-metro.yaml", "/usr/lib/metro/go-metro"] {
        assert!(text.contains(path), "{path} is not in FILES");
    }
}

#[test]
fn every_completion_offers_every_flag_of_help() {
    let dir = Scratch::new("completions");
    gen_docs::write_all(&dir.0).unwrap();
    for (file, spell) in [
        ("metro.bash", "--{}"),
        ("_metro", "--{}"),
        ("metro.fish", "-l {}"),
    ] {
        let text = std::fs::read_to_string(dir.0.join(file)).unwrap();
        let missing: Vec<String> = help_flags()
            .into_iter()
            .map(|f| spell.replace("{}", &f[2..]))
            .filter(|w| !text.contains(w.as_str()))
            .collect();
        assert!(missing.is_empty(), "{file} lacks {missing:?}");
    }
}

#[test]
fn a_flag_missing_from_the_page_is_noticed() {
    let dir = Scratch::new("planted");
    gen_docs::write_all(&dir.0).unwrap();
    let page = dir.0.join("metro.1");
    let roff = std::fs::read_to_string(&page).unwrap();
    // clap_mangen writes a long flag as `\-\-name`; take one out of the page.
    let cut = roff.replace("\\-\\-interface", "\\-\\-iface");
    assert_ne!(cut, roff);
    std::fs::write(&page, cut).unwrap();
    assert!(!render(&page).contains("--interface"));
}
