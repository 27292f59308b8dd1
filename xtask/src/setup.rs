//! `cargo xtask setup`: a project-local venv holding torch 2.11.0 from PyPI (the version tch 0.24.0 binds).
//!
//! The lean CPU install is the torch wheel without its dependencies plus the two NVIDIA runtime wheels its
//! libraries link against (about 1.3 GB); `--cuda` installs the full build with every CUDA library (about
//! 4.7 GB). Set-up is idempotent: a verified installation of the requested kind is left as it is. It also
//! makes sure Gloo's headers are present (Debian's `libgloo-dev`, installed with apt-get when missing): the pip
//! wheel ships c10d's headers but not Gloo's, and `reg4rec-dist` compiles against both.

use crate::env::{output, run, TorchEnv};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TORCH_VERSION: &str = "2.11.0";
const LEAN_PACKAGES: [&str; 3] = [
    "torch==2.11.0",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cupti==13.0.85",
];

/// Workspace root (the parent of `xtask/`). `cargo xtask` (`cargo run`) sets `CARGO_MANIFEST_DIR` when it runs the
/// binary, so a checkout whose `CARGO_TARGET_DIR` is shared with another one sets itself up and tests itself, not
/// the checkout the binary was first compiled in; the compile-time value is the fallback.
pub fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The recorded environment, running set-up first when there is none or it no longer verifies.
pub fn ensure() -> Result<TorchEnv> {
    let root = root();
    ensure_gloo_headers()?;
    if let Some(env) = TorchEnv::load(&root)? {
        if verify(&env.libtorch, env.cuda).is_ok() {
            return Ok(env);
        }
        eprintln!("xtask: the recorded libtorch no longer verifies; running set-up again");
    }
    setup(false, false)
}

pub fn setup(cuda: bool, force: bool) -> Result<TorchEnv> {
    let root = root();
    ensure_gloo_headers()?;
    if !force {
        if let Some(env) = TorchEnv::load(&root)? {
            // A CUDA installation also serves CPU work.
            if (env.cuda || !cuda) && verify(&env.libtorch, env.cuda).is_ok() {
                eprintln!(
                    "xtask: libtorch {} ({}) already installed at {}",
                    env.torch_version,
                    if env.cuda { "cuda" } else { "cpu" },
                    env.libtorch.display()
                );
                return Ok(env);
            }
        }
    }
    let venv = root.join(".venv");
    let py = venv.join("bin").join("python");
    if !py.exists() {
        let base = std::env::var("REG4REC_PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!("xtask: creating {} with {base}", venv.display());
        run(Command::new(&base).args(["-m", "venv"]).arg(&venv))
            .context("creating the venv (is python3 with the venv module installed?)")?;
    }
    let mut pip = Command::new(&py);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check"]);
    if cuda {
        eprintln!("xtask: installing the full CUDA build of torch {TORCH_VERSION} (about 4.7 GB)");
        pip.arg(format!("torch=={TORCH_VERSION}"));
    } else {
        eprintln!(
            "xtask: installing the lean CPU libtorch (torch {TORCH_VERSION} without dependencies)"
        );
        pip.arg("--no-deps").args(LEAN_PACKAGES);
    }
    run(&mut pip).context("pip install failed (PyPI must be reachable)")?;

    let site = PathBuf::from(output(Command::new(&py).args([
        "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])",
    ]))?);
    let libtorch = site.join("torch");
    let version = verify(&libtorch, cuda)?;
    let env = TorchEnv {
        root: root.clone(),
        library_path: library_path(&libtorch, &site)?,
        libtorch,
        cuda,
        torch_version: version,
    };
    env.save()?;
    eprintln!(
        "xtask: libtorch {} ready; environment recorded in {}",
        env.torch_version,
        TorchEnv::record_path(&root).display()
    );
    Ok(env)
}

/// A Python that can `import numpy, torch, safetensors`, for the test that PyTorch reads reg4rec's checkpoints: the
/// project venv when it holds the full (CUDA) build, else `target/torch-python`, created with the full torch
/// wheel, safetensors and numpy from PyPI (about 4.7 GB, no pip cache) when missing or broken.
pub fn ensure_torch_python(env: &TorchEnv) -> Result<PathBuf> {
    let works = |py: &Path| {
        Command::new(py)
            .args([
                "-c",
                "import numpy, torch, safetensors.torch; print(torch.__version__)",
            ])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(TORCH_VERSION.as_bytes()))
    };
    let project = env.root.join(".venv/bin/python");
    if env.cuda && works(&project) {
        return Ok(project);
    }
    let venv = env.root.join("target/torch-python");
    let py = venv.join("bin/python");
    if works(&py) {
        return Ok(py);
    }
    eprintln!(
        "xtask: installing PyTorch {TORCH_VERSION}, safetensors and numpy into {} for the PyTorch \
         interoperability test (about 4.7 GB)",
        venv.display()
    );
    let base = std::env::var("REG4REC_PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&base)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))
    .context("creating the PyTorch test venv")?;
    run(Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-cache-dir",
        ])
        .arg(format!("torch=={TORCH_VERSION}"))
        .args(["safetensors", "numpy"]))
    .context("pip install of torch, safetensors and numpy failed (PyPI must be reachable)")?;
    if !works(&py) {
        bail!(
            "{} cannot `import numpy, torch, safetensors` after installing them",
            py.display()
        );
    }
    Ok(py)
}

