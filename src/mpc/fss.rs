//! One-round MSB and exact truncation from the dealer's DCF keys
//! ([`super::dcf`]), the way SIGMA and LLAMA (REFERENCE.md §9) replace
//! comparison circuits: the parties open x + r once and each evaluates its
//! key on the opened value; what a circuit of AND gates took
//! ⌈log₂ ℓ⌉ more rounds for, the key computes locally.
//!
//! **MSB.** With y = x + r opened and primes the low ℓ − 1 bits,
//! msb(x) = msb(y) ⊕ ρ ⊕ [y′ < r′], ρ = msb(r). The dealer deals r, ρ shared
//! in the ring and a DCF of ℓ − 1 bits for α = r′ with β = 1 − 2ρ in
//! Z_{2^ℓ}, so that ρ + β·[y′ < r′] = ρ ⊕ [y′ < r′] and, with msb(y) = m
//! public, msb(x) = m + (1 − 2m)(ρ ⊕ [y′ < r′]): ring shares of the bit in
//! one round, whose low bits are its XOR shares. Turning the bit into a
//! ring value (B2A) is then free.
//!
//! **Exact truncation by k** (the signed value's ⌊x / 2^k⌋, as the engine's
//! `exact` mode). With u = x + 2^(ℓ−1) (unsigned), z = u + r opened and
//! u = z − r + 2^ℓ·[z < r]:
//! ⌊u / 2^k⌋ = ⌊z / 2^k⌋ − ⌊r / 2^k⌋ − [z mod 2^k < r mod 2^k] + 2^(ℓ−k)·[z < r],
//! and the result is that minus 2^(ℓ−1−k). Two DCFs in Z_{2^ℓ}: ℓ bits for
//! α = r, β = 2^(ℓ−k), and k bits for α = r mod 2^k, β = −1; ⌊r / 2^k⌋
//! shared. Exact for every x, one round.
//!
//! **Bounded truncation** (`Suite::FssBounded`). If u stays at least
//! g = 2^m from 0 and from 2^ℓ (|x| ≤ 2^(ℓ−1) − g), then z − r is u or
//! u − 2^ℓ, at least g away from 0 either way, so
//! [z < r] = [⌊z / g⌋ < ⌊r / g⌋]: the wrap key reads the top ℓ − m bits
//! ([`super::shares::BOUNDED_WRAP_BITS`]) instead of all ℓ. Outside that
//! band the wrap may come out wrong; the engine's value there has all but
//! overflowed.
//!
//! **Products in the same round.** A DCF's payload may be any ring
//! element the dealer knows, so a twin key for the same α whose payload is
//! β times a mask turns the key's bit into that mask times the bit. Then
//! x·msb(x) (the MUX of max, ReLU and |x|) needs only the MSB's opening,
//! and y·⌊u/2^k⌋ needs only u's truncation opening with y + s beside it
//! (s the twin keys' mask): Newton's steps for 1/v and 1/√v take one round
//! per product where a product and its truncation took two. The twin is
//! the key's second lane ([`Dcf::twin`]): one tree walk gives both. And since
//! u = z − 2^(ℓ−1) − r with z opened, y1·u needs only y1 + s1 opened and
//! s1·r dealt: y1·u + y2·⌊u/2^k⌋ (with y1 = 1 − y2 a bit, the MUX between u
//! and its truncation: exp's shift by z) is one round, as is
//! γ·⌊u/2^k⌋ for the server's γ (LayerNorm's last product: γ + s reveals
//! nothing without s). Several truncations open with one comparison
//! (`msb_and_truncate_each`: exp's polynomial and z's bits ⌊z/2^j⌋).
//!
//! **Keys.** Both parties' keys share their correction words; each
//! party's root seeds come from its own seed (as all its correlations do), so
//! the dealer sends the correction words to the client, which forwards
//! them to the server (they are half of the server's key, which by itself
//! hides α). The offline plan counts the keys (per layer); they are dealt
//! just before the step that uses them and both their bytes and their time
//! are counted as offline traffic — they do not depend on the input — so
//! that memory holds one step's keys, not the model's (BERT-base at 128
//! tokens needs about 80 million keys, tens of GB per party).

