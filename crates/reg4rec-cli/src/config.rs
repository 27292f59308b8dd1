//! The pipeline's configuration: one serde struct whose sections are the crates' own configs, read from a preset
//! (`configs/<preset>.toml`: kept in `reg4rec-data` (`reg4rec_data::presets`), so the library crates' configs read
//! their sections from the same files, linked from the workspace root and embedded in the binary) or a file, with
//! `--set section.field=value` overrides.

use anyhow::{bail, Context, Result};
use reg4rec_align::AlignConfig;
use reg4rec_baselines::SasRecConfig;
use reg4rec_data::features::FeatureConfig;
use reg4rec_infer::InferConfig;
use reg4rec_model::{ModelConfig, TrainConfig};
use reg4rec_tokenizer::{MpqConfig, RqVaeConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Every stage's settings. Unknown fields are errors that name the field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Which stages and sweeps run.
    pub pipeline: StagesConfig,
    /// Item features for the tokenizers (`reg4rec_data::features::FeatureConfig`).
    pub features: FeatureConfig,
    /// The MPQ tokenizer (`reg4rec_tokenizer::MpqConfig`).
    pub mpq: MpqConfig,
    /// The RQ-VAE tokenizer of the TIGER baseline and the no-MPQ ablation (`reg4rec_tokenizer::RqVaeConfig`).
    pub rqvae: RqVaeConfig,
    /// The generative model (`reg4rec_model::ModelConfig`); `mode` is set per stage (reg4rec or tiger).
    pub model: ModelConfig,
    /// Pre-training (`reg4rec_model::TrainConfig`).
    pub pretrain: TrainConfig,
    /// PARS alignment (`reg4rec_align::AlignConfig`).
    pub align: AlignConfig,
    /// PARS alignment of the path-ranked rows (`reg4rec-paths` and its ablations, whose lists are ordered by
    /// the path alone): the fields of `align`, chosen for the path-ranked model. Its validation searches
    /// always rank by paths (`valid.rank` is set to `paths`), so the step it keeps is the best for the list
    /// the path-ranked rows give. Default: `AlignConfig::default()`.
    pub align_paths: AlignConfig,
    /// Beam search, CORP and evaluation (`reg4rec_infer::InferConfig`).
    pub infer: InferConfig,
    /// SASRec with full-softmax cross-entropy (`reg4rec_baselines::SasRecConfig`).
    pub sasrec: SasRecConfig,
    /// `reg4rec serve` (`reg4rec_serve::ServeConfig`); not used by the pipeline.
    pub serve: reg4rec_serve::ServeConfig,
}

/// Pipeline-level switches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagesConfig {
    /// CORP thresholds swept on the validation split (CORP off is always added). Default
    /// [0.04, 0.05, 0.06, 0.07, 0.08].
    pub theta_sweep: Vec<f32>,
    /// Select pre-training checkpoints by validation Recall@10 through the beam search (else by validation
    /// loss). Default true.
    pub valid_recall: bool,
    /// Users searched for the per-epoch validation Recall@10 (0 = all). A fixed seeded subset keeps long
    /// runs affordable. Default 0.
    pub valid_users: usize,
    /// Run the generative stages (tokenizers, pre-training, alignment, their evaluation). Default true.
    pub generative: bool,
    /// Also train SASRec-CE with the item features the generative model reads (`sasrec.item_features`, the
    /// row `sasrec-ce-features`), so a gain over SASRec-CE can be told apart from the features. Default true.
    pub sasrec_features: bool,
    /// Choose the CORP threshold of the rows that use CORP (reg4rec, no-mpq, no-pars, no-msra, last-step) on
    /// the validation split: the point of `theta_sweep` (CORP off included) where the full model's Recall@10
    /// is highest (ties: NDCG@10, then the earlier point). False uses `infer.theta`. Default true.
    pub choose_theta: bool,
    /// Align the pre-trained model again with the long-tail reward (`align.rewards.long_tail`) at each of these
    /// weights, giving the rows `reg4rec-tail{w}` and `reg4rec-tail{w}-paths` (R@10 / N@10 against the long
    /// tail's share of the top 10). Default [] (none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub long_tail_weights: Vec<f64>,
    /// Also pre-train the REG4Rec model under these precisions and report them beside `pretrain.precision`
    /// in the precision table (`["bf16", "ladq"]` compares all three). Default [] (no table).
    pub precisions: Vec<reg4rec_model::PrecisionMode>,
    /// Align the path-ranked model (`align_paths`) this many times on the same pre-trained weights, seed `k`
    /// adding `k` to `align_paths.seed`; each is ranked on test with its paired interval against
    /// `reg4rec-no-pars-paths` (the report's `path_align_seeds`), so PARS's gain is read beside the spread of
    /// alignment's own randomness. Default 1 (the `reg4rec-paths` row only).
    pub align_seeds: usize,
}

