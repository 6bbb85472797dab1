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
//! s ⊕ i for i = 0, 1, 2 (the `aes` crate uses AES-NI where the CPU has it):
//! block 0 gives the left seed and control bit, block 1 the right ones,
//! block 2 the two group elements.
//!
//! Generation and evaluation run level by level over batches of keys, so
//! that AES calls pipeline and a batch's words stay in cache, and batches
//! run on rayon's threads.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
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
    aes: Aes128,
}

impl Default for Prg {
    fn default() -> Self {
        Prg { aes: Aes128::new(GenericArray::from_slice(&PRG_KEY)) }
    }
}

/// One seed's expansion.
#[derive(Clone, Copy, Default)]
struct Expanded {
    s: [u128; 2],
    t: [bool; 2],
    v: [u64; 2],
}

impl Prg {
    /// AES in place, one batch.
    fn encrypt(&self, blocks: &mut [aes::Block]) {
        self.aes.encrypt_blocks(blocks);
    }

    /// G(s) of every seed, AES calls in one batch.
    fn expand(&self, seeds: &[u128], out: &mut Vec<Expanded>) {
        let mut blocks: Vec<aes::Block> = Vec::with_capacity(3 * seeds.len());
        for &s in seeds {
            for i in 0..3u128 {
                blocks.push(GenericArray::from((s ^ i).to_le_bytes()));
            }
        }
        self.aes.encrypt_blocks(&mut blocks);
        out.clear();
        out.extend(seeds.iter().zip(blocks.chunks_exact(3)).map(|(&s, b)| {
            let word = |i: usize| u128::from_le_bytes(b[i].into()) ^ s ^ i as u128;
            let (l, r, v) = (word(0), word(1), word(2));
            Expanded { s: [l & !1, r & !1], t: [l & 1 == 1, r & 1 == 1], v: [v as u64, (v >> 64) as u64] }
        }));
    }
}

/// A seed as a group element (its high half: the low bit carries t).
fn convert(g: Group, s: u128) -> u64 {
    ((s >> 64) as u64) & g.mask
}

/// The shape of a family of keys: input bits and output group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dcf {
    pub n: u32,
    pub group: Group,
}

impl Dcf {
    pub fn new(n: u32, w: u32) -> Self {
        assert!((1..=64).contains(&n), "a {n}-bit DCF");
        Dcf { n, group: Group::bits(w) }
    }

    /// Bytes of the correction words of one key (shared by both parties'
    /// keys; each party also holds its own 128-bit root seed).
    pub fn cw_bytes(&self) -> usize {
        let g = self.group.bytes();
        self.n as usize * (16 + 1 + g) + g
    }

    /// The correction words of key pairs j for f_j(x) = β_j·[x < α_j], from
    /// their two root seeds, appended to `out` key after key.
    pub fn gen(&self, prg: &Prg, alphas: &[u64], betas: &[u64], roots: &[[u128; 2]], out: &mut Vec<u8>) {
        assert!(alphas.len() == betas.len() && alphas.len() == roots.len(), "dcf gen: lengths differ");
        let (len, at) = (self.cw_bytes(), out.len());
        out.resize(at + len * alphas.len(), 0);
        out[at..]
            .par_chunks_mut(CHUNK * len)
            .zip(alphas.par_chunks(CHUNK).zip(betas.par_chunks(CHUNK)).zip(roots.par_chunks(CHUNK)))
            .for_each(|(o, ((a, b), r))| self.gen_chunk(prg, a, b, r, o));
    }