use super::arith;
use super::bits::BitVec;
use super::channel::{MsgReader, MsgWriter};
use super::dcf::{Dcf, Prg};
use super::dealer::{DcfMsb, DcfMsbMul, DcfTrunc, DcfTruncMul, PoolKey};
use super::shares::{SharedBits, SharesBackend};
use crate::fixed::Ring;

/// Keys of `n` input bits into Z_{2^ℓ}; with `twin`, a second lane.
fn ring_dcf(r: Ring, n: u32, twin: bool) -> Dcf {
    if twin { Dcf::twin(n, r.bits()) } else { Dcf::new(n, r.bits()) }
}

/// The MSB's key family: ℓ − 1 input bits, output in Z_{2^ℓ}.
pub fn msb_dcf(r: Ring, twin: bool) -> Dcf {
    ring_dcf(r, r.bits() - 1, twin)
}

/// Truncation by k: (the wrap on the top `w` bits, the k-bit borrow),
/// outputs in Z_{2^ℓ}.
pub fn trunc_dcfs(r: Ring, k: u32, w: u32, twin: bool) -> (Dcf, Dcf) {
    (ring_dcf(r, w, twin), ring_dcf(r, k, twin))
}

/// The dealer: correction words of MSB keys for masks `r`; with `twin`,
/// a second lane with payload r·β (the mask times the first lane's), for
/// x·msb(x) in the MSB's round.
pub(super) fn deal_msb(ring: Ring, r: &[u64], twin: bool, s0: &[u128], s1: &[u128]) -> Vec<u8> {
    let d = msb_dcf(ring, twin);
    let low = (1u64 << (ring.bits() - 1)) - 1;
    let alphas: Vec<u64> = r.iter().map(|&v| v & low).collect();
    // β = 1 − 2ρ: +1 or −1 by the mask's top bit.
    let betas: Vec<u64> = r
        .iter()
        .flat_map(|&v| {
            let beta = if v >> (ring.bits() - 1) == 1 { ring.neg(1) } else { 1 };
            std::iter::once(beta).chain(twin.then(|| ring.mul(v, beta)))
        })
        .collect();
    let roots: Vec<[u128; 2]> = s0.iter().zip(s1).map(|(&a, &b)| [a, b]).collect();
    let mut out = Vec::with_capacity(r.len() * d.cw_bytes());
    d.gen(Prg::shared(), &alphas, &betas, &roots, &mut out);
    out
}

/// The dealer: correction words of truncation keys for masks `r`, roots
/// per DCF as (server's, client's); with `times`, each key has a second
/// lane whose payload is the first's times that element (the other
/// factor's mask s).
pub(super) fn deal_trunc(ring: Ring, k: u32, w: u32, r: &[u64], roots: &[(Vec<u128>, Vec<u128>); 2], times: Option<&[u64]>) -> (Vec<u8>, Vec<u8>) {
    let (d1, d2) = trunc_dcfs(ring, k, w, times.is_some());
    let top: Vec<u64> = r.iter().map(|&v| v >> (ring.bits() - w)).collect();
    let prg = Prg::shared();
    let pair = |(a, b): &(Vec<u128>, Vec<u128>)| -> Vec<[u128; 2]> { a.iter().zip(b).map(|(&x, &y)| [x, y]).collect() };
    let lo: Vec<u64> = r.iter().map(|&v| v & ((1 << k) - 1)).collect();
    let scaled = |c: u64| -> Vec<u64> {
        match times {
            Some(s) => s.iter().flat_map(|&v| [c, ring.mul(v, c)]).collect(),
            None => vec![c; r.len()],
        }
    };
    let (mut k1, mut k2) = (Vec::new(), Vec::new());
    d1.gen(prg, &top, &scaled(ring.reduce(1 << (ring.bits() - k))), &pair(&roots[0]), &mut k1);
    d2.gen(prg, &lo, &scaled(ring.mask()), &pair(&roots[1]), &mut k2);
    (k1, k2)
}

/// The public part P = ⌊z/2^k⌋ − 2^(ℓ−1−k) of a truncation of the opened z.
fn trunc_public(r: Ring, k: u32, z: u64) -> u64 {
    r.sub(z >> k, (1u64 << (r.bits() - 1)) >> k)
}

impl SharesBackend {
    /// Whether MSB and truncation run on DCF keys here (compaction networks
    /// draw from online streams and keep the comparison circuit).
    pub(super) fn fss_here(&self) -> bool {
        self.opts.suite.dcf() && !self.corr.dealt_online()
    }

