//! The user agent client: one UDP socket, client transactions with RFC 3261 retransmission
//! timers, and the two call flows edgerate runs through a trunk.
//!
//! - INVITE client transaction: retransmitted at T1, 2·T1, 4·T1 … until any response arrives
//!   (timer A), given up after 64·T1 (timer B). A final response gets its ACK; a retransmitted
//!   final response gets the same ACK again (for 64·T1).
//! - Non-INVITE (CANCEL, BYE, REFER): retransmitted at T1 doubling up to T2 until a final
//!   response (timer E), given up after 64·T1 (timer F).
//! - Requests the peer sends within a call (BYE, NOTIFY after a REFER, OPTIONS) are answered
//!   200; anything else 481/405.
//!
//! Flows: a **probe** (number ping) sends INVITE and ends at the first sign of life — CANCEL on
//! ringing or progress, ACK and BYE at once on an answer — so no call ever connects to a
//! person; a **call** (dial) waits for an answer up to its timeout (then CANCEL), and on answer
//! transfers the call with REFER when asked to, then hangs up with BYE.

use crate::message::{self, Incoming, Outgoing, PeerRequest, Response};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// RFC 3261 timer values.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// How long CANCEL's and BYE's answers are waited for before a flow reports anyway.
const WRAP_UP: Duration = Duration::from_secs(4);
/// Receive buffer asked of the kernel.
const RECEIVE_BUFFER: usize = 8 << 20;
/// A minimal SDP offer: audio to the discard port, so the INVITE is acceptable to any trunk and
/// no media ever flows.
const SDP: &str = "v=0\r\no=edgerate 0 0 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0 8\r\na=inactive\r\n";

/// Where a transaction stands, for its retransmission timer.
const WAITING: u8 = 0;
const PROVISIONAL: u8 = 1;
const FINAL: u8 = 2;

/// An ACK as sent: its bytes, where to, and when.
type SentAck = (Vec<u8>, SocketAddr, Instant);

struct Transaction {
    responses: mpsc::UnboundedSender<Response>,
    state: Arc<AtomicU8>,
}

/// The user agent. Cheap to share; one per node.
pub struct UserAgent {
    socket: Arc<UdpSocket>,
    /// (branch, method) → the transaction waiting for its responses.
    transactions: Mutex<HashMap<(String, String), Transaction>>,
    /// INVITE branch → the ACK sent for its final response, resent if that response is.
    acks: Mutex<HashMap<String, SentAck>>,
    /// Call-IDs of calls in progress, whose in-dialog requests are answered.
    calls: Mutex<HashSet<String>>,
}

/// What one INVITE came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub call_id: String,
    /// The response that decided it: a provisional code for a probe that rang, the final code
    /// otherwise; 408 when nothing (or nothing final) came in time.
    pub code: u16,
    pub status: String,
    pub answered: bool,
    /// Whether the answered call was transferred (REFER accepted).
    pub transferred: Option<bool>,
    pub started: i64,
    /// Seconds between the answer and the hang-up.
    pub connected_secs: f64,
}

impl Outcome {
    /// The reason phrase of the deciding response (`Ringing` of `180 Ringing`).
    pub fn reason(&self) -> &str {
        self.status.split_once(' ').map_or("", |(_, r)| r)
    }
}

/// One INVITE to send.
#[derive(Debug, Clone)]
pub struct Invite {
    pub trunk: SocketAddr,
    pub number: String,
    /// Calling number: the From user and `P-Asserted-Identity`.
    pub cli: Option<String>,
    /// Display name in From.
    pub name: Option<String>,
    /// Validated with [`message::check_extra_header`].
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Probe: end at the first ringing or answer. Call: wait for an answer.
    pub probe: bool,
    /// On answer, REFER the call here (a number or a SIP URI) before hanging up.
    pub refer_to: Option<String>,
}

