//! Correlated randomness from a dealer (the preprocessing model of CrypTen's
//! TTP mode and of SIGMA): input-independent values the parties consume
//! while the protocol runs. The dealer is its own process
//! (`cipherprune dealer`, [`super::net::run_dealer`]); it never receives a weight, an input or a
//! share of either — only requests (a kind and a few size words).
//!
//! **Seeds and streams.** Per session the dealer draws two seeds and sends
//! each party only its own. Every kind of correlation draws each of its
//! components from its own ChaCha12 stream of the party's seed (stream id =
//! a hash of kind, parameters and component), one word per ring element and
//! bits in order, so drawing n then m elements gives the same values as
//! drawing n + m. The server (P0) draws all its shares and never talks to
//! the dealer; the client (P1) draws its random parts and receives the
//! dealer's *corrections* (e.g. c₁ = (a₀+a₁)(b₀+b₁) − c₀ of a Beaver
//! triple), which the dealer computes by replaying both seeds' streams.
//!
//! **Offline and online.** Element-wise correlations (triples, bit
//! triples, masked bits, bit-to-ring pairs, MUX and AND-to-ring
//! correlations) and the attention's matrix triples come from *pools* the
//! client fills offline, sized by a plan ([`super::plan`]) for the public
//! input length; a pool that runs dry online is refilled from the dealer and
//! the refill is counted as online dealer traffic. Permutation correlations
//! (shuffle compaction) depend on revealed counts and are dealt online.
//!
//! **Linear layers without the dealer seeing W.** A matrix Beaver triple
//! per weight matrix and inference: A (client, rows_max × in), B (server,
//! in × out), C₀ (server) and C₁ = A·B − C₀ (client, from the dealer). The
//! server sends W − B offline; online the client sends x₁ − A (a row
//! prefix), the server's share is (x₀ + x₁ − A)·W + C₀ and the client's
//! A·(W − B) + C₁ (computed offline for rows_max; row prefixes are exact).
//! The same element-wise for the LayerNorm γ.

use super::arith::{self, random_perm};
use super::bits::BitVec;
use super::channel::{ChannelError, MsgReader, MsgWriter, Transport};
use crate::fixed::Ring;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use std::collections::{HashMap, HashSet};

/// The two parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// P0: holds the weights and thresholds.
    Server,
    /// P1: holds the input.
    Client,
}

impl Party {
    pub fn index(self) -> usize {
        match self {
            Party::Server => 0,
            Party::Client => 1,
        }
    }
}

/// Request codes (first word of a request to the dealer).
pub mod kind {
    pub const DONE: u64 = 0;
    /// `[FILL, pool kind, p0, p1, p2, count]`: corrections for `count` more
    /// units of a pool.
    pub const FILL: u64 = 1;
    /// `[LINEAR, id, rows, in, out]`: C₁ of matrix `id`'s triple.
    pub const LINEAR: u64 = 2;
    /// `[PERM_NEW, rows, knower]`.
    pub const PERM_NEW: u64 = 4;
    /// `[PERM_APPLY, handle, inverse, width]`.
    pub const PERM_APPLY: u64 = 5;
    /// The most words in a request.
    pub const MAX_WORDS: usize = 6;
}

/// Pool kinds (second word of a FILL).
pub mod pool {
    pub const TRIPLE: u64 = 1;
    pub const MAT_TRIPLE: u64 = 2;
    pub const BIT_TRIPLE: u64 = 3;
    pub const MASKED_BITS: u64 = 4;
    pub const B2A: u64 = 5;
    pub const MUX: u64 = 6;
    pub const AND_ARITH: u64 = 7;
    /// DCF keys for one-round MSB ([`super::fss`]).
    pub const DCF_MSB: u64 = 8;
    /// DCF keys for one-round exact truncation by `p[0]` bits.
    pub const DCF_TRUNC: u64 = 9;
    /// [`DCF_MSB`] with a second key whose payload is the mask times the
    /// first's: msb(x) and x·msb(x) in one round.
    pub const DCF_MSB_MUL: u64 = 10;
    /// [`DCF_TRUNC`] by `p[0]` with a second mask s and keys whose payloads
    /// carry s: ⌊u / 2^k⌋ and y·⌊u / 2^k⌋ in one round.
    pub const DCF_TRUNC_MUL: u64 = 11;
    /// Flag on a kind: the same correlation from separate streams, dealt
    /// online (compaction and partition, whose sizes follow revealed counts).
    pub const ONLINE: u64 = 0x100;
}

/// Stream tags beyond the pools.
const TAG_LINEAR: u64 = 100;
const TAG_PERM: u64 = 102;