    fn layer(&mut self) -> Option<usize> {
        crate::secure::backend::Backend::meter(self).scope().layer
    }

    /// Client: fetch the keys of `want` from the dealer and forward their
    /// correction words to the server; server: receive them.
    pub(super) fn forward_keys(&mut self, want: &[(PoolKey, usize)]) {
        let want: Vec<(PoolKey, usize)> = want.iter().copied().filter(|&(_, n)| n > 0).collect();
        if want.is_empty() {
            return;
        }
        if self.is_server() {
            let got = self.recv_only();
            let mut rd = MsgReader::new(self.ring, &got);
            let r = self.corr.store_forwarded(&want, &mut rd).and_then(|()| rd.done());
            self.ok(r.map_err(|e| e.at("DCF keys from the client")));
        } else {
            let r = self.corr.refill_keys(&want);
            self.ok(r);
            let msg = self.corr.keys_to_forward(&want, MsgWriter::new(self.ring)).finish();
            self.send_only(msg);
        }
    }

    /// Both parties: `n` units of `key` at hand. What the offline plan
    /// holds is dealt now but counted offline; what a shape needs beyond
    /// it is dealt online (a refill).
    fn keys_for(&mut self, key: PoolKey, n: usize) {
        let need = n.saturating_sub(self.corr.have(key));
        let planned = self.key_plan.get_mut(&key).map_or(0, |left| {
            let take = need.min(*left);
            *left -= take;
            take
        });
        self.deal_keys_offline(&[(key, planned)]);
        self.forward_keys(&[(key, need - planned)]);
    }

    /// The MSB's key for `x` and the masked value to open.
    fn msb_masked(&mut self, x: &[u64]) -> (DcfMsb, Vec<u64>) {
        let key = PoolKey::dcf_msb(self.layer());
        self.keys_for(key, x.len());
        let m = self.corr.dcf_msb(key, x.len());
        let masked = arith::add(self.ring, x, &m.r);
        (m, masked)
    }

    /// The MSB from the opened y = x + r.
    fn msb_opened(&self, m: &DcfMsb, y: &[u64]) -> SharedBits {
        let c = self.msb_key_eval(false, &m.roots, &m.cw, y);
        self.msb_bit(&m.rho, &c, y)
    }

    /// The MSB from the opened y and the key's output c.
    fn msb_bit(&self, rho: &[u64], c: &[u64], y: &[u64]) -> SharedBits {
        let r = self.ring;
        let server = self.is_server();
        let a: Vec<u64> = (0..y.len())
            .map(|i| {
                let t = r.add(rho[i], c[i]); // ρ ⊕ [y′ < r′]
                match (y[i] >> (r.bits() - 1) == 1, server) {
                    (false, _) => t,
                    (true, true) => r.sub(1, t),
                    (true, false) => r.neg(t),
                }
            })
            .collect();
        SharedBits { x: BitVec::plane(&a, 0), a: Some(a) }
    }

    /// The truncation's keys for `x` and the masked value to open.
    fn trunc_masked(&mut self, x: &[u64], k: u32) -> (DcfTrunc, Vec<u64>) {
        let l = self.ring.bits();
        assert!(k < l, "truncation by {k} bits in a {l}-bit ring");
        let key = PoolKey::dcf_trunc(k, self.opts.suite.wrap_bits(self.ring), self.layer());
        self.keys_for(key, x.len());
        let m = self.corr.dcf_trunc(key, x.len());
        let u = self.plus_public(x, &[1u64 << (l - 1)]);
        let masked = arith::add(self.ring, &u, &m.r);
        (m, masked)
    }

    /// ⌊x / 2^k⌋ from the opened z = x + 2^(ℓ−1) + r.
    fn trunc_opened(&self, m: &DcfTrunc, k: u32, z: &[u64]) -> Vec<u64> {
        let [keys] = self.trunc_keys(m, k, z, [&m.high]);
        self.plus_trunc_public(keys, k, z)
    }

    /// The server adds the public part P of each truncation.
    fn plus_trunc_public(&self, mut keys: Vec<u64>, k: u32, z: &[u64]) -> Vec<u64> {
        if self.is_server() {
            let r = self.ring;
            keys.iter_mut().zip(z).for_each(|(v, &zi)| *v = r.add(*v, trunc_public(r, k, zi)));
        }
        keys
    }

