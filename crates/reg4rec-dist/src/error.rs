//! The error type of `reg4rec-dist`.

/// Errors from rendezvous, collectives and the launch environment.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launch variable or config field is missing or malformed.
    #[error("distributed config `{field}`: {message}")]
    Config { field: String, message: String },
    /// c10d raised an error (connection refused or reset by a dead peer, timeout, type not supported...).
    #[error("c10d {op} failed (rank {rank} of {world}): {message}")]
    C10d {
        op: &'static str,
        rank: usize,
        world: usize,
        message: String,
    },
    /// A tensor that cannot take part in a collective.
    #[error("{0}")]
    Tensor(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl DistError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        DistError::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;
