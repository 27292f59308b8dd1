//! Measurement run for LADQ (spec section 6): pre-train the CPU-preset model on a registry dataset under each
//! `--precision` (fp32, bf16, ladq) for the same number of steps from the same seed, then print one table row
//! per precision: training target items/s and the validation CRSS loss (evaluated in f32 on every user's validation
//! target), plus the last LADQ assignment.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example precision_compare -- DATASET TOKENIZER_DIR OUT_DIR [STEPS] [SAMPLE_EVERY] [THREADS]
//! ```
//! STEPS defaults to 150 optimizer steps (the cpu preset's batch of users), SAMPLE_EVERY (LADQ's P) to 50, THREADS (libtorch intra-op
//! threads) to 1.

use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::LoadOptions;
use reg4rec_model::{
    load_model, pretrain, validation_loss, LadqConfig, ModelConfig, PrecisionMode, PretrainOptions,
    SeqBatchBuilder, TrainConfig, Which,
};
use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err(
            "usage: precision_compare DATASET TOKENIZER_DIR OUT_DIR [STEPS] [SAMPLE_EVERY] [THREADS]".into(),
        );
    }
    let (name, tok_dir, out) = (&args[0], PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let steps: u64 = args.get(3).map_or(Ok(150), |s| s.parse())?;
    let sample_every: u64 = args.get(4).map_or(Ok(50), |s| s.parse())?;
    let threads: i32 = args.get(5).map_or(Ok(1), |s| s.parse())?;
    tch::set_num_threads(threads);
    let ds = reg4rec_data::load(name, &LoadOptions::default())?;
    let split = LeaveOneOut::new(&ds);
    let tokenizer = reg4rec_tokenizer::load(&tok_dir)?;
    let codes = tokenizer.codes();
    let model_cfg = ModelConfig::preset("cpu")?;
    println!(
        "{name}: {} users; cpu preset, {steps} steps, LADQ sample every {sample_every}, {threads} thread(s)",
        split.n_users()
    );
    println!("| precision | targets/s | train loss (last epoch part) | valid CRSS loss (f32) | last LADQ fp32/bf16/fp8 |");
    println!("|---|---|---|---|---|");
    for mode in [
        PrecisionMode::Fp32,
        PrecisionMode::Bf16,
        PrecisionMode::Ladq,
    ] {
        let train_cfg = TrainConfig {
            epochs: 1,
            precision: mode,
            ladq: LadqConfig {
                sample_every,
                ..Default::default()
            },
            ..TrainConfig::preset("cpu")?
        };
        let dir = out.join(mode.as_str());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let opts = PretrainOptions {
            stop_after_steps: Some(steps),
            ..Default::default()
        };
        let report = pretrain(
            &ds, &split, codes, &model_cfg, &train_cfg, &dir, false, opts,
        )?;
        let (model, _) = load_model(&dir, Which::Latest, codes, tch::Device::Cpu)?;
        let builder = SeqBatchBuilder {
            vocab: model.vocab(),
            history_len: model_cfg.history_len,
            codes,
            item_category: &ds.item_category,
        };
        let weights = train_cfg.objective();
        let (valid, _, _) = validation_loss(&model, &split, &builder, weights, 512)?;
        let last = std::fs::read_to_string(dir.join("ladq.jsonl"))
            .ok()
            .and_then(|t| t.lines().next_back().map(String::from))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .map_or("-".to_string(), |v| v["counts"].to_string());
        let train_loss = std::fs::read_to_string(dir.join("metrics.jsonl"))?
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["kind"] == "step")
            .and_then(|v| v["loss"].as_f64())
            .unwrap_or(f64::NAN);
        println!(
            "| {mode} | {:.0} | {train_loss:.4} | {valid:.4} | {last} |",
            report.targets_per_s
        );
    }
    Ok(())
}