impl UserAgent {
    /// Binds the UDP socket and starts answering datagrams.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Arc<Self>> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Room for bursts of responses to many parallel calls (the kernel may grant less).
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = Arc::new(UdpSocket::from_std(socket.into())?);
        let agent = Arc::new(Self {
            socket,
            transactions: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashSet::new()),
        });
        tokio::spawn(receive_forever(
            Arc::downgrade(&agent),
            agent.socket.clone(),
        ));
        Ok(agent)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The address the trunk should reach this agent at.
    fn contact_addr(&self, trunk: SocketAddr) -> SocketAddr {
        let local = self.socket.local_addr().unwrap_or(trunk);
        if !local.ip().is_unspecified() {
            return local;
        }
        // The interface the route to the trunk leaves from.
        let ip = std::net::UdpSocket::bind((local.ip(), 0))
            .and_then(|s| s.connect(trunk).and_then(|()| s.local_addr()))
            .map_or(trunk.ip(), |a| a.ip());
        SocketAddr::new(ip, local.port())
    }

    /// Starts a client transaction for `request` (whose top Via carries `branch`).
    fn start(
        self: &Arc<Self>,
        bytes: Vec<u8>,
        branch: &str,
        method: &str,
        to: SocketAddr,
    ) -> mpsc::UnboundedReceiver<Response> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        self.transactions.lock().insert(
            (branch.to_owned(), method.to_owned()),
            Transaction {
                responses: tx,
                state: state.clone(),
            },
        );
        let invite = method == "INVITE";
        let agent = self.clone();
        let key = (branch.to_owned(), method.to_owned());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut interval = T1;
            loop {
                if agent.socket.send_to(&bytes, to).await.is_ok() {
                    metrics::counter!("edgerate_sip_sent_total", "method" => method_label(&key.1))
                        .increment(1);
                }
                tokio::time::sleep(interval).await;
                let now = state.load(Ordering::Acquire);
                if now == FINAL || (invite && now == PROVISIONAL) {
                    break;
                }
                if started.elapsed() >= 64 * T1 {
                    // Timer B / F: the transaction times out; its receiver sees the end.
                    agent.transactions.lock().remove(&key);
                    break;
                }
                interval = match (invite, now) {
                    (true, _) => interval * 2,
                    (false, PROVISIONAL) => T2,
                    (false, _) => (interval * 2).min(T2),
                };
            }
        });
        rx
    }

    fn finish(&self, branch: &str, method: &str) {
        self.transactions
            .lock()
            .remove(&(branch.to_owned(), method.to_owned()));
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            tracing::warn!(%to, error = %e, "sending a SIP message failed");
        }
    }

    /// Sends one INVITE and follows it to its end (see the module docs).
    pub async fn invite(self: &Arc<Self>, call: &Invite) -> Outcome {
        let local = self.contact_addr(call.trunk);
        let call_id = format!("{}@{}", message::token(), local.ip());
        self.calls.lock().insert(call_id.clone());
        let outcome = self.run(call, local, &call_id).await;
        self.calls.lock().remove(&call_id);
        metrics::counter!("edgerate_sip_calls_total", "kind" => if call.probe { "ping" } else { "dial" }, "code" => outcome.code.to_string()).increment(1);
        outcome
    }

    async fn run(self: &Arc<Self>, call: &Invite, local: SocketAddr, call_id: &str) -> Outcome {
        let started = edgerate_model::time::now();
        let user = call.cli.clone().unwrap_or_else(|| "edgerate".into());
        let display = call
            .name
            .as_deref()
            .map(|n| format!("\"{}\" ", n.replace(['"', '\\'], "")))
            .unwrap_or_default();
        let from_uri = format!("sip:{user}@{}", local.ip());
        let dialog = Dialog {
            call_id: call_id.to_owned(),
            from: format!("{display}<{from_uri}>;tag={}", message::token()),
            to_uri: format!("sip:{}@{}", call.number, call.trunk),
            local,
            trunk: call.trunk,
        };
        let branch = message::new_branch();
        let mut headers = dialog.base("INVITE", 1, &branch, None);
        headers.push(("Contact".into(), format!("<sip:{user}@{local}>")));
        if let Some(cli) = &call.cli {
            headers.push((
                "P-Asserted-Identity".into(),
                format!("<sip:{cli}@{}>", local.ip()),
            ));
        }
        headers.push(("User-Agent".into(), "edgerate".into()));
        headers.extend(call.headers.iter().cloned());
        headers.push(("Content-Type".into(), "application/sdp".into()));
        let invite = Outgoing {
            method: rsip::Method::Invite,
            uri: dialog.to_uri.clone(),
            headers,
            body: SDP.as_bytes().to_vec(),
        };
        let mut outcome = Outcome {
            call_id: call_id.to_owned(),
            code: 408,
            status: "408 Request Timeout".into(),
            answered: false,
            transferred: None,
            started,
            connected_secs: 0.0,
        };
        let Ok(bytes) = invite.encode() else {
            outcome.code = 400;
            outcome.status = "400 Bad Request".into();
            return outcome;
        };
        let mut responses = self.start(bytes, &branch, "INVITE", call.trunk);
        let deadline = tokio::time::Instant::now() + call.timeout;
        let mut provisional = false;
        loop {
            let response = tokio::select! {
                r = responses.recv() => r,
                () = tokio::time::sleep_until(deadline) => None,
            };
            let Some(r) = response else {
                // Timed out: a pending INVITE is cancelled (only once something came back).
                if provisional {
                    self.cancel(&dialog, &branch, &mut responses).await;
                }
                self.finish(&branch, "INVITE");
                return outcome;
            };
            match r.code {
                100 => provisional = true,
                101..=199 => {
                    provisional = true;
                    if call.probe {
                        // The answer is known: the CANCEL and its 487 finish in the background.
                        outcome.code = r.code;
                        outcome.status = r.status;
                        let agent = self.clone();
                        tokio::spawn(async move {
                            agent.cancel(&dialog, &branch, &mut responses).await;
                            agent.finish(&branch, "INVITE");
                        });
                        return outcome;
                    }
                }
                200..=299 => {
                    outcome.code = r.code;
                    outcome.status = r.status.clone();
                    outcome.answered = true;
                    let answered_at = Instant::now();
                    let remote = self.ack_2xx(&dialog, &r, &branch).await;
                    if let Some(target) = call.refer_to.as_deref().filter(|_| !call.probe) {
                        let accepted = self.refer(&dialog, &remote, target, &from_uri).await;
                        outcome.transferred = Some(accepted);
                    }
                    self.bye(&dialog, &remote, 3).await;
                    outcome.connected_secs = answered_at.elapsed().as_secs_f64();
                    self.finish(&branch, "INVITE");
                    return outcome;
                }
                _ => {
                    self.ack_final(&dialog, &branch, &r).await;
                    outcome.code = r.code;
                    outcome.status = r.status;
                    self.finish(&branch, "INVITE");
                    return outcome;
                }
            }
        }
    }

    /// CANCELs the pending INVITE, then ACKs its 487 (or, if it was answered meanwhile, ACKs
    /// and hangs up).
    async fn cancel(
        self: &Arc<Self>,
        dialog: &Dialog,
        branch: &str,
        responses: &mut mpsc::UnboundedReceiver<Response>,
    ) {
        let cancel = Outgoing {
            method: rsip::Method::Cancel,
            uri: dialog.to_uri.clone(),
            headers: dialog.base("CANCEL", 1, branch, None),
            body: Vec::new(),
        };
        let Ok(bytes) = cancel.encode() else { return };
        let mut cancelled = self.start(bytes, branch, "CANCEL", dialog.trunk);
        let wrap_up = tokio::time::Instant::now() + WRAP_UP;
        let mut cancel_done = false;
        loop {
            tokio::select! {
                r = cancelled.recv(), if !cancel_done => {
                    if r.as_ref().is_none_or(|r| r.code >= 200) {
                        cancel_done = true;
                    }
                }
                r = responses.recv() => match r {
                    Some(r) if (200..300).contains(&r.code) => {
                        // Answered before the CANCEL landed: hang up at once; the outcome
                        // stays what decided to cancel.
                        let remote = self.ack_2xx(dialog, &r, branch).await;
                        self.bye(dialog, &remote, 2).await;
                        break;
                    }
                    Some(r) if r.code >= 300 => {
                        self.ack_final(dialog, branch, &r).await;
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                () = tokio::time::sleep_until(wrap_up) => break,
            }
        }
        self.finish(branch, "CANCEL");
    }

    /// ACK of a non-2xx final response: part of the INVITE transaction (same branch).
    async fn ack_final(&self, dialog: &Dialog, branch: &str, r: &Response) {
        let ack = Outgoing {
            method: rsip::Method::Ack,
            uri: dialog.to_uri.clone(),
            headers: dialog.base("ACK", 1, branch, r.to_tag.as_deref()),
            body: Vec::new(),
        };
        if let Ok(bytes) = ack.encode() {
            self.send(&bytes, dialog.trunk).await;
            self.remember_ack(branch, bytes, dialog.trunk);
        }
    }

    /// ACK of a 2xx: a new transaction to the peer's Contact. Returns the dialog's remote end.
    async fn ack_2xx(&self, dialog: &Dialog, r: &Response, invite_branch: &str) -> Remote {
        let remote = Remote {
            target: r.contact.clone().unwrap_or_else(|| dialog.to_uri.clone()),
            tag: r.to_tag.clone(),
        };
        let ack = Outgoing {
            method: rsip::Method::Ack,
            uri: remote.target.clone(),
            headers: dialog.base("ACK", 1, &message::new_branch(), remote.tag.as_deref()),
            body: Vec::new(),
        };
        if let Ok(bytes) = ack.encode() {
            self.send(&bytes, dialog.trunk).await;
            self.remember_ack(invite_branch, bytes, dialog.trunk);
        }
        remote
    }

    fn remember_ack(&self, invite_branch: &str, bytes: Vec<u8>, to: SocketAddr) {
        let mut acks = self.acks.lock();
        acks.retain(|_, (_, _, at)| at.elapsed() < 64 * T1);
        acks.insert(invite_branch.to_owned(), (bytes, to, Instant::now()));
    }

    /// An in-dialog non-INVITE request; true when it got a 2xx.
    async fn in_dialog(
        self: &Arc<Self>,
        dialog: &Dialog,
        remote: &Remote,
        method: rsip::Method,
        cseq: u32,
        extra: Vec<(String, String)>,
    ) -> bool {
        let name = method.to_string();
        let branch = message::new_branch();
        let mut headers = dialog.base(&name, cseq, &branch, remote.tag.as_deref());
        headers.extend(extra);
        let request = Outgoing {
            method,
            uri: remote.target.clone(),
            headers,
            body: Vec::new(),
        };
        let Ok(bytes) = request.encode() else {
            return false;
        };
        let mut responses = self.start(bytes, &branch, &name, dialog.trunk);
        let deadline = tokio::time::Instant::now() + WRAP_UP;
        let accepted = loop {
            tokio::select! {
                r = responses.recv() => match r {
                    Some(r) if r.code >= 200 => break (200..300).contains(&r.code),
                    Some(_) => {}
                    None => break false,
                },
                () = tokio::time::sleep_until(deadline) => break false,
            }
        };
        self.finish(&branch, &name);
        accepted
    }

    async fn bye(self: &Arc<Self>, dialog: &Dialog, remote: &Remote, cseq: u32) {
        self.in_dialog(dialog, remote, rsip::Method::Bye, cseq, Vec::new())
            .await;
    }

    async fn refer(
        self: &Arc<Self>,
        dialog: &Dialog,
        remote: &Remote,
        target: &str,
        from_uri: &str,
    ) -> bool {
        let refer_to = if target.starts_with("sip:") {
            target.to_owned()
        } else {
            format!("sip:{target}@{}", dialog.trunk)
        };
        let extra = vec![
            ("Refer-To".into(), format!("<{refer_to}>")),
            ("Referred-By".into(), format!("<{from_uri}>")),
            ("Contact".into(), format!("<sip:edgerate@{}>", dialog.local)),
        ];
        self.in_dialog(dialog, remote, rsip::Method::Refer, 2, extra)
            .await
    }

    /// Handles one datagram from the network.
    async fn receive(&self, datagram: &[u8], from: SocketAddr) {
        let incoming = match message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("edgerate_sip_dropped_total").increment(1);
                tracing::debug!(%from, error = %e, "dropped a SIP datagram");
                return;
            }
        };
        match incoming {
            Incoming::Response(r) => self.on_response(r).await,
            Incoming::Request(r) => self.on_request(&r, from).await,
        }
    }

    async fn on_response(&self, r: Response) {
        let key = (r.branch.clone(), r.cseq_method.clone());
        let delivered = {
            let transactions = self.transactions.lock();
            transactions.get(&key).map(|t| {
                t.state.store(
                    if r.code >= 200 { FINAL } else { PROVISIONAL },
                    Ordering::Release,
                );
                t.responses.send(r.clone()).is_ok()
            })
        };
        if delivered == Some(true) {
            return;
        }
        // A retransmitted final response to an INVITE already answered: the same ACK again.
        if r.code >= 200 && r.cseq_method == "INVITE" {
            let ack = self.acks.lock().get(&r.branch).cloned();
            if let Some((bytes, to, _)) = ack {
                self.send(&bytes, to).await;
                return;
            }
        }
        metrics::counter!("edgerate_sip_dropped_total").increment(1);
        tracing::debug!(code = r.code, call = %r.call_id, "a response no transaction waits for");
    }

    async fn on_request(&self, r: &PeerRequest, from: SocketAddr) {
        let known = self.calls.lock().contains(&r.call_id);
        let (code, reason) = match r.method.as_str() {
            "ACK" => return,
            "OPTIONS" => (200, "OK"),
            "BYE" | "NOTIFY" | "INFO" if known => (200, "OK"),
            "BYE" | "NOTIFY" | "INFO" | "CANCEL" => (481, "Call/Transaction Does Not Exist"),
            _ => (405, "Method Not Allowed"),
        };
        self.send(&message::answer(r, code, reason), from).await;
    }
}

