//! CRSS beam search: generation over (codebook, code) pairs where, at every step, every codebook the path has not
//! used yet competes and the beam keeps the most confident partial paths (highest sum of log-probabilities).
//! Ordered codes (RQ-VAE / TIGER) force codebook order `0..m`.
//!
//! Constraints: a path is only extended by tokens that keep its token set a subset of some item's tuple, so every
//! completed path is an existing item. Each beam carries the list of items it can still reach: a token's posting
//! list after the first step, a pair posting list after the second (both held by the [`ItemIndex`], nothing is
//! copied), then its parent's list filtered by one code; the valid next tokens of a one-token path are the
//! tokens whose pair list with it is not empty, and those of a longer path cost one pass over its reachable
//! items (about `n / d^2` of them after two tokens), so the search's work grows slowly with the catalog
//! (docs/scale.md: 1.3-2.1x from 10^5 to 10^7 items). A user may be restricted to a subset of the items
//! ([`BeamSearch::run_constrained`]: allowed categories, excluded items, catalog availability, its own history
//! with `exclude_history`): its root then reaches only those items, so the same rule keeps every path inside the
//! subset and the beam's width is never spent on items that would be thrown away.
//!
//! CORP ([`crate::corp`]): after the model has scored a checked step k (k >= `corp_from_step`) for the beams chosen at step k - 1, a beam whose
//! category distribution moved more than theta (JS divergence) from the previous step is pruned, and its slot
//! goes to the next-best not-yet-taken candidate of the step k - 1 expansion of the same user; the refills are
//! scored and checked in turn (at most `max_rollback_rounds` rounds per step).
//!
//! Merged permutations: two candidates of one user that hold the same partial token SET in different orders
//! reach the same items, so only the better-scoring one enters the beam (the other would waste beam width);
//! candidates are taken best first, so the set keeps its best order. Ordered codes have no permutations.
//!
//! The last step keeps every completion of the final beam; an item reached in several orders keeps its best
//! path score. Items are ranked by `path score + dense_weight * dense item score` when the scorer has a
//! dense item score ([`StepScorer::item_scores`]), else by path score; the top `top_n` are returned, best
//! first (ties: lower item index first). Only generated items are ranked.
//!
//! Dense lookahead (`InferConfig::dense_lookahead`): the beam keeps partial paths by the score their best
//! completion could reach, `path score + dense_weight * the best dense score among the items the path can still
//! reach`, read from the scorer's dense scores of every item ([`StepScorer::all_item_scores`]). Without it the
//! beam keeps paths by path score, and the dense score only orders the items the search completed.

use crate::config::InferConfig;
use crate::corp;
use crate::error::{InferError, Result};
use crate::scorer::{StepInput, StepOutput, StepScorer, Token};
use reg4rec_tokenizer::ItemIndex;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::time::Instant;

const NONE: u32 = u32::MAX;

/// One recommended item with its ranking score and its reasoning path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub item: u32,
    /// What the list is ranked by: `path_score + dense_weight * item_score` (`path_score` without a dense score).
    pub score: f32,
    /// Sum of the path's log-probabilities.
    pub path_score: f32,
    /// The model's dense item score (its item head's logit, with the learned repeat bias when the item is in
    /// the user's history: the log-probability up to a constant per user), when the scorer has one.
    pub item_score: Option<f32>,
    /// The best-scoring path to the item, in generation order.
    pub path: Vec<PathStep>,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathStep {
    pub token: Token,
    /// Log-probability of the token at this step.
    pub logp: f32,
    /// The most likely categories predicted at this step, `(category, probability)`, most likely first
    /// (empty when the search ran without explanations).
    pub categories: Vec<(u32, f32)>,
    /// The JS divergence between this step's and the previous step's category distributions (`None` at the
    /// first step). CORP checked it against theta when CORP was on.
    pub js: Option<f32>,
}

/// Counters and timings of one or more searches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchStats {
    pub users: u64,
    /// Calls of [`StepScorer::step`] and the beams they scored.
    pub model_calls: u64,
    pub model_rows: u64,
    /// Paths pruned by CORP (every pruned beam counts, refills included).
    pub pruned_paths: u64,
    /// Rollback rounds (each one model call on the refilled beams).
    pub rollback_rounds: u64,
    /// Seconds inside the scorer, and seconds of search bookkeeping (masking, index intersection, selection,
    /// CORP, result assembly).
    pub model_secs: f64,
    pub search_secs: f64,
}

