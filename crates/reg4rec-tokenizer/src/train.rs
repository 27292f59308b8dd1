//! The training loop both tokenizers share: warm-up without quantisation, k-means initialisation of every
//! codebook on its inputs, then Adam on reconstruction + regularisers + VQ terms, with dead codes restarted at the
//! end of each epoch; and the final encoding of the whole catalogue (nearest codes, distances, metrics).
//!
//! Set `REG4REC_TOKENIZER_TRACE` (to anything) to log every epoch's losses and restarts to stderr.

use crate::codebook::Codebook;
use crate::codes::Codes;
use crate::error::{Result, TokenizerError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

/// Optimisation settings shared by MPQ and RQ-VAE (the `train` section of their configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerTrainConfig {
    /// Passes over the items. Default 40.
    pub epochs: usize,
    /// Items per Adam step. Default 256.
    pub batch_size: usize,
    /// Adam learning rate. Default 1e-3.
    pub lr: f64,
    /// Epochs trained without quantisation (decoder on the continuous latents) before the codebooks are
    /// initialised by k-means on the encoders' outputs; 0 initialises on the untrained encoders. Default 2.
    pub warmup_epochs: usize,
    /// Lloyd iterations of the k-means initialisation. Default 20.
    pub kmeans_iters: usize,
    /// A code chosen by fewer than this many items during an epoch is dead and restarted. Default 1.
    pub dead_code_threshold: usize,
    /// Restart dead codes on the codebook inputs of items whose token tuple currently collides with another
    /// item's (drawn with probability proportional to their distance to the nearest code), instead of on any
    /// item's: a restarted code then splits a crowd of near-identical items. Default true.
    pub restart_at_collisions: bool,
    /// Dead codes are restarted after every epoch before this fraction of `epochs` (the last epochs let the
    /// codebooks settle). Default 0.8.
    pub restart_until: f64,
    /// Seed of parameter initialisation, shuffling, k-means and restarts. Default 42.
    pub seed: u64,
    /// libtorch intra-op threads while training and in `ItemTokenizer::encode` (restored afterwards); 0 keeps the process
    /// setting. Default 1: these matrices are small, and on a shared CPU several threads spin-waiting on each
    /// other were 10x slower than one (measured on 2 busy cores).
    pub threads: usize,
}

impl Default for TokenizerTrainConfig {
    fn default() -> Self {
        TokenizerTrainConfig {
            epochs: 40,
            batch_size: 256,
            lr: 1e-3,
            warmup_epochs: 2,
            kmeans_iters: 20,
            dead_code_threshold: 1,
            restart_at_collisions: true,
            restart_until: 0.8,
            seed: 42,
            threads: 1,
        }
    }
}

