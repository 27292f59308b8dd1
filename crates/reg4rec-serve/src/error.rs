//! The one error type of `reg4rec-serve`.

/// Errors from starting or running the server and the load generator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Recommender(#[from] reg4rec_recommender::RecommenderError),
    #[error("load test: {0}")]
    Load(String),
    #[error("the engine thread stopped: {0}")]
    Engine(String),
}

pub type Result<T, E = ServeError> = std::result::Result<T, E>;
