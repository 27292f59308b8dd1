//! RQ-VAE (Lee et al., CVPR 2022), the semantic-ID tokenizer of TIGER (Rajput et al., NeurIPS 2023): the
//! ablation baseline of MPQ (spec section 2).
//!
//! One encoder maps v to `e = E(v)` [d_z]; M residual levels each quantise what the previous levels left:
//! `r_0 = e`, `c_l = argmin_j ||r_l - C_l[j]||^2`, `r_{l+1} = r_l - C_l[c_l]`. The item's tokens are the M codes
//! in level order (ORDERED: level l is generated l-th). The decoder reconstructs v from the straight-through sum
//! `e + sg(sum_l C_l[c_l] - e)`. Loss = `||v - v_hat||^2` + sum over levels of `codebook_weight` *
//! `||sg(r_l) - c_l||^2` + `commitment_weight` * `||r_l - sg(c_l)||^2`. Codebooks start from k-means on each
//! level's residuals (level by level) after the warm-up; dead codes are restarted; collisions are resolved with
//! the same rule as MPQ ([`crate::collision`]) instead of TIGER's extra disambiguation token, so both tokenizers
//! give exactly M tokens per item.

use crate::codebook::Codebook;
use crate::error::Result;
use crate::mlp::Mlp;
use crate::train::{StepOut, TokenizerTrainConfig, VqAutoencoder};
use crate::trained::{Network, Trained};
use crate::TokenizerKind;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// RQ-VAE hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RqVaeConfig {
    /// Residual levels = tokens per item. Default 4 (same as MPQ's M, for the ablation).
    pub m: usize,
    /// Codewords per level. Default 256.
    pub d: usize,
    /// Latent (codeword) size. Default 32.
    pub d_z: usize,
    /// Hidden width of the encoder MLP. Default 256.
    pub encoder_hidden: usize,
    /// Hidden width of the decoder MLP. Default 256.
    pub decoder_hidden: usize,
    /// Weight of the codebook term. Default 1.0.
    pub codebook_weight: f64,
    /// Weight (beta) of the commitment term. Default 0.25.
    pub commitment_weight: f64,
    /// Optimisation, initialisation and restarts.
    pub train: TokenizerTrainConfig,
}

impl Default for RqVaeConfig {
    fn default() -> Self {
        RqVaeConfig {
            m: 4,
            d: 256,
            d_z: 32,
            encoder_hidden: 256,
            decoder_hidden: 256,
            codebook_weight: 1.0,
            commitment_weight: 0.25,
            train: TokenizerTrainConfig::default(),
        }
    }
}

impl RqVaeConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        crate::validate_fields(
            (self.m, self.d, self.d_z),
            &[
                ("encoder_hidden", self.encoder_hidden),
                ("decoder_hidden", self.decoder_hidden),
            ],
            &[
                ("codebook_weight", self.codebook_weight),
                ("commitment_weight", self.commitment_weight),
            ],
        )?;
        self.train.validate("train")
    }
}

/// The RQ-VAE network: `encoder`, `levels / l / codebook`, `decoder`.
pub(crate) struct RqVae {
    encoder: Mlp,
    levels: Vec<Codebook>,
    decoder: Mlp,
    cfg: RqVaeConfig,
}

impl VqAutoencoder for RqVae {
    fn codebooks(&self) -> &[Codebook] {
        &self.levels
    }

    fn codebook_inputs(&self, x: &Tensor) -> Vec<Tensor> {
        let mut r = self.encoder.forward(x); // [batch, d_z]
        let mut out = Vec::with_capacity(self.levels.len());
        for cb in &self.levels {
            let codes = cb.distances(&r).argmin(-1, false);
            let next = &r - cb.embed.index_select(0, &codes);
            out.push(r);
            r = next;
        }
        out
    }

    fn step(&self, x: &Tensor, quantise: bool) -> StepOut {
        let e = self.encoder.forward(x); // [batch, d_z]
        let zero = || Tensor::zeros([], (Kind::Float, x.device()));
        let (z, vq, codes) = if quantise {
            let mut residual = e.shallow_clone();
            let mut sum = Tensor::zeros_like(&e);
            let mut vq = zero();
            let mut codes = Vec::with_capacity(self.levels.len());
            for cb in &self.levels {
                let q = cb.quantise(&residual);
                vq = vq
                    + &q.codebook_loss * self.cfg.codebook_weight
                    + &q.commitment_loss * self.cfg.commitment_weight;
                sum = &sum + q.codewords.detach();
                // Not `-=`: that would modify in place a tensor autograd still needs.
                residual = &residual - q.codewords.detach();
                codes.push(q.codes);
            }
            let z = &e + (sum - &e).detach(); // straight-through
            (z, vq, Some(Tensor::stack(&codes, 1)))
        } else {
            (e, zero(), None)
        };
        let recon = (self.decoder.forward(&z) - x)
            .pow_tensor_scalar(2)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float);
        let total = &recon + vq;
        StepOut {
            total,
            recon,
            codes,
        }
    }

    fn decode_codes(&self, _x: &Tensor, codes: &Tensor) -> Tensor {
        let z = self
            .levels
            .iter()
            .enumerate()
            .map(|(l, cb)| cb.embed.index_select(0, &codes.select(1, l as i64)))
            .fold(None, |acc: Option<Tensor>, c| {
                Some(acc.map_or(c.shallow_clone(), |a| a + c))
            });
        match z {
            Some(z) => self.decoder.forward(&z),
            None => Tensor::zeros([0], (Kind::Float, codes.device())),
        }
    }
}

impl Network for RqVae {
    type Config = RqVaeConfig;
    const KIND: TokenizerKind = TokenizerKind::RqVae;
    const ORDERED: bool = true;

    fn new(p: &nn::Path, input_dim: i64, cfg: &RqVaeConfig) -> Self {
        RqVae {
            encoder: Mlp::new(
                p / "encoder",
                input_dim,
                cfg.encoder_hidden as i64,
                cfg.d_z as i64,
            ),
            levels: (0..cfg.m)
                .map(|l| Codebook::new(p / "levels" / l, cfg.d as i64, cfg.d_z as i64))
                .collect(),
            decoder: Mlp::new(
                p / "decoder",
                cfg.d_z as i64,
                cfg.decoder_hidden as i64,
                input_dim,
            ),
            cfg: cfg.clone(),
        }
    }

    fn check(cfg: &RqVaeConfig) -> Result<(usize, usize, &TokenizerTrainConfig)> {
        cfg.validate().map(|()| (cfg.m, cfg.d, &cfg.train))
    }
}

/// A trained RQ-VAE tokenizer: the network and every item's distinct, ordered token tuple.
pub(crate) type RqVaeTokenizer = Trained<RqVae>;
