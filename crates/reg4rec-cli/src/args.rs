//! Arguments shared by several subcommands.

use anyhow::{Context, Result};
use clap::Args;
use reg4rec_data::registry::{self, LoadOptions};
use reg4rec_data::Dataset;
use std::path::PathBuf;

/// Which dataset to load: a registry name, or your own files.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Registry name (ml-100k, amazon-beauty, amazon-sports, amazon-toys). Ignored when --data is given.
    #[arg(long, default_value = registry::DEFAULT_DATASET)]
    pub dataset: String,
    /// Your own interactions: a RecBole `.inter` file (a `.item` beside it adds categories) or a CSV
    /// `user,item,timestamp[,category]`.
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
    /// Override any field: `--set model.d_model=128` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    pub fn resolve(&self) -> Result<crate::pipeline::PipelineConfig> {
        crate::pipeline::PipelineConfig::resolve(&self.preset, self.config.as_deref(), &self.set)
    }
}
