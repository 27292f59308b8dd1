//! CRSS, confidence-based reasoning step selection, as a training objective (spec section 3), on the contexts
//! of the per-user layout.
//!
//! The target item's M tokens form a SET. At decoder step k the model has emitted k tokens from k distinct
//! codebooks; the step's token loss is `-log sum_{t in remaining targets} p(t)` with `p` the softmax of the
//! masked logits (used codebooks and the special tokens forbidden, [`crate::decoding::codebook_mask`]), and the
//! token fed to step k + 1 is the remaining target token the model currently rates highest (a choice without
//! gradient). The category head is trained with cross-entropy to the target item's category at each of the M
//! steps. With the item head on, the context's full-softmax cross-entropy over every item is added
//! (`lambda_item`).
//!
//! Implementation: the order is chosen first by M - 1 cheap incremental decoder calls under `no_grad` with
//! dropout off, then one teacher-forced decoder pass with gradient on `[context, fed_0 .. fed_{M-2}]` scores
//! every step at once (the causal decoder sees exactly the prefix it would see step by step).
//!
//! With [`StepTarget::Chosen`] a step's target is the single token fed next (the remaining target the model
//! rates highest): cross-entropy on the model's own order, which concentrates a path's probability on one
//! order instead of spreading it over the remaining tokens.
//!
//! TIGER mode ([`Mode::Tiger`]): the order is the fixed codebook order 0..M and each step's target set is the
//! single next token (plain teacher forcing with cross-entropy); the category loss gets weight 0.
//!
//! The model's [`PathScore`] sets how a step's tokens are normalised (one softmax over the open codebooks, or
//! each codebook alone, or every token from the first state as RPG does); `lambda_path` adds an item-level
//! cross-entropy over the first-step path scores of every item.
//!
//! Every loss is a mean over the batch's targets (non-padding positions): [`sequence_loss`] trains all
//! positions of a batch of users in one encoder pass.

use crate::batch::SeqBatch;
use crate::config::{Mode, PathScore, StepTarget};
use crate::decoding::{codebook_mask, step_log_probs, N_SPECIAL};
use crate::decoding::{codebooks_of, flat_codes, Vocab};
use crate::model::{Decoded, Encoded, Reg4RecModel};
use tch::{Kind, Tensor};

/// The pre-training objective: the token loss's step target and the weights of the other terms
/// ([`crate::TrainConfig::objective`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// What each step's token loss rewards (REG4Rec mode; TIGER mode always uses the next token in order).
    pub step_target: StepTarget,
    /// Category loss (REG4Rec mode only; TIGER mode uses 0).
    pub lambda_cat: f64,
    /// Item-head cross-entropy (only when the model has an item head).
    pub lambda_item: f64,
    /// The path's item-level cross-entropy over first-step path scores (`TrainConfig::lambda_path`).
    pub lambda_path: f64,
    /// The item head's distillation into the path's item-level distribution (`TrainConfig::lambda_distill`).
    pub lambda_distill: f64,
}

/// Losses of one batch (scalars, means over its targets).
#[derive(Debug)]
pub struct CrssLoss {
    /// `token + lambda_cat * category + lambda_item * item + lambda_path * path + lambda_distill * distill`.
    pub total: Tensor,
    /// The set-valued token loss, per step.
    pub token: Tensor,
    /// The category cross-entropy, per step.
    pub category: Tensor,
    /// The item head's cross-entropy (zero without an item head).
    pub item: Tensor,
    /// The path's item-level cross-entropy (zero when `lambda_path` is 0).
    pub path: Tensor,
    /// The path's item-level cross-entropy against the item head's distribution (zero when `lambda_distill`
    /// is 0).
    pub distill: Tensor,
}

/// The order in which `targets` (`[N, M]` tokens in codebook order) are fed to the decoder after `context`
/// (`[N, d]`): at each step the remaining target token with the highest logit. Returns `[N, M]` fed tokens, a
/// permutation of each row.
///
/// How the model rates a token follows its [`PathScore`]: the raw logit (`open`: the same order as the
/// open-codebook softmax), the per-codebook log-probability (`codebook`), or the first step's per-codebook
/// log-probability for every step (`parallel`: one decoder pass sorts the targets).
pub fn select_order(model: &Reg4RecModel, context: &Tensor, targets: &Tensor) -> Tensor {
    let vocab = model.vocab();
    match model.config().path {
        PathScore::Open => select_order_with(targets, |fed| {
            model
                .decode_last(context, fed, false)
                .token_logits
                .select(1, 0)
        }),
        PathScore::Codebook => select_order_with(targets, |fed| {
            let logits = model
                .decode_last(context, fed, false)
                .token_logits
                .select(1, 0);
            per_codebook_vocab_scores(&vocab, &logits)
        }),
        PathScore::Parallel => tch::no_grad(|| {
            let first = model.token_logits(&model.first_state(context, false), false);
            let scores = per_codebook_vocab_scores(&vocab, &first).gather(1, targets, false);
            targets.gather(1, &scores.argsort(1, true), false)
        }),
    }
}

