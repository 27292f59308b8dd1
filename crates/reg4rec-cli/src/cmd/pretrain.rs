//! `reg4rec pretrain`: pre-trains the generative model on a tokenizer's codes.

use crate::args::{ConfigArgs, DataArgs};
use crate::launch::DistArgs;
use crate::ops;
use anyhow::Result;
use clap::{Args, ValueEnum};
use reg4rec_data::LeaveOneOut;
use reg4rec_model::config::Mode;
use reg4rec_model::PrecisionMode;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// REG4Rec: CRSS over unordered tokens, category head.
    Reg4rec,
    /// TIGER: fixed codebook order, no category loss (needs RQ-VAE codes).
    Tiger,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Reg4rec => Mode::Reg4rec,
            ModeArg::Tiger => Mode::Tiger,
        }
    }
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// A directory written by `reg4rec tokenize`.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Run directory (checkpoints, metrics.jsonl, the best weights).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "reg4rec")]
    pub mode: ModeArg,
    /// Compute precision of the transformer's linear layers: fp32, bf16, or ladq (per-layer fp32/bf16/fp8 from
    /// K-FAC traces). Default: the config's `pretrain.precision`.
    #[arg(long)]
    pub precision: Option<PrecisionMode>,
    /// Continue the run in `--out` from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub dist: DistArgs,
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let mut cfg = a
        .config
        .resolve_for("pretrain", &["model", "pretrain", "infer", "pipeline"])?;
    if let Some(p) = a.precision {
        cfg.pretrain.precision = p;
        cfg.pretrain.validate()?;
    }
    let Some(pg) = a.dist.join(&mut cfg.pretrain.device)? else {
        return Ok(());
    };
    let dp = a.dist.data_parallel(&pg);
    let ds = a.data.load()?;
    let split = LeaveOneOut::new(&ds);
    let report = ops::pretrain(
        &a.data,
        &ds,
        &split,
        &a.tokenizer,
        a.mode.into(),
        &cfg,
        &a.out,
        a.resume,
        dp,
    )?;
    if dp.is_none_or(|d| d.is_main()) {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