/// One pool: a kind and its parameters (shift + 1 for masked bits, 0 for
/// none; m, k, n for a matrix triple).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub kind: u64,
    pub p: [u64; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompKind {
    Ring,
    Bits,
    /// Opaque bytes per unit: the correction words of a DCF key, which
    /// the client forwards to the server.
    Bytes(usize),
}

impl PoolKey {
    pub fn of(kind: u64) -> Self {
        PoolKey { kind, p: [0; 3] }
    }
    pub fn masked_bits(shift: Option<u32>) -> Self {
        PoolKey { kind: pool::MASKED_BITS, p: [shift.map_or(0, |k| k as u64 + 1), 0, 0] }
    }
    pub fn mat(m: usize, k: usize, n: usize) -> Self {
        PoolKey { kind: pool::MAT_TRIPLE, p: [m as u64, k as u64, n as u64] }
    }
    /// DCF keys are pooled per layer (`None`: outside the layers), so the
    /// offline plan counts them where they are used.
    pub fn dcf_msb(layer: Option<usize>) -> Self {
        PoolKey { kind: pool::DCF_MSB, p: [0, layer_tag(layer), 0] }
    }
    /// Truncation by `k` whose wrap key reads the top `wrap` bits.
    pub fn dcf_trunc(k: u32, wrap: u32, layer: Option<usize>) -> Self {
        PoolKey { kind: pool::DCF_TRUNC, p: [k as u64, layer_tag(layer), wrap as u64] }
    }
    pub fn dcf_msb_mul(layer: Option<usize>) -> Self {
        PoolKey { kind: pool::DCF_MSB_MUL, p: [0, layer_tag(layer), 0] }
    }
    pub fn dcf_trunc_mul(k: u32, wrap: u32, layer: Option<usize>) -> Self {
        PoolKey { kind: pool::DCF_TRUNC_MUL, p: [k as u64, layer_tag(layer), wrap as u64] }
    }

    /// Whether this pool holds DCF keys (whose correction words both
    /// parties need).
    pub fn is_fss(&self) -> bool {
        matches!(self.kind & !pool::ONLINE, pool::DCF_MSB | pool::DCF_TRUNC | pool::DCF_MSB_MUL | pool::DCF_TRUNC_MUL)
    }

    /// The client's correction components and ring elements per unit.
    fn layout(&self, ring: Ring) -> Option<(Vec<CompKind>, usize)> {
        use CompKind::*;
        Some(match self.kind & !pool::ONLINE {
            pool::TRIPLE | pool::B2A => (vec![Ring], 1),
            pool::MAT_TRIPLE => (vec![Ring], (self.p[0] * self.p[2]) as usize),
            pool::BIT_TRIPLE => (vec![Bits], 1),
            pool::MASKED_BITS => {
                let mut v = vec![Bits; ring.bits() as usize];
                if self.p[0] != 0 {
                    v.push(Ring);
                }
                (v, 1)
            }
            pool::MUX => (vec![Ring, Ring], 1),
            pool::AND_ARITH => (vec![Ring, Ring, Ring], 1),
            pool::DCF_MSB => (vec![Bytes(super::fss::msb_dcf(ring, false).cw_bytes()), Ring], 1),
            pool::DCF_TRUNC => {
                let (k, w) = (self.p[0] as u32, self.p[2] as u32);
                if k == 0 || k >= ring.bits() || w == 0 || w > ring.bits() {
                    return None;
                }
                let (d1, d2) = super::fss::trunc_dcfs(ring, k, w, false);
                (vec![Bytes(d1.cw_bytes()), Bytes(d2.cw_bytes()), Ring], 1)
            }
            pool::DCF_MSB_MUL => (vec![Bytes(super::fss::msb_dcf(ring, true).cw_bytes()), Ring, Ring], 1),
            pool::DCF_TRUNC_MUL => {
                let (k, w) = (self.p[0] as u32, self.p[2] as u32);
                if k == 0 || k >= ring.bits() || w == 0 || w > ring.bits() {
                    return None;
                }
                let (d1, d2) = super::fss::trunc_dcfs(ring, k, w, true);
                (vec![Bytes(d1.cw_bytes()), Bytes(d2.cw_bytes()), Ring, Ring, Ring], 1)
            }
            _ => return None,
        })
    }

    /// Wire bytes per unit of the corrections (for chunking requests).
    pub(super) fn unit_bytes(&self, ring: Ring) -> usize {
        let (l, unit) = self.layout(ring).expect("known pool");
        let rb = super::channel::ring_bytes(ring);
        l.iter()
            .map(|c| match c {
                CompKind::Ring => unit * rb,
                CompKind::Bits => 1,
                CompKind::Bytes(len) => *len,
            })
            .sum::<usize>()
            .max(1)
    }

    fn stream(&self, comp: u64) -> u64 {
        stream_id(self.kind, self.p, comp)
    }
}

fn layer_tag(layer: Option<usize>) -> u64 {
    layer.map_or(0, |l| l as u64 + 1)
}

/// A stream id from a tag, parameters and a component (splitmix64 fold).
fn stream_id(tag: u64, p: [u64; 3], comp: u64) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for w in [tag, p[0], p[1], p[2], comp] {
        h ^= w;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 29;
    }
    h
}

/// One ChaCha12 stream: ring elements one word each, bits in order.
struct Stream {
    rng: ChaCha12Rng,
    buf: BitVec,
    pos: usize,
}

impl Stream {
    fn new(seed: [u8; 32], id: u64) -> Self {
        let mut rng = ChaCha12Rng::from_seed(seed);
        rng.set_stream(id);
        Stream { rng, buf: BitVec::zeros(0), pos: 0 }
    }
    fn ring(&mut self, r: Ring, n: usize) -> Vec<u64> {
        arith::random_vec(r, n, &mut self.rng)
    }
    fn bits(&mut self, n: usize) -> BitVec {
        let have = self.buf.len() - self.pos;
        if have < n {
            let fresh = BitVec::random((n - have).div_ceil(64) * 64, &mut self.rng);
            self.buf = BitVec::concat(&[&self.buf.slice(self.pos, have), &fresh]);
            self.pos = 0;
        }
        let out = self.buf.slice(self.pos, n);
        self.pos += n;
        out
    }
    fn perm(&mut self, n: usize) -> Vec<usize> {
        random_perm(n, &mut self.rng)
    }
    /// 128-bit seeds, two words each.
    fn seeds(&mut self, n: usize) -> Vec<u128> {
        use rand::RngCore;
        (0..n).map(|_| super::dcf::root(self.rng.next_u64(), self.rng.next_u64())).collect()
    }
}

/// All streams of one seed, made on first use.
struct Streams {
    ring: Ring,
    seed: [u8; 32],
    map: HashMap<u64, Stream>,
}

impl Streams {
    fn new(ring: Ring, seed: [u8; 32]) -> Self {
        Streams { ring, seed, map: HashMap::new() }
    }
    fn get(&mut self, id: u64) -> &mut Stream {
        let seed = self.seed;
        self.map.entry(id).or_insert_with(|| Stream::new(seed, id))
    }
    fn ring(&mut self, key: PoolKey, comp: u64, n: usize) -> Vec<u64> {
        let r = self.ring;
        self.get(key.stream(comp)).ring(r, n)
    }
    fn bits(&mut self, key: PoolKey, comp: u64, n: usize) -> BitVec {
        self.get(key.stream(comp)).bits(n)
    }
    fn seeds(&mut self, key: PoolKey, comp: u64, n: usize) -> Vec<u128> {
        self.get(key.stream(comp)).seeds(n)
    }
    fn planes(&mut self, key: PoolKey, n: usize) -> Vec<BitVec> {
        (0..self.ring.bits() as u64).map(|b| self.bits(key, 8 + b, n)).collect()
    }
    /// A fresh copy of a stream from its start (row prefixes of linear masks).
    fn prefix(&self, tag: u64, id: u32, comp: u64, n: usize) -> Vec<u64> {
        Stream::new(self.seed, stream_id(tag, [id as u64, 0, 0], comp)).ring(self.ring, n)
    }
    fn perm_stream(&mut self) -> &mut Stream {
        self.get(stream_id(TAG_PERM, [0; 3], 0))
    }
}

/// a·b = c, element-wise (shares).
pub struct Triple {
    pub a: Vec<u64>,
    pub b: Vec<u64>,
    pub c: Vec<u64>,
}

/// a ∧ b = c on bits (shares).
pub struct BitTriple {
    pub a: BitVec,
    pub b: BitVec,
    pub c: BitVec,
}

/// A random r shared arithmetically and bit by bit (bit-planes, least
/// significant first), and optionally ⌊r / 2^k⌋ shared arithmetically.
pub struct MaskedBits {
    pub r: Vec<u64>,
    pub planes: Vec<BitVec>,
    pub high: Vec<u64>,
}

/// A random bit t shared as a bit and as a ring element.
pub struct B2aPair {
    pub t: BitVec,
    pub t_arith: Vec<u64>,
}

/// A random bit t (both sharings), a random v and w = t·v.
pub struct MuxCorr {
    pub t: BitVec,
    pub t_arith: Vec<u64>,
    pub v: Vec<u64>,
    pub w: Vec<u64>,
}

/// Random bits u, v shared as bits, and u, v and u·v shared in the ring:
/// turns x ∧ y on bit shares into ring shares in one round.
pub struct AndArith {
    pub u: BitVec,
    pub v: BitVec,
    pub ua: Vec<u64>,
    pub va: Vec<u64>,
    pub uva: Vec<u64>,
}

