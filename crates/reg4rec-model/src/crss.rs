//! CRSS, confidence-based reasoning step selection, as a training objective (spec section 3).
//!
//! The target item's M tokens form a SET. At decoder step k the model has emitted k tokens from k distinct
//! codebooks; the step's token loss is `-log sum_{t in remaining targets} p(t)` with `p` the softmax of the
//! masked logits (used codebooks and EOS forbidden, [`crate::mask::codebook_mask`]), and the token fed to step
//! k + 1 is the remaining target token the model currently rates highest (a choice without gradient). The
//! category head is trained with cross-entropy to the target item's category at each of the M steps.
//!
//! Implementation: the order is chosen first by M cheap incremental decoder calls under `no_grad` with dropout
//! off (on the batch's encoder memory), then one teacher-forced decoder pass with gradient on
//! `<BOS>, fed_0 .. fed_{M-2}` scores every step at once (the causal decoder sees exactly the prefix it would
//! see step by step). The `<EOS>` step is not scored: after M tokens the mask leaves EOS as the only choice.
//!
//! TIGER mode ([`Mode::Tiger`]): the order is the fixed codebook order 0..M and each step's target set is the
//! single next token (plain teacher forcing with cross-entropy); the category loss gets weight 0.

use crate::config::Mode;
use crate::mask::codebook_mask;
use crate::model::{Encoded, Reg4RecModel};
use crate::vocab::{BOS, N_SPECIAL};
use tch::{Kind, Tensor};

/// Losses of one batch (scalars).
#[derive(Debug)]
pub struct CrssLoss {
    /// `token + lambda * category`.
    pub total: Tensor,
    /// Mean over examples and steps of the set-valued token loss.
    pub token: Tensor,
    /// Mean over examples and steps of the category cross-entropy.
    pub category: Tensor,
}

fn bos(b: i64, device: tch::Device) -> Tensor {
    Tensor::full([b, 1], BOS, (Kind::Int64, device))
}

/// The order in which `targets` (`[B, M]` tokens in codebook order) are fed to the decoder: at each step the
/// remaining target token with the highest logit. Returns `[B, M]` fed tokens, a permutation of each row.
pub fn select_order(model: &Reg4RecModel, enc: &Encoded, targets: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let (b, m) = (targets.size()[0], targets.size()[1]);
        let mut dec = bos(b, targets.device());
        let mut remaining = Tensor::ones([b, m], (Kind::Bool, targets.device()));
        for _ in 0..m {
            let logits = model.decode(enc, &dec, false).token_logits.select(1, -1); // [B, vocab]
                                                                                    // Target r is codebook r's token, so "remaining" is exactly "codebook not used": the used-codebook mask
                                                                                    // and the softmax normaliser do not change the ranking among remaining targets.
            let score = logits
                .gather(1, targets, false)
                .masked_fill(&remaining.logical_not(), f64::NEG_INFINITY); // [B, M]
            let pick = score.argmax(1, true); // [B, 1]
            let token = targets.gather(1, &pick, false);
            remaining = remaining.scatter_value(1, &pick, 0);
            dec = Tensor::cat(&[dec, token], 1);
        }
        dec.narrow(1, 1, m)
    })
}

/// Used-codebook flags before each step of a fed order: `[B, M steps, M codebooks]` bool.
fn used_before_each_step(fed: &Tensor, d: i64, m: i64) -> Tensor {
    let codebook = (fed - N_SPECIAL).divide_scalar_mode(d, "floor"); // [B, M]
    let onehot = codebook.one_hot(m); // [B, M, M] i64
    (onehot.cumsum(1, Kind::Int64) - &onehot).gt(0)
}

/// The pre-training loss of a batch; `lambda_cat` is ignored (0) in TIGER mode.
pub fn crss_loss(
    model: &Reg4RecModel,
    enc: &Encoded,
    targets: &Tensor,
    categories: &Tensor,
    lambda_cat: f64,
    train: bool,
) -> CrssLoss {
    let vocab = model.vocab();
    let (b, m) = (targets.size()[0], vocab.m as i64);
    let mode = model.config().mode;
    let fed = match mode {
        Mode::Reg4rec => select_order(model, &enc.detach(), targets),
        Mode::Tiger => targets.shallow_clone(),
    };
    let dec_in = Tensor::cat(&[bos(b, targets.device()), fed.narrow(1, 0, m - 1)], 1); // [B, M]
    let out = model.decode(enc, &dec_in, train);
    let used = used_before_each_step(&fed, vocab.d as i64, m); // [B, M, M]
    let logp = (out.token_logits + codebook_mask(&vocab, &used)).log_softmax(-1, Kind::Float); // [B, M, vocab]
    let target_logp = logp.gather(2, &targets.unsqueeze(1).expand([b, m, m], false), false); // [B, M, M]
    let in_set = match mode {
        Mode::Reg4rec => used.logical_not(),
        Mode::Tiger => Tensor::eye(m, (Kind::Bool, targets.device()))
            .unsqueeze(0)
            .expand([b, m, m], false),
    };
    let token = -target_logp
        .masked_fill(&in_set.logical_not(), f64::NEG_INFINITY)
        .logsumexp([-1], false)
        .mean(Kind::Float);
    let n_cat = out.category_logits.size()[2];
    let category = out
        .category_logits
        .reshape([b * m, n_cat])
        .cross_entropy_for_logits(&categories.repeat_interleave_self_int(m, 0, None));
    let lambda = match mode {
        Mode::Reg4rec => lambda_cat,
        Mode::Tiger => 0.0,
    };
    CrssLoss {
        total: &token + &category * lambda,
        token,
        category,
    }
}

/// Greedy masked decoding without item constraints (tests, diagnostics): at each step the most likely allowed
/// token (REG4Rec: any unused codebook; TIGER: codebook k at step k). Returns `([B, M] tokens, [B, M] argmax
/// categories)`.
pub fn greedy_decode(model: &Reg4RecModel, enc: &Encoded) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let vocab = model.vocab();
        let (b, m) = (enc.batch_size(), vocab.m as i64);
        let device = enc.memory.device();
        let mut dec = bos(b, device);
        let mut used = Tensor::zeros([b, m], (Kind::Bool, device));
        let mut cats = Vec::new();
        for k in 0..m {
            let out = model.decode(enc, &dec, false);
            let forbid = match model.config().mode {
                Mode::Reg4rec => used.shallow_clone(),
                Mode::Tiger => Tensor::arange(m, (Kind::Int64, device))
                    .ne(k)
                    .unsqueeze(0)
                    .expand([b, m], false),
            };
            let logits = out.token_logits.select(1, -1) + codebook_mask(&vocab, &forbid);
            let token = logits.argmax(1, true); // [B, 1]
            cats.push(out.category_logits.select(1, -1).argmax(1, true));
            let cb = (&token - N_SPECIAL).divide_scalar_mode(vocab.d as i64, "floor");
            used = used.scatter_value(1, &cb, 1);
            dec = Tensor::cat(&[dec, token], 1);
        }
        (dec.narrow(1, 1, m), Tensor::cat(&cats, 1))
    })
}
