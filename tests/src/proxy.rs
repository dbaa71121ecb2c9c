//! A TCP forwarder on 127.0.0.1 that a test can cut and restore: a network partition
//! between one agent and the server, without touching either process.
//!
//! While cut, every forwarded connection is shut down and new ones are closed as soon as
//! they are accepted, so the client behind it sees its requests fail at once (as with a
//! peer that resets connections). Restored, it forwards new connections again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A cuttable forwarder from `127.0.0.1:port()` to an upstream address.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every forwarded connection, so a cut can shut them down.
    open: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (e.g. the server's `127.0.0.1:PORT`).
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy listens");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accept = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accept.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                accept.forward(client);
            }
        });
        Proxy { addr, shared }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts: shuts down every forwarded connection and closes new ones on arrival.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let mut open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Restores forwarding for new connections.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Shared {
    fn forward(self: &Arc<Self>, client: TcpStream) {
        let Ok(server) = TcpStream::connect(self.upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            // Forget connections both of whose directions have ended.
            open.retain(|s| s.peer_addr().is_ok());
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                open.push(a);
                open.push(b);
            }
        }
        if self.cut.load(Ordering::SeqCst) {
            // Cut while connecting: this one must not get through either.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        thread::spawn(move || pump(client, server));
        thread::spawn(move || pump(server2, client2));
    }
}

/// Copies `from` to `to` until either ends, then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::time::Duration;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in std::io::BufReader::new(s).lines() {
                        let Ok(line) = line else { return };
                        if writeln!(w, "{line}").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(port: u16) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        writeln!(s, "ping")?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    }

    #[test]
    fn forwards_cuts_and_restores() {
        let proxy = Proxy::start(echo_server());
        assert_eq!(round_trip(proxy.port()).unwrap(), "ping\n");

        // An open connection is shut down by the cut.
        let mut held = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        writeln!(held, "one").unwrap();
        let mut reader = std::io::BufReader::new(held.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "one\n");
        proxy.cut();
        line.clear();
        let _ = writeln!(held, "two");
        let n = reader.read_line(&mut line).unwrap_or(0);
        assert_eq!(n, 0, "read {line:?} through a cut connection");
        // New connections get nothing through.
        assert_ne!(round_trip(proxy.port()).ok().as_deref(), Some("ping\n"));

        proxy.restore();
        assert_eq!(round_trip(proxy.port()).unwrap(), "ping\n");
    }
}