/// A random r (arithmetic shares), the shares of a DCF key for
/// (1 − 2ρ)·[r mod 2^(ℓ−1) > x] (root seed per element, correction words
/// `cw_bytes` each) and ρ = msb(r) shared in the ring: one-round MSB.
pub struct DcfMsb {
    pub r: Vec<u64>,
    pub rho: Vec<u64>,
    pub roots: Vec<u128>,
    pub cw: Vec<u8>,
}

/// A random r, the shares of DCF keys for 2^(ℓ−k)·[r > z] and
/// −[r mod 2^k > z mod 2^k], and ⌊r / 2^k⌋ shared: one-round exact
/// truncation by k.
pub struct DcfTrunc {
    /// Input bits of the wrap key (ℓ: exact for every x).
    pub wrap: u32,
    pub r: Vec<u64>,
    pub roots: [Vec<u128>; 2],
    pub cw: [Vec<u8>; 2],
    pub high: Vec<u64>,
}

/// A [`DcfMsb`] whose keys have a second lane, r·(1 − 2ρ)·[r mod 2^(ℓ−1) > x],
/// and r·ρ shared: x·msb(x) with the same opening ([`super::fss`]).
pub struct DcfMsbMul {
    pub msb: DcfMsb,
    pub r_rho: Vec<u64>,
}

/// A [`DcfTrunc`] and a second random s (the other factor's mask), the
/// keys' second lanes 2^(ℓ−k)·s·[r > z] and −s·[r mod 2^k > z mod 2^k],
/// and s·⌊r / 2^k⌋ shared: y·⌊u / 2^k⌋ with the truncation's opening
/// ([`super::fss`]).
pub struct DcfTruncMul {
    pub trunc: DcfTrunc,
    pub s: Vec<u64>,
    pub s_high: Vec<u64>,
    /// A third mask s1 (of [`super::fss`]'s y1 in `trunc_lincomb`) and
    /// s1·r shared.
    pub s1: Vec<u64>,
    pub s1_r: Vec<u64>,
}

/// One party's side of a permutation correlation for σ known to one party:
/// the knower holds (σ, Δ), the other (a, b) with σ(a) = b + Δ, so that
/// [`super::sort`] can apply σ to shared rows with one message.
pub enum PermShare {
    Knower { perm: Vec<usize>, delta: Vec<u64> },
    Other { a: Vec<u64>, b: Vec<u64> },
}

/// One component of a pool's corrections.
#[derive(Clone, Debug)]
enum Comp {
    Ring(Vec<u64>),
    Bits(BitVec),
    /// `len` bytes per unit.
    Bytes(Vec<u8>, usize),
}

impl Comp {
    fn ring(self) -> Vec<u64> {
        match self {
            Comp::Ring(v) => v,
            _ => unreachable!("a ring component"),
        }
    }
    fn bits(self) -> BitVec {
        match self {
            Comp::Bits(b) => b,
            _ => unreachable!("a bit component"),
        }
    }
    fn empty(kind: CompKind) -> Self {
        match kind {
            CompKind::Ring => Comp::Ring(Vec::new()),
            CompKind::Bits => Comp::Bits(BitVec::zeros(0)),
            CompKind::Bytes(len) => Comp::Bytes(Vec::new(), len),
        }
    }
}

/// The client's corrections of one pool, consumed in order.
struct Pool {
    comps: Vec<Comp>,
    unit: usize,
    pos: usize,
    units: usize,
}

impl Pool {
    fn have(&self) -> usize {
        self.units - self.pos
    }

    fn append(&mut self, new: Vec<Comp>, units: usize) {
        let (pos, unit, have) = (self.pos, self.unit, self.have());
        let old = std::mem::take(&mut self.comps);
        self.comps = if old.is_empty() {
            new
        } else {
            old.into_iter()
                .zip(new)
                .map(|(o, n)| match (o, n) {
                    (Comp::Ring(o), Comp::Ring(n)) => Comp::Ring([&o[pos * unit..], &n[..]].concat()),
                    (Comp::Bits(o), Comp::Bits(n)) => Comp::Bits(BitVec::concat(&[&o.slice(pos, have), &n])),
                    (Comp::Bytes(o, len), Comp::Bytes(n, _)) => Comp::Bytes([&o[pos * len..], &n[..]].concat(), len),
                    _ => unreachable!("the same layout"),
                })
                .collect()
        };
        self.pos = 0;
        self.units = have + units;
    }

    fn take(&mut self, n: usize) -> Vec<Comp> {
        assert!(n <= self.have(), "pool: {n} units of {}", self.have());
        let (pos, unit) = (self.pos, self.unit);
        if pos == 0 && n == self.units {
            // All of it, as when keys are dealt just in time: moved, not
            // copied (DCF keys run to gigabytes a layer).
            let out = std::mem::take(&mut self.comps);
            *self = Pool { comps: Vec::new(), unit, pos: 0, units: 0 };
            return out;
        }
        self.pos += n;
        let out = self
            .comps
            .iter()
            .map(|c| match c {
                Comp::Ring(v) => Comp::Ring(v[pos * unit..(pos + n) * unit].to_vec()),
                Comp::Bits(b) => Comp::Bits(b.slice(pos, n)),
                Comp::Bytes(b, len) => Comp::Bytes(b[pos * len..(pos + n) * len].to_vec(), *len),
            })
            .collect();
        if self.have() == 0 {
            // Spent: free it now (a layer's pool is not touched again).
            *self = Pool { comps: Vec::new(), unit, pos: 0, units: 0 };
        }
        out
    }

    /// The bytes components of the last `n` units (the keys just dealt).
    fn tail_bytes(&self, n: usize) -> Vec<&[u8]> {
        self.comps
            .iter()
            .filter_map(|c| match c {
                Comp::Bytes(b, len) => Some(&b[b.len() - n * len..]),
                _ => None,
            })
            .collect()
    }
}

/// Traffic with the dealer in one phase (client side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DealerTraffic {
    /// Request and reply bytes, 4-byte frame headers included.
    pub bytes: u64,
    /// Requests sent.
    pub requests: u64,
    /// Waits for replies (requests sent together wait once).
    pub round_trips: u64,
}

impl std::ops::AddAssign for DealerTraffic {
    fn add_assign(&mut self, o: Self) {
        self.bytes += o.bytes;
        self.requests += o.requests;
        self.round_trips += o.round_trips;
    }
}

/// One party's source of correlated randomness.
pub struct Correlations {
    party: Party,
    ring: Ring,
    streams: Streams,
    dealer: Option<Box<dyn Transport>>,
    pools: HashMap<PoolKey, Pool>,
    /// Client: A·(W − B) + C₁ for rows_max, per weight id.
    prepared: HashMap<u32, Vec<u64>>,
    /// Server: W − B already sent offline, per weight id.
    sent: HashSet<u32>,
    /// Linear triples consumed (each is used once).
    used: HashSet<u32>,
    /// Permutations made so far: (rows, knower, σ when this party knows it).
    perms: Vec<(usize, Party, Option<Vec<usize>>)>,
    online: bool,
    dealt_online: bool,
    /// Pools the offline phase filled.
    planned: HashSet<PoolKey>,
    /// (offline, online since the last drain)
    traffic: (DealerTraffic, DealerTraffic),
    /// Online refills of pools, for reports and tests.
    refills: u64,
}

