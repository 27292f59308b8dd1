//! `reg4rec align`: PARS (GRPO with the four rewards) plus MSRA on a pre-trained model.

use crate::args::ConfigArgs;
use crate::{artifacts, ops};
use anyhow::Result;
use clap::Args;
use reg4rec_data::LeaveOneOut;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AlignArgs {
    /// A run directory written by `reg4rec pretrain`.
    #[arg(long)]
    pub model: PathBuf,
    /// Run directory of the aligned model.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in `--out` from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(a: AlignArgs) -> Result<()> {
    let cfg = a.config.resolve()?;
    let (_, data) = artifacts::read_extras(&a.model)?;
    let ds = data.load()?;
    let split = LeaveOneOut::new(&ds);
    let report = ops::align(&ds, &split, &a.model, &cfg.align, &a.out, a.resume)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
