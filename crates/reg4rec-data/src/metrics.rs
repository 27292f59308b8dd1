//! Full-ranking Recall@K and NDCG@K with one held-out target per user.
//!
//! **Tie-breaking (pessimistic):** the target's rank is the number of *other* items whose score is greater than
//! *or equal to* the target's score, so a model gains nothing from ties (a constant scorer ranks every target
//! last). Items a model does not score at all (e.g. a generative model's unreached items) rank after all scored
//! ones. With one target, Recall@K is the hit rate and NDCG@K = 1 / log2(rank + 2) when rank < K, else 0.

use serde::{Deserialize, Serialize};

/// The cut-offs every report uses.
pub const KS: [usize; 3] = [5, 10, 20];

/// 0-based rank of `target` among `scores` (pessimistic on ties; NaN scores count as ranking above the target).
pub fn rank_of(scores: &[f32], target: usize) -> usize {
    let t = scores[target];
    if t.is_nan() {
        return scores.len() - 1;
    }
    scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| j != target && s.partial_cmp(&t) != Some(std::cmp::Ordering::Less))
        .count()
}

/// 0-based rank of `target` in a ranked list of items, `None` when it is absent.
pub fn rank_in_list(list: &[u32], target: u32) -> Option<usize> {
    list.iter().position(|&i| i == target)
}

/// 0-based rank of `target` in a generated list of `(item, score)` with the pessimistic ties of [`rank_of`]: the
/// number of other listed items whose score is not below the target's (NaN counts as above), once the items of
/// `history` (sorted, as [`sorted_history`] gives it; empty for the unfiltered protocol) are removed. `None`
/// when the target is not in the list or repeats a history item (it leaves the ranking with the history).
pub fn rank_in_scored_list(list: &[(u32, f32)], target: u32, history: &[u32]) -> Option<usize> {
    if history.binary_search(&target).is_ok() {
        return None;
    }
    let &(_, t) = list.iter().find(|(i, _)| *i == target)?;
    Some(
        list.iter()
            .filter(|(i, s)| {
                *i != target
                    && history.binary_search(i).is_err()
                    && s.partial_cmp(&t) != Some(std::cmp::Ordering::Less)
            })
            .count(),
    )
}

/// The history-filtered rank of a target whose unfiltered (pessimistic) rank is `rank`: every item of
/// `history` (sorted, deduplicated) that ranks at or above it, `score_at(item) >= target_score` or NaN, leaves the
/// ranking first. `None` when the target repeats a history item.
pub fn filtered_rank(
    rank: usize,
    target: u32,
    target_score: f32,
    history: &[u32],
    score_at: impl Fn(u32) -> f32,
) -> Option<usize> {
    if history.binary_search(&target).is_ok() {
        return None;
    }
    let above = history
        .iter()
        .filter(|&&i| score_at(i).partial_cmp(&target_score) != Some(std::cmp::Ordering::Less))
        .count();
    Some(rank - above)
}

/// A history sorted and deduplicated, for [`rank_in_scored_list`] and [`filtered_rank`].
pub fn sorted_history(history: &[u32]) -> Vec<u32> {
    let mut h = history.to_vec();
    h.sort_unstable();
    h.dedup();
    h
}

/// How many items of each user's list an evaluation keeps ([`UserRanks::top`]) for the goals a list is judged
/// by besides its target's rank (the long tail's share, [`tail_share_at`]).
pub const TOP_KEPT: usize = 10;

/// Per-user 0-based target ranks of one evaluation under both protocols, in the split's user order (`None`:
/// the target was not ranked: outside a generated list, or, filtered, a repeat of a history item), and the
/// first [`TOP_KEPT`] items of each user's list under both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRanks {
    /// Every item ranked, history items included (unless the evaluation itself excluded them).
    pub all: Vec<Option<u32>>,
    /// The items of the user's whole history removed before ranking.
    pub filtered: Vec<Option<u32>>,
    /// Each user's first [`TOP_KEPT`] items, best first (every item ranked); empty in results written before
    /// lists were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<Vec<u32>>,
    /// The same with the user's whole history removed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_filtered: Vec<Vec<u32>>,
}

impl UserRanks {
    /// Adds the next user's ranks.
    pub fn push(&mut self, all: Option<usize>, filtered: Option<usize>) {
        self.all.push(all.map(|r| r as u32));
        self.filtered.push(filtered.map(|r| r as u32));
    }

