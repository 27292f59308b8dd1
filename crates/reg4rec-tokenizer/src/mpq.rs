//! MPQ, MoE-based parallel quantisation codebooks (REG4Rec, arXiv 2508.15308; spec section 2).
//!
//! M expert encoders map an item's feature vector v to latents `e_r = E_r(v)` [d_z]; each expert quantises its
//! latent with its OWN codebook of D codewords (`c_r = argmin_j ||e_r - C_r[j]||^2`), so an item gets M
//! unordered tokens `<t{r}_{c_r}>`. A router `h(v) = softmax(W v + b)` weighs the experts, and one shared decoder
//! reconstructs `v_hat = Dec(sum_r h_r(v) z_r)` from the router-weighted sum of the chosen (straight-through)
//! codewords. Loss = `||v - v_hat||^2` + `orthogonality_weight` * mean squared cosine between the experts'
//! normalised latents of the same item + `decorrelation_weight` * mean squared cross-correlation between
//! different experts' latent dimensions over the batch + `collision_weight` * log of the soft probability that
//! two items of the batch share their code in every codebook (the experts then partition the items in
//! complementary ways, so few tuples collide) + `codebook_weight` * `||sg(e_r) - c_r||^2` + `commitment_weight` *
//! `||e_r - sg(c_r)||^2` (summed over experts). Codebooks start from k-means on the experts' latents after
//! `train.warmup_epochs` epochs without quantisation; dead codes are restarted (see [`crate::train`]).

use crate::codebook::Codebook;
use crate::error::{Result, TokenizerError};
use crate::mlp::Mlp;
use crate::router::Router;
use crate::train::{StepOut, TokenizerTrainConfig, VqAutoencoder};
use crate::trained::{Network, Trained};
use crate::TokenizerKind;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// MPQ hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MpqConfig {
    /// Number of experts = codebooks = tokens per item. Default 4.
    pub m: usize,
    /// Codewords per codebook. Default 256.
    pub d: usize,
    /// Latent (codeword) size. Default 32 (spec range 32..64).
    pub d_z: usize,
    /// Hidden width of each expert encoder MLP. Default 256.
    pub encoder_hidden: usize,
    /// Hidden width of the shared decoder MLP. Default 256.
    pub decoder_hidden: usize,
    /// Weight of the orthogonality regulariser. Default 0.1.
    pub orthogonality_weight: f64,
    /// Weight of the decorrelation regulariser: mean squared cross-correlation, over a batch, between the
    /// latent dimensions of different experts (the batch-level form of "orthogonal experts"; per-item cosines
    /// alone leave experts free to partition the items the same way, which makes tuples collide). Default 1.0.
    pub decorrelation_weight: f64,
    /// Weight of the joint-code collision regulariser: the log of the soft probability that two different items
    /// of a batch get the same code in EVERY codebook, `log mean_{i != k} prod_r <p_r(i), p_r(k)>` with
    /// `p_r(i)` the soft assignment of item i's expert-r latent to codebook r (see `collision_temperature`).
    /// Minimising it maximises the (Renyi-2) entropy of the joint token tuple, so the experts stop
    /// partitioning the items the same way; the codewords get no gradient from it. 0 disables it. Default 0.001:
    /// on amazon-beauty collisions before resolution fall from 9.6% (weight 0) to 3.4% (0.002: 2.0%), but the
    /// tokens also get harder to predict: on ml-100k the pre-trained model's validation Recall@10 was 0.056 at
    /// weight 0, 0.049 at 0.001 and 0.036 at 0.002, so a stronger weight trades recommendation quality for
    /// fewer (anyway resolved) collisions.
    pub collision_weight: f64,
    /// Temperature of the soft assignments of the collision regulariser, relative to each latent's mean squared
    /// distance to the codewords of its codebook (scale-free). Default 0.05.
    pub collision_temperature: f64,
    /// Weight of the codebook term `||sg(e) - c||^2`. Default 1.0.
    pub codebook_weight: f64,
    /// Weight (beta) of the commitment term `||e - sg(c)||^2`. Default 0.25.
    pub commitment_weight: f64,
    /// Optimisation, initialisation and restarts.
    pub train: TokenizerTrainConfig,
}

