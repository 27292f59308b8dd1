//! The CLI's side of a model directory (see `reg4rec_recommender::model_dir` for what it holds): recording the
//! extras when a run starts, sealing it with a manifest when it ends, and reading a tokenizer's codes.

use crate::args::DataArgs;
use anyhow::{Context, Result};
use reg4rec_data::Dataset;
use reg4rec_recommender::{model_dir, Catalog, DataSource};
use reg4rec_tokenizer::Codes;
use std::path::Path;

/// The data source of `ds`, loaded with `args`.
pub fn data_source(args: &DataArgs, ds: &Dataset) -> Result<DataSource> {
    Ok(DataSource::new(
        &args.dataset,
        args.data.as_deref(),
        args.k_core,
        ds,
    )?)
}

/// Records the codes, the data source, the catalog of `ds` and a copy of the tokenizer in `tokenizer` (which
/// encodes items added later) in a model directory.
pub fn write_extras(
    dir: &Path,
    args: &DataArgs,
    ds: &Dataset,
    codes: &Codes,
    tokenizer: &Path,
) -> Result<()> {
    model_dir::write_extras(dir, &data_source(args, ds)?, codes, &Catalog::of(ds))?;
    Ok(model_dir::copy_tokenizer(tokenizer, dir)?)
}

/// Reads the tokenizer directory's codes.
pub fn tokenizer_codes(dir: &Path) -> Result<Codes> {
    let tok = reg4rec_tokenizer::load(dir)
        .with_context(|| format!("loading the tokenizer in {}", dir.display()))?;
    Ok(tok.codes().clone())
}
