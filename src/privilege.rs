//! Least privilege: the capabilities, user and system calls metro keeps once it is set up.
//!
//! metro parses traffic that anyone on the network can shape, so a bug in a parser must find as
//! little power as possible behind it. Three layers, applied in this order while the process
//! still has one thread (capabilities and the user are per thread; threads created later
//! inherit them):
//!
//! 1. **Capabilities** ([`drop_privileges`]). Live capture keeps CAP_NET_RAW alone — the only
//!    one that opening, binding, joining a fanout group, mapping a ring and promiscuous mode
//!    (`PACKET_ADD_MEMBERSHIP`) need, so go-metro mode can still capture an interface that is
//!    re-created — in its effective and permitted sets; the inheritable and ambient sets are
//!    cleared, and the bounding set is cut down to CAP_NET_RAW when the process may (it takes
//!    CAP_SETPCAP, which root has and a binary with `cap_net_raw+ep` does not). Offline, every
//!    capability goes before the capture file is opened. `PR_SET_NO_NEW_PRIVS` is set either
//!    way, so no program metro could be made to run gains anything.
//! 2. **The user** (`--user`, `user:`). As `tcpdump -Z` does, metro switches to that user, its
//!    group and its supplementary groups, keeping CAP_NET_RAW across the switch
//!    (`PR_SET_KEEPCAPS`, then CAP_NET_RAW raised again). Files opened before (the log, a plot)
//!    stay open; the log's directory must be writable by that user for rotation.
//! 3. **System calls** ([`confine_process`], [`confine_worker`]): a seccomp filter for the
//!    whole process allows only the calls metro makes once it runs (found with `strace -f` on
//!    every mode: ad hoc live with a plot, go-metro mode with DogStatsD, log rotation, name
//!    lookups and a re-created interface, offline reading, shutdown on a signal), and capture
//!    workers, which parse the packets, add a narrower one of their own: memory, time, waiting
//!    on their socket, handing intervals over and logging. Any other call kills the process
//!    (`SECCOMP_RET_KILL_PROCESS`, status 159, SIGSYS): it cannot hang, and the kernel logs it.
//!    `--seccomp log` lets such calls through and has the kernel log them instead, `--seccomp
//!    off` installs nothing (for debugging).
//!
//! What this module does not do: open sockets or files (that happens before, in
//! [`crate::live`] and [`crate::capture`]), or decide when setup is done (the callers in the
//! binary and [`crate::daemon`] do).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicU8, Ordering};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What the seccomp filters do with a call they do not allow (`--seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Seccomp {
    /// Kill the process (SIGSYS, exit status 159); the kernel logs the call.
    Kill,
    /// Allow the call and have the kernel log it (for finding a missing call).
    Log,
    /// Install no filter.
    Off,
}

/// Which capabilities a mode keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// CAP_NET_RAW, to capture (and capture again a re-created interface).
    NetRaw,
    /// Nothing: reading files needs no capability.
    Nothing,
}

/// Why privileges could not be dropped or the filter installed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `--user` names nobody.
    #[error("--user {0}: no such user (name one from /etc/passwd, e.g. one made for metro)")]
    NoSuchUser(String),
    /// Switching user needs CAP_SETUID and CAP_SETGID.
    #[error(
        "--user {0}: switching user needs root (CAP_SETUID and CAP_SETGID); run metro as root, \
         or leave --user out"
    )]
    SwitchNeedsRoot(String),
    /// A system call that changes credentials failed.
    #[error("{op} failed: {detail}; run without --user, or report this as a bug")]
    Credentials {
        /// What was being done.
        op: &'static str,
        /// What the system said.
        detail: String,
    },
    /// A capability set could not be changed.
    #[error("cannot drop capabilities ({0}); this is a bug in metro, please report it")]
    Caps(String),
    /// The seccomp filter could not be built or installed.
    #[error(
        "cannot install the system-call filter ({0}); run with --seccomp off to go without it"
    )]
    Seccomp(String),
}

impl PrivilegeError {
    /// True when the command line or configuration is at fault (exit status 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            PrivilegeError::NoSuchUser(_) | PrivilegeError::SwitchNeedsRoot(_)
        )
    }
}

