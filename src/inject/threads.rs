//! What each thread of a process is doing, from /proc alone: no ptrace stop.
//!
//! `/proc/PID/task/TID/syscall` tells whether a thread is blocked in a system
//! call, which one, its arguments, and its stack pointer and program counter.
//! The kernel fills it in only for threads that are not on a CPU ("running")
//! and only for a reader allowed to ptrace the process (else: Unknown).
//!
//! The syscall numbers are x86_64's. A thread blocked in one of the
//! [safe syscalls](is_safe_syscall) waits for I/O or time with the GIL
//! released, so it holds no lock of its own that matters; a thread in `futex`
//! may be inside malloc, the loader, stdio or waiting for the GIL, so calls
//! are never made on it.

use std::io;

/// One thread of a process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ThreadInfo {
    pub tid: u32,
    /// `comm` of the thread (what `threading` names show up as, with
    /// `prctl(PR_SET_NAME)`; otherwise the program name).
    pub name: String,
    /// The state letter of /proc/TID/stat: R, S, D, T, t, Z...
    pub state: char,
    /// The thread whose tid is the pid: CPython's main thread.
    pub is_main: bool,
    pub activity: Activity,
}

/// What a thread is doing, from /proc/PID/task/TID/syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Activity {
    /// On a CPU right now: running user code (or a syscall that does not sleep).
    Running,
    /// Blocked in (or returning from) a system call.
    Syscall {
        nr: i64,
        args: [u64; 6],
        sp: u64,
        pc: u64,
    },
    /// Off CPU but not in a system call (preempted, or stopped).
    NotInSyscall { sp: u64, pc: u64 },
    /// The file could not be read (permission, thread gone) or parsed.
    Unknown,
}

impl Activity {
    /// Parses the contents of /proc/PID/task/TID/syscall:
    /// `running`, `-1 SP PC`, or `NR A1 A2 A3 A4 A5 A6 SP PC` (NR decimal,
    /// the rest hex with a 0x prefix).
    pub fn parse(text: &str) -> Activity {
        let text = text.trim();
        if text == "running" {
            return Activity::Running;
        }
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let Some(nr) = fields.first().and_then(|f| f.parse::<i64>().ok()) else {
            return Activity::Unknown;
        };
        let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok();
        let values: Option<Vec<u64>> = fields[1..].iter().map(|f| hex(f)).collect();
        let Some(values) = values else {
            return Activity::Unknown;
        };
        match (nr, values.len()) {
            (-1, 2) => Activity::NotInSyscall {
                sp: values[0],
                pc: values[1],
            },
            (nr, 8) if nr >= 0 => {
                let mut args = [0u64; 6];
                args.copy_from_slice(&values[..6]);
                Activity::Syscall {
                    nr,
                    args,
                    sp: values[6],
                    pc: values[7],
                }
            }
            _ => Activity::Unknown,
        }
    }

    pub fn syscall_nr(&self) -> Option<i64> {
        match self {
            Activity::Syscall { nr, .. } => Some(*nr),
            _ => None,
        }
    }

    /// Blocked in a syscall after which calling into the interpreter is safe.
    pub fn in_safe_syscall(&self) -> bool {
        self.syscall_nr().is_some_and(is_safe_syscall)
    }
}

impl ThreadInfo {
    /// "sleeping in clock_nanosleep", "waiting on a lock (futex)", "running (user code)".
    pub fn describe(&self) -> String {
        describe_activity(&self.activity, self.state)
    }
}

/// A human description of what a thread does.
pub fn describe_activity(activity: &Activity, state: char) -> String {
    match activity {
        Activity::Running => "running (user code)".to_owned(),
        Activity::NotInSyscall { .. } if state == 'T' || state == 't' => "stopped".to_owned(),
        Activity::NotInSyscall { .. } => "running (user code, preempted)".to_owned(),
        Activity::Unknown if state == 'R' => "running".to_owned(),
        Activity::Unknown if state == 'Z' || state == 'X' => "exited".to_owned(),
        Activity::Unknown => format!("unknown (state {state})"),
        Activity::Syscall { nr, .. } => describe_syscall(*nr),
    }
}

