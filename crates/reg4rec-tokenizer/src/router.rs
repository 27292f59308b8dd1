//! The MPQ router: `h(v) = softmax(W v + b)`, one weight per expert (spec section 2).

use tch::{nn, nn::Module, Kind, Tensor};

/// `p / "proj"`: Linear(input_dim -> m).
pub(crate) struct Router {
    proj: nn::Linear,
}

impl Router {
    pub fn new(p: nn::Path, input_dim: i64, m: i64) -> Self {
        Router {
            proj: nn::linear(p / "proj", input_dim, m, Default::default()),
        }
    }

    /// Expert weights of each row of `v` [batch, input_dim], summing to 1. [batch, m]
    pub fn forward(&self, v: &Tensor) -> Tensor {
        self.proj.forward(v).softmax(-1, Kind::Float)
    }
}