impl Default for StagesConfig {
    fn default() -> Self {
        StagesConfig {
            theta_sweep: vec![0.04, 0.05, 0.06, 0.07, 0.08],
            valid_recall: true,
            valid_users: 0,
            generative: true,
            sasrec_features: true,
            choose_theta: true,
            precisions: Vec::new(),
            long_tail_weights: Vec::new(),
            align_seeds: 1,
        }
    }
}

/// The presets shipped with reg4rec (`configs/*.toml`, embedded by `reg4rec-data`).
pub use reg4rec_data::presets::PRESETS;

impl PipelineConfig {
    /// Reads a preset by name, or a TOML file when `file` is given, then applies `sets` (`a.b=value`).
    pub fn resolve(preset: &str, file: Option<&Path>, sets: &[String]) -> Result<PipelineConfig> {
        let (text, origin) = match file {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
                p.display().to_string(),
            ),
            None => match PRESETS.iter().find(|(n, _)| *n == preset) {
                Some((_, t)) => (t.to_string(), format!("preset `{preset}`")),
                None => bail!(
                    "unknown preset `{preset}`; known: {}",
                    PRESETS.map(|(n, _)| n).join(", ")
                ),
            },
        };
        let mut value: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {origin}"))?;
        for s in sets {
            apply_set(&mut value, s)?;
        }
        let cfg: PipelineConfig = toml::Value::Table(value)
            .try_into()
            .with_context(|| format!("invalid configuration from {origin} with {sets:?}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.features
            .validate()
            .context("config section `features`")?;
        self.mpq.validate().context("config section `mpq`")?;
        self.rqvae.validate().context("config section `rqvae`")?;
        self.model.validate().context("config section `model`")?;
        self.pretrain
            .validate()
            .context("config section `pretrain`")?;
        self.align.validate().context("config section `align`")?;
        self.align_paths
            .validate()
            .context("config section `align_paths`")?;
        self.infer.validate().context("config section `infer`")?;
        self.sasrec.validate().context("config section `sasrec`")?;
        self.serve.validate().context("config section `serve`")?;
        if self.infer.exclude_history != self.sasrec.exclude_history {
            bail!(
                "config fields `infer.exclude_history` ({}) and `sasrec.exclude_history` ({}) differ: every row \
                 of a report is evaluated under one protocol, so set both",
                self.infer.exclude_history,
                self.sasrec.exclude_history
            );
        }
        if self.pipeline.align_seeds == 0 {
            bail!("config field `pipeline.align_seeds`: must be at least 1 (the report's own alignment)");
        }
        if let Some(t) = self
            .pipeline
            .theta_sweep
            .iter()
            .find(|t| !(t.is_finite() && **t >= 0.0))
        {
            bail!(
                "config field `pipeline.theta_sweep`: {t} is not a finite non-negative threshold"
            );
        }
        Ok(())
    }
}

/// Applies one `dotted.key=value` override; the value is parsed as TOML (a bare word is a string).
fn apply_set(root: &mut toml::Table, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .with_context(|| format!("--set `{set}`: expected key=value"))?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut table = root;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            bail!("--set `{set}`: empty key segment");
        }
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .with_context(|| format!("--set `{set}`: `{part}` is not a section"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            PipelineConfig::resolve(name, None, &[]).unwrap();
        }
    }

    #[test]
    fn set_overrides_a_field_and_unknown_fields_are_named() {
        let c = PipelineConfig::resolve("smoke", None, &["sasrec.seed=7".into()]).unwrap();
        assert_eq!(c.sasrec.seed, 7);
        let e =
            PipelineConfig::resolve("smoke", None, &["sasrec.no_such_field=1".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("no_such_field"), "{e:#}");
        let e = PipelineConfig::resolve("nope", None, &[]).unwrap_err();
        assert!(e.to_string().contains("unknown preset"));
    }

    #[test]
    fn every_row_of_a_report_uses_one_history_filter() {
        let one = ["infer.exclude_history=true".to_string()];
        let e = PipelineConfig::resolve("smoke", None, &one).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("infer.exclude_history") && msg.contains("sasrec.exclude_history"),
            "{msg}"
        );
        let both = [one[0].clone(), "sasrec.exclude_history=true".into()];
        let c = PipelineConfig::resolve("smoke", None, &both).unwrap();
        assert!(c.infer.exclude_history && c.sasrec.exclude_history);
    }
}
