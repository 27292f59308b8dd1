//! The LADQ policy: from the sensitivity ranking to a precision per layer ([`assign`]), and the controller
//! [`Ladq`] a trainer drives around each optimizer step: on sampling steps (every `sample_every` steps,
//! starting at step 0) it turns capture on before the forward pass, and after `backward` computes the K-FAC
//! traces ([`crate::kfac`]), re-assigns every layer and appends the sampling to the history file
//! (`<run_dir>/ladq.jsonl`, one JSON object per sampling: step, per-layer traces, sensitivity and precision,
//! and the counts per precision).
//!
//! The precisions chosen at a sampling step take effect from the next forward pass (the sampled step itself
//! runs with the previous assignment; the first, step 0, with all layers fp32).

use crate::config::{AssignRule, LadqConfig, Precision, PrecisionMode};
use crate::error::{PrecisionError, Result};
use crate::kfac::{self, LayerTraces};
use crate::linear::LayerRegistry;
use reg4rec_data::io::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Precision of each layer from its sensitivity (same order). A non-finite sensitivity counts as the most
/// sensitive. Ties keep the layers' order (the earlier layer counts as more sensitive).
pub fn assign(sensitivities: &[f64], cfg: &LadqConfig) -> Vec<Precision> {
    let n = sensitivities.len();
    let key = |s: f64| if s.is_finite() { s } else { f64::INFINITY };
    let mut out = vec![Precision::Bf16; n];
    match cfg.rule {
        AssignRule::Fraction => {
            let mut order: Vec<usize> = (0..n).collect();
            // Most sensitive first; stable sort keeps layer order among ties.
            order.sort_by(|&i, &j| key(sensitivities[j]).total_cmp(&key(sensitivities[i])));
            let n_fp32 = ((n as f64 * cfg.fp32_fraction).ceil() as usize).min(n);
            let n_fp8 = ((n as f64 * cfg.fp8_fraction).floor() as usize).min(n - n_fp32);
            for (rank, &i) in order.iter().enumerate() {
                out[i] = if rank < n_fp32 {
                    Precision::Fp32
                } else if rank >= n - n_fp8 {
                    Precision::Fp8
                } else {
                    Precision::Bf16
                };
            }
        }
        AssignRule::Threshold => {
            // Relative to the largest finite sensitivity (non-finite ones are fp32 anyway).
            let max = sensitivities
                .iter()
                .copied()
                .filter(|s| s.is_finite())
                .fold(0.0f64, f64::max);
            for (o, &s) in out.iter_mut().zip(sensitivities) {
                let rel = if !s.is_finite() {
                    1.0
                } else if max > 0.0 {
                    s / max
                } else {
                    // All zero (nothing to rank): everything counts as maximally sensitive.
                    1.0
                };
                *o = if rel >= cfg.fp32_threshold {
                    Precision::Fp32
                } else if rel < cfg.fp8_threshold {
                    Precision::Fp8
                } else {
                    Precision::Bf16
                };
            }
        }
    }
    out
}

/// One layer at one sampling, as written to the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    #[serde(flatten)]
    pub traces: LayerTraces,
    /// Precision assigned at this sampling.
    pub precision: Precision,
}

/// One sampling: a line of the history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Optimizer step (0-based) whose batch was sampled.
    pub step: u64,
    /// Layers in creation order.
    pub layers: Vec<LayerRecord>,
    /// Layers per precision after this sampling: `[fp32, bf16, fp8]`.
    pub counts: [usize; 3],
}

impl Sampling {
    pub fn precisions(&self) -> Vec<Precision> {
        self.layers.iter().map(|l| l.precision).collect()
    }
}

/// Counts per precision, `[fp32, bf16, fp8]`.
pub fn counts(ps: &[Precision]) -> [usize; 3] {
    let mut c = [0; 3];
    for p in ps {
        c[*p as usize] += 1;
    }
    c
}

