//! Baselines every REG4Rec number is reported next to: item popularity and SASRec trained with
//! full-softmax cross-entropy, both scored by full ranking with the metrics of `reg4rec-data`.
//!
//! - [`popularity`]: training-interaction counts, one ranking for everybody.
//! - [`sasrec`]: the SASRec network and its [`SasRecConfig`] (presets `cpu`, `smoke`).
//! - [`trainer`]: [`train_sasrec`] (through the training engine `reg4rec-train`: early stopping, checkpoints,
//!   exact resume) and [`SasRecModel`] scoring.

pub mod error;
pub mod popularity;
pub mod sasrec;
pub mod trainer;

pub use error::{BaselineError, Result};
pub use popularity::{evaluate_popularity, popularity_ranks};
pub use sasrec::{Norm, Position, Samples, SasRec, SasRecConfig};
pub use trainer::{train_sasrec, EpochLog, SasRecModel, SasRecReport};
