//! Configuration of the generative model ([`ModelConfig`]) and of pre-training ([`TrainConfig`]). Every spec
//! default is a field here; `M`, `D` and the number of categories are derived from the tokenizer's codes and
//! the dataset, never typed in.

use crate::error::{ModelError, Result};
use reg4rec_precision::{LadqConfig, PrecisionError, PrecisionMode};
use serde::{Deserialize, Serialize};

/// Which training objective and token semantics the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// REG4Rec: unordered MPQ tokens, CRSS step selection, category loss weighted by `lambda_cat`.
    Reg4rec,
    /// TIGER baseline: ordered RQ-VAE tokens generated in codebook order 0..M with plain teacher forcing; the
    /// category head is still computed but has weight 0 in the loss.
    Tiger,
}

/// How a reasoning path's tokens are scored: the distribution each step's token is drawn from, in training,
/// in the beam search and in every path score. The path score is the sum of its steps' log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathScore {
    /// The spec's CRSS step: each step conditioned on the tokens emitted so far, one softmax over every token
    /// of the codebooks still open (choosing the codebook and the code together).
    Open,
    /// Each step conditioned on the tokens emitted so far, each open codebook's tokens normalised on their own
    /// (a step's log-probability is its codebook's): the path score is a chain-rule log-probability of the
    /// item's tokens in the order CRSS chose.
    Codebook,
    /// Every token scored from the context alone (the decoder's first state, before any token), each
    /// codebook normalised on its own, as RPG predicts long parallel codes: the path score is the sum of the
    /// item's M token log-probabilities, the same in every order, so one first-step pass scores every item of
    /// any catalogue exactly. The later decoder steps still predict the step's category (CORP) and CRSS still
    /// emits the most confident token first. Training scores the first step only, so its cost does not grow
    /// with M's square.
    Parallel,
}

/// Architecture of the encoder-decoder transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Objective and token semantics. Default `reg4rec`.
    pub mode: Mode,
    /// Total number of layers N: N/2 encoder layers and N/2 decoder blocks. Must be even. Default 4.
    pub n_layers: usize,
    /// Hidden size. Default 128.
    pub d_model: usize,
    /// Attention heads (must divide `d_model`). Default 4.
    pub n_heads: usize,
    /// Feed-forward inner size. Default 512.
    pub d_ff: usize,
    /// Dropout on embeddings, attention weights and residual branches. Default 0.1.
    pub dropout: f64,
    /// History length L: the encoder reads the most recent L items of a history (preceded by a start entry
    /// when the history is shorter), and pre-training keeps the last L positions of each training sequence.
    /// Default 20 (spec).
    pub history_len: usize,
    /// Add a learned item-id embedding to each item's input embedding (the sum of its token embeddings).
    /// Default true.
    pub item_id_embedding: bool,
    /// The item head: a dense score of every item after a context (tied to the items' input embeddings),
    /// trained with full-softmax cross-entropy (`pretrain.lambda_item`) and used by inference to re-rank the
    /// items the beam search generated (`infer.dense_weight`). Default true.
    pub item_head: bool,
    /// A learned scalar added to the item head's logit of every item already in the history the context
    /// was read from (the encoder's window): the model learns from the training positions how likely a user
    /// is to pick an item again (negative where items are rarely repeated, positive where they are). The
    /// ranking itself never drops a history item. Needs `item_head`. Default false.
    pub repeat_bias: bool,
    /// How the reasoning path's tokens are scored ([`PathScore`]): `open`, `codebook` or `parallel`.
    /// Default `open` (the spec's CRSS step).
    pub path: PathScore,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            mode: Mode::Reg4rec,
            n_layers: 4,
            d_model: 128,
            n_heads: 4,
            d_ff: 512,
            dropout: 0.1,
            history_len: 20,
            item_id_embedding: true,
            item_head: true,
            repeat_bias: false,
            path: PathScore::Open,
        }
    }
}

