//! The memory limit that applies to a process: the tightest `memory.max`
//! (cgroup v2) or `memory.limit_in_bytes` (v1) on its cgroup path up to the
//! root, as seen from our cgroup mount. Absent when unlimited or unreadable.

use std::path::Path;

/// Above this a v1 limit means "unlimited" (the kernel reports a huge page-aligned value).
const V1_UNLIMITED: u64 = 1 << 62;

pub fn memory_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut best: Option<u64> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        if path.contains("..") {
            continue;
        }
        let mut dir = Path::new(path);
        loop {
            let full = Path::new(root)
                .join(dir.strip_prefix("/").unwrap_or(dir))
                .join(file);
            if let Some(v) = read_limit(&full) {
                best = Some(best.map_or(v, |b| b.min(v)));
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }
    best
}

fn read_limit(path: &Path) -> Option<u64> {
    let v: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (v > 0 && v < V1_UNLIMITED).then_some(v)
}
