//! Saving and loading a trained tokenizer directory:
//!
//! - `tokenizer.json`: [`Manifest`] (format version, kind, shapes, the resolved config, sha256 of the other files),
//! - `weights.safetensors`: every network variable by its module-tree name (`experts.0.encoder.fc1.weight`, ...),
//! - `codes.json`: the items' distinct token tuples ([`Codes`]).
//!
//! Every file is written atomically (weights and codes first, the manifest last). Loading checks the version, the
//! checksums, every tensor's name, dtype and shape, and that codes match the manifest; a missing, truncated,
//! corrupt or mismatched file is an error naming the file.

use crate::codes::Codes;
use crate::error::{Result, TokenizerError};
use crate::TokenizerKind;
use reg4rec_data::io::{read_json, sha256_file, write_atomic, write_json_atomic};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Tensor};

/// Version of the directory layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const CODES_FILE: &str = "codes.json";

/// `tokenizer.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub kind: TokenizerKind,
    pub n_items: usize,
    /// Size of an item feature vector.
    pub input_dim: usize,
    /// Codebooks (tokens per item).
    pub m: usize,
    /// Codes per codebook.
    pub d: usize,
    /// The resolved config ([`crate::MpqConfig`] or [`crate::RqVaeConfig`] by `kind`).
    pub config: serde_json::Value,
    pub weights_sha256: String,
    pub codes_sha256: String,
}

pub(crate) fn save(
    dir: &Path,
    kind: TokenizerKind,
    cfg: &impl Serialize,
    input_dim: usize,
    vs: &nn::VarStore,
    codes: &Codes,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TokenizerError::file(dir, e.to_string()))?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    reg4rec_data::tensors::save_tch(&weights_path, &vars, &[])?;

    let codes_path = dir.join(CODES_FILE);
    let codes_bytes =
        serde_json::to_vec(codes).map_err(|e| TokenizerError::file(&codes_path, e.to_string()))?;
    write_atomic(&codes_path, &codes_bytes)?;

    let config = serde_json::to_value(cfg)
        .map_err(|e| TokenizerError::file(dir.join(MANIFEST_FILE), e.to_string()))?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        kind,
        n_items: codes.n_items(),
        input_dim,
        m: codes.m,
        d: codes.d,
        config,
        weights_sha256: sha256_file(&weights_path)?,
        codes_sha256: sha256_file(&codes_path)?,
    };
    write_json_atomic(&dir.join(MANIFEST_FILE), &manifest)?;
    Ok(())
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        return Err(TokenizerError::file(
            &path,
            "missing: not a saved tokenizer directory",
        ));
    }
    // Read the version first so a future layout gives a version error rather than a field error.
    let raw: serde_json::Value = read_json(&path)?;
    match raw.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v == FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(TokenizerError::file(
                &path,
                format!("format version {v}, this build reads version {FORMAT_VERSION}"),
            ))
        }
        None => return Err(TokenizerError::file(&path, "no `format_version` field")),
    }
    let manifest: Manifest =
        serde_json::from_value(raw).map_err(|e| TokenizerError::file(&path, e.to_string()))?;
    if manifest.m == 0 || manifest.d == 0 || manifest.input_dim == 0 {
        return Err(TokenizerError::file(
            &path,
            "m, d and input_dim must be >= 1",
        ));
    }
    Ok(manifest)
}

/// The config of `manifest`, checked against its `m` and `d`.
pub(crate) fn parse_config<T: DeserializeOwned + Serialize>(
    dir: &Path,
    manifest: &Manifest,
) -> Result<T> {
    let path = dir.join(MANIFEST_FILE);
    let cfg: T = serde_json::from_value(manifest.config.clone())
        .map_err(|e| TokenizerError::file(&path, format!("config: {e}")))?;
    let v = serde_json::to_value(&cfg).map_err(|e| TokenizerError::file(&path, e.to_string()))?;
    for (field, expected) in [("m", manifest.m), ("d", manifest.d)] {
        if v.get(field).and_then(|x| x.as_u64()) != Some(expected as u64) {
            return Err(TokenizerError::file(
                &path,
                format!("config.{field} does not match the manifest's {field} = {expected}"),
            ));
        }
    }
    Ok(cfg)
}

pub(crate) fn read_codes(dir: &Path, manifest: &Manifest, ordered: bool) -> Result<Codes> {
    let path = dir.join(CODES_FILE);
    if !path.is_file() {
        return Err(TokenizerError::file(&path, "missing"));
    }
    if sha256_file(&path)? != manifest.codes_sha256 {
        return Err(TokenizerError::file(
            &path,
            format!("sha256 differs from {MANIFEST_FILE}: the file is corrupt or from another tokenizer"),
        ));
    }
    let codes: Codes = read_json(&path)?;
    codes
        .validate()
        .map_err(|e| TokenizerError::file(&path, e.to_string()))?;
    let found = (codes.m, codes.d, codes.n_items(), codes.ordered);
    let expected = (manifest.m, manifest.d, manifest.n_items, ordered);
    if found != expected {
        return Err(TokenizerError::file(
            &path,
            format!("(m, d, n_items, ordered) = {found:?}, the manifest says {expected:?}"),
        ));
    }
    if codes.collision_rate() > 0.0 {
        return Err(TokenizerError::file(&path, "two items share a token tuple"));
    }
    Ok(codes)
}

/// Copies `weights.safetensors` into the variables of `vs`, checking the manifest's checksum and every tensor's
/// name, dtype and shape ([`reg4rec_data::tensors::load_into_tch`]).
pub(crate) fn load_weights(dir: &Path, manifest: &Manifest, vs: &mut nn::VarStore) -> Result<()> {
    let path = dir.join(WEIGHTS_FILE);
    if !path.is_file() {
        return Err(TokenizerError::file(&path, "missing"));
    }
    if sha256_file(&path)? != manifest.weights_sha256 {
        return Err(TokenizerError::file(
            &path,
            format!("sha256 differs from {MANIFEST_FILE}: the file is corrupt or from another tokenizer"),
        ));
    }
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    reg4rec_data::tensors::load_into_tch(&path, &vars)?;
    Ok(())
}