    /// Level by level over a few hundred keys, so that the AES calls
    /// pipeline and the correction words being written stay in cache.
    fn gen_chunk(&self, prg: &Prg, alphas: &[u64], betas: &[u64], roots: &[[u128; 2]], out: &mut [u8]) {
        let (g, gb, len, m) = (self.group, self.group.bytes(), self.cw_bytes(), alphas.len());
        warm(out);
        let mut s: Vec<u128> = roots.iter().flat_map(|r| [r[0], r[1]]).collect();
        let mut t: Vec<bool> = (0..2 * m).map(|i| i % 2 == 1).collect();
        let mut va = vec![0u64; m];
        let mut e = Vec::with_capacity(2 * m);
        for (level, i) in (0..self.n).rev().enumerate() {
            prg.expand(&s, &mut e);
            for j in 0..m {
                let (e0, e1) = (e[2 * j], e[2 * j + 1]);
                let (t0, t1) = (t[2 * j], t[2 * j + 1]);
                let a = (alphas[j] >> i) & 1 == 1;
                let (keep, lose) = (a as usize, !a as usize);
                let s_cw = e0.s[lose] ^ e1.s[lose];
                let mut v_cw = g.sign(t1, g.sub(g.sub(e1.v[lose], e0.v[lose]), va[j]));
                // β enters where the path turns right (the left side is lost).
                v_cw = g.add(v_cw, g.sign(t1, betas[j]) & (a as u64).wrapping_neg());
                va[j] = g.add(g.sub(va[j], e1.v[keep]), g.add(e0.v[keep], g.sign(t1, v_cw)));
                let t_cw = [e0.t[0] ^ e1.t[0] ^ a ^ true, e0.t[1] ^ e1.t[1] ^ a];
                let cw = &mut out[j * len + level * (17 + gb)..];
                cw[..16].copy_from_slice(&s_cw.to_le_bytes());
                cw[16] = t_cw[0] as u8 | (t_cw[1] as u8) << 1;
                cw[17..17 + gb].copy_from_slice(&v_cw.to_le_bytes()[..gb]);
                s[2 * j] = e0.s[keep] ^ (s_cw & (t0 as u128).wrapping_neg());
                s[2 * j + 1] = e1.s[keep] ^ (s_cw & (t1 as u128).wrapping_neg());
                t[2 * j] = e0.t[keep] ^ (t0 && t_cw[keep]);
                t[2 * j + 1] = e1.t[keep] ^ (t1 && t_cw[keep]);
            }
        }
        for j in 0..m {
            let last = g.sign(t[2 * j + 1], g.sub(g.sub(convert(g, s[2 * j + 1]), convert(g, s[2 * j])), va[j]));
            out[(j + 1) * len - gb..(j + 1) * len].copy_from_slice(&last.to_le_bytes()[..gb]);
        }
    }

    /// Party `b`'s shares of f(x_j) for keys j: root seeds `roots[j]`,
    /// correction words `cws[j·cw_bytes ..]`, public inputs `xs[j]`.
    pub fn eval(&self, prg: &Prg, party: usize, roots: &[u128], cws: &[u8], xs: &[u64]) -> Vec<u64> {
        let len = self.cw_bytes();
        assert!(roots.len() == xs.len() && cws.len() == len * xs.len(), "dcf eval: {} roots, {} inputs, {} bytes", roots.len(), xs.len(), cws.len());
        let parts: Vec<Vec<u64>> = roots
            .par_chunks(CHUNK)
            .zip(xs.par_chunks(CHUNK).zip(cws.par_chunks(CHUNK * len)))
            .map(|(r, (x, c))| self.eval_chunk(prg, party, r, c, x))
            .collect();
        parts.concat()
    }

