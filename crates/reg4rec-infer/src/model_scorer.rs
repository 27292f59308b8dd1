//! The [`StepScorer`] over the trained [`Reg4RecModel`]: encodes a batch of histories once, then at every step
//! decodes `<BOS>` + each beam's prefix against its user's encoder memory and returns the masked next-token
//! log-probabilities (over the `M * D` codebook tokens) and the category distribution at that step.
//!
//! The token distribution is normalised exactly as in training: `log_softmax(logits + codebook_mask)` with the
//! used codebooks (and the special tokens) forbidden. In TIGER mode (ordered codes) only codebook k is open at
//! step k, as in the model's greedy decoding.

use crate::error::{InferError, Result};
use crate::scorer::{StepInput, StepOutput, StepScorer};
use reg4rec_model::config::Mode;
use reg4rec_model::mask::codebook_mask;
use reg4rec_model::vocab::{BOS, N_SPECIAL};
use reg4rec_model::{Encoded, Reg4RecModel};
use reg4rec_tokenizer::Codes;
use tch::{Kind, Tensor};

/// Scores steps with a [`Reg4RecModel`] (inference mode, no gradient).
pub struct ModelScorer<'a> {
    model: &'a Reg4RecModel,
    codes: &'a Codes,
    enc: Option<Encoded>,
    n_users: usize,
    /// Seconds spent copying outputs off the device into the search's buffers.
    pub copy_secs: f64,
}

impl<'a> ModelScorer<'a> {
    /// Checks that the model's vocabulary fits the codes.
    pub fn new(model: &'a Reg4RecModel, codes: &'a Codes) -> Result<Self> {
        let v = model.vocab();
        if v.m != codes.m || v.d != codes.d {
            return Err(InferError::Input(format!(
                "model vocabulary m = {}, d = {} does not match the codes' m = {}, d = {}",
                v.m, v.d, codes.m, codes.d
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
            enc: None,
            n_users: 0,
            copy_secs: 0.0,
        })
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
        let hist = self
            .model
            .history_tokens(histories, self.codes)
            .map_err(|e| InferError::Input(format!("history tokens: {e}")))?;
        self.enc = Some(tch::no_grad(|| self.model.encode(&hist, false)));
        self.n_users = histories.len();
        Ok(())
    }

    fn step(&mut self, input: StepInput<'_>) -> Result<StepOutput> {
        let enc = self
            .enc
            .as_ref()
            .ok_or_else(|| InferError::Input("ModelScorer::step before begin".into()))?;
        if let Some(&bad) = input.rows.iter().find(|&&r| r >= self.n_users) {
            return Err(InferError::Input(format!(
                "row {bad} outside the batch of {} users",
                self.n_users
            )));
        }
        let vocab = self.model.vocab();
        let (m, d) = (vocab.m as i64, vocab.d as i64);
        let k = input.len as i64;
        let device = self.model.device();
        let tiger = self.model.config().mode == Mode::Tiger;
        // Group the beams by user: slot `s` of the grouped batch holds up to `g` beams of user `users[s]`;
        // short groups are padded with a copy of their first beam (scored, then dropped).
        let mut slot_of = vec![usize::MAX; self.n_users];
        let mut users: Vec<i64> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        let mut place = Vec::with_capacity(input.n()); // (slot, position in group) per beam
        for &r in input.rows {
            if slot_of[r] == usize::MAX {
                slot_of[r] = users.len();
                users.push(r as i64);
                counts.push(0);
            }
            let s = slot_of[r];
            place.push((s, counts[s]));
            counts[s] += 1;
        }
        let g = counts.iter().copied().max().unwrap_or(1);
        let mut members = vec![usize::MAX; users.len() * g]; // beam index at each grouped position
        for (i, &(s, j)) in place.iter().enumerate() {
            members[s * g + j] = i;
        }
        for s in 0..users.len() {
            let first = members[s * g];
            for j in counts[s]..g {
                members[s * g + j] = first;
            }
        }
        let rows_out = members.len();
        let (logp, category) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let mut dec: Vec<i64> = Vec::with_capacity(rows_out * (k as usize + 1));
            let mut used = vec![false; rows_out * m as usize];
            for (row, &i) in members.iter().enumerate() {
                dec.push(BOS);
                let u = &mut used[row * m as usize..(row + 1) * m as usize];
                for &t in input.prefix(i) {
                    dec.push(N_SPECIAL + t as i64);
                    u[t as usize / d as usize] = true;
                }
                if tiger {
                    // only codebook k is open at step k
                    for (r, x) in u.iter_mut().enumerate() {
                        *x = r != k as usize;
                    }
                }
            }
            let dec = Tensor::from_slice(&dec)
                .view([rows_out as i64, k + 1])
                .to_device(device);
            let used = Tensor::from_slice(&used)
                .view([rows_out as i64, m])
                .to_device(device);
            let sub = enc.repeat_rows(&Tensor::from_slice(&users).to_device(device));
            let out = self
                .model
                .decode_last_grouped(&sub, &dec, g as i64, false)
                .map_err(|e| InferError::Input(format!("decoder: {e}")))?;
            let logits = out.token_logits.select(1, 0).to_kind(Kind::Float); // [rows_out, vocab]
            let logp = (logits + codebook_mask(&vocab, &used)).log_softmax(-1, Kind::Float);
            let category = out
                .category_logits
                .select(1, 0)
                .to_kind(Kind::Float)
                .softmax(-1, Kind::Float);
            // back to beam order, dropping the padding
            let pos: Vec<i64> = place.iter().map(|&(s, j)| (s * g + j) as i64).collect();
            let pos = Tensor::from_slice(&pos).to_device(device);
            Ok((
                logp.index_select(0, &pos).narrow(1, N_SPECIAL, m * d), // [n, m * d]
                category.index_select(0, &pos),                         // [n, C]
            ))
        })?;
        let t = std::time::Instant::now();
        let out = StepOutput {
            logp: to_vec(&logp)?,
            category: to_vec(&category)?,
        };
        self.copy_secs += t.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// A float tensor as a flat row-major `Vec<f32>` on the CPU.
fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_device(tch::Device::Cpu).contiguous().view([-1]),
    )?)
}
