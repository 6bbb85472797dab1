//! Distributed comparison functions: the dealer splits f(x) = β·[x < α]
//! (x, α of `n` bits, β in Z_{2^w}) into two keys; each party evaluates its
//! key on a public x and the two outputs add up to f(x) in Z_{2^w}, while one
//! key alone says nothing about α or β.
//!
//! The construction is Boyle, Chandran, Gilboa, Gupta, Ishai, Kumaresan and
//! Lu, "Function Secret Sharing for Mixed-Mode and Fixed-Point Secure
//! Computation" (EUROCRYPT 2021), Fig. 3: a GGM tree walked from the most
//! significant bit, with one correction word per level (a 128-bit seed, a
//! group element and two control bits) and one for the leaf. The PRG is
//! fixed-key AES-128 in the Matyas–Meyer–Oseas mode, G(s)_i = AES_K(s ⊕ i) ⊕
//! s ⊕ i (AES-NI, or VAES where the CPU has it: [`super::fixed_aes`]):
//! block 0 gives the left seed and control bit, block 1 the right ones,
//! block 2 the two group elements.
//!
//! **Two lanes.** A key may carry two payloads β₀, β₁ for the same α
//! (f(x) = (β₀, β₁)·[x < α], a DCF into the group Z_{2^w}², as in the
//! paper's general output group): the two lanes share the tree's seeds and
//! control bits, and only the group elements double. The generator then
//! expands four blocks a level (blocks 2 and 3: both lanes' elements of the
//! left and the right child), the evaluator still two (the taken side's
//! seed and its value block), so a pair of keys with one α costs one walk.
//!
//! **Early termination.** The walk stops `nu` levels above the leaves
//! (BGI's early termination, which the DCF's proof carries over unchanged):
//! the last correction word is a table of 2^nu group elements per lane, one
//! for each value of the input's low `nu` bits, and a leaf seed expands
//! (blocks 4, 5, …) into its own such table. The evaluator reads the one
//! block that holds its entry: one AES call where `nu` levels took 2·nu,
//! for a table about as long as the levels' words it replaces.
//!
//! Generation and evaluation run level by level over batches of keys, so
//! that AES calls pipeline and a batch's words stay in cache, and batches
//! run on rayon's threads.

use super::fixed_aes::FixedAes;
use aes::cipher::generic_array::GenericArray;
use rayon::prelude::*;

/// The PRG's fixed AES key (any public constant serves).
const PRG_KEY: [u8; 16] = *b"cipherprune-dcf1";

/// Z_{2^w}, 1 ≤ w ≤ 64, as a mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    mask: u64,
}

impl Group {
    pub fn bits(w: u32) -> Self {
        assert!((1..=64).contains(&w), "Z_2^{w}");
        Group { mask: if w == 64 { u64::MAX } else { (1 << w) - 1 } }
    }
    fn add(self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b) & self.mask
    }
    fn sub(self, a: u64, b: u64) -> u64 {
        a.wrapping_sub(b) & self.mask
    }
    /// (−1)^t · a, without a branch (t is a random bit).
    fn sign(self, t: bool, a: u64) -> u64 {
        let m = (t as u64).wrapping_neg();
        (a ^ m).wrapping_sub(m) & self.mask
    }
    /// Bytes of one element on the wire.
    pub fn bytes(self) -> usize {
        (64 - self.mask.leading_zeros() as usize).div_ceil(8)
    }
}

/// The fixed-key AES PRG, three blocks per seed.
pub struct Prg {
    aes: FixedAes,
}

impl Default for Prg {
    fn default() -> Self {
        Prg { aes: FixedAes::new(&PRG_KEY) }
    }
}

impl Prg {
    /// The one PRG every key uses, built once (CPU detection and two key
    /// schedules) rather than at each evaluation.
    pub fn shared() -> &'static Prg {
        static PRG: std::sync::OnceLock<Prg> = std::sync::OnceLock::new();
        PRG.get_or_init(Prg::default)
    }
}

/// One seed's expansion: v[side][lane].
#[derive(Clone, Copy, Default)]
struct Expanded {
    s: [u128; 2],
    t: [bool; 2],
    v: [[u64; 2]; 2],
}