impl Correlations {
    /// The server's side: draws from its seed, never talks to the dealer.
    pub fn server(ring: Ring, seed: [u8; 32]) -> Self {
        Self::new(Party::Server, ring, seed, None)
    }

    /// The client's side: draws from its seed and asks the dealer for
    /// corrections over `dealer`.
    pub fn client(ring: Ring, seed: [u8; 32], dealer: Box<dyn Transport>) -> Self {
        Self::new(Party::Client, ring, seed, Some(dealer))
    }

    fn new(party: Party, ring: Ring, seed: [u8; 32], dealer: Option<Box<dyn Transport>>) -> Self {
        Correlations {
            party,
            ring,
            streams: Streams::new(ring, seed),
            dealer,
            pools: HashMap::new(),
            prepared: HashMap::new(),
            sent: HashSet::new(),
            used: HashSet::new(),
            perms: Vec::new(),
            online: true,
            dealt_online: false,
            planned: HashSet::new(),
            traffic: Default::default(),
            refills: 0,
        }
    }

    pub fn party(&self) -> Party {
        self.party
    }

    /// Deal the following correlations online from separate streams
    /// (inside compactions); returns the previous setting.
    pub fn set_dealt_online(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.dealt_online, on)
    }

    fn key(&self, k: PoolKey) -> PoolKey {
        if self.dealt_online {
            PoolKey { kind: k.kind | pool::ONLINE, ..k }
        } else {
            k
        }
    }

    pub fn dealt_online(&self) -> bool {
        self.dealt_online
    }

    /// Whether dealer traffic counts as online (the default) or offline.
    pub fn set_online(&mut self, online: bool) {
        self.online = online;
    }

    /// Online dealer traffic since the last call.
    pub fn drain(&mut self) -> DealerTraffic {
        std::mem::take(&mut self.traffic.1)
    }

    /// Offline dealer traffic so far.
    pub fn offline_traffic(&self) -> DealerTraffic {
        self.traffic.0
    }

    /// How many times a planned pool ran dry online and was refilled.
    pub fn refills(&self) -> u64 {
        self.refills
    }

    /// Send requests together, then read their replies in order.
    fn ask_many(&mut self, reqs: &[Vec<u64>]) -> Result<Vec<Vec<u8>>, ChannelError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let ring = self.ring;
        let t = self.dealer.as_mut().expect("only the client asks the dealer");
        let mut bytes = 0u64;
        for req in reqs {
            debug_assert!(req.len() <= kind::MAX_WORDS);
            let msg = MsgWriter::new(ring).u64s(req).finish();
            bytes += msg.len() as u64 + 4;
            t.send(msg).map_err(|e| e.at("a request to the dealer"))?;
        }
        let mut replies = Vec::with_capacity(reqs.len());
        for _ in reqs {
            let reply = t.recv().map_err(|e| e.at("a reply from the dealer"))?;
            bytes += reply.len() as u64 + 4;
            replies.push(reply);
        }
        let tally = if self.online { &mut self.traffic.1 } else { &mut self.traffic.0 };
        *tally += DealerTraffic { bytes, requests: reqs.len() as u64, round_trips: 1 };
        Ok(replies)
    }

    fn ask<T>(&mut self, req: &[u64], read: impl FnOnce(&mut MsgReader) -> Result<T, ChannelError>) -> Result<T, ChannelError> {
        let reply = self.ask_many(&[req.to_vec()])?.pop().expect("one reply");
        let mut rd = MsgReader::new(self.ring, &reply);
        let v = read(&mut rd).map_err(|e| e.at("a reply from the dealer"))?;
        rd.done().map_err(|e| e.at("a reply from the dealer"))?;
        Ok(v)
    }

    /// Tell the dealer the session is over (client only; no-op on the server).
    pub fn finish(&mut self) -> Result<(), ChannelError> {
        if let Some(t) = self.dealer.as_mut() {
            t.send(MsgWriter::new(self.ring).u64s(&[kind::DONE]).finish())?;
        }
        Ok(())
    }

    /// Fill pools ahead (client; the server draws as it goes): one round
    /// trip, requests chunked to keep replies under 64 MB.
    ///
    /// # Errors
    /// When the dealer hangs up, stalls or replies garbage.
    pub fn prefill(&mut self, want: &[(PoolKey, usize)]) -> Result<(), ChannelError> {
        if self.party == Party::Server {
            return Ok(());
        }
        let mut reqs = Vec::new();
        let mut sizes = Vec::new();
        for &(key, units) in want {
            let chunk = ((64usize << 20) / key.unit_bytes(self.ring)).max(1);
            let mut left = units;
            while left > 0 {
                let c = left.min(chunk);
                reqs.push(vec![kind::FILL, key.kind, key.p[0], key.p[1], key.p[2], c as u64]);
                sizes.push((key, c));
                left -= c;
            }
        }
        if !self.online {
            self.planned.extend(want.iter().map(|&(k, _)| k));
        }
        let replies = self.ask_many(&reqs)?;
        for ((key, c), reply) in sizes.into_iter().zip(replies) {
            self.store(key, c, &reply)?;
        }
        Ok(())
    }

    fn store(&mut self, key: PoolKey, units: usize, reply: &[u8]) -> Result<(), ChannelError> {
        let (layout, unit) = key.layout(self.ring).expect("known pool");
        let mut rd = MsgReader::new(self.ring, reply);
        let mut comps = Vec::with_capacity(layout.len());
        for c in layout {
            comps.push(match c {
                CompKind::Ring => Comp::Ring(rd.ring(units * unit)?),
                CompKind::Bits => Comp::Bits(rd.bits(units)?),
                CompKind::Bytes(len) => Comp::Bytes(rd.raw(units * len)?, len),
            });
        }
        rd.done().map_err(|e| e.at("a reply from the dealer"))?;
        self.pools.entry(key).or_insert(Pool { comps: Vec::new(), unit, pos: 0, units: 0 }).append(comps, units);
        Ok(())
    }

    /// `n` units of the client's corrections, refilling from the dealer
    /// (online, counted) when the pool runs dry.
    fn take(&mut self, key: PoolKey, n: usize) -> Result<Vec<Comp>, ChannelError> {
        if n == 0 {
            let (layout, _) = key.layout(self.ring).expect("known pool");
            return Ok(layout.into_iter().map(Comp::empty).collect());
        }
        let have = self.pools.get(&key).map_or(0, |p| p.have());
        if have < n {
            // Shapes that exist only after pruning (attention triples) and
            // compaction correlations were never planned: dealt online by
            // design, not a refill.
            if self.online && self.planned.contains(&key) {
                self.refills += 1;
            }
            self.prefill(&[(key, n - have)])?;
        }
        Ok(self.pools.get_mut(&key).expect("filled").take(n))
    }

    pub fn triple(&mut self, n: usize) -> Result<Triple, ChannelError> {
        let k = self.key(PoolKey::of(pool::TRIPLE));
        let a = self.streams.ring(k, 0, n);
        let b = self.streams.ring(k, 1, n);
        let c = match self.party {
            Party::Server => self.streams.ring(k, 2, n),
            Party::Client => self.take(k, n)?.remove(0).ring(),
        };
        Ok(Triple { a, b, c })
    }

    /// Make sure `count` matrix triples of this shape are at hand (client;
    /// one round trip for all heads of a layer when the shape was not
    /// planned).
    ///
    /// # Errors
    /// When the dealer hangs up, stalls or replies garbage.
    pub fn reserve_mat(&mut self, m: usize, k: usize, n: usize, count: usize) -> Result<(), ChannelError> {
        let key = self.key(PoolKey::mat(m, k, n));
        if self.party == Party::Server || count == 0 {
            return Ok(());
        }
        let have = self.pools.get(&key).map_or(0, |p| p.have());
        if have < count {
            if self.online && self.planned.contains(&key) {
                self.refills += 1;
            }
            self.prefill(&[(key, count - have)])?;
        }
        Ok(())
    }

    /// A (m × k), B (k × n), C = A·B.
    pub fn mat_triple(&mut self, m: usize, k: usize, n: usize) -> Result<Triple, ChannelError> {
        let key = self.key(PoolKey::mat(m, k, n));
        let a = self.streams.ring(key, 0, m * k);
        let b = self.streams.ring(key, 1, k * n);
        let c = match self.party {
            Party::Server => self.streams.ring(key, 2, m * n),
            Party::Client => self.take(key, 1)?.remove(0).ring(),
        };
        Ok(Triple { a, b, c })
    }

    pub fn bit_triple(&mut self, n: usize) -> Result<BitTriple, ChannelError> {
        let k = self.key(PoolKey::of(pool::BIT_TRIPLE));
        let a = self.streams.bits(k, 0, n);
        let b = self.streams.bits(k, 1, n);
        let c = match self.party {
            Party::Server => self.streams.bits(k, 2, n),
            Party::Client => self.take(k, n)?.remove(0).bits(),
        };
        Ok(BitTriple { a, b, c })
    }

    /// `high_shift`: also share ⌊r / 2^k⌋ (for truncation by k).
    pub fn masked_bits(&mut self, n: usize, high_shift: Option<u32>) -> Result<MaskedBits, ChannelError> {
        let key = self.key(PoolKey::masked_bits(high_shift));
        let r = self.streams.ring(key, 0, n);
        match self.party {
            Party::Server => {
                let planes = self.streams.planes(key, n);
                let high = if high_shift.is_some() { self.streams.ring(key, 3, n) } else { Vec::new() };
                Ok(MaskedBits { r, planes, high })
            }
            Party::Client => {
                let mut comps = self.take(key, n)?;
                let high = if high_shift.is_some() { comps.pop().expect("high").ring() } else { Vec::new() };
                let planes = comps.into_iter().map(Comp::bits).collect();
                Ok(MaskedBits { r, planes, high })
            }
        }
    }

    pub fn b2a(&mut self, n: usize) -> Result<B2aPair, ChannelError> {
        let k = self.key(PoolKey::of(pool::B2A));
        let t = self.streams.bits(k, 0, n);
        let t_arith = match self.party {
            Party::Server => self.streams.ring(k, 1, n),
            Party::Client => self.take(k, n)?.remove(0).ring(),
        };
        Ok(B2aPair { t, t_arith })
    }

    pub fn and_arith(&mut self, n: usize) -> Result<AndArith, ChannelError> {
        let k = self.key(PoolKey::of(pool::AND_ARITH));
        let u = self.streams.bits(k, 0, n);
        let v = self.streams.bits(k, 1, n);
        let (ua, va, uva) = match self.party {
            Party::Server => (self.streams.ring(k, 2, n), self.streams.ring(k, 3, n), self.streams.ring(k, 4, n)),
            Party::Client => {
                let mut c = self.take(k, n)?.into_iter().map(Comp::ring);
                (c.next().expect("ua"), c.next().expect("va"), c.next().expect("uva"))
            }
        };
        Ok(AndArith { u, v, ua, va, uva })
    }

    pub fn mux(&mut self, n: usize) -> Result<MuxCorr, ChannelError> {
        let k = self.key(PoolKey::of(pool::MUX));
        let t = self.streams.bits(k, 0, n);
        let v = self.streams.ring(k, 1, n);
        let (t_arith, w) = match self.party {
            Party::Server => (self.streams.ring(k, 2, n), self.streams.ring(k, 3, n)),
            Party::Client => {
                let mut c = self.take(k, n)?.into_iter().map(Comp::ring);
                (c.next().expect("t"), c.next().expect("w"))
            }
        };
        Ok(MuxCorr { t, t_arith, v, w })
    }

    // ---- DCF keys: the client forwards their correction words ----

    /// Units of `key` at hand: the client's pool, or on the server the
    /// correction words the client forwarded.
    pub fn have(&self, key: PoolKey) -> usize {
        self.pools.get(&key).map_or(0, Pool::have)
    }

    /// Client: the correction words of the last `units` units of each
    /// pool, as one message body for the server.
    pub fn keys_to_forward(&self, want: &[(PoolKey, usize)], mut msg: MsgWriter) -> MsgWriter {
        for &(key, units) in want {
            if units > 0 {
                for b in self.pools[&key].tail_bytes(units) {
                    msg = msg.raw(b);
                }
            }
        }
        msg
    }

    /// Server: store the correction words the client forwarded.
    ///
    /// # Errors
    /// When the message is short.
    pub fn store_forwarded(&mut self, want: &[(PoolKey, usize)], rd: &mut MsgReader) -> Result<(), ChannelError> {
        for &(key, units) in want {
            let (layout, unit) = key.layout(self.ring).expect("known pool");
            let mut comps = Vec::new();
            for c in layout {
                if let CompKind::Bytes(len) = c {
                    comps.push(Comp::Bytes(rd.raw(units * len)?, len));
                }
            }
            self.pools.entry(key).or_insert(Pool { comps: Vec::new(), unit, pos: 0, units: 0 }).append(comps, units);
        }
        Ok(())
    }

    /// Server: units forwarded by the client; client: its own pool (filled
    /// beforehand by the caller, see [`super::fss`]).
    fn take_keys(&mut self, key: PoolKey, n: usize) -> Vec<Comp> {
        let have = self.have(key);
        assert!(have >= n, "DCF keys: {n} wanted, {have} at hand");
        self.pools.get_mut(&key).expect("filled").take(n)
    }

    /// Client: fetch keys (a refill when the pool was planned).
    ///
    /// # Errors
    /// When the dealer hangs up, stalls or replies garbage.
    pub fn refill_keys(&mut self, want: &[(PoolKey, usize)]) -> Result<(), ChannelError> {
        if self.online {
            self.refills += want.iter().filter(|(k, _)| self.planned.contains(k)).count() as u64;
        }
        self.prefill(want)
    }

    /// A key pool's units: its correction words (in layout order) and its
    /// ring components, which the server draws from its stream components
    /// `server_comps` and the client takes from the dealer's reply.
    fn key_units(&mut self, k: PoolKey, n: usize, server_comps: &[u64]) -> (Vec<Vec<u8>>, Vec<Vec<u64>>) {
        let (mut cws, mut rings) = (Vec::new(), Vec::new());
        for c in self.take_keys(k, n) {
            match c {
                Comp::Bytes(b, _) => cws.push(b),
                Comp::Ring(v) => rings.push(v),
                Comp::Bits(_) => unreachable!("DCF pools hold no bits"),
            }
        }
        if self.party == Party::Server {
            rings = server_comps.iter().map(|&c| self.streams.ring(k, c, n)).collect();
        }
        (cws, rings)
    }

    pub fn dcf_msb(&mut self, k: PoolKey, n: usize) -> DcfMsb {
        let (r, roots) = (self.streams.ring(k, 0, n), self.streams.seeds(k, 2, n));
        let (cw, ring) = self.key_units(k, n, &[1]);
        let ([cw], [rho]) = (take(cw), take(ring));
        DcfMsb { r, rho, roots, cw }
    }

    pub fn dcf_trunc(&mut self, k: PoolKey, n: usize) -> DcfTrunc {
        let r = self.streams.ring(k, 0, n);
        let roots = [self.streams.seeds(k, 2, n), self.streams.seeds(k, 3, n)];
        let (cw, ring) = self.key_units(k, n, &[4]);
        let [high] = take(ring);
        DcfTrunc { wrap: k.p[2] as u32, r, roots, cw: take(cw), high }
    }

    pub fn dcf_msb_mul(&mut self, k: PoolKey, n: usize) -> DcfMsbMul {
        let r = self.streams.ring(k, 0, n);
        let roots = self.streams.seeds(k, 2, n);
        let (cw, ring) = self.key_units(k, n, &[1, 3]);
        let ([cw], [rho, r_rho]) = (take(cw), take(ring));
        DcfMsbMul { msb: DcfMsb { r, rho, roots, cw }, r_rho }
    }

    pub fn dcf_trunc_mul(&mut self, k: PoolKey, n: usize) -> DcfTruncMul {
        let (r, s) = (self.streams.ring(k, 0, n), self.streams.ring(k, 1, n));
        let roots = [self.streams.seeds(k, 2, n), self.streams.seeds(k, 3, n)];
        let s1 = self.streams.ring(k, 8, n);
        let (cw, ring) = self.key_units(k, n, &[4, 7, 9]);
        let ([c1, c2], [high, s_high, s1_r]) = (take(cw), take(ring));
        DcfTruncMul { trunc: DcfTrunc { wrap: k.p[2] as u32, r, roots, cw: [c1, c2], high }, s, s_high, s1, s1_r }
    }

    // ---- linear layers: matrix Beaver triples with the server's W − B ----

    /// Mark the triple of weight `id` used; each serves one product.
    ///
    /// # Panics
    /// When it was used before in this session (a mask used twice would
    /// show the server the difference of two inputs).
    pub fn use_linear(&mut self, id: u32) {
        assert!(self.used.insert(id), "the triple of weight {id} used twice in one session");
    }

    /// Client: the first `len` elements of A (row-major, so a row prefix).
    pub fn linear_a(&self, id: u32, len: usize) -> Vec<u64> {
        self.streams.prefix(TAG_LINEAR, id, 0, len)
    }

    /// Server: B (laid out as W is: `out × in`).
    pub fn linear_b(&self, id: u32, len: usize) -> Vec<u64> {
        self.streams.prefix(TAG_LINEAR, id, 1, len)
    }

    /// Server: the first `len` elements of C₀.
    pub fn linear_c0(&self, id: u32, len: usize) -> Vec<u64> {
        self.streams.prefix(TAG_LINEAR, id, 2, len)
    }

    /// Client: C₁ = A·B − C₀ for `rows` rows of matrix `id`.
    ///
    /// # Errors
    /// When the dealer hangs up, stalls or replies garbage.
    pub fn linear_c1(&mut self, id: u32, rows: usize, in_dim: usize, out_dim: usize) -> Result<Vec<u64>, ChannelError> {
        let (req, len) = Self::linear_request(id, rows, in_dim, out_dim);
        self.ask(&req, |rd| rd.ring(len))
    }

    fn linear_request(id: u32, rows: usize, in_dim: usize, out_dim: usize) -> (Vec<u64>, usize) {
        (vec![kind::LINEAR, id as u64, rows as u64, in_dim as u64, out_dim as u64], rows * out_dim)
    }

    /// Client, offline: C₁ of many triples in one round trip.
    ///
    /// # Errors
    /// As [`Correlations::linear_c1`].
    /// `want`: (id, rows, in, out) per matrix, as the offline plan lists them.
    pub fn linear_c1_many(&mut self, want: &[(u32, usize, usize, usize)]) -> Result<Vec<Vec<u64>>, ChannelError> {
        let (reqs, lens): (Vec<_>, Vec<_>) = want.iter().map(|&(id, r, i, o)| Self::linear_request(id, r, i, o)).unzip();
        let replies = self.ask_many(&reqs)?;
        let ring = self.ring;
        replies
            .iter()
            .zip(lens)
            .map(|(reply, len)| {
                let mut rd = MsgReader::new(ring, reply);
                let v = rd.ring(len)?;
                rd.done()?;
                Ok(v)
            })
            .collect::<Result<_, ChannelError>>()
            .map_err(|e| e.at("a reply from the dealer"))
    }

    /// Client: keep A·(W − B) + C₁ (rows_max rows) for the online phase.
    pub fn set_prepared(&mut self, id: u32, share: Vec<u64>) {
        self.prepared.insert(id, share);
    }

    pub fn prepared(&mut self, id: u32) -> Option<Vec<u64>> {
        self.prepared.remove(&id)
    }

    /// Server: W − B of this weight went out offline.
    pub fn set_sent(&mut self, id: u32) {
        self.sent.insert(id);
    }

    pub fn was_sent(&self, id: u32) -> bool {
        self.sent.contains(&id)
    }

    // ---- permutations (dealt online: their sizes are revealed counts) ----

    /// A fresh random permutation of `n` rows known to `knower` only;
    /// returns its handle.
    pub fn perm_new(&mut self, n: usize, knower: Party) -> Result<usize, ChannelError> {
        let perm = (knower == self.party).then(|| self.streams.perm_stream().perm(n));
        if self.party == Party::Client {
            self.ask(&[kind::PERM_NEW, n as u64, knower.index() as u64], |_| Ok(()))?;
        }
        self.perms.push((n, knower, perm));
        Ok(self.perms.len() - 1)
    }

    /// Masks to apply permutation `handle` (or its inverse) to rows of
    /// `width`: the knower gets (σ, Δ), the other (a, b) with σ(a) = b + Δ.
    pub fn perm_apply(&mut self, handle: usize, inverse: bool, width: usize) -> Result<PermShare, ChannelError> {
        let (n, knower, perm) = self.perms[handle].clone();
        let len = n * width;
        let ring = self.ring;
        let req = [kind::PERM_APPLY, handle as u64, inverse as u64, width as u64];
        let perm = perm.map(|p| if inverse { arith::invert_perm(&p) } else { p });
        Ok(match (self.party, knower) {
            (Party::Server, Party::Server) => {
                PermShare::Knower { perm: perm.expect("knower"), delta: self.streams.perm_stream().ring(ring, len) }
            }
            (Party::Client, Party::Server) => {
                let a = self.streams.perm_stream().ring(ring, len);
                let b = self.ask(&req, |rd| rd.ring(len))?;
                PermShare::Other { a, b }
            }
            (Party::Server, Party::Client) => {
                let a = self.streams.perm_stream().ring(ring, len);
                let b = self.streams.perm_stream().ring(ring, len);
                PermShare::Other { a, b }
            }
            (Party::Client, Party::Client) => {
                let delta = self.ask(&req, |rd| rd.ring(len))?;
                PermShare::Knower { perm: perm.expect("knower"), delta }
            }
        })
    }
}

