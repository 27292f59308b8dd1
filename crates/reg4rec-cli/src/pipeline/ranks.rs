//! The pipeline's training stages as data-parallel runs (`reg4rec pipeline --nproc N`): the stage starts this
//! binary's `pretrain` or `align` with `--nproc N` (the launcher of [`crate::launch`]) on the stage's config,
//! written beside the run as `launch-config.toml`, and keeps the report rank 0 prints. Other stages
//! (tokenizers, baselines, evaluation) run in the pipeline's own process as before.

use crate::args::DataArgs;
use crate::config::PipelineConfig;
use anyhow::{bail, Context, Result};
use reg4rec_model::config::Mode;
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

/// How many local ranks train each stage, and the rendezvous port they use.
#[derive(Debug, Clone, Copy)]
pub struct Ranks {
    pub nproc: usize,
    pub master_port: u16,
}

impl Ranks {
    /// `reg4rec pretrain` on `tokenizer`'s codes into `dir`; returns its report.
    pub fn pretrain(
        &self,
        data: &DataArgs,
        tokenizer: &Path,
        mode: Mode,
        cfg: &PipelineConfig,
        dir: &Path,
        resume: bool,
    ) -> Result<reg4rec_model::PretrainReport> {
        let mut args: Vec<OsString> = vec!["pretrain".into()];
        match &data.data {
            Some(p) => args.extend(["--data".into(), p.into()]),
            None => args.extend(["--dataset".into(), data.dataset.clone().into()]),
        }
        if let Some(k) = data.k_core {
            args.extend(["--k-core".into(), k.to_string().into()]);
        }
        args.extend(["--tokenizer".into(), tokenizer.into()]);
        let mode = match mode {
            Mode::Reg4rec => "reg4rec",
            Mode::Tiger => "tiger",
        };
        args.extend(["--mode".into(), mode.into()]);
        self.run(args, cfg, dir, resume)
    }

    /// `reg4rec align` of the pre-trained run `pretrained` into `dir`; returns its report.
    pub fn align(
        &self,
        pretrained: &Path,
        cfg: &PipelineConfig,
        dir: &Path,
        resume: bool,
    ) -> Result<reg4rec_align::AlignReport> {
        let args: Vec<OsString> = vec!["align".into(), "--model".into(), pretrained.into()];
        self.run(args, cfg, dir, resume)
    }

    /// Runs the ranks and reads the report rank 0 prints (a `R` of the command's own type).
    fn run<R: serde::de::DeserializeOwned>(
        &self,
        mut args: Vec<OsString>,
        cfg: &PipelineConfig,
        dir: &Path,
        resume: bool,
    ) -> Result<R> {
        let config = dir.join("launch-config.toml");
        reg4rec_data::io::write_atomic(&config, toml::to_string_pretty(cfg)?.as_bytes())?;
        args.extend(["--out".into(), dir.into(), "--config".into(), config.into()]);
        if resume {
            args.push("--resume".into());
        }
        args.extend([
            "--nproc".into(),
            self.nproc.to_string().into(),
            "--master-port".into(),
            self.master_port.to_string().into(),
        ]);
        let exe = std::env::current_exe().context("finding this executable")?;
        tracing::info!(nproc = self.nproc, out = %dir.display(), "starting data-parallel ranks");
        let out = Command::new(&exe)
            .args(&args)
            .env_remove("WORLD_SIZE")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("starting {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "the data-parallel run in {} failed ({})",
                dir.display(),
                out.status
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "the data-parallel run in {} printed no report: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}
