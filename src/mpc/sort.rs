//! Oblivious, order-preserving movement of rows: pruning's compaction (kept
//! rows to the front) and reduction's partition (high rows, then low rows).
//! Each is a *schedule* built once from the secret group bits — only the
//! group sizes are opened — and then applied to any number of row payloads,
//! forward or inverse.
//!
//! Three ways to build one:
//! - [`Compaction::Swap`] (CipherPrune): m passes of n − 1 adjacent
//!   conditional swaps carry the m tail rows to the end, keeping the order
//!   of the rest. Pass j starts two steps after pass j − 1 (a wavefront), so
//!   n − 1 + 2(m − 1) steps; each step is one AND round to decide its swaps
//!   and, per payload, one MUX round. O(m·n) swaps.
//! - [`Compaction::Shuffle`] (ours; asymptotically cheaper): each row's
//!   destination (its rank within its group, a local prefix sum of the
//!   shared group bits, plus the head size for tail rows; one product,
//!   whose message also opens the group size) is
//!   shuffled by two secret permutations — one known to each party — and
//!   opened. The opened destinations are a uniformly random permutation,
//!   so they show nothing but the group sizes. A payload is shuffled the
//!   same way (one message per permutation, fresh masks) and routed in the
//!   clear; pruning's one payload rides in the destinations' own shuffle
//!   (rows [destination | payload]). O(n) elements per payload and a
//!   constant number of rounds: pruning's compaction takes four (the
//!   product, two shuffle messages, the opening), a later payload two.
//! - [`Compaction::Bitonic`] (BOLT's word elimination as the baseline):
//!   a bitonic sorting network on keys (group bit · 2N + position) with a
//!   secure comparison per compare-exchange: O(n log² n) comparisons and
//!   O(log² n) comparison depths.

use super::arith;
use super::bits::BitVec;
use super::channel::MsgWriter;
use super::dealer::{Party, PermShare};
use super::shares::{SharedBits, SharesBackend};
use serde::{Deserialize, Serialize};

/// How rows are moved obliviously.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Compaction {
    Swap,
    Shuffle,
    Bitonic,
}

impl Compaction {
    pub fn name(self) -> &'static str {
        match self {
            Compaction::Swap => "swap",
            Compaction::Shuffle => "shuffle",
            Compaction::Bitonic => "bitonic",
        }
    }
}

/// Conditional swaps of disjoint row pairs, decided by shared bits.
#[derive(Clone, Debug)]
struct SwapStep {
    pairs: Vec<(usize, usize)>,
    swap: BitVec,
}

#[derive(Clone, Debug)]
enum Plan {
    /// Steps over `padded` rows (the network's size; extra rows are zero
    /// padding that ends past the real ones).
    Swaps { padded: usize, steps: Vec<SwapStep> },
    /// Two permutation handles (server's, client's), then the public route:
    /// shuffled row q goes to `route[q]`.
    Shuffle { perms: [usize; 2], route: Vec<usize> },
}

/// A built schedule: `rows` rows, of which `tail` go to the end.
#[derive(Clone, Debug)]
pub struct Schedule {
    rows: usize,
    tail: usize,
    plan: Plan,
}

impl Schedule {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn tail(&self) -> usize {
        self.tail
    }
}

impl SharesBackend {
    /// A schedule moving rows whose bit is set to the end; their number is
    /// opened.
    /// Build a schedule; its correlations are dealt online (their sizes
    /// follow revealed counts), see [`super::dealer`].
    pub(super) fn build_schedule(&mut self, tail: &SharedBits) -> Schedule {
        self.build_schedule_moving(tail, None).0
    }

    /// [`Self::build_schedule`], moving one payload of rows of `width` with
    /// it: the shuffle carries the payload beside the destinations, in the
    /// same two messages, instead of two more after the route is opened.
    pub(super) fn build_schedule_moving(&mut self, tail: &SharedBits, payload: Option<(&[u64], usize)>) -> (Schedule, Option<Vec<u64>>) {
        let was = self.corr.set_dealt_online(true);
        let (s, moved) = self.build_schedule_inner(tail, payload);
        let moved = match (moved, payload) {
            (Some(m), _) => Some(m),
            (None, Some((x, width))) => Some(self.apply_schedule_inner(&s, x, width, false)),
            (None, None) => None,
        };
        self.corr.set_dealt_online(was);
        (s, moved)
    }

