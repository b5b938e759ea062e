//! A TCP relay on a loopback port in front of a server, which can stop
//! listening for a while: clients then meet a real "connection refused"
//! (and their open connections are cut), as when an API server restarts.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct State {
    target: SocketAddr,
    port: u16,
    /// Refuse connections until then.
    down_until: Mutex<Option<Instant>>,
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

pub struct Relay {
    state: Arc<State>,
}

impl Relay {
    /// A relay to `target` (`http://127.0.0.1:P`), listening at once.
    pub fn start(target: &str) -> Relay {
        let target: SocketAddr = target.trim_start_matches("http://").parse().expect("a loopback URL");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let state = Arc::new(State {
            target,
            port,
            down_until: Mutex::new(None),
            open: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let run = state.clone();
        std::thread::spawn(move || serve(run));
        Relay { state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.state.port)
    }

    /// Cuts every open connection and refuses new ones for `duration`.
    pub fn refuse_for(&self, duration: Duration) {
        *self.state.down_until.lock().unwrap() = Some(Instant::now() + duration);
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(state: Arc<State>) {
    let mut listener: Option<TcpListener> = None;
    while !state.stop.load(Ordering::SeqCst) {
        let down = state.down_until.lock().unwrap().is_some_and(|until| Instant::now() < until);
        if down {
            listener = None; // closed: connecting now is refused
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", state.port)) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        match listener.as_ref().unwrap().accept() {
            Ok((client, _)) => {
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(state.target) else { continue };
                let mut open = state.open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
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
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
