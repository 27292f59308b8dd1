//! GRPO (group relative policy optimisation) for the generative recommender (spec section 4).
//!
//! For each training context, G paths are **rolled out** under exactly the constraints of inference: at every
//! step the candidates are the tokens of the codebooks the path has not used yet (all open codebooks compete,
//! as in CRSS) that keep the partial token set completable to an existing item
//! ([`ItemIndex::valid_next_tokens`]), scored by `softmax(logits / temperature)` restricted to them. With
//! `rollout = "sample"` (the default) each path draws its tokens from that distribution ([`sample_paths`]);
//! with `rollout = "beam"` the group is the G most likely distinct items of a constrained beam search of width
//! G ([`beam_paths`]). The log-probabilities, the allowed sets and the per-step category distributions are
//! recorded. With `guided = true` a group that does not reach its context's true target gets the target's own
//! path in place of its last one, its tokens in the order the policy prefers (the same constraints and
//! records), so every group holds one rewarded path; that path is a guide, not a sample of the policy.
//!
//! Each path's reward (the four PARS rewards, with the MSRA window, [`crate::msra`]) is normalised within its
//! group to an advantage `A = (r - mean) / (std + eps)`. The loss per sampled token is the clipped surrogate
//! `-min(rho A, clip(rho, 1 - eps, 1 + eps) A)` with `rho = exp(logp_theta - logp_old)`, plus `beta` times the
//! k3 estimate of KL(pi_theta || pi_ref), `exp(logp_ref - logp_theta) - (logp_ref - logp_theta) - 1`, against
//! the frozen pre-trained model, averaged over tokens; plus optionally `aux_weight` times the CRSS pre-training
//! loss of the contexts' true targets. Policy passes run without dropout so that rho is exactly 1 on the
//! first of `ppo_epochs` updates.
//!
//! With `AlignConfig::item_head` (models with an item head) the completed item is one more step of the policy:
//! its log-probability under the item head (log-softmax over every item, divided by the temperature) joins the
//! path's token log-probabilities in the surrogate and the KL. The search ranks the list by the item head, so
//! this is the term through which alignment reaches the ranking; the rollouts still come from the token
//! decoder, so for the item head they are samples of another policy, weighted by their group advantage.

use crate::config::{AlignConfig, Rollout};
use crate::error::{AlignError, Result};
use crate::msra::{window_rewards, WindowItem};
use crate::rewards::{group_shares, long_tail_of, RewardBreakdown, RewardRule, ScoredPath};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reg4rec_model::config::Mode;
use reg4rec_model::crss::{sequence_loss, target_contexts};
use reg4rec_model::decoding::decoder_input;
use reg4rec_model::{check_codes, Encoded, Objective, Reg4RecModel, SeqBatch, Vocab};
use reg4rec_tokenizer::{Codes, ItemIndex, Token};
use reg4rec_train::AdamW;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// G sampled paths for each of a batch of contexts; path `c * G + g` belongs to context `c`.
#[derive(Debug)]
pub struct SampledPaths {
    pub n_contexts: usize,
    pub group_size: usize,
    /// `[N, M]` i64 vocabulary ids in generation order (N = contexts * G).
    pub tokens: Tensor,
    /// The same tokens as semantic tokens, per path.
    pub paths: Vec<Vec<Token>>,
    /// `[N, M, vocab]` bool: the tokens that were allowed at each step (mask + valid-item constraint).
    pub allowed: Tensor,
    /// `[N, M]` f32: log-probability of each sampled token under the sampling policy.
    pub logp: Tensor,
    /// Per path, per step: the category distribution the model predicted at that step.
    pub categories: Vec<Vec<Vec<f32>>>,
    /// The item each path completes.
    pub items: Vec<u32>,
}

/// The tokens allowed after `partial` (vocabulary ids: `Vocab::id`): unused codebooks that
/// keep the set completable to an item; in TIGER mode (ordered codes) only the next codebook.
pub fn allowed_next(index: &ItemIndex, partial: &[Token], ordered: bool) -> Vec<Token> {
    let next = partial.len() as u16;
    index
        .valid_next_tokens(partial)
        .into_iter()
        .filter(|t| !ordered || t.codebook == next)
        .collect()
}

/// One decoder step of the policy for partial paths (`paths[i]` after context row `i` of `context`, all of the
/// same length k): the allowed next tokens `[N * vocab]` (open codebooks that keep the set completable to an
/// item), their log-probabilities `[N * vocab]` under `softmax(logits / temperature)` restricted to them, and
/// the category distribution `[N * n_categories]` predicted at this step.
struct StepScores {
    allowed: Vec<bool>,
    logp: Vec<f32>,
    categories: Vec<f32>,
    n_categories: usize,
}