    /// The keys' part of a truncation, 2^(ℓ−k)·W − B − ⌊r/2^k⌋ (times the
    /// lane's payload factor), without the public P: one output per lane
    /// of the keys, `highs` the lanes' shared ⌊r/2^k⌋ terms.
    fn trunc_keys<const L: usize>(&self, m: &DcfTrunc, k: u32, z: &[u64], highs: [&[u64]; L]) -> [Vec<u64>; L] {
        let (r, l) = (self.ring, self.ring.bits());
        let (d1, d2) = trunc_dcfs(r, k, m.wrap, L == 2);
        let (prg, b) = (Prg::shared(), self.party.index());
        let top: Vec<u64> = z.iter().map(|&v| v >> (l - m.wrap)).collect();
        let wrap = d1.eval(prg, b, &m.roots[0], &m.cw[0], &top);
        let lo: Vec<u64> = z.iter().map(|&v| v & ((1 << k) - 1)).collect();
        let borrow = d2.eval(prg, b, &m.roots[1], &m.cw[1], &lo);
        std::array::from_fn(|q| (0..z.len()).map(|i| r.sub(r.add(wrap[L * i + q], borrow[L * i + q]), highs[q][i])).collect())
    }

    /// Party's shares of an MSB-family key on the opened y's low ℓ − 1 bits
    /// (two outputs per element for twin keys).
    fn msb_key_eval(&self, twin: bool, roots: &[u128], cw: &[u8], y: &[u64]) -> Vec<u64> {
        let r = self.ring;
        let low = (1u64 << (r.bits() - 1)) - 1;
        let ys: Vec<u64> = y.iter().map(|&v| v & low).collect();
        msb_dcf(r, twin).eval(Prg::shared(), self.party.index(), roots, cw, &ys)
    }

    pub(super) fn msb_fss(&mut self, x: &[u64]) -> SharedBits {
        let (m, masked) = self.msb_masked(x);
        let y = self.open(&masked);
        self.msb_opened(&m, &y)
    }

    pub(super) fn truncate_fss(&mut self, x: &[u64], k: u32) -> Vec<u64> {
        let (m, masked) = self.trunc_masked(x, k);
        let z = self.open(&masked);
        self.trunc_opened(&m, k, &z)
    }

    /// An MSB and independent truncations with one opening: one round.
    pub(super) fn msb_and_truncate_fss(&mut self, a: &[u64], parts: &[(&Vec<u64>, u32)]) -> (SharedBits, Vec<Vec<u64>>) {
        let (mm, ya) = self.msb_masked(a);
        let masked: Vec<(DcfTrunc, Vec<u64>)> = parts.iter().map(|&(t, k)| self.trunc_masked(t, k)).collect();
        let all = self.open(&[ya, masked.iter().flat_map(|(_, z)| z.iter().copied()).collect()].concat());
        let (y, mut rest) = all.split_at(a.len());
        let ts = masked
            .iter()
            .zip(parts)
            .map(|((m, z), &(_, k))| {
                let (zt, tail) = rest.split_at(z.len());
                rest = tail;
                self.trunc_opened(m, k, zt)
            })
            .collect();
        (self.msb_opened(&mm, y), ts)
    }

    /// msb(x) and x·msb(x) with the MSB's one opening: with y = x + r
    /// public and b = ρ ⊕ [y′ < r′], msb(x) = m + (1 − 2m)·b, and
    /// x·msb(x) = y·msb(x) − m·r − (1 − 2m)·r·b, where r·b = r·ρ + r·β·[y′ < r′]
    /// comes from the twin key (payload r·β) and the dealt r·ρ.
    pub(super) fn msb_times_fss(&mut self, x: &[u64]) -> (SharedBits, Vec<u64>) {
        let key = PoolKey::dcf_msb_mul(self.layer());
        self.keys_for(key, x.len());
        let DcfMsbMul { msb: m, r_rho } = self.corr.dcf_msb_mul(key, x.len());
        let y = self.open(&arith::add(self.ring, x, &m.r));
        // Lane 0: [y′ < r′]·β; lane 1: the same times r.
        let both = self.msb_key_eval(true, &m.roots, &m.cw, &y);
        let c: Vec<u64> = both.iter().step_by(2).copied().collect();
        let bits = self.msb_bit(&m.rho, &c, &y);
        let r = self.ring;
        let msb = bits.a.as_ref().expect("ring shares");
        let times: Vec<u64> = (0..y.len())
            .map(|i| {
                let rb = r.add(r_rho[i], both[2 * i + 1]); // r·b
                let top = y[i] >> (r.bits() - 1) == 1;
                let (mr, brb) = if top { (m.r[i], r.neg(rb)) } else { (0, rb) };
                r.sub(r.mul(y[i], msb[i]), r.add(mr, brb))
            })
            .collect();
        (bits, times)
    }

