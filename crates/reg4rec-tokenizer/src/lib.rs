//! Item tokenizers (spec section 2): MPQ ([`mpq`]: M parallel MoE autoencoder experts with their own codebooks,
//! giving every item M UNORDERED semantic tokens) and the RQ-VAE baseline ([`rqvae`]: M ORDERED residual
//! tokens). Both end with distinct tuples ([`collision`]) and feed the [`index::ItemIndex`] that constrained
//! decoding intersects.
//!
//! ```no_run
//! use reg4rec_tokenizer::{train, FeatureMatrix, ItemIndex, TokenizerConfig, TokenizerKind};
//! # fn main() -> reg4rec_tokenizer::Result<()> {
//! let values = vec![0.0f32; 1000 * 16]; // n_items x dim, row-major
//! let features = FeatureMatrix::new(1000, 16, &values)?;
//! let (tokenizer, report) = train(features, &TokenizerConfig::default_for(TokenizerKind::Mpq))?;
//! println!("{}", serde_json::to_string(&report).unwrap());
//! tokenizer.save(std::path::Path::new("runs/tok"))?;
//! let index = ItemIndex::new(tokenizer.codes())?;
//! # Ok(()) }
//! ```

mod codebook;
pub mod codes;
pub mod collision;
pub mod error;
pub mod index;
mod mlp;
pub mod mpq;
mod router;
pub mod rqvae;
pub mod store;
pub mod train;
mod trained;

pub use codes::{Codes, Token};
pub use error::{Result, TokenizerError};
pub use index::ItemIndex;
pub use mpq::MpqConfig;
pub use rqvae::RqVaeConfig;
pub use train::TokenizerTrainConfig;

use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;
use trained::Network;

/// Which tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenizerKind {
    /// MPQ: unordered tokens from parallel experts.
    #[serde(rename = "mpq")]
    Mpq,
    /// RQ-VAE (TIGER): ordered residual tokens.
    #[serde(rename = "rqvae")]
    RqVae,
}

impl TokenizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerKind::Mpq => "mpq",
            TokenizerKind::RqVae => "rqvae",
        }
    }
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TokenizerKind {
    type Err = TokenizerError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mpq" => Ok(TokenizerKind::Mpq),
            "rqvae" | "rq-vae" => Ok(TokenizerKind::RqVae),
            other => Err(TokenizerError::config(
                "tokenizer",
                format!("unknown tokenizer `{other}` (expected mpq or rqvae)"),
            )),
        }
    }
}

/// The config of either tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerConfig {
    Mpq(MpqConfig),
    RqVae(RqVaeConfig),
}

impl TokenizerConfig {
    /// The documented defaults of `kind`.
    pub fn default_for(kind: TokenizerKind) -> Self {
        match kind {
            TokenizerKind::Mpq => TokenizerConfig::Mpq(MpqConfig::default()),
            TokenizerKind::RqVae => TokenizerConfig::RqVae(RqVaeConfig::default()),
        }
    }

    /// Parses a JSON config of `kind` (fields left out keep their defaults; unknown fields are errors).
    pub fn from_json(kind: TokenizerKind, json: &str) -> Result<Self> {
        let bad = |e: serde_json::Error| TokenizerError::config(kind.as_str(), e.to_string());
        let cfg = match kind {
            TokenizerKind::Mpq => TokenizerConfig::Mpq(serde_json::from_str(json).map_err(bad)?),
            TokenizerKind::RqVae => {
                TokenizerConfig::RqVae(serde_json::from_str(json).map_err(bad)?)
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn kind(&self) -> TokenizerKind {
        match self {
            TokenizerConfig::Mpq(_) => TokenizerKind::Mpq,
            TokenizerConfig::RqVae(_) => TokenizerKind::RqVae,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            TokenizerConfig::Mpq(c) => c.validate(),
            TokenizerConfig::RqVae(c) => c.validate(),
        }
    }
}

/// A borrowed item feature matrix: `values` is row-major `n_items x dim` (the layout of
/// `reg4rec_data::features::ItemFeatures`).
#[derive(Debug, Clone, Copy)]
pub struct FeatureMatrix<'a> {
    pub n_items: usize,
    pub dim: usize,
    pub values: &'a [f32],
}

impl<'a> FeatureMatrix<'a> {
    /// Checks the length and that every value is finite.
    pub fn new(n_items: usize, dim: usize, values: &'a [f32]) -> Result<Self> {
        if n_items == 0 || dim == 0 {
            return Err(TokenizerError::Features(format!(
                "shape {n_items} x {dim}: both must be >= 1"
            )));
        }
        if values.len() != n_items * dim {
            return Err(TokenizerError::Features(format!(
                "{} values for shape {n_items} x {dim}",
                values.len()
            )));
        }
        if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
            return Err(TokenizerError::Features(format!(
                "item {} feature {} is not finite",
                pos / dim,
                pos % dim
            )));
        }
        Ok(FeatureMatrix {
            n_items,
            dim,
            values,
        })
    }

    /// Borrows an [`ItemFeatures`](reg4rec_data::ItemFeatures) matrix (checked like [`FeatureMatrix::new`]).
    pub fn of(features: &'a reg4rec_data::ItemFeatures) -> Result<Self> {
        Self::new(features.n_items, features.dim, &features.values)
    }

    pub(crate) fn check_fits(&self, m: usize, d: usize) -> Result<()> {
        if (d as f64).powi(m as i32) < self.n_items as f64 {
            return Err(TokenizerError::Features(format!(
                "{} items cannot have distinct tuples over m = {m} codebooks of d = {d} codes",
                self.n_items
            )));
        }
        Ok(())
    }

    /// [n_items, dim] float tensor (a copy).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(self.values).view([self.n_items as i64, self.dim as i64])
    }
}