impl Prg {
    /// AES in place, one batch.
    fn encrypt(&self, blocks: &mut [aes::Block]) {
        self.aes.encrypt_blocks(blocks);
    }

    /// Blocks `LEAF_BLOCK + c` of seed s's expansion, one batch: element
    /// i of a leaf table is half i % 2 of block c = i / 2 (the low half
    /// first).
    fn leaf(&self, seeds: impl Iterator<Item = (u128, u128)>, out: &mut Vec<aes::Block>) {
        out.clear();
        out.extend(seeds.map(|(s, c)| GenericArray::from((s ^ (LEAF_BLOCK + c)).to_le_bytes())));
        // The MMO feed-forward: AES of a block XOR the block.
        let mut fed = [aes::Block::default(); 64];
        for chunk in out.chunks_mut(64) {
            fed[..chunk.len()].copy_from_slice(chunk);
            self.aes.encrypt_blocks(chunk);
            for (o, i) in chunk.iter_mut().zip(&fed) {
                *o = GenericArray::from((u128::from_le_bytes((*o).into()) ^ u128::from_le_bytes((*i).into())).to_le_bytes());
            }
        }
    }

    /// G(s) of every seed, AES calls in one batch: 2 + `lanes` blocks.
    fn expand(&self, seeds: &[u128], lanes: usize, out: &mut Vec<Expanded>) {
        let per = 2 + lanes;
        let mut blocks: Vec<aes::Block> = Vec::with_capacity(per * seeds.len());
        for &s in seeds {
            for i in 0..per as u128 {
                blocks.push(GenericArray::from((s ^ i).to_le_bytes()));
            }
        }
        self.aes.encrypt_blocks(&mut blocks);
        out.clear();
        out.extend(seeds.iter().zip(blocks.chunks_exact(per)).map(|(&s, b)| {
            let word = |i: usize| u128::from_le_bytes(b[i].into()) ^ s ^ i as u128;
            let (l, r, v) = (word(0), word(1), word(2));
            let halves = |w: u128| [w as u64, (w >> 64) as u64];
            // One lane: block 2 holds the left and the right element; two:
            // block 2 the left child's lanes, block 3 the right child's.
            let v = if lanes == 1 { [[v as u64, 0], [(v >> 64) as u64, 0]] } else { [halves(v), halves(word(3))] };
            Expanded { s: [l & !1, r & !1], t: [l & 1 == 1, r & 1 == 1], v }
        }));
    }
}

/// The shape of a family of keys: input bits, output group, payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dcf {
    pub n: u32,
    pub group: Group,
    /// Payloads per key for the same α: 1 or 2.
    pub lanes: usize,
    /// Low input bits read from the leaf table instead of walked.
    pub nu: u32,
}

/// Leaf bits per lane count: the largest table no longer than about the
/// levels' words it replaces (one lane: 16 elements of 5 bytes for 4
/// levels of 22; two: 8 pairs for 3 levels of 27).
const LEAF_BITS: [u32; 2] = [4, 3];

/// The PRG block index of a leaf table's first block (0–3 serve levels).
const LEAF_BLOCK: u128 = 4;

impl Dcf {
    pub fn new(n: u32, w: u32) -> Self {
        Self::with_leaf(n, w, 1, LEAF_BITS[0])
    }

    /// Keys with two payloads for one α, evaluated in one walk.
    pub fn twin(n: u32, w: u32) -> Self {
        Self::with_leaf(n, w, 2, LEAF_BITS[1])
    }

    /// `lanes` payloads, the walk stopping `nu` levels early (at most n).
    pub fn with_leaf(n: u32, w: u32, lanes: usize, nu: u32) -> Self {
        assert!((1..=64).contains(&n), "a {n}-bit DCF");
        assert!((1..=2).contains(&lanes) && nu <= 8, "{lanes} lanes, {nu} leaf bits");
        Dcf { n, group: Group::bits(w), lanes, nu: nu.min(n) }
    }

    /// Bytes of one level's correction word: seed, control bits, elements.
    fn step(&self) -> usize {
        17 + self.lanes * self.group.bytes()
    }

