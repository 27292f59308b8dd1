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

    pub fn load(&self) -> Result<Dataset> {
        let opts = self.options();
        match &self.data {
            Some(p) => registry::load_path(p, &opts)
                .with_context(|| format!("loading your data from {}", p.display())),
            None => registry::load(&self.dataset, &opts)
                .with_context(|| format!("loading dataset `{}`", self.dataset)),
        }
    }
}
