//! The two-layer perceptron used by every encoder and decoder of the tokenizers.

use tch::{nn, nn::Module, Tensor};

/// `p / "fc1"`: Linear(input -> hidden), ReLU, `p / "fc2"`: Linear(hidden -> output).
pub(crate) struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    pub fn new(p: nn::Path, input: i64, hidden: i64, output: i64) -> Self {
        Mlp {
            fc1: nn::linear(&p / "fc1", input, hidden, Default::default()),
            fc2: nn::linear(&p / "fc2", hidden, output, Default::default()),
        }
    }

    /// [batch, input] -> [batch, output]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).relu())
    }
}