    /// Only the taken side's seed block and the value block are expanded:
    /// two AES calls per level instead of the generator's three.
    fn eval_chunk(&self, prg: &Prg, party: usize, roots: &[u128], cws: &[u8], xs: &[u64]) -> Vec<u64> {
        let (g, gb, len, m) = (self.group, self.group.bytes(), self.cw_bytes(), xs.len());
        let neg = party == 1;
        let word = |bytes: &[u8]| {
            let mut w = [0u8; 8];
            w[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(w)
        };
        warm(cws);
        let mut s = roots.to_vec();
        let mut t = vec![neg; m];
        let mut v = vec![0u64; m];
        let mut blocks = vec![aes::Block::default(); 2 * m];
        for (level, i) in (0..self.n).rev().enumerate() {
            for j in 0..m {
                let side = ((xs[j] >> i) & 1) as u128;
                blocks[2 * j] = GenericArray::from((s[j] ^ side).to_le_bytes());
                blocks[2 * j + 1] = GenericArray::from((s[j] ^ 2).to_le_bytes());
            }
            prg.encrypt(&mut blocks);
            for j in 0..m {
                let side = ((xs[j] >> i) & 1) as usize;
                let w = u128::from_le_bytes(blocks[2 * j].into()) ^ s[j] ^ side as u128;
                let vb = u128::from_le_bytes(blocks[2 * j + 1].into()) ^ s[j] ^ 2;
                let cw = &cws[j * len + level * (17 + gb)..];
                let tm = (t[j] as u128).wrapping_neg();
                let s_cw = u128::from_le_bytes(cw[..16].try_into().expect("16 bytes"));
                // Eight bytes where they exist: the bytes past the group's
                // belong to the next word and fall out of the sum mod 2^w.
                let v_cw = if cw.len() >= 25 { u64::from_le_bytes(cw[17..25].try_into().expect("8 bytes")) } else { word(&cw[17..17 + gb]) };
                let add = g.add((vb >> (64 * side)) as u64, v_cw & tm as u64);
                v[j] = g.add(v[j], g.sign(neg, add));
                s[j] = (w & !1) ^ (s_cw & tm);
                t[j] = (w & 1 == 1) ^ (t[j] && (cw[16] >> side) & 1 == 1);
            }
        }
        for j in 0..m {
            let mut add = convert(g, s[j]);
            if t[j] {
                add = g.add(add, word(&cws[(j + 1) * len - gb..(j + 1) * len]));
            }
            v[j] = g.add(v[j], g.sign(neg, add));
        }
        v
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

/// Keys per batch of [`Dcf::gen`] and [`Dcf::eval`].
const CHUNK: usize = 256;

/// A 128-bit root seed from two stream words.
pub fn root(lo: u64, hi: u64) -> u128 {
    lo as u128 | (hi as u128) << 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn check(d: Dcf, alpha: u64, beta: u64, xs: &[u64], rng: &mut impl Rng) {
        let prg = Prg::default();
        let roots = [rng.gen::<u128>(), rng.gen::<u128>()];
        let mut cw = Vec::new();
        d.gen(&prg, &[alpha], &[beta], &[roots], &mut cw);
        assert_eq!(cw.len(), d.cw_bytes());
        let cws: Vec<u8> = xs.iter().flat_map(|_| cw.iter().copied()).collect();
        let y0 = d.eval(&prg, 0, &vec![roots[0]; xs.len()], &cws, xs);
        let y1 = d.eval(&prg, 1, &vec![roots[1]; xs.len()], &cws, xs);
        for (j, &x) in xs.iter().enumerate() {
            let want = if x < alpha { beta & d.group.mask } else { 0 };
            assert_eq!(d.group.add(y0[j], y1[j]), want, "n {} α {alpha} β {beta} x {x}", d.n);
        }
    }

    #[test]
    fn every_input_of_small_domains() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for n in 1..=6u32 {
            for w in [1, 5, 37, 64] {
                let d = Dcf::new(n, w);
                let xs: Vec<u64> = (0..1 << n).collect();
                for alpha in 0..1u64 << n {
                    check(d, alpha, rng.gen(), &xs, &mut rng);
                }
            }
        }
    }

    #[test]
    fn wide_domains_at_random_and_at_the_edges() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for (n, w) in [(36, 1), (37, 37), (12, 37), (63, 64), (64, 64)] {
            let d = Dcf::new(n, w);
            let top = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            for _ in 0..20 {
                let alpha = rng.gen::<u64>() & top;
                let mut xs: Vec<u64> = (0..40).map(|_| rng.gen::<u64>() & top).collect();
                xs.extend([0, top, alpha, alpha.wrapping_sub(1) & top, alpha.wrapping_add(1) & top]);
                check(d, alpha, rng.gen(), &xs, &mut rng);
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
        let step = 17 + d.group.bytes();
        let seeds = |k: &[u8]| -> Vec<u8> { k.chunks(step).filter(|c| c.len() == step).flat_map(|c| c[..16].to_vec()).collect() };
        let (sa, sb) = (seeds(&a), seeds(&b));
        let bits = 8 * (sa.len() + sb.len()) as i64;
        let ones: i64 = sa.iter().chain(&sb).map(|x| x.count_ones() as i64).sum();
        assert!((2 * ones - bits).abs() < bits / 16, "{ones} ones of {bits}");
        let same: u32 = sa.iter().zip(&sb).map(|(x, y)| (!(x ^ y)).count_ones()).sum();
        assert!((same as i64 * 2 - 8 * sa.len() as i64).abs() < 8 * sa.len() as i64 / 8, "{same}");
    }
}

