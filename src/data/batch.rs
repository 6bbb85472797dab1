//! Batching with dynamic padding and length bucketing.
//!
//! A batch is padded only to its longest row, so the order in which rows are
//! grouped decides most of the compute: [`epoch_batches`] groups rows of
//! similar length while keeping the order random from epoch to epoch.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::tokenize::Encoded;

/// Id, type id and mask value of padding positions.
pub const PAD_ID: u32 = 0;
/// A shuffled epoch is cut into pools of this many batches, each sorted by
/// length: large enough for homogeneous batches, small enough that the
/// pools still mix long and short rows across the epoch.
const BATCHES_PER_POOL: usize = 50;

/// Row-major `batch_size × seq_len` inputs padded with [`PAD_ID`].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    pub labels: Vec<f32>,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Which rows of the dataset these are, to put predictions back in order.
    pub indices: Vec<usize>,
}

/// Token counts of `data`, the input [`epoch_batches`] expects.
pub fn lengths(data: &[Encoded]) -> Vec<usize> {
    data.iter().map(Encoded::len).collect()
}

/// Stacks `data[i]` for `i` in `indices`, padded to the longest of them.
///
/// # Panics
/// If an index is out of bounds.
pub fn collate(data: &[Encoded], indices: &[usize]) -> Batch {
    let seq_len = indices.iter().map(|&i| data[i].len()).max().unwrap_or(0);
    let cells = indices.len() * seq_len;
    let mut batch = Batch {
        input_ids: Vec::with_capacity(cells),
        type_ids: Vec::with_capacity(cells),
        attention_mask: Vec::with_capacity(cells),
        labels: Vec::with_capacity(indices.len()),
        batch_size: indices.len(),
        seq_len,
        indices: indices.to_vec(),
    };
    for &i in indices {
        let row = &data[i];
        let pad = seq_len - row.len();
        batch.input_ids.extend(
            row.input_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(PAD_ID, pad)),
        );
        batch.type_ids.extend(
            row.type_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(PAD_ID, pad)),
        );
        batch
            .attention_mask
            .extend(std::iter::repeat_n(1, row.len()).chain(std::iter::repeat_n(0, pad)));
        batch.labels.push(row.label);
    }
    batch
}

