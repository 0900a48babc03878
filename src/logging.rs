//! Logging in go-metro's format, to its rotated file or to standard error.
//!
//! go-metro logs through seelog with the format
//! `%Date %Time ZONE | %LEVEL | (%File:%Line) |  %Msg`, to `-log` rotated at 100 KB with 5 old
//! files kept when `log_to_file` is true, and to the console otherwise. metro writes the same
//! lines through `tracing`, so that scripts and people reading go-metro's log read metro's.
//!
//! The destination and level change once the configuration has been read (go-metro starts at
//! warning level), so both live behind a [`Logger`] handle instead of being fixed when the
//! subscriber is installed. seelog's `critical` level has no `tracing` counterpart: events sent
//! to the [`CRITICAL`] target are printed as `CRITICAL` and are the only ones shown at that level.
//!
//! What this module does not do: decide what to log. At info level metro logs what go-metro logs
//! at start-up, never a line per packet or per metric.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogLevel;

/// The target that marks an event as seelog's `critical`:
/// `tracing::error!(target: logging::CRITICAL, "...")`.
pub const CRITICAL: &str = "critical";

/// go-metro's rotation: a file is rolled once it passes 100 000 bytes …
pub const ROTATE_BYTES: usize = 100_000;
/// … and 5 rolled files are kept.
pub const ROTATE_KEEP: usize = 5;

enum Dest {
    Stderr,
    File(Box<FileRotate<AppendCount>>),
    /// Tests and embedders: an in-memory buffer.
    Buffer(Arc<Mutex<Vec<u8>>>),
}

struct State {
    level: AtomicU8,
    dest: Mutex<Dest>,
}

/// The handle to metro's log: where it goes, and how much of it.
#[derive(Clone)]
pub struct Logger {
    state: Arc<State>,
}

fn rank(l: LogLevel) -> u8 {
    l as u8
}

impl Logger {
    fn new(level: LogLevel, dest: Dest) -> Logger {
        Logger {
            state: Arc::new(State {
                level: AtomicU8::new(rank(level)),
                dest: Mutex::new(dest),
            }),
        }
    }

    /// Installs metro's subscriber for the whole process, writing to standard error at warning
    /// level (go-metro's level before it has read its configuration).
    pub fn install() -> Logger {
        let logger = Logger::new(LogLevel::Warn, Dest::Stderr);
        // Only the first call in a process installs; later ones keep the first subscriber.
        let _ = tracing::subscriber::set_global_default(logger.subscriber());
        logger
    }

    /// A logger writing into a buffer, with its subscriber, for tests.
    pub fn buffer(level: LogLevel) -> (Logger, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (Logger::new(level, Dest::Buffer(buf.clone())), buf)
    }