    /// Levels walked.
    fn levels(&self) -> usize {
        (self.n - self.nu) as usize
    }

    /// Entries of the leaf table (each `lanes` elements).
    fn leaves(&self) -> usize {
        1 << self.nu
    }

    /// AES blocks a leaf seed expands into (two elements a block).
    fn leaf_blocks(&self) -> usize {
        (self.leaves() * self.lanes).div_ceil(2)
    }

    /// Bytes of the correction words of one key (shared by both parties'
    /// keys; each party also holds its own 128-bit root seed).
    pub fn cw_bytes(&self) -> usize {
        self.levels() * self.step() + self.leaves() * self.lanes * self.group.bytes()
    }

    /// The correction words of key pairs j for f_j(x) = β_j·[x < α_j], from
    /// their two root seeds, appended to `out` key after key. `betas` holds
    /// `lanes` payloads per key, key after key.
    pub fn gen(&self, prg: &Prg, alphas: &[u64], betas: &[u64], roots: &[[u128; 2]], out: &mut Vec<u8>) {
        assert!(alphas.len() * self.lanes == betas.len() && alphas.len() == roots.len(), "dcf gen: lengths differ");
        let (len, at, q) = (self.cw_bytes(), out.len(), self.lanes);
        out.resize(at + len * alphas.len(), 0);
        out[at..]
            .par_chunks_mut(CHUNK * len)
            .zip(alphas.par_chunks(CHUNK).zip(betas.par_chunks(CHUNK * q)).zip(roots.par_chunks(CHUNK)))
            .for_each(|(o, ((a, b), r))| self.gen_chunk(prg, a, b, r, o));
    }

    /// Level by level over a few hundred keys, so that the AES calls
    /// pipeline and the correction words being written stay in cache.
    fn gen_chunk(&self, prg: &Prg, alphas: &[u64], betas: &[u64], roots: &[[u128; 2]], out: &mut [u8]) {
        let (g, gb, len, m, q, step) = (self.group, self.group.bytes(), self.cw_bytes(), alphas.len(), self.lanes, self.step());
        warm(out);
        let mut s: Vec<u128> = roots.iter().flat_map(|r| [r[0], r[1]]).collect();
        let mut t: Vec<bool> = (0..2 * m).map(|i| i % 2 == 1).collect();
        let mut va = vec![0u64; q * m];
        let mut e = Vec::with_capacity(2 * m);
        for (level, i) in (self.nu..self.n).rev().enumerate() {
            prg.expand(&s, q, &mut e);
            for j in 0..m {
                let (e0, e1) = (e[2 * j], e[2 * j + 1]);
                let (t0, t1) = (t[2 * j], t[2 * j + 1]);
                let a = (alphas[j] >> i) & 1 == 1;
                let (keep, lose) = (a as usize, !a as usize);
                let s_cw = e0.s[lose] ^ e1.s[lose];
                let t_cw = [e0.t[0] ^ e1.t[0] ^ a ^ true, e0.t[1] ^ e1.t[1] ^ a];
                let cw = &mut out[j * len + level * step..];
                cw[..16].copy_from_slice(&s_cw.to_le_bytes());
                cw[16] = t_cw[0] as u8 | (t_cw[1] as u8) << 1;
                for lane in 0..q {
                    let va = &mut va[q * j + lane];
                    let mut v_cw = g.sign(t1, g.sub(g.sub(e1.v[lose][lane], e0.v[lose][lane]), *va));
                    // β enters where the path turns right (the left side is lost).
                    v_cw = g.add(v_cw, g.sign(t1, betas[q * j + lane]) & (a as u64).wrapping_neg());
                    *va = g.add(g.sub(*va, e1.v[keep][lane]), g.add(e0.v[keep][lane], g.sign(t1, v_cw)));
                    cw[17 + lane * gb..17 + (lane + 1) * gb].copy_from_slice(&v_cw.to_le_bytes()[..gb]);
                }
                s[2 * j] = e0.s[keep] ^ (s_cw & (t0 as u128).wrapping_neg());
                s[2 * j + 1] = e1.s[keep] ^ (s_cw & (t1 as u128).wrapping_neg());
                t[2 * j] = e0.t[keep] ^ (t0 && t_cw[keep]);
                t[2 * j + 1] = e1.t[keep] ^ (t1 && t_cw[keep]);
            }
        }
        // The leaf table: both parties' expansions apart, less the path's
        // sum, plus β where the low bits are below α's.
        let (nb, table) = (self.leaf_blocks() as u128, self.levels() * step);
        let mut blocks = Vec::new();
        prg.leaf(s.iter().flat_map(|&sj| (0..nb).map(move |c| (sj, c))), &mut blocks);
        let half = |b: &[aes::Block], i: usize| (u128::from_le_bytes(b[i / 2].into()) >> (64 * (i % 2))) as u64;
        for j in 0..m {
            let (b0, b1) = (&blocks[2 * j * nb as usize..], &blocks[(2 * j + 1) * nb as usize..]);
            let low = alphas[j] & ((1 << self.nu) - 1);
            for x in 0..self.leaves() {
                for lane in 0..q {
                    let i = x * q + lane;
                    let below = (x as u64) < low;
                    let v = g.add(g.sub(g.sub(half(b1, i), half(b0, i)), va[q * j + lane]), betas[q * j + lane] & (below as u64).wrapping_neg());
                    let at = j * len + table + i * gb;
                    out[at..at + gb].copy_from_slice(&g.sign(t[2 * j + 1], v).to_le_bytes()[..gb]);
                }
            }
        }
    }

