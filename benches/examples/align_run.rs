//! End-to-end PARS measurement on a registry dataset: MPQ codes (default tokenizer config on the default item
//! features), a pre-trained model (the `cpu` preset's `[model]` and `[pretrain]`), then alignment
//! (its `[align]`, or the JSON in `ALIGN_CONFIG`; `PRETRAIN_MODEL` / `PRETRAIN_TRAIN` likewise override
//! the pre-training presets). Stages already present in WORK_DIR are reused.
//! Prints the AlignReport as JSON.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example align_run -- ml-100k runs/align-ml-100k
//! ```

use reg4rec_align::{align, AlignConfig};
use reg4rec_data::{build_item_features, FeatureConfig, LeaveOneOut, LoadOptions};
use reg4rec_model::{pretrain, ModelConfig, TrainConfig};
use reg4rec_tokenizer::{FeatureMatrix, TokenizerConfig, TokenizerKind};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dataset = args.next().unwrap_or_else(|| "ml-100k".to_string());
    let work = PathBuf::from(
        args.next()
            .unwrap_or_else(|| format!("runs/align-{dataset}")),
    );
    let ds = reg4rec_data::load(&dataset, &LoadOptions::default())?;
    let split = LeaveOneOut::new(&ds);

    let tok_dir = work.join("tokenizer");
    let t = Instant::now();
    let tokenizer = if tok_dir.exists() {
        reg4rec_tokenizer::load(&tok_dir)?
    } else {
        let features = build_item_features(&ds, &split, &FeatureConfig::default())?;
        let cfg = TokenizerConfig::default_for(TokenizerKind::Mpq);
        let (tok, report) = reg4rec_tokenizer::train(FeatureMatrix::of(&features)?, &cfg)?;
        tok.save(&tok_dir)?;
        eprintln!("tokenizer: {}", serde_json::to_string(&report)?);
        tok
    };
    let codes = tokenizer.codes().clone();
    eprintln!(
        "codes m = {}, d = {} ({:.1}s)",
        codes.m,
        codes.d,
        t.elapsed().as_secs_f64()
    );

    let pre_dir = work.join("pretrain");
    if !pre_dir.join("best.json").exists() {
        let t = Instant::now();
        let resume = pre_dir.join("latest.json").exists();
        // PRETRAIN_MODEL / PRETRAIN_TRAIN = '{...}' override the cpu presets (a loaded 2-core machine).
        let model_cfg: ModelConfig = match std::env::var("PRETRAIN_MODEL") {
            Ok(json) => serde_json::from_str(&json)?,
            Err(_) => ModelConfig::preset("cpu")?,
        };
        let train_cfg: TrainConfig = match std::env::var("PRETRAIN_TRAIN") {
            Ok(json) => serde_json::from_str(&json)?,
            Err(_) => TrainConfig::preset("cpu")?,
        };
        let r = pretrain(
            &ds,
            &split,
            &codes,
            &model_cfg,
            &train_cfg,
            &pre_dir,
            resume,
            Default::default(),
        )?;
        eprintln!(
            "pretrain: {} ({:.1}s)",
            serde_json::to_string(&r)?,
            t.elapsed().as_secs_f64()
        );
    }

    let cfg = match std::env::var("ALIGN_CONFIG") {
        Ok(json) => serde_json::from_str(&json)?,
        Err(_) => AlignConfig::preset("cpu")?,
    };
    let name = std::env::var("ALIGN_RUN").unwrap_or_else(|_| "align".into());
    let run = work.join(name);
    let resume = run.join("latest.json").exists();
    let t = Instant::now();
    let report = align(
        &ds,
        &split,
        &codes,
        &pre_dir,
        &cfg,
        &run,
        resume,
        Default::default(),
    )?;
    eprintln!("align: {:.1}s wall", t.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
