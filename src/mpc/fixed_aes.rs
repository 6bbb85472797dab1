//! AES-128 under one fixed, public key, for the DCF's PRG: the `aes`
//! crate, or four blocks an instruction with VAES where the CPU has it
//! (AVX-512). The key walk of [`super::dcf`] spends about half its time in
//! AES, and AES-NI's one block an instruction was its bound; the `aes`
//! crate's own VAES path needs a `--cfg` flag at build time, which a user's
//! `cargo install` would not set, so the choice is made here, at run time.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;

pub struct FixedAes {
    soft: Aes128,
    #[cfg(target_arch = "x86_64")]
    vaes: Option<x86::RoundKeys>,
}

impl FixedAes {
    pub fn new(key: &[u8; 16]) -> Self {
        FixedAes {
            soft: Aes128::new(GenericArray::from_slice(key)),
            #[cfg(target_arch = "x86_64")]
            vaes: x86::RoundKeys::new(key),
        }
    }

    /// Encrypt in place.
    pub fn encrypt_blocks(&self, blocks: &mut [aes::Block]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = &self.vaes {
            return k.encrypt(blocks);
        }
        self.soft.encrypt_blocks(blocks);
    }

    /// The `aes` crate alone (for the test that the paths agree).
    #[cfg(test)]
    fn encrypt_soft(&self, blocks: &mut [aes::Block]) {
        self.soft.encrypt_blocks(blocks);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The 11 round keys, each broadcast to the four lanes of a 512-bit
    /// register.
    pub struct RoundKeys([__m512i; 11]);

    // The round keys are public constants; the struct is plain data.
    unsafe impl Send for RoundKeys {}
    unsafe impl Sync for RoundKeys {}

    impl RoundKeys {
        /// `None` where the CPU lacks VAES or AVX-512.
        pub fn new(key: &[u8; 16]) -> Option<Self> {
            let ok = is_x86_feature_detected!("aes") && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("vaes");
            // SAFETY: the features were just detected.
            ok.then(|| unsafe { schedule(key) })
        }

        pub fn encrypt(&self, blocks: &mut [aes::Block]) {
            // SAFETY: `new` returned Some only where the features exist.
            unsafe { encrypt(&self.0, blocks) }
        }
    }

    /// One step of the AES-128 key schedule (FIPS 197 §5.2), with the
    /// `aeskeygenassist` output `g` for the round constant.
    #[target_feature(enable = "aes")]
    fn next(k: __m128i, g: __m128i) -> __m128i {
        let g = _mm_shuffle_epi32::<0xff>(g);
        let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        _mm_xor_si128(k, g)
    }

    #[target_feature(enable = "aes,avx512f")]
    unsafe fn schedule(key: &[u8; 16]) -> RoundKeys {
        let mut k = [_mm_setzero_si128(); 11];
        k[0] = unsafe { _mm_loadu_si128(key.as_ptr() as *const __m128i) };
        k[1] = next(k[0], _mm_aeskeygenassist_si128::<0x01>(k[0]));
        k[2] = next(k[1], _mm_aeskeygenassist_si128::<0x02>(k[1]));
        k[3] = next(k[2], _mm_aeskeygenassist_si128::<0x04>(k[2]));
        k[4] = next(k[3], _mm_aeskeygenassist_si128::<0x08>(k[3]));
        k[5] = next(k[4], _mm_aeskeygenassist_si128::<0x10>(k[4]));
        k[6] = next(k[5], _mm_aeskeygenassist_si128::<0x20>(k[5]));
        k[7] = next(k[6], _mm_aeskeygenassist_si128::<0x40>(k[6]));
        k[8] = next(k[7], _mm_aeskeygenassist_si128::<0x80>(k[7]));
        k[9] = next(k[8], _mm_aeskeygenassist_si128::<0x1b>(k[8]));
        k[10] = next(k[9], _mm_aeskeygenassist_si128::<0x36>(k[9]));
        RoundKeys(k.map(|r| _mm512_broadcast_i32x4(r)))
    }

    /// Sixteen blocks (four registers) at a time, so that the rounds'
    /// latency is hidden; what is left, one register at a time, the last
    /// few blocks with masked loads.
    #[target_feature(enable = "aes,avx512f,vaes")]
    unsafe fn encrypt(k: &[__m512i; 11], blocks: &mut [aes::Block]) {
        let mut wide = blocks.chunks_exact_mut(16);
        for c in &mut wide {
            let p = c.as_mut_ptr() as *mut __m512i;
            // SAFETY: 16 blocks are 256 contiguous bytes; unaligned access.
            unsafe {
                let mut x = [0usize, 1, 2, 3].map(|i| _mm512_xor_si512(_mm512_loadu_si512(p.add(i)), k[0]));
                for r in &k[1..10] {
                    x = x.map(|v| _mm512_aesenc_epi128(v, *r));
                }
                for (i, v) in x.into_iter().enumerate() {
                    _mm512_storeu_si512(p.add(i), _mm512_aesenclast_epi128(v, k[10]));
                }
            }
        }
        for c in wide.into_remainder().chunks_mut(4) {
            // Four blocks a register; a short last one through a mask of
            // its 64-bit words.
            let mask: __mmask8 = ((1u32 << (2 * c.len())) - 1) as __mmask8;
            let p = c.as_mut_ptr() as *mut i64;
            // SAFETY: the mask covers exactly the c.len() blocks there are.
            unsafe {
                let mut v = _mm512_xor_si512(_mm512_maskz_loadu_epi64(mask, p), k[0]);
                for r in &k[1..10] {
                    v = _mm512_aesenc_epi128(v, *r);
                }
                _mm512_mask_storeu_epi64(p, mask, _mm512_aesenclast_epi128(v, k[10]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a CPU without VAES both sides are the crate and only the FIPS
    /// vector says anything; where VAES exists (this project's machines)
    /// every batch length goes through the 16-block loop and the masked tail.
    #[test]
    fn the_fast_path_is_the_aes_crate_on_every_batch_length() {
        let aes = FixedAes::new(b"cipherprune-test");
        for n in [0, 1, 3, 4, 5, 15, 16, 17, 33, 100] {
            let blocks: Vec<aes::Block> = (0..n as u128).map(|i| GenericArray::from((i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_le_bytes())).collect();
            let (mut fast, mut soft) = (blocks.clone(), blocks);
            aes.encrypt_blocks(&mut fast);
            aes.encrypt_soft(&mut soft);
            assert_eq!(fast, soft, "{n} blocks");
        }
        // FIPS 197 Appendix C.1's vector, through the path this CPU takes.
        let aes = FixedAes::new(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        let mut b = [GenericArray::from([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])];
        aes.encrypt_blocks(&mut b);
        assert_eq!(b[0].as_slice(), [0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a]);
    }
}
