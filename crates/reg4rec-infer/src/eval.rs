//! Full-ranking evaluation of the generative search: the generated top-N list gives the target's rank, an item
//! the search did not generate ranks after every generated one (so Recall@K for K > `top_n` equals
//! Recall@`top_n`). History items are not filtered unless `exclude_history` is set.

use crate::beam::{BeamSearch, SearchStats};
use crate::error::{InferError, Result};
use crate::scorer::StepScorer;
use reg4rec_data::metrics::{rank_in_list, MetricAccumulator, Metrics};
use reg4rec_data::split::{LeaveOneOut, Stage};
use serde::{Deserialize, Serialize};

/// Metrics of one evaluation and the settings that produced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub stage: Stage,
    pub metrics: Metrics,
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
    /// 0-based rank of each user's target in the generated list, in the split's user order (`None`: not
    /// generated); for paired comparisons ([`reg4rec_data::metrics::paired_bootstrap_95`]). Not serialised.
    #[serde(skip)]
    pub ranks: Vec<Option<u32>>,
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
    let n = split.n_users();
    let mut acc = MetricAccumulator::new();
    let mut stats = SearchStats::default();
    let mut ranks = Vec::with_capacity(n);
    let bar = reg4rec_data::progress::bar(n as u64, "evaluate");
    for start in (0..n).step_by(cfg.batch_users) {
        let users: Vec<usize> = (start..(start + cfg.batch_users).min(n)).collect();
        // With `exclude_history` the search gets the whole history so that every item of it is excluded (the
        // model scorer still encodes only its most recent `history_len` items).
        let len = if cfg.exclude_history {
            usize::MAX
        } else {
            max_history
        };
        let histories: Vec<Vec<u32>> = users
            .iter()
            .map(|&u| split.history(u, stage, len))
            .collect();
        if let Some(&bad) = histories.iter().flatten().find(|&&i| i >= n_items) {
            return Err(InferError::Input(format!(
                "history item {bad} is outside the item index ({n_items} items)"
            )));
        }
        let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let out = search.run(scorer, &refs, false)?;
        for (&u, list) in users.iter().zip(&out.lists) {
            let items: Vec<u32> = list.iter().map(|r| r.item).collect();
            let rank = rank_in_list(&items, split.target(u, stage));
            acc.add_rank(rank);
            ranks.push(rank.map(|r| r as u32));
        }
        stats.merge(&out.stats);
        bar.inc(users.len() as u64);
    }
    bar.finish_and_clear();
    Ok(EvalReport {
        stage,
        metrics: acc.finish(),
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
