//! The one error type of `reg4rec-align`: every variant names the config field, file or input it is about.

use std::path::PathBuf;

/// Errors from configuring and running PARS alignment.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    /// A config value is out of range; `field` is the name of the [`crate::AlignConfig`] field.
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    /// A run directory or checkpoint is missing, from another run, or inconsistent.
    #[error("{path}: {message}")]
    Run { path: PathBuf, message: String },
    /// The dataset, codes and model disagree, or an input is out of range.
    #[error("{0}")]
    Input(String),
    /// Training diverged (a non-finite loss), with the step it happened at.
    #[error("step {step}: {message}")]
    Diverged { step: u64, message: String },
    #[error(transparent)]
    Model(#[from] reg4rec_model::ModelError),
    #[error(transparent)]
    Train(#[from] reg4rec_train::TrainError),
    #[error(transparent)]
    Infer(#[from] reg4rec_infer::InferError),
    #[error(transparent)]
    Tokenizer(#[from] reg4rec_tokenizer::TokenizerError),
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl AlignError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        AlignError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn run(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        AlignError::Run {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = AlignError> = std::result::Result<T, E>;
