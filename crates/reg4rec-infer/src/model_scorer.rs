//! The [`StepScorer`] over the trained [`Reg4RecModel`]: encodes a batch of histories once (the context at the
//! last position of each history's window), then at every step decodes `[context, prefix...]` for each beam and
//! returns the masked next-token log-probabilities (over the `M * D` codebook tokens) and the category
//! distribution at that step. With the model's item head, the items the search generated get their dense score
//! (the head's logit: the context's dot product with the item's embedding), which the search adds (weighted) to
//! their path scores; only those items are scored, so the cost does not grow with the catalog. With the model's
//! `repeat_bias`, the dense score of an item in the user's encoder window carries the learned bias, as in
//! training.
//!
//! The token distribution is normalised exactly as in training, by the model's `PathScore`
//! (`reg4rec_model::decoding::step_log_probs`): by default the softmax over the codebook tokens of the
//! codebooks not used yet (used codebooks and the special tokens have probability zero, as
//! `reg4rec_model::decoding::codebook_mask` makes them), or each open codebook alone; a `parallel` model scores
//! every step's tokens from the first decoder state (computed once per user), while the step's category still
//! comes from the decoder at the path's prefix. In TIGER mode (ordered codes) only codebook k is open at step
//! k, as in the model's greedy decoding.

use crate::error::{InferError, Result};
use crate::scorer::{StepInput, StepOutput, StepScorer};
use reg4rec_model::config::{Mode, PathScore};
use reg4rec_model::decoding::{closed_codebooks, decoder_input, step_log_probs};
use reg4rec_model::Reg4RecModel;
use reg4rec_tokenizer::Codes;
use tch::{Kind, Tensor};

/// Scores steps with a [`Reg4RecModel`] (inference mode, no gradient).
pub struct ModelScorer<'a> {
    model: &'a Reg4RecModel,
    codes: &'a Codes,
    /// The model's encoder input table (items, `START`, `PAD`).
    table: Tensor,
    /// `[n_users, d]` contexts of the current batch.
    context: Option<Tensor>,
    /// Row-major `[n_users, M * D]` per-codebook token log-probabilities at the first decoder state
    /// ([`PathScore::Parallel`] models: every step's tokens are scored from them, so a step only closes the
    /// used codebooks of its user's row and decodes the step's category).
    first_logp: Option<Vec<f32>>,
    /// Each user's codebook order for a parallel path: codebooks by their most likely token's log-probability,
    /// most confident first (CRSS; the scores do not depend on the prefix, so the order is the user's, and every
    /// path of the user opens the same codebook at a step: the beam spends its width on distinct items, not on
    /// the orders of one item's tokens, which at M = 32 fill any beam).
    order: Vec<Vec<usize>>,
    n_users: usize,
    /// The model's repeat bias, and each user's window items (sorted, once each) when it has one.
    repeat_bias: Option<f32>,
    seen: Vec<Vec<u32>>,
    /// Seconds spent copying outputs off the device into the search's buffers.
    pub copy_secs: f64,
}

impl<'a> ModelScorer<'a> {
    /// Checks that the model was built for these codes, and computes the model's encoder input table once for
    /// every batch this scorer will encode.
    pub fn new(model: &'a Reg4RecModel, codes: &'a Codes) -> Result<Self> {
        let table = tch::no_grad(|| model.stream_table());
        Self::with_table(model, codes, table)
    }

    /// [`ModelScorer::new`] with the model's [`Reg4RecModel::stream_table`] computed by the caller (a server
    /// keeps it across requests; it changes only with the weights or the items).
    pub fn with_table(model: &'a Reg4RecModel, codes: &'a Codes, table: Tensor) -> Result<Self> {
        let v = model.vocab();
        if v.m != codes.m || v.d != codes.d || model.n_items() != codes.n_items() {
            return Err(InferError::Input(format!(
                "model vocabulary m = {}, d = {} over {} items does not match the codes' m = {}, d = {} over {} \
                 items",
                v.m,
                v.d,
                model.n_items(),
                codes.m,
                codes.d,
                codes.n_items()
            )));
        }
        let tiger = model.config().mode == Mode::Tiger;
        if tiger != codes.ordered {
            return Err(InferError::Input(format!(
                "model mode {:?} with {} codes: TIGER needs ordered (RQ-VAE) codes, REG4Rec unordered (MPQ)",
                model.config().mode,
                if codes.ordered { "ordered" } else { "unordered" }
            )));
        }
        Ok(ModelScorer {
            model,
            codes,
            table,
            context: None,
            first_logp: None,
            order: Vec::new(),
            n_users: 0,
            // `ModelConfig::validate` allows the bias only with an item head.
            repeat_bias: model.repeat_bias(),
            seen: Vec::new(),
            copy_secs: 0.0,
        })
    }
}

