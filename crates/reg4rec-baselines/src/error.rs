//! The one error type of `reg4rec-baselines`: every variant names the field, file, tensor or input it is about.

use std::path::PathBuf;

/// Errors from configuring, training, checkpointing and evaluating the baselines.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A configuration value is out of range (or differs from the run being resumed).
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    /// Reading or writing data files (atomic writes, JSON) failed.
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    /// A libtorch call failed.
    #[error("{context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
    /// A checkpoint file is missing, malformed or from another format version.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// The training engine failed (checkpoints, the loop).
    #[error(transparent)]
    Train(#[from] reg4rec_train::TrainError),
    /// The split or the item universe cannot be used (no users, an item id out of range, ...).
    #[error("{what}: {message}")]
    Input { what: String, message: String },
}

impl BaselineError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        BaselineError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn torch(context: impl Into<String>, source: tch::TchError) -> Self {
        BaselineError::Torch {
            context: context.into(),
            source,
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        BaselineError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        BaselineError::Input {
            what: what.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = BaselineError> = std::result::Result<T, E>;
