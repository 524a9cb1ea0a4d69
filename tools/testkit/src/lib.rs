//! Test support: start the servers tests talk to (swtpm, `veil kbs serve`) on addresses that
//! cannot collide with another test's; and ([`require`]) find the shared corpus and the tools
//! a test needs, skipping loudly or failing as `$VEIL_REQUIRE_TESTDATA` / `$VEIL_REQUIRE_TOOLS`
//! say.
//!
//! Tests run in parallel threads and in parallel test binaries. Picking a "free" port by
//! binding port 0, releasing it and handing the number to a server races: another test can be
//! handed the same number in between, and one test then talks to another test's server. So a
//! port here is never released between choosing and serving:
//! - swtpm's ports are sockets the test holds from the start ([`SwtpmTcp`]);
//! - servers of our own bind port 0 themselves and print the address they got, which
//!   [`spawn_announcing`] reads back.

pub mod require;
pub use require::{find_tool, missing_tool, testdata, tool, tools};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Two listening sockets on adjacent loopback ports (`port`, `port + 1`), held open: the swtpm
/// TCTI of tpm2-tools finds the control channel at the data port plus one.
pub fn adjacent_listeners() -> (TcpListener, TcpListener) {
    loop {
        let data = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = data.local_addr().expect("local address").port();
        if port == u16::MAX {
            continue;
        }
        if let Ok(ctrl) = TcpListener::bind(("127.0.0.1", port + 1)) {
            return (data, ctrl);
        }
    }
}

/// Let `cmd`'s child inherit the descriptors `fds` at their current numbers (Rust opens every
/// socket close-on-exec).
pub fn inherit(cmd: &mut Command, fds: &[RawFd]) {
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe; it touches no memory but the captured descriptor numbers.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A swtpm serving its TPM on loopback TCP (commands on `port`, control on `port + 1`, the
/// layout the swtpm TCTI of tpm2-tools expects), killed on drop.
///
/// swtpm takes an inherited *listening* socket only for its control channel; for commands
/// it takes one connected socket (`--server type=tcp,fd=N`). So the command port is a
/// listener this process holds, and a thread here passes each client's commands, one whole
/// TPM command and response at a time, to swtpm over a socket pair. Clients take turns as
/// they do with swtpm's own listener (it serves one connection at a time).
pub struct SwtpmTcp {
    child: Child,
    port: u16,
    stop: Arc<AtomicBool>,
    proxy: Option<std::thread::JoinHandle<()>>,
}

/// Largest TPM command or response passed on (TPM2 buffers are at most a few KiB).
const MAX_TPM_MESSAGE: usize = 1 << 16;

impl SwtpmTcp {
    /// Start swtpm on the TPM state in `state` with `--flags flags`. The ports are held by
    /// this process from the moment they are chosen, so a client may connect at once.
    pub fn start(state: &Path, flags: &str) -> std::io::Result<SwtpmTcp> {
        let (data, ctrl) = adjacent_listeners();
        let port = data.local_addr()?.port();
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new("swtpm");
        cmd.args(["socket", "--tpm2", "--flags", flags])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,fd={}", theirs.as_raw_fd()))
            .arg("--ctrl")
            .arg(format!("type=tcp,fd={}", ctrl.as_raw_fd()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        inherit(&mut cmd, &[theirs.as_raw_fd(), ctrl.as_raw_fd()]);
        let child = cmd.spawn()?;
        // The child has its copies; ours of its ends close here.
        drop((theirs, ctrl));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let proxy = std::thread::spawn(move || serve_commands(&data, ours, &flag));
        Ok(SwtpmTcp { child, port, stop, proxy: Some(proxy) })
    }

    /// The TPM command port (control is this plus one).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The tpm2-tools TCTI string for this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

impl Drop for SwtpmTcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Wake the proxy's accept() so that it sees the flag and ends, closing the port.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.proxy.take() {
            let _ = t.join();
        }
    }
}

/// One TPM message (command or response): the 10-byte header names the total size.
fn read_tpm_message(from: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut msg = vec![0u8; 10];
    match from.read_exact(&mut msg) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = u32::from_be_bytes(msg[2..6].try_into().expect("4 bytes")) as usize;
    if !(10..=MAX_TPM_MESSAGE).contains(&size) {
        return Err(std::io::Error::other(format!("a TPM message of {size} bytes")));
    }
    msg.resize(size, 0);
    from.read_exact(&mut msg[10..])?;
    Ok(Some(msg))
}

/// Accept clients on `listener` one after another and pass their commands to swtpm.
fn serve_commands(listener: &TcpListener, mut tpm: UnixStream, stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut client) = client else { continue };
        // Until the client is done (or sends garbage): then the next client.
        while let Ok(Some(command)) = read_tpm_message(&mut client) {
            let response = tpm.write_all(&command).and_then(|()| read_tpm_message(&mut tpm));
            match response {
                Ok(Some(r)) => {
                    if client.write_all(&r).is_err() {
                        break;
                    }
                }
                _ => return, // swtpm is gone
            }
        }
    }
}

