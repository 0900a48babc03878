//! Logging in go-metro's format, to its rotated file or to standard error.
//!
//! go-metro logs through seelog with the format
//! `%Date %Time ZONE | %LEVEL | (%File:%Line) |  %Msg`, where ZONE is the local zone's
//! abbreviation (`UTC`, `CET`) taken when the logger starts. Until its configuration is read it
//! logs to the `-log` file at warning level, so that start-up errors reach the file the agents'
//! documentation points to; then to `-log` when `log_to_file` is true and to standard output
//! otherwise. The file is rolled as seelog's size roller rolls it: once it holds 100,000 bytes
//! or more, before the next line, it is renamed `NAME.N` with N one more than the highest
//! number there (the newest roll has the highest number), and only the 5 highest are kept.
//! metro writes the same lines through `tracing`, so that scripts, log shippers and people
//! reading go-metro's log read metro's.
//!
//! The destination and level change once the configuration has been read, so both live
//! behind a [`Logger`] handle instead of being fixed when the subscriber is installed. seelog's `critical` level has no `tracing` counterpart: events sent
//! to the [`CRITICAL`] target are printed as `CRITICAL` and are the only ones shown at that level.
//!
//! What this module does not do: decide what to log. At info level metro logs what go-metro logs
//! at start-up, never a line per packet or per metric.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

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
    Stdout,
    File(RollingFile),
    /// Tests and embedders: an in-memory buffer.
    Buffer(Arc<Mutex<Vec<u8>>>),
}

struct State {
    level: AtomicU8,
    dest: Mutex<Dest>,
    /// The zone's abbreviation, read once as go-metro reads it when its logger starts.
    zone: String,
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
                zone: zone_name(chrono::Utc::now().timestamp()),
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
            .event_format(GoMetroFormat {
                zone: self.state.zone.clone(),
            })
            .with_writer(move || Output(for_writer.clone()));
        tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(layer, filter))
    }

    /// Sets the least severe level shown.
    pub fn set_level(&self, level: LogLevel) {
        self.state.level.store(rank(level), Ordering::Relaxed);
    }

    /// Logs to `path` from now on, rolled as go-metro's log. The directory is created if need
    /// be, as seelog creates it. On failure the log stays where it was and the error says why.
    pub fn to_file(&self, path: &Path) -> io::Result<()> {
        let f = RollingFile::open(&std::path::absolute(path)?)?;
        *self.lock() = Dest::File(f);
        Ok(())
    }

    /// Logs to standard error from now on.
    pub fn to_stderr(&self) {
        *self.lock() = Dest::Stderr;
    }

    /// Logs to standard output from now on: seelog's console, where go-metro logs when
    /// `log_to_file` is false.
    pub fn to_stdout(&self) {
        *self.lock() = Dest::Stdout;
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
            Dest::Stdout => io::stdout().write(buf),
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
            Dest::Stdout => io::stdout().flush(),
            Dest::File(f) => f.file.flush(),
            Dest::Buffer(_) => Ok(()),
        }
    }
}

/// A log file rolled as seelog's size roller rolls go-metro's (see the module's doc).
struct RollingFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl RollingFile {
    fn open(path: &Path) -> io::Result<RollingFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RollingFile {
            path: path.to_owned(),
            file,
            size,
        })
    }

    /// The numbers of the rolled files there now, lowest first.
    fn rolls(&self) -> io::Result<Vec<u64>> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(Vec::new());
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut n: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| {
                let e = e.ok()?;
                let tail = e.file_name().to_str()?.strip_prefix(&prefix)?.to_string();
                tail.parse().ok()
            })
            .collect();
        n.sort_unstable();
        Ok(n)
    }

    fn rolled(&self, n: u64) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Renames the file to the next number, deletes the lowest beyond [`ROTATE_KEEP`], and
    /// starts a new file.
    fn roll(&mut self) -> io::Result<()> {
        let rolls = self.rolls()?;
        let next = rolls.last().map_or(1, |n| n + 1);
        std::fs::rename(&self.path, self.rolled(next))?;
        let extra = (rolls.len() + 1).saturating_sub(ROTATE_KEEP);
        for &old in &rolls[..extra.min(rolls.len())] {
            let _ = std::fs::remove_file(self.rolled(old));
        }
        *self = RollingFile::open(&self.path)?;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size >= ROTATE_BYTES as u64 {
            self.roll()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }
}

