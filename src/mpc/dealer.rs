//! Correlated randomness from a trusted dealer (the preprocessing model of
//! CrypTen's TTP mode): input-independent values the parties consume while
//! the protocol runs.
//!
//! The dealer shares one seed (ChaCha12 stream) with each party. The server (P0)
//! draws every one of its shares from its seed and never talks to the
//! dealer again; the client (P1) draws its random parts from its seed and
//! asks the dealer for the *corrections* (e.g. c₁ = (a₀+a₁)(b₀+b₁) − c₀ of a
//! Beaver triple). The dealer replays both seeds in the same order, so all
//! three agree without further coordination: the parties run the same
//! program, so they consume correlations in the same order.
//!
//! One kind needs the server's weights: the mask of a linear layer, U = R·W −
//! V (see [`Correlations::weight`]). A real deployment computes it with HE or
//! OT between the parties (as BOLT and Cheetah do for their linear layers);
//! here the dealer holds the model, and its bytes are reported apart as
//! `weight_preprocessing_bytes`.

use super::arith::{self, random_perm};
use super::bits::BitVec;
use super::channel::{ChannelError, MsgReader, MsgWriter, Transport};
use crate::fixed::Ring;
use crate::secure::bert::EngineModel;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

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

/// Request codes (first word of a client request).
mod kind {
    pub const DONE: u64 = 0;
    pub const TRIPLE: u64 = 1;
    pub const MAT_TRIPLE: u64 = 2;
    pub const BIT_TRIPLE: u64 = 3;
    pub const MASKED_BITS: u64 = 4;
    pub const B2A: u64 = 5;
    pub const MUX: u64 = 6;
    pub const WEIGHT: u64 = 7;
    pub const WEIGHT_VEC: u64 = 8;
    pub const PERM_NEW: u64 = 9;
    pub const PERM_APPLY: u64 = 10;
    pub const AND_ARITH: u64 = 11;
}

/// Deterministic draws from one seed, shared by a party and the dealer.
struct Draw {
    ring: Ring,
    rng: ChaCha12Rng,
}

