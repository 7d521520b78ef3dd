//! A UDP relay that makes a loopback link look like a WAN one: every datagram, either way, is
//! held for a fixed one-way delay (the kernel here has no `netem`), and the link can be cut.
//!
//! A relay stands in front of one node's QUIC port: peers dial the relay's address (the node
//! advertises it), each client gets its own socket towards the node, so the node's replies go
//! back through the relay to the right client, delayed the same.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest datagram relayed (QUIC sends at most this on loopback).
const MAX_DATAGRAM: usize = 65_535;

/// One datagram on its way: when to send it, on which socket, to whom.
struct Held {
    due: Instant,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: Vec<u8>,
}

/// What a relay drops: everything, or what comes from and goes to some clients.
#[derive(Default)]
struct Cut {
    all: bool,
    clients: HashSet<SocketAddr>,
}

type Cuts = Arc<Mutex<Cut>>;

fn is_cut(cut: &Cuts, client: SocketAddr) -> bool {
    let cut = cut.lock().expect("relay cut");
    cut.all || cut.clients.contains(&client)
}

/// A relay in front of `target`; it runs until the test process ends.
pub struct Relay {
    addr: SocketAddr,
    cut: Cuts,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target` with `delay` each way.
    pub fn start(target: SocketAddr, delay: Duration) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("binding the relay"));
        let addr = front.local_addr().expect("relay address");
        let cut = Cuts::default();
        // One queue in arrival order: with a fixed delay, due times only grow.
        let (queue, held) = mpsc::channel::<Held>();
        std::thread::spawn(move || {
            for h in held {
                if let Some(wait) = h.due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let _ = match h.to {
                    Some(to) => h.socket.send_to(&h.bytes, to),
                    None => h.socket.send(&h.bytes),
                };
            }
        });
        let backs: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        {
            let (front, cut) = (front.clone(), cut.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0; MAX_DATAGRAM];
                while let Ok((n, client)) = front.recv_from(&mut buf) {
                    if is_cut(&cut, client) {
                        continue;
                    }
                    let back = backs
                        .lock()
                        .expect("relay table")
                        .entry(client)
                        .or_insert_with(|| {
                            back_socket(target, client, front.clone(), &queue, &cut, delay)
                        })
                        .clone();
                    let held = Held {
                        due: Instant::now() + delay,
                        socket: back,
                        to: None,
                        bytes: buf[..n].to_vec(),
                    };
                    if queue.send(held).is_err() {
                        break;
                    }
                }
            });
        }
        Self { addr, cut }
    }

    /// The address peers dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every datagram either way until [`Relay::heal`].
    pub fn cut(&self) {
        self.cut.lock().expect("relay cut").all = true;
    }

    /// Drops what `client` sends through this relay and what comes back to it.
    pub fn cut_client(&self, client: SocketAddr) {
        self.cut.lock().expect("relay cut").clients.insert(client);
    }

    /// Ends every cut.
    pub fn heal(&self) {
        *self.cut.lock().expect("relay cut") = Cut::default();
    }
}

/// The socket that carries one client's datagrams to the node, and its replies back.
fn back_socket(
    target: SocketAddr,
    client: SocketAddr,
    front: Arc<UdpSocket>,
    queue: &Sender<Held>,
    cut: &Cuts,
    delay: Duration,
) -> Arc<UdpSocket> {
    let back = UdpSocket::bind("127.0.0.1:0").expect("binding a relay socket");
    back.connect(target).expect("connecting a relay socket");
    let back = Arc::new(back);
    let (reader, queue, cut) = (back.clone(), queue.clone(), cut.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0; MAX_DATAGRAM];
        // A node that is down refuses (ICMP): keep reading, it may come back.
        loop {
            let n = match reader.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            };
            if is_cut(&cut, client) {
                continue;
            }
            let held = Held {
                due: Instant::now() + delay,
                socket: front.clone(),
                to: Some(client),
                bytes: buf[..n].to_vec(),
            };
            if queue.send(held).is_err() {
                break;
            }
        }
    });
    back
}