    /// Adds the next user's list under both protocols (cut to [`TOP_KEPT`] items).
    pub fn push_top(&mut self, mut all: Vec<u32>, mut filtered: Vec<u32>) {
        all.truncate(TOP_KEPT);
        filtered.truncate(TOP_KEPT);
        self.top.push(all);
        self.top_filtered.push(filtered);
    }

    /// The mean share of long-tail items ([`long_tail`]) in each user's first `k` (at most [`TOP_KEPT`]) items,
    /// under the filtered protocol or not; `None` when the lists were not kept for every user.
    pub fn tail_share(&self, tail: &[bool], k: usize, filtered: bool) -> Option<f64> {
        let lists = if filtered {
            &self.top_filtered
        } else {
            &self.top
        };
        if lists.is_empty() || lists.len() != self.all.len() {
            return None;
        }
        Some(lists.iter().map(|l| tail_share_at(l, tail, k)).sum::<f64>() / lists.len() as f64)
    }

    /// Metrics of the unfiltered ranks.
    pub fn metrics(&self) -> Metrics {
        metrics_of(&self.all)
    }

    /// Metrics of the history-filtered ranks.
    pub fn filtered_metrics(&self) -> Metrics {
        metrics_of(&self.filtered)
    }

    /// The ranks of an evaluation whose main protocol is the filtered one when `exclude_history` is set (the
    /// `exclude_history` switch of every evaluator): `all` then holds the filtered ranks too.
    pub fn under(self, exclude_history: bool) -> UserRanks {
        match exclude_history {
            true => UserRanks {
                all: self.filtered.clone(),
                filtered: self.filtered,
                top: self.top_filtered.clone(),
                top_filtered: self.top_filtered,
            },
            false => self,
        }
    }
}

/// [`Metrics`] of per-user 0-based ranks (`None`: not ranked).
pub fn metrics_of(ranks: &[Option<u32>]) -> Metrics {
    let mut acc = MetricAccumulator::new();
    for r in ranks {
        acc.add_rank(r.map(|r| r as usize));
    }
    acc.finish()
}

/// Averaged metrics for the cut-offs in [`KS`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(rename = "recall@5")]
    pub recall_5: f64,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    #[serde(rename = "recall@20")]
    pub recall_20: f64,
    #[serde(rename = "ndcg@5")]
    pub ndcg_5: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    #[serde(rename = "ndcg@20")]
    pub ndcg_20: f64,
    /// Number of evaluated users.
    pub users: usize,
}

/// Sums per-user hits and gains; merge partial accumulators from parallel workers with [`Self::merge`].
#[derive(Debug, Clone, Default)]
pub struct MetricAccumulator {
    recall: [f64; 3],
    ndcg: [f64; 3],
    users: usize,
}

impl MetricAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one user whose target has 0-based `rank` (`None`: not ranked within any cut-off).
    pub fn add_rank(&mut self, rank: Option<usize>) {
        self.users += 1;
        if let Some(r) = rank {
            for (i, &k) in KS.iter().enumerate() {
                if r < k {
                    self.recall[i] += 1.0;
                    self.ndcg[i] += 1.0 / ((r + 2) as f64).log2();
                }
            }
        }
    }

    /// Adds one user from a full score vector over all items.
    pub fn add_scores(&mut self, scores: &[f32], target: usize) {
        self.add_rank(Some(rank_of(scores, target)));
    }

    pub fn merge(&mut self, other: &MetricAccumulator) {
        for i in 0..3 {
            self.recall[i] += other.recall[i];
            self.ndcg[i] += other.ndcg[i];
        }
        self.users += other.users;
    }

    pub fn users(&self) -> usize {
        self.users
    }

    /// Averages over the users added so far (all zeros when none).
    pub fn finish(&self) -> Metrics {
        let n = self.users.max(1) as f64;
        Metrics {
            recall_5: self.recall[0] / n,
            recall_10: self.recall[1] / n,
            recall_20: self.recall[2] / n,
            ndcg_5: self.ndcg[0] / n,
            ndcg_10: self.ndcg[1] / n,
            ndcg_20: self.ndcg[2] / n,
            users: self.users,
        }
    }
}

/// Per-user Recall@`k` (hit: 1 or 0) and NDCG@`k` (1 / log2(rank + 2) or 0) from 0-based target ranks
/// (`None`: not ranked within any cut-off), in the order given.
pub fn per_user_at(ranks: &[Option<u32>], k: usize) -> (Vec<f64>, Vec<f64>) {
    ranks
        .iter()
        .map(|r| match r {
            Some(r) if (*r as usize) < k => (1.0, 1.0 / ((*r as f64) + 2.0).log2()),
            _ => (0.0, 0.0),
        })
        .unzip()
}

