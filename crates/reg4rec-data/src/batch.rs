//! Batching for training and evaluation: padded history matrices and deterministic, seeded, length-bucketed
//! batches of training rows. With the `tch` feature, `PaddedBatch::to_tensor` turns a padded matrix
//! into an `i64` libtorch tensor.

use crate::error::{DataError, Result};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Which side of a row the padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadSide {
    /// `[pad, pad, a, b, c]`: the most recent item is always in the last column.
    Left,
    /// `[a, b, c, pad, pad]`.
    Right,
}

/// A row-major `rows x cols` matrix of ids with per-row true lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    pub rows: usize,
    pub cols: usize,
    /// Row-major ids, `rows * cols`.
    pub data: Vec<i64>,
    /// Number of real (non-pad) entries per row.
    pub lengths: Vec<usize>,
}

impl PaddedBatch {
    /// Row `r` of the matrix.
    pub fn row(&self, r: usize) -> &[i64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The matrix as an `i64` tensor of shape `[rows, cols]` on `device`.
    #[cfg(feature = "tch")]
    pub fn to_tensor(&self, device: tch::Device) -> tch::Tensor {
        tch::Tensor::from_slice(&self.data)
            .view([self.rows as i64, self.cols as i64])
            .to_device(device)
    }

    /// The lengths as an `i64` tensor of shape `[rows]` on `device`.
    #[cfg(feature = "tch")]
    pub fn lengths_tensor(&self, device: tch::Device) -> tch::Tensor {
        let l: Vec<i64> = self.lengths.iter().map(|&n| n as i64).collect();
        tch::Tensor::from_slice(&l).to_device(device)
    }
}

/// Pads histories into a matrix of width `max_len` (or the longest history when that is shorter, at least 1).
/// Histories longer than `max_len` keep their most recent `max_len` items. Each id is mapped by `map` (e.g.
/// `|i| i as i64 + 1` to reserve 0 for padding); `pad` fills the rest.
pub fn pad_histories<H: AsRef<[u32]>>(
    histories: &[H],
    max_len: usize,
    pad: i64,
    side: PadSide,
    map: impl Fn(u32) -> i64,
) -> PaddedBatch {
    let longest = histories
        .iter()
        .map(|h| h.as_ref().len())
        .max()
        .unwrap_or(0);
    let cols = longest.min(max_len).max(1);
    let mut data = vec![pad; histories.len() * cols];
    let mut lengths = Vec::with_capacity(histories.len());
    for (r, h) in histories.iter().enumerate() {
        let h = crate::split::truncate_front(h.as_ref(), cols);
        let start = match side {
            PadSide::Left => cols - h.len(),
            PadSide::Right => 0,
        };
        for (j, &i) in h.iter().enumerate() {
            data[r * cols + start + j] = map(i);
        }
        lengths.push(h.len());
    }
    PaddedBatch {
        rows: histories.len(),
        cols,
        data,
        lengths,
    }
}

/// Windows of this many batches are sorted by length in [`length_bucketed_batches`].
pub const BUCKET_WINDOW: usize = 64;

/// The batches of one epoch over rows of the given `lengths` (indices into `lengths`): the rows shuffled, sorted
/// by length within windows of [`BUCKET_WINDOW`] batches (so a batch's rows have similar lengths and little of
/// it is padding), cut into batches of `batch_size` (the last of a window may be smaller), and the batches
/// shuffled again. Deterministic given `rng`'s state: seed it from the run's seed and the epoch.
pub fn length_bucketed_batches(
    lengths: &[usize],
    batch_size: usize,
    rng: &mut impl rand::Rng,
) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(DataError::config("batch_size", "must be at least 1"));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let mut batches = Vec::new();
    for window in order.chunks_mut(batch_size * BUCKET_WINDOW) {
        window.sort_by_key(|&i| lengths[i]);
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn left_and_right_padding_truncate_to_the_most_recent_items() {
        let h: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4, 5], vec![7], vec![]];
        let b = pad_histories(&h, 3, 0, PadSide::Left, |i| i as i64 + 1);
        assert_eq!((b.rows, b.cols), (3, 3));
        assert_eq!(b.row(0), &[4, 5, 6]);
        assert_eq!(b.row(1), &[0, 0, 8]);
        assert_eq!(b.row(2), &[0, 0, 0]);
        assert_eq!(b.lengths, vec![3, 1, 0]);
        let b = pad_histories(&h, 3, -1, PadSide::Right, |i| i as i64);
        assert_eq!(b.row(0), &[3, 4, 5]);
        assert_eq!(b.row(1), &[7, -1, -1]);
        // The width shrinks to the longest history when it is shorter than max_len.
        let b = pad_histories(&[vec![1u32, 2]], 50, 0, PadSide::Left, |i| i as i64);
        assert_eq!((b.cols, b.row(0)), (2, &[1i64, 2][..]));
    }

    #[test]
    fn length_buckets_cover_every_row_once_and_follow_the_seed() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 53 + 1).collect();
        let batches = |seed| {
            length_bucketed_batches(&lengths, 10, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
        };
        let b = batches(7);
        assert_eq!(b, batches(7));
        assert_ne!(b, batches(8));
        let mut rows: Vec<usize> = b.iter().flatten().copied().collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..1000).collect::<Vec<_>>());
        // 1000 rows fit in two windows of 640: 64 full batches, then 36, each sorted by length.
        assert_eq!(b.len(), 100);
        assert!(b.iter().all(|r| r.len() == 10));
        for r in &b {
            assert!(r.windows(2).all(|w| lengths[w[0]] <= lengths[w[1]]));
        }
        // Sorting within windows leaves little spread inside a batch (lengths run 1..=53).
        let spread: usize = b
            .iter()
            .map(|r| lengths[r[r.len() - 1]] - lengths[r[0]])
            .sum();
        assert!(spread < 100 * 5, "mean spread {}", spread as f64 / 100.0);
        let e = length_bucketed_batches(&lengths, 0, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(e.unwrap_err().to_string().contains("batch_size"));
    }

    #[cfg(feature = "tch")]
    #[test]
    fn to_tensor_keeps_shape_and_values() {
        let b = pad_histories(&[vec![1u32, 2], vec![3]], 4, 0, PadSide::Left, |i| i as i64);
        let t = b.to_tensor(tch::Device::Cpu);
        assert_eq!(t.size(), vec![2, 2]);
        assert_eq!(t.kind(), tch::Kind::Int64);
        assert_eq!(
            Vec::<i64>::try_from(t.flatten(0, -1)).unwrap(),
            vec![1, 2, 0, 3]
        );
        assert_eq!(
            Vec::<i64>::try_from(b.lengths_tensor(tch::Device::Cpu)).unwrap(),
            vec![2, 1]
        );
    }
}
