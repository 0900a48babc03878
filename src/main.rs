//! The `metro` binary: parse the command line, run, map errors to exit codes.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

use metro::cli::{exit, Cli, Format};
use metro::decode::Addr;
use metro::offline;
use metro::report::{json, table};
use metro::worker::WorkerConfig;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; everything else is a usage error (status 1).
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("metro: cannot write output: {e}");
            exit::INPUT
        }
    };
    ExitCode::from(code as u8)
}

fn run(cli: &Cli) -> io::Result<i32> {
    let cfg = WorkerConfig {
        local: cli.local.iter().map(|ip| Addr::from(*ip)).collect(),
        keep_samples: cli.samples,
        ..WorkerConfig::default()
    };
    let outcome = match offline::run(&cli.pcap, cli.workers as usize, &cfg) {
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
