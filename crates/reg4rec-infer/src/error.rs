//! The one error type of `reg4rec-infer`: every variant names the config field, shape or input it is about.

/// Errors from configuring and running inference.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A config value is out of range; `field` is the name of the [`crate::InferConfig`] field.
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    /// A scorer returned a buffer of the wrong size.
    #[error("scorer output `{name}`: expected shape {expected:?}, found {found} values")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: usize,
    },
    /// The item index and the scorer (or the dataset) disagree, or an input is out of range.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Tokenizer(#[from] reg4rec_tokenizer::TokenizerError),
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl InferError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        InferError::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = InferError> = std::result::Result<T, E>;