impl Default for MpqConfig {
    fn default() -> Self {
        MpqConfig {
            m: 4,
            d: 256,
            d_z: 32,
            encoder_hidden: 256,
            decoder_hidden: 256,
            orthogonality_weight: 0.1,
            decorrelation_weight: 1.0,
            collision_weight: 0.001,
            collision_temperature: 0.05,
            codebook_weight: 1.0,
            commitment_weight: 0.25,
            train: TokenizerTrainConfig::default(),
        }
    }
}

impl MpqConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        crate::validate_fields(
            (self.m, self.d, self.d_z),
            &[
                ("encoder_hidden", self.encoder_hidden),
                ("decoder_hidden", self.decoder_hidden),
            ],
            &[
                ("orthogonality_weight", self.orthogonality_weight),
                ("decorrelation_weight", self.decorrelation_weight),
                ("collision_weight", self.collision_weight),
                ("codebook_weight", self.codebook_weight),
                ("commitment_weight", self.commitment_weight),
            ],
        )?;
        if !(self.collision_temperature.is_finite() && self.collision_temperature > 0.0) {
            return Err(TokenizerError::config(
                "collision_temperature",
                "must be a positive number",
            ));
        }
        self.train.validate("train")
    }
}

/// One expert: `p / "encoder"` MLP(input_dim -> encoder_hidden -> d_z) and `p / "codebook"` [d, d_z].
struct Expert {
    encoder: Mlp,
    codebook: Codebook,
}

impl Expert {
    fn new(p: nn::Path, input_dim: i64, cfg: &MpqConfig) -> Self {
        Expert {
            encoder: Mlp::new(
                &p / "encoder",
                input_dim,
                cfg.encoder_hidden as i64,
                cfg.d_z as i64,
            ),
            codebook: Codebook::new(p, cfg.d as i64, cfg.d_z as i64),
        }
    }
}

/// The MPQ network: `experts / r`, `router`, `decoder`.
pub(crate) struct Mpq {
    experts: Vec<Expert>,
    /// Kept beside `experts` so the training loop can borrow them as a slice.
    codebooks: Vec<Codebook>,
    router: Router,
    decoder: Mlp,
    cfg: MpqConfig,
}

impl Mpq {
    /// Decoder on the router-weighted sum of `z` (m tensors [batch, d_z]). [batch, input_dim]
    fn decode(&self, v: &Tensor, z: &[Tensor]) -> Tensor {
        let h = self.router.forward(v); // [batch, m]
        let z = Tensor::stack(z, 1); // [batch, m, d_z]
        let mixed = (z * h.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float); // [batch, d_z]
        self.decoder.forward(&mixed)
    }
}

/// Mean over the batch and over ordered expert pairs of the squared cosine between latents. Scalar.
fn orthogonality_penalty(latents: &[Tensor]) -> Tensor {
    let m = latents.len() as i64;
    let unit: Vec<Tensor> = latents
        .iter()
        .map(|e| e / e.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-8))
        .collect();
    let u = Tensor::stack(&unit, 1); // [batch, m, d_z]
    let cos2 = u.matmul(&u.transpose(1, 2)).pow_tensor_scalar(2); // [batch, m, m]
    let off_diagonal =
        Tensor::ones([m, m], (Kind::Float, u.device())) - Tensor::eye(m, (Kind::Float, u.device()));
    (cos2 * off_diagonal)
        .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)
        .mean(Kind::Float)
        / (m * (m - 1)).max(1) as f64
}