    fn build_schedule_inner(&mut self, tail: &SharedBits, payload: Option<(&[u64], usize)>) -> (Schedule, Option<Vec<u64>>) {
        let tail_bits = &tail.x;
        let n = tail_bits.len();
        // Bits from a comparison on DCF keys come with their ring shares.
        let tail_ring = match &tail.a {
            Some(a) => a.clone(),
            None => self.bits_to_ring(tail_bits),
        };
        let r = self.ring;
        let sum = tail_ring.iter().fold(0u64, |s, &v| r.add(s, v));
        if self.opts.compaction == Compaction::Shuffle {
            // The group size is opened with the destinations' product.
            let (m, plan, moved) = self.build_shuffle(&tail_ring, sum, payload);
            return (Schedule { rows: n, tail: m, plan }, moved);
        }
        let m = self.open(&[sum])[0];
        let m = self.group_size(m, n);
        let plan = if m == 0 || m == n {
            Plan::Swaps { padded: n, steps: Vec::new() }
        } else {
            match self.opts.compaction {
                Compaction::Swap => self.build_swaps(tail_bits, m),
                Compaction::Bitonic => self.build_bitonic(&tail_ring),
                Compaction::Shuffle => unreachable!("built above"),
            }
        };
        (Schedule { rows: n, tail: m, plan }, None)
    }

    /// The opened size of a group of `n` rows, checked.
    fn group_size(&mut self, m: u64, n: usize) -> usize {
        if m > n as u64 {
            let e = super::channel::ChannelError::Garbage { at: String::new(), msg: format!("{m} of {n} rows in a group") };
            self.ok::<()>(Err(e));
        }
        m as usize
    }

    fn build_swaps(&mut self, tail_bits: &BitVec, m: usize) -> Plan {
        let n = tail_bits.len();
        let mut keys = tail_bits.clone();
        let mut steps = Vec::new();
        for t in 0..(n - 1) + 2 * (m - 1) {
            let pairs: Vec<(usize, usize)> = (0..m)
                .filter_map(|j| t.checked_sub(2 * j))
                .filter(|&i| i + 1 < n)
                .map(|i| (i, i + 1))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let li: Vec<usize> = pairs.iter().map(|p| p.0).collect();
            let ri: Vec<usize> = pairs.iter().map(|p| p.1).collect();
            let right_zero = {
                let rk = keys.gather(&ri);
                self.xor_public(&rk, &BitVec::ones(rk.len()))
            };
            let swap = self.and_bits(&keys.gather(&li), &right_zero);
            // A swap of a 1 and a 0 flips both keys.
            let mut idx = vec![pairs.len(); n];
            for (p, &(i, j)) in pairs.iter().enumerate() {
                idx[i] = p;
                idx[j] = p;
            }
            let delta = BitVec::concat(&[&swap, &BitVec::zeros(1)]).gather(&idx);
            keys = keys.xor(&delta);
            steps.push(SwapStep { pairs, swap });
        }
        Plan::Swaps { padded: n, steps }
    }

