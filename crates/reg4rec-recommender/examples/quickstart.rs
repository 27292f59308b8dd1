//! Your interaction log to explained recommendations through the library, in the order a team meets the steps:
//! load data, build item features from training interactions only, tokenize items with MPQ, pre-train the
//! generative model, make the run a model directory, then load it and recommend with explanations.
//!
//! ```text
//! cargo run --release -p reg4rec-recommender --example quickstart -- [DATA [OUT [PRESET]]]
//! ```
//! `DATA` is a registry name (default `ml-100k`) or your own file: a CSV with `user,item,timestamp` columns (any
//! order, by header; an optional `category` column), a RecBole `.inter` file or a Parquet file. `OUT` (default
//! `runs/quickstart`) receives the tokenizer and the model directory; it must not hold a previous run. Every
//! setting comes from `PRESET`'s file in `configs/`: `smoke` (the default: toy sizes, seconds on ml-100k) or
//! `cpu` (what the pipeline reports: about 3 minutes on ml-100k on 2 cores).

use reg4rec_data::{build_item_features, FeatureConfig, LeaveOneOut, LoadOptions};
use reg4rec_model::{ModelConfig, TrainConfig};
use reg4rec_recommender::{model_dir, Catalog, DataSource, RecommendOptions, Recommender};
use reg4rec_tokenizer::{Codes, FeatureMatrix, MpqConfig, TokenizerConfig};
use std::path::{Path, PathBuf};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args.first().map_or("ml-100k", String::as_str);
    let out = PathBuf::from(args.get(1).map_or("runs/quickstart", String::as_str));
    let preset = args.get(2).map_or("smoke", String::as_str);
    if out.join("model").exists() {
        return Err(format!(
            "{} already holds a model: choose another OUT",
            out.display()
        )
        .into());
    }

    // 1. Data: a registry name or a file, then the leave-one-out split (last item test, second-to-last
    //    validation, the rest training).
    let file = Path::new(data).is_file().then(|| Path::new(data));
    let ds = match file {
        Some(p) => reg4rec_data::load_path(p, &LoadOptions::default())?,
        None => reg4rec_data::load(data, &LoadOptions::default())?,
    };
    let split = LeaveOneOut::new(&ds);
    println!(
        "{}: {} users, {} items, {} categories",
        ds.name,
        ds.n_users(),
        ds.n_items(),
        ds.n_categories()
    );

    // 2. Item features from attributes and TRAINING co-occurrence (never the validation or test items).
    let features_cfg: FeatureConfig = reg4rec_data::presets::section(preset, "features")?;
    let features = build_item_features(&ds, &split, &features_cfg)?;

    // 3. MPQ: M parallel codebooks give every item M unordered semantic tokens.
    let mpq: MpqConfig = reg4rec_data::presets::section(preset, "mpq")?;
    let (tokenizer, report) =
        reg4rec_tokenizer::train(FeatureMatrix::of(&features)?, &TokenizerConfig::Mpq(mpq))?;
    println!(
        "MPQ: {} codebooks of {} codes; {:.1}% of items collided before resolution, {:.1}% after",
        tokenizer.codes().m,
        tokenizer.codes().d,
        100.0 * report.collision_rate_before,
        100.0 * report.collision_rate_after
    );
    let tokenizer_dir = out.join("tokenizer");
    tokenizer.save(&tokenizer_dir)?;
    let codes = Codes {
        ordered: false, // MPQ tokens are a set: CRSS picks their order
        ..tokenizer.codes().clone()
    };

    // 4. Pre-training: every position of a batch of users in one pass, CRSS with the category head; early
    //    stopping and the best weights on validation (checkpoints in the run directory resume exactly).
    let model_dir = out.join("model");
    let trained = reg4rec_model::pretrain(
        &ds,
        &split,
        &codes,
        &ModelConfig::preset(preset)?,
        &TrainConfig::preset(preset)?,
        &model_dir,
        false,
        Default::default(),
    )?;
    println!(
        "pre-training: {} epochs, best {:?}, {:.0} target items/s",
        trained.epochs, trained.best_epoch, trained.targets_per_s
    );

    // 5. A model directory: codes, catalog (ids, categories), the data's fingerprint, the tokenizer (to encode
    //    items added later) and a manifest with the sha256 of every file.
    let source = DataSource::new(&ds.name, file, None, &ds)?;
    model_dir::write_extras(&model_dir, &source, &codes, &Catalog::of(&ds))?;
    model_dir::copy_tokenizer(&tokenizer_dir, &model_dir)?;
    model_dir::seal(&model_dir)?;

    // 6. Recommend for the first user's whole history, with each item's reasoning path.
    let rec = Recommender::load(&model_dir)?;
    let user = 0;
    let history: Vec<String> = ds.sequences[user]
        .iter()
        .map(|&i| ds.item_ids[i as usize].clone())
        .collect();
    let opts = RecommendOptions {
        k: 5,
        explain: true,
        ..Default::default()
    };
    println!(
        "user {} ({} items in the history):",
        ds.user_ids[user],
        history.len()
    );
    for r in rec.recommend(&history, &opts)?.items {
        println!(
            "  {}. {} ({}): {}",
            r.rank,
            r.item_id,
            r.category,
            r.explanation.render()
        );
    }
    println!("model directory: {}", model_dir.display());
    Ok(())
}
