//! The `metro` binary: parse the command line, pick the mode, run, map errors to exit codes.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use std::path::Path;

use metro::cli::{exit, Cli, Format, Mode};
use metro::daemon;
use metro::decode::Addr;
use metro::offline;
use metro::report::{json, table};
use metro::worker::WorkerConfig;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; real errors explain themselves.
            let _ = e.print();
            if e.kind() == clap::error::ErrorKind::UnknownArgument {
                eprintln!("{}", metro::cli::flags_hint());
            }
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            return ExitCode::from(code as u8);
        }
    };
    let code = match cli.mode() {
        Mode::Offline(pcap) => offline_main(&cli, &pcap),
        Mode::Config(cfg) => daemon::run(&cli, &cfg),
    };
    ExitCode::from(code as u8)
}

/// Offline mode: read a capture, print its statistics.
fn offline_main(cli: &Cli, pcap: &Path) -> i32 {
    match run(cli, pcap) {
        Ok(code) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("metro: cannot write output: {e}");
            exit::INPUT
        }
    }
}

fn run(cli: &Cli, pcap: &Path) -> io::Result<i32> {
    let cfg = WorkerConfig {
        local: cli.local.iter().map(|ip| Addr::from(*ip)).collect(),
        keep_samples: cli.samples,
        ..WorkerConfig::default()
    };
    let outcome = match offline::run(pcap, cli.workers as usize, &cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("metro: {e}");
            return Ok(exit::INPUT);
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let pairs = outcome.merged.summaries();
    let counters = &outcome.merged.counters;
    if cli.samples || cli.format == Format::Json {
        for s in &outcome.samples {
            json::write_sample(&mut out, s)?;
        }
        for p in &pairs {
            json::write_pair(&mut out, p)?;
        }
        json::write_counters(&mut out, counters)?;
    } else {
        table::write(&mut out, &pairs, counters)?;
    }
    out.flush()?;
    if let Some(e) = outcome.error {
        eprintln!("metro: {e}; the statistics above cover the packets before it");
        return Ok(exit::INPUT);
    }
    Ok(exit::OK)
}
