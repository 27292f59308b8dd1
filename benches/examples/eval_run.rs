//! Evaluates a pre-trained (or aligned) model directory with the constrained search, for a list of CORP
//! thresholds (the theta sweep):
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example eval_run -- MODEL_DIR TOKENIZER_DIR DATASET valid|test \
//!     [--beam 20] [--users N] [--theta 0.04,0.06,off] [--from-step 3] [--dense-weight 1]
//! ```
//! Prints one JSON `EvalReport` per theta (with the theta, metrics, pruned paths and the model/bookkeeping
//! time split). `--users N` evaluates the first N users only (quick checks).

use anyhow::{bail, Context, Result};
use reg4rec_data::registry::{load, LoadOptions};
use reg4rec_data::split::{LeaveOneOut, Stage};
use reg4rec_infer::{evaluate, BeamSearch, InferConfig, ModelScorer};
use reg4rec_model::{load_model, Which};
use reg4rec_tokenizer::{Codes, ItemIndex};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: eval_run MODEL_DIR TOKENIZER_DIR DATASET valid|test [--beam B] [--users N] [--theta LIST]");
    }
    let (model_dir, tok_dir) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let stage: Stage = args[3].parse().map_err(anyhow::Error::msg)?;
    let (mut beam, mut users, mut thetas) = (20usize, None, vec![Some(0.06f32), None]);
    let mut corp_from_step = InferConfig::default().corp_from_step;
    let mut dense_weight = InferConfig::default().dense_weight;
    let mut i = 4;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--beam" => beam = args[i + 1].parse()?,
            "--from-step" => corp_from_step = args[i + 1].parse()?,
            "--dense-weight" => dense_weight = args[i + 1].parse()?,
            "--users" => users = Some(args[i + 1].parse::<usize>()?),
            "--theta" => {
                thetas = args[i + 1]
                    .split(',')
                    .map(InferConfig::parse_theta)
                    .collect::<Result<_, _>>()?
            }
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    let ds = load(&args[2], &LoadOptions::default())?;
    let mut split = LeaveOneOut::new(&ds);
    if let Some(n) = users {
        let n = n.min(split.n_users());
        split.users.truncate(n);
        split.train.truncate(n);
        split.valid.truncate(n);
        split.test.truncate(n);
    }
    let codes: Codes = reg4rec_data::io::read_json(&tok_dir.join("codes.json"))?;
    let index = ItemIndex::new(&codes)?;
    let (model, run) = load_model(&model_dir, Which::Best, &codes, tch::Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let mut scorer = ModelScorer::new(&model, &codes)?;
    for theta in thetas {
        let cfg = InferConfig {
            beam,
            theta,
            corp_from_step,
            dense_weight,
            ..Default::default()
        };
        let search = BeamSearch::new(&index, &cfg)?;
        let report = evaluate(&mut scorer, &search, &split, stage, run.model.history_len)?;
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
