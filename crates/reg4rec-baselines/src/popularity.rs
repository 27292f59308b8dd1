//! Most-popular baseline: every item is scored by how often it occurs in the training interactions
//! (`LeaveOneOut::train`, the same data SASRec is fit on) and every user gets the same ranking.
//!
//! The counts come from the training parts only, for both stages: the validation targets are *not* added as history
//! for the test stage (the model is fit once, exactly like SASRec's weights), and the test targets never count.
//! Ranking is full (all items; the user's own history items only leave it when asked) with the pessimistic ties of `reg4rec_data::metrics`, so all items
//! sharing the target's count rank above it.

use reg4rec_data::metrics::{filtered_rank, sorted_history, top_items, UserRanks, TOP_KEPT};
use reg4rec_data::split::Stage;
use reg4rec_data::{LeaveOneOut, Metrics};

/// Training-interaction count of every item `0..n_items` (items at or beyond `n_items` are not counted).
pub fn popularity_counts(split: &LeaveOneOut, n_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n_items];
    for &item in split.train.iter().flatten() {
        if let Some(c) = counts.get_mut(item as usize) {
            *c += 1;
        }
    }
    counts
}

/// Popularity scores as `f32`, ready for [`reg4rec_data::metrics::rank_of`] or another scorer's comparison.
pub fn popularity_scores(split: &LeaveOneOut, n_items: usize) -> Vec<f32> {
    popularity_counts(split, n_items)
        .into_iter()
        .map(|c| c as f32)
        .collect()
}

/// Full-ranking Recall/NDCG@{5,10,20} of the popularity ranking on `stage`'s targets. With `exclude_history`
/// each user's own history items (training part, plus the validation item for the test stage) leave the ranking
/// first (a target that is itself a history item is then not ranked, as in `reg4rec-infer`): the filtered
/// protocol of [`popularity_ranks`].
///
/// A target outside `0..n_items` counts as not ranked (it cannot be recommended).
pub fn evaluate_popularity(
    split: &LeaveOneOut,
    n_items: usize,
    stage: Stage,
    exclude_history: bool,
) -> Metrics {
    popularity_ranks(split, n_items, stage)
        .under(exclude_history)
        .metrics()
}

