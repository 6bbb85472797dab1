//! The secret-shared backend: each party holds additive shares over
//! Z_{2^ℓ} (and XOR shares of bits) and runs [`Backend`]'s primitives as
//! two-party protocols with the dealer's correlations ([`super::dealer`]).
//!
//! | primitive | protocol | rounds |
//! |---|---|---|
//! | linear layer `x·W` | matrix Beaver triple (A, B, C₀ + C₁ = A·B), W − B sent offline by the server; online the client sends x₁ − A; server: (x₀ + x₁ − A)·W + C₀, client: A·(W − B) + C₁ | 1 |
//! | output | the server sends its shares; the client alone learns the result | 1 |
//! | secret × secret | Beaver triple (element-wise or matrix) | 1 |
//! | exact truncation | open y + r (y = x + 2^(ℓ−1)), two comparisons with r's bits in one circuit, wrap and borrow lifted to the ring together | 2 + circuit depth (7 at 37/12) |
//! | MSB / comparison | open x + r, ℓ−1-bit comparison circuit on r's bit shares | 1 + ⌈log₂(ℓ−1)⌉ |
//! | MSB, exact truncation with `Suite::Fss` | open x + r, evaluate the dealer's DCF keys ([`super::fss`]); B2A after an MSB is free | 1 |
//! | x·msb(x), y·⌊u/2^k⌋ with `Suite::Fss` | the same opening (and y + s beside it); twin keys whose payloads carry the mask | 1 |
//! | MUX | open b ⊕ t and (x₁ − x₀) − v together | 1 |
//! | bit → ring | open b ⊕ t | 1 |
//! | compaction, partition | [`super::sort`] | see there |
//!
//! A protocol error (the peer hung up, stalled or sent garbage) aborts the
//! forward by unwinding with [`Abort`]; [`super::session`] turns it back into
//! an error, so the user sees one clear message.

use super::arith;
use super::bits::BitVec;
use super::channel::{ChannelError, MsgReader, MsgWriter, Transport};
use super::cost::{CommCounts, CommTally};
use super::dealer::{Correlations, Party, PoolKey};
use super::sort::{Compaction, Schedule};
use crate::fixed::cost::{swap_compaction, PrimitiveCounts};
use crate::fixed::{Ring, Truncation};
use crate::secure::backend::{Backend, PublicMatrix};
use crate::secure::report::{Meter, OpClass, Scope};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::time::Instant;

/// Shared bits as the shares backend holds them: XOR shares, and where the
/// protocol that made them gave them for free (a comparison on DCF keys),
/// also their additive shares in the ring, so that turning them into ring
/// values costs nothing.
#[derive(Clone, Debug)]
pub struct SharedBits {
    pub x: BitVec,
    pub a: Option<Vec<u64>>,
}

impl SharedBits {
    fn xor(x: BitVec) -> Self {
        SharedBits { x, a: None }
    }
}

/// The payload a failed protocol step unwinds with.
#[derive(Debug)]
pub struct Abort(pub ChannelError);

/// How comparisons (MSB) and exact truncations run: on the dealer's bit
/// correlations with a comparison circuit (an AND tree, 1 + ⌈log₂ ℓ⌉
/// rounds), or on its DCF keys (function secret sharing, one round;
/// [`super::fss`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Suite {
    #[default]
    AndTree,
    Fss,
    /// [`Suite::Fss`] whose truncations find the wrap from the top
    /// [`BOUNDED_WRAP_BITS`] bits only ([`super::fss`]): a third of the
    /// keys' bytes and evaluation, exact for every x with
    /// |x| ≤ 2^(ℓ−1) − 2^(ℓ−BOUNDED_WRAP_BITS): all but the outer 1/256 of
    /// each half of the ring, where a value has all but overflowed.
    FssBounded,
}

/// Input bits of [`Suite::FssBounded`]'s wrap key.
pub const BOUNDED_WRAP_BITS: u32 = 9;

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::AndTree => "and-tree",
            Suite::Fss => "fss",
            Suite::FssBounded => "fss-bounded",
        }
    }

    /// Whether comparisons and exact truncations run on DCF keys.
    pub fn dcf(self) -> bool {
        self != Suite::AndTree
    }

    /// Input bits of the truncation's wrap key in `ring`.
    pub fn wrap_bits(self, ring: Ring) -> u32 {
        match self {
            Suite::FssBounded => BOUNDED_WRAP_BITS.min(ring.bits()),
            _ => ring.bits(),
        }
    }
}

/// Options both parties must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharesOptions {
    pub truncation: Truncation,
    pub compaction: Compaction,
    pub suite: Suite,
    /// Let [`Backend::peek`] open values (uncounted) for the report's
    /// trace. Only for in-process evaluation: a deployment never peeks.
    pub analysis: bool,
}

/// One party's backend. See the module docs.
pub struct SharesBackend {
    pub(super) party: Party,
    pub(super) ring: Ring,
    pub(super) opts: SharesOptions,
    peer: Box<dyn Transport>,
    pub(super) corr: Correlations,
    meter: Meter,
    pub(super) comm: CommTally,
    /// The client's own randomness for sharing its input (not the dealer's).
    input_rng: ChaCha20Rng,
    scope_since: Instant,
    /// In the offline phase: traffic goes to `offline`, not to `comm`.
    in_offline: bool,
    /// Server: the online clock starts when the client's input arrives (not
    /// while the client finishes its offline phase).
    awaiting_input: bool,
    pub(super) offline: CommCounts,
    /// The offline plan's DCF keys not dealt yet ([`super::fss`]: dealt
    /// just before the step that uses them, counted offline).
    pub(super) key_plan: std::collections::HashMap<PoolKey, usize>,
    #[cfg(test)]
    pub(super) leak: Leak,
}