fn describe_syscall(nr: i64) -> String {
    let name = syscall_name(nr);
    match nr {
        NR_NANOSLEEP | NR_CLOCK_NANOSLEEP => format!("sleeping in {name}"),
        NR_SELECT | NR_PSELECT6 | NR_POLL | NR_PPOLL | NR_EPOLL_WAIT | NR_EPOLL_PWAIT
        | NR_EPOLL_PWAIT2 => {
            format!("waiting for I/O or a timeout ({name})")
        }
        NR_READ | NR_READV | NR_PREAD64 => format!("waiting to read ({name})"),
        NR_RECVFROM | NR_RECVMSG | NR_RECVMMSG => format!("waiting for network data ({name})"),
        NR_ACCEPT | NR_ACCEPT4 => format!("waiting for a connection ({name})"),
        NR_WAIT4 | NR_WAITID => format!("waiting for a child process ({name})"),
        NR_FUTEX => "waiting on a lock (futex)".to_owned(),
        NR_RESTART_SYSCALL => "resuming an interrupted wait (restart_syscall)".to_owned(),
        NR_WRITE | NR_WRITEV | NR_SENDTO | NR_SENDMSG => format!("writing ({name})"),
        NR_CONNECT => "connecting (connect)".to_owned(),
        NR_PAUSE | NR_RT_SIGSUSPEND | NR_RT_SIGTIMEDWAIT => {
            format!("waiting for a signal ({name})")
        }
        _ => format!("in system call {name}"),
    }
}

pub const NR_READ: i64 = 0;
pub const NR_WRITE: i64 = 1;
pub const NR_POLL: i64 = 7;
pub const NR_MMAP: i64 = 9;
pub const NR_MPROTECT: i64 = 10;
pub const NR_MUNMAP: i64 = 11;
pub const NR_BRK: i64 = 12;
pub const NR_PREAD64: i64 = 17;
pub const NR_READV: i64 = 19;
pub const NR_WRITEV: i64 = 20;
pub const NR_SELECT: i64 = 23;
pub const NR_SCHED_YIELD: i64 = 24;
pub const NR_MADVISE: i64 = 28;
pub const NR_PAUSE: i64 = 34;
pub const NR_NANOSLEEP: i64 = 35;
pub const NR_CONNECT: i64 = 42;
pub const NR_ACCEPT: i64 = 43;
pub const NR_SENDTO: i64 = 44;
pub const NR_RECVFROM: i64 = 45;
pub const NR_SENDMSG: i64 = 46;
pub const NR_RECVMSG: i64 = 47;
pub const NR_WAIT4: i64 = 61;
pub const NR_RT_SIGTIMEDWAIT: i64 = 128;
pub const NR_RT_SIGSUSPEND: i64 = 130;
pub const NR_FUTEX: i64 = 202;
pub const NR_RESTART_SYSCALL: i64 = 219;
pub const NR_CLOCK_NANOSLEEP: i64 = 230;
pub const NR_EPOLL_WAIT: i64 = 232;
pub const NR_WAITID: i64 = 247;
pub const NR_PSELECT6: i64 = 270;
pub const NR_PPOLL: i64 = 271;
pub const NR_EPOLL_PWAIT: i64 = 281;
pub const NR_ACCEPT4: i64 = 288;
pub const NR_RECVMMSG: i64 = 299;
pub const NR_EPOLL_PWAIT2: i64 = 441;

