//! Full ranking on libtorch score tensors (`tch` feature): every user's pessimistic target rank among all items,
//! and the same rank under the history-filtered protocol, computed on the tensor (one comparison per batch) so
//! evaluating a catalogue of any size costs one pass over its scores. The answers equal
//! [`crate::metrics::rank_of`] and [`crate::metrics::filtered_rank`] on the same scores.

use crate::error::{DataError, Result};
use crate::metrics::{filtered_rank, sorted_history};
use tch::{Kind, Tensor};

/// 0-based pessimistic rank of each row's target: the number of other items whose score is not below the
/// target's (`!(s < t)`, so NaN scores count as above, exactly like [`crate::metrics::rank_of`]).
/// `scores`: [users, n_items]; `targets`: one item per row, each below `n_items`.
///
/// A shape that does not match or a target out of range is an error, never a shorter list: every user of an
/// evaluation gets a rank.
pub fn ranks_on_tensor(scores: &Tensor, targets: &[i64]) -> Result<Vec<usize>> {
    check(scores, targets)?;
    let ranks = || -> std::result::Result<Vec<i64>, tch::TchError> {
        let t = Tensor::from_slice(targets)
            .to_device(scores.device())
            .unsqueeze(1); // [users, 1]
        let target_scores = scores.f_gather(1, &t, false)?; // [users, 1]
        let not_below = scores
            .f_lt_tensor(&target_scores)?
            .f_logical_not()?
            .f_sum_dim_intlist(1, false, Kind::Int64)?; // [users], includes the target itself
        Vec::<i64>::try_from(&(not_below - 1))
    };
    let ranks = ranks().map_err(|e| torch("ranking the targets", e))?;
    Ok(ranks.into_iter().map(|r| r.max(0) as usize).collect())
}

/// Each row's target rank under both protocols: among every item ([`ranks_on_tensor`]) and with the row's
/// `histories` items removed first ([`crate::metrics::filtered_rank`]: `None` when the target repeats one of
/// them). `histories`: one list of items (any order, repeats allowed) per row, each below `n_items`.
pub fn tensor_ranks(
    scores: &Tensor,
    targets: &[i64],
    histories: &[Vec<u32>],
) -> Result<Vec<(usize, Option<usize>)>> {
    let ranks = ranks_on_tensor(scores, targets)?;
    if histories.len() != targets.len() {
        return Err(DataError::Other(format!(
            "histories: {} for {} rows of scores",
            histories.len(),
            targets.len()
        )));
    }
    let n_items = scores.size()[1];
    let sorted: Vec<Vec<u32>> = histories.iter().map(|h| sorted_history(h)).collect();
    if let Some(&bad) = sorted.iter().flatten().find(|&&i| i64::from(i) >= n_items) {
        return Err(DataError::Other(format!(
            "histories: item {bad} is outside the {n_items} scored items"
        )));
    }
    // One read of every target's and history item's score.
    let flat: Vec<i64> = targets
        .iter()
        .enumerate()
        .map(|(r, &t)| r as i64 * n_items + t)
        .chain(
            sorted
                .iter()
                .enumerate()
                .flat_map(|(r, row)| row.iter().map(move |&i| r as i64 * n_items + i64::from(i))),
        )
        .collect();
    let read = || -> std::result::Result<Vec<f32>, tch::TchError> {
        let index = Tensor::from_slice(&flat).to_device(scores.device());
        let picked = scores.f_reshape([-1])?.f_index_select(0, &index)?;
        Vec::<f32>::try_from(&picked.f_to_kind(Kind::Float)?)
    };
    let values = read().map_err(|e| torch("reading the history scores", e))?;
    let (target_scores, mut rest) = values.split_at(targets.len());
    let mut out = Vec::with_capacity(targets.len());
    for (r, h) in sorted.iter().enumerate() {
        let (hs, tail) = rest.split_at(h.len());
        rest = tail;
        let at = |i: u32| h.binary_search(&i).map_or(f32::NEG_INFINITY, |k| hs[k]);
        let filtered = filtered_rank(ranks[r], targets[r] as u32, target_scores[r], h, at);
        out.push((ranks[r], filtered));
    }
    Ok(out)
}

