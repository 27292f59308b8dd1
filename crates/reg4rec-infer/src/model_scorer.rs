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
        let (n, k) = (input.n() as i64, input.len as i64);
        let device = self.model.device();
        let tiger = self.model.config().mode == Mode::Tiger;
        let (logp, category) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let rows: Vec<i64> = input.rows.iter().map(|&r| r as i64).collect();
            let idx = Tensor::from_slice(&rows).to_device(device);
            let mut dec: Vec<i64> = Vec::with_capacity((n * (k + 1)) as usize);
            let mut used = vec![false; (n * m) as usize];
            for i in 0..input.n() {
                dec.push(BOS);
                for &t in input.prefix(i) {
                    dec.push(N_SPECIAL + t as i64);
                    used[i * m as usize + t as usize / d as usize] = true;
                }
                if tiger {
                    // only codebook k is open at step k
                    for r in 0..m as usize {
                        used[i * m as usize + r] = r != k as usize;
                    }
                }
            }
            let dec = Tensor::from_slice(&dec).view([n, k + 1]).to_device(device);
            let used = Tensor::from_slice(&used).view([n, m]).to_device(device);
            let out = self.model.decode(&enc.repeat_rows(&idx), &dec, false);
            let logits = out.token_logits.select(1, k).to_kind(Kind::Float); // [n, vocab]
            let logp = (logits + codebook_mask(&vocab, &used))
                .log_softmax(-1, Kind::Float)
                .narrow(1, N_SPECIAL, m * d); // [n, m * d]
            let category = out
                .category_logits
                .select(1, k)
                .to_kind(Kind::Float)
                .softmax(-1, Kind::Float); // [n, C]
            Ok((logp, category))
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
