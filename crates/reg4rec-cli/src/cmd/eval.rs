//! `reg4rec eval`: full-ranking metrics of a model on the validation or test split.

use crate::args::ConfigArgs;
use crate::ops;
use anyhow::{bail, Result};
use clap::Args;
use reg4rec_data::split::Stage;
use reg4rec_data::LeaveOneOut;
use reg4rec_infer::InferConfig;
use reg4rec_model::config::Mode;
use reg4rec_recommender::Recommender;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory written by `reg4rec pretrain` or `reg4rec align`.
    #[arg(long)]
    pub model: PathBuf,
    /// valid or test.
    #[arg(long, default_value = "test")]
    pub split: Stage,
    /// Beam width (default: the config's `infer.beam`).
    #[arg(long)]
    pub beam: Option<usize>,
    /// CORP threshold, or `off` (default: the config's `infer.theta`).
    #[arg(long)]
    pub theta: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let cfg = a.config.resolve()?;
    let rec = Recommender::load(&a.model)?;
    let model = rec.model();
    let ds = rec.training_data()?;
    let split = LeaveOneOut::new(&ds);
    let mut infer = cfg.infer.clone();
    if let Some(b) = a.beam {
        infer.beam = b;
    }
    if let Some(t) = &a.theta {
        infer.theta = InferConfig::parse_theta(t)?;
        if infer.theta.is_some() && model.config().mode == Mode::Tiger {
            bail!(
                "--theta {t}: CORP prunes paths over unordered codes; {} is a TIGER model (ordered codes), \
                 evaluated without CORP (use --theta off or leave it out)",
                a.model.display()
            );
        }
    }
    // The model kind's rules (TIGER: no CORP), applied once after the overrides.
    let infer = ops::infer_config(model.config().mode, &infer);
    let report = ops::evaluate_model(model, rec.codes(), &split, a.split, &infer)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