/// Every user's 0-based target rank in the popularity ranking on `stage`, under both protocols (all items;
/// the user's whole history removed first).
pub fn popularity_ranks(split: &LeaveOneOut, n_items: usize, stage: Stage) -> UserRanks {
    let counts = popularity_counts(split, n_items);
    // rank(target) = #items with count >= count(target), minus the target itself (pessimistic ties):
    // one sort, then a binary search per user instead of a pass over all items.
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let score_at = |i: u32| {
        counts
            .get(i as usize)
            .map_or(f32::NEG_INFINITY, |&h| h as f32)
    };
    let scores: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
    let top = top_items(&scores, TOP_KEPT, &[]);
    let mut ranks = UserRanks::default();
    for u in 0..split.n_users() {
        let target = split.target(u, stage);
        let history = sorted_history(&split.history(u, stage, usize::MAX));
        match counts.get(target as usize) {
            Some(&c) => {
                let below = sorted.partition_point(|&x| x < c);
                let rank = n_items - below - 1;
                let filtered = filtered_rank(rank, target, c as f32, &history, score_at);
                ranks.push(Some(rank), filtered);
            }
            None => ranks.push(None, None),
        }
        ranks.push_top(top.clone(), top_items(&scores, TOP_KEPT, &history));
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use reg4rec_data::metrics::{rank_of, MetricAccumulator};

    fn split(train: Vec<Vec<u32>>, valid: Vec<u32>, test: Vec<u32>) -> LeaveOneOut {
        LeaveOneOut {
            users: (0..train.len() as u32).collect(),
            train,
            valid,
            test,
            dropped_users: 0,
        }
    }

    #[test]
    fn hand_computed_counts_and_metrics() {
        // 8 items. Training counts: item 0 -> 3, item 1 -> 2, item 2 -> 1, items 3..8 -> 0.
        let s = split(
            vec![vec![0, 1], vec![0, 1, 2], vec![0]],
            vec![0, 2, 3],
            vec![1, 4, 2],
        );
        assert_eq!(popularity_counts(&s, 8), vec![3, 2, 1, 0, 0, 0, 0, 0]);
        // Validation targets 0, 2, 3 rank 0, 2 and 7 (item 3 ties with the 4 other zero-count items plus
        // items 0..3 above it: 7 items score >= 0 besides itself).
        let v = evaluate_popularity(&s, 8, Stage::Valid, false);
        assert_eq!(v.users, 3);
        assert!((v.recall_5 - 2.0 / 3.0).abs() < 1e-12);
        let ndcg5 = (1.0 + 1.0 / 4f64.log2()) / 3.0; // ranks 0 and 2
        assert!((v.ndcg_5 - ndcg5).abs() < 1e-12);
        assert!((v.recall_10 - 1.0).abs() < 1e-12); // rank 7 < 10
        let ndcg10 = (1.0 + 1.0 / 4f64.log2() + 1.0 / 9f64.log2()) / 3.0;
        assert!((v.ndcg_10 - ndcg10).abs() < 1e-12);
        // Test targets 1, 4, 2 rank 1, 7, 2; the validation targets do not change the counts.
        let t = evaluate_popularity(&s, 8, Stage::Test, false);
        let ndcg5 = (1.0 / 3f64.log2() + 1.0 / 4f64.log2()) / 3.0;
        assert!((t.ndcg_5 - ndcg5).abs() < 1e-12);
        assert!((t.recall_5 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn binary_search_rank_equals_rank_of_and_test_targets_never_count() {
        let s = split(
            vec![vec![5, 5, 1, 2], vec![2, 2, 7], vec![9, 1]],
            vec![5, 7, 3],
            vec![3, 3, 3], // item 3 never occurs in training: it must rank last however often it is a target
        );
        let scores = popularity_scores(&s, 10);
        for stage in [Stage::Valid, Stage::Test] {
            let mut acc = MetricAccumulator::new();
            for u in 0..s.n_users() {
                acc.add_scores(&scores, s.target(u, stage) as usize);
            }
            assert_eq!(evaluate_popularity(&s, 10, stage, false), acc.finish());
        }
        assert_eq!(rank_of(&scores, 3), 9);
        assert_eq!(
            evaluate_popularity(&s, 10, Stage::Test, false).recall_5,
            0.0
        );
    }

    #[test]
    fn out_of_range_target_is_not_ranked() {
        let s = split(vec![vec![0, 1]], vec![1], vec![42]);
        let m = evaluate_popularity(&s, 3, Stage::Test, false);
        assert_eq!((m.users, m.recall_20), (1, 0.0));
    }

    #[test]
    fn excluding_history_lifts_the_target_past_the_users_own_items() {
        // Counts: item 0 -> 3, item 1 -> 2, item 2 -> 1. User 0's test target 2 ranks 2 behind items 0 and 1;
        // its history (training part [0, 1] plus validation item 3) holds both, so excluded it ranks 0.
        let s = split(
            vec![vec![0, 1], vec![0, 1, 2], vec![0]],
            vec![3, 4, 5],
            vec![2, 2, 1],
        );
        let scores = popularity_scores(&s, 8);
        for stage in [Stage::Valid, Stage::Test] {
            let mut acc = MetricAccumulator::new();
            for u in 0..s.n_users() {
                let (history, target) = (s.history(u, stage, usize::MAX), s.target(u, stage));
                if history.contains(&target) {
                    acc.add_rank(None); // user 1's test target 2 repeats a training item
                    continue;
                }
                let mut masked = scores.clone();
                for i in history {
                    masked[i as usize] = f32::NEG_INFINITY;
                }
                acc.add_scores(&masked, target as usize);
            }
            assert_eq!(evaluate_popularity(&s, 8, stage, true), acc.finish());
        }
        let plain = evaluate_popularity(&s, 8, Stage::Test, false);
        let excluded = evaluate_popularity(&s, 8, Stage::Test, true);
        assert!(excluded.ndcg_5 > plain.ndcg_5);
    }
}