/// Mean over ordered expert pairs (r != s) and latent dimension pairs of the squared batch correlation between
/// dimension i of expert r's latent and dimension j of expert s's. Scalar in [0, 1].
fn decorrelation_penalty(latents: &[Tensor]) -> Tensor {
    let m = latents.len() as i64;
    let z = Tensor::cat(latents, 1); // [batch, m * d_z]
    let (batch, width) = (z.size()[0], z.size()[1]);
    let d_z = width / m.max(1);
    let z = (&z - z.mean_dim(0, true, Kind::Float)) / z.std_dim(0, false, true).clamp_min(1e-4); // standardised columns
    let corr = z.tr().matmul(&z) / batch.max(1) as f64; // [m * d_z, m * d_z]
    let block = Tensor::eye(m, (Kind::Float, z.device()))
        .repeat_interleave_self_int(d_z, 0, None)
        .repeat_interleave_self_int(d_z, 1, None); // 1 on the diagonal blocks (same expert)
    let cross = Tensor::ones_like(&block) - block;
    (corr.pow_tensor_scalar(2) * cross).sum(Kind::Float) / ((m * (m - 1)).max(1) * d_z * d_z) as f64
}

/// Log of the mean, over ordered pairs of different rows, of the probability that both rows get the same code in
/// every codebook under the soft assignments `soft` (m tensors [batch, d]). Scalar; 0 for a batch of one row.
fn collision_penalty(soft: &[Tensor]) -> Tensor {
    let b = soft[0].size()[0];
    let device = soft[0].device();
    if b < 2 {
        return Tensor::zeros([], (Kind::Float, device));
    }
    let same_everywhere = soft
        .iter()
        .map(|p| p.matmul(&p.tr())) // [batch, batch]: P(same code in this codebook)
        .fold(Tensor::ones([b, b], (Kind::Float, device)), |a, g| a * g);
    let off_diagonal =
        Tensor::ones([b, b], (Kind::Float, device)) - Tensor::eye(b, (Kind::Float, device));
    ((same_everywhere * off_diagonal).sum(Kind::Float) / (b * (b - 1)) as f64)
        .clamp_min(1e-30)
        .log()
}

impl VqAutoencoder for Mpq {
    fn codebooks(&self) -> &[Codebook] {
        &self.codebooks
    }

    fn codebook_inputs(&self, x: &Tensor) -> Vec<Tensor> {
        self.experts.iter().map(|e| e.encoder.forward(x)).collect()
    }

    fn step(&self, x: &Tensor, quantise: bool) -> StepOut {
        let latents = self.codebook_inputs(x); // m x [batch, d_z]
        let orth = orthogonality_penalty(&latents) * self.cfg.orthogonality_weight;
        let decor = if self.cfg.decorrelation_weight > 0.0 && latents.len() > 1 {
            decorrelation_penalty(&latents) * self.cfg.decorrelation_weight
        } else {
            Tensor::zeros([], (Kind::Float, x.device()))
        };
        let collision = if quantise && self.cfg.collision_weight > 0.0 {
            let soft: Vec<Tensor> = self
                .codebooks
                .iter()
                .zip(&latents)
                .map(|(cb, e)| cb.soft_assign(e, self.cfg.collision_temperature))
                .collect();
            collision_penalty(&soft) * self.cfg.collision_weight
        } else {
            Tensor::zeros([], (Kind::Float, x.device()))
        };
        let (z, vq, codes) = if quantise {
            let q: Vec<_> = self
                .codebooks
                .iter()
                .zip(&latents)
                .map(|(cb, e)| cb.quantise(e))
                .collect();
            let vq = q
                .iter()
                .map(|q| {
                    &q.codebook_loss * self.cfg.codebook_weight
                        + &q.commitment_loss * self.cfg.commitment_weight
                })
                .fold(Tensor::zeros([], (Kind::Float, x.device())), |a, b| a + b);
            let codes = Tensor::stack(
                &q.iter()
                    .map(|q| q.codes.shallow_clone())
                    .collect::<Vec<_>>(),
                1,
            );
            let z: Vec<Tensor> = q.into_iter().map(|q| q.straight_through).collect();
            (z, vq, Some(codes))
        } else {
            (latents, Tensor::zeros([], (Kind::Float, x.device())), None)
        };
        let recon = (self.decode(x, &z) - x)
            .pow_tensor_scalar(2)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float);
        let total = &recon + orth + decor + collision + vq;
        StepOut {
            total,
            recon,
            codes,
        }
    }

    fn decode_codes(&self, x: &Tensor, codes: &Tensor) -> Tensor {
        let z: Vec<Tensor> = self
            .codebooks
            .iter()
            .enumerate()
            .map(|(r, cb)| cb.embed.index_select(0, &codes.select(1, r as i64)))
            .collect();
        self.decode(x, &z)
    }
}

