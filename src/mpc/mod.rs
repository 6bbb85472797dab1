//! The forward as a real two-party computation: the server (weights,
//! thresholds) and the client (input text, tokenizer, embedding table)
//! hold additive shares over Z_{2^ℓ} and exchange real messages; a dealer,
//! its own process, supplies input-independent correlated randomness and
//! never sees a weight, an input or a share. Semi-honest; what is revealed
//! (DESIGN.md §5): the input length, the number of live tokens after each
//! layer and the size of each reduced group; the logits go to the client
//! alone. An offline phase (dealer material, the server's W − B) precedes
//! the input; the online phase is counted apart.
//!
//! - [`shares`]: the [`crate::secure::backend::Backend`] over shares — the
//!   same forward as the plain engine, bit for bit in exact truncation.
//! - [`sort`]: oblivious compaction and partition (swap, shuffle, bitonic).
//! - [`dealer`]: correlations (seeded streams, pools, linear triples) and
//!   the dealer's loop.
//! - [`plan`]: the offline phase's plan from a forward on lengths alone.
//! - [`channel`]: in-process and TCP transports, the wire format.
//! - [`session`]: one run in-process (three threads) or one party over TCP.
//! - [`net`]: `serve` / `client` / `dealer` over TCP.
//! - [`cost`]: bytes, rounds, time and network estimates.
//! - [`estimate`]: the online bytes and rounds of a run from its shapes
//!   alone (the same forward over a backend of lengths).

pub mod arith;
pub mod bench;
pub mod bits;
pub mod channel;
pub mod cost;
pub mod dcf;
pub mod dealer;
pub mod estimate;
mod fixed_aes;
pub mod fss;
pub mod eval;
mod lengths;
pub mod net;
pub mod plan;
pub mod session;
pub mod shares;
pub mod sort;

#[cfg(test)]
mod estimate_tests;
#[cfg(test)]
mod tests;
