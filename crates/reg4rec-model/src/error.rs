//! The one error type of `reg4rec-model`: every variant names the file, field or shape it is about.

use std::path::PathBuf;

/// Errors from building, training, saving and loading the generative model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        what: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("{0}")]
    Input(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    #[error(transparent)]
    Precision(#[from] reg4rec_precision::PrecisionError),
    #[error("validation metric callback: {0}")]
    Callback(String),
    #[error(transparent)]
    Train(#[from] reg4rec_train::TrainError),
}

impl ModelError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