impl SearchStats {
    pub fn merge(&mut self, o: &SearchStats) {
        self.users += o.users;
        self.model_calls += o.model_calls;
        self.model_rows += o.model_rows;
        self.pruned_paths += o.pruned_paths;
        self.rollback_rounds += o.rollback_rounds;
        self.model_secs += o.model_secs;
        self.search_secs += o.search_secs;
    }
}

/// Result of a search over a batch of users.
#[derive(Debug, Clone, Default)]
pub struct SearchOutput {
    /// Per user (in the order of the histories), the top items, best first.
    pub lists: Vec<Vec<Recommendation>>,
    pub stats: SearchStats,
}

/// The items a beam can still reach.
#[derive(Debug, Clone, Copy)]
enum Reach {
    /// Every item (the empty path).
    All,
    /// The posting list of one token (paths of length 1).
    Posting(u32),
    /// The pair posting list of two tokens (paths of length 2).
    Pair(u32, u32),
    /// `len` items at `start` of the level's item buffer.
    Span(u32, u32),
}

/// Where a beam's scorer output lives: row `row` of chunk `chunk` of its level.
#[derive(Debug, Clone, Copy)]
struct Loc {
    chunk: u32,
    row: u32,
}

const NO_LOC: Loc = Loc {
    chunk: NONE,
    row: NONE,
};

#[derive(Debug, Clone, Copy)]
struct Beam {
    user: u32,
    score: f32,
    /// Arena node of the last token (`NONE` for the empty path).
    node: u32,
    /// Bit r set when codebook r is used.
    used: u64,
    reach: Reach,
    /// Index of the parent in the previous level's beams.
    parent: u32,
    /// This beam's scorer output at the current step.
    out: Loc,
    /// JS divergence checked at the current step (NaN before the check, or at the first step).
    js: f32,
}

/// A candidate expansion: `parent` (index into the level's beams) followed by `token`.
#[derive(Debug, Clone, Copy)]
struct Cand {
    /// What the beam keeps the best of: `score`, or with the dense lookahead `score + dense_weight * bound`
    /// where `bound` is the best dense score among the items the candidate can reach.
    rank: f32,
    /// With the dense lookahead, the item the bound comes from (the best item the candidate can reach), else
    /// `NONE`.
    best: u32,
    score: f32,
    logp: f32,
    parent: u32,
    token: u32,
    /// The completed item at the last step, else `NONE`.
    item: u32,
}

/// Best first; ties broken by parent then token so the search is deterministic.
fn by_score(a: &Cand, b: &Cand) -> Ordering {
    b.rank
        .total_cmp(&a.rank)
        .then(a.parent.cmp(&b.parent))
        .then(a.token.cmp(&b.token))
}

/// A path node: the token chosen at step `step` (0-based) and where that step's category distribution lives.
#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u32,
    token: u32,
    logp: f32,
    js: f32,
    step: u32,
    cat: Loc,
}

/// The beams of one depth (all with `depth` tokens), their scorer outputs and their expansion pool.
#[derive(Default)]
struct Level {
    depth: usize,
    /// Number of categories of the scorer.
    n_cat: usize,
    beams: Vec<Beam>,
    /// Row-major `[beams, depth]`.
    tokens: Vec<u32>,
    /// Storage of `Reach::Span`s.
    items: Vec<u32>,
    /// Scorer outputs: the main call, then one per rollback round.
    chunks: Vec<StepOutput>,
    /// All candidate expansions, grouped by user.
    pool: Vec<Cand>,
    /// Per user: `(start, end, next)` of its pool range; `next` is the first candidate not taken yet.
    ranges: Vec<(u32, u32, u32)>,
    /// Per user: the token sets (sorted, `depth + 1` tokens each, flattened) of the candidates taken so far,
    /// when permutations are merged.
    taken: Vec<Vec<u32>>,
    /// Per user, with the dense lookahead: the best items of the candidates taken so far. A candidate whose best
    /// item another taken candidate already leads to is taken only when no other candidate is left, so the beam
    /// spreads over different items instead of filling with prefixes of the same one (on unordered codes an
    /// item lies under many prefixes).
    claimed: Vec<Vec<u32>>,
    /// Merge candidates holding the same token set (unordered codes, at least two tokens).
    merge: bool,
}

/// Beam search over one item index; build once, run on many batches.
pub struct BeamSearch<'a> {
    index: &'a ItemIndex,
    cfg: InferConfig,
    m: usize,
    d: usize,
    ordered: bool,
    /// The tokens a path may start with.
    first: Vec<u32>,
}

