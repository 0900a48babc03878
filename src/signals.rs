//! Stop signals, for every mode that runs until stopped.
//!
//! The signals are blocked in every thread (so [`block`] must run before any thread is spawned,
//! and every thread inherits the mask) and taken by one thread with `sigwait`, so no signal
//! handler, and no `unsafe`, is needed. Each signal sets the shared stop flag and is passed on
//! to whoever waits on the returned channel.
//!
//! What this module does not do: decide what a stop means (the live engine and go-metro mode
//! read the flag and report their last interval).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};
use nix::sys::signal::{SigSet, Signal};

/// What live mode stops on: a terminal's Ctrl-C and a service manager's stop.
pub const LIVE: &[Signal] = &[Signal::SIGINT, Signal::SIGTERM];

/// What go-metro stops on.
pub const GO_METRO: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGQUIT,
    Signal::SIGHUP,
];

/// What go-metro logs (at warning level) when `sig` stops it.
pub fn go_metro_words(sig: Signal) -> Option<&'static str> {
    Some(match sig {
        Signal::SIGHUP => "hungup",
        Signal::SIGINT => "sig int caught, shutting down.",
        Signal::SIGTERM => "force stop",
        Signal::SIGQUIT => "stop and core dump",
        _ => return None,
    })
}

/// Blocks `signals` in the calling thread, and so in every thread it spawns from now on.
pub fn block(signals: &[Signal]) -> nix::Result<SigSet> {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(s);
    }
    set.thread_block()?;
    Ok(set)
}

/// Takes the signals of `set` on a thread of its own: each sets `stop` and is sent on the
/// channel. With `second_ends`, a second signal ends the process at once (status 128 + its
/// number), for a user whose first Ctrl-C seems not to work.
pub fn watch(
    set: SigSet,
    stop: Arc<AtomicBool>,
    second_ends: bool,
) -> std::io::Result<Receiver<Signal>> {
    let (tx, rx) = bounded(4);
    std::thread::Builder::new()
        .name("metro-signals".into())
        .spawn(move || {
            let mut seen = 0;
            while let Ok(sig) = set.wait() {
                seen += 1;
                if second_ends && seen > 1 {
                    std::process::exit(128 + sig as i32);
                }
                stop.store(true, Ordering::SeqCst);
                let _ = tx.try_send(sig);
            }
        })?;
    Ok(rx)
}
