//! The forward as a real two-party computation: the server (weights,
//! thresholds) and the client (input text, tokenizer, embedding table)
//! hold additive shares over Z_{2^ℓ} and exchange real messages; a trusted
//! dealer supplies input-independent correlated randomness. Semi-honest;
//! what is revealed: the number of live tokens after each layer and the
//! size of each reduced group (DESIGN.md §5), and the logits.
//!
//! - [`shares`]: the [`crate::secure::backend::Backend`] over shares — the
//!   same forward as the plain engine, bit for bit in exact truncation.
//! - [`sort`]: oblivious compaction and partition (swap, shuffle, bitonic).
//! - [`dealer`]: correlations and the dealer's loop.
//! - [`channel`]: in-process and TCP transports, the wire format.
//! - [`session`]: one run in-process (three threads) or one party over TCP.
//! - [`net`]: `serve` / `client` over TCP.
//! - [`cost`]: bytes, rounds, time and network estimates.
//! - [`estimate`]: the online bytes and rounds of a run from its shapes
//!   alone (the same forward over a backend of lengths).

pub mod arith;
pub mod bench;
pub mod bits;
pub mod channel;
pub mod cost;
pub mod dealer;
pub mod estimate;
pub mod eval;
pub mod net;
pub mod session;
pub mod shares;
pub mod sort;

#[cfg(test)]
mod estimate_tests;
#[cfg(test)]
mod tests;