    /// Party `b`'s shares of f(x_j) for keys j: root seeds `roots[j]`,
    /// correction words `cws[j·cw_bytes ..]`, public inputs `xs[j]`;
    /// `lanes` outputs per key, key after key.
    pub fn eval(&self, prg: &Prg, party: usize, roots: &[u128], cws: &[u8], xs: &[u64]) -> Vec<u64> {
        let len = self.cw_bytes();
        assert!(roots.len() == xs.len() && cws.len() == len * xs.len(), "dcf eval: {} roots, {} inputs, {} bytes", roots.len(), xs.len(), cws.len());
        let parts: Vec<Vec<u64>> = roots
            .par_chunks(EVAL_CHUNK)
            .zip(xs.par_chunks(EVAL_CHUNK).zip(cws.par_chunks(EVAL_CHUNK * len)))
            .map(|(r, (x, c))| self.eval_chunk(prg, party, r, c, x))
            .collect();
        parts.concat()
    }

    /// Only the taken side's seed block and its value block are expanded:
    /// two AES calls per level, one lane or two.
    fn eval_chunk(&self, prg: &Prg, party: usize, roots: &[u128], cws: &[u8], xs: &[u64]) -> Vec<u64> {
        if self.lanes == 1 {
            self.eval_lanes::<1>(prg, party, roots, cws, xs)
        } else {
            self.eval_lanes::<2>(prg, party, roots, cws, xs)
        }
    }