    /// A subscriber that formats as go-metro and writes through this handle.
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync {
        let for_filter = self.state.clone();
        let for_writer = self.state.clone();
        let filter = tracing_subscriber::filter::dynamic_filter_fn(move |meta, _| {
            let want = for_filter.level.load(Ordering::Relaxed);
            let critical = meta.target() == CRITICAL;
            if want == rank(LogLevel::Critical) {
                return critical;
            }
            critical || event_rank(meta.level()) >= want
        });
        let layer = tracing_subscriber::fmt::layer()
            .event_format(GoMetroFormat)
            .with_writer(move || Output(for_writer.clone()));
        tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(layer, filter))
    }

    /// Sets the least severe level shown.
    pub fn set_level(&self, level: LogLevel) {
        self.state.level.store(rank(level), Ordering::Relaxed);
    }

    /// Logs to `path` from now on, rotated as go-metro's log. The directory is created if need
    /// be. On failure the log stays where it was and the error says why.
    pub fn to_file(&self, path: &Path) -> io::Result<()> {
        let path = std::path::absolute(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Check that the file can be written before handing it to file-rotate, which panics
        // when it cannot create what it needs.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let f = FileRotate::new(
            &path,
            AppendCount::new(ROTATE_KEEP),
            ContentLimit::BytesSurpassed(ROTATE_BYTES),
            Compression::None,
            None,
        );
        *self.lock() = Dest::File(Box::new(f));
        Ok(())
    }

    /// Logs to standard error from now on.
    pub fn to_stderr(&self) {
        *self.lock() = Dest::Stderr;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dest> {
        self.state.dest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn event_rank(l: &Level) -> u8 {
    rank(match *l {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        Level::ERROR => LogLevel::Error,
    })
}

struct Output(Arc<State>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut d = self.0.dest.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *d {
            Dest::Stderr => io::stderr().write(buf),
            Dest::File(f) => f.write(buf),
            Dest::Buffer(b) => {
                b.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut d = self.0.dest.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *d {
            Dest::Stderr => io::stderr().flush(),
            Dest::File(f) => f.flush(),
            Dest::Buffer(_) => Ok(()),
        }
    }
}

/// seelog's `%Date %Time ZONE | %LEVEL | (%File:%Line) |  %Msg` as go-metro configures it.
struct GoMetroFormat;

/// The zone as go-metro prints it: `UTC`, or the offset when the zone has one.
fn zone(offset_s: i32) -> String {
    if offset_s == 0 {
        return "UTC".into();
    }
    let sign = if offset_s < 0 { '-' } else { '+' };
    let m = offset_s.unsigned_abs() / 60;
    format!("{sign}{:02}{:02}", m / 60, m % 60)
}

impl<S, N> FormatEvent<S, N> for GoMetroFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now();
        let meta = event.metadata();
        let level = if meta.target() == CRITICAL {
            LogLevel::Critical
        } else {
            match *meta.level() {
                Level::TRACE => LogLevel::Trace,
                Level::DEBUG => LogLevel::Debug,
                Level::INFO => LogLevel::Info,
                Level::WARN => LogLevel::Warn,
                Level::ERROR => LogLevel::Error,
            }
        };
        let file = meta
            .file()
            .map(|f| f.rsplit('/').next().unwrap_or(f))
            .unwrap_or("?");
        write!(
            writer,
            "{} {} | {} | ({}:{}) |  ",
            now.format("%Y-%m-%d %H:%M:%S"),
            zone(now.offset().local_minus_utc()),
            level.label(),
            file,
            meta.line().unwrap_or(0)
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_have_go_metros_layout() {
        let (log, buf) = Logger::buffer(LogLevel::Info);
        tracing::subscriber::with_default(log.subscriber(), || {
            tracing::info!("Will attempt sniffing off interface {:?}", "eth0");
        });
        let t = text(&buf);
        let line = t.strip_suffix('\n').unwrap();
        // 2024-05-01 12:00:00 UTC | INFO | (logging.rs:NNN) |  message
        let (stamp, rest) = line.split_at(19);
        let b = stamp.as_bytes();
        assert!(
            b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b' ',
                13 | 16 => *c == b':',
                _ => c.is_ascii_digit(),
            }),
            "{line}"
        );
        let parts: Vec<&str> = rest.trim_start().splitn(2, " | ").collect();
        assert!(parts[0] == "UTC" || parts[0].len() == 5, "{line}");
        let rest = parts[1];
        assert!(rest.starts_with("INFO | (logging.rs:"), "{line}");
        assert!(
            rest.ends_with(") |  Will attempt sniffing off interface \"eth0\""),
            "{line}"
        );
    }

    #[test]
    fn levels_filter_and_critical_is_its_own_level() {
        let (log, buf) = Logger::buffer(LogLevel::Error);
        tracing::subscriber::with_default(log.subscriber(), || {
            tracing::info!("i");
            tracing::warn!("w");
            tracing::error!("e");
            tracing::error!(target: CRITICAL, "c");
            log.set_level(LogLevel::Critical);
            tracing::error!("e2");
            tracing::error!(target: CRITICAL, "c2");
            log.set_level(LogLevel::Trace);
            tracing::trace!("t");
        });
        let levels: Vec<String> = text(&buf)
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.split(" | ").collect();
                format!("{} {}", p[1], p[3].trim())
            })
            .collect();
        assert_eq!(
            levels,
            vec!["ERROR e", "CRITICAL c", "CRITICAL c2", "TRACE t"]
        );
    }

    #[test]
    fn zones_print_as_utc_or_offset() {
        assert_eq!(zone(0), "UTC");
        assert_eq!(zone(3600), "+0100");
        assert_eq!(zone(-(5 * 3600 + 30 * 60)), "-0530");
    }

    #[test]
    fn file_log_rotates_at_100_kb_keeping_5() {
        let dir = std::env::temp_dir().join(format!("metro-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("go-metro.log");
        let (log, _) = Logger::buffer(LogLevel::Info);
        log.to_file(&path).unwrap();
        let line = "y".repeat(999);
        tracing::subscriber::with_default(log.subscriber(), || {
            for _ in 0..700 {
                tracing::warn!("{line}");
            }
        });
        log.to_stderr();
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "go-metro.log",
                "go-metro.log.1",
                "go-metro.log.2",
                "go-metro.log.3",
                "go-metro.log.4",
                "go-metro.log.5"
            ]
        );
        for n in &names[1..] {
            let len = std::fs::metadata(path.parent().unwrap().join(n))
                .unwrap()
                .len();
            assert!((100_000..102_000).contains(&len), "{n}: {len}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_log_path_is_an_error_not_a_panic() {
        let (log, _) = Logger::buffer(LogLevel::Info);
        assert!(log.to_file(Path::new("/proc/metro/go-metro.log")).is_err());
    }
}