/// Drops privileges ([`drop_privileges`]) and installs the process filter ([`confine_process`]):
/// what every mode does once its files are open, while the process has one thread.
pub fn lock_down(keep: Keep, user: Option<&str>, seccomp: Seccomp) -> Result<(), PrivilegeError> {
    drop_privileges(keep, user)?;
    confine_process(seccomp)
}

fn caps_err(e: caps::errors::CapsError) -> PrivilegeError {
    PrivilegeError::Caps(e.to_string())
}

fn cred_err(op: &'static str) -> impl Fn(nix::Error) -> PrivilegeError {
    move |e| PrivilegeError::Credentials {
        op,
        detail: e.desc().to_string(),
    }
}

/// Drops every capability but those `keep` names, switches to `user` if given, and sets
/// `PR_SET_NO_NEW_PRIVS`. Call it while the process has one thread: capabilities are per
/// thread, and only threads created afterwards inherit the reduced sets.
///
/// A capability the process does not hold is not kept (an ordinary user without file
/// capabilities keeps nothing, and capture then fails with its own message).
pub fn drop_privileges(keep: Keep, user: Option<&str>) -> Result<(), PrivilegeError> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err)?;
    let mut kept = CapsHashSet::new();
    if keep == Keep::NetRaw && permitted.contains(&Capability::CAP_NET_RAW) {
        kept.insert(Capability::CAP_NET_RAW);
    }
    // The bounding set first: dropping from it takes CAP_SETPCAP, which the rest gives up. A
    // process without it (a file-capability binary run by a user) keeps its bounding set, and
    // relies on NO_NEW_PRIVS: it can never gain what the set would still allow.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(caps_err)? {
        for c in caps::read(None, CapSet::Bounding).map_err(caps_err)? {
            if !kept.contains(&c) {
                caps::drop(None, CapSet::Bounding, c).map_err(caps_err)?;
            }
        }
    }
    if let Some(name) = user {
        switch_user(name)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err)?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err)?;
    // Effective before permitted: the effective set must stay within the permitted one.
    caps::set(None, CapSet::Effective, &kept).map_err(caps_err)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err)?;
    nix::sys::prctl::set_no_new_privs().map_err(cred_err("PR_SET_NO_NEW_PRIVS"))?;
    Ok(())
}

/// Switches to `name`'s user, group and supplementary groups, keeping the permitted
/// capabilities (the caller trims them), and raises CAP_NET_RAW again if it was permitted.
fn switch_user(name: &str) -> Result<(), PrivilegeError> {
    let u = User::from_name(name)
        .map_err(cred_err("looking the user up"))?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_string()))?;
    if u.uid == Uid::current() && u.gid == Gid::current() {
        return Ok(());
    }
    let effective = caps::read(None, CapSet::Effective).map_err(caps_err)?;
    if !effective.contains(&Capability::CAP_SETUID) || !effective.contains(&Capability::CAP_SETGID)
    {
        return Err(PrivilegeError::SwitchNeedsRoot(name.to_string()));
    }
    let cname = CString::new(name).map_err(|_| PrivilegeError::NoSuchUser(name.to_string()))?;
    let mut groups =
        nix::unistd::getgrouplist(&cname, u.gid).map_err(cred_err("reading the user's groups"))?;
    if !groups.contains(&u.gid) {
        groups.push(u.gid);
    }
    nix::unistd::setgroups(&groups).map_err(cred_err("setgroups"))?;
    nix::unistd::setgid(u.gid).map_err(cred_err("setgid"))?;
    // Without KEEPCAPS, leaving uid 0 clears the permitted set; with it, only the effective one.
    caps::securebits::set_keepcaps(true).map_err(caps_err)?;
    let switched = nix::unistd::setuid(u.uid).map_err(cred_err("setuid"));
    caps::securebits::set_keepcaps(false).map_err(caps_err)?;
    switched?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err)?;
    if permitted.contains(&Capability::CAP_NET_RAW) {
        caps::raise(None, CapSet::Effective, Capability::CAP_NET_RAW).map_err(caps_err)?;
    }
    Ok(())
}

