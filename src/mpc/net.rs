//! `serve`, `client` and `dealer` over TCP: three processes.
//!
//! - The client connects to the server and says hello with its token count;
//!   the server answers with the public facts of its model (architecture,
//!   ring, which layers prune or reduce — not the thresholds) and a fresh
//!   random 128-bit session id.
//! - Both connect to the dealer and present the session id and their role;
//!   the dealer pairs them, draws two seeds and sends each party its own.
//!   The server then hangs up on the dealer; the client keeps its
//!   connection for requests (kinds and sizes only) until the session ends.
//! - The offline phase (the server's W − B, the dealer's corrections) runs
//!   before the client's input is touched, then the online forward; the
//!   logits go to the client alone.
//!
//! Every receive has the transport's timeout, and every error names the
//! peer it concerns (server, client or dealer).

use super::channel::{ChannelError, TcpTransport, Transport};
use super::cost::{CommCounts, CommTally};
use super::dealer::{serve_dealer, session_seeds, Correlations, Party};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use super::session::{client_thresholds, run_party, run_party_ahead, PartyOutcome};
use super::shares::{SharesBackend, SharesOptions, Suite};
use super::sort::Compaction;
use crate::fixed::{Ring, Truncation};
use crate::secure::bert::{EngineModel, LayerThresholds};
use crate::secure::weights::{BertConfig, BertWeights};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Protocol name and version, first field of every hello.
pub const PROTOCOL: &str = "cipherprune-2pc/3";

/// Longest accepted sequence (tokens) from a client.
pub const MAX_TOKENS: usize = 4096;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hello {
    protocol: String,
    /// "party" or "dealer".
    role: String,
    /// The client's token count (party connection only); with `ahead`, the
    /// capacity the offline phase is prepared for.
    #[serde(default)]
    tokens: usize,
    /// The client announces its length only after the offline phase.
    #[serde(default)]
    ahead: bool,
}

/// The server's answer to a client's hello.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Welcome {
    info: ServerInfo,
    /// The session id both present to the dealer (32 hex digits).
    session: String,
}

/// A party's hello to the dealer.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DealerHello {
    protocol: String,
    /// "server" or "client".
    role: String,
    session: String,
    ring: Ring,
}

/// The dealer's answer: this party's seed (64 hex digits), or why not.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DealerAnswer {
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// What the server tells a client about its model: public facts only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub protocol: String,
    /// A label for the model (the checkpoint's name and weights digest).
    pub model: String,
    pub config: BertConfig,
    pub num_labels: usize,
    pub ring: Ring,
    pub truncation: Truncation,
    pub compaction: Compaction,
    /// Comparisons and truncations (older servers: the AND tree).
    #[serde(default)]
    pub suite: Suite,
    /// Per layer: does it prune / reduce.
    pub prune: Vec<bool>,
    pub reduce: Vec<bool>,
    /// Per layer: are its pruned rows merged into one (older servers: no).
    #[serde(default)]
    pub merge: Vec<bool>,
}

/// The server's side: its model, thresholds and the public description.
pub struct ServerModel {
    pub model: EngineModel,
    pub thresholds: Vec<LayerThresholds>,
    pub info: ServerInfo,
}

impl ServerModel {
    pub fn new(model: EngineModel, thresholds: Vec<LayerThresholds>, info: ServerInfo) -> Self {
        ServerModel { model, thresholds, info }
    }

    fn options(&self) -> SharesOptions {
        SharesOptions { truncation: self.info.truncation, compaction: self.info.compaction, analysis: false, suite: self.info.suite }
    }
}

fn garbage(msg: impl Into<String>) -> ChannelError {
    ChannelError::Garbage { at: " (handshake)".into(), msg: msg.into() }
}

fn send_json<T: Serialize>(t: &mut dyn Transport, v: &T) -> Result<(), ChannelError> {
    t.send(serde_json::to_vec(v).expect("serialisable"))
}

fn recv_json<T: for<'de> Deserialize<'de>>(t: &mut dyn Transport, what: &str) -> Result<T, ChannelError> {
    let m = t.recv().map_err(|e| e.at(what))?;
    serde_json::from_slice(&m).map_err(|e| garbage(format!("{what} is not valid: {e}")))
}

fn hello(t: &mut dyn Transport, role: &str) -> Result<Hello, ChannelError> {
    let h: Hello = recv_json(t, "the client's hello")?;
    if h.protocol != PROTOCOL {
        return Err(garbage(format!("the peer speaks `{}`, not `{PROTOCOL}`", h.protocol)));
    }
    if h.role != role {
        return Err(garbage(format!("expected a `{role}` connection, got `{}`", h.role)));
    }
    Ok(h)
}

