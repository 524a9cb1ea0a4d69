//! The HTTP side of `veil kbs serve`: connections accepted on a listener, each read on a
//! thread of its own under a deadline, so that no client, slow or silent, holds up another.
//!
//! One request per connection (`Connection: close`), HTTP/1.1 with a Content-Length body (no
//! chunked bodies: the relay and Trustee's clients send none). Every connection has a total
//! deadline for reading its request (a client that declares 60000 bytes and sends one is cut
//! off when it passes, whatever the pace of its bytes) and a write timeout; at most
//! [`Limits::max_connections`] are served at once, and at most
//! [`Limits::max_connections_per_peer`] from one address; beyond either the client gets 503
//! at once. The request head is parsed with `httparse`; the broker ([`Broker::handle`]) is
//! shared by all threads.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veil_agent::kbs::broker::{self, Broker, Reply};

/// What one client may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to read one whole request (head and body).
    pub read_deadline: Duration,
    /// Time a write of the reply may block.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one address.
    pub max_connections_per_peer: usize,
    /// Largest request head.
    pub max_head: usize,
    /// Largest request body.
    pub max_body: usize,
}

/// The connections being served, by peer address.
#[derive(Default)]
struct Open {
    total: usize,
    by_peer: std::collections::HashMap<IpAddr, usize>,
}

/// A served connection's place in [`Open`], given back when it ends.
struct Slot {
    open: Arc<Mutex<Open>>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open connections");
        open.total -= 1;
        if let Some(n) = open.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

/// Serve `broker` on `listener` for ever; `log` gets one line per request.
pub fn serve(listener: TcpListener, broker: Arc<Broker>, limits: Limits, log: fn(&str)) {
    let open = Arc::new(Mutex::new(Open::default()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Ok(peer) = stream.peer_addr() else { continue };
        let slot = {
            let mut o = open.lock().expect("open connections");
            let from_peer = o.by_peer.get(&peer.ip()).copied().unwrap_or(0);
            if o.total >= limits.max_connections || from_peer >= limits.max_connections_per_peer {
                None
            } else {
                o.total += 1;
                *o.by_peer.entry(peer.ip()).or_insert(0) += 1;
                Some(Slot { open: open.clone(), peer: peer.ip() })
            }
        };
        let broker = broker.clone();
        let spawned = std::thread::Builder::new().name(format!("kbs {peer}")).spawn(move || match slot {
            Some(_slot) => connection(stream, peer, &broker, &limits, log),
            None => {
                log(&format!("{peer}: refused (503): too many connections open"));
                let reply = plain(503, "too many connections: try again");
                let _ = respond(stream, &reply, &limits);
            }
        });
        if spawned.is_err() {
            log("could not start a thread for a connection");
        }
    }
}

/// A reply that is not the broker's (HTTP-level refusals).
fn plain(status: u16, detail: &str) -> Reply {
    let body = serde_json::to_vec(&serde_json::json!({
        "type": "https://github.com/confidential-containers/kbs/errors/InvalidRequest",
        "detail": detail,
    }))
    .expect("JSON");
    Reply { status, body, set_session: None, log: format!("refused ({status}): {detail}") }
}

/// What was read from a connection.
struct Incoming {
    method: String,
    path: String,
    session: Option<String>,
    body: Vec<u8>,
}

/// Read one request from `stream` by `deadline`; Err is the reply to send instead.
fn read_request(stream: &mut TcpStream, limits: &Limits) -> Result<Incoming, Reply> {
    let deadline = Instant::now() + limits.read_deadline;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    // The head, up to the blank line.
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > limits.max_head {
            return Err(plain(431, "the request head is too large"));
        }
        let n = read_some(stream, &mut chunk, deadline)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Err(plain(400, "not an HTTP/1.1 request")),
    }
    let method = req.method.unwrap_or_default().to_string();
    let path = req.path.unwrap_or_default().split('?').next().unwrap_or_default().to_string();
    let mut length: Option<usize> = None;
    let mut session = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(plain(501, "chunked request bodies are not accepted: send Content-Length"));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| plain(400, "a Content-Length that is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(plain(400, "two different Content-Length headers"));
            }
            length = Some(n);
        }
        if h.name.eq_ignore_ascii_case("cookie") {
            let value = String::from_utf8_lossy(h.value);
            if let Some(id) = value
                .split(';')
                .map(str::trim)
                .find_map(|c| c.strip_prefix(&format!("{}=", broker::COOKIE)).map(String::from))
            {
                session = Some(id);
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body {
        return Err(plain(413, &format!("a request body over {} bytes", limits.max_body)));
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = read_some(stream, &mut chunk, deadline)?;
        body.extend_from_slice(&chunk[..n]);
    }
    if body.len() > length {
        return Err(plain(400, "more bytes than the Content-Length (one request per connection)"));
    }
    Ok(Incoming { method, path, session, body })
}

/// One read, given what is left of `deadline`; a client that passes it gets 408.
fn read_some(stream: &mut TcpStream, chunk: &mut [u8], deadline: Instant) -> Result<usize, Reply> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(plain(408, "the request was not sent in time"));
    }
    stream.set_read_timeout(Some(left)).map_err(|e| plain(500, &format!("socket: {e}")))?;
    match stream.read(chunk) {
        Ok(0) => Err(plain(400, "the client closed the connection mid-request")),
        Ok(n) => Ok(n),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Err(plain(408, "the request was not sent in time"))
        }
        Err(e) => Err(plain(400, &format!("reading the request: {e}"))),
    }
}

fn connection(mut stream: TcpStream, peer: SocketAddr, broker: &Broker, limits: &Limits, log: fn(&str)) {
    let reply = match read_request(&mut stream, limits) {
        Ok(r) => {
            let reply = broker.handle(&broker::Request {
                method: &r.method,
                path: &r.path,
                session: r.session.as_deref(),
                body: &r.body,
            });
            log(&format!("{} {}: {}", r.method, r.path.chars().take(100).collect::<String>(), reply.log));
            reply
        }
        Err(reply) => {
            log(&format!("{peer}: {}", reply.log));
            reply
        }
    };
    if let Err(e) = respond(stream, &reply, limits) {
        log(&format!("{peer}: replying: {e}"));
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(mut stream: TcpStream, reply: &Reply, limits: &Limits) -> std::io::Result<()> {
    stream.set_write_timeout(Some(limits.write_timeout))?;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    if let Some(id) = &reply.set_session {
        head.push_str(&format!("Set-Cookie: {}={id}; Path=/kbs; HttpOnly; Max-Age=300\r\n", broker::COOKIE));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&reply.body)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}
