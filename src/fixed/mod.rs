//! Fixed-point arithmetic in the ring Z_{2^ℓ}: the ring and codec
//! ([`ring`]), the non-linear approximations written over the protocol
//! primitives ([`approx`]), their float twins ([`twin`]) and primitive
//! counters ([`cost`]). No floating point touches a ring value; floats only
//! appear where inputs, weights, thresholds and constants are encoded.
//!
//! `approx` is written over [`crate::secure::backend::Backend`] — the one
//! place `fixed` looks into `secure` — so that the plain engine and a future
//! secret-shared backend run the very same algorithms.
//!
//! # The approximations
//!
//! "twin" = max error of the float twin against the exact function on the
//! domain (measured by the tests in `approx/tests.rs`, which print them with
//! `--nocapture`); "ulps" = max |fixed − twin| in units of 2^−s, at 37/12
//! and 64/16, over grids of representable inputs (the bound the tests
//! assert in parentheses). Costs are per element unless said per row; "cmp" =
//! secure comparisons, "mult" = secret × secret products.
//!
//! | function | domain | twin vs exact | fixed vs twin (ulps) | mult | cmp | MUX | trunc | B2A |
//! |---|---|---|---|---|---|---|---|---|
//! | GELU high (BOLT: 0.5x + P4(\|x\|), \|x\| < 2.7, else ReLU) | ℝ | 1.62e-3 inside, 9.36e-3 at the cut | 2.1 / 2.8 (≤ 4) | 2 | 2 | 3 | 3 | 0 |
//! | GELU low (ours: 0.5x + Q2(\|x\|), \|x\| < 2.2, else ReLU) | ℝ | 3.16e-2 (3.06e-2 at the cut) | 0.9 / 2.7 (≤ 4) | 1 | 2 | 3 | 2 | 0 |
//! | exp high (BOLT: z ≤ 13, a(p + b)² + c) | x ≤ 0 | 2.13e-3 abs, 3.1e-3 rel; 0 below −14 ln2 | 1.9 / 1.6 (≤ 3) | 9 | 2 | 0 | 10 | 2 |
//! | exp low (ours: z ≤ 7, a0 + a1·p) | x ≤ 0 | 2.98e-2 abs and rel; 0 below −8 ln2 | 1.1 / 1.0 (≤ 3) | 6 | 2 | 0 | 7 | 2 |
//! | softmax high, row of n | scores in [−8, 8] tested | 7.8e-4 abs | 4.1 / 3.7 (≤ 6) | 10n + 7 per row | 3n − 1 + ⌈log2 n⌉ per row | n − 1 | 12n + 7 | 2n + ⌈log2 n⌉ |
//! | softmax low, row of n | same | 1.54e-2 abs | 2.3 / 2.4 (≤ 6) | 7n + 7 per row | 3n − 1 + ⌈log2 n⌉ per row | n − 1 | 9n + 7 | 2n + ⌈log2 n⌉ |
//! | reciprocal (thermometer + 4 Newton) | [0.5, 2^(J+1)) | < 1e-7 rel | 1.0 / 1.0 (≤ 2) | 7 | J | 0 | 7 + 1 | J |
//! | 1/√ (thermometer over 25 octaves + 3 Newton) | [2^−12, 2^14) | 1.65e-5 rel | rel: 0.7 / 0.5 ·2^−s for v ∈ [1/16, 256) (≤ 2) | 8 | 25 | 0 | 8 + 1 | 25 |
//! | LayerNorm, row of d (no ε) | var ∈ [2^−12, 2^14) | 3.4e-5 (d = 64) | 30 / 29 (≤ 40) | 3d + 8 per row | 25 per row | 0 | 5d + 12 (37/12) | 25 |
//! | tanh (BOLT: Q5 on \|x\| ≤ 2.855, else ±1) | ℝ | 2.49e-3 inside, 6.6e-3 at the cut | 7.2 / 7.9 (≤ 10) | 4 | 2 | 4 | 6 | 0 |
//!
//! The low variants need strictly fewer secret products than the high ones
//! and no more comparisons (asserted by `primitive_counts_per_element`).
//! Counts are for `exact` truncation, whose forms trade comparisons and
//! MUXes for truncations and products that share a round (exp's shift
//! takes z's bits from truncations of z and a MUX per bit as two products
//! opened with its truncation; "+ 1": the last truncation of 1/v and 1/√v
//! is taken per element of the product that consumes it, in its round).
//! With `probabilistic` truncation exp shifts by comparisons, as BOLT:
//! high 1 / 5 / 5 / 7 / 3, low 0 / 4 / 4 / 5 / 2.
//! Where the ulps come from: BOLT's exp constants at s = 12 are exactly
//! round(c·4096); comparisons with a constant c use ⌈c·2^s⌉ so that the
//! fixed point takes the twin's branch on every representable input; GELU
//! and tanh clamp the polynomial's argument to the cut so that the
//! discarded branch cannot overflow a narrow ring; LayerNorm's error is the
//! floor bias of its variance (≈ −1 ulp), see [`approx::NormPrecision`] for
//! how it trades headroom for precision per ring.
//!
//! Truncation: `exact` is ⌊x / 2^k⌋; `probabilistic` adds a carry with
//! probability (x mod 2^k)/2^k from a seeded ChaCha stream — the error model
//! of local share truncation without its rare wrap (see [`Truncation`]).

pub mod approx;
pub mod cost;
pub mod ring;
pub mod twin;

pub use approx::Degree;
pub use ring::{Ring, RingError, Truncation};