/// Deliberately broken variants, for tests that must see a leak.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Leak {
    #[default]
    None,
    /// The client sends its share x₁ of a linear layer's input unmasked.
    ClientShareUnmasked,
    /// The server sends W itself instead of W − B.
    WeightsUnmasked,
}

/// One weight matrix of the server's (`in_dim × out_dim`).
#[derive(Clone, Copy, Debug)]
struct WeightRef {
    id: u32,
    in_dim: usize,
    out_dim: usize,
}

/// What the offline phase prepares: the weights' triples (id, rows_max,
/// in, out) and how many units of each pool (from [`super::plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfflinePlan {
    pub matrices: Vec<(u32, usize, usize, usize)>,
    pub pools: Vec<(PoolKey, usize)>,
}

impl SharesBackend {
    pub fn new(
        party: Party,
        ring: Ring,
        opts: SharesOptions,
        peer: Box<dyn Transport>,
        corr: Correlations,
        input_seed: u64,
    ) -> Self {
        assert_eq!(party, corr.party(), "correlations of the other party");
        SharesBackend {
            party,
            ring,
            opts,
            peer,
            corr,
            meter: Meter::default(),
            comm: CommTally::default(),
            input_rng: ChaCha20Rng::seed_from_u64(input_seed),
            scope_since: Instant::now(),
            in_offline: false,
            awaiting_input: false,
            offline: CommCounts::default(),
            key_plan: Default::default(),
            #[cfg(test)]
            leak: Leak::None,
        }
    }

    /// The offline phase: everything that does not depend on the input.
    /// The server sends W − B of every weight matrix in one message;
    /// the client receives it, fetches the dealer's C₁ and the pools' corrections
    /// in one round trip and computes its shares A·(W − B) + C₁ for
    /// rows_max rows. `model` is the server's (the client's holds only
    /// shapes and ids). Its traffic and time are counted apart
    /// ([`SharesBackend::offline`]).
    ///
    /// # Panics
    /// If the plan names a weight the model does not have.
    pub fn offline_phase(&mut self, model: &crate::secure::bert::EngineModel, plan: &OfflinePlan) {
        let start = Instant::now();
        self.in_offline = true;
        self.corr.set_online(false);
        let r = self.ring;
        let (keys, pools): (Vec<_>, Vec<_>) = plan.pools.iter().partition(|(k, _)| k.is_fss());
        self.key_plan = keys.into_iter().collect();
        if self.is_server() {
            let mut msg = MsgWriter::new(r);
            for &(id, _, i, o) in &plan.matrices {
                let w = model.matrix_by_id(id).unwrap_or_else(|| panic!("no weight matrix {id}"));
                assert_eq!((w.in_dim, w.out_dim), (i, o), "matrix {id}");
                msg = msg.ring(&self.weight_minus_b(id, &w.w_t.iter().map(|&v| r.reduce(v as u64)).collect::<Vec<_>>()));
                self.corr.set_sent(id);
            }
            self.send_only(msg.finish());
        } else {
            let got = self.recv_only();
            let wmbs = self.parse(&got, |rd| plan.matrices.iter().map(|&(_, _, i, o)| rd.ring(i * o)).collect::<Result<Vec<_>, _>>());
            let c1 = self.corr.linear_c1_many(&plan.matrices);
            let c1 = self.ok(c1);
            let f = self.corr.prefill(&pools);
            self.ok(f);
            for ((&(id, rows, i, o), c1), wmb) in plan.matrices.iter().zip(c1).zip(wmbs) {
                let share = self.client_linear_share(WeightRef { id, in_dim: i, out_dim: o }, rows, &wmb, &c1);
                self.corr.set_prepared(id, share);
            }
        }
        let off = self.corr.offline_traffic();
        self.offline.dealer_bytes = off.bytes;
        self.offline.dealer_round_trips = off.round_trips;
        self.offline.time_ns += start.elapsed().as_nanos() as u64;
        self.in_offline = false;
        self.corr.set_online(true);
        self.scope_since = Instant::now();
        self.awaiting_input = true;
    }

    /// Planned DCF keys from the dealer, forwarded to the server: offline
    /// traffic and time (they do not depend on the input).
    pub(super) fn deal_keys_offline(&mut self, want: &[(PoolKey, usize)]) {
        if want.iter().all(|&(_, n)| n == 0) {
            return;
        }
        let scope = self.meter.scope();
        self.charge_time(scope);
        let start = Instant::now();
        let was = std::mem::replace(&mut self.in_offline, true);
        self.corr.set_online(false);
        self.forward_keys(want);
        self.corr.set_online(!was);
        self.in_offline = was;
        let off = self.corr.offline_traffic();
        self.offline.dealer_bytes = off.bytes;
        self.offline.dealer_round_trips = off.round_trips;
        self.offline.time_ns += start.elapsed().as_nanos() as u64;
        self.scope_since = Instant::now();
    }

    /// Offline traffic and time so far.
    pub fn offline(&self) -> CommCounts {
        self.offline
    }

    /// Pools refilled online (0 when the offline plan was enough).
    pub fn refills(&self) -> u64 {
        self.corr.refills()
    }

    /// Server: W − B for weight `id` (W in its wire layout).
    fn weight_minus_b(&self, id: u32, w: &[u64]) -> Vec<u64> {
        #[cfg(test)]
        if self.leak == Leak::WeightsUnmasked {
            return w.to_vec();
        }
        let b = self.corr.linear_b(id, w.len());
        arith::sub(self.ring, w, &b)
    }

