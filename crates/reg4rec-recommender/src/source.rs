//! Which data a model was trained on: a registry name or a file (absolute path), the k-core filter, and the
//! data's fingerprint, so that loading it again for evaluation is checked to give the same data.

use crate::error::{RecommenderError, Result};
use reg4rec_data::registry::{self, LoadOptions};
use reg4rec_data::Dataset;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a model directory records about its data (`source.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// Registry name (ignored when `data` is given).
    pub dataset: String,
    /// Your own data file, as an absolute path (the directory works from any folder).
    pub data: Option<PathBuf>,
    pub k_core: Option<usize>,
    /// [`Dataset::fingerprint`] of the training data (absent in directories written before it was recorded).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl DataSource {
    /// The source of `ds`, loaded from `dataset` (a registry name) or `data` (a file; made absolute).
    pub fn new(
        dataset: &str,
        data: Option<&Path>,
        k_core: Option<usize>,
        ds: &Dataset,
    ) -> Result<Self> {
        let data = match data {
            Some(p) => Some(std::path::absolute(p).map_err(|e| {
                RecommenderError::file(p, format!("cannot resolve the data path: {e}"))
            })?),
            None => None,
        };
        Ok(DataSource {
            dataset: dataset.to_string(),
            data,
            k_core,
            fingerprint: Some(ds.fingerprint()),
        })
    }

    /// The loading options the data was read with.
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            k_core: self.k_core,
            ..LoadOptions::default()
        }
    }

    /// Loads the data without checking its fingerprint.
    pub fn load_unchecked(&self) -> Result<Dataset> {
        let opts = self.options();
        Ok(match &self.data {
            Some(p) => registry::load_path(p, &opts)?,
            None => registry::load(&self.dataset, &opts)?,
        })
    }

    /// Loads the data again and checks it is the data the model was trained on (`record` names the file this
    /// source was read from, for the error).
    pub fn load(&self, record: &Path) -> Result<Dataset> {
        let ds = self.load_unchecked()?;
        if let Some(want) = &self.fingerprint {
            let got = ds.fingerprint();
            if &got != want {
                return Err(RecommenderError::file(
                    record,
                    format!(
                        "the model was trained on data with fingerprint {want}, but {} now gives {got}: its \
                         items or interactions changed since training; use the data it was trained on, or \
                         train again",
                        self.describe()
                    ),
                ));
            }
        }
        Ok(ds)
    }

    /// `dataset \`name\`` or the file's path.
    pub fn describe(&self) -> String {
        self.data
            .as_ref()
            .map_or(format!("dataset `{}`", self.dataset), |p| {
                p.display().to_string()
            })
    }
}