fn next_token_scores(
    model: &Reg4RecModel,
    index: &ItemIndex,
    context: &Tensor,
    paths: &[&[Token]],
    temperature: f64,
) -> Result<StepScores> {
    let vocab = model.vocab();
    let (d, v) = (vocab.d, vocab.size());
    let ordered = model.config().mode == Mode::Tiger;
    let n = paths.len();
    let device = model.device();
    let flat: Vec<usize> = paths
        .iter()
        .flat_map(|p| p.iter())
        .map(|t| t.id(d))
        .collect();
    let dec = decoder_input(&vocab, &flat, n, device);
    let mut allowed = vec![false; n * v];
    for (i, p) in paths.iter().enumerate() {
        let next = allowed_next(index, p, ordered);
        if next.is_empty() {
            return Err(AlignError::Input(format!(
                "path {p:?} cannot be completed to an item (the item index and the paths disagree)"
            )));
        }
        for t in next {
            allowed[i * v + vocab.id(t) as usize] = true;
        }
    }
    let allowed_t = Tensor::from_slice(&allowed)
        .view([n as i64, v as i64])
        .to_device(device);
    let (logp, cat) = tch::no_grad(|| {
        let out = model.decode_last(context, &dec, false);
        let logits = out.token_logits.select(1, 0).to_kind(Kind::Float) / temperature;
        let logp = logits
            .masked_fill(&allowed_t.logical_not(), f64::NEG_INFINITY)
            .log_softmax(-1, Kind::Float);
        let cat = out
            .category_logits
            .select(1, 0)
            .to_kind(Kind::Float)
            .softmax(-1, Kind::Float);
        (logp, cat)
    });
    let cpu = |t: Tensor| -> Result<Vec<f32>> {
        Ok(Vec::try_from(
            t.to_device(tch::Device::Cpu).contiguous().view([-1]),
        )?)
    };
    Ok(StepScores {
        allowed,
        logp: cpu(logp)?,
        categories: cpu(cat)?,
        n_categories: model.n_categories(),
    })
}

/// A path being built: its tokens in generation order and, per step, the token's log-probability, the
/// allowed set and the category distribution.
#[derive(Clone, Default)]
struct PartialPath {
    tokens: Vec<Token>,
    score: f64,
    logp: Vec<f32>,
    allowed: Vec<Vec<bool>>,
    categories: Vec<Vec<f32>>,
}

impl PartialPath {
    /// This path extended by vocabulary id `t` of row `i` of a step's scores.
    fn extend(&self, s: &StepScores, i: usize, t: usize, vocab: &Vocab) -> Result<PartialPath> {
        let (v, n_cat) = (vocab.size(), s.n_categories);
        let token = vocab
            .token_at(t as i64)
            .ok_or_else(|| AlignError::Input(format!("token {t} is not a codebook token")))?;
        let lp = s.logp[i * v + t];
        let mut p = self.clone();
        p.tokens.push(token);
        p.score += f64::from(lp);
        p.logp.push(lp);
        p.allowed.push(s.allowed[i * v..(i + 1) * v].to_vec());
        p.categories
            .push(s.categories[i * n_cat..(i + 1) * n_cat].to_vec());
        Ok(p)
    }
}

