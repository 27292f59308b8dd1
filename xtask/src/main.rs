//! `cargo xtask`: the project's make. It installs libtorch from PyPI into a project-local virtual environment,
//! records the environment the other commands need (LIBTORCH, LD_LIBRARY_PATH), and runs the tests, the
//! `reg4rec` binary, the benches and the main pipeline with it. It builds without libtorch.

mod env;
mod layers;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::Command;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "reg4rec set-up, tests, runs and pipelines"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install libtorch (torch 2.11.0 from PyPI) into `.venv` and record the environment. Idempotent.
    Setup {
        /// Install the full CUDA build (about 4.7 GB) instead of the lean CPU one.
        #[arg(long)]
        cuda: bool,
        /// Reinstall even if a verified installation exists.
        #[arg(long)]
        force: bool,
    },
    /// Set up if needed, then run the whole workspace's tests with that environment.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build (release) and run the `reg4rec` binary: `cargo xtask run -- data stats --dataset ml-100k`.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The main job: every stage on a dataset, ending in `runs/<dataset>-<preset>/report.{json,md}`.
    /// Arguments go to `reg4rec pipeline` (see `cargo xtask pipeline --help-pipeline`).
    Pipeline {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the criterion benches (`cargo bench -p reg4rec-benches`) with the recorded environment.
    Bench {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Print `export` lines for LIBTORCH and LD_LIBRARY_PATH: `eval "$(cargo xtask env)"`.
    Env,
    /// `cargo fmt --check` and `cargo clippy --all-targets -- -D warnings` over the workspace.
    Lint,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup { cuda, force } => {
            setup::setup(cuda, force)?;
        }
        Cmd::Test { args } => {
            let env = setup::ensure()?;
            let chromium = ensure_chromium()?;
            let torch_python = setup::ensure_torch_python(&env)?;
            let mut c = env.cargo();
            c.env("REG4REC_CHROMIUM", chromium);
            c.env("REG4REC_TORCH_PYTHON", torch_python);
            c.args(["test", "--workspace"]).args(&args);
            env::run(&mut c)?;
        }
        Cmd::Run { args } => {
            let env = setup::ensure()?;
            let bin = build_cli(&env)?;
            let mut c = env.command(&bin);
            c.args(&args);
            env::run(&mut c)?;
        }
        Cmd::Pipeline { args } => {
            let env = setup::ensure()?;
            let bin = build_cli(&env)?;
            let mut c = env.command(&bin);
            c.arg("pipeline").args(&args);
            env::run(&mut c)?;
        }
        Cmd::Bench { args } => {
            let env = setup::ensure()?;
            let mut c = env.cargo();
            c.args(["bench", "-p", "reg4rec-benches"]).args(&args);
            env::run(&mut c)?;
        }
        Cmd::Env => {
            print!("{}", setup::ensure()?.exports());
        }
        Cmd::Lint => {
            let env = setup::ensure()?;
            env::run(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
            let mut c = env.cargo();
            c.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            env::run(&mut c)?;
        }
    }
    Ok(())
}

/// Debian's Chromium for the browser test of `reg4rec serve`'s page: found on the PATH, or installed with
/// apt-get (as root) when missing.
fn ensure_chromium() -> Result<String> {
    let works = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for bin in ["chromium", "/usr/bin/chromium"] {
        if works(bin) {
            return Ok(bin.to_string());
        }
    }
    eprintln!("installing Debian's chromium for the browser test (apt-get)...");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            anyhow::bail!(
                "the browser test needs Chromium: `apt-get install chromium` failed (run as root, or install \
                 it yourself)"
            );
        }
    }
    if works("chromium") {
        Ok("chromium".into())
    } else {
        anyhow::bail!("chromium was installed but does not run (`chromium --version` failed)")
    }
}

/// Builds the release `reg4rec` binary and returns its path.
fn build_cli(env: &env::TorchEnv) -> Result<std::path::PathBuf> {
    let mut c = env.cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "reg4rec-cli",
        "--bin",
        "reg4rec",
    ]);
    env::run(&mut c)?;
    Ok(env.target_dir().join("release").join("reg4rec"))
}