    /// [`Self::eval_chunk`] for `Q` lanes. Sums run mod 2^64 and party 1's
    /// sign is applied once at the end (reducing mod 2^w last gives the
    /// same group element); keys are walked as slices so that the loop
    /// carries no index arithmetic.
    fn eval_lanes<const Q: usize>(&self, prg: &Prg, party: usize, roots: &[u128], cws: &[u8], xs: &[u64]) -> Vec<u64> {
        let (g, gb, len, m, step) = (self.group, self.group.bytes(), self.cw_bytes(), xs.len(), self.step());
        warm(cws);
        let mut s = roots.to_vec();
        let mut t = vec![party == 1; m];
        let mut v = vec![[0u64; Q]; m];
        let mut blocks = vec![aes::Block::default(); 2 * m];
        for (level, i) in (self.nu..self.n).rev().enumerate() {
            let off = level * step;
            for ((b, &sj), &x) in blocks.chunks_exact_mut(2).zip(&s).zip(xs) {
                let side = ((x >> i) & 1) as u128;
                b[0] = GenericArray::from((sj ^ side).to_le_bytes());
                // One lane: block 2 holds both sides; two: block 2 + side.
                b[1] = GenericArray::from((sj ^ if Q == 1 { 2 } else { 2 + side }).to_le_bytes());
            }
            prg.encrypt(&mut blocks);
            let walk = blocks.chunks_exact(2).zip(s.iter_mut().zip(t.iter_mut())).zip(v.iter_mut().zip(xs.iter().zip(cws.chunks_exact(len))));
            for ((b, (sj, tj)), (vj, (&x, key))) in walk {
                let side = ((x >> i) & 1) as usize;
                let w = u128::from_le_bytes(b[0].into()) ^ *sj ^ side as u128;
                let vb = u128::from_le_bytes(b[1].into()) ^ *sj ^ if Q == 1 { 2 } else { 2 + side as u128 };
                let cw = &key[off..];
                let tm = (*tj as u64).wrapping_neg();
                let (seed, rest) = cw.split_first_chunk::<16>().expect("a correction word");
                for (lane, acc) in vj.iter_mut().enumerate() {
                    let own = if Q == 1 { (vb >> (64 * side)) as u64 } else { (vb >> (64 * lane)) as u64 };
                    *acc = acc.wrapping_add(own).wrapping_add(element(rest, 1 + lane * gb, gb) & tm);
                }
                *sj = (w & !1) ^ (u128::from_le_bytes(*seed) & (tm as u128 | (tm as u128) << 64));
                *tj = (w & 1 == 1) ^ (*tj && (rest[0] >> side) & 1 == 1);
            }
        }
        // The leaf: the one block holding this input's entry, and the
        // table's element where t is set.
        let (low, table) = ((1u64 << self.nu) - 1, self.levels() * step);
        let mut leaf = Vec::with_capacity(m);
        prg.leaf(s.iter().zip(xs).map(|(&sj, &x)| (sj, ((x & low) as u128 * Q as u128) / 2)), &mut leaf);
        let mut out = Vec::with_capacity(Q * m);
        for (((vj, &tj), key), (b, &x)) in v.iter().zip(&t).zip(cws.chunks_exact(len)).zip(leaf.iter().zip(xs)) {
            let b = u128::from_le_bytes((*b).into());
            for (lane, &acc) in vj.iter().enumerate() {
                let i = (x & low) as usize * Q + lane;
                let mut add = acc.wrapping_add((b >> (64 * (i % 2))) as u64);
                if tj {
                    add = add.wrapping_add(element(&key[table..], i * gb, gb));
                }
                out.push(g.sign(party == 1, add));
            }
        }
        out
    }
}

/// A little-endian group element of up to 8 bytes.
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

/// The `gb`-byte element at `at`, read as eight bytes where they exist:
/// the bytes past it land above the group's bits, which the sums drop.
fn element(bytes: &[u8], at: usize, gb: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => word(&bytes[at..at + gb]),
    }
}

/// Levels read and write each key's words at the stride of a whole key
/// (about 800 bytes), which the hardware prefetcher does not follow, so
/// every level waited on memory: one sequential pass over a chunk's words
/// first brings them into cache (eval 0.73 → 0.50 µs a key on one core).
fn warm(bytes: &[u8]) {
    let mut x = 0u8;
    for line in bytes.chunks(64) {
        x ^= line[0];
    }
    std::hint::black_box(x);
}

/// Keys per batch of [`Dcf::gen`].
const CHUNK: usize = 256;

/// Keys per batch of [`Dcf::eval`]: a 36-bit key's words are ~0.8 kB, so a
/// batch stays within a core's L2. BERT-medium's online compute with
/// batches of 64, 256, 1024 and 2048 keys: 4.4, 4.1–4.3, 3.9 (three runs)
/// and 4.0 s pruned.
const EVAL_CHUNK: usize = 1024;

