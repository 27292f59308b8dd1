//! `reg4rec eval`: full-ranking metrics of a model on the validation or test split.

use crate::args::{ConfigArgs, SearchArgs};
use crate::ops;
use anyhow::{Context, Result};
use clap::Args;
use reg4rec_data::split::Stage;
use reg4rec_data::LeaveOneOut;
use reg4rec_infer::InferConfig;
use reg4rec_model::Which;
use reg4rec_recommender::Recommender;
use std::path::PathBuf;
use tch::Device;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory written by `reg4rec pretrain` or `reg4rec align`.
    #[arg(long)]
    pub model: PathBuf,
    /// valid or test.
    #[arg(long, default_value = "test")]
    pub split: Stage,
    /// Which weights of the run: `best` (the best validation checkpoint) or `latest` (the last one written).
    #[arg(long, default_value = "best")]
    pub checkpoint: Checkpoint,
    #[command(flatten)]
    pub search: SearchArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write each user's 0-based target rank (`null`: not in the list), in the split's user order, to this
    /// JSON file as `{"all": [...], "filtered": [...]}` (the history-filtered protocol's ranks beside): paired
    /// comparisons of two models on the same users (`scripts/m-curve.sh`).
    #[arg(long)]
    pub ranks: Option<PathBuf>,
}

/// The `--checkpoint` choices.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Checkpoint {
    Best,
    Latest,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let cfg = a.config.resolve_for("eval", &["infer"])?;
    let which = match a.checkpoint {
        Checkpoint::Best => Which::Best,
        Checkpoint::Latest => Which::Latest,
    };
    let mut rec = Recommender::load_weights(&a.model, which, &InferConfig::default(), Device::Cpu)?;
    let mode = rec.model().config().mode;
    rec.set_infer(
        &a.search
            .infer(&cfg.infer, mode, &a.model, a.config.sets("infer.theta"))?,
    )?;
    let ds = rec.training_data()?;
    let split = LeaveOneOut::new(&ds);
    let report = ops::evaluate_model(rec.model(), rec.codes(), &split, a.split, rec.infer())?;
    if let Some(path) = &a.ranks {
        reg4rec_data::io::write_json_atomic(path, &report.ranks)
            .with_context(|| format!("writing the ranks to {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
