//! /proc/PID/status and /proc/PID/statm: the counters `top` shows.
//!
//! These are the kernel's per-mm RSS counters: cheap (a few µs) but they count
//! page-table entries, so a page mapped N times counts N times. That is
//! exactly what makes repeated shared-memory mappings visible as RES and SHR
//! growth while PSS stays flat.

/// Selected fields of /proc/PID/status, converted to bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub state: char,
    pub ppid: u32,
    pub tracer_pid: u32,
    /// Real uid.
    pub uid: u32,
    pub vm_peak: u64,
    pub vm_size: u64,
    pub vm_hwm: u64,
    pub vm_rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub vm_data: u64,
    pub vm_stk: u64,
    pub vm_swap: u64,
    pub threads: u32,
    /// `Kthread: 1` on kernels that print it.
    pub kthread: bool,
}

impl Status {
    pub fn parse(bytes: &[u8]) -> Status {
        let mut s = Status::default();
        for line in bytes.split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let key = &line[..colon];
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            let value = value.trim();
            let kb = || kb_value(value);
            match key {
                b"Name" => s.name = value.to_string(),
                b"State" => s.state = value.chars().next().unwrap_or('?'),
                b"PPid" => s.ppid = value.parse().unwrap_or(0),
                b"TracerPid" => s.tracer_pid = value.parse().unwrap_or(0),
                b"Uid" => {
                    s.uid = value
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                }
                b"VmPeak" => s.vm_peak = kb(),
                b"VmSize" => s.vm_size = kb(),
                b"VmHWM" => s.vm_hwm = kb(),
                b"VmRSS" => s.vm_rss = kb(),
                b"RssAnon" => s.rss_anon = kb(),
                b"RssFile" => s.rss_file = kb(),
                b"RssShmem" => s.rss_shmem = kb(),
                b"VmData" => s.vm_data = kb(),
                b"VmStk" => s.vm_stk = kb(),
                b"VmSwap" => s.vm_swap = kb(),
                b"Threads" => s.threads = value.parse().unwrap_or(0),
                b"Kthread" => s.kthread = value == "1",
                _ => {}
            }
        }
        s
    }
}

/// "1234 kB" → bytes; anything unparsable is 0.
fn kb_value(value: &str) -> u64 {
    let digits = value.trim_end_matches("kB").trim();
    digits.parse::<u64>().unwrap_or(0).saturating_mul(1024)
}

/// /proc/PID/statm, in pages as the kernel prints it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Statm {
    /// VIRT.
    pub size: u64,
    /// RES.
    pub resident: u64,
    /// SHR = RssFile + RssShmem.
    pub shared: u64,
    pub text: u64,
    pub data: u64,
}

impl Statm {
    pub fn parse(bytes: &[u8]) -> Statm {
        let text = String::from_utf8_lossy(bytes);
        let mut it = text
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        let mut next = || it.next().unwrap_or(0);
        let (size, resident, shared, text, _lib, data) =
            (next(), next(), next(), next(), next(), next());
        Statm {
            size,
            resident,
            shared,
            text,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields_in_bytes() {
        let raw = b"Name:\tpython3.11\nState:\tS (sleeping)\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n\
VmSize:\t  34476 kB\nVmRSS:\t   33376 kB\nRssAnon:\t     104 kB\nRssFile:\t    1000 kB\nRssShmem:\t   32272 kB\nVmSwap:\t       0 kB\nThreads:\t3\n";
        let s = Status::parse(raw);
        assert_eq!(s.name, "python3.11");
        assert_eq!(s.state, 'S');
        assert_eq!(s.uid, 1000);
        assert_eq!(s.vm_size, 34476 * 1024);
        assert_eq!(s.vm_rss, 33376 * 1024);
        assert_eq!(s.rss_anon + s.rss_file + s.rss_shmem, s.vm_rss);
        assert_eq!(s.threads, 3);
    }

    #[test]
    fn tolerates_garbage() {
        let s = Status::parse(b"VmRSS:\tlots kB\n\xff\xfe:\x00\nThreads:\n");
        assert_eq!(s.vm_rss, 0);
        assert_eq!(Statm::parse(b"not numbers"), Statm::default());
        assert_eq!(Statm::parse(b"10 5 3 1 0 2 0").resident, 5);
    }
}