    /// Client: A·(W − B) + C₁ for `rows` rows.
    fn client_linear_share(&self, w: WeightRef, rows: usize, wmb: &[u64], c1: &[u64]) -> Vec<u64> {
        let r = self.ring;
        let WeightRef { id, in_dim: i, out_dim: o } = w;
        let a = self.corr.linear_a(id, rows * i);
        let ab = if rows == 0 { Vec::new() } else { arith::rows_dot(r, &a, wmb, i, o) };
        arith::add(r, &ab, c1)
    }


    /// Close the books: the primitive counts, the communication and the
    /// correlations (to tell the dealer the session is over).
    pub fn finish(mut self) -> (Meter, CommTally, Correlations) {
        let scope = self.meter.scope();
        self.charge_time(scope);
        (self.meter, self.comm, self.corr)
    }

    pub fn options(&self) -> SharesOptions {
        self.opts
    }

    /// The other party, for error messages.
    fn peer_name(&self) -> &'static str {
        if self.is_server() {
            "a message exchange with the client"
        } else {
            "a message exchange with the server"
        }
    }

    pub(super) fn is_server(&self) -> bool {
        self.party == Party::Server
    }

    fn charge_time(&mut self, scope: Scope) {
        let now = Instant::now();
        let ns = now.duration_since(self.scope_since).as_nanos() as u64;
        self.scope_since = now;
        self.comm.add(scope, CommCounts { time_ns: ns, ..Default::default() });
    }

    /// Unwrap a protocol result or abort the forward.
    pub(super) fn ok<T>(&mut self, r: Result<T, ChannelError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                let s = self.meter.scope();
                let at = match s.layer {
                    Some(l) => format!("{} in layer {l}", s.class.name()),
                    None => s.class.name().to_string(),
                };
                std::panic::resume_unwind(Box::new(Abort(e.at(&at))))
            }
        }
    }

    fn note_comm(&mut self, c: CommCounts) {
        if self.in_offline {
            self.offline += c;
            return;
        }
        let d = self.corr.drain();
        let scope = self.meter.scope();
        self.comm.add(scope, CommCounts { dealer_bytes: d.bytes, dealer_round_trips: d.round_trips, ..c });
    }

    /// Send our message and receive the peer's (one round).
    pub(super) fn exchange(&mut self, msg: Vec<u8>) -> Vec<u8> {
        let sent = msg.len() as u64 + 4;
        let who = self.peer_name();
        let r = self.peer.send(msg).map_err(|e| e.at(who));
        self.ok(r);
        let r = self.peer.recv().map_err(|e| e.at(who));
        let got = self.ok(r);
        self.note_comm(CommCounts { bytes_sent: sent, bytes_received: got.len() as u64 + 4, rounds: 1, ..Default::default() });
        got
    }

    /// A one-way message to the peer (one round for both).
    pub(super) fn send_only(&mut self, msg: Vec<u8>) {
        let sent = msg.len() as u64 + 4;
        let who = self.peer_name();
        let r = self.peer.send(msg).map_err(|e| e.at(who));
        self.ok(r);
        self.note_comm(CommCounts { bytes_sent: sent, rounds: 1, ..Default::default() });
    }

    pub(super) fn recv_only(&mut self) -> Vec<u8> {
        let who = self.peer_name();
        let r = self.peer.recv().map_err(|e| e.at(who));
        let got = self.ok(r);
        self.note_comm(CommCounts { bytes_received: got.len() as u64 + 4, rounds: 1, ..Default::default() });
        got
    }

    /// Parse a message with `read`, aborting on garbage.
    pub(super) fn parse<T>(&mut self, msg: &[u8], read: impl FnOnce(&mut MsgReader) -> Result<T, ChannelError>) -> T {
        let mut rd = MsgReader::new(self.ring, msg);
        let r = read(&mut rd).and_then(|v| rd.done().map(|_| v));
        self.ok(r)
    }

    /// Open ring shares to both parties.
    pub(super) fn open(&mut self, x: &[u64]) -> Vec<u64> {
        let got = self.exchange(MsgWriter::new(self.ring).ring(x).finish());
        let peer = self.parse(&got, |rd| rd.ring(x.len()));
        arith::add(self.ring, x, &peer)
    }

    /// a·b element-wise (Beaver), with `also` opened in the same message:
    /// (the product's shares, `also` opened).
    pub(super) fn mul_opening(&mut self, a: &[u64], b: &[u64], also: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let n = a.len();
        let r = self.ring;
        let t = self.corr.triple(n);
        let t = self.ok(t);
        let d = arith::sub(r, a, &t.a);
        let e = arith::sub(r, b, &t.b);
        let got = self.exchange(MsgWriter::new(r).ring(also).ring(&d).ring(&e).finish());
        let (pa, pd, pe) = self.parse(&got, |rd| Ok((rd.ring(also.len())?, rd.ring(n)?, rd.ring(n)?)));
        let opened = arith::add(r, also, &pa);
        let d = arith::add(r, &d, &pd);
        let e = arith::add(r, &e, &pe);
        let server = self.is_server();
        let z = (0..n)
            .map(|i| {
                let mut z = r.add(t.c[i], r.add(r.mul(d[i], t.b[i]), r.mul(e[i], t.a[i])));
                if server {
                    z = r.add(z, r.mul(d[i], e[i]));
                }
                z
            })
            .collect();
        (z, opened)
    }

    pub(super) fn open_bits(&mut self, b: &BitVec) -> BitVec {
        let got = self.exchange(MsgWriter::new(self.ring).bits(b).finish());
        let peer = self.parse(&got, |rd| rd.bits(b.len()));
        b.xor(&peer)
    }

    /// Receive `n` ring elements in a one-way message.
    pub(super) fn recv_ring(&mut self, n: usize) -> Vec<u64> {
        let got = self.recv_only();
        self.parse(&got, |rd| rd.ring(n))
    }

    /// Public `c` added by the server only (so that shares sum to x + c).
    pub(super) fn plus_public(&self, x: &[u64], c: &[u64]) -> Vec<u64> {
        if self.is_server() {
            arith::add_cyclic(self.ring, x, c)
        } else {
            x.to_vec()
        }
    }

    /// Public bits XORed in by the server only.
    pub(super) fn xor_public(&self, b: &BitVec, c: &BitVec) -> BitVec {
        if self.is_server() {
            b.xor(c)
        } else {
            b.clone()
        }
    }

    fn counts(&mut self, c: PrimitiveCounts) {
        self.meter.count(c);
    }

    /// x ∧ y on shared bits: one AND triple, one round.
    pub(super) fn and_bits(&mut self, x: &BitVec, y: &BitVec) -> BitVec {
        let n = x.len();
        assert_eq!(n, y.len(), "and: lengths differ");
        if n == 0 {
            return BitVec::zeros(0);
        }
        let t = self.corr.bit_triple(n);
        let t = self.ok(t);
        let d = x.xor(&t.a);
        let e = y.xor(&t.b);
        let got = self.exchange(MsgWriter::new(self.ring).bits(&d).bits(&e).finish());
        let (pd, pe) = self.parse(&got, |rd| Ok((rd.bits(n)?, rd.bits(n)?)));
        let (d, e) = (d.xor(&pd), e.xor(&pe));
        let z = t.c.xor(&d.and(&t.b)).xor(&e.and(&t.a));
        self.xor_public(&z, &d.and(&e))
    }

    /// Shared bits as shared ring 0/1: open b ⊕ t, then b = e + t − 2et.
    pub(super) fn bits_to_ring(&mut self, b: &BitVec) -> Vec<u64> {
        let n = b.len();
        let p = self.corr.b2a(n);
        let p = self.ok(p);
        let e = self.open_bits(&b.xor(&p.t));
        let r = self.ring;
        let server = self.is_server();
        (0..n)
            .map(|i| {
                if e.get(i) {
                    r.sub(server as u64, p.t_arith[i])
                } else {
                    p.t_arith[i]
                }
            })
            .collect()
    }

    /// Reduce comparison segments to one (G, E) each, G = [r > c] and
    /// E = [r = c] over the segment's bits, least significant first. All
    /// segments advance together, so the rounds are those of the longest.
    pub(super) fn compare_tree(&mut self, mut segs: Vec<Vec<(BitVec, BitVec)>>) -> Vec<(BitVec, BitVec)> {
        while segs.iter().any(|s| s.len() > 1) {
            let mut left = Vec::new();
            let mut right = Vec::new();
            for s in &segs {
                for pair in s.chunks(2).filter(|p| p.len() == 2) {
                    let (lo, hi) = (&pair[0], &pair[1]);
                    left.push(hi.1.clone());
                    right.push(lo.0.clone());
                    left.push(hi.1.clone());
                    right.push(lo.1.clone());
                }
            }
            let l = BitVec::concat(&left.iter().collect::<Vec<_>>());
            let r = BitVec::concat(&right.iter().collect::<Vec<_>>());
            let prod = self.and_bits(&l, &r);
            let mut at = 0;
            for s in segs.iter_mut() {
                let mut next = Vec::with_capacity(s.len().div_ceil(2));
                for pair in s.chunks(2) {
                    if pair.len() == 1 {
                        next.push(pair[0].clone());
                        continue;
                    }
                    let n = pair[0].0.len();
                    let eg = prod.slice(at, n);
                    let ee = prod.slice(at + n, n);
                    at += 2 * n;
                    next.push((pair[1].0.xor(&eg), ee));
                }
                *s = next;
            }
        }
        segs.into_iter().map(|mut s| s.pop().expect("non-empty segment")).collect()
    }

    /// (G, E) leaves of a comparison of public c with shared r on bits `range`.
    pub(super) fn leaves(&self, c: &[u64], planes: &[BitVec], range: std::ops::Range<u32>) -> Vec<(BitVec, BitVec)> {
        range
            .map(|i| {
                let cp = BitVec::plane(c, i);
                let r = &planes[i as usize];
                let g = r.and(&cp.not());
                let e = self.xor_public(r, &cp.not());
                (g, e)
            })
            .collect()
    }

    fn msb_protocol(&mut self, x: &[u64]) -> BitVec {
        let n = x.len();
        let l = self.ring.bits();
        let mb = self.corr.masked_bits(n, None);
        let mb = self.ok(mb);
        let c = self.open(&arith::add(self.ring, x, &mb.r));
        let leaves = self.leaves(&c, &mb.planes, 0..l - 1);
        let (g, _) = self.compare_tree(vec![leaves]).pop().expect("one segment");
        let top = BitVec::plane(&c, l - 1);
        self.xor_public(&g.xor(&mb.planes[(l - 1) as usize]), &top)
    }

    /// ⌊x / 2^k⌋ of the signed value, exactly (see the module docs).
    fn truncate_exact(&mut self, x: &[u64], k: u32) -> Vec<u64> {
        let r = self.ring;
        let l = r.bits();
        assert!(k < l, "truncation by {k} bits in a {l}-bit ring");
        let n = x.len();
        let half = 1u64 << (l - 1);
        let y = self.plus_public(x, &[half]);
        let mb = self.corr.masked_bits(n, Some(k));
        let mb = self.ok(mb);
        let c = self.open(&arith::add(r, &y, &mb.r));
        let low = self.leaves(&c, &mb.planes, 0..k);
        let high = self.leaves(&c, &mb.planes, k..l);
        let mut res = self.compare_tree(vec![low, high]);
        let (g_hi, e_hi) = res.pop().expect("high");
        let (g_lo, _) = res.pop().expect("low");
        // In one round, as ring shares: borrow = g_lo and wrap = g_hi +
        // e_hi·g_lo (the two terms exclude each other).
        let aa = self.corr.and_arith(n);
        let aa = self.ok(aa);
        let t = self.corr.b2a(n);
        let t = self.ok(t);
        let msg = MsgWriter::new(r).bits(&e_hi.xor(&aa.u)).bits(&g_lo.xor(&aa.v)).bits(&g_hi.xor(&t.t)).finish();
        let got = self.exchange(msg);
        let (p1, p2, p3) = self.parse(&got, |rd| Ok((rd.bits(n)?, rd.bits(n)?, rd.bits(n)?)));
        let (d1, d2, d3) = (e_hi.xor(&aa.u).xor(&p1), g_lo.xor(&aa.v).xor(&p2), g_hi.xor(&t.t).xor(&p3));
        let server = self.is_server();
        // A bit x = d ⊕ u as a ring value: d + (1 − 2d)·u.
        let lift = |d: bool, share: u64| -> u64 { if d { r.sub(server as u64, share) } else { share } };
        let mut borrow = Vec::with_capacity(n);
        let mut wrap = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b, c) = (d1.get(i), d2.get(i), d3.get(i));
            borrow.push(lift(b, aa.va[i]));
            // (a + (1−2a)u)(b + (1−2b)v) expanded over the shares of u, v, uv.
            let sa = if a { r.neg(1) } else { 1 };
            let sb = if b { r.neg(1) } else { 1 };
            let mut carry = r.mul(r.mul(sa, sb), aa.uva[i]);
            if a {
                carry = r.add(carry, r.mul(sb, aa.va[i]));
            }
            if b {
                carry = r.add(carry, r.mul(sa, aa.ua[i]));
            }
            if a && b && server {
                carry = r.add(carry, 1);
            }
            wrap.push(r.add(lift(c, t.t_arith[i]), carry));
        }
        let shift_back = half >> k;
        (0..n)
            .map(|i| {
                let mut v = r.sub(r.mul(wrap[i], 1u64 << (l - k)), r.add(mb.high[i], borrow[i]));
                if server {
                    v = r.add(v, r.sub(c[i] >> k, shift_back));
                }
                v
            })
            .collect()
    }

    /// SecureML's local truncation: no communication, ±1 ulp, and a wrong
    /// result with probability about |x| / 2^(ℓ−1).
    fn truncate_local(&self, x: &[u64], k: u32) -> Vec<u64> {
        let r = self.ring;
        x.iter()
            .map(|&v| if self.is_server() { v >> k } else { r.neg(r.neg(v) >> k) })
            .collect()
    }

    /// `b ? x1 : x0` in one round.
    fn mux_protocol(&mut self, b: &BitVec, x1: &[u64], x0: &[u64]) -> Vec<u64> {
        let n = b.len();
        let r = self.ring;
        let m = self.corr.mux(n);
        let m = self.ok(m);
        let z = arith::sub(r, x1, x0);
        let e = b.xor(&m.t);
        let f = arith::sub(r, &z, &m.v);
        let got = self.exchange(MsgWriter::new(r).bits(&e).ring(&f).finish());
        let (pe, pf) = self.parse(&got, |rd| Ok((rd.bits(n)?, rd.ring(n)?)));
        let e = e.xor(&pe);
        let f = arith::add(r, &f, &pf);
        (0..n)
            .map(|i| {
                let tz = r.add(r.mul(f[i], m.t_arith[i]), m.w[i]);
                let v = if e.get(i) { r.sub(z[i], tz) } else { tz };
                r.add(x0[i], v)
            })
            .collect()
    }

    /// `x · W` (rows × in) with the server's W, with the triple prepared
    /// offline: one message client →
    /// server. Without the offline phase (primitive tests) the server's
    /// W − B travels in the same round, the other way.
    fn weight_product(&mut self, x: &[u64], rows: usize, w: WeightRef, w_wire: impl FnOnce() -> Vec<u64>, apply: impl FnOnce(&[u64]) -> Vec<u64>) -> Vec<u64> {
        let r = self.ring;
        let WeightRef { id, in_dim, out_dim } = w;
        self.corr.use_linear(id);
        let (in_len, out_len) = (rows * in_dim, rows * out_dim);
        if self.is_server() {
            let c0 = self.corr.linear_c0(id, out_len);
            let d = if self.corr.was_sent(id) {
                self.recv_ring(in_len)
            } else {
                let wmb = self.weight_minus_b(id, &w_wire());
                let got = self.exchange(MsgWriter::new(r).ring(&wmb).finish());
                self.parse(&got, |rd| rd.ring(in_len))
            };
            arith::add(r, &apply(&arith::add(r, x, &d)), &c0)
        } else {
            let a = self.corr.linear_a(id, in_len);
            let msg = {
                #[cfg(test)]
                let a = if self.leak == Leak::ClientShareUnmasked { vec![0; a.len()] } else { a };
                MsgWriter::new(r).ring(&arith::sub(r, x, &a)).finish()
            };
            match self.corr.prepared(id) {
                Some(mut share) => {
                    self.send_only(msg);
                    assert!(share.len() >= out_len, "weight {id}: {out_len} outputs, {} prepared", share.len());
                    share.truncate(out_len);
                    share
                }
                None => {
                    let w_len = in_dim * out_dim;
                    let got = self.exchange(msg);
                    let wmb = self.parse(&got, |rd| rd.ring(w_len));
                    let c1 = self.corr.linear_c1(id, rows, in_dim, out_dim);
                    let c1 = self.ok(c1);
                    self.client_linear_share(w, rows, &wmb, &c1)
                }
            }
        }
    }

    /// Test only: make this party leak (see [`Leak`]).
    #[cfg(test)]
    pub(super) fn set_leak(&mut self, leak: Leak) {
        self.leak = leak;
    }
}

