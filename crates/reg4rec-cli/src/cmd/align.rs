//! `reg4rec align`: PARS (GRPO with the four rewards) plus MSRA on a pre-trained model.

use crate::args::ConfigArgs;
use crate::launch::DistArgs;
use crate::ops;
use anyhow::Result;
use clap::Args;
use reg4rec_data::LeaveOneOut;
use reg4rec_model::PrecisionMode;
use reg4rec_recommender::model_dir;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AlignArgs {
    /// A run directory written by `reg4rec pretrain`.
    #[arg(long)]
    pub model: PathBuf,
    /// Run directory of the aligned model.
    #[arg(long)]
    pub out: PathBuf,
    /// Compute precision of the policy's linear layers during alignment: fp32, bf16, or ladq (per-layer
    /// fp32/bf16/fp8 from K-FAC traces, history in `--out`/ladq.jsonl). Default: the config's
    /// `align.precision`.
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

pub fn run(a: AlignArgs) -> Result<()> {
    let mut cfg = a.config.resolve_for("align", &["align"])?;
    if let Some(p) = a.precision {
        cfg.align.precision = p;
        cfg.align.validate()?;
    }
    let Some(pg) = a.dist.join(&mut cfg.align.device)? else {
        return Ok(());
    };
    let dp = a.dist.data_parallel(&pg);
    let (_, source) = model_dir::read_extras(&a.model)?;
    let ds = source.load(&a.model.join(model_dir::SOURCE_FILE))?;
    let split = LeaveOneOut::new(&ds);
    let report = ops::align(&ds, &split, &a.model, &cfg.align, &a.out, a.resume, dp)?;
    if dp.is_none_or(|d| d.is_main()) {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
