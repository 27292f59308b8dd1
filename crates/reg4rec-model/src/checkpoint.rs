//! Run directory and checkpoints. Everything is written atomically through `reg4rec_data::io`.
//!
//! ```text
//! run_dir/
//!   config.json                 RunConfig: format version, model + train config, vocab, categories, codes hash
//!   metrics.jsonl               one JSON record per logged step and per epoch
//!   checkpoints/step-N/         model.safetensors, optimizer.safetensors (AdamW moments), state.json
//!   latest.json                 {"checkpoint": "checkpoints/step-N", "step": N}: written last, so a killed run
//!                               always points at a complete checkpoint
//!   best/step-N.safetensors     weights of the best validation epoch
//!   best.json                   {"weights": "best/step-N.safetensors", step, epoch, valid_loss, valid_metric}
//! ```
//!
//! RNG state is a function of the seed and the position: epoch `e` shuffles with `seed + e` and step `s` reseeds
//! dropout with `seed + s`, so `state.json` (step, epoch) is all a resume needs.

use crate::config::{ModelConfig, TrainConfig};
use crate::error::{ModelError, Result};
use crate::model::Reg4RecModel;
use crate::vocab::Vocab;
use reg4rec_data::io::{read_json, write_atomic, write_json_atomic};
use reg4rec_tokenizer::Codes;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Version of the run-directory layout and checkpoint files (2: the per-user layout's model; 3: the codes hash
/// is a sha256).
pub const FORMAT_VERSION: u32 = 3;

/// `config.json` of a run: everything needed to rebuild the model from the directory alone.
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

/// `state.json` of a checkpoint: the training position and early-stopping state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    pub format_version: u32,
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch the next step belongs to (equals the number of finished epochs at an epoch boundary).
    pub epoch: usize,
    /// Steps of `epoch` already done (0 at an epoch boundary).
    pub epoch_step: u64,
    /// Best validation criterion so far (lower is better; the metric callback's value is negated).
    pub best_criterion: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Epochs since the criterion last improved.
    pub bad_epochs: usize,
    /// Set when early stopping fired or the last epoch finished.
    pub finished: bool,
    /// Sum of the training loss over the current epoch's steps so far, and their count of targets (to resume
    /// the epoch mean exactly).
    pub epoch_loss_sum: f64,
    pub epoch_examples: u64,
}

/// `latest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latest {
    pub checkpoint: String,
    pub step: u64,
}

/// `best.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    pub weights: String,
    pub step: u64,
    pub epoch: usize,
    pub valid_loss: f64,
    pub valid_metric: Option<f64>,
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

/// Metadata key of the sha256 over a safetensors file's tensors (names, shapes and data, by name).
const SHA256_KEY: &str = "sha256";

/// The sha256 (hex) of named tensors given as (name, shape, little-endian bytes), in name order.
fn tensors_sha256<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, shape, bytes) in sorted {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("{:x}", h.finalize())
}

/// Writes named f32 tensors as one safetensors file, atomically, with the sha256 of its tensors in the
/// metadata ([`load_tensors`] verifies it).
pub fn save_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(named.len());
    for (name, t) in named {
        if t.kind() != Kind::Float {
            return Err(ModelError::checkpoint(
                path,
                format!("`{name}` is {:?}, only f32 is saved", t.kind()),
            ));
        }
        let t = t.to_device(Device::Cpu).contiguous();
        let n = t.numel();
        let mut values = vec![0f32; n];
        t.copy_data(&mut values, n);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((
            name.clone(),
            t.size().iter().map(|&s| s as usize).collect(),
            bytes,
        ));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, shape, bytes) in &raw {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| ModelError::checkpoint(path, format!("`{name}`: {e:?}")))?;
        views.push((name.clone(), view));
    }
    let sha = tensors_sha256(
        raw.iter()
            .map(|(n, shape, b)| (n.as_str(), shape.as_slice(), b.as_slice())),
    );
    let meta = HashMap::from([
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        (SHA256_KEY.to_string(), sha),
    ]);
    let bytes = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| ModelError::checkpoint(path, format!("cannot serialise: {e:?}")))?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads every tensor of a safetensors file (f32 only) onto the CPU, verifying the sha256 its metadata
/// records (files written before it was recorded carry none and are read as they are).
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::checkpoint(path, e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| ModelError::checkpoint(path, format!("{e:?}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::checkpoint(path, format!("{e:?}")))?;
    if let Some(want) = header.metadata().as_ref().and_then(|m| m.get(SHA256_KEY)) {
        let tensors = st.tensors();
        let got = tensors_sha256(
            tensors
                .iter()
                .map(|(n, v)| (n.as_str(), v.shape(), v.data())),
        );
        if &got != want {
            return Err(ModelError::checkpoint(
                path,
                format!("checksum mismatch (recorded {want}, contents {got}): the file is corrupt"),
            ));
        }
    }
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(ModelError::checkpoint(
                path,
                format!("`{name}` is {:?}, expected F32", view.dtype()),
            ));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        out.push((name, Tensor::from_slice(&values).view(shape.as_slice())));
    }
    Ok(out)
}

/// Saves the model's variables (names from the module tree).
pub fn save_weights(model: &Reg4RecModel, path: &Path) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(path, &vars)
}