impl Backend for SharesBackend {
    type Arith = Vec<u64>;
    type Bits = SharedBits;
    type Partition = Schedule;

    fn ring(&self) -> Ring {
        self.ring
    }

    fn meter(&mut self) -> &mut Meter {
        &mut self.meter
    }

    fn set_scope(&mut self, class: OpClass, layer: Option<usize>) {
        let before = self.meter.scope();
        self.charge_time(before);
        self.meter.set_scope(class, layer);
    }

    fn len(&self, x: &Vec<u64>) -> usize {
        x.len()
    }

    fn bits_len(&self, b: &SharedBits) -> usize {
        let b = &b.x;
        b.len()
    }

    /// The client splits its input with its own randomness and sends the
    /// server's share; the server's `values` only give the length.
    fn input(&mut self, values: &[u64]) -> Vec<u64> {
        let r = self.ring;
        if self.is_server() {
            let v = self.recv_ring(values.len());
            if std::mem::take(&mut self.awaiting_input) {
                self.scope_since = Instant::now();
            }
            v
        } else {
            let mask = arith::random_vec(r, values.len(), &mut self.input_rng);
            let mine = arith::sub(r, &values.iter().map(|&v| r.reduce(v)).collect::<Vec<_>>(), &mask);
            self.send_only(MsgWriter::new(r).ring(&mask).finish());
            mine
        }
    }