/// Each row's first `k` items under both protocols, best first: every item, and without the row's `histories`
/// items (any order, repeats allowed). Read from one `topk` of `k` plus the longest history per row (equal
/// scores in libtorch's order; NaN scores last).
pub fn tensor_tops(
    scores: &Tensor,
    histories: &[Vec<u32>],
    k: usize,
) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    let &[rows, n_items] = scores.size().as_slice() else {
        return Err(DataError::Other(format!(
            "scores: expected [users, items], got shape {:?}",
            scores.size()
        )));
    };
    if histories.len() as i64 != rows {
        return Err(DataError::Other(format!(
            "histories: {} for {rows} rows of scores",
            histories.len()
        )));
    }
    let sorted: Vec<Vec<u32>> = histories.iter().map(|h| sorted_history(h)).collect();
    let longest = sorted.iter().map(Vec::len).max().unwrap_or(0);
    let kk = ((k + longest) as i64).min(n_items);
    if kk == 0 || rows == 0 {
        return Ok(vec![(Vec::new(), Vec::new()); rows as usize]);
    }
    let read = || -> std::result::Result<Vec<i64>, tch::TchError> {
        let s = scores
            .f_to_kind(Kind::Float)?
            .f_nan_to_num(f64::NEG_INFINITY, None, None)?;
        let (_, idx) = s.f_topk(kk, -1, true, true)?;
        Vec::<i64>::try_from(&idx.f_reshape([-1])?)
    };
    let idx = read().map_err(|e| torch("reading the top items", e))?;
    Ok(idx
        .chunks(kk as usize)
        .zip(&sorted)
        .map(|(row, h)| {
            let row: Vec<u32> = row.iter().map(|&i| i as u32).collect();
            let all = row.iter().copied().take(k).collect();
            let filtered = row
                .iter()
                .copied()
                .filter(|i| h.binary_search(i).is_err())
                .take(k)
                .collect();
            (all, filtered)
        })
        .collect())
}

/// Checks `scores` `[users, n_items]` against `targets`.
fn check(scores: &Tensor, targets: &[i64]) -> Result<()> {
    let &[rows, n_items] = scores.size().as_slice() else {
        return Err(DataError::Other(format!(
            "scores: expected [users, items], got shape {:?}",
            scores.size()
        )));
    };
    if rows != targets.len() as i64 {
        return Err(DataError::Other(format!(
            "targets: {} targets for {rows} rows of scores",
            targets.len()
        )));
    }
    if let Some(&t) = targets.iter().find(|&&t| !(0..n_items).contains(&t)) {
        return Err(DataError::Other(format!(
            "targets: item {t} is outside the {n_items} scored items"
        )));
    }
    Ok(())
}

fn torch(context: &str, e: tch::TchError) -> DataError {
    DataError::Other(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::rank_of;

    #[test]
    fn tensor_tops_are_the_best_items_with_and_without_the_history() {
        let flat: Vec<f32> = vec![0.1, 0.9, 0.5, f32::NAN, 0.7, 0.3, 0.2, 0.8];
        let scores = Tensor::from_slice(&flat).view([2, 4]);
        let tops = tensor_tops(&scores, &[vec![1, 1], vec![]], 2).unwrap();
        assert_eq!(tops[0], (vec![1, 2], vec![2, 0]));
        assert_eq!(tops[1], (vec![3, 0], vec![3, 0]));
        assert!(tensor_tops(&scores, &[vec![]], 2).is_err());
    }

    /// On the tensor, both protocols equal the slice functions on the same scores, ties and NaN included.
    #[test]
    fn tensor_ranks_equal_the_slice_answers() {
        let rows: Vec<Vec<f32>> = vec![
            vec![3.0, 1.0, 2.0, 2.0, 0.5, f32::NAN],
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vec![0.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let scores = Tensor::from_slice(&flat).view([3, 6]);
        let targets = [2i64, 4, 5];
        let histories = vec![vec![0, 3, 0], vec![1], vec![1, 5]];
        let got = tensor_ranks(&scores, &targets, &histories).unwrap();
        for (r, &t) in targets.iter().enumerate() {
            let all = rank_of(&rows[r], t as usize);
            let h = sorted_history(&histories[r]);
            let f = filtered_rank(all, t as u32, rows[r][t as usize], &h, |i| {
                rows[r][i as usize]
            });
            assert_eq!(got[r], (all, f), "row {r}");
        }
        // Row 0: items 0 (3.0), 3 (2.0, a tie), 5 (NaN) rank above target 2: rank 3; 0 and 3 leave: 1.
        assert_eq!(got[0], (3, Some(1)));
        // Row 2 repeats its history item 5: not ranked when filtered.
        assert_eq!(got[2].1, None);
    }

    /// A failed ranking is an error naming what is wrong, never a shorter list (which would let the metrics
    /// silently cover fewer users).
    #[test]
    fn tensor_ranks_refuse_mismatched_input() {
        let scores = Tensor::zeros([3, 10], (Kind::Float, tch::Device::Cpu));
        let e = ranks_on_tensor(&scores, &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("2 targets for 3 rows"), "{e}");
        let e = ranks_on_tensor(&scores, &[0, 10, 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("item 10 is outside the 10 scored items"), "{e}");
        let flat = Tensor::zeros([10], (Kind::Float, tch::Device::Cpu));
        assert!(ranks_on_tensor(&flat, &[0]).is_err());
        assert_eq!(ranks_on_tensor(&scores, &[0, 9, 4]).unwrap(), [9, 9, 9]);
        let e = tensor_ranks(&scores, &[0, 1, 2], &[vec![], vec![12], vec![]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("item 12"), "{e}");
    }
}