impl Draw {
    fn new(ring: Ring, seed: [u8; 32]) -> Self {
        Draw { ring, rng: ChaCha12Rng::from_seed(seed) }
    }
    fn ring(&mut self, n: usize) -> Vec<u64> {
        arith::random_vec(self.ring, n, &mut self.rng)
    }
    fn bits(&mut self, n: usize) -> BitVec {
        BitVec::random(n, &mut self.rng)
    }
    fn planes(&mut self, n: usize) -> Vec<BitVec> {
        (0..self.ring.bits()).map(|_| self.bits(n)).collect()
    }
    fn perm(&mut self, n: usize) -> Vec<usize> {
        random_perm(n, &mut self.rng)
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

/// One party's side of a permutation correlation for σ known to one party:
/// the knower holds (σ, Δ), the other (a, b) with b = σ(a) − Δ... written so
/// that [`super::sort`] can apply σ to shared rows with one message.
pub enum PermShare {
    Knower { perm: Vec<usize>, delta: Vec<u64> },
    Other { a: Vec<u64>, b: Vec<u64> },
}

/// One party's source of correlated randomness.
pub struct Correlations {
    party: Party,
    draw: Draw,
    dealer: Option<Box<dyn Transport>>,
    /// Permutations made so far: (rows, knower, σ when this party knows it).
    perms: Vec<(usize, Party, Option<Vec<usize>>)>,
    /// Bytes exchanged with the dealer since the last [`Correlations::drain`]:
    /// (all, of which weight-dependent).
    bytes: (u64, u64),
}

impl Correlations {
    /// The server's side: draws from its seed, never talks to the dealer.
    pub fn server(ring: Ring, seed: [u8; 32]) -> Self {
        Correlations { party: Party::Server, draw: Draw::new(ring, seed), dealer: None, perms: Vec::new(), bytes: (0, 0) }
    }

    /// The client's side: draws from its seed and asks the dealer for
    /// corrections over `dealer`.
    pub fn client(ring: Ring, seed: [u8; 32], dealer: Box<dyn Transport>) -> Self {
        Correlations { party: Party::Client, draw: Draw::new(ring, seed), dealer: Some(dealer), perms: Vec::new(), bytes: (0, 0) }
    }

    pub fn party(&self) -> Party {
        self.party
    }

    fn ring(&self) -> Ring {
        self.draw.ring
    }

    /// Bytes exchanged with the dealer since the last call: (all, weight-dependent).
    pub fn drain(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.bytes)
    }

    /// Ask the dealer; `read` parses the reply.
    fn ask<T>(
        &mut self,
        req: &[u64],
        weight: bool,
        read: impl FnOnce(&mut MsgReader) -> Result<T, ChannelError>,
    ) -> Result<T, ChannelError> {
        let ring = self.ring();
        let t = self.dealer.as_mut().expect("only the client asks the dealer");
        let msg = MsgWriter::new(ring).u64s(req).finish();
        let sent = msg.len() as u64;
        t.send(msg).map_err(|e| e.at("a request to the dealer"))?;
        let reply = t.recv().map_err(|e| e.at("a reply from the dealer"))?;
        let n = sent + reply.len() as u64 + 8;
        self.bytes.0 += n;
        if weight {
            self.bytes.1 += n;
        }
        let mut rd = MsgReader::new(ring, &reply);
        let v = read(&mut rd).map_err(|e| e.at("a reply from the dealer"))?;
        rd.done().map_err(|e| e.at("a reply from the dealer"))?;
        Ok(v)
    }

    /// Tell the dealer the session is over (client only; no-op on the server).
    pub fn finish(&mut self) -> Result<(), ChannelError> {
        if let Some(t) = self.dealer.as_mut() {
            t.send(MsgWriter::new(self.draw.ring).u64s(&[kind::DONE]).finish())?;
        }
        Ok(())
    }

    pub fn triple(&mut self, n: usize) -> Result<Triple, ChannelError> {
        let a = self.draw.ring(n);
        let b = self.draw.ring(n);
        let c = match self.party {
            Party::Server => self.draw.ring(n),
            Party::Client => self.ask(&[kind::TRIPLE, n as u64], false, |rd| rd.ring(n))?,
        };
        Ok(Triple { a, b, c })
    }

    /// A (m × k), B (k × n), C = A·B.
    pub fn mat_triple(&mut self, m: usize, k: usize, n: usize) -> Result<Triple, ChannelError> {
        let a = self.draw.ring(m * k);
        let b = self.draw.ring(k * n);
        let c = match self.party {
            Party::Server => self.draw.ring(m * n),
            Party::Client => {
                self.ask(&[kind::MAT_TRIPLE, m as u64, k as u64, n as u64], false, |rd| rd.ring(m * n))?
            }
        };
        Ok(Triple { a, b, c })
    }

    pub fn bit_triple(&mut self, n: usize) -> Result<BitTriple, ChannelError> {
        let a = self.draw.bits(n);
        let b = self.draw.bits(n);
        let c = match self.party {
            Party::Server => self.draw.bits(n),
            Party::Client => self.ask(&[kind::BIT_TRIPLE, n as u64], false, |rd| rd.bits(n))?,
        };
        Ok(BitTriple { a, b, c })
    }

    /// `high_shift`: also share ⌊r / 2^k⌋ (for truncation by k).
    pub fn masked_bits(&mut self, n: usize, high_shift: Option<u32>) -> Result<MaskedBits, ChannelError> {
        let r = self.draw.ring(n);
        let bits = self.ring().bits() as usize;
        let k = high_shift.map_or(u64::MAX, |k| k as u64);
        match self.party {
            Party::Server => {
                let planes = self.draw.planes(n);
                let high = if high_shift.is_some() { self.draw.ring(n) } else { Vec::new() };
                Ok(MaskedBits { r, planes, high })
            }
            Party::Client => {
                let (planes, high) = self.ask(&[kind::MASKED_BITS, n as u64, k], false, |rd| {
                    let planes = (0..bits).map(|_| rd.bits(n)).collect::<Result<Vec<_>, _>>()?;
                    let high = if high_shift.is_some() { rd.ring(n)? } else { Vec::new() };
                    Ok((planes, high))
                })?;
                Ok(MaskedBits { r, planes, high })
            }
        }
    }

    pub fn b2a(&mut self, n: usize) -> Result<B2aPair, ChannelError> {
        let t = self.draw.bits(n);
        let t_arith = match self.party {
            Party::Server => self.draw.ring(n),
            Party::Client => self.ask(&[kind::B2A, n as u64], false, |rd| rd.ring(n))?,
        };
        Ok(B2aPair { t, t_arith })
    }

    pub fn and_arith(&mut self, n: usize) -> Result<AndArith, ChannelError> {
        let u = self.draw.bits(n);
        let v = self.draw.bits(n);
        let (ua, va, uva) = match self.party {
            Party::Server => (self.draw.ring(n), self.draw.ring(n), self.draw.ring(n)),
            Party::Client => self.ask(&[kind::AND_ARITH, n as u64], false, |rd| Ok((rd.ring(n)?, rd.ring(n)?, rd.ring(n)?)))?,
        };
        Ok(AndArith { u, v, ua, va, uva })
    }

    pub fn mux(&mut self, n: usize) -> Result<MuxCorr, ChannelError> {
        let t = self.draw.bits(n);
        let v = self.draw.ring(n);
        let (t_arith, w) = match self.party {
            Party::Server => (self.draw.ring(n), self.draw.ring(n)),
            Party::Client => self.ask(&[kind::MUX, n as u64], false, |rd| Ok((rd.ring(n)?, rd.ring(n)?)))?,
        };
        Ok(MuxCorr { t, t_arith, v, w })
    }

    /// The mask of `x·W` for the weight matrix `id` (rows × in → rows × out):
    /// the client gets (R, U), the server V, with U + V = R·W. Returns
    /// (R or empty, U or V).
    pub fn weight(&mut self, id: u32, rows: usize, in_dim: usize, out_dim: usize) -> Result<(Vec<u64>, Vec<u64>), ChannelError> {
        match self.party {
            Party::Server => Ok((Vec::new(), self.draw.ring(rows * out_dim))),
            Party::Client => {
                let r = self.draw.ring(rows * in_dim);
                let req = [kind::WEIGHT, id as u64, rows as u64, in_dim as u64, out_dim as u64];
                let u = self.ask(&req, true, |rd| rd.ring(rows * out_dim))?;
                Ok((r, u))
            }
        }
    }

    /// As [`Correlations::weight`] for an element-wise product with the
    /// server's vector `id` (repeating cyclically over n elements).
    pub fn weight_vec(&mut self, id: u32, n: usize) -> Result<(Vec<u64>, Vec<u64>), ChannelError> {
        match self.party {
            Party::Server => Ok((Vec::new(), self.draw.ring(n))),
            Party::Client => {
                let r = self.draw.ring(n);
                let u = self.ask(&[kind::WEIGHT_VEC, id as u64, n as u64], true, |rd| rd.ring(n))?;
                Ok((r, u))
            }
        }
    }

    /// A fresh random permutation of `n` rows known to `knower` only;
    /// returns its handle.
    pub fn perm_new(&mut self, n: usize, knower: Party) -> Result<usize, ChannelError> {
        let perm = (knower == self.party).then(|| self.draw.perm(n));
        if self.party == Party::Client {
            self.ask(&[kind::PERM_NEW, n as u64, knower.index() as u64], false, |_| Ok(()))?;
        }
        self.perms.push((n, knower, perm));
        Ok(self.perms.len() - 1)
    }

    /// Masks to apply permutation `handle` (or its inverse) to rows of
    /// `width`: the knower gets (σ, Δ), the other (a, b) with σ(a) = b + Δ.
    pub fn perm_apply(&mut self, handle: usize, inverse: bool, width: usize) -> Result<PermShare, ChannelError> {
        let (n, knower, perm) = self.perms[handle].clone();
        let len = n * width;
        let req = [kind::PERM_APPLY, handle as u64, inverse as u64, width as u64];
        let perm = perm.map(|p| if inverse { arith::invert_perm(&p) } else { p });
        Ok(match (self.party, knower) {
            (Party::Server, Party::Server) => PermShare::Knower { perm: perm.expect("knower"), delta: self.draw.ring(len) },
            (Party::Client, Party::Server) => {
                let a = self.draw.ring(len);
                let b = self.ask(&req, false, |rd| rd.ring(len))?;
                PermShare::Other { a, b }
            }
            (Party::Server, Party::Client) => {
                let a = self.draw.ring(len);
                let b = self.draw.ring(len);
                PermShare::Other { a, b }
            }
            (Party::Client, Party::Client) => {
                let delta = self.ask(&req, false, |rd| rd.ring(len))?;
                PermShare::Knower { perm: perm.expect("knower"), delta }
            }
        })
    }
}

/// Fresh seeds for a session: (server's, client's), from the dealer's RNG.
pub fn session_seeds(rng: &mut impl rand::RngCore) -> ([u8; 32], [u8; 32]) {
    let mut s0 = [0u8; 32];
    let mut s1 = [0u8; 32];
    rng.fill_bytes(&mut s0);
    rng.fill_bytes(&mut s1);
    (s0, s1)
}

/// The dealer's side of one session: answers the client's requests until it
/// says it is done, replaying both parties' seeds. `model` supplies the
/// weights for the weight-dependent masks.
///
/// # Errors
/// When the client hangs up, stalls or sends a request that does not parse.
pub fn serve_dealer(
    ring: Ring,
    model: &EngineModel,
    seeds: ([u8; 32], [u8; 32]),
    client: &mut dyn Transport,
) -> Result<(), ChannelError> {
    let mut p0 = Draw::new(ring, seeds.0);
    let mut p1 = Draw::new(ring, seeds.1);
    let mut perms: Vec<(usize, Vec<usize>)> = Vec::new();
    let bits = ring.bits();
    let garbage = |msg: String| ChannelError::Garbage { at: " (request to the dealer)".into(), msg };
    loop {
        let req = client.recv().map_err(|e| e.at("waiting for a dealer request"))?;
        if req.len() < 8 || req.len() % 8 != 0 || req.len() > 8 * 8 {
            return Err(garbage(format!("a request of {} bytes", req.len())));
        }
        let w: Vec<u64> = req.chunks(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
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
            kind::DONE => return Ok(()),
            kind::TRIPLE => {
                let n = arg(1)?;
                let (a0, b0, c0) = (p0.ring(n), p0.ring(n), p0.ring(n));
                let (a1, b1) = (p1.ring(n), p1.ring(n));
                let a = arith::add(ring, &a0, &a1);
                let b = arith::add(ring, &b0, &b1);
                let c = arith::mul_cyclic(ring, &a, &b);
                out.ring(&arith::sub(ring, &c, &c0))
            }
            kind::MAT_TRIPLE => {
                let (m, k, n) = (arg(1)?, arg(2)?, arg(3)?);
                let (a0, b0, c0) = (p0.ring(m * k), p0.ring(k * n), p0.ring(m * n));
                let (a1, b1) = (p1.ring(m * k), p1.ring(k * n));
                let c = arith::matmul(ring, &arith::add(ring, &a0, &a1), &arith::add(ring, &b0, &b1), m, k, n);
                out.ring(&arith::sub(ring, &c, &c0))
            }
            kind::BIT_TRIPLE => {
                let n = arg(1)?;
                let (a0, b0, c0) = (p0.bits(n), p0.bits(n), p0.bits(n));
                let (a1, b1) = (p1.bits(n), p1.bits(n));
                out.bits(&a0.xor(&a1).and(&b0.xor(&b1)).xor(&c0))
            }
            kind::MASKED_BITS => {
                let n = arg(1)?;
                let k = w.get(2).copied().ok_or_else(|| garbage("masked bits without a shift".into()))?;
                let r0 = p0.ring(n);
                let r1 = p1.ring(n);
                let r = arith::add(ring, &r0, &r1);
                let planes0 = p0.planes(n);
                let mut out = out;
                for (b, p0b) in planes0.iter().enumerate() {
                    out = out.bits(&BitVec::plane(&r, b as u32).xor(p0b));
                }
                if k != u64::MAX {
                    if k >= bits as u64 {
                        return Err(garbage(format!("a shift of {k} bits")));
                    }
                    let h0 = p0.ring(n);
                    let high: Vec<u64> = r.iter().map(|&v| v >> k).collect();
                    out = out.ring(&arith::sub(ring, &high, &h0));
                }
                out
            }
            kind::B2A => {
                let n = arg(1)?;
                let t0 = p0.bits(n);
                let ta0 = p0.ring(n);
                let t1 = p1.bits(n);
                out.ring(&arith::sub(ring, &t0.xor(&t1).to_u64s(), &ta0))
            }
            kind::MUX => {
                let n = arg(1)?;
                let (t0, v0) = (p0.bits(n), p0.ring(n));
                let (ta0, w0) = (p0.ring(n), p0.ring(n));
                let (t1, v1) = (p1.bits(n), p1.ring(n));
                let t = t0.xor(&t1).to_u64s();
                let v = arith::add(ring, &v0, &v1);
                let tv = arith::mul_cyclic(ring, &t, &v);
                out.ring(&arith::sub(ring, &t, &ta0)).ring(&arith::sub(ring, &tv, &w0))
            }
            kind::AND_ARITH => {
                let n = arg(1)?;
                let (u0, v0) = (p0.bits(n), p0.bits(n));
                let (ua0, va0, uva0) = (p0.ring(n), p0.ring(n), p0.ring(n));
                let (u1, v1) = (p1.bits(n), p1.bits(n));
                let u = u0.xor(&u1).to_u64s();
                let v = v0.xor(&v1).to_u64s();
                let uv = arith::mul_cyclic(ring, &u, &v);
                out.ring(&arith::sub(ring, &u, &ua0)).ring(&arith::sub(ring, &v, &va0)).ring(&arith::sub(ring, &uv, &uva0))
            }
            kind::WEIGHT => {
                let (id, rows, in_dim, out_dim) = (arg(1)?, arg(2)?, arg(3)?, arg(4)?);
                let m = model
                    .matrix_by_id(id as u32)
                    .ok_or_else(|| garbage(format!("no weight matrix {id}")))?;
                if (m.in_dim, m.out_dim) != (in_dim, out_dim) {
                    return Err(garbage(format!("matrix {id} is {} × {}, not {in_dim} × {out_dim}", m.in_dim, m.out_dim)));
                }
                let v0 = p0.ring(rows * out_dim);
                let r1 = p1.ring(rows * in_dim);
                let rw = arith::matmul_weights(ring, &r1, rows, m);
                out.ring(&arith::sub(ring, &rw, &v0))
            }
            kind::WEIGHT_VEC => {
                let (id, n) = (arg(1)?, arg(2)?);
                let g = model.vector_by_id(id as u32).ok_or_else(|| garbage(format!("no weight vector {id}")))?;
                if g.is_empty() || n % g.len() != 0 {
                    return Err(garbage(format!("vector {id} has {} values, not a divisor of {n}", g.len())));
                }
                let v0 = p0.ring(n);
                let r1 = p1.ring(n);
                out.ring(&arith::sub(ring, &arith::mul_cyclic(ring, &r1, g), &v0))
            }
            kind::PERM_NEW => {
                let (n, knower) = (arg(1)?, arg(2)?);
                let perm = match knower {
                    0 => p0.perm(n),
                    1 => p1.perm(n),
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
                    let delta = p0.ring(len);
                    let a = p1.ring(len);
                    out.ring(&arith::sub(ring, &arith::permute_rows(&a, width, &perm), &delta))
                } else {
                    // Client knows σ: the server drew a, b; the client gets Δ = σ(a) − b.
                    let a = p0.ring(len);
                    let b = p0.ring(len);
                    out.ring(&arith::sub(ring, &arith::permute_rows(&a, width, &perm), &b))
                }
            }
            k => return Err(garbage(format!("unknown request kind {k}"))),
        };
        client.send(reply.finish()).map_err(|e| e.at("replying to the client"))?;
    }
}