impl ModelScorer<'_> {
    /// The current batch's contexts when the model has an item head (dense scores), else `None`.
    fn head_context(&self) -> Option<&Tensor> {
        self.context
            .as_ref()
            .filter(|_| self.model.config().item_head)
    }

    /// `t` as a flat `Vec<f32>`, timing the copy in `copy_secs`.
    fn copy(&mut self, t: &Tensor) -> Result<Vec<f32>> {
        let start = std::time::Instant::now();
        let v = to_vec(t)?;
        self.copy_secs += start.elapsed().as_secs_f64();
        Ok(v)
    }
}

impl StepScorer for ModelScorer<'_> {
    fn n_tokens(&self) -> usize {
        self.codes.m * self.codes.d
    }

    fn n_categories(&self) -> usize {
        self.model.n_categories()
    }

    fn begin(&mut self, histories: &[&[u32]]) -> Result<()> {
        let n_items = self.codes.n_items();
        if let Some(&bad) = histories
            .iter()
            .flat_map(|h| h.iter())
            .find(|&&i| i as usize >= n_items)
        {
            return Err(InferError::Input(format!(
                "history item {bad} is outside the {n_items} tokenized items"
            )));
        }
        let model = self.model;
        let enc = tch::no_grad(|| model.contexts_with(histories, &self.table))
            .map_err(|e| InferError::Input(format!("encoding the histories: {e}")))?;
        self.first_logp = if model.config().path == PathScore::Parallel {
            let vocab = model.vocab();
            let logp = tch::no_grad(|| {
                let first = model.token_logits(&model.first_state(&enc.hidden, false), false);
                let open = Tensor::zeros(
                    [histories.len() as i64, vocab.m as i64],
                    (Kind::Bool, model.device()),
                );
                step_log_probs(
                    PathScore::Parallel,
                    &vocab,
                    &first.to_kind(Kind::Float),
                    &open,
                )
            });
            let logp = self.copy(&logp)?;
            let (m, d) = (vocab.m, vocab.d);
            self.order = logp
                .chunks(m * d)
                .map(|row| {
                    let best: Vec<f32> = row
                        .chunks(d)
                        .map(|c| c.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                        .collect();
                    let mut order: Vec<usize> = (0..m).collect();
                    order.sort_by(|&a, &b| best[b].total_cmp(&best[a]).then(a.cmp(&b)));
                    order
                })
                .collect();
            Some(logp)
        } else {
            None
        };
        self.context = Some(enc.hidden);
        self.n_users = histories.len();
        self.seen.clear();
        if self.repeat_bias.is_some() {
            let l = model.config().history_len;
            self.seen.extend(histories.iter().map(|h| {
                let mut w = h[h.len().saturating_sub(l)..].to_vec();
                w.sort_unstable();
                w.dedup();
                w
            }));
        }
        Ok(())
    }

    fn step(&mut self, input: StepInput<'_>) -> Result<StepOutput> {
        let context = self
            .context
            .as_ref()
            .ok_or_else(|| InferError::Input("ModelScorer::step before begin".into()))?;
        if let Some(&bad) = input.rows.iter().find(|&&r| r >= self.n_users) {
            return Err(InferError::Input(format!(
                "row {bad} outside the batch of {} users",
                self.n_users
            )));
        }
        let vocab = self.model.vocab();
        let (n, k) = (input.n(), input.len);
        let device = self.model.device();
        let tiger = self.model.config().mode == Mode::Tiger;
        let flat: Vec<usize> = input.prefixes.iter().map(|&t| t as usize).collect();
        let rows: Vec<i64> = input.rows.iter().map(|&r| r as i64).collect();
        if let Some(first) = &self.first_logp {
            // Parallel path: step k opens one codebook, the user's k-th most confident (TIGER: codebook k),
            // with its first-step scores; every other token is closed (-inf). The decoder runs for the step's
            // category only.
            let (v, d) = (vocab.m * vocab.d, vocab.d);
            let mut logp = vec![f32::NEG_INFINITY; n * v];
            for (row, &u) in logp.chunks_mut(v).zip(input.rows) {
                let r = if tiger { k } else { self.order[u][k] };
                row[r * d..(r + 1) * d].copy_from_slice(&first[u * v + r * d..u * v + (r + 1) * d]);
            }
            let category = tch::no_grad(|| {
                let ctx = context.index_select(0, &Tensor::from_slice(&rows).to_device(device));
                let tokens = decoder_input(&vocab, &flat, n, device);
                let h = self.model.last_state(&ctx, &tokens, false);
                self.model
                    .category_logits(&h, false)
                    .to_kind(Kind::Float)
                    .softmax(-1, Kind::Float)
            });
            return Ok(StepOutput {
                logp,
                category: self.copy(&category)?,
            });
        }
        let (logp, category) = tch::no_grad(|| {
            let ctx = context.index_select(0, &Tensor::from_slice(&rows).to_device(device));
            let tokens = decoder_input(&vocab, &flat, n, device);
            let used = closed_codebooks(&vocab, &flat, n, k, tiger, device);
            let out = self.model.decode_last(&ctx, &tokens, false);
            let logits = out.token_logits.select(1, 0).to_kind(Kind::Float);
            let logp = step_log_probs(self.model.config().path, &vocab, &logits, &used); // [n, m * d]
            let category = out
                .category_logits
                .select(1, 0)
                .to_kind(Kind::Float)
                .softmax(-1, Kind::Float); // [n, C]
            (logp, category)
        });
        Ok(StepOutput {
            logp: self.copy(&logp)?,
            category: self.copy(&category)?,
        })
    }

    fn item_scores(&mut self, rows: &[usize], items: &[u32]) -> Result<Option<Vec<f32>>> {
        let Some(context) = self.head_context() else {
            return Ok(None);
        };
        let n_items = self.codes.n_items();
        if rows.len() != items.len() {
            return Err(InferError::Input(format!(
                "item_scores: {} rows for {} items",
                rows.len(),
                items.len()
            )));
        }
        if let Some((r, i)) = rows
            .iter()
            .zip(items)
            .find(|(&r, &i)| r >= self.n_users || i as usize >= n_items)
        {
            return Err(InferError::Input(format!(
                "item_scores: row {r} of {} users, item {i} of {n_items}",
                self.n_users
            )));
        }
        let device = context.device();
        let bias: Vec<f32> = match self.repeat_bias {
            Some(b) => rows
                .iter()
                .zip(items)
                .map(|(&r, i)| {
                    if self.seen[r].binary_search(i).is_ok() {
                        b
                    } else {
                        0.0
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let items: Vec<i64> = items.iter().map(|&i| i as i64).collect();
        let scores = tch::no_grad(|| {
            let ctx = context.index_select(0, &Tensor::from_slice(&rows).to_device(device));
            // The first n_items rows of the encoder's input table are the item embeddings the head scores
            // against (`Encoded::items`).
            let emb = self
                .table
                .index_select(0, &Tensor::from_slice(&items).to_device(device));
            // The item head's logit of each (user, item): as `Reg4RecModel::item_logits`, one pair at a time.
            (ctx.to_kind(Kind::Float) * emb.to_kind(Kind::Float)).sum_dim_intlist(
                [-1i64].as_slice(),
                false,
                Kind::Float,
            )
        });
        let mut scores = self.copy(&scores)?;
        for (s, b) in scores.iter_mut().zip(&bias) {
            *s += b;
        }
        Ok(Some(scores))
    }

    fn all_item_scores(&mut self, n_items: usize) -> Result<Option<Vec<f32>>> {
        let Some(context) = self.head_context() else {
            return Ok(None);
        };
        if n_items != self.codes.n_items() {
            return Err(InferError::Input(format!(
                "all_item_scores: {n_items} items asked, the model scores {}",
                self.codes.n_items()
            )));
        }
        // The item head's logits of every item: the contexts against the first n_items rows of the input table.
        let scores = tch::no_grad(|| {
            context.to_kind(Kind::Float).matmul(
                &self
                    .table
                    .narrow(0, 0, n_items as i64)
                    .to_kind(Kind::Float)
                    .tr(),
            )
        });
        let mut scores = self.copy(&scores)?;
        if let Some(b) = self.repeat_bias {
            for (u, items) in self.seen.iter().enumerate() {
                for &i in items {
                    scores[u * n_items + i as usize] += b;
                }
            }
        }
        Ok(Some(scores))
    }
}

/// A float tensor as a flat row-major `Vec<f32>` on the CPU.
fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_device(tch::Device::Cpu).contiguous().view([-1]),
    )?)
}