/// The LADQ controller of one training run (see the module doc). Under `fp32` / `bf16` modes it only sets every
/// layer once and never samples.
#[derive(Debug)]
pub struct Ladq {
    mode: PrecisionMode,
    cfg: LadqConfig,
    registry: LayerRegistry,
    history: Option<PathBuf>,
    samplings: Vec<Sampling>,
}

impl Ladq {
    /// A fresh run: sets every layer of `registry` to `mode`'s initial precision. With `run_dir`, the history
    /// goes to `run_dir/<cfg.history_file>` (an existing file is emptied). Equal to `resume(.., 0)`.
    pub fn new(
        mode: PrecisionMode,
        cfg: &LadqConfig,
        registry: &LayerRegistry,
        run_dir: Option<&Path>,
    ) -> Result<Self> {
        Self::resume(mode, cfg, registry, run_dir, 0)
    }

    /// Continues a run at optimizer step `step` (the next step to run): the history keeps the samplings of
    /// steps before `step` (later lines are dropped) and, under `ladq`, the last kept assignment is re-applied
    /// (all fp32 when there is none). A missing history file is an empty history.
    pub fn resume(
        mode: PrecisionMode,
        cfg: &LadqConfig,
        registry: &LayerRegistry,
        run_dir: Option<&Path>,
        step: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        registry.cancel_capture();
        registry.set_all(mode.initial_precision());
        registry.set_fp8_kernel(cfg.fp8_kernel);
        let history = run_dir.map(|d| d.join(&cfg.history_file));
        if let Some(path) = &history {
            if let Some(last) = truncate_history(path, step)? {
                if mode == PrecisionMode::Ladq {
                    if last.layers.len() != registry.len() {
                        return Err(PrecisionError::config(
                            "history_file",
                            format!(
                                "{}: the last sampling has {} layers but the model has {}",
                                path.display(),
                                last.layers.len(),
                                registry.len()
                            ),
                        ));
                    }
                    registry.set_precisions(&last.precisions());
                }
            }
        }
        Ok(Ladq {
            mode,
            cfg: cfg.clone(),
            registry: registry.clone(),
            history,
            samplings: Vec::new(),
        })
    }

    pub fn mode(&self) -> PrecisionMode {
        self.mode
    }

    pub fn registry(&self) -> &LayerRegistry {
        &self.registry
    }

    /// Samplings done by this process (the history file holds them all, resumed ones included).
    pub fn samplings(&self) -> &[Sampling] {
        &self.samplings
    }

    /// Call before the forward pass of optimizer step `step`. Returns whether this step is sampled (capture on).
    pub fn begin_step(&self, step: u64) -> bool {
        let sample = self.mode == PrecisionMode::Ladq && self.cfg.is_sampling_step(step);
        if sample {
            self.registry.start_capture();
        }
        sample
    }

    /// Call after `loss.backward()` of step `step` (before or after the optimizer step: the probes are not
    /// parameters). On a sampled step: traces, new assignment applied to the layers, history appended; returns
    /// the sampling. `loss_scale`: see [`crate::kfac`] (the batch size for a per-example mean loss).
    pub fn end_step(&mut self, step: u64, loss_scale: f64) -> Result<Option<&Sampling>> {
        if !self.registry.is_capturing() {
            return Ok(None);
        }
        let traces = kfac::collect(&self.registry, loss_scale)?;
        let current = self.registry.precisions();
        // Layers that took no part in the sampled loss keep their precision; the rest are ranked together.
        let ranked: Vec<usize> = (0..traces.len()).filter(|&i| traces[i].rows > 0).collect();
        let sens: Vec<f64> = ranked.iter().map(|&i| traces[i].sensitivity).collect();
        let mut next = current;
        for (&i, p) in ranked.iter().zip(assign(&sens, &self.cfg)) {
            next[i] = p;
        }
        self.registry.set_precisions(&next);
        let sampling = Sampling {
            step,
            counts: counts(&next),
            layers: traces
                .into_iter()
                .zip(&next)
                .map(|(traces, &precision)| LayerRecord { traces, precision })
                .collect(),
        };
        if let Some(path) = &self.history {
            append_line(path, &sampling)?;
        }
        self.samplings.push(sampling);
        Ok(self.samplings.last())
    }
}