/// Per-codebook log-probabilities laid out over the whole vocabulary `[N, vocab]` (the special tokens get
/// `-inf`), so target vocabulary ids index them directly.
fn per_codebook_vocab_scores(vocab: &Vocab, logits: &Tensor) -> Tensor {
    let n = logits.size()[0];
    let none = Tensor::zeros([n, vocab.m as i64], (Kind::Bool, logits.device()));
    let codes = crate::decoding::codebook_log_probs(vocab, &logits.to_kind(Kind::Float), &none);
    let specials = Tensor::full(
        [n, N_SPECIAL],
        f64::NEG_INFINITY,
        (Kind::Float, logits.device()),
    );
    Tensor::cat(&[specials, codes], 1)
}

/// [`select_order`] for any decoder: `next_logits(fed)` gives the `[N, vocab]` logits of the token following
/// the fed prefix `[N, k]` (`k < M`). Runs without gradient.
pub fn select_order_with(
    targets: &Tensor,
    mut next_logits: impl FnMut(&Tensor) -> Tensor,
) -> Tensor {
    tch::no_grad(|| {
        let (n, m) = (targets.size()[0], targets.size()[1]);
        let device = targets.device();
        let mut fed = Tensor::zeros([n, 0], (Kind::Int64, device));
        let mut remaining = Tensor::ones([n, m], (Kind::Bool, device));
        for k in 0..m {
            // Target r is codebook r's token, so "remaining" is exactly "codebook not used": the mask and the
            // softmax normaliser do not change the ranking among the remaining targets.
            let pick = if k + 1 == m {
                remaining.to_kind(Kind::Int64).argmax(1, true) // the last remaining token
            } else {
                next_logits(&fed)
                    .gather(1, targets, false)
                    .masked_fill(&remaining.logical_not(), f64::NEG_INFINITY)
                    .argmax(1, true) // [N, 1] column index
            };
            fed = Tensor::cat(&[fed, targets.gather(1, &pick, false)], 1);
            remaining = remaining.scatter_value(1, &pick, 0);
        }
        fed
    })
}

/// Used-codebook flags before each step of a fed order: `[N, M steps, M codebooks]` bool.
fn used_before_each_step(vocab: &Vocab, fed: &Tensor) -> Tensor {
    let onehot = codebooks_of(vocab, fed).one_hot(vocab.m as i64); // [N, M, M] i64
    (onehot.cumsum(1, Kind::Int64) - &onehot).gt(0)
}

/// The log-probability `[N, step, codebook]` of each target token (`targets` `[N, M]` in codebook order) at
/// each step of teacher-forced decoder outputs `out` (`[N, M, ...]`, position k after the first k tokens of
/// `fed`), under the softmax over the codebooks not used yet ([`crate::decoding::open_codebook_log_probs`]); and
/// the used-codebook flags before each step `[N, step, codebook]`.
fn target_log_probs(
    path: PathScore,
    vocab: &Vocab,
    out: &Decoded,
    fed: &Tensor,
    targets: &Tensor,
) -> (Tensor, Tensor) {
    let (n, m) = (targets.size()[0], vocab.m as i64);
    let used = used_before_each_step(vocab, fed);
    let logp = step_log_probs(path, vocab, &out.token_logits, &used); // [N, step, M * D]
                                                                      // Target r is codebook r's token.
    let target_logp = logp.gather(
        2,
        &flat_codes(targets).view([n, 1, m]).expand([n, m, m], false),
        false,
    );
    (target_logp, used)
}

/// One-hot `[N, step, codebook]` of the codebook fed at each step.
fn fed_codebooks(vocab: &Vocab, fed: &Tensor) -> Tensor {
    codebooks_of(vocab, fed).one_hot(vocab.m as i64).gt(0)
}

/// The teacher-forced path log-probability `[N]` of each target `[N, M]` (codebook order) after `context`
/// `[N, d]`: the sum over the M steps of the fed token's log-probability, in the order the model picks
/// ([`select_order`]; codebook order in TIGER mode), as the beam search scores a path. Runs without gradient.
pub fn path_log_probs(model: &Reg4RecModel, context: &Tensor, targets: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let vocab = model.vocab();
        let m = vocab.m as i64;
        if model.config().path == PathScore::Parallel {
            // Every token from the first state: the same sum in every order.
            let first = model.token_logits(&model.first_state(context, false), false);
            return per_codebook_vocab_scores(&vocab, &first)
                .gather(1, targets, false)
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        }
        let fed = match model.config().mode {
            Mode::Reg4rec => select_order(model, context, targets),
            Mode::Tiger => targets.shallow_clone(),
        };
        let out = model.decode(context, &fed.narrow(1, 0, m - 1), false);
        let (target_logp, _) = target_log_probs(model.config().path, &vocab, &out, &fed, targets);
        target_logp
            .masked_fill(&fed_codebooks(&vocab, &fed).logical_not(), 0.0)
            .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float)
    })
}

