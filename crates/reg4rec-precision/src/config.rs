//! [`Precision`] of one layer, the run-wide [`PrecisionMode`] (`--precision fp32|bf16|ladq`) and the LADQ
//! configuration [`LadqConfig`]. Every spec [default] of section 6 is a field here.

use crate::error::{PrecisionError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Compute precision of one linear layer. Master weights are always f32; this is the precision of the matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Plain f32 matmul.
    Fp32,
    /// Weight and input cast to bf16, output cast back to f32.
    Bf16,
    /// fp8 e4m3 with one scale per tensor (input and weight): a real `_scaled_mm` on CUDA where it runs,
    /// quantise-dequantise emulation elsewhere (see [`crate::quant`]).
    Fp8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Fp8];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `--precision` flag: one precision for every layer, or LADQ's per-layer assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionMode {
    /// Every layer f32. The default.
    #[default]
    Fp32,
    /// Every LADQ layer bf16.
    Bf16,
    /// Layer-adaptive: f32 until the first sampling, then the assignment of [`crate::policy`].
    Ladq,
}

impl PrecisionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PrecisionMode::Fp32 => "fp32",
            PrecisionMode::Bf16 => "bf16",
            PrecisionMode::Ladq => "ladq",
        }
    }

    /// The precision every layer starts with under this mode.
    pub fn initial_precision(self) -> Precision {
        match self {
            PrecisionMode::Fp32 | PrecisionMode::Ladq => Precision::Fp32,
            PrecisionMode::Bf16 => Precision::Bf16,
        }
    }
}

impl fmt::Display for PrecisionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrecisionMode {
    type Err = PrecisionError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(PrecisionMode::Fp32),
            "bf16" => Ok(PrecisionMode::Bf16),
            "ladq" => Ok(PrecisionMode::Ladq),
            other => Err(PrecisionError::UnknownMode(other.to_string())),
        }
    }
}

/// How the sensitivity ranking becomes an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignRule {
    /// By rank: the `ceil(n * fp32_fraction)` most sensitive layers fp32, the `floor(n * fp8_fraction)` least
    /// sensitive fp8 (never more than the layers left after fp32), the rest bf16.
    Fraction,
    /// By value relative to the most sensitive layer: `s / s_max >= fp32_threshold` is fp32,
    /// `s / s_max < fp8_threshold` is fp8, the rest bf16.
    Threshold,
}

/// Which fp8 matmul an fp8 layer uses on CUDA (CPU always emulates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fp8Kernel {
    /// libtorch's `_scaled_mm` on CUDA (falls back to emulation, once and for the rest of the run, when the
    /// GPU or the shapes are not supported); quantise-dequantise emulation on CPU.
    Auto,
    /// Quantise-dequantise emulation everywhere.
    Emulate,
}

/// LADQ: sample K-FAC traces every `sample_every` steps and re-assign each layer's precision (spec section 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadqConfig {
    /// Sampling period P in optimizer steps: steps 0, P, 2P, ... capture activations and output gradients and
    /// re-assign precisions. Default 100.
    pub sample_every: u64,
    /// Ranking rule. Default `fraction`.
    pub rule: AssignRule,
    /// `fraction` rule: share of layers (most sensitive first) kept fp32. Default 0.25.
    pub fp32_fraction: f64,
    /// `fraction` rule: share of layers (least sensitive first) run in fp8. Default 0.25.
    pub fp8_fraction: f64,
    /// `threshold` rule: relative sensitivity `s / s_max` at or above which a layer is fp32. Default 0.5.
    pub fp32_threshold: f64,
    /// `threshold` rule: relative sensitivity below which a layer is fp8. Default 0.05.
    pub fp8_threshold: f64,
    /// fp8 matmul on CUDA. Default `auto`.
    pub fp8_kernel: Fp8Kernel,
    /// File name (in the run directory) of the sensitivity / assignment history, one JSON line per sampling.
    /// Default `ladq.jsonl`.
    pub history_file: String,
}