fn method_label(method: &str) -> &'static str {
    match method {
        "INVITE" => "INVITE",
        "CANCEL" => "CANCEL",
        "BYE" => "BYE",
        "REFER" => "REFER",
        _ => "other",
    }
}

async fn receive_forever(agent: std::sync::Weak<UserAgent>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(agent) = agent.upgrade() else { return };
        agent.receive(&buf[..len], from).await;
    }
}

/// The local side of a call.
struct Dialog {
    call_id: String,
    /// The whole From header value, with our tag.
    from: String,
    to_uri: String,
    local: SocketAddr,
    trunk: SocketAddr,
}

/// The peer's side of an answered call.
struct Remote {
    target: String,
    tag: Option<String>,
}

impl Dialog {
    /// Via, Max-Forwards, From, To, Call-ID and CSeq of a request in this call.
    fn base(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        to_tag: Option<&str>,
    ) -> Vec<(String, String)> {
        let to = match to_tag {
            Some(tag) => format!("<{}>;tag={tag}", self.to_uri),
            None => format!("<{}>", self.to_uri),
        };
        vec![
            (
                "Via".into(),
                format!("SIP/2.0/UDP {};branch={branch};rport", self.local),
            ),
            ("Max-Forwards".into(), "70".into()),
            ("From".into(), self.from.clone()),
            ("To".into(), to),
            ("Call-ID".into(), self.call_id.clone()),
            ("CSeq".into(), format!("{cseq} {method}")),
        ]
    }
}
