//! The trained-tokenizer wrapper MPQ and RQ-VAE share: building the network from its config, training,
//! encoding, collision resolution and the report, save and load. What differs between the two is the
//! [`Network`] (its variables, forward pass and config).

use crate::codes::Codes;
use crate::error::Result;
use crate::store::{self, Manifest};
use crate::train::{self, TokenizerTrainConfig, VqAutoencoder};
use crate::{
    collision, FeatureMatrix, ItemTokenizer, TokenizerError, TokenizerKind, TokenizerReport,
};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// A tokenizer network and its config.
pub(crate) trait Network: VqAutoencoder + Send + Sized {
    type Config: Clone + Serialize + DeserializeOwned + Send;
    const KIND: TokenizerKind;
    /// Whether an item's tokens are ordered (RQ-VAE levels) or a set (MPQ experts).
    const ORDERED: bool;
    /// The network's variables under `p` for items of `input_dim` features.
    fn new(p: &nn::Path, input_dim: i64, cfg: &Self::Config) -> Self;
    /// Checks every field of `cfg` (naming the first bad one) and returns its (m codebooks, d codes each,
    /// training section).
    fn check(cfg: &Self::Config) -> Result<(usize, usize, &TokenizerTrainConfig)>;
}

/// A trained tokenizer: the network and every item's distinct token tuple.
pub(crate) struct Trained<N: Network> {
    cfg: N::Config,
    /// libtorch threads of [`ItemTokenizer::encode`] (`train.threads` of the config).
    threads: usize,
    input_dim: usize,
    vs: nn::VarStore,
    model: N,
    codes: Codes,
}

impl<N: Network> Trained<N> {
    /// Feature rows must be `[n, input_dim]`.
    fn check_features(&self, features: &Tensor) -> Result<()> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.input_dim as i64 {
            return Err(TokenizerError::Shape {
                name: "features".into(),
                expected: vec![-1, self.input_dim as i64],
                found: size,
            });
        }
        Ok(())
    }

    /// Seeded variables of a fresh network. libtorch's generator is process-global: the seeding and the draws
    /// of the initialisation hold a lock, so tokenizers trained at once in one process get the same variables as
    /// when trained alone (training itself draws only from its own seeded generator).
    fn build(cfg: &N::Config, seed: u64, input_dim: usize) -> (nn::VarStore, N) {
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = N::new(&vs.root(), input_dim as i64, cfg);
        (vs, model)
    }

    /// Trains on every item's features, resolves collisions, and reports the metrics.
    pub fn train(features: FeatureMatrix<'_>, cfg: &N::Config) -> Result<(Self, TokenizerReport)> {
        let started = std::time::Instant::now();
        let (m, d, train_cfg) = N::check(cfg)?;
        features.check_fits(m, d)?;
        let _threads = train::ThreadsGuard::set(train_cfg.threads);
        let x = features.to_tensor();
        let (vs, model) = Self::build(cfg, train_cfg.seed, features.dim);
        train::fit(&model, &vs, &x, train_cfg, N::KIND.as_str())?;
        let enc = train::encode_all(&model, &x.to_kind(Kind::Float), N::ORDERED, 4096)?;
        let res = collision::resolve(&enc.codes, &enc.dists)?;
        let report = TokenizerReport {
            collision_rate_before: res.rate_before,
            collision_rate_after: res.rate_after,
            utilisation: res.codes.utilisation(),
            perplexity: res.codes.perplexity(),
            recon_loss: enc.recon_loss,
            orthogonality: enc.orthogonality,
            seconds: started.elapsed().as_secs_f64(),
        };
        let tok = Trained {
            cfg: cfg.clone(),
            threads: train_cfg.threads,
            input_dim: features.dim,
            vs,
            model,
            codes: res.codes,
        };
        Ok((tok, report))
    }

    /// Reads a directory written by [`ItemTokenizer::save`] whose manifest is `manifest`.
    pub fn load(dir: &Path, manifest: &Manifest) -> Result<Self> {
        let cfg: N::Config = store::parse_config(dir, manifest)?;
        let (_, _, train_cfg) = N::check(&cfg)?;
        let (seed, threads) = (train_cfg.seed, train_cfg.threads);
        let codes = store::read_codes(dir, manifest, N::ORDERED)?;
        let (mut vs, model) = Self::build(&cfg, seed, manifest.input_dim);
        store::load_weights(dir, manifest, &mut vs)?;
        Ok(Trained {
            cfg,
            threads,
            input_dim: manifest.input_dim,
            vs,
            model,
            codes,
        })
    }
}

impl<N: Network> ItemTokenizer for Trained<N> {
    fn kind(&self) -> TokenizerKind {
        N::KIND
    }

    fn codes(&self) -> &Codes {
        &self.codes
    }

    fn input_dim(&self) -> usize {
        self.input_dim
    }

    fn encode(&self, features: &Tensor) -> Result<Tensor> {
        self.check_features(features)?;
        let _threads = train::ThreadsGuard::set(self.threads);
        Ok(train::nearest_codes(
            &self.model,
            &features.to_kind(Kind::Float),
        ))
    }

    fn encode_new(&self, features: &Tensor, existing: &Codes) -> Result<Codes> {
        self.check_features(features)?;
        let _threads = train::ThreadsGuard::set(self.threads);
        let enc = train::encode_all(
            &self.model,
            &features.to_kind(Kind::Float),
            N::ORDERED,
            4096,
        )?;
        collision::resolve_against(existing, &enc.codes, &enc.dists)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        store::save(
            dir,
            N::KIND,
            &self.cfg,
            self.input_dim,
            &self.vs,
            &self.codes,
        )
    }
}