/// Loads weights saved by [`save_weights`] into `model`; every variable must be present with its shape, and no
/// other tensor may be in the file.
pub fn load_weights(model: &mut Reg4RecModel, path: &Path) -> Result<()> {
    let mut file: HashMap<String, Tensor> = load_tensors(path)?.into_iter().collect();
    let vars = model.var_store().variables();
    for (name, mut var) in vars {
        let src = file
            .remove(&name)
            .ok_or_else(|| ModelError::checkpoint(path, format!("missing weight `{name}`")))?;
        if src.size() != var.size() {
            return Err(ModelError::Shape {
                what: format!("{}: weight `{name}`", path.display()),
                expected: var.size(),
                found: src.size(),
            });
        }
        tch::no_grad(|| var.copy_(&src));
    }
    if let Some(extra) = file.keys().next() {
        return Err(ModelError::checkpoint(
            path,
            format!("unexpected weight `{extra}`"),
        ));
    }
    Ok(())
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn latest(&self) -> PathBuf {
        self.root.join("latest.json")
    }
    pub fn best(&self) -> PathBuf {
        self.root.join("best.json")
    }
    fn checkpoint_rel(step: u64) -> String {
        format!("checkpoints/step-{step}")
    }

    pub fn read_config(&self) -> Result<RunConfig> {
        let cfg: RunConfig = read_json(&self.config())?;
        if cfg.format_version != FORMAT_VERSION {
            return Err(ModelError::checkpoint(
                self.config(),
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    cfg.format_version
                ),
            ));
        }
        Ok(cfg)
    }

    /// Writes a complete checkpoint, then points `latest.json` at it and removes older checkpoints.
    pub fn save_checkpoint(
        &self,
        model: &Reg4RecModel,
        opt: &crate::optim::AdamW,
        state: &TrainState,
    ) -> Result<()> {
        let rel = Self::checkpoint_rel(state.step);
        let dir = self.root.join(&rel);
        save_weights(model, &dir.join("model.safetensors"))?;
        save_tensors(&dir.join("optimizer.safetensors"), &opt.state_tensors())?;
        write_json_atomic(&dir.join("state.json"), state)?;
        write_json_atomic(
            &self.latest(),
            &Latest {
                checkpoint: rel.clone(),
                step: state.step,
            },
        )?;
        self.remove_other_entries(
            &self.root.join("checkpoints"),
            &format!("step-{}", state.step),
        );
        Ok(())
    }

    /// Loads the latest checkpoint into `model` and `opt`; `None` when the run has no checkpoint.
    pub fn load_latest(
        &self,
        model: &mut Reg4RecModel,
        opt: &mut crate::optim::AdamW,
    ) -> Result<Option<TrainState>> {
        if !self.latest().exists() {
            return Ok(None);
        }
        let latest: Latest = read_json(&self.latest())?;
        let dir = self.root.join(&latest.checkpoint);
        let state: TrainState = read_json(&dir.join("state.json"))?;
        if state.format_version != FORMAT_VERSION {
            return Err(ModelError::checkpoint(
                dir.join("state.json"),
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    state.format_version
                ),
            ));
        }
        load_weights(model, &dir.join("model.safetensors"))?;
        let opt_path = dir.join("optimizer.safetensors");
        opt.load_state(load_tensors(&opt_path)?, state.step, &opt_path)?;
        Ok(Some(state))
    }

    /// Saves the best weights, then `best.json`, then removes older best weights.
    pub fn save_best(&self, model: &Reg4RecModel, best: &Best) -> Result<()> {
        save_weights(model, &self.root.join(&best.weights))?;
        write_json_atomic(&self.best(), best)?;
        let keep = Path::new(&best.weights)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.remove_other_entries(&self.root.join("best"), &keep);
        Ok(())
    }

    pub fn best_weights_name(step: u64) -> String {
        format!("best/step-{step}.safetensors")
    }

    /// Best-effort clean-up of superseded checkpoints (a failure leaves an extra file, never a broken run).
    fn remove_other_entries(&self, dir: &Path, keep: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy() == keep {
                continue;
            }
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
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
    let cfg = run.read_config()?;
    if codes_hash(codes) != cfg.codes_hash {
        return Err(ModelError::checkpoint(
            run.config(),
            "the run was trained on other item codes than the ones given",
        ));
    }
    let mut model = Reg4RecModel::new(&cfg.model, codes, cfg.n_categories, device)?;
    let weights = match which {
        Which::Best => {
            let best: Best = read_json(&run.best())?;
            run_dir.join(best.weights)
        }
        Which::Latest => {
            let latest: Latest = read_json(&run.latest())?;
            run_dir.join(latest.checkpoint).join("model.safetensors")
        }
    };
    load_weights(&mut model, &weights)?;
    Ok((model, cfg))
}
