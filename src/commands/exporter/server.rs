//! A deliberately small HTTP/1.1 server on std::net: one short-lived
//! thread per connection (at most [`MAX_CONNECTIONS`] at once), a read
//! timeout, a bounded request head, `GET`/`HEAD` of `/metrics`, `/healthz`
//! and `/`, and `Connection: close` on every answer. Prometheus opens one
//! connection per scrape; nothing here needs keep-alive, TLS or an async
//! runtime.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Shared;
use crate::render::prometheus::{Format, encode, fleet};

const MAX_CONNECTIONS: usize = 16;
const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections forever.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            shared.error("http_overload");
            let _ = respond(&stream, 503, "text/plain", b"too many connections\n", false);
            continue;
        }
        let (shared, count) = (shared.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                handle(stream, &shared);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

struct Request {
    method: String,
    path: String,
    accept: Option<String>,
}

/// Reads the request head (up to the blank line); None on timeout, size
/// overflow or garbage.
fn read_head(mut stream: &TcpStream) -> Result<Request, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("http_bad_request"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("http_timeout");
            }
            Err(_) => return Err("http_bad_request"),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err("http_bad_request");
        }
    }
    parse_head(&buf).ok_or("http_bad_request")
}

fn parse_head(buf: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut lines = text.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    let accept = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_string());
    Some(Request {
        method,
        path,
        accept,
    })
}

fn handle(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let req = match read_head(&stream) {
        Ok(r) => r,
        Err(reason) => {
            shared.error(reason);
            if reason == "http_bad_request" {
                let _ = respond(&stream, 400, "text/plain", b"bad request\n", false);
            }
            return;
        }
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        let _ = respond(&stream, 405, "text/plain", b"only GET and HEAD\n", false);
        return;
    }
    let _ = match req.path.as_str() {
        "/metrics" => {
            let format = Format::negotiate(req.accept.as_deref());
            let (procs, me) = shared.snapshot();
            let body = encode(&fleet::families(&procs, &me), format);
            respond(&stream, 200, format.content_type(), body.as_bytes(), head_only)
        }
        "/healthz" => match shared.health() {
            Ok(()) => respond(&stream, 200, "text/plain", b"ok\n", head_only),
            Err(why) => respond(&stream, 503, "text/plain", why.as_bytes(), head_only),
        },
        "/" => respond(
            &stream,
            200,
            "text/html; charset=utf-8",
            b"<html><head><title>memsleuth exporter</title></head><body><h1>memsleuth exporter</h1>\
              <p><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a></p></body></html>\n",
            head_only,
        ),
        _ => respond(&stream, 404, "text/plain", b"not found\n", head_only),
    };
}

fn respond(
    mut stream: &TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let r = parse_head(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: application/openmetrics-text\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
        assert_eq!(r.accept.as_deref(), Some("application/openmetrics-text"));
        assert!(parse_head(b"GET /metrics\r\n\r\n").is_none());
        assert!(parse_head(b"\xff\xfe\r\n\r\n").is_none());
        assert!(parse_head(b"\r\n\r\n").is_none());
    }
}
