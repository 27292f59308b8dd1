//! The files the CLI keeps beside a model run (`codes.json`: the items' token tuples; `source.json`: which data
//! it was trained on), so that a model directory is self-contained for `eval`, `recommend` and `align`.

use crate::args::DataSource;
use anyhow::{Context, Result};
use reg4rec_data::io::{read_json, write_json_atomic};
use reg4rec_model::{load_model, Reg4RecModel, Which};
use reg4rec_tokenizer::Codes;
use std::path::Path;

pub const CODES_FILE: &str = "codes.json";
pub const SOURCE_FILE: &str = "source.json";

/// Records the codes and the data source in a model directory.
pub fn write_extras(dir: &Path, source: &DataSource, codes: &Codes) -> Result<()> {
    write_json_atomic(&dir.join(CODES_FILE), codes)?;
    write_json_atomic(&dir.join(SOURCE_FILE), source)?;
    Ok(())
}

/// Copies the extras of one model directory into another (an aligned run inherits its pre-trained run's).
pub fn copy_extras(from: &Path, to: &Path) -> Result<()> {
    let (codes, source) = read_extras(from)?;
    write_extras(to, &source, &codes)
}

pub fn read_extras(dir: &Path) -> Result<(Codes, DataSource)> {
    let codes: Codes = read_json(&dir.join(CODES_FILE)).with_context(|| {
        format!(
            "{} is not a model directory written by `reg4rec pretrain` or `reg4rec align`",
            dir.display()
        )
    })?;
    codes.validate()?;
    let source: DataSource = read_json(&dir.join(SOURCE_FILE))?;
    Ok((codes, source))
}

/// The data a model directory was trained on, loaded again and checked against its recorded fingerprint.
pub fn source_data(dir: &Path, source: &DataSource) -> Result<reg4rec_data::Dataset> {
    source.load(&dir.join(SOURCE_FILE))
}

/// A model directory's best weights, its codes and its data source.
pub fn load_model_dir(dir: &Path) -> Result<(Reg4RecModel, Codes, DataSource)> {
    let (codes, data) = read_extras(dir)?;
    let (model, _) = load_model(dir, Which::Best, &codes, tch::Device::Cpu)
        .with_context(|| format!("loading the model in {}", dir.display()))?;
    Ok((model, codes, data))
}

/// Reads the tokenizer directory's codes.
pub fn tokenizer_codes(dir: &Path) -> Result<Codes> {
    let tok = reg4rec_tokenizer::load(dir)
        .with_context(|| format!("loading the tokenizer in {}", dir.display()))?;
    Ok(tok.codes().clone())
}
