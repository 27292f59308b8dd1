//! The one error type of `reg4rec-recommender`: a file problem names the file, a request problem names the
//! field.

use std::path::PathBuf;

/// Errors from loading a model directory and from recommendation requests.
#[derive(Debug, thiserror::Error)]
pub enum RecommenderError {
    /// A file of the model directory is missing, corrupt, or does not belong with the others.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A request or catalog change that cannot be served; `field` names what is wrong (`history[2]`, `k`, ...).
    #[error("request field `{field}`: {message}")]
    Request { field: String, message: String },
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
    #[error(transparent)]
    Tokenizer(#[from] reg4rec_tokenizer::TokenizerError),
    #[error(transparent)]
    Model(#[from] reg4rec_model::ModelError),
    #[error(transparent)]
    Infer(#[from] reg4rec_infer::InferError),
}

impl RecommenderError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        RecommenderError::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn request(field: impl Into<String>, message: impl Into<String>) -> Self {
        RecommenderError::Request {
            field: field.into(),
            message: message.into(),
        }
    }

    /// True for errors caused by the request (a client error), false for the model directory or the engine.
    pub fn is_request(&self) -> bool {
        matches!(self, RecommenderError::Request { .. })
    }
}

pub type Result<T, E = RecommenderError> = std::result::Result<T, E>;
