//! The generative model's run directory: the engine's layout ([`reg4rec_train::checkpoint`]: checkpoints,
//! best weights, `metrics.jsonl`) with the model's own `config.json` ([`RunConfig`]: everything needed to
//! rebuild the model from the directory alone), and loading a trained model back ([`load_model`]).

use crate::config::{ModelConfig, TrainConfig};
use crate::decoding::Vocab;
use crate::error::{ModelError, Result};
use crate::model::Reg4RecModel;
use reg4rec_data::io::read_json;
use reg4rec_tokenizer::Codes;
use reg4rec_train::checkpoint::FORMAT_VERSION;
use reg4rec_train::RunDir;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Device;

/// `config.json` of a run: everything needed to rebuild the model from the directory alone. Its
/// `format_version` is the engine's [`FORMAT_VERSION`] (3: the per-user layout's model, the codes hash a
/// sha256, weights with checksums).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub format_version: u32,
    pub dataset: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub vocab: Vocab,
    pub n_categories: usize,
    pub n_items: usize,
    /// sha256 of the codes (m, d, ordered, tuples), hex; resume and loading refuse other codes.
    pub codes_hash: String,
}

impl RunConfig {
    /// Reads a run's `config.json`, refusing another format version.
    pub fn read(run: &RunDir) -> Result<Self> {
        let cfg: RunConfig = read_json(&run.config())?;
        if cfg.format_version != FORMAT_VERSION {
            return Err(ModelError::checkpoint(
                run.config(),
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    cfg.format_version
                ),
            ));
        }
        Ok(cfg)
    }
}

/// The sha256 (hex) of token codes: m, d, whether they are ordered, and every tuple.
pub fn codes_hash(codes: &Codes) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((codes.m as u64).to_le_bytes());
    h.update((codes.d as u64).to_le_bytes());
    h.update([codes.ordered as u8]);
    for c in &codes.tuples {
        h.update(c.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

/// Saves the model's variables (names from the module tree).
pub fn save_weights(model: &Reg4RecModel, path: &Path) -> Result<()> {
    Ok(reg4rec_train::save_weights(model.var_store(), path)?)
}

/// Loads weights saved by [`save_weights`] into `model`; every variable must be present with its shape, and no
/// other tensor may be in the file.
pub fn load_weights(model: &mut Reg4RecModel, path: &Path) -> Result<()> {
    Ok(reg4rec_train::load_weights(model.var_store(), path)?)
}

/// Which weights of a run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The best validation epoch (`best.json`).
    Best,
    /// The latest checkpoint (`latest.json`).
    Latest,
}

/// Rebuilds the model of a run directory from its `config.json`, the item `codes` it was trained on (checked
/// against the run's codes hash) and the chosen weights.
pub fn load_model(
    run_dir: &Path,
    which: Which,
    codes: &Codes,
    device: Device,
) -> Result<(Reg4RecModel, RunConfig)> {
    let run = RunDir::new(run_dir);
    let cfg = RunConfig::read(&run)?;
    if codes_hash(codes) != cfg.codes_hash {
        return Err(ModelError::checkpoint(
            run.config(),
            "the run was trained on other item codes than the ones given",
        ));
    }
    let mut model = Reg4RecModel::new(&cfg.model, codes, cfg.n_categories, device)?;
    let weights = match which {
        Which::Best => run.best_weights()?,
        Which::Latest => run.latest_weights()?,
    };
    load_weights(&mut model, &weights)?;
    Ok((model, cfg))
}
