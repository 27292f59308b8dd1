//! What a model directory is. Training (`reg4rec pretrain`, `reg4rec align`, the pipeline) writes, next to the
//! run's `config.json`, `best.json` and weights:
//!
//! - `codes.json`: every item's token tuple ([`Codes`]);
//! - `source.json`: the data it was trained on ([`DataSource`], with the data's fingerprint);
//! - `catalog.json`: item ids, categories, added and removed items ([`Catalog`]);
//! - `manifest.json` (written when training ends, by [`seal`]): the sha256 of each of those files and of the
//!   best weights, verified by [`verify`] whenever the directory is loaded.
//!
//! A directory written before catalogs and manifests were recorded still loads: its catalog is rebuilt from
//! the training data (checked against the recorded fingerprint) and a warning says its files are unverified.

use crate::catalog::Catalog;
use crate::error::{RecommenderError, Result};
use crate::source::DataSource;
use reg4rec_data::io::{read_json, sha256_file, write_json_atomic};
use reg4rec_tokenizer::Codes;
use reg4rec_train::{Best, RunDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const CODES_FILE: &str = "codes.json";
pub const SOURCE_FILE: &str = "source.json";
pub const CATALOG_FILE: &str = "catalog.json";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The tokenizer the model's codes came from (a copy), to encode items added after training.
pub const TOKENIZER_DIR: &str = "tokenizer";
/// The search settings chosen for the model on validation ([`ChosenSearch`]), when a pipeline chose them.
pub const SEARCH_FILE: &str = "search.json";
/// The run configuration the trainers write (`reg4rec_train::checkpoint::RunDir::config`).
const RUN_CONFIG_FILE: &str = "config.json";
const MANIFEST_FORMAT: u32 = 1;

/// `manifest.json`: the sha256 of every file a loaded model depends on, by path relative to the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub files: BTreeMap<String, String>,
}

/// Records the codes, the data source and the catalog in a model directory.
pub fn write_extras(
    dir: &Path,
    source: &DataSource,
    codes: &Codes,
    catalog: &Catalog,
) -> Result<()> {
    write_json_atomic(&dir.join(CODES_FILE), codes)?;
    write_json_atomic(&dir.join(SOURCE_FILE), source)?;
    write_json_atomic(&dir.join(CATALOG_FILE), catalog)?;
    Ok(())
}

/// Copies the extras of one model directory into another (an aligned run inherits its pre-trained run's).
pub fn copy_extras(from: &Path, to: &Path) -> Result<()> {
    let (codes, source) = read_extras(from)?;
    write_json_atomic(&to.join(CODES_FILE), &codes)?;
    write_json_atomic(&to.join(SOURCE_FILE), &source)?;
    let catalog = from.join(CATALOG_FILE);
    if catalog.is_file() {
        let c: Catalog = read_json(&catalog)?;
        write_json_atomic(&to.join(CATALOG_FILE), &c)?;
    }
    let tokenizer = from.join(TOKENIZER_DIR);
    if tokenizer.is_dir() {
        copy_tokenizer(&tokenizer, to)?;
    }
    Ok(())
}

/// Copies the tokenizer saved in `tokenizer` into the model directory's `tokenizer/` (loaded and saved again,
/// so only its own files travel), so items added later go through the same encoder.
pub fn copy_tokenizer(tokenizer: &Path, dir: &Path) -> Result<()> {
    let tok = reg4rec_tokenizer::load(tokenizer)?;
    tok.save(&dir.join(TOKENIZER_DIR))?;
    Ok(())
}

/// The codes (validated) and the data source of a model directory.
/// The search settings chosen for a model on validation (the pipeline's CORP threshold sweep): `serve`,
/// `recommend` and `eval` apply them unless the command line sets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChosenSearch {
    /// The CORP threshold (`null`: CORP off).
    pub theta: Option<f32>,
    /// How it was chosen, for logs and `/v1/info`.
    pub how: String,
}

/// Records `search` in the model directory `dir` ([`SEARCH_FILE`]) and seals it again.
pub fn write_search(dir: &Path, search: &ChosenSearch) -> Result<()> {
    write_json_atomic(&dir.join(SEARCH_FILE), search)?;
    seal(dir)?;
    Ok(())
}