/// A 128-bit root seed from two stream words.
pub fn root(lo: u64, hi: u64) -> u128 {
    lo as u128 | (hi as u128) << 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// One key (random β per lane) on every x, both lanes checked.
    fn check(d: Dcf, alpha: u64, rng: &mut impl Rng, xs: &[u64]) {
        let prg = Prg::default();
        let roots = [rng.gen::<u128>(), rng.gen::<u128>()];
        let betas: Vec<u64> = (0..d.lanes).map(|_| rng.gen()).collect();
        let mut cw = Vec::new();
        d.gen(&prg, &[alpha], &betas, &[roots], &mut cw);
        assert_eq!(cw.len(), d.cw_bytes());
        let cws: Vec<u8> = xs.iter().flat_map(|_| cw.iter().copied()).collect();
        let y0 = d.eval(&prg, 0, &vec![roots[0]; xs.len()], &cws, xs);
        let y1 = d.eval(&prg, 1, &vec![roots[1]; xs.len()], &cws, xs);
        for (j, &x) in xs.iter().enumerate() {
            for (lane, beta) in betas.iter().enumerate() {
                let want = if x < alpha { beta & d.group.mask } else { 0 };
                let at = d.lanes * j + lane;
                assert_eq!(d.group.add(y0[at], y1[at]), want, "n {} lanes {} α {alpha} β {beta} x {x}", d.n, d.lanes);
            }
        }
    }

    #[test]
    fn every_input_of_small_domains() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in 1..=6u32 {
            for w in [1, 5, 37, 64] {
                // The default leaves, the whole walk (a one-entry table) and one level short.
                let shapes = [Dcf::new(n, w), Dcf::twin(n, w), Dcf::with_leaf(n, w, 1, 0), Dcf::with_leaf(n, w, 2, 0), Dcf::with_leaf(n, w, 1, n - 1)];
                for d in shapes {
                    let xs: Vec<u64> = (0..1 << n).collect();
                    for alpha in 0..1u64 << n {
                        check(d, alpha, &mut rng, &xs);
                    }
                }
            }
        }
    }

    #[test]
    fn wide_domains_at_random_and_at_the_edges() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for (n, w) in [(36, 1), (37, 37), (12, 37), (63, 64), (64, 64)] {
            let top = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            for d in [Dcf::new(n, w), Dcf::twin(n, w), Dcf::with_leaf(n, w, 1, 8), Dcf::with_leaf(n, w, 2, 0)] {
                for _ in 0..20 {
                    let alpha = rng.gen::<u64>() & top;
                    let mut xs: Vec<u64> = (0..40).map(|_| rng.gen::<u64>() & top).collect();
                    xs.extend([0, top, alpha, alpha.wrapping_sub(1) & top, alpha.wrapping_add(1) & top]);
                    check(d, alpha, &mut rng, &xs);
                }
            }
        }
    }

    #[test]
    fn correction_seeds_look_random() {
        // A proxy for one key hiding α: the correction seeds of keys for the
        // two extreme α are balanced bits and unrelated.
        let prg = Prg::default();
        let d = Dcf::new(36, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.gen(&prg, &[0], &[1], &[[rng.gen(), rng.gen()]], &mut a);
        d.gen(&prg, &[(1 << 36) - 1], &[1], &[[rng.gen(), rng.gen()]], &mut b);
        let step = d.step();
        let seeds = |k: &[u8]| -> Vec<u8> { k.chunks(step).filter(|c| c.len() == step).flat_map(|c| c[..16].to_vec()).collect() };
        let (sa, sb) = (seeds(&a), seeds(&b));
        let bits = 8 * (sa.len() + sb.len()) as i64;
        let ones: i64 = sa.iter().chain(&sb).map(|x| x.count_ones() as i64).sum();
        assert!((2 * ones - bits).abs() < bits / 16, "{ones} ones of {bits}");
        let same: u32 = sa.iter().zip(&sb).map(|(x, y)| (!(x ^ y)).count_ones()).sum();
        assert!((same as i64 * 2 - 8 * sa.len() as i64).abs() < 8 * sa.len() as i64 / 8, "{same}");
        // The leaf tables of the extreme α (every entry β, or none): the
        // elements' bits balanced too.
        let d = Dcf::with_leaf(8, 64, 1, 8);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.gen(&prg, &[0], &[1], &[[rng.gen(), rng.gen()]], &mut a);
        d.gen(&prg, &[255], &[1], &[[rng.gen(), rng.gen()]], &mut b);
        assert_eq!(a.len(), 256 * 8);
        let ones: i64 = a.iter().chain(&b).map(|x| x.count_ones() as i64).sum();
        assert!((2 * ones - 2 * 8 * 2048).abs() < 2 * 8 * 2048 / 32, "{ones} ones in the tables");
    }
}