/// The token and category losses (means over targets and steps) of teacher-forced decoder outputs `out`
/// (`[N, M, ...]`, position k after the first k tokens of `fed`) for `targets` `[N, M]` in codebook order and
/// their `categories` `[N]`: the set-valued CRSS loss (REG4Rec) or the next-token cross-entropy (TIGER).
///
/// The step distribution is the model's [`PathScore`] ([`crate::decoding::step_log_probs`]): under `open` the
/// softmax over the codebook tokens of the codebooks not used yet (the special tokens and used codebooks have
/// probability zero, as [`crate::decoding::codebook_mask`] makes them at inference) and the set loss is
/// `-log sum` over the remaining targets; under `codebook` each open codebook is normalised alone and the set
/// loss averages the remaining codebooks' cross-entropies; under `parallel` `out.token_logits` holds the first
/// state only (`[N, 1, vocab]`) and the loss averages every codebook's cross-entropy there.
#[allow(clippy::too_many_arguments)]
pub fn step_losses(
    mode: Mode,
    path: PathScore,
    step_target: StepTarget,
    vocab: &Vocab,
    out: &Decoded,
    fed: &Tensor,
    targets: &Tensor,
    categories: &Tensor,
) -> (Tensor, Tensor) {
    let n = targets.size()[0];
    let (steps, n_cat) = (out.category_logits.size()[1], out.category_logits.size()[2]);
    let category = out
        .category_logits
        .reshape([n * steps, n_cat])
        .cross_entropy_for_logits(&categories.repeat_interleave_self_int(steps, 0, None));
    if path == PathScore::Parallel {
        // Every target token at the first state, each codebook's cross-entropy (RPG's multi-token loss).
        let none = Tensor::zeros([n, vocab.m as i64], (Kind::Bool, targets.device()));
        let logp =
            crate::decoding::codebook_log_probs(vocab, &out.token_logits.select(1, 0), &none);
        let token = -logp
            .gather(1, &flat_codes(targets), false)
            .mean(Kind::Float);
        return (token, category);
    }
    let (target_logp, used) = target_log_probs(path, vocab, out, fed, targets);
    let in_set = match (mode, step_target) {
        (Mode::Reg4rec, StepTarget::Set) => used.logical_not(),
        // The fed token's codebook at each step (TIGER: codebook k at step k).
        _ => fed_codebooks(vocab, fed),
    };
    let token = match path {
        PathScore::Open => -target_logp
            .masked_fill(&in_set.logical_not(), f64::NEG_INFINITY)
            .logsumexp([-1], false)
            .mean(Kind::Float),
        // Each remaining target codebook's own cross-entropy, averaged over (target, step, codebook).
        _ => {
            -target_logp
                .masked_fill(&in_set.logical_not(), 0.0)
                .sum(Kind::Float)
                / in_set.sum(Kind::Float)
        }
    };
    (token, category)
}