/// Checks the installed torch: its version (from the package metadata, no import needed) and the files the
/// build and the loader need. Returns the version.
pub fn verify(libtorch: &Path, cuda: bool) -> Result<String> {
    let site = libtorch
        .parent()
        .context("libtorch path has no parent folder")?;
    let mut version = None;
    for entry in std::fs::read_dir(site).with_context(|| format!("reading {}", site.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("torch-") {
            if let Some(v) = rest.strip_suffix(".dist-info") {
                version = Some(v.to_string());
            }
        }
    }
    let version = version.with_context(|| format!("no torch package in {}", site.display()))?;
    if version.split('+').next() != Some(TORCH_VERSION) {
        bail!(
            "torch {version} installed in {}, tch 0.24.0 needs {TORCH_VERSION}",
            site.display()
        );
    }
    let mut needed = vec![
        libtorch.join("lib/libtorch_cpu.so"),
        libtorch.join("lib/libc10.so"),
        libtorch.join("include/torch/csrc/api/include/torch/torch.h"),
        site.join("nvidia/cu13/lib/libcudart.so.13"),
    ];
    if cuda {
        needed.push(libtorch.join("lib/libtorch_cuda.so"));
    }
    for f in needed {
        if !f.exists() {
            bail!(
                "incomplete libtorch installation: {} is missing",
                f.display()
            );
        }
    }
    Ok(version)
}

/// libtorch's `lib/` and every NVIDIA wheel's `lib/` folder.
fn library_path(libtorch: &Path, site: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![libtorch.join("lib")];
    let nvidia = site.join("nvidia");
    if nvidia.is_dir() {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&nvidia)? {
            let lib = entry?.path().join("lib");
            if lib.is_dir() {
                found.push(lib);
            }
        }
        found.sort();
        dirs.extend(found);
    }
    Ok(dirs)
}

/// Gloo's headers: `GLOO_INCLUDE` (a folder holding `gloo/config.h`) or `/usr/include/gloo`; when neither has
/// them, installs Debian's `libgloo-dev` (as root; `apt-get update` only when apt does not know the package).
pub fn ensure_gloo_headers() -> Result<()> {
    let include = std::env::var_os("GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    if include.join("gloo/config.h").exists() {
        return Ok(());
    }
    let hint = "reg4rec-dist needs Gloo's headers: install `libgloo-dev` (Debian/Ubuntu: \
                `sudo apt-get install -y libgloo-dev`) or set GLOO_INCLUDE to a folder holding gloo/config.h";
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "{} has no gloo/config.h and apt-get is missing. {hint}",
            include.display()
        );
    }
    let uid = output(Command::new("id").arg("-u")).unwrap_or_default();
    if uid != "0" {
        bail!("Gloo's headers are missing and installing them needs root. {hint}");
    }
    let known = output(Command::new("apt-cache").args(["policy", "libgloo-dev"]))
        .map(|p| p.contains("Candidate:") && !p.contains("Candidate: (none)"))
        .unwrap_or(false);
    if !known {
        eprintln!("xtask: apt-get update (libgloo-dev is not in the package lists)");
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(std::io::stderr()))
        .context(hint)?;
    }
    eprintln!("xtask: installing libgloo-dev (Gloo's headers, for reg4rec-dist)");
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "libgloo-dev",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        // stdout carries `cargo xtask env`'s export lines.
        .stdout(std::io::stderr()))
    .context(hint)?;
    if !include.join("gloo/config.h").exists() {
        bail!(
            "libgloo-dev installed but {} has no gloo/config.h. {hint}",
            include.display()
        );
    }
    Ok(())
}