impl<'a> BeamSearch<'a> {
    pub fn new(index: &'a ItemIndex, cfg: &InferConfig) -> Result<Self> {
        cfg.validate()?;
        let codes = index.codes();
        let (m, d) = (codes.m, codes.d);
        if m > 64 {
            return Err(InferError::Input(format!(
                "m = {m} codebooks: at most 64 supported"
            )));
        }
        if index.n_items() == 0 {
            return Err(InferError::Input("the item index is empty".into()));
        }
        let ordered = codes.ordered || cfg.fixed_order;
        let first = (0..m * d)
            .filter(|&t| !index.posting(t).is_empty() && (!ordered || t < d))
            .map(|t| t as u32)
            .collect();
        Ok(BeamSearch {
            index,
            cfg: cfg.effective(),
            m,
            d,
            ordered,
            first,
        })
    }

    pub fn config(&self) -> &InferConfig {
        &self.cfg
    }

    pub fn index(&self) -> &ItemIndex {
        self.index
    }

    /// Searches the top items of every user in `histories` (dense item indices, oldest first). With `explain`,
    /// every path step carries its top categories; without, `categories` stays empty (cheaper).
    pub fn run<S: StepScorer>(
        &self,
        scorer: &mut S,
        histories: &[&[u32]],
        explain: bool,
    ) -> Result<SearchOutput> {
        self.run_constrained(scorer, histories, &[], explain)
    }

