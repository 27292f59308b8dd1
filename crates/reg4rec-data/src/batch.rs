//! Batching for training and evaluation: padded history matrices and deterministic, seeded shuffling of
//! training examples into batches. With the `tch` feature, [`PaddedBatch::to_tensor`] turns a padded matrix
//! into an `i64` libtorch tensor.

use crate::error::{DataError, Result};
use crate::split::Example;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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

/// Deterministic shuffling of training examples into batches: the order depends only on `(seed, epoch)`.
#[derive(Debug, Clone)]
pub struct Batcher<'a> {
    examples: &'a [Example],
    batch_size: usize,
    seed: u64,
    drop_last: bool,
}

impl<'a> Batcher<'a> {
    /// Batches of `batch_size` examples; the last, smaller batch is kept unless [`Self::drop_last`] is set.
    pub fn new(examples: &'a [Example], batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::config("batch_size", "must be at least 1"));
        }
        Ok(Self {
            examples,
            batch_size,
            seed,
            drop_last: false,
        })
    }

    /// Drops the last batch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// Number of batches per epoch.
    pub fn n_batches(&self) -> usize {
        if self.drop_last {
            self.examples.len() / self.batch_size
        } else {
            self.examples.len().div_ceil(self.batch_size)
        }
    }

    /// The example order of `epoch` (a seeded permutation; a different one each epoch).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.examples.len()).collect();
        // Mix seed and epoch so nearby seeds and epochs give unrelated streams.
        let mixed = self.seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = ChaCha8Rng::seed_from_u64(mixed);
        idx.shuffle(&mut rng);
        idx
    }

    /// The batches of `epoch`, each a list of examples.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<Example>> {
        let order = self.order(epoch);
        let mut out: Vec<Vec<Example>> = order
            .chunks(self.batch_size)
            .map(|c| c.iter().map(|&i| self.examples[i]).collect())
            .collect();
        if self.drop_last && out.last().is_some_and(|b| b.len() < self.batch_size) {
            out.pop();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn examples(n: u32) -> Vec<Example> {
        (0..n).map(|u| Example { user: u, end: 1 }).collect()
    }

    #[test]
    fn shuffling_is_seeded_per_epoch_and_covers_every_example_once() {
        let ex = examples(103);
        let b = Batcher::new(&ex, 10, 7).unwrap();
        assert_eq!(b.n_batches(), 11);
        let e0 = b.epoch(0);
        assert_eq!(e0, Batcher::new(&ex, 10, 7).unwrap().epoch(0));
        assert_ne!(e0, b.epoch(1));
        assert_ne!(e0, Batcher::new(&ex, 10, 8).unwrap().epoch(0));
        assert_eq!(e0.len(), 11);
        assert_eq!(e0.last().unwrap().len(), 3);
        let mut users: Vec<u32> = e0.iter().flatten().map(|e| e.user).collect();
        users.sort_unstable();
        assert_eq!(users, (0..103).collect::<Vec<_>>());
        let d = Batcher::new(&ex, 10, 7).unwrap().drop_last(true);
        assert_eq!((d.n_batches(), d.epoch(0).len()), (10, 10));
        assert!(d.epoch(3).iter().all(|b| b.len() == 10));
        let e = Batcher::new(&ex, 0, 7).unwrap_err().to_string();
        assert!(e.contains("batch_size"), "{e}");
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
