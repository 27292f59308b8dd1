//! Items to semantic tokens with MPQ: train the tokenizer on item features, read an item's tokens, see that
//! similar items share tokens, save and reload the tokenizer, and give a new item tokens without retraining.
//!
//! ```text
//! cargo run --release -p reg4rec-tokenizer --example tokenize_items -- [DATASET [PRESET [OUT]]]
//! ```
//! `DATASET`: a registry name (default `ml-100k`) or your own log file (docs/data.md). `PRESET`: a file of
//! `configs/` (`smoke` by default: seconds on ml-100k; `cpu` is what the pipeline reports). `OUT` (default
//! `runs/tokenize-items`) receives the trained tokenizer.

use reg4rec_data::{build_item_features, FeatureConfig, LeaveOneOut, LoadOptions};
use reg4rec_tokenizer::{FeatureMatrix, MpqConfig, TokenizerConfig};
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args.first().map_or("ml-100k", String::as_str);
    let preset = args.get(1).map_or("smoke", String::as_str);
    let out = PathBuf::from(args.get(2).map_or("runs/tokenize-items", String::as_str));

    let ds = if Path::new(data).is_file() {
        reg4rec_data::load_path(Path::new(data), &LoadOptions::default())?
    } else {
        reg4rec_data::load(data, &LoadOptions::default())?
    };
    // Features from item attributes and TRAINING co-occurrence only; any n_items x dim matrix of your own
    // (text or image embeddings) can take their place through `FeatureMatrix::new`.
    let features_cfg: FeatureConfig = reg4rec_data::presets::section(preset, "features")?;
    let features = build_item_features(&ds, &LeaveOneOut::new(&ds), &features_cfg)?;

    // MPQ: M codebooks of D codes, trained in parallel (a mixture of experts), so every item gets M tokens
    // that form a set: no token comes "first". Colliding items are moved apart until every tuple is unique.
    let mpq: MpqConfig = reg4rec_data::presets::section(preset, "mpq")?;
    let (tokenizer, report) =
        reg4rec_tokenizer::train(FeatureMatrix::of(&features)?, &TokenizerConfig::Mpq(mpq))?;
    let codes = tokenizer.codes();
    println!(
        "{}: {} items -> {} tokens each from {} codebooks of {} codes ({:.1}% collided before resolution, \
         {:.1}% after; codebook utilisation {:?})",
        ds.name,
        codes.n_items(),
        codes.m,
        codes.m,
        codes.d,
        100.0 * report.collision_rate_before,
        100.0 * report.collision_rate_after,
        report
            .utilisation
            .iter()
            .map(|u| format!("{u:.2}"))
            .collect::<Vec<_>>()
    );

    // An item's tokens, and the items that share all but one of them: their neighbours in token space.
    let item = 0;
    let show = |i: usize| {
        format!(
            "{} [{}] {:?}",
            ds.item_ids[i],
            ds.category_names
                .get(ds.item_category[i] as usize)
                .map_or("", String::as_str),
            codes.tuple(i)
        )
    };
    println!("item {}", show(item));
    let shared = |i: usize| {
        let (a, b) = (codes.tuple(item), codes.tuple(i));
        a.iter().zip(b).filter(|(x, y)| x == y).count()
    };
    let neighbours: Vec<usize> = (0..codes.n_items())
        .filter(|&i| i != item && shared(i) + 1 >= codes.m)
        .take(5)
        .collect();
    println!(
        "items sharing {} of its {} tokens:",
        codes.m.saturating_sub(1),
        codes.m
    );
    for i in neighbours {
        println!("  {}", show(i));
    }

    // The trained tokenizer is a directory (weights with checksums, codes, config): load it back and encode
    // a new item from its feature row. Existing items keep their tokens; the new one gets a tuple no other
    // item has.
    tokenizer.save(&out)?;
    let reloaded = reg4rec_tokenizer::load(&out)?;
    let new_row = tch::Tensor::from_slice(features.row(item)).view([1, features.dim as i64]);
    let new = reloaded.encode_new(&new_row, reloaded.codes())?;
    println!(
        "a new item with item {}'s features gets {:?} (item {} keeps {:?}); tokenizer saved in {}",
        ds.item_ids[item],
        new.tuple(0),
        ds.item_ids[item],
        reloaded.codes().tuple(item),
        out.display()
    );
    Ok(())
}