    /// [`BeamSearch::run`] where user u's paths may only reach the items of `allowed[u]` (`None`: every item;
    /// an empty `allowed` slice: no constraint for anyone). The constraint is part of decoding, not a filter
    /// after it: a token is only offered when some allowed item holds it, so the list has `top_n` items
    /// whenever the beam can reach that many allowed ones. With `exclude_history`, the user's history items
    /// are removed from the allowed items the same way.
    pub fn run_constrained<S: StepScorer>(
        &self,
        scorer: &mut S,
        histories: &[&[u32]],
        allowed: &[Option<&[u32]>],
        explain: bool,
    ) -> Result<SearchOutput> {
        let t0 = Instant::now();
        if !allowed.is_empty() && allowed.len() != histories.len() {
            return Err(InferError::Input(format!(
                "{} allowed-item lists for {} histories",
                allowed.len(),
                histories.len()
            )));
        }
        let n_items = self.index.n_items();
        if let Some(&bad) = allowed
            .iter()
            .flatten()
            .flat_map(|a| a.iter())
            .find(|&&i| i as usize >= n_items)
        {
            return Err(InferError::Input(format!(
                "allowed item {bad} is outside the item index ({n_items} items)"
            )));
        }
        let (m, d) = (self.m, self.d);
        if scorer.n_tokens() != m * d {
            return Err(InferError::Input(format!(
                "scorer has {} semantic tokens, the item index m * d = {m} * {d} = {}",
                scorer.n_tokens(),
                m * d
            )));
        }
        let n_cat = scorer.n_categories();
        let n = histories.len();
        let mut stats = SearchStats {
            users: n as u64,
            ..Default::default()
        };
        let mut lists = vec![Vec::new(); n];
        if n == 0 {
            return Ok(SearchOutput { lists, stats });
        }
        let t_begin = Instant::now();
        scorer.begin(histories)?;
        // Every user's dense score of every item, for the lookahead.
        let lookahead = if self.cfg.dense_lookahead && self.cfg.dense_weight > 0.0 {
            let all = scorer.all_item_scores(n_items)?;
            if let Some(a) = &all {
                if a.len() != n * n_items {
                    return Err(InferError::Shape {
                        name: "all_item_scores".into(),
                        expected: vec![n, n_items],
                        found: a.len(),
                    });
                }
            }
            all
        } else {
            None
        };
        stats.model_secs += t_begin.elapsed().as_secs_f64();
        let mut slot = vec![0u32; if lookahead.is_some() { m * d } else { 0 }];

        let mut arena: Vec<Node> = Vec::new();
        // Category buffers of every step, per chunk, for explanations.
        let mut cats: Vec<Vec<Vec<f32>>> = Vec::with_capacity(m);
        let mut stamp = vec![0u32; m * d];
        let mut epoch = 0u32;
        let mut prev: Option<Level> = None;
        // The root of each user: every item, or the span of its allowed items in the root level's buffer.
        let mut root_items: Vec<u32> = Vec::new();
        // Marks items already placed or excluded for the user being built (only needed when some user is
        // constrained: unconstrained searches, the common case, allocate nothing per item).
        let constrained = self.cfg.exclude_history || allowed.iter().any(Option::is_some);
        let mut blocked = vec![NONE; if constrained { n_items } else { 0 }];
        let mut roots = Vec::with_capacity(n);
        for (u, h) in histories.iter().enumerate() {
            let given = allowed.get(u).copied().flatten();
            let reach = if given.is_none() && !self.cfg.exclude_history {
                Reach::All
            } else {
                if self.cfg.exclude_history {
                    for &i in h.iter() {
                        if let Some(b) = blocked.get_mut(i as usize) {
                            *b = u as u32;
                        }
                    }
                }
                let start = root_items.len();
                match given {
                    Some(list) => root_items.extend(list.iter().copied()),
                    None => root_items.extend(0..n_items as u32),
                }
                let mut kept = start;
                for j in start..root_items.len() {
                    let it = root_items[j];
                    if blocked[it as usize] != u as u32 {
                        blocked[it as usize] = u as u32; // also drops duplicates
                        root_items[kept] = it;
                        kept += 1;
                    }
                }
                root_items.truncate(kept);
                Reach::Span(start as u32, (kept - start) as u32)
            };
            roots.push(Beam {
                user: u as u32,
                score: 0.0,
                node: NONE,
                used: 0,
                reach,
                parent: NONE,
                out: NO_LOC,
                js: f32::NAN,
            });
        }
        drop(blocked);
        let mut level = Level {
            depth: 0,
            n_cat,
            beams: roots,
            items: root_items,
            ..Default::default()
        };

        for depth in 0..m {
            let all: Vec<usize> = (0..level.beams.len()).collect();
            let out = self.call(scorer, &level, &all, &mut stats)?;
            level.chunks.push(out);
            for (i, b) in level.beams.iter_mut().enumerate() {
                b.out = Loc {
                    chunk: 0,
                    row: i as u32,
                };
            }
            if depth >= 1 && self.cfg.theta.is_some() && depth + 1 >= self.cfg.corp_from_step {
                if let Some(p) = prev.as_mut() {
                    let pc = &cats[depth - 1];
                    self.corp(scorer, &mut level, p, pc, &mut arena, &mut stats)?;
                }
            } else if depth >= 1 {
                // Not checked (CORP off, or before `corp_from_step`): record the divergences for explanations.
                if let Some(p) = prev.as_ref() {
                    for i in 0..level.beams.len() {
                        level.beams[i].js = js_of(&level, p, &cats[depth - 1], i);
                    }
                }
            }
            self.expand(
                &mut level,
                n,
                &mut stamp,
                &mut epoch,
                lookahead.as_deref(),
                &mut slot,
            );
            for c in level.chunks.iter_mut() {
                c.logp = Vec::new();
            }
            cats.push(
                level
                    .chunks
                    .iter_mut()
                    .map(|c| std::mem::take(&mut c.category))
                    .collect(),
            );
            if depth + 1 < m {
                let mut next = Level {
                    depth: depth + 1,
                    n_cat,
                    ..Default::default()
                };
                let beam = self.cfg.beam;
                for u in 0..n {
                    let take = take_best(&mut level, u, beam);
                    for c in take {
                        let b = self.child(&level, &c, &mut next, &mut arena);
                        next.beams.push(b);
                    }
                }
                prev = Some(level);
                level = next;
            } else {
                let mut seen = vec![NONE; n_items];
                let w = self.cfg.dense_weight;
                // Dense item log-probabilities of every completion, in pool order (one scorer call).
                let dense = if let Some(all) = &lookahead {
                    // The lookahead already holds every user's dense score of every item.
                    Some(
                        level
                            .pool
                            .iter()
                            .map(|c| {
                                let u = level.beams[c.parent as usize].user as usize;
                                all[u * n_items + c.item as usize]
                            })
                            .collect(),
                    )
                } else if w > 0.0 {
                    let rows: Vec<usize> = level
                        .pool
                        .iter()
                        .map(|c| level.beams[c.parent as usize].user as usize)
                        .collect();
                    let items: Vec<u32> = level.pool.iter().map(|c| c.item).collect();
                    let t = Instant::now();
                    let d = scorer.item_scores(&rows, &items)?;
                    stats.model_secs += t.elapsed().as_secs_f64();
                    if let Some(d) = &d {
                        if d.len() != items.len() {
                            return Err(InferError::Shape {
                                name: "item_scores".into(),
                                expected: vec![items.len()],
                                found: d.len(),
                            });
                        }
                    }
                    d
                } else {
                    None
                };
                for (u, list) in lists.iter_mut().enumerate() {
                    let (start, end, _) = level.ranges[u];
                    let (start, end) = (start as usize, end as usize);
                    // (ranking score, candidate, item log-probability); an item's paths differ only in path
                    // score, so its best path comes first.
                    let mut ranked: Vec<(f32, &Cand, Option<f32>)> = level.pool[start..end]
                        .iter()
                        .enumerate()
                        .map(|(j, c)| match &dense {
                            Some(lp) => {
                                let l = lp[start + j];
                                (c.score + w * l, c, Some(l))
                            }
                            None => (c.score, c, None),
                        })
                        .collect();
                    ranked.sort_unstable_by(|a, b| {
                        b.0.total_cmp(&a.0)
                            .then(a.1.item.cmp(&b.1.item))
                            .then(b.1.score.total_cmp(&a.1.score))
                    });
                    for &(score, c, item_score) in &ranked {
                        if list.len() == self.cfg.top_n {
                            break;
                        }
                        if seen[c.item as usize] == u as u32 {
                            continue;
                        }
                        seen[c.item as usize] = u as u32;
                        let p = &level.beams[c.parent as usize];
                        let last = Node {
                            parent: p.node,
                            token: c.token,
                            logp: c.logp,
                            js: p.js,
                            step: depth as u32,
                            cat: p.out,
                        };
                        let path = self.path(&arena, last, &cats, n_cat, explain);
                        list.push(Recommendation {
                            item: c.item,
                            score,
                            path_score: c.score,
                            item_score,
                            path,
                        });
                    }
                }
            }
        }
        stats.search_secs = (t0.elapsed().as_secs_f64() - stats.model_secs).max(0.0);
        Ok(SearchOutput { lists, stats })
    }