/// What `veil kbs serve` prints on stderr before the address it listens on.
pub const KBS_LISTENING: &str = "veil kbs: listening on http://";

/// Spawn `cmd` (which must bind port 0 itself and print `<marker><address>` on stderr once it
/// listens) and return it with the address it announced. The rest of its stderr is copied to
/// ours. Fails if it exits or stays silent for `timeout`.
pub fn spawn_announcing(
    cmd: &mut Command,
    marker: &'static str,
    timeout: Duration,
) -> std::io::Result<(Child, SocketAddr)> {
    spawn_announcing_logged(cmd, marker, timeout, None)
}

/// [`spawn_announcing`], also appending every stderr line to `log` (a test then reads what the
/// server said, e.g. a broker's reasons for refusing).
pub fn spawn_announcing_logged(
    cmd: &mut Command,
    marker: &'static str,
    timeout: Duration,
    log: Option<std::fs::File>,
) -> std::io::Result<(Child, SocketAddr)> {
    let mut child = cmd.stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut tx = Some(tx);
        let mut log = log;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if let Some(addr) = line
                .split_once(marker)
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait()?;
            Err(std::io::Error::other(format!(
                "{:?} did not announce its address ({marker}…) within {timeout:?}; it ended with {status}",
                cmd.get_program()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_listeners_are_adjacent_and_held() {
        let (a, b) = adjacent_listeners();
        let (pa, pb) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
        assert_eq!(pb, pa + 1);
        // Held: nobody else can bind them now.
        assert!(TcpListener::bind(("127.0.0.1", pa)).is_err());
        assert!(TcpListener::bind(("127.0.0.1", pb)).is_err());
    }

    #[test]
    fn inherited_listener_serves_in_the_child() {
        // A child shell that accepts on the inherited descriptor is not portable; check instead
        // that the descriptor survives exec: the child lists it in /proc/self/fd.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("test -e /proc/self/fd/{fd}")]);
        inherit(&mut cmd, &[fd]);
        assert!(cmd.status().unwrap().success(), "fd {fd} not inherited");
        let mut plain = Command::new("sh");
        plain.args(["-c", &format!("test -e /proc/self/fd/{fd}")]);
        assert!(!plain.status().unwrap().success(), "fd {fd} leaked without inherit()");
    }

    #[test]
    fn spawn_announcing_reads_the_address() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo starting >&2; echo 'server: listening on 127.0.0.1:4242 (test)' >&2; sleep 5"]);
        let (mut child, addr) = spawn_announcing(&mut cmd, "listening on ", Duration::from_secs(5)).unwrap();
        assert_eq!(addr, "127.0.0.1:4242".parse().unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        let mut silent = Command::new("sh");
        silent.args(["-c", "exit 3"]);
        let err = spawn_announcing(&mut silent, "listening on ", Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("did not announce"), "{err}");
    }
}
