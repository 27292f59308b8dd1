//! The one error type of `reg4rec-precision`: every variant names the field, layer or file it is about.

/// Errors from configuring LADQ, collecting K-FAC traces and writing the history.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("config field `{field}`: {message}")]
    Config { field: String, message: String },
    #[error("layer `{layer}`: {message}")]
    Layer { layer: String, message: String },
    #[error("unknown precision mode `{0}`; expected fp32, bf16 or ladq")]
    UnknownMode(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Data(#[from] reg4rec_data::DataError),
}

impl PrecisionError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        PrecisionError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn layer(layer: impl Into<String>, message: impl Into<String>) -> Self {
        PrecisionError::Layer {
            layer: layer.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = PrecisionError> = std::result::Result<T, E>;