    /// ⌊u / 2^k⌋ and y·⌊u / 2^k⌋ with one opening of u + 2^(ℓ−1) + r and
    /// y + s. With t = P − ⌊r / 2^k⌋ − B + 2^(ℓ−k)·W (P public, B and W the
    /// truncation keys' bits), y·t = ŷ·t − s·t and
    /// s·t = s·P − s·⌊r / 2^k⌋ − s·B + 2^(ℓ−k)·s·W: the twin keys carry s
    /// in their payloads, the dealer shares s·⌊r / 2^k⌋.
    pub(super) fn trunc_mul_fss(&mut self, y: &[u64], u: &[u64], k: u32) -> (Vec<u64>, Vec<u64>) {
        let (t, yt, _) = self.trunc_times(None, y, u, k);
        (t, yt)
    }

    /// y1·x + y2·⌊x / 2^k⌋ with one opening of x + 2^(ℓ−1) + r, y1 + s1
    /// and y2 + s: y2·t as in [`Self::trunc_mul_fss`], and with
    /// x = z − 2^(ℓ−1) − r (z opened), y1·x = ŷ1·x − s1·(z − 2^(ℓ−1)) + s1·r,
    /// s1·r dealt.
    pub(super) fn trunc_lincomb_fss(&mut self, y1: &[u64], y2: &[u64], x: &[u64], k: u32) -> Vec<u64> {
        let (_, y2t, y1x) = self.trunc_times(Some(y1), y2, x, k);
        let r = self.ring;
        y1x.iter().zip(&y2t).map(|(&a, &b)| r.add(a, b)).collect()
    }

    /// The one opening of both: t = ⌊x / 2^k⌋, y2·t, and y1·x where y1 is
    /// given (empty otherwise).
    fn trunc_times(&mut self, y1: Option<&[u64]>, y2: &[u64], x: &[u64], k: u32) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        let (r, l, n) = (self.ring, self.ring.bits(), x.len());
        assert!(k > 0 && k < l && y2.len() == n && y1.is_none_or(|y| y.len() == n), "{} × {n} by {k} bits", y2.len());
        let key = PoolKey::dcf_trunc_mul(k, self.opts.suite.wrap_bits(r), self.layer());
        self.keys_for(key, n);
        let DcfTruncMul { trunc: m, s, s_high, s1, s1_r } = self.corr.dcf_trunc_mul(key, n);
        let half = 1u64 << (l - 1);
        let zx = self.plus_public(x, &[half]);
        let mut masked = arith::add(r, &zx, &m.r);
        if let Some(y1) = y1 {
            masked.extend(arith::add(r, y1, &s1));
        }
        masked.extend(arith::add(r, y2, &s));
        let all = self.open(&masked);
        let (z, rest) = all.split_at(n);
        let (y1h, y2h) = rest.split_at(rest.len() - n);
        // Lane 1 gives s·(2^(ℓ−k)W − B − ⌊r/2^k⌋); s·P is local.
        let [t, st] = self.trunc_keys(&m, k, z, [&m.high, &s_high]);
        let t = self.plus_trunc_public(t, k, z);
        let y2t: Vec<u64> = (0..n)
            .map(|i| {
                let sti = r.add(st[i], r.mul(s[i], trunc_public(r, k, z[i])));
                r.sub(r.mul(y2h[i], t[i]), sti)
            })
            .collect();
        let server = self.is_server();
        let y1x: Vec<u64> = (0..y1h.len())
            .map(|i| {
                let zc = r.sub(z[i], half);
                let xi = if server { r.sub(zc, m.r[i]) } else { r.neg(m.r[i]) };
                let s1x = r.sub(r.mul(s1[i], zc), s1_r[i]);
                r.sub(r.mul(y1h[i], xi), s1x)
            })
            .collect();
        (t, y2t, y1x)
    }
}