    fn build_bitonic(&mut self, tail_ring: &[u64]) -> Plan {
        let n = tail_ring.len();
        let r = self.ring;
        let big = n.next_power_of_two();
        // Keys: group · 2N + position; padding rows 4N + position (last).
        let scaled = arith::mul_cyclic(r, tail_ring, &[2 * big as u64]);
        let pos: Vec<u64> = (0..big).map(|i| if i < n { i as u64 } else { (4 * big + i) as u64 }).collect();
        let mut keys = [scaled, vec![0; big - n]].concat();
        keys = self.plus_public(&keys, &pos);
        let mut steps = Vec::new();
        let mut k = 2;
        while k <= big {
            let mut j = k / 2;
            while j > 0 {
                let mut pairs = Vec::new();
                let mut diff = Vec::new();
                for i in 0..big {
                    let l = i ^ j;
                    if l > i {
                        pairs.push((i, l));
                        // Swap when out of order for this half's direction.
                        diff.push(if i & k == 0 { r.sub(keys[l], keys[i]) } else { r.sub(keys[i], keys[l]) });
                    }
                }
                let swap = self.uncounted(|b| crate::secure::backend::Backend::msb(b, &diff)).x;
                let step = SwapStep { pairs, swap };
                keys = self.swap_rows(&step, &keys, 1);
                steps.push(step);
                j /= 2;
            }
            k *= 2;
        }
        Plan::Swaps { padded: big, steps }
    }

    /// The shuffle's plan and the tail's size m, opened in the round of the
    /// destinations' product (the head's size n − m enters it shared), and
    /// the payload in the schedule's order if one rode along.
    fn build_shuffle(&mut self, tail_ring: &[u64], sum: u64, payload: Option<(&[u64], usize)>) -> (usize, Plan, Option<Vec<u64>>) {
        let n = tail_ring.len();
        let r = self.ring;
        // Ranks within each group: prefix sums (local).
        let mut rank_tail = Vec::with_capacity(n);
        let mut acc = 0u64;
        for &v in tail_ring {
            rank_tail.push(acc);
            acc = r.add(acc, v);
        }
        let idx: Vec<u64> = (0..n as u64).collect();
        let rank_head = arith::sub(r, &self.plus_public(&vec![0; n], &idx), &rank_tail);
        let head = self.plus_public(&[r.neg(sum)], &[n as u64])[0];
        let to_tail: Vec<u64> = rank_tail.iter().map(|&v| r.add(v, head)).collect();
        // dest = head rank + t·(head + tail rank − head rank): one product.
        let z = arith::sub(r, &to_tail, &rank_head);
        let (shift, opened) = self.mul_opening(tail_ring, &z, &[sum]);
        let m = self.group_size(opened[0], n);
        if m == 0 || m == n {
            return (m, Plan::Swaps { padded: n, steps: Vec::new() }, payload.map(|(x, _)| x.to_vec()));
        }
        let dest = arith::add(r, &rank_head, &shift);
        let perms = [self.new_perm(n, Party::Server), self.new_perm(n, Party::Client)];
        // Rows of [destination | payload], shuffled together.
        let pw = payload.map_or(0, |(_, w)| w);
        let rows: Vec<u64> = match payload {
            None => dest,
            Some((x, w)) => (0..n).flat_map(|i| std::iter::once(dest[i]).chain(x[i * w..(i + 1) * w].iter().copied())).collect(),
        };
        let shuffled = self.shuffle(&perms, &rows, 1 + pw, false);
        let dests: Vec<u64> = shuffled.iter().step_by(1 + pw).copied().collect();
        let opened = self.open(&dests);
        let mut seen = vec![false; n];
        let mut route = Vec::with_capacity(n);
        for &d in &opened {
            let d = d as usize;
            if d >= n || seen[d] {
                let e = super::channel::ChannelError::Garbage { at: String::new(), msg: "shuffled destinations are not a permutation".into() };
                self.ok::<()>(Err(e));
            }
            seen[d] = true;
            route.push(d);
        }
        let moved = payload.map(|_| {
            let body: Vec<u64> = shuffled.chunks(1 + pw).flat_map(|c| c[1..].iter().copied()).collect();
            arith::permute_rows(&body, pw, &arith::invert_perm(&route))
        });
        (m, Plan::Shuffle { perms, route }, moved)
    }

    fn new_perm(&mut self, n: usize, knower: Party) -> usize {
        let h = self.corr.perm_new(n, knower);
        self.ok(h)
    }

