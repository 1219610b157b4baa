//! /proc/PID/stat: state, parent, start time and flags.
//!
//! The command name (field 2) may contain spaces and parentheses, so fields
//! are counted from the *last* ')'.

/// PF_KTHREAD from include/linux/sched.h.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    pub flags: u64,
    pub num_threads: u32,
    /// Clock ticks after boot.
    pub start_time: u64,
    /// Resident pages (same source as statm).
    pub rss_pages: u64,
    /// Address of the main thread's stack start (0 when masked for lack of access).
    pub start_stack: u64,
}

impl Stat {
    pub fn parse(bytes: &[u8]) -> Option<Stat> {
        let text = std::str::from_utf8(bytes).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        if close < open {
            return None;
        }
        let comm = text[open + 1..close].to_string();
        // Fields after comm start at field 3 (state).
        let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let field = |n: usize| -> Option<&str> { rest.get(n.checked_sub(3)?).copied() };
        let num = |n: usize| -> u64 { field(n).and_then(|v| v.parse().ok()).unwrap_or(0) };
        Some(Stat {
            comm,
            state: field(3)?.chars().next()?,
            ppid: num(4) as u32,
            flags: num(9),
            num_threads: num(20) as u32,
            start_time: num(22),
            rss_pages: num(24),
            start_stack: num(28),
        })
    }

    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// Seconds since the process started.
    pub fn age_s(&self, sys: &super::System) -> f64 {
        let started = self.start_time as f64 / sys.clock_ticks as f64;
        (sys.uptime_s - started).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comm_with_parens_and_spaces() {
        let line = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 123456 10000 250 18446744073709551615 1 1 140737 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = Stat::parse(line).unwrap();
        assert_eq!(s.comm, "my (odd) name");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.start_time, 123456);
        assert_eq!(s.rss_pages, 250);
        assert_eq!(s.start_stack, 140737);
        assert!(!s.is_kernel_thread());
    }

    #[test]
    fn kernel_thread_flag_and_garbage() {
        let line = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 10 0 0";
        assert!(Stat::parse(line).unwrap().is_kernel_thread());
        assert!(Stat::parse(b"").is_none());
        assert!(Stat::parse(b") (").is_none());
        assert!(Stat::parse(&[0xff, b'(', b')']).is_none());
    }
}