/// The paired bootstrap 95% interval of `mean(a) - mean(b)`, where `a[u]` and `b[u]` are two methods' values
/// for the same user `u`: `resamples` resamples of the users with replacement (ChaCha8 seeded with `seed`), the
/// 2.5th and 97.5th percentiles of the resampled mean differences. `None` when the lengths differ or are zero.
pub fn paired_bootstrap_95(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<[f64; 2]> {
    use rand::{Rng, SeedableRng};
    if a.len() != b.len() || a.is_empty() || resamples == 0 {
        return None;
    }
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = diff.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diff[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * resamples as f64) as usize).min(resamples - 1)];
    Some([at(0.025), at(0.975)])
}

/// The long tail of a catalogue: `true` for every item outside the most popular `head_share` of the items, by
/// interaction count in `train` (the training sequences only, so no validation or test interaction decides it).
/// The head is the first `ceil(head_share * n_items)` items by count, most interactions first, ties to the lower
/// item index; an item of no training interaction is in the tail. `head_share` is clamped to `[0, 1]`.
pub fn long_tail(train: &[Vec<u32>], n_items: usize, head_share: f64) -> Vec<bool> {
    let mut count = vec![0u64; n_items];
    for &i in train.iter().flatten() {
        if let Some(c) = count.get_mut(i as usize) {
            *c += 1;
        }
    }
    let mut order: Vec<usize> = (0..n_items).collect();
    order.sort_by(|&a, &b| count[b].cmp(&count[a]).then(a.cmp(&b)));
    let head = ((head_share.clamp(0.0, 1.0) * n_items as f64).ceil() as usize).min(n_items);
    let mut tail = vec![true; n_items];
    for &i in &order[..head] {
        tail[i] = false;
    }
    tail
}

