//! Cached, resumable stages. Each stage owns `<out>/stages/<name>/`; its key is the hash of its name, its
//! configuration and its upstream stages' keys. A stage whose `result.json` carries the current key is skipped;
//! a stage directory with the current key but no result is resumed (its work is passed `resume = true`); a
//! different key starts the stage afresh.

use anyhow::{Context, Result};
use reg4rec_data::io::{read_json, write_json_atomic};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Names of the stages other modules refer to (the figures read their logs).
pub const SASREC: &str = "sasrec-ce";
/// SASRec-CE whose item embeddings also read the item features (`pipeline.sasrec_features`).
pub const SASREC_FEATURES: &str = "sasrec-ce-features";
pub const PRETRAIN_REG4REC: &str = "pretrain-reg4rec";
pub const PRETRAIN_NO_MPQ: &str = "pretrain-reg4rec-no-mpq";
pub const PRETRAIN_TIGER: &str = "pretrain-tiger";
pub const ALIGN_REG4REC: &str = "align-reg4rec";
pub const ALIGN_NO_MSRA: &str = "align-reg4rec-no-msra";
pub const ALIGN_NO_MPQ: &str = "align-reg4rec-no-mpq";
/// The alignments of the path-ranked rows (`align_paths`, validated path-ranked).
pub const ALIGN_REG4REC_PATHS: &str = "align-reg4rec-paths";
pub const ALIGN_NO_MSRA_PATHS: &str = "align-reg4rec-no-msra-paths";
pub const ALIGN_NO_MPQ_PATHS: &str = "align-reg4rec-no-mpq-paths";

/// The tokenizer stage of `kind` (`tokenizer-mpq`, `tokenizer-rqvae`).
pub fn tokenizer(kind: reg4rec_tokenizer::TokenizerKind) -> String {
    format!("tokenizer-{kind}")
}

#[derive(Serialize, Deserialize)]
struct Stamped<T> {
    key: String,
    /// Wall-clock seconds the stage's work took when it ran (0 in results written before this was recorded).
    #[serde(default)]
    seconds: f64,
    result: T,
}

/// The wall time of one stage of a run, for the report: the seconds its work took when it ran (a cached stage
/// reports its original time, so a cached re-run writes the same report; a resumed stage, its last part).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTime {
    pub name: String,
    pub seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    key: String,
}

/// Where stages live and whether cached results may be reused; records every stage's wall time.
pub struct StageRunner {
    pub root: PathBuf,
    pub force: bool,
    pub times: std::cell::RefCell<Vec<StageTime>>,
}

impl StageRunner {
    pub fn new(root: PathBuf, force: bool) -> Self {
        StageRunner {
            root,
            force,
            times: Default::default(),
        }
    }

    fn record(&self, name: &str, seconds: f64) {
        self.times.borrow_mut().push(StageTime {
            name: name.to_string(),
            seconds,
        });
    }
}

/// A finished stage: its result, its key (the input of downstream keys) and its directory, always
/// `<run>/stages/<name>` under the current run root (never stored, so a moved run directory keeps its cache).
#[derive(Clone)]
pub struct Done<T> {
    pub result: T,
    pub key: String,
    pub dir: PathBuf,
}

impl StageRunner {
    /// Runs (or reuses) stage `name`. `inputs` is everything the result depends on (its config section and
    /// upstream keys). `work(dir, resume)` produces the result.
    pub fn run<T, I>(
        &self,
        name: &str,
        inputs: &I,
        work: impl FnOnce(&Path, bool) -> Result<T>,
    ) -> Result<Done<T>>
    where
        T: Serialize + DeserializeOwned,
        I: Serialize,
    {
        let key = stage_key(name, inputs)?;
        let dir = self.root.join("stages").join(name);
        let result_path = dir.join("result.json");
        let key_path = dir.join("key.json");
        if !self.force && result_path.exists() {
            if let Ok(stamped) = read_json::<Stamped<T>>(&result_path) {
                if stamped.key == key {
                    tracing::info!(stage = name, "cached; skipping");
                    self.record(name, stamped.seconds);
                    return Ok(Done {
                        result: stamped.result,
                        key,
                        dir,
                    });
                }
            }
        }
        let resume = !self.force
            && read_json::<KeyFile>(&key_path).is_ok_and(|k| k.key == key)
            && !result_path.exists();
        if !resume && dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("clearing stale stage {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_json_atomic(&key_path, &KeyFile { key: key.clone() })?;
        tracing::info!(stage = name, resume, "running");
        let t = std::time::Instant::now();
        let result = work(&dir, resume).with_context(|| format!("stage `{name}`"))?;
        let seconds = t.elapsed().as_secs_f64();
        self.record(name, seconds);
        let stamped = Stamped {
            key: key.clone(),
            seconds,
            result,
        };
        write_json_atomic(&result_path, &stamped)?;
        Ok(Done {
            result: stamped.result,
            key,
            dir,
        })
    }
}

/// The version of the code that computes the stages: part of every key, so results of another reg4rec release
/// are recomputed rather than reused.
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Hex sha256 of the code version, the stage name and its inputs' JSON.
pub fn stage_key<I: Serialize>(name: &str, inputs: &I) -> Result<String> {
    key_for(CODE_VERSION, name, inputs)
}

fn key_for<I: Serialize>(version: &str, name: &str, inputs: &I) -> Result<String> {
    let json = serde_json::to_vec(inputs)?;
    let mut h = Sha256::new();
    h.update(version.as_bytes());
    h.update([0]);
    h.update(name.as_bytes());
    h.update([0]);
    h.update(&json);
    Ok(format!("{:x}", h.finalize())[..16].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn finished_stage_is_reused_and_changed_inputs_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let r = StageRunner::new(dir.path().to_path_buf(), false);
        let calls = Cell::new(0);
        let f = |_: &Path, _| {
            calls.set(calls.get() + 1);
            Ok(calls.get())
        };
        assert_eq!(r.run("s", &1, f).unwrap().result, 1);
        assert_eq!(r.run("s", &1, f).unwrap().result, 1);
        assert_eq!(calls.get(), 1);
        assert_eq!(r.run("s", &2, f).unwrap().result, 2);
    }

    #[test]
    fn keys_change_with_the_code_version_the_name_and_the_inputs() {
        let k = key_for("0.1.0", "s", &1).unwrap();
        assert_eq!(k, key_for("0.1.0", "s", &1).unwrap());
        assert_ne!(k, key_for("0.2.0", "s", &1).unwrap());
        assert_ne!(k, key_for("0.1.0", "t", &1).unwrap());
        assert_ne!(k, key_for("0.1.0", "s", &2).unwrap());
        assert_eq!(
            stage_key("s", &1).unwrap(),
            key_for(CODE_VERSION, "s", &1).unwrap()
        );
    }

    #[test]
    fn interrupted_stage_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let r = StageRunner::new(dir.path().to_path_buf(), false);
        let failed: Result<Done<u32>> = r.run("s", &1, |_, _| anyhow::bail!("killed"));
        assert!(failed.is_err());
        let done = r.run("s", &1, |_, resume| Ok(resume)).unwrap();
        assert!(done.result, "the second run must be told to resume");
    }
}
