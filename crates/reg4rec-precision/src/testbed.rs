//! A stand-in transformer for benches and device throughput checks of LADQ (not the REG4Rec model): pre-norm
//! encoder blocks whose six projections (`q`, `k`, `v`, `o`, `up`, `down`) are LADQ [`Linear`]s, trained to
//! regress a fixed random target. Shapes: input `[B, T, d_model]` -> output `[B, T, d_model]`.

use crate::linear::{linear, LayerRegistry, Linear};
use tch::{nn, Kind, Tensor};

/// Size of a [`Testbed`].
#[derive(Debug, Clone, Copy)]
pub struct TestbedConfig {
    pub d_model: i64,
    pub d_ff: i64,
    pub n_heads: i64,
    pub n_blocks: usize,
}

struct Block {
    norm1: nn::LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    norm2: nn::LayerNorm,
    up: Linear,
    down: Linear,
    n_heads: i64,
}

impl Block {
    fn new(p: nn::Path, cfg: &TestbedConfig, reg: &LayerRegistry) -> Self {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let lin = |name: &str, i: i64, o: i64| linear(&p / name, i, o, Default::default(), reg);
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], Default::default()),
            q: lin("q", d, d),
            k: lin("k", d, d),
            v: lin("v", d, d),
            o: lin("o", d, d),
            norm2: nn::layer_norm(&p / "norm2", vec![d], Default::default()),
            up: lin("up", d, f),
            down: lin("down", f, d),
            n_heads: cfg.n_heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, d) = (x.size()[0], x.size()[1], x.size()[2]);
        let h = self.n_heads;
        let split = |y: Tensor| y.view([b, t, h, d / h]).transpose(1, 2); // [B, h, T, d/h]
        let n = x.apply(&self.norm1);
        let (q, k, v) = (
            split(self.q.forward(&n)),
            split(self.k.forward(&n)),
            split(self.v.forward(&n)),
        );
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None::<f64>,
            false,
        );
        let x = x + self
            .o
            .forward(&a.transpose(1, 2).contiguous().view([b, t, d]));
        let n = x.apply(&self.norm2);
        &x + self.down.forward(&self.up.forward(&n).gelu("none"))
    }
}

/// The stand-in model: `n_blocks` blocks under `p / "layers" / i`.
pub struct Testbed {
    blocks: Vec<Block>,
}

impl Testbed {
    /// `d_model` must be divisible by `n_heads` (the head split in `forward` needs it).
    pub fn new(p: nn::Path, cfg: &TestbedConfig, reg: &LayerRegistry) -> Self {
        Testbed {
            blocks: (0..cfg.n_blocks)
                .map(|i| Block::new(&p / "layers" / i, cfg, reg))
                .collect(),
        }
    }

    /// `[B, T, d_model]` -> `[B, T, d_model]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for b in &self.blocks {
            h = b.forward(&h);
        }
        h
    }

    /// Mean squared error to `target` (a mean over examples and positions).
    pub fn loss(&self, x: &Tensor, target: &Tensor) -> Tensor {
        (self.forward(x) - target).square().mean(Kind::Float)
    }
}
