//! How much the beam search loses against ranking every item exactly: for a sample of users, each item's path
//! log-probability is computed teacher-forced (in the CRSS order the model picks for that item, or codebook
//! order in TIGER mode, with the used-codebook mask, as the beam scores a path) and all items are ranked by it
//! (`exact-path`), by it plus `dense_weight` times the item head's log-probability (`exact-combined`) and by the
//! item head alone (`exact-item`, not a generative ranking: for scale); the beam search ranks only the items it
//! reaches (`beam-path`: `dense_weight` 0, `beam-combined`, and `beam-lookahead`: the beam keeps partial paths by
//! path score plus `dense_weight` times the best item-head score they can reach). CORP is off.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example search_gap -- MODEL_DIR TOKENIZER_DIR DATASET valid|test \
//!     [--users 1000] [--beam 40] [--dense-weight 100] [--exact false]
//! ```
//! The exact rankings decode every item for every user (about 0.6 s a user on amazon-beauty on 2 cores);
//! `--exact false` runs only the beam searches. `--users 0` takes every user.
//! Users are every `n_users / N`-th user (a fixed, spread sample). Prints one JSON line per ranking.

use anyhow::{bail, Context, Result};
use reg4rec_data::metrics::{paired_bootstrap_95, per_user_at, MetricAccumulator};
use reg4rec_data::registry::{load, LoadOptions};
use reg4rec_data::split::{LeaveOneOut, Stage};
use reg4rec_infer::{evaluate, BeamSearch, InferConfig, ModelScorer};
use reg4rec_model::crss::path_log_probs;
use reg4rec_model::{load_model, Reg4RecModel, Which};
use reg4rec_tokenizer::{Codes, ItemIndex};
use reg4rec_train::repeat;
use std::path::PathBuf;
use tch::{Kind, Tensor};

const CHUNK: i64 = 4096;

/// Path log-probability of every item `[n_items]` after one context `[1, d]` ([`path_log_probs`], in chunks);
/// `tuples` `[n_items, M]` are the items' vocabulary ids in codebook order.
fn path_logp(model: &Reg4RecModel, context: &Tensor, tuples: &Tensor) -> Tensor {
    let n = tuples.size()[0];
    let parts: Vec<Tensor> = (0..n)
        .step_by(CHUNK as usize)
        .map(|start| {
            let len = CHUNK.min(n - start);
            path_log_probs(
                model,
                &context.expand([len, -1], false),
                &tuples.narrow(0, start, len),
            )
        })
        .collect();
    Tensor::cat(&parts, 0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: search_gap MODEL_DIR TOKENIZER_DIR DATASET valid|test [--users N] [--beam B] [--dense-weight W]");
    }
    let (model_dir, tok_dir) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let stage: Stage = args[3].parse().map_err(anyhow::Error::msg)?;
    let (mut users, mut beam, mut dense_weight, mut exact) = (1000usize, 40usize, 100f32, true);
    let mut i = 4;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--users" => users = args[i + 1].parse()?,
            "--beam" => beam = args[i + 1].parse()?,
            "--dense-weight" => dense_weight = args[i + 1].parse()?,
            "--exact" => exact = args[i + 1].parse()?,
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    let ds = load(&args[2], &LoadOptions::default())?;
    let mut split = LeaveOneOut::new(&ds);
    if users == 0 {
        users = split.n_users();
    }
    let stride = (split.n_users() / users.max(1)).max(1);
    let keep: Vec<usize> = (0..split.n_users()).step_by(stride).take(users).collect();
    split.users = keep.iter().map(|&u| split.users[u]).collect();
    split.train = keep.iter().map(|&u| split.train[u].clone()).collect();
    split.valid = keep.iter().map(|&u| split.valid[u]).collect();
    split.test = keep.iter().map(|&u| split.test[u]).collect();

    let codes: Codes = reg4rec_data::io::read_json(&tok_dir.join("codes.json"))?;
    let index = ItemIndex::new(&codes)?;
    let (model, run) = load_model(&model_dir, Which::Best, &codes, tch::Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let vocab = model.vocab();
    let n_items = codes.n_items();
    let tuples: Vec<i64> = (0..n_items)
        .flat_map(|i| vocab.item_tokens(codes.tuple(i)))
        .collect();
    let tuples = Tensor::from_slice(&tuples).view([n_items as i64, vocab.m as i64]);

    let l = run.model.history_len;
    let (mut exact_path, mut exact_combined) = (MetricAccumulator::new(), MetricAccumulator::new());
    let mut exact_item = MetricAccumulator::new();
    let t0 = std::time::Instant::now();
    tch::no_grad(|| -> Result<()> {
        for u in (0..split.n_users()).filter(|_| exact) {
            let history = split.history(u, stage, l);
            let enc = model.contexts(&[history.as_slice()])?;
            let path = path_logp(&model, &enc.hidden, &tuples);
            // The window the encoder read (`history` holds at most L items) carries the repeat bias, as in
            // the beam's dense scores.
            let (r, i) = repeat::seen_pairs([history.iter().map(|&i| i64::from(i))]);
            let seen = (Tensor::from_slice(&r), Tensor::from_slice(&i));
            let item = model
                .item_logits(&enc.hidden, &enc.items, &seen, false)
                .log_softmax(-1, Kind::Float)
                .squeeze_dim(0);
            let combined = &path + &item * f64::from(dense_weight);
            let target = split.target(u, stage) as usize;
            exact_path.add_scores(&Vec::<f32>::try_from(&path)?, target);
            exact_combined.add_scores(&Vec::<f32>::try_from(&combined)?, target);
            exact_item.add_scores(&Vec::<f32>::try_from(&item)?, target);
        }
        Ok(())
    })?;
    let exact_secs = t0.elapsed().as_secs_f64();
    for (name, acc) in [
        ("exact-path", &exact_path),
        ("exact-combined", &exact_combined),
        ("exact-item", &exact_item),
    ]
    .into_iter()
    .filter(|_| exact)
    {
        let line =
            serde_json::json!({"ranking": name, "metrics": acc.finish(), "seconds": exact_secs});
        println!("{line}");
    }
    let mut scorer = ModelScorer::new(&model, &codes)?;
    let mut ranks = Vec::new();
    for (name, w, lookahead) in [
        ("beam-path", 0.0, false),
        ("beam-combined", dense_weight, false),
        ("beam-lookahead", dense_weight, true),
    ] {
        let cfg = InferConfig {
            beam,
            theta: None,
            dense_weight: w,
            dense_lookahead: lookahead,
            ..Default::default()
        };
        let search = BeamSearch::new(&index, &cfg)?;
        let t = std::time::Instant::now();
        let report = evaluate(&mut scorer, &search, &split, stage, l)?;
        let line = serde_json::json!({"ranking": name, "beam": beam, "metrics": report.metrics,
            "seconds": t.elapsed().as_secs_f64()});
        println!("{line}");
        ranks.push(report.ranks);
    }
    // The lookahead against re-ranking the beam's items, over the same users.
    let (r_a, n_a) = per_user_at(&ranks[2].all, 10);
    let (r_b, n_b) = per_user_at(&ranks[1].all, 10);
    let line = serde_json::json!({
        "paired": "beam-lookahead minus beam-combined",
        "recall_10": paired_bootstrap_95(&r_a, &r_b, 1000, 0),
        "ndcg_10": paired_bootstrap_95(&n_a, &n_b, 1000, 0),
    });
    println!("{line}");
    Ok(())
}