/// Complete paths (`group_size` per context, context-major) as [`SampledPaths`].
fn finish_paths(
    model: &Reg4RecModel,
    index: &ItemIndex,
    n_contexts: usize,
    group_size: usize,
    done: Vec<PartialPath>,
) -> Result<SampledPaths> {
    let vocab = model.vocab();
    let (m, d, v) = (vocab.m, vocab.d, vocab.size());
    let n = done.len();
    let device = model.device();
    let items = done
        .iter()
        .map(|p| {
            index.item_of_tokens(&p.tokens).ok_or_else(|| {
                AlignError::Input(format!(
                    "path {:?} is not an item (the item index and the paths disagree)",
                    p.tokens
                ))
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    let flat: Vec<usize> = done
        .iter()
        .flat_map(|p| p.tokens.iter())
        .map(|t| t.id(d))
        .collect();
    let allowed: Vec<bool> = done.iter().flat_map(|p| p.allowed.concat()).collect();
    let logp: Vec<f32> = done.iter().flat_map(|p| p.logp.iter().copied()).collect();
    let mut paths = Vec::with_capacity(n);
    let mut categories = Vec::with_capacity(n);
    for p in done {
        paths.push(p.tokens);
        categories.push(p.categories);
    }
    Ok(SampledPaths {
        n_contexts,
        group_size,
        tokens: decoder_input(&vocab, &flat, n, device),
        paths,
        allowed: Tensor::from_slice(&allowed)
            .view([n as i64, m as i64, v as i64])
            .to_device(device),
        logp: Tensor::from_slice(&logp)
            .view([n as i64, m as i64])
            .to_device(device),
        categories,
        items,
    })
}

/// Samples `group_size` paths per row of `context` (`[B, d]`, one row per context) with the model in inference
/// mode.
pub fn sample_paths(
    model: &Reg4RecModel,
    index: &ItemIndex,
    context: &Tensor,
    group_size: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
) -> Result<SampledPaths> {
    let b = context.size()[0] as usize;
    let done = sampled(model, index, context, group_size, temperature, rng)?;
    finish_paths(model, index, b, group_size, done)
}

/// The complete paths of [`sample_paths`], context-major.
fn sampled(
    model: &Reg4RecModel,
    index: &ItemIndex,
    context: &Tensor,
    group_size: usize,
    temperature: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<PartialPath>> {
    check_codes(&model.vocab(), index.codes())?;
    let vocab = model.vocab();
    let v = vocab.size();
    let b = context.size()[0] as usize;
    let n = b * group_size;
    let rows: Vec<i64> = (0..n).map(|i| (i / group_size) as i64).collect();
    let ctx_rep = context.index_select(0, &Tensor::from_slice(&rows).to_device(model.device()));
    let mut paths = vec![PartialPath::default(); n];
    for _ in 0..vocab.m {
        let partial: Vec<&[Token]> = paths.iter().map(|p| p.tokens.as_slice()).collect();
        let s = next_token_scores(model, index, &ctx_rep, &partial, temperature)?;
        for (i, path) in paths.iter_mut().enumerate() {
            let u: f64 = rng.gen();
            let mut acc = 0.0f64;
            let mut pick = None;
            for t in 0..v {
                if !s.allowed[i * v + t] {
                    continue;
                }
                pick = Some(t);
                acc += f64::from(s.logp[i * v + t]).exp();
                if acc > u {
                    break;
                }
            }
            // `pick` is the last allowed token when rounding leaves the cumulative sum below u.
            let t = pick.ok_or_else(|| AlignError::Input("no allowed token to sample".into()))?;
            *path = path.extend(&s, i, t, &vocab)?;
        }
    }
    Ok(paths)
}

/// The `group_size` most likely distinct items per row of `context` (`[B, d]`) under the token policy
/// (`softmax(logits / temperature)`, the constraints of [`sample_paths`]), from a constrained beam search in
/// inference mode: at each step every kept path is extended by each allowed token and the best extensions of
/// each context are kept (`M * group_size` partial sets, then `group_size` items), a token set reached in
/// several orders only once (its best order). Paths are ordered best first within each context. A context
/// whose search ends with fewer than `group_size` items (a tiny catalog) repeats them in order to fill the
/// group (duplicates share their reward, so they change no advantage's sign).
pub fn beam_paths(
    model: &Reg4RecModel,
    index: &ItemIndex,
    context: &Tensor,
    group_size: usize,
    temperature: f64,
) -> Result<SampledPaths> {
    let b = context.size()[0] as usize;
    let done = beamed(model, index, context, group_size, temperature)?;
    finish_paths(model, index, b, group_size, done)
}

/// The complete paths of [`beam_paths`], context-major.
fn beamed(
    model: &Reg4RecModel,
    index: &ItemIndex,
    context: &Tensor,
    group_size: usize,
    temperature: f64,
) -> Result<Vec<PartialPath>> {
    check_codes(&model.vocab(), index.codes())?;
    let vocab = model.vocab();
    let (d, v) = (vocab.d, vocab.size());
    let b = context.size()[0] as usize;
    let device = model.device();
    // Kept paths, grouped by context: (context row, path).
    let mut beams: Vec<(usize, PartialPath)> =
        (0..b).map(|c| (c, PartialPath::default())).collect();
    for k in 0..vocab.m {
        // Partial sets of one item reach the same completion (with M = 4 an item has 4 three-token subsets),
        // so the partial steps keep M times the group to end with `group_size` distinct items.
        let width = if k + 1 == vocab.m {
            group_size
        } else {
            group_size * vocab.m
        };
        let rows: Vec<i64> = beams.iter().map(|(c, _)| *c as i64).collect();
        let ctx = context.index_select(0, &Tensor::from_slice(&rows).to_device(device));
        let partial: Vec<&[Token]> = beams.iter().map(|(_, p)| p.tokens.as_slice()).collect();
        let s = next_token_scores(model, index, &ctx, &partial, temperature)?;
        let mut next = Vec::with_capacity(b * group_size);
        let mut i = 0;
        while i < beams.len() {
            let c = beams[i].0;
            // (score, row, token) of every allowed extension of this context's paths.
            let mut cands: Vec<(f64, usize, usize)> = Vec::new();
            while i < beams.len() && beams[i].0 == c {
                let p = &beams[i].1;
                for t in (0..v).filter(|&t| s.allowed[i * v + t]) {
                    cands.push((p.score + f64::from(s.logp[i * v + t]), i, t));
                }
                i += 1;
            }
            // Best first; ties by row then token, so the search is deterministic.
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut sets = std::collections::HashSet::new();
            for &(_, row, t) in &cands {
                if sets.len() == width {
                    break;
                }
                let p = &beams[row].1;
                let mut key: Vec<usize> = p.tokens.iter().map(|x| x.id(d)).collect();
                key.push(vocab.token_at(t as i64).map_or(usize::MAX, |x| x.id(d)));
                key.sort_unstable();
                if sets.insert(key) {
                    next.push((c, p.extend(&s, row, t, &vocab)?));
                }
            }
        }
        beams = next;
    }
    let mut done = Vec::with_capacity(b * group_size);
    let mut i = 0;
    while i < beams.len() {
        let c = beams[i].0;
        let start = i;
        while i < beams.len() && beams[i].0 == c {
            i += 1;
        }
        for j in 0..group_size {
            done.push(beams[start + j % (i - start)].1.clone());
        }
    }
    Ok(done)
}

/// Guided groups ([`AlignConfig::guided`]): in each group of `done` (context-major, `group_size` per context)
/// that does not reach its context's true target `targets[c]`, the last path is replaced by the target's own
/// path, its tokens in the policy's order (at each step the target's unused token with the highest
/// probability under the same constraints and temperature), with the log-probabilities, allowed sets and
/// category distributions a rollout records. Returns how many groups were guided.
fn guide_groups(
    model: &Reg4RecModel,
    index: &ItemIndex,
    context: &Tensor,
    targets: &[u32],
    group_size: usize,
    temperature: f64,
    done: &mut [PartialPath],
) -> Result<usize> {
    let vocab = model.vocab();
    let missing: Vec<usize> = (0..targets.len())
        .filter(|&c| {
            !done[c * group_size..(c + 1) * group_size]
                .iter()
                .any(|p| index.item_of_tokens(&p.tokens) == Some(targets[c]))
        })
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let rows: Vec<i64> = missing.iter().map(|&c| c as i64).collect();
    let ctx = context.index_select(0, &Tensor::from_slice(&rows).to_device(model.device()));
    let wanted: Vec<Vec<Token>> = missing
        .iter()
        .map(|&c| index.codes().tokens(targets[c] as usize))
        .collect();
    let mut paths = vec![PartialPath::default(); missing.len()];
    for _ in 0..vocab.m {
        let partial: Vec<&[Token]> = paths.iter().map(|p| p.tokens.as_slice()).collect();
        let s = next_token_scores(model, index, &ctx, &partial, temperature)?;
        for (i, path) in paths.iter_mut().enumerate() {
            let best = wanted[i]
                .iter()
                .filter(|t| !path.tokens.contains(t))
                .map(|t| vocab.id(*t) as usize)
                .filter(|&t| s.allowed[i * vocab.size() + t])
                .max_by(|&a, &b| {
                    let v = vocab.size();
                    s.logp[i * v + a].total_cmp(&s.logp[i * v + b]).then(b.cmp(&a))
                })
                .ok_or_else(|| {
                    AlignError::Input(format!(
                        "target item {} cannot be completed from {:?} (the item index and the codes disagree)",
                        targets[missing[i]], path.tokens
                    ))
                })?;
            *path = path.extend(&s, i, best, &vocab)?;
        }
    }
    for (c, path) in missing.iter().zip(paths) {
        done[c * group_size + group_size - 1] = path;
    }
    Ok(missing.len())
}

/// Log-probabilities `[N, M]` of `tokens` `[N, M]` under `model` with the recorded `allowed` sets
/// `[N, M, vocab]` and `temperature`, in one teacher-forced decoder pass after `context` (`[N, d]`).
/// Differentiable.
pub fn path_log_probs(
    model: &Reg4RecModel,
    context: &Tensor,
    tokens: &Tensor,
    allowed: &Tensor,
    temperature: f64,
) -> Tensor {
    let m = tokens.size()[1];
    let out = model.decode(context, &tokens.narrow(1, 0, m - 1), false);
    let logits = out.token_logits.to_kind(Kind::Float) / temperature; // [N, M, vocab]
    logits
        .masked_fill(&allowed.logical_not(), f64::NEG_INFINITY)
        .log_softmax(-1, Kind::Float)
        .gather(2, &tokens.unsqueeze(-1), false)
        .squeeze_dim(-1)
}

/// The item head's log-probability `[N]` of `items` `[N]` i64 after context row `rows[i]` of `context`
/// `[C, d]`: the log-softmax over every item of `table` (the [`reg4rec_model::Encoded::items`] of the same
/// weights) of the logits divided by `temperature`, with the model's repeat bias at the `seen` (context row,
/// item) pairs ([`SeqBatch::seen`]). Differentiable.
pub fn item_log_probs(
    model: &Reg4RecModel,
    context: &Tensor,
    table: &Tensor,
    seen: &(Tensor, Tensor),
    rows: &Tensor,
    items: &Tensor,
    temperature: f64,
) -> Tensor {
    (model
        .item_logits(context, table, seen, false)
        .index_select(0, rows)
        .to_kind(Kind::Float)
        / temperature)
        .log_softmax(-1, Kind::Float)
        .gather(1, &items.unsqueeze(-1), false)
        .squeeze_dim(-1)
}

/// Group-normalised advantages: within each consecutive group of `group_size` rewards,
/// `(r - mean) / (std + eps)` (population std). A group whose rewards are all equal gets zeros.
pub fn group_advantages(rewards: &[f64], group_size: usize, eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size.max(1)) {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let var = g.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / g.len() as f64;
        let std = var.sqrt();
        out.extend(g.iter().map(|r| {
            if std > 0.0 {
                (r - mean) / (std + eps)
            } else {
                0.0
            }
        }));
    }
    out
}

/// The clipped-ratio policy loss and the k3 KL estimate, both averaged over tokens.
/// `new_logp`, `old_logp`, `ref_logp`: `[N, M]`; `advantages`: `[N]`. Returns `(policy_loss, kl, clip_fraction)`.
pub fn clipped_objective(
    new_logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: &Tensor,
    advantages: &Tensor,
    epsilon: f64,
) -> (Tensor, Tensor, Tensor) {
    let a = advantages.unsqueeze(1); // [N, 1]
    let ratio = (new_logp - old_logp).exp();
    let unclipped = &ratio * &a;
    let clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * &a;
    let policy = -unclipped.minimum(&clipped).mean(Kind::Float);
    let diff = ref_logp - new_logp;
    let kl = (diff.exp() - &diff - 1.0).mean(Kind::Float);
    let clip_frac = (&ratio - 1.0)
        .abs()
        .gt(epsilon)
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    (policy, kl, clip_frac)
}

/// What one GRPO step did (means over the batch's paths unless said otherwise).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepStats {
    /// Loss of the last of the `ppo_epochs` updates.
    pub loss: f64,
    pub policy_loss: f64,
    /// k3 KL estimate to the reference (per token), before the update.
    pub kl: f64,
    pub aux_loss: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    /// Mean weighted reward (what advantages are computed from).
    pub reward: f64,
    /// Mean of each component with the MSRA window (weighted by the decay).
    pub components: RewardBreakdown,
    /// Mean of each component against the target alone.
    pub target: RewardBreakdown,
    /// Mean over groups of the within-group reward standard deviation.
    pub reward_std: f64,
    /// Fraction of groups whose rewards were all equal (no learning signal).
    pub flat_groups: f64,
    /// Fraction of groups whose last path was replaced by the target's ([`AlignConfig::guided`]).
    pub guided_groups: f64,
}

/// Everything a GRPO step reads besides the policy.
pub struct GrpoContext<'a> {
    pub reference: &'a Reg4RecModel,
    pub index: &'a ItemIndex,
    pub codes: &'a Codes,
    pub item_category: &'a [u32],
    /// Every item's long-tail flag ([`reg4rec_data::metrics::long_tail`] of the training sequences at
    /// `rewards.head_share`), read by the long-tail reward.
    pub long_tail: &'a [bool],
    pub cfg: &'a AlignConfig,
    /// Loss weights of the auxiliary CRSS loss (the pre-training run's).
    pub weights: Objective,
}

/// A batch of contexts with its sampled paths, their advantages and the reference's log-probabilities: what
/// every update of a GRPO step reads ([`sample_step`], then [`grpo_loss`] once per update).
pub struct SampledStep {
    batch: SeqBatch,
    sampled: SampledPaths,
    adv: Tensor,
    /// `[N, M]` (or `[N, M + 1]` with the item head as the last step, `AlignConfig::item_head`): each step's
    /// log-probability under the sampling policy.
    old_logp: Tensor,
    ref_logp: Tensor,
    /// `[N]` i64 completed items when the item head is a step of the policy.
    items: Option<Tensor>,
    /// Context row of each path.
    rows: Tensor,
    /// The sampling's statistics (rewards); the losses are filled in by [`grpo_loss`].
    pub stats: StepStats,
}

impl SampledStep {
    /// Sampled paths (`contexts * group_size`).
    pub fn n_paths(&self) -> usize {
        self.sampled.paths.len()
    }
}

/// The first half of a GRPO step on a batch of contexts: sample `group_size` paths per context, reward them
/// (with the MSRA windows), normalise the rewards within each group to advantages, and score the paths under the
/// frozen reference. `batch` holds the contexts' histories and true targets, one per row
/// ([`reg4rec_model::SeqBatchBuilder::last`], CPU or device); `windows[c]` is context c's MSRA window.
pub fn sample_step(
    ctx: &GrpoContext<'_>,
    policy: &Reg4RecModel,
    batch: &SeqBatch,
    windows: &[Vec<WindowItem>],
    rng: &mut ChaCha8Rng,
) -> Result<SampledStep> {
    let cfg = ctx.cfg;
    let device = policy.device();
    let g = cfg.group_size;
    let n_contexts = batch.n_targets;
    if windows.len() != n_contexts || batch.rows != n_contexts {
        return Err(AlignError::Input(format!(
            "{} MSRA windows for {} contexts in {} rows",
            windows.len(),
            n_contexts,
            batch.rows
        )));
    }
    let batch = batch.to_device(device);
    let (context, enc) = tch::no_grad(|| target_contexts(policy, &batch, false));
    let mut done = match cfg.rollout {
        Rollout::Sample => sampled(policy, ctx.index, &context, g, cfg.temperature, rng)?,
        Rollout::Beam => beamed(policy, ctx.index, &context, g, cfg.temperature)?,
    };
    let mut stats = StepStats::default();
    if cfg.guided {
        let targets: Vec<u32> = windows
            .iter()
            .map(|w| {
                w.first()
                    .map(|x| x.item)
                    .ok_or_else(|| AlignError::Input("an MSRA window without its target".into()))
            })
            .collect::<Result<_>>()?;
        let guided = guide_groups(
            policy,
            ctx.index,
            &context,
            &targets,
            g,
            cfg.temperature,
            &mut done,
        )?;
        stats.guided_groups = guided as f64 / n_contexts as f64;
    }
    let sampled = finish_paths(policy, ctx.index, n_contexts, g, done)?;
    let n = sampled.paths.len();
    let rows: Vec<i64> = (0..n).map(|i| (i / g) as i64).collect();
    let rows = Tensor::from_slice(&rows).to_device(device);
    if cfg.item_head && !policy.config().item_head {
        return Err(AlignError::config(
            "item_head",
            "needs a model with an item head (`model.item_head = true`); this one was trained without",
        ));
    }
    let items = cfg.item_head.then(|| {
        let ids: Vec<i64> = sampled.items.iter().map(|&i| i64::from(i)).collect();
        Tensor::from_slice(&ids).to_device(device)
    });
    let old_logp = match &items {
        Some(items) => tch::no_grad(|| {
            let lp = item_log_probs(
                policy,
                &context,
                &enc.items,
                &batch.seen,
                &rows,
                items,
                cfg.temperature,
            );
            Tensor::cat(&[sampled.logp.shallow_clone(), lp.unsqueeze(1)], 1)
        }),
        None => sampled.logp.shallow_clone(),
    };

    // The frozen reference, encoded once: the KL's log-probabilities and the teacher's shares read it.
    let reference = tch::no_grad(|| target_contexts(ctx.reference, &batch, false));
    let teacher = match cfg.rewards.item_head > 0.0 {
        true => Some(teacher_shares(
            ctx.reference,
            &reference,
            &batch,
            &rows,
            &sampled.items,
            g,
        )?),
        false => None,
    };
    let rule = RewardRule {
        consistency: cfg.consistency,
        theta: cfg.consistency_theta,
    };
    let mut rewards = Vec::with_capacity(n);
    for (i, path) in sampled.paths.iter().enumerate() {
        let cats: Vec<&[f32]> = sampled.categories[i].iter().map(Vec::as_slice).collect();
        let scored = ScoredPath {
            tokens: path,
            categories: &cats,
        };
        let mut r = window_rewards(&scored, &windows[i / g], ctx.codes, ctx.item_category, rule);
        let tail = long_tail_of(sampled.items[i], ctx.long_tail);
        r.total.add_scaled(&tail, 1.0);
        r.target.add_scaled(&tail, 1.0);
        if let Some(t) = &teacher {
            r.total.add_scaled(&t[i], 1.0);
            r.target.add_scaled(&t[i], 1.0);
        }
        rewards.push(r.total.total(&cfg.rewards));
        stats.components.add_scaled(&r.total, 1.0 / n as f64);
        stats.target.add_scaled(&r.target, 1.0 / n as f64);
    }
    stats.reward = rewards.iter().sum::<f64>() / n as f64;
    let mut flat = 0usize;
    for grp in rewards.chunks(g) {
        let mean = grp.iter().sum::<f64>() / g as f64;
        let std = (grp.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / g as f64).sqrt();
        stats.reward_std += std / n_contexts as f64;
        flat += usize::from(std == 0.0);
    }
    stats.flat_groups = flat as f64 / n_contexts as f64;
    let adv: Vec<f32> = group_advantages(&rewards, g, cfg.adv_eps)
        .iter()
        .map(|&a| a as f32)
        .collect();
    let adv = Tensor::from_slice(&adv).to_device(device);

    let ref_logp = tch::no_grad(|| {
        log_probs_after(
            ctx.reference,
            &reference,
            &batch,
            &rows,
            &sampled,
            items.as_ref(),
            cfg.temperature,
        )
    });
    Ok(SampledStep {
        batch,
        sampled,
        adv,
        old_logp,
        ref_logp,
        items,
        rows,
        stats,
    })
}

/// The teacher reward of every path ([`crate::config::RewardWeights::item_head`]): the share of its group
/// (consecutive `group_size` paths; path `i` after context row `rows[i]`) of its item under `reference`'s item
/// head, from the reference's encoding of `batch` ([`target_contexts`]).
fn teacher_shares(
    reference: &Reg4RecModel,
    (all, enc): &(Tensor, Encoded),
    batch: &SeqBatch,
    rows: &Tensor,
    items: &[u32],
    group_size: usize,
) -> Result<Vec<RewardBreakdown>> {
    if !reference.config().item_head {
        return Err(AlignError::config(
            "rewards.item_head",
            "needs a model with an item head (`model.item_head = true`); this one was trained without",
        ));
    }
    let ids: Vec<i64> = items.iter().map(|&i| i64::from(i)).collect();
    let ids = Tensor::from_slice(&ids).to_device(reference.device());
    let lp =
        tch::no_grad(|| item_log_probs(reference, all, &enc.items, &batch.seen, rows, &ids, 1.0));
    let lp = Vec::<f32>::try_from(lp.to_device(tch::Device::Cpu).contiguous())?;
    Ok(group_shares(&lp, group_size))
}

/// Each step's log-probability `[N, M]` of the sampled paths under `model` (path `i` after context row
/// `rows[i]` of `batch`), with the item head's log-probability of each completed item as one more column when
/// `items` is given. Differentiable.
fn policy_log_probs(
    model: &Reg4RecModel,
    batch: &SeqBatch,
    rows: &Tensor,
    sampled: &SampledPaths,
    items: Option<&Tensor>,
    temperature: f64,
) -> Tensor {
    let encoded = target_contexts(model, batch, false);
    log_probs_after(model, &encoded, batch, rows, sampled, items, temperature)
}

/// [`policy_log_probs`] from `model`'s encoding of `batch` ([`target_contexts`]: one context row per target,
/// and the encoding).
fn log_probs_after(
    model: &Reg4RecModel,
    (all, enc): &(Tensor, Encoded),
    batch: &SeqBatch,
    rows: &Tensor,
    sampled: &SampledPaths,
    items: Option<&Tensor>,
    temperature: f64,
) -> Tensor {
    let context = all.index_select(0, rows);
    let steps = path_log_probs(
        model,
        &context,
        &sampled.tokens,
        &sampled.allowed,
        temperature,
    );
    match items {
        Some(items) => {
            let item = item_log_probs(
                model,
                all,
                &enc.items,
                &batch.seen,
                rows,
                items,
                temperature,
            );
            Tensor::cat(&[steps, item.unsqueeze(1)], 1)
        }
        None => steps,
    }
}

/// The GRPO loss of one update on a sampled step (the clipped surrogate, `beta` x KL to the reference, the
/// optional auxiliary CRSS loss), with gradient; records its values in `step.stats` (`update` 0 records the
/// KL before any update).
pub fn grpo_loss(
    ctx: &GrpoContext<'_>,
    policy: &Reg4RecModel,
    step: &mut SampledStep,
    update: usize,
) -> Tensor {
    let cfg = ctx.cfg;
    let new_logp = policy_log_probs(
        policy,
        &step.batch,
        &step.rows,
        &step.sampled,
        step.items.as_ref(),
        cfg.temperature,
    );
    let (pl, kl, clip) = clipped_objective(
        &new_logp,
        &step.old_logp,
        &step.ref_logp,
        &step.adv,
        cfg.epsilon,
    );
    let aux =
        (cfg.aux_weight > 0.0).then(|| sequence_loss(policy, &step.batch, ctx.weights, true).total);
    let loss = match &aux {
        Some(a) => {
            step.stats.aux_loss = a.double_value(&[]);
            &pl + &kl * cfg.beta + a * cfg.aux_weight
        }
        None => &pl + &kl * cfg.beta,
    };
    step.stats.loss = loss.double_value(&[]);
    step.stats.policy_loss = pl.double_value(&[]);
    step.stats.clip_fraction = clip.double_value(&[]);
    if update == 0 {
        step.stats.kl = kl.double_value(&[]);
    }
    loss
}

/// One whole GRPO step in a single process, outside the training engine (tests, experiments): [`sample_step`],
/// then `ppo_epochs` updates of `policy` through `opt` at learning rate `lr` (clipped to `grad_clip`).
/// Alignment runs ([`crate::align`]) take the same steps through `reg4rec_train::fit`.
pub fn grpo_step(
    ctx: &GrpoContext<'_>,
    policy: &Reg4RecModel,
    opt: &mut AdamW,
    batch: &SeqBatch,
    windows: &[Vec<WindowItem>],
    lr: f64,
    rng: &mut ChaCha8Rng,
) -> Result<StepStats> {
    let mut step = sample_step(ctx, policy, batch, windows, rng)?;
    for update in 0..ctx.cfg.ppo_epochs {
        let loss = grpo_loss(ctx, policy, &mut step, update);
        opt.zero_grad();
        loss.backward();
        step.stats.grad_norm = opt.clip_grad_norm(ctx.cfg.grad_clip);
        opt.step(lr);
        if !step.stats.loss.is_finite() {
            return Err(AlignError::Diverged {
                step: opt.t,
                message: format!("non-finite GRPO loss {}", step.stats.loss),
            });
        }
    }
    Ok(step.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_are_normalised_per_group() {
        let a = group_advantages(&[1.0, 3.0, 2.0, 2.0, 0.0, 0.0, 0.0, 4.0], 4, 0.0);
        let g1 = &a[..4];
        assert!((g1.iter().sum::<f64>()).abs() < 1e-12);
        let std = (0.5f64).sqrt();
        assert!((g1[1] - 1.0 / std).abs() < 1e-9, "{a:?}");
        assert_eq!(
            group_advantages(&[2.0, 2.0, 2.0], 3, 1e-4),
            vec![0.0; 3],
            "equal rewards: no signal"
        );
        let g2 = &a[4..];
        assert!(g2[3] > 0.0 && g2[0] < 0.0);
    }

    #[test]
    fn clipped_objective_clips_and_k3_is_zero_at_the_reference() {
        let old = Tensor::from_slice(&[0.0f32, 0.0])
            .view([1, 2])
            .log_softmax(-1, Kind::Float);
        let adv = Tensor::from_slice(&[1.0f32]);
        // ratio 1 everywhere: policy loss = -A, KL = 0, nothing clipped
        let (pl, kl, clip) = clipped_objective(&old, &old, &old, &adv, 0.2);
        assert!((pl.double_value(&[]) + 1.0).abs() < 1e-6);
        assert!(kl.double_value(&[]).abs() < 1e-7);
        assert_eq!(clip.double_value(&[]), 0.0);
        // ratio e^1 with A > 0 is clipped at 1.2
        let new = &old + 1.0;
        let (pl, kl, clip) = clipped_objective(&new, &old, &old, &adv, 0.2);
        assert!((pl.double_value(&[]) + 1.2).abs() < 1e-5);
        assert_eq!(clip.double_value(&[]), 1.0);
        // k3 with diff = -1: e^-1 + 1 - 1
        assert!((kl.double_value(&[]) - (-1f64).exp()).abs() < 1e-6);
    }
}