/// Cuts the history at `path` back to the samplings of steps before `step` (an atomic rewrite; a missing file
/// stays missing when nothing is kept) and returns the last one kept.
fn truncate_history(path: &Path, step: u64) -> Result<Option<Sampling>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(reg4rec_data::DataError::io(path, e).into()),
    };
    if step == 0 {
        // A fresh run: nothing to keep, not even to read.
        if !text.is_empty() {
            write_atomic(path, b"")?;
        }
        return Ok(None);
    }
    let mut kept = String::new();
    let mut last: Option<Sampling> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s: Sampling = serde_json::from_str(line)
            .map_err(|e| reg4rec_data::DataError::parse(path, i + 1, e.to_string()))?;
        if s.step < step {
            kept.push_str(line);
            kept.push('\n');
            last = Some(s);
        }
    }
    if kept.len() != text.len() {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(last)
}

/// Appends one JSON line to `path` through an atomic rewrite (the history is small: one line per sampling).
fn append_line<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(reg4rec_data::DataError::io(path, e).into()),
    };
    let line = serde_json::to_string(value).map_err(|e| {
        reg4rec_data::DataError::invalid(path, format!("cannot serialise a sampling: {e}"))
    })?;
    text.push_str(&line);
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precision::{Bf16, Fp32, Fp8};

    #[test]
    fn fraction_rule_ranks_layers() {
        let cfg = LadqConfig::default(); // 25% fp32 (ceil), 25% fp8 (floor)
        let s = [5.0, 0.1, 3.0, 9.0, 0.5, 2.0, 7.0, 0.01];
        assert_eq!(
            assign(&s, &cfg),
            vec![Bf16, Fp8, Bf16, Fp32, Bf16, Bf16, Fp32, Fp8]
        );
        // 6 layers: ceil(1.5) = 2 fp32, floor(1.5) = 1 fp8.
        let s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(assign(&s, &cfg), vec![Fp8, Bf16, Bf16, Bf16, Fp32, Fp32]);
        // NaN is most sensitive; ties keep layer order.
        let s = [1.0, f64::NAN, 1.0, 1.0];
        assert_eq!(assign(&s, &cfg), vec![Bf16, Fp32, Bf16, Fp8]);
        // All fp32 / all fp8 / one layer.
        let all32 = LadqConfig {
            fp32_fraction: 1.0,
            fp8_fraction: 0.0,
            ..cfg.clone()
        };
        assert_eq!(assign(&[1.0, 2.0], &all32), vec![Fp32, Fp32]);
        let all8 = LadqConfig {
            fp32_fraction: 0.0,
            fp8_fraction: 1.0,
            ..cfg.clone()
        };
        assert_eq!(assign(&[1.0, 2.0], &all8), vec![Fp8, Fp8]);
        assert_eq!(assign(&[3.0], &cfg), vec![Fp32]);
        assert!(assign(&[], &cfg).is_empty());
    }

    #[test]
    fn threshold_rule_uses_relative_sensitivity() {
        let cfg = LadqConfig {
            rule: AssignRule::Threshold,
            ..Default::default()
        }; // fp32 >= 0.5, fp8 < 0.05
        let s = [100.0, 50.0, 49.0, 5.0, 4.9, 0.0];
        assert_eq!(assign(&s, &cfg), vec![Fp32, Fp32, Bf16, Bf16, Fp8, Fp8]);
        assert_eq!(assign(&[0.0, 0.0], &cfg), vec![Fp32, Fp32]);
        // Non-finite: fp32; the rest relative to the largest finite sensitivity.
        assert_eq!(
            assign(&[f64::INFINITY, 1.0, 0.01], &cfg),
            vec![Fp32, Fp32, Fp8]
        );
    }

    #[test]
    fn counts_by_precision() {
        assert_eq!(counts(&[Fp32, Fp8, Fp8, Bf16]), [1, 1, 2]);
    }
}
