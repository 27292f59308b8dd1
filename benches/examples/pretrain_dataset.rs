//! Measurement run: pre-train on a registry dataset with the CPU presets and print the report as JSON.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example pretrain_dataset -- DATASET MODE OUT_DIR [EPOCHS] [TOKENIZER_DIR]
//! ```
//! MODE is `reg4rec` (MPQ tokens) or `tiger` (RQ-VAE tokens). The tokenizer is trained with its default config
//! (and saved to `OUT_DIR/tokenizer`) unless TOKENIZER_DIR names a saved one. The CLI's `reg4rec pretrain` is
//! the user-facing path; this example exists to measure the model crate on its own.

use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::{build_item_features, FeatureConfig, LoadOptions};
use reg4rec_model::{pretrain, Mode, ModelConfig, TrainConfig};
use reg4rec_tokenizer::{FeatureMatrix, TokenizerConfig, TokenizerKind};
use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: pretrain_dataset DATASET MODE OUT_DIR [EPOCHS] [TOKENIZER_DIR]".into());
    }
    let (name, mode, out) = (&args[0], &args[1], PathBuf::from(&args[2]));
    let (mode, kind) = match mode.as_str() {
        "reg4rec" => (Mode::Reg4rec, TokenizerKind::Mpq),
        "tiger" => (Mode::Tiger, TokenizerKind::RqVae),
        other => return Err(format!("unknown mode `{other}`").into()),
    };
    let ds = reg4rec_data::load(name, &LoadOptions::default())?;
    let split = LeaveOneOut::new(&ds);
    eprintln!(
        "{name}: {} users, {} items, {} categories, {} training examples",
        split.n_users(),
        ds.n_items(),
        ds.n_categories(),
        split.training_examples().len()
    );
    let tokenizer = match args.get(4) {
        Some(dir) => reg4rec_tokenizer::load(std::path::Path::new(dir))?,
        None => {
            let t0 = std::time::Instant::now();
            let f = build_item_features(&ds, &split, &FeatureConfig::default())?;
            let features = FeatureMatrix::new(f.n_items, f.dim, &f.values)?;
            let (tok, report) =
                reg4rec_tokenizer::train(features, &TokenizerConfig::default_for(kind))?;
            eprintln!(
                "tokenizer ({:.0}s): {}",
                t0.elapsed().as_secs_f64(),
                serde_json::to_string(&report)?
            );
            tok.save(&out.join("tokenizer"))?;
            tok
        }
    };
    let model_cfg = ModelConfig {
        mode,
        ..ModelConfig::preset("cpu")?
    };
    let mut train_cfg = TrainConfig::preset("cpu")?;
    if let Some(e) = args.get(3) {
        train_cfg.epochs = e.parse()?;
    }
    let report = pretrain(
        &ds,
        &split,
        tokenizer.codes(),
        &model_cfg,
        &train_cfg,
        &out.join("model"),
        false,
        Default::default(),
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
