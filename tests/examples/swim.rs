//! The SWIM baseline of `scripts/bench-membership.sh`: N foca members (its LAN configuration)
//! in one process, each on its own UDP socket on loopback, measured as the script measures
//! edgerate's mesh:
//!
//! - join: every member announces itself to member 0; time until each knows all the others;
//! - idle: foca's bytes sent per member per second (payload, plus 28 bytes of IPv4 and UDP
//!   header per datagram, to compare with QUIC's UDP bytes);
//! - down: the last member's task and socket dropped; time until every survivor declared it
//!   down;
//! - back: the member started again on the same address with a renewed identity; time until
//!   every survivor has it as a member again.
//!
//! `cargo run --release -p edgerate-tests --example swim -- [N]` (N defaults to 10; the idle
//! window is WINDOW_S seconds, default 60: foca's periodic announce runs every 30 s).

use foca::{AccumulatingRuntime, Config, Foca, Identity, OwnedNotification, PostcardCodec, Timer};
use rand_foca::rngs::SmallRng;
use rand_foca::SeedableRng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// IPv4 and UDP headers, counted per datagram.
const HEADERS: u64 = 28;

/// A member: its address, and a generation bumped on each restart so the new one wins.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Id {
    addr: SocketAddr,
    generation: u64,
}

impl Identity for Id {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            addr: self.addr,
            generation: self.generation + 1,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// What the driver hears from a member: its index, and what foca told it.
struct Event {
    member: usize,
    members: usize,
    notification: OwnedNotification<Id>,
}

/// One member: foca driven by its datagrams and its timers (one ordered queue, so timers fire
/// in the order foca set them), until `announce` closes.
async fn member(
    index: usize,
    socket: UdpSocket,
    id: Id,
    config: Config,
    mut announce: mpsc::UnboundedReceiver<Id>,
    events: mpsc::UnboundedSender<Event>,
    sent: Arc<AtomicU64>,
) {
    let mut foca = Foca::new(
        id,
        config.clone(),
        SmallRng::seed_from_u64(index as u64),
        PostcardCodec,
    );
    let mut runtime = AccumulatingRuntime::new();
    let mut timers: BinaryHeap<Reverse<(Instant, Timer<Id>)>> = BinaryHeap::new();
    let mut buf = vec![0u8; config.max_packet_size.get()];
    loop {
        let next = timers
            .peek()
            .map_or_else(|| Instant::now() + Duration::from_secs(3600), |t| t.0 .0);
        let result = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, _)) => foca.handle_data(&buf[..len], &mut runtime),
                Err(_) => continue,
            },
            () = sleep_until(next) => match timers.pop() {
                Some(Reverse((_, timer))) => foca.handle_timer(timer, &mut runtime),
                None => continue,
            },
            to = announce.recv() => match to {
                Some(to) => foca.announce(to, &mut runtime),
                None => return,
            },
        };
        if let Err(e) = result {
            eprintln!("member {index}: {e}");
        }
        while let Some((to, data)) = runtime.to_send() {
            sent.fetch_add(data.len() as u64 + HEADERS, Ordering::Relaxed);
            let _ = socket.send_to(&data, to.addr).await;
        }
        let now = Instant::now();
        while let Some((after, timer)) = runtime.to_schedule() {
            timers.push(Reverse((now + after, timer)));
        }
        while let Some(notification) = runtime.to_notify() {
            let _ = events.send(Event {
                member: index,
                members: foca.num_members(),
                notification,
            });
        }
    }
}

struct Running {
    announce: mpsc::UnboundedSender<Id>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn(
    index: usize,
    socket: UdpSocket,
    id: Id,
    config: &Config,
    events: &mpsc::UnboundedSender<Event>,
    sent: &Arc<AtomicU64>,
) -> Running {
    let (announce, inbox) = mpsc::unbounded_channel();
    let task = tokio::spawn(member(
        index,
        socket,
        id,
        config.clone(),
        inbox,
        events.clone(),
        sent.clone(),
    ));
    Running { announce, task }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let window = Duration::from_secs_f64(
        std::env::var("WINDOW_S")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(60.0),
    );
    let size = NonZeroU32::new(u32::try_from(n).expect("a small cluster")).expect("N > 0");
    let config = Config::new_lan(size);
    println!(
        "config: probe every {:?}, suspect to down after {:?}, gossip {:?}",
        config.probe_period,
        config.suspect_to_down_after,
        config.periodic_gossip.as_ref().map(|g| g.frequency)
    );
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let sent: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::default()).collect();
    let mut ids = Vec::new();
    let mut running = Vec::new();
    for (i, sent) in sent.iter().enumerate() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket");
        let id = Id {
            addr: socket.local_addr().expect("bound"),
            generation: 1,
        };
        running.push(spawn(i, socket, id.clone(), &config, &events_tx, sent));
        ids.push(id);
    }

    let start = Instant::now();
    for member in &running[1..] {
        member.announce.send(ids[0].clone()).expect("running");
    }
    let mut known = vec![0; n];
    while known.iter().any(|&k| k < n - 1) {
        let event = events.recv().await.expect("members run");
        known[event.member] = event.members;
    }
    println!(
        "join: all {n} know all {n}: {:.2} s",
        start.elapsed().as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let before: Vec<u64> = sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    tokio::time::sleep(window).await;
    let rates: Vec<f64> = sent
        .iter()
        .zip(&before)
        .map(|(s, b)| (s.load(Ordering::Relaxed) - b) as f64 / window.as_secs_f64())
        .collect();
    let mean = rates.iter().sum::<f64>() / n as f64;
    println!(
        "idle: UDP bytes sent per member per second over {:.0} s: mean {mean:.0}, min {:.0}, max {:.0}",
        window.as_secs_f64(),
        rates.iter().copied().fold(f64::INFINITY, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    );
    while events.try_recv().is_ok() {}

    let victim = n - 1;
    running[victim].task.abort();
    let _cancelled = (&mut running[victim].task).await;
    let killed = Instant::now();
    let mut first = None;
    let mut down = vec![false; n];
    down[victim] = true;
    while !down.iter().all(|d| *d) {
        let event = events.recv().await.expect("members run");
        if let OwnedNotification::MemberDown(gone) = &event.notification {
            if gone.addr == ids[victim].addr && !down[event.member] {
                down[event.member] = true;
                first.get_or_insert(killed.elapsed());
            }
        }
    }
    println!(
        "down: every survivor declared the killed member down {:.2} s after it stopped (first {:.2} s)",
        killed.elapsed().as_secs_f64(),
        first.unwrap_or_default().as_secs_f64()
    );

    // Back on the same address (free again: the aborted task dropped its socket), with the
    // next generation, announcing to member 0.
    let socket = UdpSocket::bind(ids[victim].addr)
        .await
        .expect("the address again");
    let renewed = ids[victim].renew().expect("renewable");
    let restarted = Instant::now();
    running[victim] = spawn(victim, socket, renewed, &config, &events_tx, &sent[victim]);
    running[victim]
        .announce
        .send(ids[0].clone())
        .expect("running");
    let mut back = vec![false; n];
    back[victim] = true;
    while !back.iter().all(|b| *b) {
        let event = events.recv().await.expect("members run");
        let up = match &event.notification {
            OwnedNotification::MemberUp(id) | OwnedNotification::Rename(_, id) => {
                id.addr == ids[victim].addr
            }
            _ => false,
        };
        if up {
            back[event.member] = true;
        }
    }
    println!(
        "back: every survivor has the restarted member up {:.2} s after it started again",
        restarted.elapsed().as_secs_f64()
    );
}
