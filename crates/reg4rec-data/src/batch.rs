//! Batching for training: deterministic, seeded, length-bucketed batches of training rows (the models build
//! their own tensors from the rows of a batch).

use crate::error::{DataError, Result};
use rand::seq::SliceRandom;

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
}
