//! Writes metro's man page and shell completions from the clap definition of its command line,
//! so they cannot drift from `metro --help`.
//!
//! `cargo run --example gen-docs -- DIR` writes `DIR/metro.1` and the bash, zsh and fish
//! completions (`metro.bash`, `_metro`, `metro.fish`); `scripts/package` puts them in the packages.
//! It is an example, not part of the `metro` binary, so that clap_mangen and clap_complete stay
//! out of what metro links at run time.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{roman, Roff};

use metro::cli::Cli;

/// The files the packages install, for the man page's FILES section.
const FILES: [(&str, &str); 4] = [
    (
        "/etc/metro/go-metro.yaml",
        "the configuration metro.service runs with (go-metro's YAML; kept on removal, removed on purge)",
    ),
    (
        "/usr/lib/metro/go-metro",
        "metro under go-metro's name, for an agent's supervisor that runs go-metro with go-metro's flags",
    ),
    (
        "/usr/lib/systemd/system/metro.service",
        "the service: metro -cfg=/etc/metro/go-metro.yaml as the unprivileged user metro, with CAP_NET_RAW only (systemctl enable --now metro)",
    ),
    (
        "/var/log/metro/metro.log",
        "the service's log, when the configuration sets log_to_file: true",
    ),
];

/// The man page: clap_mangen's rendering of `metro --help`, then FILES and SEE ALSO.
pub fn man_page() -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    let mut extra = Roff::new();
    extra.control("SH", ["FILES"]);
    for (path, what) in FILES {
        extra.control("TP", []);
        extra.text([roman(path)]);
        extra.text([roman(what)]);
    }
    extra.control("SH", ["SEE ALSO"]);
    extra.text([roman(
        "setcap(8), capabilities(7), pcap-filter(7), systemd.exec(5); go-metro: https://github.com/DataDog/go-metro",
    )]);
    extra.to_writer(&mut out)?;
    Ok(out)
}

/// Writes the man page and the completions into `dir`; returns the files written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let man = dir.join("metro.1");
    fs::write(&man, man_page()?)?;
    written.push(man);
    for (shell, name) in [
        (Shell::Bash, "metro.bash"),
        (Shell::Zsh, "_metro"),
        (Shell::Fish, "metro.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "metro", &mut buf);
        let path = dir.join(name);
        fs::write(&path, buf)?;
        written.push(path);
    }
    Ok(written)
}

#[allow(dead_code)]
fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!(
            "usage: gen-docs DIR (writes metro.1 and the bash, zsh and fish completions there)"
        );
        std::process::exit(1);
    };
    match write_all(Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!(
                "gen-docs: cannot write into {}: {e}",
                Path::new(&dir).display()
            );
            std::process::exit(1);
        }
    }
}