/// The search settings recorded in `dir`, if any.
pub fn read_search(dir: &Path) -> Result<Option<ChosenSearch>> {
    let path = dir.join(SEARCH_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(read_json(&path)?))
}

/// Checks that `dir` is a model directory before anything is read from it; another reg4rec directory is named
/// for what it is (a tokenizer, a pipeline run).
pub fn require(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(RecommenderError::file(dir, "no such directory"));
    }
    let has = |f: &str| dir.join(f).is_file();
    if has(CODES_FILE) && has(SOURCE_FILE) && has(RUN_CONFIG_FILE) {
        return Ok(());
    }
    let what = if has("tokenizer.json") {
        "a tokenizer directory (written by `reg4rec tokenize`), not a model directory"
    } else if has("report.json") && dir.join("stages").is_dir() {
        "a pipeline run directory, not a model directory (its models are under stages/, e.g. \
         stages/align-reg4rec)"
    } else {
        "not a model directory"
    };
    Err(RecommenderError::file(
        dir,
        format!(
            "{what}: give one written by `reg4rec pretrain` or `reg4rec align` (it holds \
             {RUN_CONFIG_FILE}, {CODES_FILE} and {SOURCE_FILE})"
        ),
    ))
}

pub fn read_extras(dir: &Path) -> Result<(Codes, DataSource)> {
    let path = dir.join(CODES_FILE);
    if !path.is_file() {
        return Err(RecommenderError::file(
            dir,
            format!(
                "not a model directory written by `reg4rec pretrain` or `reg4rec align` (no {CODES_FILE})"
            ),
        ));
    }
    let codes: Codes = read_json(&path)?;
    codes
        .validate()
        .map_err(|e| RecommenderError::file(&path, e.to_string()))?;
    let source: DataSource = read_json(&dir.join(SOURCE_FILE))?;
    Ok((codes, source))
}

/// The files a manifest covers: the extras, the run configuration, `best.json` and the best weights.
fn covered(dir: &Path) -> Result<Vec<String>> {
    let run = RunDir::new(dir);
    let best: Best = read_json(&run.best())?;
    let mut files: Vec<String> = [
        CODES_FILE,
        SOURCE_FILE,
        CATALOG_FILE,
        SEARCH_FILE,
        "config.json",
        "best.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.push(best.weights);
    let tok = dir.join(TOKENIZER_DIR);
    if tok.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&tok)
            .map_err(|e| reg4rec_data::DataError::io(&tok, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| format!("{TOKENIZER_DIR}/{}", e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        files.extend(names);
    }
    Ok(files)
}

/// Writes `manifest.json` for a finished run (call it after the last write of the best weights).
pub fn seal(dir: &Path) -> Result<Manifest> {
    let mut files = BTreeMap::new();
    for f in covered(dir)? {
        let p = dir.join(&f);
        if p.is_file() {
            files.insert(f, sha256_file(&p)?);
        }
    }
    let m = Manifest {
        format: MANIFEST_FORMAT,
        files,
    };
    write_json_atomic(&dir.join(MANIFEST_FILE), &m)?;
    Ok(m)
}

/// Checks every file of the directory's manifest against its sha256 (`None`: the directory has no manifest).
/// A file missing, changed, or a covered file absent from the manifest is an error naming the file.
pub fn verify(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let m: Manifest = read_json(&path)?;
    if m.format != MANIFEST_FORMAT {
        return Err(RecommenderError::file(
            &path,
            format!(
                "manifest format {} (this build reads {MANIFEST_FORMAT})",
                m.format
            ),
        ));
    }
    for (f, want) in &m.files {
        let p = dir.join(f);
        if !p.is_file() {
            return Err(RecommenderError::file(
                &p,
                format!("listed in {MANIFEST_FILE} but missing"),
            ));
        }
        let got = sha256_file(&p)?;
        if &got != want {
            return Err(RecommenderError::file(
                &p,
                format!(
                    "sha256 {got} differs from {want} recorded in {MANIFEST_FILE}: the file changed after \
                     training (corrupt or edited); restore it or train again"
                ),
            ));
        }
    }
    for f in covered(dir)? {
        if dir.join(&f).is_file() && !m.files.contains_key(&f) {
            return Err(RecommenderError::file(
                dir.join(&f),
                format!("not covered by {MANIFEST_FILE} (written by another run?)"),
            ));
        }
    }
    Ok(Some(m))
}