impl ModelConfig {
    /// The `[model]` section of preset `name` (`smoke`, `cpu`, `gpu`: [`reg4rec_data::presets`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(reg4rec_data::presets::section(name, "model")?)
    }

    pub fn validate(&self) -> Result<()> {
        if self.n_layers < 2 || !self.n_layers.is_multiple_of(2) {
            return Err(ModelError::config(
                "n_layers",
                format!("must be even and >= 2, got {}", self.n_layers),
            ));
        }
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ModelError::config(
                "n_heads",
                format!(
                    "must be >= 1 and divide d_model = {}, got {}",
                    self.d_model, self.n_heads
                ),
            ));
        }
        if self.d_ff == 0 {
            return Err(ModelError::config("d_ff", "must be >= 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::config(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        if self.history_len == 0 {
            return Err(ModelError::config("history_len", "must be >= 1"));
        }
        if self.repeat_bias && !self.item_head {
            return Err(ModelError::config(
                "repeat_bias",
                "biases the item head's logits: it needs item_head = true",
            ));
        }
        Ok(())
    }
}

/// What a CRSS step's token loss rewards (spec section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepTarget {
    /// Probability mass on any remaining target token: `-log sum_{t in remaining} p(t)` (the spec's default).
    Set,
    /// The remaining target token the model rates highest (the one fed next): `-log p(fed)`.
    Chosen,
}

pub use reg4rec_train::Schedule;

/// Pre-training hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of initialisation, shuffling (seed + epoch) and dropout (seed + step). Default 42.
    pub seed: u64,
    /// Maximum number of epochs. Default 30.
    pub epochs: usize,
    /// Users (training sequences) per step; every position of each is trained. Default 128.
    pub batch_size: usize,
    /// Peak learning rate. Default 1e-3.
    pub lr: f64,
    /// Linear warmup steps from 0 to `lr`. Default 200.
    pub warmup_steps: u64,
    /// Decay after warmup down to `lr * final_lr_ratio` at the last step. Default `cosine`.
    pub schedule: Schedule,
    /// Final learning rate as a fraction of `lr`. Default 0.05.
    pub final_lr_ratio: f64,
    /// AdamW decoupled weight decay, applied to every tensor of rank >= 2 (linear weights and embedding tables),
    /// not to biases or norm parameters. Default 0.01.
    pub weight_decay: f64,
    /// AdamW beta1. Default 0.9.
    pub beta1: f64,
    /// AdamW beta2. Default 0.98.
    pub beta2: f64,
    /// AdamW epsilon. Default 1e-8.
    pub eps: f64,
    /// Clip the global gradient norm to this value (0 = off). Default 1.0.
    pub grad_clip: f64,
    /// What each CRSS step's token loss rewards: `set` (any remaining target token) or `chosen` (the token fed
    /// next). Default `set`.
    pub step_target: StepTarget,
    /// Weight of the category loss (REG4Rec mode; TIGER mode uses 0). Default 0.5.
    pub lambda_cat: f64,
    /// Weight of the item head's full-softmax cross-entropy (models with `item_head`). Default 1.0.
    pub lambda_item: f64,
    /// Weight of the path's item-level cross-entropy: the full softmax over every item of its first-step path
    /// score (the sum of its M tokens' logits at the decoder's first state, the [`PathScore::Parallel`]
    /// score up to a constant per context), so the tokens are trained to rank whole items against each
    /// other, not only token by token. Its cost grows with the catalogue, as the item head's; 0 turns it off.
    /// Default 0.
    pub lambda_path: f64,
    /// Weight of the item head's distillation into the path: the cross-entropy of the path's item-level
    /// distribution (as `lambda_path`'s) against the item head's softmax over every item (detached: the item
    /// head teaches, the path learns). Needs an item head; inference still never reads the item head in a
    /// path-ranked list. 0 turns it off. Default 0.
    pub lambda_distill: f64,
    /// Run the linear layers and attention in bf16 (weights, optimizer and loss stay f32). Default false.
    pub bf16: bool,
    /// Compute precision of the transformer's linear layers (`--precision`): `fp32`, `bf16` (the same as
    /// `bf16: true`: every linear layer and attention in bf16) or `ladq` (per-layer fp32 / bf16 / fp8 from
    /// K-FAC traces sampled every `ladq.sample_every` steps; attention and the heads stay f32). Default `fp32`.
    pub precision: PrecisionMode,
    /// LADQ settings, used when `precision` is `ladq`. Default: `LadqConfig::default()` (sample every 100
    /// steps, 25% of layers fp32, 25% fp8, history in `ladq.jsonl` of the run directory).
    pub ladq: LadqConfig,
    /// Early stopping: epochs without improvement of the validation criterion before stopping (0 = never).
    /// Default 5.
    pub patience: usize,
    /// Also checkpoint every this many steps inside an epoch (0 = only at epoch ends). Default 0.
    pub checkpoint_every: u64,
    /// Append a step record to `metrics.jsonl` every this many steps (>= 1). Default 10.
    pub log_every: u64,
    /// Users per batch of the validation loss. Default 512.
    pub valid_batch_size: usize,
    /// Device: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available). Default `cpu`.
    pub device: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 42,
            epochs: 30,
            batch_size: 128,
            lr: 1e-3,
            warmup_steps: 200,
            schedule: Schedule::Cosine,
            final_lr_ratio: 0.05,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            grad_clip: 1.0,
            step_target: StepTarget::Set,
            lambda_cat: 0.5,
            lambda_item: 1.0,
            lambda_path: 0.0,
            lambda_distill: 0.0,
            bf16: false,
            precision: PrecisionMode::Fp32,
            ladq: LadqConfig::default(),
            patience: 5,
            checkpoint_every: 0,
            log_every: 10,
            valid_batch_size: 512,
            device: "cpu".into(),
        }
    }
}

