//! Arguments shared by several subcommands.

use anyhow::{bail, Context, Result};
use clap::Args;
use reg4rec_data::registry::{self, LoadOptions};
use reg4rec_data::Dataset;
use reg4rec_infer::InferConfig;
use reg4rec_model::config::Mode;
use reg4rec_recommender::model_dir;
use std::path::{Path, PathBuf};

/// Which dataset to load: a registry name, or your own files.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Registry name (ml-100k, amazon-beauty, amazon-sports, amazon-toys). Ignored when --data is given.
    #[arg(long, default_value = registry::DEFAULT_DATASET)]
    pub dataset: String,
    /// Your own interactions: a RecBole `.inter` file (a `.item` beside it adds categories), a CSV
    /// `user,item,timestamp[,category]` or a Parquet file with those columns.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep only the k-core (users and items with at least k interactions).
    #[arg(long)]
    pub k_core: Option<usize>,
}

impl DataArgs {
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            k_core: self.k_core,
            ..LoadOptions::default()
        }
    }

    /// The name runs and reports use.
    pub fn name(&self) -> String {
        match &self.data {
            Some(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "custom".into()),
            None => self.dataset.clone(),
        }
    }

    /// Loads the dataset; warns when it has fewer than two categories.
    pub fn load(&self) -> Result<Dataset> {
        let opts = self.options();
        let ds = match &self.data {
            Some(p) => registry::load_path(p, &opts)
                .with_context(|| format!("loading your data from {}", p.display()))?,
            None => registry::load(&self.dataset, &opts)
                .with_context(|| format!("loading dataset `{}`", self.dataset))?,
        };
        if ds.n_categories() < 2 {
            tracing::warn!(
                dataset = %ds.name,
                categories = ds.n_categories(),
                "fewer than two item categories: the category head, the category rewards and CORP carry no \
                 signal (give categories in a `.item` file or a CSV category column)"
            );
        }
        Ok(ds)
    }
}

/// Where the settings come from: a preset, or a file, plus overrides. Every subcommand reads its own section(s)
/// of the one pipeline configuration (`configs/cpu.toml` shows the layout).
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Preset from `configs/`: smoke, cpu or gpu.
    #[arg(long, default_value = "cpu")]
    pub preset: String,
    /// A TOML configuration file used instead of the preset (same layout as `configs/cpu.toml`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any field: `--set model.d_model=128` (repeatable; a key of a section the command does not read
    /// is refused).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The whole configuration (the pipeline reads every section).
    pub fn resolve(&self) -> Result<crate::config::PipelineConfig> {
        crate::config::PipelineConfig::resolve(&self.preset, self.config.as_deref(), &self.set)
    }

    /// Whether a `--set` gives `key` (`infer.theta`).
    pub fn sets(&self, key: &str) -> bool {
        self.set
            .iter()
            .any(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    }

    /// The configuration for `command`, which reads the sections `sections` only: a `--set` key of another
    /// section would change nothing, so it is an error naming the key and the sections read.
    pub fn resolve_for(
        &self,
        command: &str,
        sections: &[&str],
    ) -> Result<crate::config::PipelineConfig> {
        for s in &self.set {
            let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k).trim();
            let section = key.split('.').next().unwrap_or(key);
            if !sections.contains(&section) {
                bail!(
                    "--set {s}: `reg4rec {command}` reads only [{}]; a `{section}` key would change nothing here",
                    sections.join("], [")
                );
            }
        }
        self.resolve()
    }
}

/// `infer` with the search settings recorded in `model_dir` ([`model_dir::ChosenSearch`]), when it has any.
pub fn apply_chosen_search(infer: &mut InferConfig, model_dir: &Path) -> Result<()> {
    if let Some(s) = model_dir::read_search(model_dir)? {
        tracing::info!(theta = ?s.theta, how = %s.how, "CORP threshold recorded with the model");
        infer.theta = s.theta;
    }
    Ok(())
}

/// Beam width and CORP threshold for one command's searches (`eval`, `recommend`), over the config's `[infer]`.
#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// Beam width (default: the config's `infer.beam`).
    #[arg(long)]
    pub beam: Option<usize>,
    /// CORP threshold, or `off` (default: the config's `infer.theta`; a TIGER model is searched without CORP).
    #[arg(long)]
    pub theta: Option<String>,
    /// What orders the list: `paths` (the reasoning path's score alone) or `hybrid` (the path score with the
    /// item head and its lookahead). Default: the config's `infer.rank`.
    #[arg(long)]
    pub rank: Option<reg4rec_infer::Rank>,
}

impl SearchArgs {
    /// `base` with these overrides, as the model of `mode` in `model_dir` is searched: the CORP threshold
    /// recorded in the directory (chosen on validation by the pipeline) unless `--theta` or `theta_set` (a
    /// `--set infer.theta`) gives one. Asking for CORP on a TIGER model (ordered codes) is an error rather than
    /// silently ignored.
    pub fn infer(
        &self,
        base: &InferConfig,
        mode: Mode,
        model_dir: &Path,
        theta_set: bool,
    ) -> Result<InferConfig> {
        let mut c = base.clone();
        if !theta_set && self.theta.is_none() {
            apply_chosen_search(&mut c, model_dir)?;
        }
        if let Some(b) = self.beam {
            c.beam = b;
        }
        if let Some(r) = self.rank {
            c.rank = r;
        }
        if let Some(t) = &self.theta {
            c.theta = InferConfig::parse_theta(t)?;
            if c.theta.is_some() && mode == Mode::Tiger {
                bail!(
                    "--theta {t}: CORP prunes paths over unordered codes; {} is a TIGER model (ordered codes), \
                     searched without CORP (use --theta off or leave it out)",
                    model_dir.display()
                );
            }
        }
        Ok(c.for_mode(mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corp_threshold_recorded_with_a_model_applies_unless_the_command_line_sets_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(model_dir::SEARCH_FILE),
            r#"{"theta": 0.03, "how": "a test"}"#,
        )
        .unwrap();
        let base = InferConfig {
            theta: Some(0.06),
            ..InferConfig::default()
        };
        let search = |theta: Option<&str>| SearchArgs {
            beam: None,
            theta: theta.map(str::to_string),
            rank: None,
        };
        let theta = |s: SearchArgs, theta_set: bool| {
            s.infer(&base, Mode::Reg4rec, dir.path(), theta_set)
                .unwrap()
                .theta
        };
        assert_eq!(theta(search(None), false), Some(0.03));
        assert_eq!(theta(search(None), true), Some(0.06));
        assert_eq!(theta(search(Some("off")), false), None);
        assert_eq!(theta(search(Some("0.05")), false), Some(0.05));
        // Without a record, the configuration's.
        let plain = tempfile::tempdir().unwrap();
        let got = search(None)
            .infer(&base, Mode::Reg4rec, plain.path(), false)
            .unwrap();
        assert_eq!(got.theta, Some(0.06));
    }
}
