//! The tool side of the /proc relay (`src/agent/launch/relay.py`): one
//! connection per target, kept for the rest of the run, serving
//! [`crate::process::relay`]'s reads when the kernel refuses them to us.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::relay::{MAX_RELAY_FILE, Relay};

/// How long one relayed read may take (smaps of a big process: ~1 s).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most fds listed (the relay's answer is bounded by MAX_RELAY_FILE too).
const MAX_FDS: usize = 1 << 20;

pub struct LaunchRelay {
    stream: Mutex<UnixStream>,
}

/// The [`crate::process::relay::Provider`] for launched programs.
pub fn relay_for(pid: u32) -> Option<Arc<dyn Relay>> {
    let sock = super::find(pid)?;
    let stream = sock
        .run(super::RELAY_SOURCE.as_bytes(), super::RELAY_START_TIMEOUT)
        .ok()?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).ok()?;
    Some(Arc::new(LaunchRelay {
        stream: Mutex::new(stream),
    }))
}

impl LaunchRelay {
    fn ask(&self, req: &str) -> io::Result<Vec<u8>> {
        let mut s = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("relay connection poisoned"))?;
        let mut msg = (req.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(req.as_bytes());
        s.write_all(&msg)?;
        let mut head = [0u8; 5];
        s.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as u64;
        if len > MAX_RELAY_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "relay answer over the size limit",
            ));
        }
        // Grows only as bytes arrive: a lying length costs nothing.
        let mut data = Vec::new();
        (&mut *s).take(len).read_to_end(&mut data)?;
        if data.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match head[0] {
            0 => Ok(data),
            errno => Err(io::Error::from_raw_os_error(errno as i32)),
        }
    }
}

impl Relay for LaunchRelay {
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.ask(&format!("read {name}"))
    }

    fn read_link(&self, name: &str) -> io::Result<String> {
        self.ask(&format!("link {name}"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn fds(&self) -> io::Result<Vec<(u32, String)>> {
        let data = self.ask("fds")?;
        Ok(parse_fds(&data))
    }
}

/// `FD TARGET` lines; anything malformed is skipped.
fn parse_fds(data: &[u8]) -> Vec<(u32, String)> {
    data.split(|&b| b == b'\n')
        .filter_map(|line| {
            let sp = line.iter().position(|&b| b == b' ')?;
            let fd = std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?;
            Some((fd, String::from_utf8_lossy(&line[sp + 1..]).into_owned()))
        })
        .take(MAX_FDS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_lines_parse_and_junk_is_skipped() {
        let v = parse_fds(b"0 /dev/null\n3 socket:[12]\nx y\n\n7 pipe:[9] with space");
        assert_eq!(
            v,
            vec![
                (0, "/dev/null".to_string()),
                (3, "socket:[12]".to_string()),
                (7, "pipe:[9] with space".to_string())
            ]
        );
    }
}