impl TrainConfig {
    /// The `[pretrain]` section of preset `name` (`smoke`, `cpu`, `gpu`: [`reg4rec_data::presets`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(reg4rec_data::presets::section(name, "pretrain")?)
    }

    /// The engine's AdamW constants of this config.
    pub fn adamw(&self) -> reg4rec_train::AdamWConfig {
        reg4rec_train::AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// The engine's learning-rate schedule of this config.
    pub fn lr_schedule(&self) -> reg4rec_train::LrSchedule {
        reg4rec_train::LrSchedule {
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            schedule: self.schedule,
            final_lr_ratio: self.final_lr_ratio,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let pos = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ModelError::config(
                    field,
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        if self.epochs == 0 {
            return Err(ModelError::config("epochs", "must be >= 1"));
        }
        if self.batch_size == 0 {
            return Err(ModelError::config("batch_size", "must be >= 1"));
        }
        if self.valid_batch_size == 0 {
            return Err(ModelError::config("valid_batch_size", "must be >= 1"));
        }
        if self.log_every == 0 {
            return Err(ModelError::config("log_every", "must be >= 1"));
        }
        pos("lr", self.lr)?;
        pos("eps", self.eps)?;
        if !(0.0..=1.0).contains(&self.final_lr_ratio) {
            return Err(ModelError::config("final_lr_ratio", "must be in [0, 1]"));
        }
        for (field, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(ModelError::config(
                    field,
                    format!("must be in [0, 1), got {v}"),
                ));
            }
        }
        for (field, v) in [
            ("weight_decay", self.weight_decay),
            ("grad_clip", self.grad_clip),
            ("lambda_cat", self.lambda_cat),
            ("lambda_item", self.lambda_item),
            ("lambda_path", self.lambda_path),
            ("lambda_distill", self.lambda_distill),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ModelError::config(field, format!("must be >= 0, got {v}")));
            }
        }
        parse_device(&self.device)?;
        if self.bf16 && self.precision == PrecisionMode::Ladq {
            return Err(ModelError::config(
                "bf16",
                "bf16: true conflicts with precision = ladq; set only precision",
            ));
        }
        validate_ladq(&self.ladq)
    }

    /// The precision mode in effect: `bf16` when `bf16` is set, else `precision`.
    pub fn precision_mode(&self) -> PrecisionMode {
        if self.bf16 {
            PrecisionMode::Bf16
        } else {
            self.precision
        }
    }

    /// The libtorch device named by `device`; an error when it is a GPU this machine does not have.
    pub fn device(&self) -> Result<tch::Device> {
        require_device(&self.device)
    }
}