/// What the dealer did in one session: DCF key generation (the costly
/// part of its work) in time and reply bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DealerStats {
    pub keygen_ns: u64,
    /// Bytes of replies that carried keys (correction words and the other
    /// corrections dealt with them), sent to the client.
    pub key_bytes: u64,
}

/// A vector of exactly N items as an array (a pool's layout fixes N).
fn take<T, const N: usize>(v: Vec<T>) -> [T; N] {
    let len = v.len();
    v.try_into().unwrap_or_else(|_| panic!("{len} components, {N} expected"))
}

/// Fresh seeds for a session: (server's, client's), from the dealer's RNG.
pub fn session_seeds(rng: &mut impl rand::RngCore) -> ([u8; 32], [u8; 32]) {
    let mut s0 = [0u8; 32];
    let mut s1 = [0u8; 32];
    rng.fill_bytes(&mut s0);
    rng.fill_bytes(&mut s1);
    (s0, s1)
}

/// The dealer's answer to one FILL: corrections for `count` units of `key`,
/// replaying both seeds' streams.
fn fill(ring: Ring, key: PoolKey, count: usize, p0: &mut Streams, p1: &mut Streams, out: MsgWriter) -> Result<MsgWriter, String> {
    let n = count;
    if key.kind & !(pool::ONLINE | 0xff) != 0 {
        return Err(format!("unknown pool kind {}", key.kind));
    }
    Ok(match key.kind & !pool::ONLINE {
        pool::TRIPLE => {
            let (a0, b0, c0) = (p0.ring(key, 0, n), p0.ring(key, 1, n), p0.ring(key, 2, n));
            let (a1, b1) = (p1.ring(key, 0, n), p1.ring(key, 1, n));
            let c = arith::mul_cyclic(ring, &arith::add(ring, &a0, &a1), &arith::add(ring, &b0, &b1));
            out.ring(&arith::sub(ring, &c, &c0))
        }
        pool::MAT_TRIPLE => {
            let [m, k, nn] = key.p.map(|v| v as usize);
            if m.checked_mul(k).and_then(|v| v.checked_mul(nn)).is_none_or(|v| v > 1 << 34) {
                return Err(format!("a {m} × {k} × {nn} matrix triple"));
            }
            let mut out = out;
            for _ in 0..n {
                let (a0, b0, c0) = (p0.ring(key, 0, m * k), p0.ring(key, 1, k * nn), p0.ring(key, 2, m * nn));
                let (a1, b1) = (p1.ring(key, 0, m * k), p1.ring(key, 1, k * nn));
                let c = arith::matmul(ring, &arith::add(ring, &a0, &a1), &arith::add(ring, &b0, &b1), m, k, nn);
                out = out.ring(&arith::sub(ring, &c, &c0));
            }
            out
        }
        pool::BIT_TRIPLE => {
            let (a0, b0, c0) = (p0.bits(key, 0, n), p0.bits(key, 1, n), p0.bits(key, 2, n));
            let (a1, b1) = (p1.bits(key, 0, n), p1.bits(key, 1, n));
            out.bits(&a0.xor(&a1).and(&b0.xor(&b1)).xor(&c0))
        }
        pool::MASKED_BITS => {
            let shift = key.p[0];
            if shift > ring.bits() as u64 {
                return Err(format!("a shift of {} bits", shift - 1));
            }
            let r = arith::add(ring, &p0.ring(key, 0, n), &p1.ring(key, 0, n));
            let mut out = out;
            for (b, p0b) in p0.planes(key, n).iter().enumerate() {
                out = out.bits(&BitVec::plane(&r, b as u32).xor(p0b));
            }
            if shift != 0 {
                let h0 = p0.ring(key, 3, n);
                let high: Vec<u64> = r.iter().map(|&v| v >> (shift - 1)).collect();
                out = out.ring(&arith::sub(ring, &high, &h0));
            }
            out
        }
        pool::B2A => {
            let (t0, ta0) = (p0.bits(key, 0, n), p0.ring(key, 1, n));
            let t1 = p1.bits(key, 0, n);
            out.ring(&arith::sub(ring, &t0.xor(&t1).to_u64s(), &ta0))
        }
        pool::MUX => {
            let (t0, v0, ta0, w0) = (p0.bits(key, 0, n), p0.ring(key, 1, n), p0.ring(key, 2, n), p0.ring(key, 3, n));
            let (t1, v1) = (p1.bits(key, 0, n), p1.ring(key, 1, n));
            let t = t0.xor(&t1).to_u64s();
            let tv = arith::mul_cyclic(ring, &t, &arith::add(ring, &v0, &v1));
            out.ring(&arith::sub(ring, &t, &ta0)).ring(&arith::sub(ring, &tv, &w0))
        }
        pool::AND_ARITH => {
            let (u0, v0) = (p0.bits(key, 0, n), p0.bits(key, 1, n));
            let (ua0, va0, uva0) = (p0.ring(key, 2, n), p0.ring(key, 3, n), p0.ring(key, 4, n));
            let (u1, v1) = (p1.bits(key, 0, n), p1.bits(key, 1, n));
            let u = u0.xor(&u1).to_u64s();
            let v = v0.xor(&v1).to_u64s();
            let uv = arith::mul_cyclic(ring, &u, &v);
            out.ring(&arith::sub(ring, &u, &ua0)).ring(&arith::sub(ring, &v, &va0)).ring(&arith::sub(ring, &uv, &uva0))
        }
        pool::DCF_MSB => {
            let r = arith::add(ring, &p0.ring(key, 0, n), &p1.ring(key, 0, n));
            let rho0 = p0.ring(key, 1, n);
            let keys = super::fss::deal_msb(ring, &r, false, &p0.seeds(key, 2, n), &p1.seeds(key, 2, n));
            let rho: Vec<u64> = r.iter().map(|&v| v >> (ring.bits() - 1)).collect();
            out.raw(&keys).ring(&arith::sub(ring, &rho, &rho0))
        }
        pool::DCF_TRUNC => {
            let (shift, wrap) = (key.p[0] as u32, key.p[2] as u32);
            if shift == 0 || shift >= ring.bits() || wrap == 0 || wrap > ring.bits() {
                return Err(format!("a truncation by {shift} bits with a {wrap}-bit wrap"));
            }
            let r = arith::add(ring, &p0.ring(key, 0, n), &p1.ring(key, 0, n));
            let roots = [(p0.seeds(key, 2, n), p1.seeds(key, 2, n)), (p0.seeds(key, 3, n), p1.seeds(key, 3, n))];
            let (k1, k2) = super::fss::deal_trunc(ring, shift, wrap, &r, &roots, None);
            let high: Vec<u64> = r.iter().map(|&v| v >> shift).collect();
            out.raw(&k1).raw(&k2).ring(&arith::sub(ring, &high, &p0.ring(key, 4, n)))
        }
        pool::DCF_MSB_MUL => {
            let r = arith::add(ring, &p0.ring(key, 0, n), &p1.ring(key, 0, n));
            let (rho0, r_rho0) = (p0.ring(key, 1, n), p0.ring(key, 3, n));
            let keys = super::fss::deal_msb(ring, &r, true, &p0.seeds(key, 2, n), &p1.seeds(key, 2, n));
            let rho: Vec<u64> = r.iter().map(|&v| v >> (ring.bits() - 1)).collect();
            let r_rho = arith::mul_cyclic(ring, &r, &rho);
            out.raw(&keys).ring(&arith::sub(ring, &rho, &rho0)).ring(&arith::sub(ring, &r_rho, &r_rho0))
        }
        pool::DCF_TRUNC_MUL => {
            let (shift, wrap) = (key.p[0] as u32, key.p[2] as u32);
            if shift == 0 || shift >= ring.bits() || wrap == 0 || wrap > ring.bits() {
                return Err(format!("a truncation by {shift} bits with a {wrap}-bit wrap"));
            }
            let r = arith::add(ring, &p0.ring(key, 0, n), &p1.ring(key, 0, n));
            let sm = arith::add(ring, &p0.ring(key, 1, n), &p1.ring(key, 1, n));
            let roots = [(p0.seeds(key, 2, n), p1.seeds(key, 2, n)), (p0.seeds(key, 3, n), p1.seeds(key, 3, n))];
            let (k1, k2) = super::fss::deal_trunc(ring, shift, wrap, &r, &roots, Some(&sm));
            let high: Vec<u64> = r.iter().map(|&v| v >> shift).collect();
            let s_high = arith::mul_cyclic(ring, &sm, &high);
            let s1 = arith::add(ring, &p0.ring(key, 8, n), &p1.ring(key, 8, n));
            let s1_r = arith::mul_cyclic(ring, &s1, &r);
            out.raw(&k1).raw(&k2)
                .ring(&arith::sub(ring, &high, &p0.ring(key, 4, n)))
                .ring(&arith::sub(ring, &s_high, &p0.ring(key, 7, n)))
                .ring(&arith::sub(ring, &s1_r, &p0.ring(key, 9, n)))
        }
        k => return Err(format!("unknown pool kind {k}")),
    })
}