/// The mode the process filter was installed in; workers install theirs in the same mode.
/// 0: none installed.
static CONFINED: AtomicU8 = AtomicU8::new(0);

fn action(mode: Seccomp) -> SeccompAction {
    match mode {
        Seccomp::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    }
}

/// Installs the process-wide filter on every thread (`SECCOMP_FILTER_FLAG_TSYNC`); threads
/// created later inherit it. Installed once: later calls do nothing.
pub fn confine_process(mode: Seccomp) -> Result<(), PrivilegeError> {
    if mode == Seccomp::Off || CONFINED.load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    let prog = compile(process_rules()?, mode)?;
    seccompiler::apply_filter_all_threads(&prog)
        .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    // clone3 passes its flags in memory, where a filter cannot read them: it fails with ENOSYS,
    // and the C library falls back to clone, whose flags the filter checks (threads only).
    let mut clone3 = BTreeMap::new();
    allow(&mut clone3, &[libc::SYS_clone3]);
    let no_clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    let prog: BpfProgram = no_clone3
        .try_into()
        .map_err(|e: seccompiler::BackendError| PrivilegeError::Seccomp(e.to_string()))?;
    seccompiler::apply_filter_all_threads(&prog)
        .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    CONFINED.store(mode as u8 + 1, Ordering::Release);
    Ok(())
}

/// Adds the capture workers' narrower filter to the calling thread, in the mode of the process
/// filter; nothing when the process is not confined (`--seccomp off`, or a library caller).
pub fn confine_worker() -> Result<(), PrivilegeError> {
    let mode = match CONFINED.load(Ordering::Acquire) {
        0 => return Ok(()),
        1 => Seccomp::Kill,
        _ => Seccomp::Log,
    };
    let prog = compile(worker_rules(), mode)?;
    seccompiler::apply_filter(&prog).map_err(|e| PrivilegeError::Seccomp(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mode: Seccomp,
) -> Result<BpfProgram, PrivilegeError> {
    let filter = SeccompFilter::new(rules, action(mode), SeccompAction::Allow, arch()?)
        .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| PrivilegeError::Seccomp(e.to_string()))
}

fn arch() -> Result<TargetArch, PrivilegeError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| PrivilegeError::Seccomp(format!("{e:?}")))
}

/// Calls allowed whatever their arguments.
fn allow(rules: &mut BTreeMap<i64, Vec<SeccompRule>>, calls: &[libc::c_long]) {
    for &c in calls {
        rules.insert(c, Vec::new());
    }
}

/// A call allowed when argument `arg` equals one of `values`.
fn allow_arg(
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
    call: libc::c_long,
    arg: u8,
    values: &[u64],
) -> Result<(), PrivilegeError> {
    let mut v = Vec::new();
    for &val in values {
        let cond = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, val)
            .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
        v.push(SeccompRule::new(vec![cond]).map_err(|e| PrivilegeError::Seccomp(e.to_string()))?);
    }
    rules.insert(call, v);
    Ok(())
}

/// Memory, time, futexes, signals masks, thread exit and logging (to standard error, or to the
/// rotated log file: rotation renames, creates and removes files in the log's directory, and
/// the first line of a thread reads the time zone): what every thread may do.
fn common_calls() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_lseek,
        libc::SYS_close,
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_getdents64,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_unlinkat,
        libc::SYS_mkdirat,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_ftruncate,
        libc::SYS_readlinkat,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // An abort (a panic while panicking) raises SIGABRT at itself.
        libc::SYS_tgkill,
        // A thread stacking a narrower filter of its own.
        libc::SYS_seccomp,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_rename,
        libc::SYS_unlink,
        libc::SYS_mkdir,
        libc::SYS_readlink,
        libc::SYS_access,
        libc::SYS_time,
    ]);
    v
}

/// `prctl` options: naming a thread, and NO_NEW_PRIVS before a thread stacks its filter.
const PRCTL_OPTIONS: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
    libc::PR_GET_NO_NEW_PRIVS as u64,
];