    fn constant(&mut self, values: &[u64]) -> Vec<u64> {
        let r = self.ring;
        if self.is_server() {
            values.iter().map(|&v| r.reduce(v)).collect()
        } else {
            vec![0; values.len()]
        }
    }

    fn reveal(&mut self, x: &Vec<u64>) -> Vec<u64> {
        self.counts(PrimitiveCounts { reveals: x.len() as u64, ..Default::default() });
        self.open(x)
    }

    /// One message server → client: the client reconstructs, the server
    /// learns nothing (and returns an empty vector).
    fn reveal_output(&mut self, x: &Vec<u64>) -> Vec<u64> {
        self.counts(PrimitiveCounts { reveals: x.len() as u64, ..Default::default() });
        if self.is_server() {
            self.send_only(MsgWriter::new(self.ring).ring(x).finish());
            Vec::new()
        } else {
            let theirs = self.recv_ring(x.len());
            arith::add(self.ring, x, &theirs)
        }
    }

    fn peek(&mut self, x: &Vec<u64>) -> Option<Vec<u64>> {
        if !self.opts.analysis {
            return None;
        }
        let r = self.peer.send(MsgWriter::new(self.ring).ring(x).finish()).and_then(|_| self.peer.recv());
        let got = self.ok(r);
        let peer = self.parse(&got, |rd| rd.ring(x.len()));
        self.corr.drain();
        Some(arith::add(self.ring, x, &peer))
    }