    /// Calls the scorer on beams `idx` of `level`.
    fn call<S: StepScorer>(
        &self,
        scorer: &mut S,
        level: &Level,
        idx: &[usize],
        stats: &mut SearchStats,
    ) -> Result<StepOutput> {
        let k = level.depth;
        let rows: Vec<usize> = idx.iter().map(|&i| level.beams[i].user as usize).collect();
        let gathered;
        let prefixes: &[u32] = if idx.len() == level.beams.len() {
            &level.tokens
        } else {
            gathered = idx
                .iter()
                .flat_map(|&i| level.tokens[i * k..(i + 1) * k].iter().copied())
                .collect::<Vec<u32>>();
            &gathered
        };
        let t = Instant::now();
        let out = scorer.step(StepInput {
            rows: &rows,
            len: k,
            prefixes,
        })?;
        stats.model_secs += t.elapsed().as_secs_f64();
        stats.model_calls += 1;
        stats.model_rows += idx.len() as u64;
        out.check(idx.len(), self.m * self.d, level.n_cat)?;
        Ok(out)
    }

    /// CORP with rollback on a freshly scored level (depth >= 1): prunes beams whose category distribution
    /// diverged from their parent's, refills their slots from the previous level's pool and checks the refills.
    /// Leaves the surviving beams grouped by user.
    fn corp<S: StepScorer>(
        &self,
        scorer: &mut S,
        level: &mut Level,
        prev: &mut Level,
        prev_cats: &[Vec<f32>],
        arena: &mut Vec<Node>,
        stats: &mut SearchStats,
    ) -> Result<()> {
        let theta = self.cfg.theta;
        let mut alive = vec![true; level.beams.len()];
        let mut check: Vec<usize> = (0..level.beams.len()).collect();
        for round in 0..=self.cfg.max_rollback_rounds {
            let mut pruned_per_user: Vec<(u32, usize)> = Vec::new();
            for &i in &check {
                let js = js_of(level, prev, prev_cats, i);
                level.beams[i].js = js;
                if corp::prunes(theta, js) {
                    alive[i] = false;
                    stats.pruned_paths += 1;
                    let u = level.beams[i].user;
                    match pruned_per_user.last_mut() {
                        Some((pu, c)) if *pu == u => *c += 1,
                        _ => pruned_per_user.push((u, 1)),
                    }
                }
            }
            if pruned_per_user.is_empty() || round == self.cfg.max_rollback_rounds {
                break;
            }
            // Refill each pruned slot with the next-best candidate of the same user's previous expansion.
            let first_new = level.beams.len();
            for &(u, count) in &pruned_per_user {
                for c in take_best(prev, u as usize, count) {
                    let b = self.child(prev, &c, level, arena);
                    level.beams.push(b);
                    alive.push(true);
                }
            }
            if level.beams.len() == first_new {
                break;
            }
            check = (first_new..level.beams.len()).collect();
            stats.rollback_rounds += 1;
            let out = self.call(scorer, level, &check, stats)?;
            let chunk = level.chunks.len() as u32;
            level.chunks.push(out);
            for (row, &i) in check.iter().enumerate() {
                level.beams[i].out = Loc {
                    chunk,
                    row: row as u32,
                };
            }
        }
        // Keep the survivors, grouped by user (stable: main-call beams before their refills).
        let k = level.depth;
        let mut order: Vec<usize> = (0..level.beams.len()).filter(|&i| alive[i]).collect();
        order.sort_by_key(|&i| level.beams[i].user);
        let beams = order.iter().map(|&i| level.beams[i]).collect();
        let tokens = order
            .iter()
            .flat_map(|&i| level.tokens[i * k..(i + 1) * k].iter().copied())
            .collect();
        level.beams = beams;
        level.tokens = tokens;
        Ok(())
    }