/// The x86_64 name of a syscall number, for the ones a Python process is
/// seen blocked in; "syscall" for the rest.
pub fn syscall_name(nr: i64) -> &'static str {
    match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        7 => "poll",
        9 => "mmap",
        10 => "mprotect",
        11 => "munmap",
        12 => "brk",
        13 => "rt_sigaction",
        14 => "rt_sigprocmask",
        16 => "ioctl",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        24 => "sched_yield",
        25 => "mremap",
        26 => "msync",
        28 => "madvise",
        34 => "pause",
        35 => "nanosleep",
        40 => "sendfile",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        56 => "clone",
        57 => "fork",
        58 => "vfork",
        59 => "execve",
        61 => "wait4",
        64 => "semget",
        65 => "semop",
        69 => "msgsnd",
        70 => "msgrcv",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        208 => "io_getevents",
        219 => "restart_syscall",
        220 => "semtimedop",
        228 => "clock_gettime",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        275 => "splice",
        281 => "epoll_pwait",
        288 => "accept4",
        299 => "recvmmsg",
        307 => "sendmmsg",
        318 => "getrandom",
        426 => "io_uring_enter",
        435 => "clone3",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => "syscall",
    }
}

/// Syscalls after which running interpreter code on the thread is safe: it
/// waits for time, I/O, a connection or a child, which CPython (and sane C
/// code) does with the GIL released and no allocator or loader lock held.
///
/// Deliberately absent: `futex` (malloc arena locks, the GIL, loader and stdio
/// locks all wait there), `mmap`/`munmap`/`brk`/`madvise`/`mprotect` (called
/// from inside malloc, with its lock held), `sched_yield` (spin locks), and
/// `restart_syscall` (the continuation of *any* interrupted wait, a futex
/// included: it needs the program counter to tell).
pub fn is_safe_syscall(nr: i64) -> bool {
    matches!(
        nr,
        NR_NANOSLEEP
            | NR_CLOCK_NANOSLEEP
            | NR_SELECT
            | NR_PSELECT6
            | NR_POLL
            | NR_PPOLL
            | NR_EPOLL_WAIT
            | NR_EPOLL_PWAIT
            | NR_EPOLL_PWAIT2
            | NR_READ
            | NR_READV
            | NR_PREAD64
            | NR_RECVFROM
            | NR_RECVMSG
            | NR_RECVMMSG
            | NR_ACCEPT
            | NR_ACCEPT4
            | NR_WAIT4
            | NR_WAITID
    )
}

/// What one thread was doing when an injection gave up, for the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ThreadReport {
    pub tid: u32,
    pub name: String,
    pub is_main: bool,
    pub activity: Activity,
    /// Whether the thread held the GIL when probed (None: not probed).
    pub holds_gil: Option<bool>,
    /// "sleeping in clock_nanosleep", "sleeping in clock_nanosleep while
    /// holding the GIL (stuck in C code)", ...
    pub description: String,
}

impl ThreadReport {
    pub fn new(info: &ThreadInfo, holds_gil: Option<bool>) -> ThreadReport {
        let mut description = info.describe();
        if holds_gil == Some(true) {
            description.push_str(match info.activity {
                // Blocking with the GIL held: only C code does that.
                Activity::Syscall { .. } => {
                    " while holding the GIL (C code that did not release it)"
                }
                _ => " and holds the GIL",
            });
        }
        ThreadReport {
            tid: info.tid,
            name: info.name.clone(),
            is_main: info.is_main,
            activity: info.activity,
            holds_gil,
            description,
        }
    }
}

impl std::fmt::Display for ThreadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let main = if self.is_main { ", main thread" } else { "" };
        write!(
            f,
            "thread {} ({}{}): {}",
            self.tid, self.name, main, self.description
        )
    }
}

/// Reads the thread facts of one thread; None if it vanished.
pub fn read(pid: u32, tid: u32) -> Option<ThreadInfo> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let stat = std::fs::read(format!("{dir}/stat")).ok()?;
    let (name, state) = parse_stat(&stat)?;
    let activity = match std::fs::read(format!("{dir}/syscall")) {
        Ok(bytes) => Activity::parse(&String::from_utf8_lossy(&bytes)),
        Err(_) => Activity::Unknown,
    };
    Some(ThreadInfo {
        tid,
        name,
        state,
        is_main: tid == pid,
        activity,
    })
}

