//! The ring Z_{2^ℓ} with `s` fractional bits: element arithmetic on `u64`,
//! the fixed-point codec and the two truncation semantics.
//!
//! An element is stored as its canonical representative in `[0, 2^ℓ)`; every
//! operation masks its result back into that range, so `u64` wrapping
//! arithmetic is exactly ring arithmetic (2^ℓ divides 2^64). The *signed view*
//! reads the top bit as the sign (two's complement within ℓ bits): that is the
//! number a fixed-point element stands for, scaled by 2^s.
//!
//! ```
//! use cipherprune::fixed::Ring;
//! // An 8-bit ring with 4 fractional bits: 1.0 is 16, the largest value 127/16.
//! let r = Ring::new(8, 4).unwrap();
//! assert_eq!(r.encode(1.0), 16);
//! // Wrap-around is the ring's, on purpose: 7.5 + 1.0 = 8.5 does not fit and
//! // comes back as 8.5 − 16 = −7.5.
//! let big = r.add(r.encode(7.5), r.encode(1.0));
//! assert_eq!(r.decode(big), -7.5);
//! // Negative numbers are their two's complement within ℓ bits.
//! assert_eq!(r.encode(-1.0), 256 - 16);
//! assert_eq!(r.to_signed(r.encode(-1.0)), -16);
//! // `fits` is how the engine notices that an exact value left the range.
//! assert!(r.fits(127) && !r.fits(128) && r.fits(-128) && !r.fits(-129));
//! ```

use serde::{Deserialize, Serialize};

/// Errors in ring parameters (these come from user configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("ring width ℓ = {0} bits is outside 2..=64")]
    Bits(u32),
    #[error("{frac} fractional bits do not leave an integer bit in a {bits}-bit ring")]
    Frac { bits: u32, frac: u32 },
}

/// Parameters of Z_{2^ℓ} with `frac` (= s) fractional bits.
///
/// The fields are private so that every `Ring` in the program is valid
/// (2 ≤ ℓ ≤ 64, s < ℓ); build one with [`Ring::new`] or a preset. Products
/// carry 2s fractional bits; a ring with 2s ≥ ℓ − 1 cannot hold them and
/// every product is reported as an overflow (useful in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RingParams", into = "RingParams")]
pub struct Ring {
    bits: u32,
    frac: u32,
}

/// The serialised form of [`Ring`]; deserialising validates it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct RingParams {
    bits: u32,
    frac: u32,
}

impl TryFrom<RingParams> for Ring {
    type Error = RingError;
    fn try_from(p: RingParams) -> Result<Self, RingError> {
        Ring::new(p.bits, p.frac)
    }
}

impl From<Ring> for RingParams {
    fn from(r: Ring) -> Self {
        RingParams { bits: r.bits, frac: r.frac }
    }
}

/// How products are brought back from 2s to s fractional bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Truncation {
    /// Arithmetic shift of the signed value (⌊x / 2^k⌋), what faithful
    /// truncation protocols (BOLT, Cheetah with the MSB known) reconstruct.
    Exact,
    /// Stochastic rounding: ⌊x / 2^k⌋ + c with c = 1 with probability
    /// (x mod 2^k) / 2^k. This is the exact error distribution of local share
    /// truncation (SecureML, party 1 truncating its negated share) *given
    /// that the shares do not wrap*; the wrap event (probability ≤ |x|/2^(ℓ−1),
    /// a huge error) is not simulated. Draws come from a ChaCha RNG seeded
    /// with `seed` and the example index.
    Probabilistic { seed: u64 },
}

impl Ring {
    /// BOLT: ℓ = 37, s = 12.
    pub const BOLT: Ring = Ring { bits: 37, frac: 12 };
    /// CipherPrune's micro-benchmarks: ℓ = 32, s = 12.
    pub const CIPHERPRUNE: Ring = Ring { bits: 32, frac: 12 };
    /// CrypTen / SHAFT: ℓ = 64, s = 16.
    pub const CRYPTEN: Ring = Ring { bits: 64, frac: 16 };

    /// # Errors
    /// When ℓ is outside 2..=64 or s ≥ ℓ.
    pub fn new(bits: u32, frac: u32) -> Result<Ring, RingError> {
        if !(2..=64).contains(&bits) {
            return Err(RingError::Bits(bits));
        }
        if frac >= bits {
            return Err(RingError::Frac { bits, frac });
        }
        Ok(Ring { bits, frac })
    }

    /// ℓ.
    pub fn bits(self) -> u32 {
        self.bits
    }

