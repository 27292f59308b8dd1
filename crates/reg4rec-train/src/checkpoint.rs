//! The run directory: the one checkpoint format of every trainer. Everything is written atomically, and every
//! safetensors file carries the sha256 of its tensors ([`reg4rec_data::tensors`]), verified when read.
//!
//! ```text
//! run_dir/
//!   config.json                 the trainer's own description of the run (model, data, settings)
//!   metrics.jsonl               one JSON record per logged step and per validation
//!   checkpoints/step-N/         model.safetensors, optimizer.safetensors (AdamW moments), state.json
//!   latest.json                 {"checkpoint": "checkpoints/step-N", "step": N}: written last, so a killed run
//!                               always points at a complete checkpoint
//!   best/step-N.safetensors     weights of the best validation so far
//!   best.json                   {"weights": "best/step-N.safetensors", step, epoch, valid_loss, valid_metric}
//! ```
//!
//! RNG state is a function of the seed and the position (see [`crate::learner`]), so `state.json` (step, epoch)
//! is all a resume needs.

use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use reg4rec_data::io::{read_json, write_json_atomic};
use reg4rec_data::tensors;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

/// Version of the checkpoint files (`state.json`, the metadata of the weight files). 3: weights carry their
/// sha256.
pub const FORMAT_VERSION: u32 = 3;

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
    /// Best validation criterion so far (lower is better).
    pub best_criterion: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Validations since the criterion last improved.
    pub bad_epochs: usize,
    /// Set when training ended (early stopping, the last epoch, the time budget).
    pub finished: bool,
    /// Sum of the training loss over the current epoch's steps so far, and their count of targets (to resume
    /// the epoch mean exactly).
    pub epoch_loss_sum: f64,
    pub epoch_examples: u64,
    /// Seconds of training and validation so far, over every resumed process (the time budget's clock).
    #[serde(default)]
    pub seconds: f64,
    /// Why training ended, once it has.
    #[serde(default)]
    pub stop: Option<StopReason>,
}

impl TrainState {
    /// The state of a run that has not taken a step.
    pub fn fresh() -> Self {
        TrainState {
            format_version: FORMAT_VERSION,
            step: 0,
            epoch: 0,
            epoch_step: 0,
            best_criterion: None,
            best_epoch: None,
            bad_epochs: 0,
            finished: false,
            epoch_loss_sum: 0.0,
            epoch_examples: 0,
            seconds: 0.0,
            stop: None,
        }
    }
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
    /// The validation loss, for trainers that compute one.
    pub valid_loss: Option<f64>,
    /// The validation metric, for trainers that compute one (higher is better).
    pub valid_metric: Option<f64>,
}

/// The variables of a var store, sorted by name.
pub fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Saves every variable of `vs` (names from the module tree) with [`FORMAT_VERSION`] in the metadata.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let v = FORMAT_VERSION.to_string();
    tensors::save_tch(path, &named_variables(vs), &[("format_version", &v)])?;
    Ok(())
}

/// Loads weights saved by [`save_weights`] into `vs`: every variable must be present with its shape, and no
/// other tensor may be in the file; a file whose checksum does not match is refused.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    tensors::load_into_tch(path, &named_variables(vs))?;
    Ok(())
}

/// Paths inside a run directory, and its checkpoints.
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

    /// The step of the latest checkpoint (`None` when the run has none): where a resumed run continues, for
    /// set-up that depends on it before training starts.
    pub fn latest_step(&self) -> Result<Option<u64>> {
        if !self.latest().exists() {
            return Ok(None);
        }
        let latest: Latest = read_json(&self.latest())?;
        Ok(Some(latest.step))
    }

    /// The weights file `best.json` names.
    pub fn best_weights(&self) -> Result<PathBuf> {
        let best: Best = read_json(&self.best())?;
        Ok(self.root.join(best.weights))
    }

    /// The model weights of the checkpoint `latest.json` names.
    pub fn latest_weights(&self) -> Result<PathBuf> {
        let latest: Latest = read_json(&self.latest())?;
        Ok(self.root.join(latest.checkpoint).join("model.safetensors"))
    }

    /// Writes a complete checkpoint, then points `latest.json` at it and removes older checkpoints.
    pub fn save_checkpoint(
        &self,
        vs: &nn::VarStore,
        opt: &AdamW,
        state: &TrainState,
    ) -> Result<()> {
        let rel = Self::checkpoint_rel(state.step);
        let dir = self.root.join(&rel);
        save_weights(vs, &dir.join("model.safetensors"))?;
        tensors::save_tch(
            &dir.join("optimizer.safetensors"),
            &opt.state_tensors(),
            &[],
        )?;
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

    /// Loads the latest checkpoint into `vs` and `opt`; `None` when the run has no checkpoint.
    pub fn load_latest(&self, vs: &nn::VarStore, opt: &mut AdamW) -> Result<Option<TrainState>> {
        if !self.latest().exists() {
            return Ok(None);
        }
        let latest: Latest = read_json(&self.latest())?;
        let dir = self.root.join(&latest.checkpoint);
        let state: TrainState = read_json(&dir.join("state.json"))?;
        if state.format_version != FORMAT_VERSION {
            return Err(TrainError::checkpoint(
                dir.join("state.json"),
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    state.format_version
                ),
            ));
        }
        load_weights(vs, &dir.join("model.safetensors"))?;
        let opt_path = dir.join("optimizer.safetensors");
        let moments = tensors::read(&opt_path)?
            .into_tensors()
            .iter()
            .map(|t| (t.name.clone(), tensors::to_tch(t)))
            .collect();
        opt.load_state(moments, state.step, &opt_path)?;
        Ok(Some(state))
    }

    /// Saves the best weights, then `best.json`, then removes older best weights.
    pub fn save_best(&self, vs: &nn::VarStore, best: &Best) -> Result<()> {
        save_weights(vs, &self.root.join(&best.weights))?;
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

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The last epoch finished.
    MaxEpochs,
    /// `patience` validations without improvement.
    EarlyStopping,
    /// The time budget ran out.
    TimeBudget,
    /// The step limit of [`crate::Fit::stop_after_steps`] was reached (the run can be resumed).
    StepLimit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamWConfig;

    #[test]
    fn a_checkpoint_restores_weights_moments_and_state_and_refuses_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[3, 2], nn::Init::Const(0.5));
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        (&w * 3.0).sum(tch::Kind::Float).backward();
        opt.step(0.1);
        let state = TrainState {
            step: 1,
            ..TrainState::fresh()
        };
        run.save_checkpoint(&vs, &opt, &state).unwrap();

        let vs2 = nn::VarStore::new(tch::Device::Cpu);
        let w2 = vs2.root().var("w", &[3, 2], nn::Init::Const(0.0));
        let mut opt2 = AdamW::new(&vs2, AdamWConfig::default());
        assert_eq!(run.load_latest(&vs2, &mut opt2).unwrap(), Some(state));
        assert!(w2.equal(&w));
        assert_eq!(opt2.t, 1);
        for ((_, a), (_, b)) in opt.state_tensors().iter().zip(opt2.state_tensors()) {
            assert!(a.equal(&b));
        }

        let weights = run.latest_weights().unwrap();
        let mut bytes = std::fs::read(&weights).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&weights, bytes).unwrap();
        let e = run.load_latest(&vs2, &mut opt2).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("corrupt"),
            "{e}"
        );
    }
}