/// The metrics of a trained tokenizer; the JSON object `reg4rec tokenize --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerReport {
    /// Share of items whose nearest-code tuple an earlier item already had ([`Codes::collision_rate`]).
    pub collision_rate_before: f64,
    /// The same after resolution (0 unless resolution failed, which is an error).
    pub collision_rate_after: f64,
    /// Per codebook: fraction of the d codes some item uses (final tuples).
    pub utilisation: Vec<f64>,
    /// Per codebook: exp(entropy) of the code distribution over items (final tuples), from 1 to d.
    pub perplexity: Vec<f64>,
    /// Mean over items of `||v - v_hat||^2` (summed over features) decoded from the nearest codes.
    pub recon_loss: f64,
    /// Mean over items and codebook pairs of |cosine| between the item's codebook inputs: the experts'
    /// latents for MPQ, the residuals of the levels for RQ-VAE.
    pub orthogonality: f64,
    /// Wall-clock seconds of training, encoding and resolution.
    pub seconds: f64,
}

/// What the rest of the system needs from a trained tokenizer.
pub trait ItemTokenizer: Send {
    fn kind(&self) -> TokenizerKind;
    /// Every item's distinct token tuple (after collision resolution).
    fn codes(&self) -> &Codes;
    /// Size of an item feature vector.
    fn input_dim(&self) -> usize;
    /// Nearest-code tuples of feature rows [n, input_dim] (no collision resolution). [n, m] (i64)
    fn encode(&self, features: &Tensor) -> Result<Tensor>;
    /// Distinct tuples for new items with feature rows `[n, input_dim]`, resolved against `existing` (the
    /// catalog's current codes, which never move): see [`collision::resolve_against`].
    fn encode_new(&self, features: &Tensor, existing: &Codes) -> Result<Codes>;
    /// Writes the directory [`load`] reads.
    fn save(&self, dir: &Path) -> Result<()>;
}

/// Trains the tokenizer `config` names on `features`.
pub fn train(
    features: FeatureMatrix<'_>,
    config: &TokenizerConfig,
) -> Result<(Box<dyn ItemTokenizer>, TokenizerReport)> {
    Ok(match config {
        TokenizerConfig::Mpq(c) => boxed(mpq::MpqTokenizer::train(features, c)?),
        TokenizerConfig::RqVae(c) => boxed(rqvae::RqVaeTokenizer::train(features, c)?),
    })
}

/// Loads a directory written by [`ItemTokenizer::save`].
pub fn load(dir: &Path) -> Result<Box<dyn ItemTokenizer>> {
    let manifest = store::read_manifest(dir)?;
    Ok(match manifest.kind {
        TokenizerKind::Mpq => Box::new(mpq::MpqTokenizer::load(dir, &manifest)?),
        TokenizerKind::RqVae => Box::new(rqvae::RqVaeTokenizer::load(dir, &manifest)?),
    })
}

fn boxed<N: Network + 'static>(
    (t, r): (trained::Trained<N>, TokenizerReport),
) -> (Box<dyn ItemTokenizer>, TokenizerReport) {
    (Box::new(t), r)
}

/// The checks both configs share: the shape `(m, d, d_z)`, hidden `widths` (>= 1) and loss `weights` (finite,
/// >= 0), each named by its field.
pub(crate) fn validate_fields(
    (m, d, d_z): (usize, usize, usize),
    widths: &[(&str, usize)],
    weights: &[(&str, f64)],
) -> Result<()> {
    if !(1..=64).contains(&m) {
        return Err(TokenizerError::config("m", "must be in 1..=64"));
    }
    if !(2..=65536).contains(&d) {
        return Err(TokenizerError::config("d", "must be in 2..=65536"));
    }
    if d_z == 0 {
        return Err(TokenizerError::config("d_z", "must be >= 1"));
    }
    if let Some((field, _)) = widths.iter().find(|(_, v)| *v == 0) {
        return Err(TokenizerError::config(*field, "must be >= 1"));
    }
    if let Some((field, _)) = weights.iter().find(|(_, w)| !(w.is_finite() && *w >= 0.0)) {
        return Err(TokenizerError::config(
            *field,
            "must be a finite number >= 0",
        ));
    }
    Ok(())
}