    /// s, the number of fractional bits.
    pub fn frac(self) -> u32 {
        self.frac
    }

    /// 2^ℓ − 1.
    pub fn mask(self) -> u64 {
        if self.bits == 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        }
    }

    /// The encoding of 1.0, 2^s.
    pub fn one(self) -> u64 {
        1u64 << self.frac
    }

    /// Reduce any `u64` modulo 2^ℓ.
    pub fn reduce(self, x: u64) -> u64 {
        x & self.mask()
    }

    pub fn add(self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b) & self.mask()
    }

    pub fn sub(self, a: u64, b: u64) -> u64 {
        a.wrapping_sub(b) & self.mask()
    }

    pub fn neg(self, a: u64) -> u64 {
        a.wrapping_neg() & self.mask()
    }

    /// Ring product (no truncation).
    pub fn mul(self, a: u64, b: u64) -> u64 {
        a.wrapping_mul(b) & self.mask()
    }

    /// The ring element of a signed integer (mod 2^ℓ).
    pub fn from_signed(self, v: i64) -> u64 {
        (v as u64) & self.mask()
    }

    /// The ring element of an `i128` (mod 2^ℓ).
    pub fn from_i128(self, v: i128) -> u64 {
        (v as u64) & self.mask()
    }

    /// The signed view: the top bit of ℓ is the sign.
    pub fn to_signed(self, x: u64) -> i64 {
        let shift = 64 - self.bits;
        ((x << shift) as i64) >> shift
    }

    /// Smallest signed value, −2^(ℓ−1).
    pub fn min_signed(self) -> i128 {
        -(1i128 << (self.bits - 1))
    }

    /// Largest signed value, 2^(ℓ−1) − 1.
    pub fn max_signed(self) -> i128 {
        (1i128 << (self.bits - 1)) - 1
    }

    /// Whether an exact integer is representable in the signed view.
    pub fn fits(self, v: i128) -> bool {
        v >= self.min_signed() && v <= self.max_signed()
    }

    /// `round(x · 2^scale)` as an exact integer (ties away from zero, as
    /// `f64::round`); saturates at ±2^127 for absurd inputs, NaN gives 0.
    /// Only used at the boundary: weights, inputs, thresholds, constants.
    pub fn round_scaled(x: f64, scale: u32) -> i128 {
        (x * (scale as f64).exp2()).round() as i128
    }

    /// Encode at an explicit scale; the flag says whether it fitted.
    pub fn encode_at(self, x: f64, scale: u32) -> (u64, bool) {
        let v = Ring::round_scaled(x, scale);
        (self.from_i128(v), self.fits(v))
    }

    /// `round(x · 2^s) mod 2^ℓ`.
    pub fn encode(self, x: f64) -> u64 {
        self.encode_at(x, self.frac).0
    }

    /// The real number an element stands for: signed view / 2^s.
    pub fn decode(self, x: u64) -> f64 {
        self.to_signed(x) as f64 / (self.frac as f64).exp2()
    }

    /// Exact truncation by `k` bits: arithmetic shift of the signed view,
    /// i.e. ⌊x / 2^k⌋.
    pub fn trunc_exact(self, x: u64, k: u32) -> u64 {
        debug_assert!(k < 64);
        self.from_signed(self.to_signed(x) >> k)
    }

    /// Probabilistic truncation by `k` bits given a uniform draw `u` whose
    /// low `k` bits are used: ⌊x / 2^k⌋ + [u mod 2^k < x mod 2^k].
    pub fn trunc_stochastic(self, x: u64, k: u32, u: u64) -> u64 {
        if k == 0 {
            return x;
        }
        let low_mask = (1u64 << k) - 1;
        let v = self.to_signed(x);
        let carry = ((u & low_mask) < ((v as u64) & low_mask)) as i64;
        self.from_signed((v >> k) + carry)
    }
}