/// The batches of one epoch as lists of row indices; every row appears
/// exactly once, and the last batch may be short.
///
/// With `shuffle`, rows are shuffled, cut into pools of 50 batches, sorted by
/// length within each pool, split into batches, and the batch order is
/// shuffled again. The result depends only on `(lengths, batch_size, seed,
/// epoch)`, so a resumed run can rebuild an epoch and skip the batches it
/// has done. Without `shuffle` (evaluation) rows are sorted longest first,
/// so an out-of-memory batch shows up at once; use [`Batch::indices`] to
/// restore the dataset order.
///
/// # Panics
/// If `batch_size` is 0.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "batch_size must be positive");
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if !shuffle {
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    // One ChaCha stream per epoch: epochs differ, and none depends on how
    // many random numbers an earlier epoch drew.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for pool in order.chunks_mut(batch_size * BATCHES_PER_POOL) {
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::glue::{read_split, Task};
    use crate::data::test_support::glue_dir_or_skip;

    fn encoded(ids: &[u32], type_ids: &[u32], label: f32) -> Encoded {
        Encoded {
            input_ids: ids.to_vec(),
            type_ids: type_ids.to_vec(),
            label,
        }
    }

    fn assert_partition(batches: &[Vec<usize>], n: usize, batch_size: usize) {
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(batches
            .iter()
            .all(|b| !b.is_empty() && b.len() <= batch_size));
        assert_eq!(
            batches.iter().filter(|b| b.len() < batch_size).count(),
            usize::from(!n.is_multiple_of(batch_size))
        );
    }

    /// Padded cells per real token over a whole epoch.
    fn padding_ratio(lengths: &[usize], batches: &[Vec<usize>]) -> f64 {
        let real: usize = lengths.iter().sum();
        let padded: usize = batches
            .iter()
            .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap())
            .sum();
        (padded - real) as f64 / real as f64
    }

    #[test]
    fn collate_pads_to_the_longest_row() {
        let data = [
            encoded(&[2, 7, 3], &[0, 0, 0], 1.0),
            encoded(&[2, 5, 3, 6, 3], &[0, 0, 0, 1, 1], 0.0),
            encoded(&[2, 3], &[0, 0], 2.5),
        ];
        let b = collate(&data, &[2, 0]);
        assert_eq!((b.batch_size, b.seq_len), (2, 3));
        assert_eq!(b.input_ids, [2, 3, 0, 2, 7, 3]);
        assert_eq!(b.attention_mask, [1, 1, 0, 1, 1, 1]);
        assert_eq!(b.labels, [2.5, 1.0]);
        assert_eq!(b.indices, [2, 0]);

        let b = collate(&data, &[0, 1]);
        assert_eq!(b.seq_len, 5);
        assert_eq!(b.type_ids, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(b.attention_mask, [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(lengths(&data), [3, 5, 2]);

        let empty = collate(&data, &[]);
        assert_eq!(
            (empty.batch_size, empty.seq_len, empty.input_ids.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn every_index_once_and_deterministic_per_seed_and_epoch() {
        let lengths: Vec<usize> = (0..1003).map(|i| 3 + (i * 7919) % 61).collect();
        for shuffle in [true, false] {
            for batch_size in [1, 8, 32, 2000] {
                assert_partition(
                    &epoch_batches(&lengths, batch_size, 7, 0, shuffle),
                    lengths.len(),
                    batch_size,
                );
            }
        }
        let a = epoch_batches(&lengths, 16, 42, 3, true);
        assert_eq!(a, epoch_batches(&lengths, 16, 42, 3, true));
        assert_ne!(a, epoch_batches(&lengths, 16, 42, 4, true));
        assert_ne!(a, epoch_batches(&lengths, 16, 43, 3, true));
        assert!(epoch_batches(&[], 16, 0, 0, true).is_empty());
    }

    #[test]
    fn evaluation_order_is_longest_first_and_stable() {
        let lengths = [4, 9, 4, 2, 9];
        assert_eq!(
            epoch_batches(&lengths, 2, 0, 0, false),
            [vec![1, 4], vec![0, 2], vec![3]]
        );
        assert_eq!(
            epoch_batches(&lengths, 2, 0, 0, false),
            epoch_batches(&lengths, 2, 99, 5, false)
        );
    }

    #[test]
    fn bucketing_pads_far_less_than_random_batches() {
        let lengths: Vec<usize> = (0..5000).map(|i| 4 + (i * 104_729) % 60).collect();
        let bucketed = epoch_batches(&lengths, 32, 1, 0, true);
        let random: Vec<Vec<usize>> = {
            let mut order: Vec<usize> = (0..lengths.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(1));
            order.chunks(32).map(<[usize]>::to_vec).collect()
        };
        let (b, r) = (
            padding_ratio(&lengths, &bucketed),
            padding_ratio(&lengths, &random),
        );
        assert!(b < 0.1 * r, "bucketed {b:.3} vs random {r:.3}");
    }

    #[test]
    fn bucketing_on_real_sst2_lengths() {
        let Some(glue) = glue_dir_or_skip("bucketing_on_real_sst2_lengths") else {
            return;
        };
        // Whitespace words + [CLS]/[SEP] stand in for WordPiece counts.
        let lengths: Vec<usize> = read_split(&glue, Task::Sst2, "train")
            .unwrap()
            .iter()
            .map(|e| e.text_a.split_whitespace().count() + 2)
            .collect();
        let bucketed = epoch_batches(&lengths, 32, 0, 0, true);
        assert_partition(&bucketed, lengths.len(), 32);
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(0));
        let random: Vec<Vec<usize>> = order.chunks(32).map(<[usize]>::to_vec).collect();
        let (b, r) = (
            padding_ratio(&lengths, &bucketed),
            padding_ratio(&lengths, &random),
        );
        eprintln!("SST-2 train padding per real token: bucketed {b:.3}, random {r:.3}");
        assert!(b < 0.2 * r, "bucketed {b:.3} vs random {r:.3}");
    }
}
