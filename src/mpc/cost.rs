//! What a protocol run costs on the wire: bytes each way, rounds and time,
//! per (operator class, layer), and the wall time it would take on a given
//! network.

use crate::secure::report::Tally;
use serde::{Deserialize, Serialize};
use std::ops::AddAssign;

/// Communication of one party in one scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommCounts {
    /// Bytes this party sent to the other (message payloads plus a 4-byte
    /// frame header each).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Message flights: an exchange (both send, then both receive) is one, a
    /// one-way message is one for both parties.
    pub rounds: u64,
    /// Bytes exchanged with the dealer (client only): in the online tally,
    /// pool refills and permutation correlations; offline, the prepared
    /// material.
    pub dealer_bytes: u64,
    /// Waits for the dealer's replies (requests sent together wait once).
    pub dealer_round_trips: u64,
    /// Wall time spent in the scope, nanoseconds (in-process: both parties'
    /// compute plus the waits between them).
    pub time_ns: u64,
}

impl AddAssign for CommCounts {
    fn add_assign(&mut self, o: Self) {
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.rounds += o.rounds;
        self.dealer_bytes += o.dealer_bytes;
        self.dealer_round_trips += o.dealer_round_trips;
        self.time_ns += o.time_ns;
    }
}

pub type CommTally = Tally<CommCounts>;

/// A network to estimate wall time on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: &'static str,
    pub bits_per_second: f64,
    /// Latency charged per round, seconds.
    pub latency_s: f64,
}

/// CipherPrune's and BOLT's settings (REFERENCE.md §1).
pub const LAN: Network = Network { name: "lan", bits_per_second: 3e9, latency_s: 0.8e-3 };
pub const WAN: Network = Network { name: "wan", bits_per_second: 200e6, latency_s: 40e-3 };

/// Estimated wall time of a run on `net`: the measured compute time, plus
/// one latency per round, plus the busier direction's bytes at the link's
/// bandwidth (the link is full duplex; both parties send at once in an
/// exchange).
pub fn estimate_seconds(net: &Network, compute_s: f64, rounds: u64, server_sent: u64, client_sent: u64) -> f64 {
    compute_s + rounds as f64 * net.latency_s + server_sent.max(client_sent) as f64 * 8.0 / net.bits_per_second
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_adds_latency_and_transfer() {
        // 100 rounds and 375 MB on the busier side: 0.08 s + 1 s on the LAN.
        let t = estimate_seconds(&LAN, 0.5, 100, 375_000_000, 1000);
        assert!((t - 1.58).abs() < 1e-9, "{t}");
        let w = estimate_seconds(&WAN, 0.5, 100, 375_000_000, 1000);
        assert!((w - (0.5 + 4.0 + 15.0)).abs() < 1e-9, "{w}");
    }
}