/// The losses of targets `[N, M]` (tokens in codebook order), their `categories` `[N]` and `items` `[N]` after
/// `context` `[N, d]` (a row of [`Encoded::hidden`] each); `enc` supplies the item table of the item head and
/// `seen` the items already in each target's history ([`SeqBatch::seen`]).
#[allow(clippy::too_many_arguments)]
pub fn crss_loss(
    model: &Reg4RecModel,
    context: &Tensor,
    enc: &Encoded,
    targets: &Tensor,
    categories: &Tensor,
    items: &Tensor,
    seen: &(Tensor, Tensor),
    weights: Objective,
    train: bool,
) -> CrssLoss {
    let vocab = model.vocab();
    let m = vocab.m as i64;
    let mode = model.config().mode;
    let path = model.config().path;
    let fed = match mode {
        Mode::Reg4rec => select_order(model, &context.detach(), targets),
        Mode::Tiger => targets.shallow_clone(),
    };
    let hidden = model.decode_hidden(context, &fed.narrow(1, 0, m - 1), train); // [N, M, d]
                                                                                // A parallel path scores its tokens at the first state only: the [N, M, vocab] logits of the later steps
                                                                                // (the cost that grows with M's square) are never formed.
    let token_hidden = match path {
        PathScore::Parallel => hidden.narrow(1, 0, 1),
        _ => hidden.shallow_clone(),
    };
    let out = Decoded {
        token_logits: model.token_logits(&token_hidden, train),
        category_logits: model.category_logits(&hidden, train),
    };
    let (token, category) = step_losses(
        mode,
        path,
        weights.step_target,
        &vocab,
        &out,
        &fed,
        targets,
        categories,
    );
    let lambda_cat = match mode {
        Mode::Reg4rec => weights.lambda_cat,
        Mode::Tiger => 0.0,
    };
    let zero = || Tensor::zeros([], (Kind::Float, targets.device()));
    let item_logits = model
        .config()
        .item_head
        .then(|| model.item_logits(context, &enc.items, seen, train));
    let item = match &item_logits {
        Some(l) => l.cross_entropy_for_logits(items),
        None => zero(),
    };
    let distill_on = weights.lambda_distill > 0.0 && item_logits.is_some();
    let path_logp = (weights.lambda_path > 0.0 || distill_on).then(|| {
        model
            .path_item_logits(&hidden.select(1, 0), train)
            .log_softmax(-1, Kind::Float)
    });
    let path_loss = match &path_logp {
        Some(l) if weights.lambda_path > 0.0 => l.nll_loss(items),
        _ => zero(),
    };
    let distill = match (&path_logp, &item_logits) {
        (Some(l), Some(teacher)) if distill_on => -(teacher.detach().softmax(-1, Kind::Float) * l)
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float),
        _ => zero(),
    };
    CrssLoss {
        total: &token
            + &category * lambda_cat
            + &item * weights.lambda_item
            + &path_loss * weights.lambda_path
            + &distill * weights.lambda_distill,
        token,
        category,
        item,
        path: path_loss,
        distill,
    }
}

/// The contexts `[N, d]` of a [`SeqBatch`]'s targets (on the model's device), one encoder pass, and the
/// encoder output they come from (its item table feeds the item head).
pub fn target_contexts(model: &Reg4RecModel, batch: &SeqBatch, train: bool) -> (Tensor, Encoded) {
    let enc = model.encode(&batch.stream, train);
    let d = model.config().d_model as i64;
    let context = enc.hidden.view([-1, d]).index_select(0, &batch.positions);
    (context, enc)
}

/// The losses of every target of a [`SeqBatch`] (on the model's device) in one encoder pass.
pub fn sequence_loss(
    model: &Reg4RecModel,
    batch: &SeqBatch,
    weights: Objective,
    train: bool,
) -> CrssLoss {
    let (context, enc) = target_contexts(model, batch, train);
    crss_loss(
        model,
        &context,
        &enc,
        &batch.targets,
        &batch.categories,
        &batch.items,
        &batch.seen,
        weights,
        train,
    )
}

/// Greedy masked decoding without item constraints (tests, diagnostics) after `context` `[N, d]`: at each step
/// the most likely allowed token (REG4Rec: any unused codebook; TIGER: codebook k at step k). Returns
/// `([N, M] tokens, [N, M] argmax categories)`.
pub fn greedy_decode(model: &Reg4RecModel, context: &Tensor) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let vocab = model.vocab();
        let (n, m) = (context.size()[0], vocab.m as i64);
        let device = context.device();
        let mut dec = Tensor::zeros([n, 0], (Kind::Int64, device));
        let mut used = Tensor::zeros([n, m], (Kind::Bool, device));
        let mut cats = Vec::new();
        for k in 0..m {
            let out = model.decode_last(context, &dec, false);
            let forbid = match model.config().mode {
                Mode::Reg4rec => used.shallow_clone(),
                Mode::Tiger => Tensor::arange(m, (Kind::Int64, device))
                    .ne(k)
                    .unsqueeze(0)
                    .expand([n, m], false),
            };
            let logits = out.token_logits.select(1, 0) + codebook_mask(&vocab, &forbid);
            let token = logits.argmax(1, true); // [N, 1]
            cats.push(out.category_logits.select(1, 0).argmax(1, true));
            let cb = codebooks_of(&vocab, &token);
            used = used.scatter_value(1, &cb, 1);
            dec = Tensor::cat(&[dec, token], 1);
        }
        (dec, Tensor::cat(&cats, 1))
    })
}
/// Pre-training's loss terms, here beside the loss they weigh (the configuration module imports this one, not
/// the other way round).
impl crate::config::TrainConfig {
    /// The loss terms and weights of pre-training.
    pub fn objective(&self) -> Objective {
        Objective {
            step_target: self.step_target,
            lambda_cat: self.lambda_cat,
            lambda_item: self.lambda_item,
            lambda_path: self.lambda_path,
            lambda_distill: self.lambda_distill,
        }
    }
}