/// The whole process once it runs: [`common_calls`], and sockets of the families metro uses
/// (packet sockets and rings, again for a re-created interface; netlink and `ioctl` to watch
/// interfaces; UDP for DogStatsD; TCP for the Prometheus endpoint; name lookups), threads, sleeping and waiting for signals.
fn process_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, PrivilegeError> {
    let mut r = BTreeMap::new();
    allow(&mut r, &common_calls());
    allow(
        &mut r,
        &[
            libc::SYS_bind,
            libc::SYS_connect,
            // The Prometheus endpoint's listening socket.
            libc::SYS_listen,
            libc::SYS_accept4,
            libc::SYS_getsockname,
            libc::SYS_getpeername,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_recvmmsg,
            libc::SYS_shutdown,
            libc::SYS_ppoll,
            libc::SYS_pselect6,
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_fcntl,
            libc::SYS_dup,
            libc::SYS_pipe2,
            libc::SYS_eventfd2,
            libc::SYS_uname,
            libc::SYS_clone3,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sched_getaffinity,
            libc::SYS_sched_setaffinity,
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigreturn,
            libc::SYS_getuid,
            libc::SYS_geteuid,
            libc::SYS_getgid,
            libc::SYS_getegid,
            libc::SYS_capget,
            libc::SYS_prlimit64,
            libc::SYS_sysinfo,
        ],
    );
    #[cfg(target_arch = "x86_64")]
    allow(
        &mut r,
        &[
            libc::SYS_poll,
            libc::SYS_select,
            libc::SYS_epoll_wait,
            libc::SYS_pipe,
        ],
    );
    #[cfg(not(target_arch = "x86_64"))]
    allow(&mut r, &[libc::SYS_ppoll]);
    // Sockets of these families only: Unix (name service), IPv4 and IPv6 (DogStatsD, lookups),
    // netlink (the interface's addresses), packet (capture).
    allow_arg(
        &mut r,
        libc::SYS_socket,
        0,
        &[
            libc::AF_UNIX as u64,
            libc::AF_INET as u64,
            libc::AF_INET6 as u64,
            libc::AF_NETLINK as u64,
            libc::AF_PACKET as u64,
        ],
    )?;
    // Interface index, flags, name and list; terminal and non-blocking queries; bytes waiting
    // on a socket (the resolver asks before reading a reply).
    allow_arg(
        &mut r,
        libc::SYS_ioctl,
        1,
        &[
            libc::SIOCGIFINDEX,
            libc::SIOCGIFFLAGS,
            libc::SIOCGIFNAME,
            libc::TCGETS,
            libc::SIOCGIFCONF,
            libc::FIONBIO,
            libc::FIOCLEX,
            libc::FIONREAD,
        ],
    )?;
    allow_arg(&mut r, libc::SYS_prctl, 0, PRCTL_OPTIONS)?;
    // Threads only (CLONE_THREAD set), never a new process.
    let thread = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )
    .map_err(|e| PrivilegeError::Seccomp(e.to_string()))?;
    r.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![thread]).map_err(|e| PrivilegeError::Seccomp(e.to_string()))?],
    );
    Ok(r)
}

/// A capture worker once its ring is set up: [`common_calls`], waiting on its socket and reading
/// its pending error, and handing intervals over (futexes). No socket, no thread, no `ioctl`.
fn worker_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut r = BTreeMap::new();
    allow(&mut r, &common_calls());
    allow(&mut r, &[libc::SYS_ppoll, libc::SYS_getsockopt]);
    #[cfg(target_arch = "x86_64")]
    allow(&mut r, &[libc::SYS_poll]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_for_this_machine() {
        let p = compile(process_rules().unwrap(), Seccomp::Kill).unwrap();
        assert!(p.len() > 50);
        let w = compile(worker_rules(), Seccomp::Log).unwrap();
        assert!(w.len() < p.len());
    }

    #[test]
    fn workers_may_not_open_sockets_or_start_threads() {
        let w = worker_rules();
        for c in [
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_ioctl,
        ] {
            assert!(!w.contains_key(&c), "{c}");
        }
        let p = process_rules().unwrap();
        for c in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_setuid,
        ] {
            assert!(!p.contains_key(&c), "{c}");
        }
    }
}
