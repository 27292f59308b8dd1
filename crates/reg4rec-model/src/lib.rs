//! The REG4Rec generative model: a causal item-level encoder over the user's sequence and a small decoder over
//! MPQ semantic tokens with a per-step category head, trained with CRSS (confidence-based reasoning step
//! selection) on every position of a user's sequence at once. Spec section 3.
//!
//! - [`decoding`]: the vocabulary (`PAD`, `BOS`, `EOS`, `SEP`, then `4 + r * D + j`), the open-codebook rule
//!   and the decoder's inputs, shared by training, the beam search's scorer and GRPO.
//! - Per-user batches ([`SeqBatch`], built by [`SeqBatchBuilder`] from the encoder's item windows).
//! - [`Reg4RecModel`] with `encode` / `decode` / `item_logits` (pre-norm transformer).
//! - [`crss`]: the CRSS pre-training loss (and the TIGER fixed-order variant) over every target of a batch.
//! - Pre-training ([`pretrain`]) through the training engine (`reg4rec-train`: the loop, AdamW, checkpoints,
//!   exact resume, data parallelism); [`checkpoint`]: the run's `config.json` and [`load_model`].

mod batch;
pub mod checkpoint;
pub mod config;
pub mod crss;
pub mod decoding;
mod error;
mod model;
mod train;

pub use batch::{check_codes, no_seen_items, SeqBatch, SeqBatchBuilder, StreamIds};
pub use checkpoint::{load_model, Which};
pub use config::{Mode, ModelConfig, PathScore, Schedule, StepTarget, TrainConfig};
pub use crss::Objective;
pub use decoding::Vocab;
pub use error::{ModelError, Result};
pub use model::{Decoded, Encoded, Reg4RecModel};
pub use reg4rec_precision::{LadqConfig, PrecisionMode};
pub use train::{
    precision_controller, pretrain, validation_loss, PretrainOptions, PretrainReport, ValidMetric,
};

/// libtorch's random generator is process-global: code that seeds it and needs reproducible draws (tests
/// running in parallel threads, several trainings in one process) holds this lock meanwhile.
pub fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
