//! Trains the tokenizers with their DEFAULT configs on a registry dataset's default item features and prints one
//! report JSON object per tokenizer.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example tokenize -- [DATASET] [mpq|rqvae ...]
//! ```

use reg4rec_data::{build_item_features, FeatureConfig, ItemFeatures, LeaveOneOut, LoadOptions};
use reg4rec_tokenizer::{train, FeatureMatrix, ItemIndex, TokenizerConfig, TokenizerKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dataset = args.next().unwrap_or_else(|| "amazon-beauty".to_string());
    let kinds: Vec<TokenizerKind> = {
        let k: Vec<String> = args.collect();
        if k.is_empty() {
            vec![TokenizerKind::Mpq, TokenizerKind::RqVae]
        } else {
            k.iter().map(|s| s.parse()).collect::<Result<_, _>>()?
        }
    };
    if let Some(n) = std::env::var("TORCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        tch::set_num_threads(n);
    }
    let t = std::time::Instant::now();
    let ds = reg4rec_data::load(&dataset, &LoadOptions::default())?;
    let split = LeaveOneOut::new(&ds);
    // FEATURE_CONFIG='{...}' overrides the feature defaults (for experiments only);
    // FEATURES_CACHE=path.safetensors reuses a previous run's features.
    let feature_cfg: FeatureConfig = match std::env::var("FEATURE_CONFIG") {
        Ok(json) => serde_json::from_str(&json)?,
        Err(_) => FeatureConfig::default(),
    };
    let features = match std::env::var_os("FEATURES_CACHE").map(std::path::PathBuf::from) {
        Some(p) if p.exists() => ItemFeatures::load(&p)?,
        cache => {
            let f = build_item_features(&ds, &split, &feature_cfg)?;
            if let Some(p) = cache {
                f.save(&p)?;
            }
            f
        }
    };
    eprintln!(
        "{dataset}: {} items, feature dim {}, features in {:.1}s, torch threads {}",
        features.n_items,
        features.dim,
        t.elapsed().as_secs_f64(),
        tch::get_num_threads()
    );
    for kind in kinds {
        // TOKENIZER_CONFIG='{...}' overrides defaults (for tuning; the done-when numbers use the defaults).
        let cfg = match std::env::var("TOKENIZER_CONFIG") {
            Ok(json) => TokenizerConfig::from_json(kind, &json)?,
            Err(_) => TokenizerConfig::default_for(kind),
        };
        let (tok, report) = train(FeatureMatrix::of(&features)?, &cfg)?;
        ItemIndex::new(tok.codes())?;
        println!("{} {}", kind, serde_json::to_string(&report)?);
    }
    Ok(())
}
