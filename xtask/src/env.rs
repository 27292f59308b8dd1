//! The environment recorded by `cargo xtask setup` (`.venv/reg4rec-env.json`) and the commands run with it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where libtorch is and what the dynamic loader needs to find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TorchEnv {
    /// Workspace root.
    pub root: PathBuf,
    /// `torch` package folder inside the venv (holds `lib/` and `include/`).
    pub libtorch: PathBuf,
    /// Folders holding libtorch's shared libraries and the NVIDIA runtime libraries it links.
    pub library_path: Vec<PathBuf>,
    /// Whether the full CUDA build is installed.
    pub cuda: bool,
    /// torch version verified at set-up.
    pub torch_version: String,
}

impl TorchEnv {
    pub fn record_path(root: &Path) -> PathBuf {
        root.join(".venv").join("reg4rec-env.json")
    }

    pub fn load(root: &Path) -> Result<Option<TorchEnv>> {
        let p = Self::record_path(root);
        if !p.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        match serde_json::from_str(&text) {
            Ok(env) => Ok(Some(env)),
            // A record from an older xtask or a torn write: set-up runs again.
            Err(_) => Ok(None),
        }
    }

    pub fn save(&self) -> Result<()> {
        let p = Self::record_path(&self.root);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))?;
        Ok(())
    }

    /// `LD_LIBRARY_PATH` with libtorch's folders first.
    pub fn ld_library_path(&self) -> String {
        let mut parts: Vec<String> = self
            .library_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if let Ok(old) = std::env::var("LD_LIBRARY_PATH") {
            parts.extend(old.split(':').filter(|s| !s.is_empty()).map(String::from));
        }
        parts.dedup();
        parts.join(":")
    }

    /// The target folder: CUDA builds live apart so switching never rebuilds the other.
    pub fn target_dir(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) => PathBuf::from(d),
            None if self.cuda => self.root.join("target").join("cuda"),
            None => self.root.join("target"),
        }
    }

    /// Applies the environment to a command.
    pub fn apply(&self, c: &mut Command) {
        c.env("LIBTORCH", &self.libtorch)
            .env("LD_LIBRARY_PATH", self.ld_library_path())
            .env("CARGO_TARGET_DIR", self.target_dir())
            .current_dir(&self.root);
        // libtorch's OpenMP threads busy-wait by default; on a shared or oversubscribed machine (tests running
        // in parallel, other jobs) that makes every step several times slower.
        if std::env::var_os("OMP_WAIT_POLICY").is_none() {
            c.env("OMP_WAIT_POLICY", "PASSIVE");
        }
        if self.cuda {
            // Without --no-as-needed the linker drops libtorch_cuda (no symbol is referenced directly) and
            // `Cuda::is_available()` is false.
            c.env(
                "RUSTFLAGS",
                "-C link-arg=-Wl,--no-as-needed -C link-arg=-ltorch_cuda",
            );
        }
    }

    /// `cargo` with the environment applied.
    pub fn cargo(&self) -> Command {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        self.apply(&mut c);
        c
    }

    /// Any program with the environment applied.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        self.apply(&mut c);
        c
    }

    /// Shell lines that export the environment (`eval "$(cargo xtask env)"`).
    pub fn exports(&self) -> String {
        format!(
            "export LIBTORCH='{}'\nexport LD_LIBRARY_PATH='{}'\nexport OMP_WAIT_POLICY=PASSIVE\n",
            self.libtorch.display(),
            self.ld_library_path()
        )
    }
}

/// Runs a command to completion, failing with its command line when it fails.
pub fn run(c: &mut Command) -> Result<()> {
    let status = c
        .status()
        .with_context(|| format!("cannot start {:?}", c.get_program()))?;
    if !status.success() {
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        bail!(
            "`{} {}` failed with {status}",
            c.get_program().to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

/// Runs a command and returns its trimmed standard output.
pub fn output(c: &mut Command) -> Result<String> {
    let out = c
        .output()
        .with_context(|| format!("cannot start {:?}", c.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed with {}: {}",
            c.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
