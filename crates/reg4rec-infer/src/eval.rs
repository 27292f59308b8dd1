//! Full-ranking evaluation of the generative search: the generated top-N list gives the target's rank
//! (pessimistic ties: a listed item with the target's score ranks above it), an item
//! the search did not generate ranks after every generated one (so Recall@K for K > `top_n` equals
//! Recall@`top_n`). History items are not filtered unless `exclude_history` is set; the report also gives the
//! history-filtered protocol of the same lists ([`EvalReport::filtered`]: the items of the user's whole history
//! removed from the list before the cut-offs).

use crate::beam::{BeamSearch, SearchStats};
use crate::error::{InferError, Result};
use crate::scorer::StepScorer;
use reg4rec_data::metrics::{
    filtered_rank, rank_in_scored_list, rank_of, sorted_history, top_items, Metrics, UserRanks,
    TOP_KEPT,
};
use reg4rec_data::split::{truncate_front, LeaveOneOut, Stage};
use serde::{Deserialize, Serialize};

/// Metrics of one evaluation and the settings that produced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub stage: Stage,
    pub metrics: Metrics,
    /// The same lists under the history-filtered protocol: the items of each user's whole history removed
    /// from its list before the cut-offs (a target that repeats one is a miss). All zeros in reports written
    /// before it was recorded.
    #[serde(default)]
    pub filtered: Metrics,
    /// Paths pruned by CORP over all users.
    pub pruned_paths: u64,
    pub beam: usize,
    pub top_n: usize,
    /// CORP threshold (`null`: CORP off).
    pub theta: Option<f32>,
    pub exclude_history: bool,
    /// History length given to the scorer.
    pub max_history: usize,
    pub stats: SearchStats,
    /// 0-based rank of each user's target in the generated list under both protocols, in the split's user
    /// order (`None`: not generated); for paired comparisons
    /// ([`reg4rec_data::metrics::paired_bootstrap_95`]). Not serialised.
    #[serde(skip)]
    pub ranks: UserRanks,
}

/// Evaluates every user of `split` on `stage` with `search` and `scorer`, in batches of `batch_users`.
/// `max_history` is the history length the model was trained with.
pub fn evaluate<S: StepScorer>(
    scorer: &mut S,
    search: &BeamSearch<'_>,
    split: &LeaveOneOut,
    stage: Stage,
    max_history: usize,
) -> Result<EvalReport> {
    let cfg = search.config();
    if max_history == 0 {
        return Err(InferError::Input("max_history must be at least 1".into()));
    }
    let n_items = search.index().n_items() as u32;
    let mut stats = SearchStats::default();
    let mut ranks = UserRanks::default();
    // With `exclude_history` the search gets the whole history so that every item of it is excluded (the model
    // scorer still encodes only its most recent `history_len` items).
    let len = if cfg.exclude_history {
        usize::MAX
    } else {
        max_history
    };
    for_each_batch(
        split,
        stage,
        cfg.batch_users,
        "evaluate",
        |users, histories| {
            if let Some(&bad) = histories.iter().flatten().find(|&&i| i >= n_items) {
                return Err(InferError::Input(format!(
                    "history item {bad} is outside the item index ({n_items} items)"
                )));
            }
            let refs: Vec<&[u32]> = histories.iter().map(|h| truncate_front(h, len)).collect();
            let out = search.run(scorer, &refs, false)?;
            for ((&u, list), history) in users.iter().zip(&out.lists).zip(histories) {
                // Pessimistic ties, as every full ranking: an item the list holds with the target's score ranks
                // above it wherever the search put it.
                let items: Vec<(u32, f32)> = list.iter().map(|r| (r.item, r.score)).collect();
                let target = split.target(u, stage);
                let history = sorted_history(history);
                ranks.push(
                    rank_in_scored_list(&items, target, &[]),
                    rank_in_scored_list(&items, target, &history),
                );
                let top = items.iter().map(|&(i, _)| i);
                ranks.push_top(
                    top.clone().take(TOP_KEPT).collect(),
                    top.filter(|i| history.binary_search(i).is_err())
                        .take(TOP_KEPT)
                        .collect(),
                );
            }
            stats.merge(&out.stats);
            Ok(())
        },
    )?;
    Ok(EvalReport {
        stage,
        metrics: ranks.metrics(),
        filtered: ranks.filtered_metrics(),
        pruned_paths: stats.pruned_paths,
        beam: cfg.beam,
        top_n: cfg.top_n,
        theta: cfg.theta,
        exclude_history: cfg.exclude_history,
        max_history,
        stats,
        ranks,
    })
}

/// Full ranking by a scorer's dense item scores ([`StepScorer::all_item_scores`]; the model's item head with
/// its repeat bias): every item of the catalogue scored for every user of `split` on `stage`, in batches of
/// `batch_users`, with the pessimistic ties of [`reg4rec_data::metrics::rank_of`], under both protocols. No
/// search runs: this is what the item head ranks alone. An error when the scorer has no dense scores.
pub fn evaluate_dense<S: StepScorer>(
    scorer: &mut S,
    split: &LeaveOneOut,
    stage: Stage,
    max_history: usize,
    n_items: usize,
    batch_users: usize,
) -> Result<UserRanks> {
    if max_history == 0 || batch_users == 0 {
        return Err(InferError::Input(
            "max_history and batch_users must be at least 1".into(),
        ));
    }
    let mut ranks = UserRanks::default();
    for_each_batch(
        split,
        stage,
        batch_users,
        "evaluate the item head",
        |users, histories| {
            let refs: Vec<&[u32]> = histories
                .iter()
                .map(|h| truncate_front(h, max_history))
                .collect();
            scorer.begin(&refs)?;
            let scores = scorer.all_item_scores(n_items)?.ok_or_else(|| {
                InferError::Input(
                    "the scorer has no dense item scores (a model without an item head)".into(),
                )
            })?;
            for ((row, &u), history) in scores.chunks(n_items).zip(users).zip(histories) {
                let target = split.target(u, stage);
                if target as usize >= n_items {
                    return Err(InferError::Input(format!(
                        "target item {target} is outside the {n_items} scored items"
                    )));
                }
                let all = rank_of(row, target as usize);
                let history = sorted_history(history);
                let filtered = filtered_rank(all, target, row[target as usize], &history, |i| {
                    row.get(i as usize).copied().unwrap_or(f32::NEG_INFINITY)
                });
                ranks.push(Some(all), filtered);
                ranks.push_top(
                    top_items(row, TOP_KEPT, &[]),
                    top_items(row, TOP_KEPT, &history),
                );
            }
            Ok(())
        },
    )?;
    Ok(ranks)
}

/// Runs `f` on the users of `split` in batches of `batch_users` (in user order), each with the users' whole
/// histories on `stage` (oldest first), behind a progress bar labelled `label`.
fn for_each_batch(
    split: &LeaveOneOut,
    stage: Stage,
    batch_users: usize,
    label: &str,
    mut f: impl FnMut(&[usize], &[Vec<u32>]) -> Result<()>,
) -> Result<()> {
    let n = split.n_users();
    let bar = reg4rec_data::progress::bar(n as u64, label);
    for start in (0..n).step_by(batch_users) {
        let users: Vec<usize> = (start..(start + batch_users).min(n)).collect();
        let histories: Vec<Vec<u32>> = users
            .iter()
            .map(|&u| split.history(u, stage, usize::MAX))
            .collect();
        f(&users, &histories)?;
        bar.inc(users.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}