/// Checks a [`LadqConfig`] nested under the field `ladq` of a trainer config (pre-training, alignment); the
/// error names the field as `ladq.<field>`.
pub fn validate_ladq(ladq: &LadqConfig) -> Result<()> {
    ladq.validate().map_err(|e| match e {
        PrecisionError::Config { field, message } => {
            ModelError::config(format!("ladq.{field}"), message)
        }
        other => ModelError::config("ladq", other.to_string()),
    })
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (the syntax only; [`require_device`] also checks the machine).
pub fn parse_device(s: &str) -> Result<tch::Device> {
    Ok(match s {
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        "auto" => tch::Device::cuda_if_available(),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| {
                ModelError::config(
                    "device",
                    format!("expected cpu, cuda, cuda:N or auto, got `{other}`"),
                )
            })?,
    })
}

/// [`parse_device`], and a CUDA device must exist in this libtorch on this machine: one clear error instead
/// of a crash inside libtorch when a GPU setting meets a CPU-only build or machine.
pub fn require_device(s: &str) -> Result<tch::Device> {
    let device = parse_device(s)?;
    if let tch::Device::Cuda(i) = device {
        check_cuda(s, i, tch::Cuda::device_count().max(0) as usize)?;
    }
    Ok(device)
}

/// The error for `cuda:index` when `available` CUDA devices exist.
fn check_cuda(name: &str, index: usize, available: usize) -> Result<()> {
    match available {
        0 => Err(ModelError::config(
            "device",
            format!(
                "`{name}` asks for a GPU, but this libtorch sees no CUDA device (a CPU-only build, or no GPU \
                 on this machine): use device = \"cpu\" (the cpu preset), or on a GPU machine install the CUDA \
                 build with `cargo xtask setup --cuda`"
            ),
        )),
        n if index >= n => Err(ModelError::config(
            "device",
            format!("`{name}`: this machine has {n} CUDA device(s), numbered from 0"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_gpu_is_one_clear_error() {
        let e = check_cuda("cuda", 0, 0).unwrap_err().to_string();
        assert!(
            e.contains("device") && e.contains("no CUDA device") && e.contains("setup --cuda"),
            "{e}"
        );
        let e = check_cuda("cuda:2", 2, 2).unwrap_err().to_string();
        assert!(e.contains("2 CUDA device(s)"), "{e}");
        assert!(check_cuda("cuda:1", 1, 2).is_ok());
        // On this machine: whatever libtorch sees, `cuda` parses only when a device exists.
        let has_gpu = tch::Cuda::device_count() > 0;
        assert_eq!(require_device("cuda").is_ok(), has_gpu);
        assert!(parse_device("cuda").is_ok());
        assert_eq!(parse_device("cpu").unwrap(), tch::Device::Cpu);
    }

    #[test]
    fn defaults_and_presets_validate_and_bad_fields_are_named() {
        for m in [
            ModelConfig::default(),
            ModelConfig::preset("cpu").unwrap(),
            ModelConfig::preset("smoke").unwrap(),
        ] {
            m.validate().unwrap();
        }
        for t in [
            TrainConfig::default(),
            TrainConfig::preset("cpu").unwrap(),
            TrainConfig::preset("smoke").unwrap(),
        ] {
            t.validate().unwrap();
        }
        let e = ModelConfig {
            n_layers: 3,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("n_layers"), "{e}");
        let e = TrainConfig {
            device: "tpu".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");
        let e = serde_json::from_str::<ModelConfig>(r#"{"d_modle": 3}"#).unwrap_err();
        assert!(e.to_string().contains("d_modle"), "{e}");
        let m: ModelConfig = serde_json::from_str(r#"{"mode": "tiger"}"#).unwrap();
        assert_eq!((m.mode, m.history_len), (Mode::Tiger, 20));
    }
}
