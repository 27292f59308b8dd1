//! The one error type of `reg4rec-train`: every variant names the file, field or rank it is about.

use std::path::PathBuf;

/// Errors from the training loop, checkpoints and data parallelism.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    #[error("data-parallel: {0}")]
    Dist(String),
    /// An error of the model's objective or validator, passed through.
    #[error("{0}")]
    Task(String),
}

impl TrainError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        TrainError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps an error of the code plugged into the engine.
    pub fn task(e: impl std::fmt::Display) -> Self {
        TrainError::Task(e.to_string())
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