/// The `k` best-scored items of `scores` (item = index), best first, leaving out the items of `skip` (sorted)
/// and NaN scores; equal scores go to the lower index.
pub fn top_items(scores: &[f32], k: usize, skip: &[u32]) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if k == 0 || s.is_nan() || best.len() == k && s <= best[k - 1].0 {
            continue;
        }
        if skip.binary_search(&(i as u32)).is_ok() {
            continue;
        }
        // After every kept item of a score >= s: an equal score keeps its lower index first.
        let at = best.partition_point(|&(b, _)| b >= s);
        best.insert(at, (s, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// The share of the first `k` items of `list` that are in the long tail (`tail[i]`; an item outside `tail`
/// counts as not in it), over the `min(k, list.len())` items shown; 0 for an empty list.
pub fn tail_share_at(list: &[u32], tail: &[bool], k: usize) -> f64 {
    let shown = &list[..k.min(list.len())];
    if shown.is_empty() {
        return 0.0;
    }
    let n = shown
        .iter()
        .filter(|&&i| tail.get(i as usize).copied().unwrap_or(false))
        .count();
    n as f64 / shown.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_tail_is_every_item_outside_the_most_popular_share_of_training() {
        // Counts: item 0: 3, item 1: 1, item 2: 3, item 3: 0, item 4: 2.
        let train = vec![vec![0, 2, 4], vec![0, 2, 1], vec![0, 2, 4]];
        // 20% of 5 items: one head item; 0 and 2 tie at 3, the lower index wins.
        assert_eq!(
            long_tail(&train, 5, 0.2),
            vec![false, true, true, true, true]
        );
        // 50%: ceil(2.5) = 3 head items.
        assert_eq!(
            long_tail(&train, 5, 0.5),
            vec![false, true, false, true, false]
        );
        assert_eq!(long_tail(&train, 5, 0.0), vec![true; 5]);
        assert_eq!(long_tail(&train, 5, 7.0), vec![false; 5]);
        let tail = long_tail(&train, 5, 0.5);
        assert_eq!(tail_share_at(&[1, 0, 3, 2], &tail, 2), 0.5);
        assert_eq!(tail_share_at(&[1, 3], &tail, 10), 1.0);
        assert_eq!(tail_share_at(&[0, 9], &tail, 10), 0.0);
        assert_eq!(tail_share_at(&[], &tail, 10), 0.0);
        // Lists kept per user: the mean share; none kept, no value.
        let mut ranks = UserRanks::default();
        ranks.push(Some(0), Some(0));
        ranks.push(None, None);
        assert_eq!(ranks.tail_share(&tail, 10, false), None);
        ranks.push_top(vec![1, 3], vec![1]);
        ranks.push_top(vec![0, 2], vec![0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(ranks.top_filtered[1].len(), TOP_KEPT);
        assert_eq!(ranks.tail_share(&tail, 10, false), Some(0.5));
        assert_eq!(ranks.tail_share(&tail, 10, true), Some(0.5));
        let under = ranks.clone().under(true);
        assert_eq!(under.top, ranks.top_filtered);
    }

    #[test]
    fn top_items_are_the_best_scores_first_ties_to_the_lower_index_without_the_skipped() {
        let scores = [0.5, 2.0, f32::NAN, 2.0, -1.0, 3.0];
        assert_eq!(top_items(&scores, 3, &[]), vec![5, 1, 3]);
        assert_eq!(top_items(&scores, 3, &[1, 5]), vec![3, 0, 4]);
        assert_eq!(top_items(&scores, 10, &[]), vec![5, 1, 3, 0, 4]);
        assert!(top_items(&scores, 0, &[]).is_empty());
    }

    /// The filtered protocol removes exactly the history items: from a generated list and from a full
    /// ranking, with the same answer for the same scores.
    #[test]
    fn the_filtered_protocol_removes_exactly_the_history_items() {
        let history = sorted_history(&[7, 2, 7, 5]);
        assert_eq!(history, vec![2, 5, 7]);
        // List 9, 2, 4, 7, 1: without 2 and 7 the target 1 is third (0-based 2), 4 second.
        let list = [9, 2, 4, 7, 1];
        let scored: Vec<(u32, f32)> = list
            .iter()
            .enumerate()
            .map(|(pos, &i)| (i, 10.0 - pos as f32))
            .collect();
        assert_eq!(rank_in_list(&list, 1), Some(4));
        assert_eq!(rank_in_scored_list(&scored, 1, &[]), Some(4));
        assert_eq!(rank_in_scored_list(&scored, 1, &history), Some(2));
        assert_eq!(rank_in_scored_list(&scored, 4, &history), Some(1));
        assert_eq!(rank_in_scored_list(&scored, 3, &history), None);
        // A target that repeats a history item leaves the ranking with it.
        assert_eq!(rank_in_scored_list(&scored, 2, &history), None);
        // Ties are pessimistic in a generated list too: an item after the target with the same score ranks
        // above it, as in a full ranking.
        let tied = [(9, 3.0), (4, 2.0), (1, 2.0), (6, 1.0)];
        assert_eq!(rank_in_scored_list(&tied, 4, &[]), Some(2));
        assert_eq!(rank_in_scored_list(&tied, 1, &[]), Some(2));
        assert_eq!(rank_in_scored_list(&tied, 6, &[]), Some(3));
        // The same ranking as scores over items 0..10 (higher first; ties pessimistic).
        let mut scores = vec![0.0f32; 10];
        for (pos, &i) in list.iter().enumerate() {
            scores[i as usize] = 10.0 - pos as f32;
        }
        scores[5] = scores[1]; // history item 5 ties with the target: it ranked above, and leaves
        let rank = rank_of(&scores, 1);
        assert_eq!(rank, 5);
        let f = filtered_rank(rank, 1, scores[1], &history, |i| scores[i as usize]);
        assert_eq!(f, Some(2));
        assert_eq!(filtered_rank(0, 5, 1.0, &history, |_| 0.0), None);
        let mut both = UserRanks::default();
        both.push(Some(4), Some(2));
        both.push(None, None);
        assert_eq!(both.metrics().recall_5, 0.5);
        assert_eq!(both.filtered_metrics().recall_5, 0.5);
        assert!((both.filtered_metrics().ndcg_5 - 0.5 / 4f64.log2()).abs() < 1e-12);
        assert!((both.metrics().ndcg_5 - 0.5 / 6f64.log2()).abs() < 1e-12);
        assert_eq!(both.clone().under(false), both);
        assert_eq!(both.clone().under(true).metrics(), both.filtered_metrics());
    }

    #[test]
    fn per_user_values_follow_the_cut_off() {
        let (r, n) = per_user_at(&[Some(0), Some(9), Some(10), None], 10);
        assert_eq!(r, vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(n[0], 1.0);
        assert!((n[1] - 1.0 / 11f64.log2()).abs() < 1e-12);
        assert_eq!(&n[2..], &[0.0, 0.0]);
    }

    #[test]
    fn paired_bootstrap_brackets_the_difference_and_sees_the_pairing() {
        // b is a with 60 of 1000 hits removed: every pair differs by 0 or +1, so the interval is above zero.
        let a: Vec<f64> = (0..1000).map(|u| f64::from(u % 5 == 0)).collect();
        let b: Vec<f64> = (0..1000)
            .map(|u| f64::from(u % 5 == 0 && u >= 300))
            .collect();
        let [lo, hi] = paired_bootstrap_95(&a, &b, 1000, 7).unwrap();
        assert!(0.0 < lo && lo < 0.06 && 0.06 < hi, "[{lo}, {hi}]");
        // By hand: the 1000 differences are 60 ones and 940 zeros, so the mean of a resample has standard
        // error sqrt(0.06 * 0.94 / 1000) = 0.00751 and the interval is close to 0.06 -/+ 1.96 x 0.00751
        // = [0.0453, 0.0747] (the percentile bootstrap of a mean is nearly normal at n = 1000).
        let se = (0.06f64 * 0.94 / 1000.0).sqrt();
        assert!((lo - (0.06 - 1.96 * se)).abs() < 0.003, "{lo}");
        assert!((hi - (0.06 + 1.96 * se)).abs() < 0.003, "{hi}");
        assert_eq!(paired_bootstrap_95(&a, &b, 1000, 7), Some([lo, hi]));
        // Identical methods: the interval is exactly zero.
        assert_eq!(paired_bootstrap_95(&a, &a, 200, 1), Some([0.0, 0.0]));
        // A shuffled copy has the same mean but unpaired users: the interval straddles zero.
        let c: Vec<f64> = (0..1000).map(|u| f64::from((u + 1) % 5 == 0)).collect();
        let [lo, hi] = paired_bootstrap_95(&a, &c, 1000, 7).unwrap();
        assert!(lo < 0.0 && 0.0 < hi, "[{lo}, {hi}]");
        assert_eq!(paired_bootstrap_95(&a, &c[..10], 10, 7), None);
    }
    use proptest::prelude::*;

    #[test]
    fn hand_computed_values() {
        let mut acc = MetricAccumulator::new();
        // user 1: target has the best score -> rank 0: recall 1 everywhere, ndcg 1.
        acc.add_scores(&[0.9, 0.1, 0.2], 0);
        // user 2: rank 6 -> hit at 10 and 20 only, ndcg = 1/log2(8) = 1/3.
        let mut s = vec![0.0f32; 30];
        for (j, v) in s.iter_mut().enumerate().take(6) {
            *v = 1.0 + j as f32;
        }
        s[29] = 0.5;
        acc.add_scores(&s, 29);
        // user 3: not ranked.
        acc.add_rank(None);
        let m = acc.finish();
        assert_eq!(m.users, 3);
        assert!((m.recall_5 - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.recall_10 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.ndcg_5 - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.ndcg_10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_are_pessimistic() {
        assert_eq!(rank_of(&[1.0, 1.0, 1.0, 1.0], 0), 3);
        assert_eq!(rank_of(&[1.0, 2.0, 1.0, 0.0], 2), 2);
        assert_eq!(rank_of(&[f32::NAN, 2.0], 1), 1);
    }

    proptest! {
        #[test]
        fn metrics_are_in_unit_interval_and_monotone_in_k(
            scores in proptest::collection::vec(-5.0f32..5.0, 2..60),
            pick in 0usize..1000,
        ) {
            let t = pick % scores.len();
            let mut acc = MetricAccumulator::new();
            acc.add_scores(&scores, t);
            let m = acc.finish();
            for v in [m.recall_5, m.recall_10, m.recall_20, m.ndcg_5, m.ndcg_10, m.ndcg_20] {
                prop_assert!((0.0..=1.0).contains(&v));
            }
            prop_assert!(m.recall_5 <= m.recall_10 && m.recall_10 <= m.recall_20);
            prop_assert!(m.ndcg_5 <= m.ndcg_10 && m.ndcg_10 <= m.ndcg_20);
            prop_assert!(m.ndcg_10 <= m.recall_10);
        }

        #[test]
        fn raising_the_target_score_never_lowers_its_rank(
            scores in proptest::collection::vec(-5.0f32..5.0, 2..60),
            pick in 0usize..1000,
            bump in 0.0f32..3.0,
        ) {
            let t = pick % scores.len();
            let r0 = rank_of(&scores, t);
            let mut s2 = scores.clone();
            s2[t] += bump;
            prop_assert!(rank_of(&s2, t) <= r0);
        }
    }
}