    fn peek_bits(&mut self, b: &SharedBits) -> Option<Vec<bool>> {
        let b = &b.x;
        if !self.opts.analysis {
            return None;
        }
        let r = self.peer.send(MsgWriter::new(self.ring).bits(b).finish()).and_then(|_| self.peer.recv());
        let got = self.ok(r);
        let peer = self.parse(&got, |rd| rd.bits(b.len()));
        Some(b.xor(&peer).to_bools())
    }

    fn add(&mut self, a: &Vec<u64>, b: &Vec<u64>) -> Vec<u64> {
        arith::add(self.ring, a, b)
    }

    fn sub(&mut self, a: &Vec<u64>, b: &Vec<u64>) -> Vec<u64> {
        arith::sub(self.ring, a, b)
    }

    fn neg(&mut self, a: &Vec<u64>) -> Vec<u64> {
        let r = self.ring;
        a.iter().map(|&v| r.neg(v)).collect()
    }

    fn add_public(&mut self, a: &Vec<u64>, c: &[u64]) -> Vec<u64> {
        self.plus_public(a, c)
    }

    fn mul_public(&mut self, a: &Vec<u64>, c: &[u64]) -> Vec<u64> {
        arith::mul_cyclic(self.ring, a, c)
    }

    fn matmul_public(&mut self, x: &Vec<u64>, rows: usize, w: &PublicMatrix) -> Vec<u64> {
        self.counts(PrimitiveCounts { pub_macs: (rows * w.in_dim * w.out_dim) as u64, ..Default::default() });
        let r = self.ring;
        let wr = WeightRef { id: w.id, in_dim: w.in_dim, out_dim: w.out_dim };
        self.weight_product(x, rows, wr, || w.w_t.iter().map(|&v| r.reduce(v as u64)).collect(), |y| arith::matmul_weights(r, y, rows, w))
    }