impl TokenizerTrainConfig {
    /// `prefix` is the dotted path of this section in error messages (`train`).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let f = |name: &str| format!("{prefix}.{name}");
        if self.epochs == 0 {
            return Err(TokenizerError::config(f("epochs"), "must be >= 1"));
        }
        if self.warmup_epochs >= self.epochs {
            return Err(TokenizerError::config(
                f("warmup_epochs"),
                format!("must be < epochs = {}", self.epochs),
            ));
        }
        if self.batch_size == 0 {
            return Err(TokenizerError::config(f("batch_size"), "must be >= 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TokenizerError::config(f("lr"), "must be a positive number"));
        }
        if !(0.0..=1.0).contains(&self.restart_until) {
            return Err(TokenizerError::config(
                f("restart_until"),
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// Sets libtorch's intra-op thread count for its lifetime (0: unchanged).
pub(crate) struct ThreadsGuard(Option<i32>);

impl ThreadsGuard {
    pub fn set(threads: usize) -> Self {
        if threads == 0 {
            return ThreadsGuard(None);
        }
        let old = tch::get_num_threads();
        tch::set_num_threads(threads.min(i32::MAX as usize) as i32);
        ThreadsGuard(Some(old))
    }
}

impl Drop for ThreadsGuard {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            tch::set_num_threads(old);
        }
    }
}

/// One training step's outputs.
pub(crate) struct StepOut {
    /// Scalar loss to minimise.
    pub total: Tensor,
    /// Scalar reconstruction loss.
    pub recon: Tensor,
    /// Chosen codes when quantising. [batch, m] (i64)
    pub codes: Option<Tensor>,
}

/// What the shared loop needs from a tokenizer model.
pub(crate) trait VqAutoencoder {
    fn codebooks(&self) -> &[Codebook];
    /// The input of each codebook for `x` under the current codebooks: m tensors [n, d_z].
    fn codebook_inputs(&self, x: &Tensor) -> Vec<Tensor>;
    /// Forward one batch [batch, dim]; `quantise = false` during warm-up.
    fn step(&self, x: &Tensor, quantise: bool) -> StepOut;
    /// Reconstruction of `x` [n, dim] from the hard codes [n, m] (i64).
    fn decode_codes(&self, x: &Tensor, codes: &Tensor) -> Tensor;
}

/// Per-epoch losses, for the progress bar and tests.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrainLog {
    pub recon: Vec<f64>,
    pub total: Vec<f64>,
    pub restarted: Vec<usize>,
}

fn init_codebooks(
    model: &impl VqAutoencoder,
    x: &Tensor,
    cfg: &TokenizerTrainConfig,
    rng: &mut ChaCha8Rng,
) {
    // Level by level: an RQ-VAE level's inputs depend on the levels before it.
    for r in 0..model.codebooks().len() {
        let inputs = tch::no_grad(|| model.codebook_inputs(x));
        model.codebooks()[r].kmeans_init(&inputs[r], cfg.kmeans_iters, rng);
    }
}

/// Trains `model` (whose variables live in `vs`) on all rows of `x` [n, dim].
pub(crate) fn fit(
    model: &impl VqAutoencoder,
    vs: &nn::VarStore,
    x: &Tensor,
    cfg: &TokenizerTrainConfig,
    label: &str,
) -> Result<TrainLog> {
    let mut opt = nn::Adam::default().build(vs, cfg.lr)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let n = x.size()[0];
    let m = model.codebooks().len();
    let d = model.codebooks()[0].embed.size()[0];
    let mut log = TrainLog::default();
    let pb = reg4rec_data::progress::bar(cfg.epochs as u64, label);
    let mut order: Vec<i64> = (0..n).collect();
    let trace = std::env::var_os("REG4REC_TOKENIZER_TRACE").is_some();
    let started = std::time::Instant::now();
    for epoch in 0..cfg.epochs {
        let quantise = epoch >= cfg.warmup_epochs;
        if epoch == cfg.warmup_epochs {
            init_codebooks(model, x, cfg, &mut rng);
        }
        order.shuffle(&mut rng);
        let mut usage = Tensor::zeros([m as i64, d], (Kind::Int64, x.device()));
        let (mut recon_sum, mut total_sum, mut rows) = (0.0, 0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let xb = x.index_select(0, &Tensor::from_slice(chunk));
            let out = model.step(&xb, quantise);
            opt.backward_step(&out.total);
            let b = chunk.len();
            recon_sum += out.recon.double_value(&[]) * b as f64;
            total_sum += out.total.double_value(&[]) * b as f64;
            rows += b;
            if let Some(codes) = out.codes {
                let offsets = Tensor::arange(m as i64, (Kind::Int64, x.device())) * d;
                let flat = (codes + offsets.unsqueeze(0)).flatten(0, -1);
                usage = usage
                    .view([-1])
                    .index_add(0, &flat, &Tensor::ones_like(&flat))
                    .view([m as i64, d]);
            }
        }
        log.recon.push(recon_sum / rows as f64);
        log.total.push(total_sum / rows as f64);
        let mut restarted = 0;
        if quantise && ((epoch + 1) as f64) < cfg.restart_until * cfg.epochs as f64 {
            let inputs = tch::no_grad(|| model.codebook_inputs(x));
            // Restart candidates: the items whose tuple currently collides (when enabled and any do), else all.
            let pool = if cfg.restart_at_collisions {
                colliding_items(model, &inputs)?
            } else {
                None
            };
            for (r, cb) in model.codebooks().iter().enumerate() {
                let counts: Vec<i64> = Vec::try_from(&usage.get(r as i64)).unwrap_or_default();
                let dead: Vec<i64> = counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| (c as usize) < cfg.dead_code_threshold)
                    .map(|(j, _)| j as i64)
                    .collect();
                restarted += dead.len();
                match &pool {
                    Some(rows) => cb.restart(&dead, &inputs[r].index_select(0, rows), &mut rng),
                    None => cb.restart(&dead, &inputs[r], &mut rng),
                }
            }
        }
        log.restarted.push(restarted);
        if trace {
            eprintln!(
                "{label} epoch {epoch}: recon {:.5} total {:.5} restarted {restarted} ({:.1}s)",
                log.recon[epoch],
                log.total[epoch],
                started.elapsed().as_secs_f64()
            );
        }
        pb.set_message(format!(
            "{label} recon {:.4} dead {restarted}",
            log.recon[epoch]
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(log)
}

/// The whole catalogue encoded by a trained model.
pub(crate) struct Encoded {
    /// Nearest-code tuples (before collision resolution).
    pub codes: Codes,
    /// Squared distance of every item's codebook input to every code: `[n, m, d]` row-major.
    pub dists: Vec<f32>,
    /// Mean over items of the squared reconstruction error (summed over features) from the hard codes.
    pub recon_loss: f64,
    /// Mean over items and codebook pairs of |cosine| between the item's codebook inputs.
    pub orthogonality: f64,
}

/// Rows whose nearest-code tuple (from the codebook `inputs`) is shared with another row, or `None` if none is.
fn colliding_items(model: &impl VqAutoencoder, inputs: &[Tensor]) -> Result<Option<Tensor>> {
    let codes = tch::no_grad(|| {
        let c: Vec<Tensor> = model
            .codebooks()
            .iter()
            .zip(inputs)
            .map(|(cb, e)| cb.distances(e).argmin(-1, false))
            .collect();
        Tensor::stack(&c, 1)
    });
    let m = inputs.len();
    let flat = Vec::<i64>::try_from(&codes.flatten(0, -1))?;
    let mut count: std::collections::HashMap<&[i64], u32> = std::collections::HashMap::new();
    for t in flat.chunks(m) {
        *count.entry(t).or_default() += 1;
    }
    let rows: Vec<i64> = flat
        .chunks(m)
        .enumerate()
        .filter(|(_, t)| count[t] > 1)
        .map(|(i, _)| i as i64)
        .collect();
    Ok((!rows.is_empty()).then(|| Tensor::from_slice(&rows)))
}

/// Nearest codes of `x` [n, dim] without the metrics. [n, m] (i64)
pub(crate) fn nearest_codes(model: &impl VqAutoencoder, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let inputs = model.codebook_inputs(x);
        let codes: Vec<Tensor> = model
            .codebooks()
            .iter()
            .zip(&inputs)
            .map(|(cb, e)| cb.distances(e).argmin(-1, false))
            .collect();
        Tensor::stack(&codes, 1)
    })
}

pub(crate) fn encode_all(
    model: &impl VqAutoencoder,
    x: &Tensor,
    ordered: bool,
    chunk: i64,
) -> Result<Encoded> {
    let n = x.size()[0];
    let m = model.codebooks().len();
    let d = model.codebooks()[0].embed.size()[0] as usize;
    let mut tuples: Vec<u16> = Vec::with_capacity(n as usize * m);
    let mut dists: Vec<f32> = Vec::with_capacity(n as usize * m * d);
    let (mut recon, mut orth) = (0.0f64, 0.0f64);
    tch::no_grad(|| -> Result<()> {
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let xb = x.narrow(0, start, len);
            let inputs = model.codebook_inputs(&xb);
            let dist: Vec<Tensor> = model
                .codebooks()
                .iter()
                .zip(&inputs)
                .map(|(cb, e)| cb.distances(e))
                .collect();
            let dist = Tensor::stack(&dist, 1); // [len, m, d]
            let codes = dist.argmin(-1, false); // [len, m]
            tuples.extend(
                Vec::<i64>::try_from(&codes.flatten(0, -1))?
                    .into_iter()
                    .map(|c| c as u16),
            );
            dists.extend(Vec::<f32>::try_from(&dist.flatten(0, -1))?);
            let err = (model.decode_codes(&xb, &codes) - &xb)
                .pow_tensor_scalar(2)
                .sum(Kind::Double);
            recon += err.double_value(&[]);
            if m > 1 {
                let unit: Vec<Tensor> = inputs
                    .iter()
                    .map(|e| e / e.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12))
                    .collect();
                let u = Tensor::stack(&unit, 1); // [len, m, d_z]
                let cos = u.matmul(&u.transpose(1, 2)).abs(); // [len, m, m]
                let off_diagonal = Tensor::ones([m as i64, m as i64], (Kind::Float, x.device()))
                    - Tensor::eye(m as i64, (Kind::Float, x.device()));
                let off = (cos * off_diagonal).sum(Kind::Double);
                orth += off.double_value(&[]) / (m * (m - 1)) as f64;
            }
            start += len;
        }
        Ok(())
    })?;
    Ok(Encoded {
        codes: Codes::new(m, d, ordered, tuples)?,
        dists,
        recon_loss: recon / n.max(1) as f64,
        orthogonality: orth / n.max(1) as f64,
    })
}