/// Accept one connection within `timeout` (`None`: wait for ever).
fn accept(listener: &TcpListener, timeout: Option<Duration>) -> Result<TcpStream, ChannelError> {
    let io = |e: std::io::Error| ChannelError::Io(e.to_string());
    let Some(timeout) = timeout else {
        return listener.accept().map(|(s, _)| s).map_err(io);
    };
    listener.set_nonblocking(true).map_err(io)?;
    let deadline = Instant::now() + timeout;
    let res = loop {
        match listener.accept() {
            Ok((s, _)) => break Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    break Err(ChannelError::Timeout(timeout.as_secs(), " (waiting for a connection)".into()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => break Err(io(e)),
        }
    };
    listener.set_nonblocking(false).map_err(io)?;
    let s = res?;
    s.set_nonblocking(false).map_err(io)?;
    Ok(s)
}

/// What the server learns from one session: the token count and the
/// revealed counts, and its communication (never the result).
#[derive(Clone, Debug)]
pub struct ServedSession {
    pub tokens: usize,
    pub kept_per_layer: Vec<usize>,
    pub comm: CommTally,
    /// The offline phase's traffic and time.
    pub offline: CommCounts,
    pub wall: Duration,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Connect to the dealer, present the session and take this party's seed.
fn dealer_seed(
    dealer: &str,
    role: &str,
    session: &str,
    ring: Ring,
    timeout: Duration,
) -> Result<([u8; 32], TcpTransport), ChannelError> {
    let stream = TcpStream::connect(dealer).map_err(|e| ChannelError::Io(format!("cannot connect to the dealer at {dealer}: {e}")))?;
    let mut t = TcpTransport::new(stream, timeout)?;
    send_json(&mut t, &DealerHello { protocol: PROTOCOL.into(), role: role.into(), session: session.into(), ring })?;
    let a: DealerAnswer = recv_json(&mut t, "the dealer's answer").map_err(|e| e.at("waiting for the dealer"))?;
    if let Some(e) = a.error {
        return Err(ChannelError::Io(format!("the dealer refused the session: {e}")));
    }
    let seed = a
        .seed
        .as_deref()
        .and_then(unhex)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| garbage("the dealer's seed is not 32 bytes"))?;
    Ok((seed, t))
}

/// Serve one client session on `listener`, with the dealer at `dealer`.
///
/// # Errors
/// When the client is not a cipherprune client, sends garbage, stalls
/// longer than `timeout` or hangs up, or the dealer cannot be reached,
/// refuses the session or stalls.
pub fn serve_one(
    listener: &TcpListener,
    server: &ServerModel,
    dealer: &str,
    rng: &mut impl RngCore,
    timeout: Duration,
) -> Result<ServedSession, ChannelError> {
    let stream = accept(listener, None)?;
    let start = Instant::now();
    let mut party = TcpTransport::new(stream, timeout)?;
    let h = hello(&mut party, "party")?;
    if h.tokens == 0 || h.tokens > MAX_TOKENS {
        return Err(garbage(format!("{} tokens (1..={MAX_TOKENS} accepted)", h.tokens)));
    }
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let session = hex(&id);
    send_json(&mut party, &Welcome { info: server.info.clone(), session: session.clone() })?;
    let ring = server.info.ring;
    let (seed0, dealer_conn) = dealer_seed(dealer, "server", &session, ring, timeout)?;
    drop(dealer_conn);
    let n = h.tokens;
    let d = server.info.config.hidden_size;
    let b = SharesBackend::new(Party::Server, ring, server.options(), Box::new(party), Correlations::server(ring, seed0), 0);
    let outcome = if h.ahead {
        run_party_ahead(b, &server.model, &server.thresholds, &[], 0, Some(n))?
    } else {
        run_party(b, &server.model, &server.thresholds, &vec![0; n * d], n)?
    };
    Ok(ServedSession {
        tokens: outcome.trace.live_per_layer.first().map_or(n, Vec::len),
        kept_per_layer: outcome.trace.kept_per_layer.iter().map(|k| k.len()).collect(),
        comm: outcome.comm,
        offline: outcome.offline,
        wall: start.elapsed(),
    })
}

/// The client's result: the logits and what the run cost it.
#[derive(Clone, Debug)]
pub struct ClientResult {
    pub info: ServerInfo,
    pub logits: Vec<f64>,
    pub outcome: PartyOutcome,
    pub wall: Duration,
}

/// How the client runs: `seed` masks the input, `timeout` bounds every
/// receive, `capacity` prepares the offline phase for that many tokens
/// before the length is known (`None`: for the sentence's own).
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    pub seed: u64,
    pub timeout: Duration,
    pub capacity: Option<usize>,
}

/// Run one sentence against a server, with the dealer at `dealer`.
/// `weights` is the client's copy of the model's public parts: its config
/// and embedding table (nothing else is read).
///
/// # Errors
/// When the server or the dealer cannot be reached, the server is not a
/// cipherprune server, serves another architecture, sends garbage, stalls
/// or hangs up, or the dealer does.
pub fn run_client(
    addr: impl ToSocketAddrs + Copy,
    dealer: &str,
    weights: &BertWeights,
    ids: &[u32],
    type_ids: &[u32],
    opts: ClientOptions,
) -> Result<ClientResult, ChannelError> {
    let ClientOptions { seed, timeout, capacity } = opts;
    let start = Instant::now();
    if let Some(c) = capacity.filter(|&c| c < ids.len()) {
        return Err(ChannelError::Io(format!("the sentence has {} tokens, more than the {c} the offline phase is prepared for", ids.len())));
    }
    let stream = TcpStream::connect(addr).map_err(|e| ChannelError::Io(format!("cannot connect to the server: {e}")))?;
    let mut party = TcpTransport::new(stream, timeout)?;
    let n = ids.len();
    send_json(&mut party, &Hello { protocol: PROTOCOL.into(), role: "party".into(), tokens: capacity.unwrap_or(n), ahead: capacity.is_some() })?;
    let w: Welcome = recv_json(&mut party, "the server's model description")?;
    let info = w.info;
    if info.protocol != PROTOCOL {
        return Err(garbage(format!("the server speaks `{}`, not `{PROTOCOL}`", info.protocol)));
    }
    let mine = &weights.config;
    if (info.config.hidden_size, info.config.vocab_size) != (mine.hidden_size, mine.vocab_size) {
        return Err(garbage(format!(
            "the server's model has hidden size {} and vocabulary {}, this client's embeddings {} and {}",
            info.config.hidden_size, info.config.vocab_size, mine.hidden_size, mine.vocab_size
        )));
    }
    let layers = info.config.num_hidden_layers;
    if info.prune.len() != layers || info.reduce.len() != layers {
        return Err(garbage("per-layer flags do not match the layer count"));
    }
    if w.session.len() != 32 || unhex(&w.session).is_none() {
        return Err(garbage("the session id is not 32 hex digits"));
    }
    let emb = weights.embed(ids, Some(type_ids)).map_err(|e| ChannelError::Io(e.to_string()))?;
    let (input, _) = crate::secure::bert::encode_input(info.ring, &emb);
    let shape = EngineModel::from_weights(&BertWeights::random(info.config.clone(), info.num_labels, 0), &info.ring).public_shape();
    let thresholds: Vec<LayerThresholds> = info
        .prune
        .iter()
        .zip(&info.reduce)
        .enumerate()
        .map(|(l, (&p, &r))| LayerThresholds { theta: p.then_some(0), beta: r.then_some(0), merge: info.merge.get(l).copied().unwrap_or(false), ..Default::default() })
        .collect();
    let (seed1, dealer_conn) = dealer_seed(dealer, "client", &w.session, info.ring, timeout)?;
    let opts = SharesOptions { truncation: info.truncation, compaction: info.compaction, analysis: false, suite: info.suite };
    let corr = Correlations::client(info.ring, seed1, Box::new(dealer_conn));
    let b = SharesBackend::new(Party::Client, info.ring, opts, Box::new(party), corr, seed);
    let outcome = run_party_ahead(b, &shape, &client_thresholds(&thresholds), &input, n, capacity)?;
    let logits = outcome.trace.logits_ring.iter().map(|&v| info.ring.decode(v)).collect();
    Ok(ClientResult { info, logits, outcome, wall: start.elapsed() })
}

/// Options of the dealer process.
#[derive(Clone, Copy, Debug)]
pub struct DealerOptions {
    /// How long a party waits for its partner, and the dealer for a request.
    pub timeout: Duration,
    /// Stop after this many paired sessions (0: until killed).
    pub sessions: usize,
}

/// One session's end, as the dealer logs it.
#[derive(Clone, Debug)]
pub struct DealtSession {
    pub session: String,
    /// Both parties arrived and got their seeds.
    pub paired: bool,
    pub result: Result<(), ChannelError>,
}

struct Waiting {
    role: String,
    ring: Ring,
    conn: TcpTransport,
}

/// The dealer process: pairs a server and a client by session id, sends
/// each its seed, answers the client's requests. Holds no model; receives
/// hellos and requests only. Each finished session is passed to `log`.
///
/// # Errors
/// When the listener fails.
pub fn run_dealer(
    listener: TcpListener,
    opts: DealerOptions,
    rng: impl RngCore + Send + 'static,
    log: impl Fn(DealtSession) + Send + Sync + 'static,
) -> Result<(), ChannelError> {
    let waiting: Arc<Mutex<HashMap<String, Waiting>>> = Arc::default();
    let rng = Arc::new(Mutex::new(rng));
    let log = Arc::new(log);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        if opts.sessions > 0 && done.load(std::sync::atomic::Ordering::SeqCst) >= opts.sessions {
            return Ok(());
        }
        let stream = accept(&listener, Some(Duration::from_millis(200)));
        let stream = match stream {
            Ok(s) => s,
            Err(ChannelError::Timeout(..)) => continue,
            Err(e) => return Err(e),
        };
        let (waiting, rng, log, done) = (waiting.clone(), rng.clone(), log.clone(), done.clone());
        std::thread::spawn(move || {
            let session = dealer_connection(stream, opts.timeout, &waiting, &rng);
            if let Some(s) = session {
                let paired = s.paired;
                log(s);
                if paired {
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
}

/// One connection to the dealer: the second of a pair runs the session.
fn dealer_connection(
    stream: TcpStream,
    timeout: Duration,
    waiting: &Mutex<HashMap<String, Waiting>>,
    rng: &Mutex<impl RngCore>,
) -> Option<DealtSession> {
    let mut conn = TcpTransport::new(stream, timeout).ok()?;
    let h: DealerHello = match recv_json(&mut conn, "a party's hello to the dealer") {
        Ok(h) => h,
        Err(e) => return Some(DealtSession { session: "?".into(), paired: false, result: Err(e) }),
    };
    let refuse = |conn: &mut TcpTransport, msg: String| {
        let _ = send_json(conn, &DealerAnswer { seed: None, error: Some(msg.clone()) });
        Some(DealtSession { session: h.session.clone(), paired: false, result: Err(garbage(msg)) })
    };
    if h.protocol != PROTOCOL || !["server", "client"].contains(&h.role.as_str()) || h.session.len() != 32 {
        return refuse(&mut conn, format!("`{}` as `{}` for session `{}` is not a cipherprune party", h.protocol, h.role, h.session));
    }
    let mut w = waiting.lock().expect("dealer lock");
    let partner = match w.remove(&h.session) {
        Some(p) if p.role != h.role && p.ring == h.ring => p,
        Some(p) => {
            drop(w);
            let msg = format!("two parties of session {} disagree (roles {} and {}, rings {} and {})", h.session, p.role, h.role, p.ring, h.ring);
            let mut pc = p.conn;
            let _ = send_json(&mut pc, &DealerAnswer { seed: None, error: Some(msg.clone()) });
            return refuse(&mut conn, msg);
        }
        None => {
            w.insert(h.session.clone(), Waiting { role: h.role.clone(), ring: h.ring, conn });
            drop(w);
            // Wait for the partner; the partner's thread runs the session.
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                if !waiting.lock().expect("dealer lock").contains_key(&h.session) {
                    return None;
                }
            }
            let mut conn = waiting.lock().expect("dealer lock").remove(&h.session)?.conn;
            let other = if h.role == "server" { "client" } else { "server" };
            return refuse(&mut conn, format!("the {other} of session {} did not connect to the dealer within {} s", h.session, timeout.as_secs()));
        }
    };
    drop(w);
    let (mut server, mut client) = if h.role == "server" { (conn, partner.conn) } else { (partner.conn, conn) };
    let seeds = session_seeds(&mut *rng.lock().expect("dealer lock"));
    let sent = send_json(&mut server, &DealerAnswer { seed: Some(hex(&seeds.0)), error: None })
        .and_then(|_| send_json(&mut client, &DealerAnswer { seed: Some(hex(&seeds.1)), error: None }));
    drop(server);
    let result = sent.and_then(|_| serve_dealer(h.ring, seeds, &mut client).map(|_| ()));
    Some(DealtSession { session: h.session, paired: true, result })
}