    fn gather(&mut self, x: &Vec<u64>, idx: &[usize]) -> Vec<u64> {
        idx.iter().map(|&i| x[i]).collect()
    }

    fn concat(&mut self, parts: &[&Vec<u64>]) -> Vec<u64> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn sum_chunks(&mut self, x: &Vec<u64>, chunk: usize) -> Vec<u64> {
        assert!(chunk > 0 && x.len().is_multiple_of(chunk), "sum_chunks: {chunk} does not divide {}", x.len());
        let r = self.ring;
        x.chunks(chunk).map(|c| r.reduce(c.iter().fold(0u64, |s, &v| s.wrapping_add(v)))).collect()
    }

    fn not(&mut self, b: &SharedBits) -> SharedBits {
        let r = self.ring;
        if self.is_server() {
            SharedBits { x: b.x.not(), a: b.a.as_ref().map(|a| a.iter().map(|&v| r.sub(1, v)).collect()) }
        } else {
            SharedBits { x: b.x.clone(), a: b.a.as_ref().map(|a| a.iter().map(|&v| r.neg(v)).collect()) }
        }
    }

    fn bits_public(&mut self, v: &[bool]) -> SharedBits {
        let x = if self.is_server() { BitVec::from_bools(v) } else { BitVec::zeros(v.len()) };
        let a = x.to_u64s();
        SharedBits { x, a: Some(a) }
    }

    fn bits_concat(&mut self, parts: &[&SharedBits]) -> SharedBits {
        let x = BitVec::concat(&parts.iter().map(|p| &p.x).collect::<Vec<_>>());
        let a = parts.iter().map(|p| p.a.clone()).collect::<Option<Vec<_>>>().map(|v| v.concat());
        SharedBits { x, a }
    }

    fn bits_gather(&mut self, b: &SharedBits, idx: &[usize]) -> SharedBits {
        SharedBits { x: b.x.gather(idx), a: b.a.as_ref().map(|a| idx.iter().map(|&i| a[i]).collect()) }
    }

    fn ring_bits(&mut self, x: &Vec<u64>) -> SharedBits {
        SharedBits { x: BitVec::plane(x, 0), a: Some(x.clone()) }
    }

    fn mul(&mut self, a: &Vec<u64>, b: &Vec<u64>) -> Vec<u64> {
        assert_eq!(a.len(), b.len(), "mul: lengths differ");
        let n = a.len();
        self.counts(PrimitiveCounts { ss_mults: n as u64, ..Default::default() });
        self.mul_opening(a, b, &[]).0
    }

    fn matmul(&mut self, a: &Vec<u64>, b: &Vec<u64>, m: usize, k: usize, n: usize) -> Vec<u64> {
        self.matmul_many(&[(a.clone(), b.clone())], m, k, n).pop().expect("one product")
    }

    /// Beaver matrix triples for all products, opened in one message.
    fn matmul_many(&mut self, pairs: &[(Vec<u64>, Vec<u64>)], m: usize, k: usize, n: usize) -> Vec<Vec<u64>> {
        self.counts(PrimitiveCounts { ss_macs: (pairs.len() * m * k * n) as u64, ..Default::default() });
        let r = self.ring;
        let mut triples = Vec::with_capacity(pairs.len());
        let mut msg = MsgWriter::new(r);
        let mut mine = Vec::with_capacity(pairs.len());
        let res = self.corr.reserve_mat(m, k, n, pairs.len());
        self.ok(res);
        for (a, b) in pairs {
            assert!(a.len() == m * k && b.len() == k * n, "matmul: operands are not {m} × {k} and {k} × {n}");
            let t = self.corr.mat_triple(m, k, n);
            let t = self.ok(t);
            let e = arith::sub(r, a, &t.a);
            let f = arith::sub(r, b, &t.b);
            msg = msg.ring(&e).ring(&f);
            mine.push((e, f));
            triples.push(t);
        }
        let got = self.exchange(msg.finish());
        let theirs = self.parse(&got, |rd| (0..pairs.len()).map(|_| Ok((rd.ring(m * k)?, rd.ring(k * n)?))).collect::<Result<Vec<_>, _>>());
        let server = self.is_server();
        mine.into_iter()
            .zip(theirs)
            .zip(triples)
            .map(|(((e, f), (pe, pf)), t)| {
                let e = arith::add(r, &e, &pe);
                let f = arith::add(r, &f, &pf);
                let mut z = arith::add(r, &t.c, &arith::matmul(r, &e, &t.b, m, k, n));
                z = arith::add(r, &z, &arith::matmul(r, &t.a, &f, m, k, n));
                if server {
                    z = arith::add(r, &z, &arith::matmul(r, &e, &f, m, k, n));
                }
                z
            })
            .collect()
    }

    fn truncate(&mut self, a: &Vec<u64>, k: u32) -> Vec<u64> {
        self.counts(PrimitiveCounts { truncations: a.len() as u64, ..Default::default() });
        if k == 0 || a.is_empty() {
            return a.clone();
        }
        match self.opts.truncation {
            Truncation::Exact if self.fss_here() => self.truncate_fss(a, k),
            Truncation::Exact => self.truncate_exact(a, k),
            Truncation::Probabilistic { .. } => self.truncate_local(a, k),
        }
    }