impl std::fmt::Display for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Z_2^{} (s = {})", self.bits, self.frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn ring_strategy() -> impl Strategy<Value = Ring> {
        // Several widths, 64 and odd ones like 37 included.
        prop::sample::select(vec![2u32, 5, 16, 31, 32, 37, 53, 63, 64])
            .prop_flat_map(|bits| (Just(bits), 0..bits))
            .prop_map(|(bits, frac)| Ring::new(bits, frac).unwrap())
    }

    proptest! {
        #[test]
        fn ring_laws(r in ring_strategy(), a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
            let (a, b, c) = (r.reduce(a), r.reduce(b), r.reduce(c));
            prop_assert_eq!(r.add(a, b), r.add(b, a));
            prop_assert_eq!(r.mul(a, b), r.mul(b, a));
            prop_assert_eq!(r.add(r.add(a, b), c), r.add(a, r.add(b, c)));
            prop_assert_eq!(r.mul(r.mul(a, b), c), r.mul(a, r.mul(b, c)));
            prop_assert_eq!(r.mul(a, r.add(b, c)), r.add(r.mul(a, b), r.mul(a, c)));
            prop_assert_eq!(r.add(a, r.neg(a)), 0);
            prop_assert_eq!(r.sub(a, b), r.add(a, r.neg(b)));
            prop_assert_eq!(r.mul(a, 1), a);
            // The signed view is a bijection onto [−2^(ℓ−1), 2^(ℓ−1)).
            let sa = r.to_signed(a) as i128;
            prop_assert!(r.fits(sa));
            prop_assert_eq!(r.from_signed(sa as i64), a);
            // Ring ops agree with exact integer arithmetic mod 2^ℓ.
            let sb = r.to_signed(b) as i128;
            prop_assert_eq!(r.mul(a, b), r.from_i128(sa * sb));
        }

        #[test]
        fn codec_round_trip(r in ring_strategy(), t in -1.0f64..1.0) {
            // Any value inside the representable range comes back within 2^-(s+1).
            let max = r.max_signed() as f64 / (r.frac() as f64).exp2();
            let x = t * max;
            let back = r.decode(r.encode(x));
            prop_assert!((back - x).abs() <= 0.5 / (r.frac() as f64).exp2() + 1e-12 * max.abs(),
                "{} -> {}", x, back);
        }

        #[test]
        fn exact_truncation_is_floor(r in ring_strategy(), a in any::<u64>(), k in 0u32..20) {
            let a = r.reduce(a);
            let k = k.min(r.bits() - 1);
            let want = (r.to_signed(a) as i128).div_euclid(1i128 << k);
            prop_assert_eq!(r.to_signed(r.trunc_exact(a, k)) as i128, want);
        }

        #[test]
        fn probabilistic_truncation_within_one_ulp(r in ring_strategy(), a in any::<u64>(), k in 1u32..20, u in any::<u64>()) {
            let a = r.reduce(a);
            let k = k.min(r.bits() - 1);
            let floor = (r.to_signed(a) as i128).div_euclid(1i128 << k);
            let got = r.to_signed(r.trunc_stochastic(a, k, u)) as i128;
            prop_assert!(got == floor || got == floor + 1);
            // Exact multiples of 2^k are never disturbed.
            let m = r.from_i128(floor << k);
            if r.fits(floor << k) {
                prop_assert_eq!(r.to_signed(r.trunc_stochastic(m, k, u)) as i128, floor);
            }
        }
    }

    #[test]
    fn probabilistic_truncation_is_unbiased_and_seeded() {
        let r = Ring::BOLT;
        let x = r.encode(0.3); // 0.3·4096 = 1228.8 → 1229; truncating 12 bits: 0.300048...
        let draw = |seed: u64| {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            (0..20_000)
                .map(|_| r.to_signed(r.trunc_stochastic(x, 12, rng.gen())))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same draws");
        assert_ne!(a, draw(8));
        let mean = a.iter().sum::<i64>() as f64 / a.len() as f64;
        assert!((mean - 1229.0 / 4096.0).abs() < 0.01, "mean {mean}");
        assert!(a.iter().all(|&v| v == 0 || v == 1));
    }

    #[test]
    fn presets_and_validation() {
        assert_eq!(Ring::new(37, 12).unwrap(), Ring::BOLT);
        assert!(Ring::new(65, 12).is_err());
        assert!(Ring::new(12, 12).is_err());
        assert_eq!(Ring::CRYPTEN.mask(), u64::MAX);
        assert_eq!(Ring::CRYPTEN.to_signed(u64::MAX), -1);
        let json = serde_json::to_string(&Ring::BOLT).unwrap();
        assert_eq!(json, r#"{"bits":37,"frac":12}"#);
        assert_eq!(serde_json::from_str::<Ring>(&json).unwrap(), Ring::BOLT);
        assert!(serde_json::from_str::<Ring>(r#"{"bits":70,"frac":12}"#).is_err());
    }

    #[test]
    fn encode_overflow_is_flagged() {
        let r = Ring::new(16, 12).unwrap(); // values in [−8, 8)
        assert!(r.encode_at(7.9, 12).1);
        assert!(!r.encode_at(8.0, 12).1);
        assert!(!r.encode_at(1.0, 24).1, "a 2s-scaled 1.0 does not fit 16 bits");
    }
}