    /// The items beam `b` of `level` can still reach.
    fn reach<'l>(&'l self, level: &'l Level, b: &Beam) -> &'l [u32] {
        match b.reach {
            Reach::All => &[],
            Reach::Posting(t) => self.index.posting(t as usize),
            Reach::Pair(a, b) => self.index.pair_posting(a as usize, b as usize),
            Reach::Span(s, l) => &level.items[s as usize..(s + l) as usize],
        }
    }

    /// Fills `level.pool` with every valid expansion of every beam, grouped by user, and sets `level.ranges`.
    /// With `dense` (row-major `[users, items]` dense scores: the lookahead), each candidate is ranked by its
    /// path score plus `dense_weight` times the best dense score among the items it can reach (`slot`: scratch
    /// of `m * d` pool positions).
    fn expand(
        &self,
        level: &mut Level,
        n_users: usize,
        stamp: &mut [u32],
        epoch: &mut u32,
        dense: Option<&[f32]>,
        slot: &mut [u32],
    ) {
        let (m, d, v) = (self.m, self.d, self.m * self.d);
        let tuples = &self.index.codes().tuples;
        let n_items = self.index.n_items();
        let w = self.cfg.dense_weight;
        let last = level.depth + 1 == m;
        let mut pool = Vec::new();
        let mut ranges = vec![(0u32, 0u32, 0u32); n_users];
        let mut i = 0;
        while i < level.beams.len() {
            let u = level.beams[i].user as usize;
            let start = pool.len() as u32;
            let dense_u = dense.map(|x| &x[u * n_items..(u + 1) * n_items]);
            while i < level.beams.len() && level.beams[i].user as usize == u {
                let b = level.beams[i];
                let out = &level.chunks[b.out.chunk as usize];
                let lp = &out.logp[b.out.row as usize * v..(b.out.row as usize + 1) * v];
                // `bound`: the best dense score the candidate can reach (lookahead only).
                // A token the scorer closed (probability zero: `-inf`, or undefined) is never emitted, so a
                // scorer may open fewer codebooks than the search would (a parallel path's per-user order).
                let push = |pool: &mut Vec<Cand>, t: u32, item: u32, bound: f32, best: u32| {
                    let l = lp[t as usize];
                    if l.is_nan() || l == f32::NEG_INFINITY {
                        return;
                    }
                    let score = b.score + l;
                    pool.push(Cand {
                        rank: if dense.is_some() {
                            score + w * bound
                        } else {
                            score
                        },
                        best,
                        score,
                        logp: l,
                        parent: i as u32,
                        token: t,
                        item,
                    });
                };
                let item_bound = |it: u32| dense_u.map_or(0.0, |x| x[it as usize]);
                match b.reach {
                    Reach::All if dense_u.is_some() => {
                        // The best dense score under each first token: one pass over the items.
                        let x = dense_u.unwrap_or_default();
                        let mut best = vec![f32::NEG_INFINITY; v];
                        let mut arg = vec![NONE; v];
                        let open = if self.ordered { 1 } else { m };
                        for (it, &s) in x.iter().enumerate() {
                            for r in 0..open {
                                let t = r * d + tuples[it * m + r] as usize;
                                if s > best[t] || arg[t] == NONE {
                                    best[t] = s;
                                    arg[t] = it as u32;
                                }
                            }
                        }
                        for &t in &self.first {
                            let item = if last {
                                self.index.posting(t as usize)[0]
                            } else {
                                NONE
                            };
                            push(&mut pool, t, item, best[t as usize], arg[t as usize]);
                        }
                    }
                    Reach::All => {
                        if last {
                            // m == 1: every first token is an item.
                            for &t in &self.first {
                                push(&mut pool, t, self.index.posting(t as usize)[0], 0.0, NONE);
                            }
                        } else {
                            for &t in &self.first {
                                push(&mut pool, t, NONE, 0.0, NONE);
                            }
                        }
                    }
                    // The tokens that can follow `a` are those whose pair list with it is not empty: a pass
                    // over the open codebooks' tokens instead of over the n / d items having `a`, when that is
                    // shorter (large catalogs; the lookahead needs the pass over the items).
                    Reach::Posting(a)
                        if !last
                            && dense.is_none()
                            && self.index.posting(a as usize).len() > (m - 1) * d =>
                    {
                        for r in 0..m {
                            if b.used >> r & 1 == 1 || (self.ordered && r != level.depth) {
                                continue;
                            }
                            for t in r * d..(r + 1) * d {
                                if !self.index.pair_posting(a as usize, t).is_empty() {
                                    push(&mut pool, t as u32, NONE, 0.0, NONE);
                                }
                            }
                        }
                    }
                    _ => {
                        let items = self.reach(level, &b);
                        if last {
                            // One open codebook: each reachable item is one completion.
                            let r = (0..m).find(|&r| b.used >> r & 1 == 0).unwrap_or(0);
                            for &it in items {
                                let t = (r * d) as u32 + tuples[it as usize * m + r] as u32;
                                push(&mut pool, t, it, item_bound(it), it);
                            }
                        } else {
                            *epoch = epoch.wrapping_add(1);
                            if *epoch == 0 {
                                stamp.fill(0);
                                *epoch = 1;
                            }
                            let open: Vec<usize> = if self.ordered {
                                vec![level.depth]
                            } else {
                                (0..m).filter(|&r| b.used >> r & 1 == 0).collect()
                            };
                            for &it in items {
                                let tuple = &tuples[it as usize * m..(it as usize + 1) * m];
                                for &r in &open {
                                    let t = r * d + tuple[r] as usize;
                                    if stamp[t] != *epoch {
                                        stamp[t] = *epoch;
                                        if dense.is_some() {
                                            slot[t] = pool.len() as u32;
                                        }
                                        let best = if dense.is_some() { it } else { NONE };
                                        push(&mut pool, t as u32, NONE, item_bound(it), best);
                                    } else if let Some(x) = dense_u {
                                        // A better item under a token already offered raises its bound.
                                        let c = &mut pool[slot[t] as usize];
                                        let s = x[it as usize];
                                        if c.score + w * s > c.rank {
                                            c.rank = c.score + w * s;
                                            c.best = it;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                i += 1;
            }
            let end = pool.len() as u32;
            ranges[u] = (start, end, start);
        }
        level.pool = pool;
        level.ranges = ranges;
        level.merge = !self.ordered && level.depth >= 1;
        level.taken = if level.merge {
            vec![Vec::new(); n_users]
        } else {
            Vec::new()
        };
        level.claimed = if dense.is_some() {
            vec![Vec::new(); n_users]
        } else {
            Vec::new()
        };
    }

    /// Materialises candidate `c` of `parent_level` as a beam of `level` (one token longer).
    fn child(
        &self,
        parent_level: &Level,
        c: &Cand,
        level: &mut Level,
        arena: &mut Vec<Node>,
    ) -> Beam {
        let (m, d) = (self.m, self.d);
        let k = parent_level.depth;
        let p = parent_level.beams[c.parent as usize];
        level.tokens.extend_from_slice(
            &parent_level.tokens[c.parent as usize * k..(c.parent as usize + 1) * k],
        );
        level.tokens.push(c.token);
        let (r, j) = (c.token as usize / d, (c.token as usize % d) as u16);
        let reach = match p.reach {
            Reach::All => Reach::Posting(c.token),
            Reach::Posting(a) => Reach::Pair(a, c.token),
            _ => {
                let tuples = &self.index.codes().tuples;
                let start = level.items.len() as u32;
                for &it in self.reach(parent_level, &p) {
                    if tuples[it as usize * m + r] == j {
                        level.items.push(it);
                    }
                }
                Reach::Span(start, level.items.len() as u32 - start)
            }
        };
        arena.push(Node {
            parent: p.node,
            token: c.token,
            logp: c.logp,
            js: p.js,
            step: k as u32,
            cat: p.out,
        });
        Beam {
            user: p.user,
            score: c.score,
            node: arena.len() as u32 - 1,
            used: p.used | 1 << r,
            reach,
            parent: c.parent,
            out: NO_LOC,
            js: f32::NAN,
        }
    }

    /// The path ending in `last`, in generation order.
    fn path(
        &self,
        arena: &[Node],
        last: Node,
        cats: &[Vec<Vec<f32>>],
        n_cat: usize,
        explain: bool,
    ) -> Vec<PathStep> {
        let mut nodes = vec![last];
        let mut p = last.parent;
        while p != NONE {
            let n = arena[p as usize];
            nodes.push(n);
            p = n.parent;
        }
        nodes.reverse();
        nodes
            .iter()
            .map(|n| {
                let categories = if explain {
                    let buf = &cats[n.step as usize][n.cat.chunk as usize];
                    let row = &buf[n.cat.row as usize * n_cat..(n.cat.row as usize + 1) * n_cat];
                    top_categories(row, self.cfg.explain_categories)
                } else {
                    Vec::new()
                };
                PathStep {
                    token: Token::new(
                        (n.token as usize / self.d) as u16,
                        (n.token as usize % self.d) as u16,
                    ),
                    logp: n.logp,
                    categories,
                    js: if n.step == 0 { None } else { Some(n.js) },
                }
            })
            .collect()
    }
}

/// JS divergence between beam `i`'s category distribution at this step and its parent's at the previous step
/// (`prev_cats`: the previous step's category buffers, by chunk).
fn js_of(level: &Level, prev: &Level, prev_cats: &[Vec<f32>], i: usize) -> f32 {
    let n_cat = level.n_cat;
    let b = &level.beams[i];
    let cur = &level.chunks[b.out.chunk as usize].category;
    let cur = &cur[b.out.row as usize * n_cat..(b.out.row as usize + 1) * n_cat];
    let p = &prev.beams[b.parent as usize];
    let pc = &prev_cats[p.out.chunk as usize];
    let pc = &pc[p.out.row as usize * n_cat..(p.out.row as usize + 1) * n_cat];
    corp::js_divergence(cur, pc)
}

/// Takes the `count` best not-yet-taken candidates of user `u` from `level`'s pool, best first. With
/// `level.merge`, a candidate whose token set was already taken (in another order) is skipped. With the dense
/// lookahead (`level.claimed`), a candidate whose best item a taken candidate already leads to waits until the
/// pool has no other candidate left.
fn take_best(level: &mut Level, u: usize, count: usize) -> Vec<Cand> {
    let mut out = Vec::with_capacity(count);
    let mut waiting = Vec::new();
    let k = level.depth;
    let mut key = Vec::with_capacity(k + 1);
    let diverse = !level.claimed.is_empty();
    let mut round = 0u32;
    while out.len() < count {
        let (_, end, next) = level.ranges[u];
        let slice = &mut level.pool[next as usize..end as usize];
        // Skipped (merged) and waiting candidates do not fill the list: each round selects twice as many as
        // the round before, so a user whose best candidates are mostly skipped costs a few passes over its
        // pool rather than one pass per skipped candidate.
        let want = ((count - out.len()) << round.min(20)).min(slice.len());
        if want == 0 {
            break;
        }
        round += 1;
        select_sorted(slice, want);
        let mut j = next as usize;
        while j < next as usize + want && out.len() < count {
            let c = level.pool[j];
            j += 1;
            if diverse && c.best != NONE && level.claimed[u].contains(&c.best) {
                waiting.push(c);
                continue;
            }
            if take(level, u, &c, &mut key) {
                if diverse {
                    level.claimed[u].push(c.best);
                }
                out.push(c);
            }
        }
        // The selected candidates not looked at stay in the pool (still best first).
        level.ranges[u].2 = j as u32;
    }
    for c in waiting {
        if out.len() == count {
            break;
        }
        if take(level, u, &c, &mut key) {
            out.push(c);
        }
    }
    out
}

/// Records candidate `c` of user `u` as taken; `false` (not taken) when `level.merge` and its token set was
/// taken already in another order.
fn take(level: &mut Level, u: usize, c: &Cand, key: &mut Vec<u32>) -> bool {
    if !level.merge {
        return true;
    }
    let k = level.depth;
    key.clear();
    key.extend_from_slice(&level.tokens[c.parent as usize * k..(c.parent as usize + 1) * k]);
    key.push(c.token);
    key.sort_unstable();
    let taken = &mut level.taken[u];
    if taken.chunks_exact(k + 1).any(|t| t == key.as_slice()) {
        return false;
    }
    taken.extend_from_slice(key);
    true
}

/// Moves the `k` best of `slice` to its front, sorted best first.
fn select_sorted(slice: &mut [Cand], k: usize) {
    if k == 0 {
        return;
    }
    if k < slice.len() {
        slice.select_nth_unstable_by(k - 1, by_score);
    }
    slice[..k].sort_unstable_by(by_score);
}

/// The `k` most likely categories of a distribution, most likely first (ties: lower index first).
fn top_categories(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by);
    }
    idx[..k].sort_unstable_by(by);
    idx[..k].iter().map(|&c| (c, row[c as usize])).collect()
}