    fn msb(&mut self, a: &Vec<u64>) -> SharedBits {
        self.counts(PrimitiveCounts { comparisons: a.len() as u64, ..Default::default() });
        if a.is_empty() {
            return SharedBits { x: BitVec::zeros(0), a: Some(Vec::new()) };
        }
        if self.fss_here() {
            return self.msb_fss(a);
        }
        SharedBits::xor(self.msb_protocol(a))
    }

    fn exact_truncation(&self) -> bool {
        self.opts.truncation == Truncation::Exact
    }

    fn msb_and_truncate_each(&mut self, a: &Vec<u64>, parts: &[(&Vec<u64>, u32)]) -> (SharedBits, Vec<Vec<u64>>) {
        if self.fss_here() && self.opts.truncation == Truncation::Exact && !a.is_empty() && parts.iter().all(|&(t, k)| k > 0 && !t.is_empty()) {
            let t: usize = parts.iter().map(|(t, _)| t.len()).sum();
            self.counts(PrimitiveCounts { comparisons: a.len() as u64, truncations: t as u64, ..Default::default() });
            return self.msb_and_truncate_fss(a, parts);
        }
        let m = self.msb(a);
        (m, parts.iter().map(|&(t, k)| self.truncate(t, k)).collect())
    }

    fn msb_times(&mut self, a: &Vec<u64>) -> (SharedBits, Vec<u64>) {
        if self.fss_here() && !a.is_empty() {
            self.counts(PrimitiveCounts { comparisons: a.len() as u64, muxes: a.len() as u64, ..Default::default() });
            return self.msb_times_fss(a);
        }
        let m = self.msb(a);
        let z = vec![0; a.len()];
        let p = self.mux(&m, a, &z);
        (m, p)
    }

    fn trunc_mul(&mut self, y: &Vec<u64>, u: &Vec<u64>, k: u32) -> (Vec<u64>, Vec<u64>) {
        if self.fss_here() && self.opts.truncation == Truncation::Exact && k > 0 && !u.is_empty() {
            self.counts(PrimitiveCounts { truncations: u.len() as u64, ss_mults: u.len() as u64, ..Default::default() });
            return self.trunc_mul_fss(y, u, k);
        }
        let t = self.truncate(u, k);
        let p = self.mul(y, &t);
        (t, p)
    }

    fn trunc_lincomb(&mut self, y1: &Vec<u64>, y2: &Vec<u64>, u: &Vec<u64>, k: u32) -> Vec<u64> {
        let n = u.len();
        assert!(y1.len() == n && y2.len() == n, "trunc_lincomb: {} and {} factors for {n}", y1.len(), y2.len());
        if self.fss_here() && self.opts.truncation == Truncation::Exact && k > 0 && n > 0 {
            self.counts(PrimitiveCounts { truncations: n as u64, ss_mults: 2 * n as u64, ..Default::default() });
            return self.trunc_lincomb_fss(y1, y2, u, k);
        }
        let t = self.truncate(u, k);
        let p = self.mul(&[y1.as_slice(), y2].concat(), &[u.as_slice(), &t].concat());
        arith::add(self.ring, &p[..n], &p[n..])
    }

    fn mux(&mut self, b: &SharedBits, if_one: &Vec<u64>, if_zero: &Vec<u64>) -> Vec<u64> {
        let b = &b.x;
        assert!(b.len() == if_one.len() && b.len() == if_zero.len(), "mux: lengths {} {} {}", b.len(), if_one.len(), if_zero.len());
        self.counts(PrimitiveCounts { muxes: b.len() as u64, ..Default::default() });
        if b.is_empty() {
            return Vec::new();
        }
        self.mux_protocol(b, if_one, if_zero)
    }

    fn b2a(&mut self, b: &SharedBits) -> Vec<u64> {
        self.counts(PrimitiveCounts { b2a: b.x.len() as u64, ..Default::default() });
        match &b.a {
            Some(a) => a.clone(),
            None => self.bits_to_ring(&b.x),
        }
    }

    fn compact_rows(&mut self, x: &Vec<u64>, width: usize, keep: &SharedBits) -> Vec<u64> {
        assert_eq!(x.len(), keep.x.len() * width, "compact_rows: {} rows of {width}", keep.x.len());
        let drop = self.not(keep);
        let (sch, sorted) = self.build_schedule_moving(&drop, Some((x, width)));
        let (n, moved) = (sch.rows(), sch.tail());
        self.counts(swap_compaction(n, moved, width));
        let mut sorted = sorted.expect("the payload moved with the schedule");
        sorted.truncate((n - moved) * width);
        sorted
    }

    fn partition(&mut self, low: &SharedBits, width: usize) -> Schedule {
        let sch = self.build_schedule(low);
        self.counts(swap_compaction(sch.rows(), sch.tail(), width));
        sch
    }

    fn partition_sizes(&self, p: &Schedule) -> (usize, usize) {
        (p.rows() - p.tail(), p.tail())
    }

    fn split_rows(&mut self, x: &Vec<u64>, width: usize, p: &Schedule) -> (Vec<u64>, Vec<u64>) {
        let sorted = self.apply_schedule(p, x, width, false);
        let at = (p.rows() - p.tail()) * width;
        (sorted[..at].to_vec(), sorted[at..].to_vec())
    }

    fn merge_rows(&mut self, high: &Vec<u64>, low: &Vec<u64>, width: usize, p: &Schedule) -> Vec<u64> {
        let (h, l) = self.partition_sizes(p);
        assert!(high.len() == h * width && low.len() == l * width, "merge_rows: groups do not match the partition");
        let both = [high.as_slice(), low.as_slice()].concat();
        self.apply_schedule(p, &both, width, true)
    }
}
