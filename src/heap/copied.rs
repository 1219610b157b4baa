//! A plain full copy of a live process's writable mappings, for tests and
//! speed measurements of the decoder (the real bulk reader, with pausing,
//! is `heap::snapshot`). Reads outside the copy fall back to lazy reads.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::space::{AddressSpace, CopiedRegions};
use crate::process::Process;

#[doc(hidden)]
pub struct Copied {
    space: CopiedRegions,
    pub bytes: u64,
}

impl Copied {
    /// Copies every readable, writable private mapping of `pid` through
    /// /proc/PID/mem (pages that cannot be read are left as zeros).
    pub fn take(pid: u32) -> std::io::Result<Copied> {
        let proc = Process::open(pid).map_err(std::io::Error::other)?;
        let maps = proc.maps().map_err(std::io::Error::other)?;
        let mem = File::open(format!("/proc/{pid}/mem"))?;
        let mut regions = Vec::new();
        let mut bytes = 0;
        for m in maps {
            if !m.readable() || !m.writable() || m.shared() || m.path.starts_with("[v") {
                continue;
            }
            let mut buf = vec![0u8; m.size() as usize];
            if mem.read_exact_at(&mut buf, m.start).is_err() {
                for (i, page) in buf.chunks_mut(4096).enumerate() {
                    let _ = mem.read_exact_at(page, m.start + 4096 * i as u64);
                }
            }
            bytes += buf.len() as u64;
            regions.push((m.start, buf));
        }
        Ok(Copied {
            space: CopiedRegions::new(pid, regions),
            bytes,
        })
    }
}

impl AddressSpace for Copied {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.space.read(addr, buf)
    }

    fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.space.slice(addr, len)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        self.space.ranges()
    }
}