impl Network for Mpq {
    type Config = MpqConfig;
    const KIND: TokenizerKind = TokenizerKind::Mpq;
    const ORDERED: bool = false;

    fn new(p: &nn::Path, input_dim: i64, cfg: &MpqConfig) -> Self {
        let experts: Vec<Expert> = (0..cfg.m)
            .map(|r| Expert::new(p / "experts" / r, input_dim, cfg))
            .collect();
        let codebooks = experts
            .iter()
            .map(|e| Codebook {
                embed: e.codebook.embed.shallow_clone(),
            })
            .collect();
        Mpq {
            experts,
            codebooks,
            router: Router::new(p / "router", input_dim, cfg.m as i64),
            decoder: Mlp::new(
                p / "decoder",
                cfg.d_z as i64,
                cfg.decoder_hidden as i64,
                input_dim,
            ),
            cfg: cfg.clone(),
        }
    }

    fn check(cfg: &MpqConfig) -> Result<(usize, usize, &TokenizerTrainConfig)> {
        cfg.validate().map(|()| (cfg.m, cfg.d, &cfg.train))
    }
}

/// A trained MPQ tokenizer: the network and every item's distinct, unordered token tuple.
pub(crate) type MpqTokenizer = Trained<Mpq>;

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(codes: &[i64], d: i64) -> Tensor {
        Tensor::from_slice(codes).one_hot(d).to_kind(Kind::Float)
    }

    #[test]
    fn collision_penalty_is_the_log_probability_of_sharing_every_code() {
        // Two codebooks, four items. All share both codes: probability 1, penalty log 1 = 0.
        let same = [one_hot(&[0, 0, 0, 0], 3), one_hot(&[2, 2, 2, 2], 3)];
        assert!(collision_penalty(&same).double_value(&[]).abs() < 1e-6);
        // Codebook 0 splits them in two pairs, codebook 1 agrees everywhere: 4 of the 12 ordered pairs collide.
        let half = [one_hot(&[0, 0, 1, 1], 3), one_hot(&[2, 2, 2, 2], 3)];
        let v = collision_penalty(&half).double_value(&[]);
        assert!((v - (4.0f64 / 12.0).ln()).abs() < 1e-5, "{v}");
        // Complementary partitions: every item has its own tuple, far lower than either.
        let apart = [one_hot(&[0, 0, 1, 1], 3), one_hot(&[0, 1, 0, 1], 3)];
        assert!(collision_penalty(&apart).double_value(&[]) < -20.0);
        // Soft assignments lie in between, and one row has nothing to collide with.
        let soft = [
            Tensor::from_slice(&[0.5f32, 0.5, 0.0, 0.5, 0.5, 0.0]).view([2, 3]),
            Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0]).view([2, 3]),
        ];
        assert!((collision_penalty(&soft).double_value(&[]) - 0.5f64.ln()).abs() < 1e-6);
        assert_eq!(
            collision_penalty(&[one_hot(&[1], 3)]).double_value(&[]),
            0.0
        );
    }
}
