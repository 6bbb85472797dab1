//! Packed bit vectors: boolean shares (XOR-shared bits) 64 to a word, so the
//! comparison circuits run 64 instances per machine instruction.

use rand::RngCore;

/// A vector of `len` bits; bits past `len` in the last word are always 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BitVec {
    len: usize,
    words: Vec<u64>,
}

fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

impl BitVec {
    pub fn zeros(len: usize) -> Self {
        BitVec { len, words: vec![0; words_for(len)] }
    }

    pub fn ones(len: usize) -> Self {
        let mut v = BitVec { len, words: vec![u64::MAX; words_for(len)] };
        v.clear_tail();
        v
    }

    pub fn from_bools(bits: &[bool]) -> Self {
        let mut v = BitVec::zeros(bits.len());
        for (i, &b) in bits.iter().enumerate() {
            if b {
                v.words[i / 64] |= 1 << (i % 64);
            }
        }
        v
    }

    pub fn random(len: usize, rng: &mut impl RngCore) -> Self {
        let mut v = BitVec { len, words: (0..words_for(len)).map(|_| rng.next_u64()).collect() };
        v.clear_tail();
        v
    }

    /// Bit `bit` of every value: the bit-slice of a vector of ring elements.
    pub fn plane(values: &[u64], bit: u32) -> Self {
        let mut v = BitVec::zeros(values.len());
        for (w, chunk) in v.words.iter_mut().zip(values.chunks(64)) {
            for (j, &x) in chunk.iter().enumerate() {
                *w |= ((x >> bit) & 1) << j;
            }
        }
        v
    }

    fn clear_tail(&mut self) {
        if !self.len.is_multiple_of(64) {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << (self.len % 64)) - 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> bool {
        assert!(i < self.len, "bit {i} of {}", self.len);
        (self.words[i / 64] >> (i % 64)) & 1 == 1
    }

    pub fn to_bools(&self) -> Vec<bool> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// The bits as 0/1 integers.
    pub fn to_u64s(&self) -> Vec<u64> {
        (0..self.len).map(|i| self.get(i) as u64).collect()
    }

    fn zip(&self, o: &BitVec, f: impl Fn(u64, u64) -> u64) -> BitVec {
        assert_eq!(self.len, o.len, "bit vectors of {} and {} bits", self.len, o.len);
        let mut v = BitVec { len: self.len, words: self.words.iter().zip(&o.words).map(|(&a, &b)| f(a, b)).collect() };
        v.clear_tail();
        v
    }

    pub fn xor(&self, o: &BitVec) -> BitVec {
        self.zip(o, |a, b| a ^ b)
    }

    pub fn and(&self, o: &BitVec) -> BitVec {
        self.zip(o, |a, b| a & b)
    }

    pub fn not(&self) -> BitVec {
        let mut v = BitVec { len: self.len, words: self.words.iter().map(|w| !w).collect() };
        v.clear_tail();
        v
    }

    /// `out[i] = self[idx[i]]`.
    pub fn gather(&self, idx: &[usize]) -> BitVec {
        let mut v = BitVec::zeros(idx.len());
        for (w, chunk) in v.words.iter_mut().zip(idx.chunks(64)) {
            for (b, &j) in chunk.iter().enumerate() {
                *w |= ((self.words[j / 64] >> (j % 64)) & 1) << b;
            }
        }
        v
    }

    pub fn concat(parts: &[&BitVec]) -> BitVec {
        let len = parts.iter().map(|p| p.len).sum();
        let mut v = BitVec::zeros(len);
        let mut at: usize = 0;
        for p in parts {
            v.or_at(at, p);
            at += p.len;
        }
        v
    }

    /// OR `p`'s bits into positions `at..at + p.len` (word by word).
    fn or_at(&mut self, at: usize, p: &BitVec) {
        let (w0, sh) = (at / 64, at % 64);
        for (i, &w) in p.words.iter().enumerate() {
            self.words[w0 + i] |= w << sh;
            if sh > 0 && w0 + i + 1 < self.words.len() {
                self.words[w0 + i + 1] |= w >> (64 - sh);
            }
        }
    }

    /// Bits `start..start + len`.
    pub fn slice(&self, start: usize, len: usize) -> BitVec {
        assert!(start + len <= self.len, "bits {start}..{} of {}", start + len, self.len);
        let (w0, sh) = (start / 64, start % 64);
        let mut v = BitVec {
            len,
            words: (0..words_for(len))
                .map(|i| {
                    let lo = self.words[w0 + i] >> sh;
                    let hi = if sh > 0 { self.words.get(w0 + i + 1).map_or(0, |&w| w << (64 - sh)) } else { 0 };
                    lo | hi
                })
                .collect(),
        };
        v.clear_tail();
        v
    }

    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Little-endian bytes, ⌈len/8⌉ of them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate(self.len.div_ceil(8));
        out
    }

    /// The inverse of [`BitVec::to_bytes`]; `None` when the byte count is
    /// wrong or bits past `len` are set.
    pub fn from_bytes(len: usize, bytes: &[u8]) -> Option<BitVec> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let mut v = BitVec::zeros(len);
        for (w, c) in v.words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            *w = u64::from_le_bytes(b);
        }
        let last = v.words.last().copied();
        v.clear_tail();
        (v.words.last().copied() == last).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ops_match_bools() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for len in [0usize, 1, 63, 64, 65, 130] {
            let a = BitVec::random(len, &mut rng);
            let b = BitVec::random(len, &mut rng);
            let (ab, bb) = (a.to_bools(), b.to_bools());
            assert_eq!(a.xor(&b).to_bools(), ab.iter().zip(&bb).map(|(x, y)| x ^ y).collect::<Vec<_>>());
            assert_eq!(a.and(&b).to_bools(), ab.iter().zip(&bb).map(|(x, y)| x & y).collect::<Vec<_>>());
            assert_eq!(a.not().count_ones(), len - a.count_ones());
            assert_eq!(BitVec::from_bytes(len, &a.to_bytes()), Some(a.clone()));
            let c = BitVec::concat(&[&a, &b, &a]);
            assert_eq!(c.len(), 3 * len);
            assert_eq!(c.slice(len, len), b);
            assert_eq!(c.slice(2 * len, len), a);
        }
        let vals = [5u64, 2, 7];
        assert_eq!(BitVec::plane(&vals, 0).to_bools(), vec![true, false, true]);
        assert_eq!(BitVec::plane(&vals, 1).to_bools(), vec![false, true, true]);
        assert!(BitVec::from_bytes(3, &[0xff]).is_none(), "bits past the length are garbage");
    }
}