/// All threads of a process, main thread first, then by tid. Threads that
/// exit while being read are left out.
pub fn list(pid: u32) -> io::Result<Vec<ThreadInfo>> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .collect();
    tids.sort_unstable_by_key(|&t| (t != pid, t));
    let threads: Vec<ThreadInfo> = tids.into_iter().filter_map(|tid| read(pid, tid)).collect();
    if threads.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} has no threads left"),
        ));
    }
    Ok(threads)
}

/// `tid (comm) S ...`: the name may contain spaces and parentheses, so it
/// ends at the last ')'.
fn parse_stat(bytes: &[u8]) -> Option<(String, char)> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let name = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let state = bytes
        .get(close + 1..)?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .map(|&b| b as char)?;
    Some((name, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Activity::parse("running\n"), Activity::Running);
        assert_eq!(
            Activity::parse("-1 0x7ffd0a1b2c30 0x7f1234567890\n"),
            Activity::NotInSyscall {
                sp: 0x7ffd0a1b2c30,
                pc: 0x7f1234567890
            }
        );
        let a = Activity::parse(
            "230 0x1 0x1 0x7ffe2bd5e6d0 0x0 0x0 0x0 0x7ffe2bd5e698 0x7f3c1a8e6ea5\n",
        );
        assert_eq!(
            a,
            Activity::Syscall {
                nr: 230,
                args: [1, 1, 0x7ffe2bd5e6d0, 0, 0, 0],
                sp: 0x7ffe2bd5e698,
                pc: 0x7f3c1a8e6ea5
            }
        );
        assert!(a.in_safe_syscall());
        assert_eq!(describe_activity(&a, 'S'), "sleeping in clock_nanosleep");
    }

    #[test]
    fn junk_is_unknown_not_a_panic() {
        for junk in [
            "",
            "x",
            "12",
            "-1 0x1",
            "202 0x1 0x2",
            "202 zz 0 0 0 0 0 0 0",
            "-5 0x1 0x2",
            "running now",
        ] {
            assert_eq!(Activity::parse(junk), Activity::Unknown, "{junk:?}");
        }
    }

    #[test]
    fn safe_set_is_exactly_the_waits() {
        for nr in [
            35, 230, 23, 270, 7, 271, 232, 281, 441, 0, 19, 17, 45, 47, 299, 43, 288, 61, 247,
        ] {
            assert!(is_safe_syscall(nr), "{} should be safe", syscall_name(nr));
        }
        for nr in [202, 9, 11, 12, 28, 10, 24, 219, 1, -1] {
            assert!(
                !is_safe_syscall(nr),
                "{} must not be safe",
                syscall_name(nr)
            );
        }
        assert_eq!(describe_syscall(202), "waiting on a lock (futex)");
        assert_eq!(
            describe_activity(&Activity::Running, 'R'),
            "running (user code)"
        );
    }

    #[test]
    fn stat_names_with_parens() {
        assert_eq!(
            parse_stat(b"123 (a) b)) S 1 2 3"),
            Some(("a) b)".to_owned(), 'S'))
        );
        assert_eq!(
            parse_stat(b"123 (python3) R 1"),
            Some(("python3".to_owned(), 'R'))
        );
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x)"), None);
    }

    #[test]
    fn lists_our_own_threads() {
        let pid = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("waiter".into())
            .spawn(move || rx.recv())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let threads = list(pid).unwrap();
        assert!(threads[0].is_main && threads[0].tid == pid);
        let waiter = threads
            .iter()
            .find(|t| t.name == "waiter")
            .expect("named thread listed");
        assert!(!waiter.is_main);
        // Blocked on the channel: a futex wait, never "safe".
        if let Activity::Syscall { nr, .. } = waiter.activity {
            assert_eq!(nr, NR_FUTEX);
            assert!(!waiter.activity.in_safe_syscall());
        }
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }
}