/// The dealer's side of one session: answers the client's requests until it
/// says it is done, replaying both parties' seeds. It holds no model: every
/// request is a kind and a few size words.
///
/// # Errors
/// When the client hangs up, stalls or sends a request that does not parse.
pub fn serve_dealer(ring: Ring, seeds: ([u8; 32], [u8; 32]), client: &mut dyn Transport) -> Result<DealerStats, ChannelError> {
    let mut stats = DealerStats::default();
    let mut p0 = Streams::new(ring, seeds.0);
    let mut p1 = Streams::new(ring, seeds.1);
    let mut perms: Vec<(usize, Vec<usize>)> = Vec::new();
    let garbage = |msg: String| ChannelError::Garbage { at: " (request to the dealer)".into(), msg };
    loop {
        let req = client.recv().map_err(|e| e.at("waiting for a request from the client"))?;
        let w = parse_request(&req).map_err(garbage)?;
        let arg = |i: usize| -> Result<usize, ChannelError> {
            let v = *w.get(i).ok_or_else(|| garbage(format!("request {} lacks argument {i}", w[0])))?;
            // No correlation is this large; refuse rather than allocate.
            if v > 1 << 32 {
                return Err(garbage(format!("argument {i} of request {} is {v}", w[0])));
            }
            Ok(v as usize)
        };
        let out = MsgWriter::new(ring);
        let reply = match w[0] {
            kind::DONE => return Ok(stats),
            kind::FILL => {
                let key = PoolKey { kind: w.get(1).copied().unwrap_or(0), p: [arg(2)? as u64, arg(3)? as u64, arg(4)? as u64] };
                let count = arg(5)?;
                let start = std::time::Instant::now();
                let reply = fill(ring, key, count, &mut p0, &mut p1, out).map_err(garbage)?;
                if key.is_fss() {
                    stats.keygen_ns += start.elapsed().as_nanos() as u64;
                    stats.key_bytes += reply.len() as u64;
                }
                reply
            }
            kind::LINEAR => {
                let (id, rows, in_dim, out_dim) = (arg(1)? as u32, arg(2)?, arg(3)?, arg(4)?);
                if rows.checked_mul(in_dim.max(out_dim)).is_none_or(|v| v > 1 << 31) || in_dim.checked_mul(out_dim).is_none_or(|v| v > 1 << 31) {
                    return Err(garbage(format!("a {rows} × {in_dim} × {out_dim} product")));
                }
                let a = p1.prefix(TAG_LINEAR, id, 0, rows * in_dim);
                let bt = p0.prefix(TAG_LINEAR, id, 1, in_dim * out_dim);
                let c0 = p0.prefix(TAG_LINEAR, id, 2, rows * out_dim);
                let ab = if rows == 0 { Vec::new() } else { arith::rows_dot(ring, &a, &bt, in_dim, out_dim) };
                out.ring(&arith::sub(ring, &ab, &c0))
            }
            kind::PERM_NEW => {
                let (n, knower) = (arg(1)?, arg(2)?);
                let perm = match knower {
                    0 => p0.perm_stream().perm(n),
                    1 => p1.perm_stream().perm(n),
                    _ => return Err(garbage(format!("party {knower}"))),
                };
                perms.push((knower, perm));
                out
            }
            kind::PERM_APPLY => {
                let (h, inverse, width) = (arg(1)?, arg(2)? == 1, arg(3)?);
                let (knower, perm) = perms.get(h).ok_or_else(|| garbage(format!("no permutation {h}")))?;
                let perm = if inverse { arith::invert_perm(perm) } else { perm.clone() };
                let len = perm.len() * width;
                if *knower == 0 {
                    // Server knows σ: it drew Δ; the client drew a, gets b = σ(a) − Δ.
                    let delta = p0.perm_stream().ring(ring, len);
                    let a = p1.perm_stream().ring(ring, len);
                    out.ring(&arith::sub(ring, &arith::permute_rows(&a, width, &perm), &delta))
                } else {
                    // Client knows σ: the server drew a, b; the client gets Δ = σ(a) − b.
                    let a = p0.perm_stream().ring(ring, len);
                    let b = p0.perm_stream().ring(ring, len);
                    out.ring(&arith::sub(ring, &arith::permute_rows(&a, width, &perm), &b))
                }
            }
            k => return Err(garbage(format!("unknown request kind {k}"))),
        };
        client.send(reply.finish()).map_err(|e| e.at("replying to the client"))?;
    }
}

/// A request's words: 1 to [`kind::MAX_WORDS`] little-endian u64s.
///
/// # Errors
/// Any other length.
pub fn parse_request(req: &[u8]) -> Result<Vec<u64>, String> {
    if req.len() < 8 || !req.len().is_multiple_of(8) || req.len() > 8 * kind::MAX_WORDS {
        return Err(format!("a request of {} bytes", req.len()));
    }
    Ok(req.chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}
