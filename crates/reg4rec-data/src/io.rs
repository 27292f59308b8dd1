//! File helpers shared by every reg4rec crate: atomic writes (temp file in the same folder, fsync, rename) and
//! sha256 of files.

use crate::error::{DataError, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a reader sees either the old file or the whole new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` writing into the temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| DataError::invalid(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{}.{}.tmp", file_name, std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| DataError::invalid(path, format!("cannot serialise JSON: {e}")))?;
    write_atomic(path, &bytes)
}

/// Reads and deserialises a JSON file, naming the file, line and column on error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| DataError::parse(path, e.line(), e.to_string()))
}

/// Hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| DataError::io(path, e))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Hex sha256 of a byte slice.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Checks a file against an expected sha256.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let found = sha256_file(path)?;
    if found != expected {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

/// An append-only JSON-lines log of training records (`metrics.jsonl`): one JSON object per line, appended as
/// it happens; on resume, [`JsonlLog::truncate_after`] cuts it back (atomically) to the records of the steps the
/// checkpoint covers, so a resumed run's log equals an uninterrupted run's.
#[derive(Debug, Clone)]
pub struct JsonlLog {
    path: std::path::PathBuf,
}

impl JsonlLog {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        JsonlLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line.
    pub fn append(&self, record: &serde_json::Value) -> Result<()> {
        let mut line = record.to_string();
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| DataError::io(&self.path, e))
    }

    /// Every parseable record (none when the file does not exist).
    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Keeps only the records whose `step` is at most `step`.
    pub fn truncate_after(&self, step: u64) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let kept: String = self
            .records()
            .into_iter()
            .filter(|r| {
                r.get("step")
                    .and_then(|s| s.as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|r| r.to_string() + "\n")
            .collect();
        write_atomic(&self.path, kept.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |_| Err(std::io::Error::other("boom")));
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn jsonl_log_truncates_to_a_step() {
        let dir = tempfile::tempdir().unwrap();
        let log = JsonlLog::new(dir.path().join("metrics.jsonl"));
        log.truncate_after(0).unwrap();
        for step in 1..=4u64 {
            log.append(&serde_json::json!({ "step": step })).unwrap();
        }
        log.truncate_after(2).unwrap();
        let steps: Vec<u64> = log
            .records()
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2]);
    }

    #[test]
    fn checksum_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        std::fs::write(&p, b"abc").unwrap();
        verify_sha256(
            &p,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        let e = verify_sha256(&p, "00").unwrap_err().to_string();
        assert!(e.contains("x.txt") && e.contains("sha256 mismatch"), "{e}");
    }
}