/// The abbreviation of the local time zone at `unix_time`, as Go's `time.Now().Zone()` gives
/// it, upper-cased as go-metro writes it: `TZ` unset reads `/etc/localtime`; `TZ=""` and
/// `TZ=UTC` are UTC; `TZ=NAME` or `TZ=:NAME` reads NAME, a path or a name under the zoneinfo
/// directories; anything Go cannot load is UTC.
pub fn zone_name(unix_time: i64) -> String {
    let file = match std::env::var_os("TZ") {
        None => Some(PathBuf::from("/etc/localtime")),
        Some(tz) => {
            let tz = tz.to_string_lossy().into_owned();
            let tz = tz.strip_prefix(':').unwrap_or(&tz).to_string();
            if tz.is_empty() || tz == "UTC" {
                None
            } else if tz.starts_with('/') {
                Some(PathBuf::from(tz))
            } else {
                // Go's platformZoneSources.
                [
                    "/usr/share/zoneinfo/",
                    "/usr/share/lib/zoneinfo/",
                    "/usr/lib/locale/TZ/",
                    "/etc/zoneinfo/",
                ]
                .iter()
                .map(|d| Path::new(d).join(&tz))
                .find(|p| p.is_file())
            }
        }
    };
    file.and_then(|f| std::fs::read(f).ok())
        .and_then(|data| tz::TimeZone::from_tz_data(&data).ok())
        .and_then(|z| {
            z.find_local_time_type(unix_time)
                .ok()
                .map(|t| t.time_zone_designation().to_uppercase())
        })
        .unwrap_or_else(|| "UTC".into())
}

/// seelog's `%Date %Time ZONE | %LEVEL | (%File:%Line) |  %Msg` as go-metro configures it.
struct GoMetroFormat {
    zone: String,
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
            self.zone,
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
    fn zones_print_as_go_names_them() {
        // 2026-01-15 and 2026-07-15, noon UTC.
        let (winter, summer) = (1_768_478_400, 1_784_116_800);
        let with_tz = |tz: Option<&str>, t: i64| {
            match tz {
                Some(v) => std::env::set_var("TZ", v),
                None => std::env::remove_var("TZ"),
            }
            zone_name(t)
        };
        let saved = std::env::var_os("TZ");
        let got = [
            with_tz(Some("Europe/Paris"), winter),
            with_tz(Some(":Europe/Paris"), summer),
            with_tz(Some("/usr/share/zoneinfo/America/New_York"), winter),
            with_tz(Some("Asia/Dubai"), winter),
            with_tz(Some(""), winter),
            with_tz(Some("UTC"), winter),
            with_tz(Some("No/Such_Zone"), winter),
            with_tz(Some("CET-1CEST"), winter),
        ];
        match saved {
            Some(v) => std::env::set_var("TZ", v),
            None => std::env::remove_var("TZ"),
        }
        // Dubai has no letters of its own: its abbreviation is the offset, as Go prints it.
        assert_eq!(
            got,
            ["CET", "CEST", "EST", "+04", "UTC", "UTC", "UTC", "UTC"].map(String::from)
        );
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn file_log_rolls_as_seelog_numbering_the_newest_highest_and_keeping_5() {
        let dir = std::env::temp_dir().join(format!("metro-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("go-metro.log");
        let (log, _) = Logger::buffer(LogLevel::Info);
        log.to_file(&path).unwrap();
        let line = "y".repeat(999);
        let write = |from: usize, to: usize, tag: &str| {
            tracing::subscriber::with_default(log.subscriber(), || {
                for i in from..to {
                    tracing::warn!("{tag}{i:04} {line}");
                }
            });
        };
        write(0, 1, "a");
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        // A file takes lines until it holds 100,000 bytes or more; the next line rolls it.
        let per_file = 100_000_usize.div_ceil(len);
        write(1, per_file * 3 + 1, "a");
        assert_eq!(
            listing(path.parent().unwrap()),
            [
                "go-metro.log",
                "go-metro.log.1",
                "go-metro.log.2",
                "go-metro.log.3"
            ]
        );
        let first = std::fs::read_to_string(dir.join("sub/go-metro.log.1")).unwrap();
        assert!(
            first.lines().next().unwrap().contains("a0000 "),
            "the oldest is .1"
        );
        assert_eq!(first.lines().count(), per_file);
        let size = std::fs::metadata(dir.join("sub/go-metro.log.1"))
            .unwrap()
            .len() as usize;
        assert!((100_000..100_000 + len).contains(&size), "{size}");
        write(0, per_file * 4, "b");
        assert_eq!(
            listing(path.parent().unwrap()),
            [
                "go-metro.log",
                "go-metro.log.3",
                "go-metro.log.4",
                "go-metro.log.5",
                "go-metro.log.6",
                "go-metro.log.7"
            ]
        );
        let newest = std::fs::read_to_string(dir.join("sub/go-metro.log.7")).unwrap();
        let before_last = format!("b{:04} ", per_file * 4 - 2);
        assert!(newest.lines().next_back().unwrap().contains(&before_last));
        let current = std::fs::read_to_string(&path).unwrap();
        assert_eq!(current.lines().count(), 1);
        assert!(current.contains(&format!("b{:04} ", per_file * 4 - 1)));
        log.to_stderr();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_log_path_is_an_error_not_a_panic() {
        let (log, _) = Logger::buffer(LogLevel::Info);
        assert!(log.to_file(Path::new("/proc/metro/go-metro.log")).is_err());
    }
}