impl Default for LadqConfig {
    fn default() -> Self {
        LadqConfig {
            sample_every: 100,
            rule: AssignRule::Fraction,
            fp32_fraction: 0.25,
            fp8_fraction: 0.25,
            fp32_threshold: 0.5,
            fp8_threshold: 0.05,
            fp8_kernel: Fp8Kernel::Auto,
            history_file: "ladq.jsonl".into(),
        }
    }
}

impl LadqConfig {
    pub fn validate(&self) -> Result<()> {
        if self.sample_every == 0 {
            return Err(PrecisionError::config("sample_every", "must be >= 1"));
        }
        let unit = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PrecisionError::config(
                    field,
                    format!("must be in [0, 1], got {v}"),
                ))
            }
        };
        unit("fp32_fraction", self.fp32_fraction)?;
        unit("fp8_fraction", self.fp8_fraction)?;
        unit("fp32_threshold", self.fp32_threshold)?;
        unit("fp8_threshold", self.fp8_threshold)?;
        if self.fp32_fraction + self.fp8_fraction > 1.0 {
            return Err(PrecisionError::config(
                "fp8_fraction",
                format!(
                    "fp32_fraction + fp8_fraction must be <= 1, got {} + {}",
                    self.fp32_fraction, self.fp8_fraction
                ),
            ));
        }
        if self.fp8_threshold > self.fp32_threshold {
            return Err(PrecisionError::config(
                "fp8_threshold",
                format!(
                    "must be <= fp32_threshold = {}, got {}",
                    self.fp32_threshold, self.fp8_threshold
                ),
            ));
        }
        let name = std::path::Path::new(&self.history_file);
        if self.history_file.is_empty() || name.file_name() != Some(name.as_os_str()) {
            return Err(PrecisionError::config(
                "history_file",
                format!("must be a plain file name, got `{}`", self.history_file),
            ));
        }
        Ok(())
    }

    /// Whether optimizer step `step` (0-based, before it runs) is a sampling step.
    pub fn is_sampling_step(&self, step: u64) -> bool {
        step.is_multiple_of(self.sample_every.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        LadqConfig::default().validate().unwrap();
        let e = LadqConfig {
            sample_every: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("sample_every"), "{e}");
        let e = LadqConfig {
            fp32_fraction: 0.8,
            fp8_fraction: 0.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("fp8_fraction"), "{e}");
        let e = LadqConfig {
            fp8_threshold: 0.9,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("fp8_threshold"), "{e}");
        let e = LadqConfig {
            history_file: "../x.jsonl".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("history_file"), "{e}");
        let e = serde_json::from_str::<LadqConfig>(r#"{"sample_evry": 3}"#).unwrap_err();
        assert!(e.to_string().contains("sample_evry"), "{e}");
        let c: LadqConfig =
            serde_json::from_str(r#"{"rule": "threshold", "fp8_kernel": "emulate"}"#).unwrap();
        assert_eq!(
            (c.rule, c.fp8_kernel, c.sample_every),
            (AssignRule::Threshold, Fp8Kernel::Emulate, 100)
        );
        assert!(c.is_sampling_step(0) && c.is_sampling_step(200) && !c.is_sampling_step(1));
    }

    #[test]
    fn precision_mode_parses_the_flag_values() {
        for m in [
            PrecisionMode::Fp32,
            PrecisionMode::Bf16,
            PrecisionMode::Ladq,
        ] {
            assert_eq!(m.as_str().parse::<PrecisionMode>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        let e = "fp16".parse::<PrecisionMode>().unwrap_err();
        assert!(e.to_string().contains("fp16"), "{e}");
        assert_eq!(PrecisionMode::Bf16.initial_precision(), Precision::Bf16);
        assert_eq!(PrecisionMode::Ladq.initial_precision(), Precision::Fp32);
    }
}
