//! `reg4rec recommend`: top-N items for a history, with the reasoning path of each as its explanation.

use crate::artifacts;
use anyhow::{bail, Result};
use clap::Args;
use reg4rec_infer::{BeamSearch, Explanation, InferConfig, ModelScorer};
use reg4rec_tokenizer::ItemIndex;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// A run directory written by `reg4rec pretrain` or `reg4rec align`.
    #[arg(long)]
    pub model: PathBuf,
    /// The user's history, oldest first, as the dataset's original item ids: `--history 12,55,78`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub history: Vec<String>,
    /// Number of items.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Beam width.
    #[arg(long, default_value_t = 20)]
    pub beam: usize,
    /// CORP threshold, or `off`.
    #[arg(long, default_value = "0.06")]
    pub theta: String,
    /// Leave the history's own items out of the recommendations.
    #[arg(long)]
    pub exclude_history: bool,
    /// Show each item's reasoning path: tokens in generation order, per-step categories, JS values.
    #[arg(long)]
    pub explain: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RecommendArgs) -> Result<()> {
    let (model, codes, source) = artifacts::load_model_dir(&a.model)?;
    let ds = artifacts::source_data(&a.model, &source)?;
    let ids: HashMap<&str, u32> = ds
        .item_ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i as u32))
        .collect();
    let mut history = Vec::with_capacity(a.history.len());
    for raw in &a.history {
        match ids.get(raw.trim()) {
            Some(&i) => history.push(i),
            None => bail!(
                "--history: unknown item id `{raw}` in dataset `{}`",
                ds.name
            ),
        }
    }
    if history.is_empty() {
        bail!("--history is empty");
    }
    let cfg = InferConfig {
        beam: a.beam,
        top_n: a.top,
        theta: InferConfig::parse_theta(&a.theta)?,
        exclude_history: a.exclude_history,
        ..InferConfig::default()
    };
    let cfg = crate::ops::infer_config(model.config().mode, &cfg);
    let index = ItemIndex::new(&codes)?;
    let search = BeamSearch::new(&index, &cfg)?;
    let mut scorer = ModelScorer::new(&model, &codes)?;
    let _guard = tch::no_grad_guard();
    // The scorer reads the most recent `history_len` items; with --exclude-history the search gets them all.
    let max = match a.exclude_history {
        true => history.len(),
        false => model.config().history_len,
    };
    let h = &history[history.len().saturating_sub(max)..];
    let out = search.run(&mut scorer, &[h], a.explain)?;
    let recs = out.lists.into_iter().next().unwrap_or_default();
    let explained: Vec<Explanation> = recs
        .iter()
        .take(a.top)
        .map(|r| Explanation::new(r, &ds.category_names, Some(&ds.item_ids), cfg.theta))
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&explained)?);
        return Ok(());
    }
    for (rank, e) in explained.iter().enumerate() {
        let id = e.item_id.as_deref().unwrap_or("?");
        let cat = &ds.category_names[ds.item_category[e.item as usize] as usize];
        let item = e
            .item_logp
            .map_or(String::new(), |l| format!(", item head {l:.4}"));
        println!(
            "{:>2}. item {id} ({cat})  score {:.4} (path {:.4}{item})",
            rank + 1,
            e.score,
            e.path_score
        );
        if a.explain {
            println!("    {}", e.render().replace('\n', "\n    "));
        }
    }
    Ok(())
}
