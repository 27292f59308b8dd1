//! The one error type of `reg4rec-tokenizer`: every variant names the config field, file, or shape it is about.

use std::path::PathBuf;

/// Errors from configuring, training, saving and loading tokenizers and item indexes.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A config value is out of range; `field` is the dotted path of the field (`mpq.d`, `train.lr`).
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    /// The item feature matrix does not fit its declared shape or the tokenizer.
    #[error("item features: {0}")]
    Features(String),
    /// An item's token tuple is malformed (length or code out of range).
    #[error("codes: {0}")]
    Codes(String),
    /// Collision resolution could not give every item a distinct tuple.
    #[error("collision resolution: {0}")]
    Collision(String),
    /// A file of a saved tokenizer is missing, truncated, corrupt, or does not match the rest of the directory.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TokenizerError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        TokenizerError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TokenizerError::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