    /// Run `f` without adding to the primitive counts: the schedule's own
    /// products, comparisons and MUXes are not model primitives (the
    /// compaction is counted once, by its cost model).
    fn uncounted<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        use crate::secure::backend::Backend;
        let saved = self.meter().cost.clone();
        let out = f(self);
        self.meter().cost = saved;
        out
    }

    /// Apply one permutation stage to shared rows: one message from the
    /// party that does not know σ to the one that does.
    fn perm_stage(&mut self, handle: usize, inverse: bool, x: &[u64], width: usize) -> Vec<u64> {
        let r = self.ring;
        let c = self.corr.perm_apply(handle, inverse, width);
        match self.ok(c) {
            PermShare::Knower { perm, delta } => {
                let m = self.recv_ring(x.len());
                let y = arith::permute_rows(&arith::add(r, x, &m), width, &perm);
                arith::add(r, &y, &delta)
            }
            PermShare::Other { a, b } => {
                self.send_only(MsgWriter::new(r).ring(&arith::sub(r, x, &a)).finish());
                b
            }
        }
    }

    fn shuffle(&mut self, perms: &[usize; 2], x: &[u64], width: usize, inverse: bool) -> Vec<u64> {
        if inverse {
            let y = self.perm_stage(perms[1], true, x, width);
            self.perm_stage(perms[0], true, &y, width)
        } else {
            let y = self.perm_stage(perms[0], false, x, width);
            self.perm_stage(perms[1], false, &y, width)
        }
    }

    /// One step of conditional swaps on rows of `width`: one MUX round.
    fn swap_rows(&mut self, step: &SwapStep, x: &[u64], width: usize) -> Vec<u64> {
        let r = self.ring;
        let rows = |side: fn(&(usize, usize)) -> usize| -> Vec<usize> {
            step.pairs.iter().flat_map(|p| side(p) * width..(side(p) + 1) * width).collect()
        };
        let (li, ri) = (rows(|p| p.0), rows(|p| p.1));
        let left: Vec<u64> = li.iter().map(|&i| x[i]).collect();
        let right: Vec<u64> = ri.iter().map(|&i| x[i]).collect();
        let bits = step.swap.gather(&(0..li.len()).map(|i| i / width).collect::<Vec<_>>());
        let new_left = self.uncounted(|b| crate::secure::backend::Backend::mux(b, &super::shares::SharedBits { x: bits, a: None }, &right, &left));
        let mut out = x.to_vec();
        for (k, (&i, &j)) in li.iter().zip(&ri).enumerate() {
            out[i] = new_left[k];
            out[j] = r.sub(r.add(left[k], right[k]), new_left[k]);
        }
        out
    }

    /// Rows of `x` (width `width`) in the schedule's order — head group, then
    /// tail group, each in original order — or back (`inverse`).
    /// Apply a schedule (correlations dealt online, as for building it).
    pub(super) fn apply_schedule(&mut self, s: &Schedule, x: &[u64], width: usize, inverse: bool) -> Vec<u64> {
        let was = self.corr.set_dealt_online(true);
        let y = self.apply_schedule_inner(s, x, width, inverse);
        self.corr.set_dealt_online(was);
        y
    }

    fn apply_schedule_inner(&mut self, s: &Schedule, x: &[u64], width: usize, inverse: bool) -> Vec<u64> {
        assert_eq!(x.len(), s.rows * width, "schedule of {} rows for {} elements of width {width}", s.rows, x.len());
        match &s.plan {
            Plan::Swaps { padded, steps } => {
                let mut y = [x, &vec![0; (padded - s.rows) * width]].concat();
                if inverse {
                    for st in steps.iter().rev() {
                        y = self.swap_rows(st, &y, width);
                    }
                } else {
                    for st in steps {
                        y = self.swap_rows(st, &y, width);
                    }
                }
                y.truncate(s.rows * width);
                y
            }
            Plan::Shuffle { perms, route } => {
                if inverse {
                    let y = arith::permute_rows(x, width, route);
                    self.shuffle(perms, &y, width, true)
                } else {
                    let y = self.shuffle(perms, x, width, false);
                    arith::permute_rows(&y, width, &arith::invert_perm(route))
                }
            }
        }
    }
}
