//! `reg4rec recommend`: top-N items for a history, with the reasoning path of each as its explanation.

use crate::args::{ConfigArgs, SearchArgs};
use anyhow::{bail, Result};
use clap::Args;
use reg4rec_recommender::{RecommendOptions, Recommender};
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
    #[command(flatten)]
    pub search: SearchArgs,
    /// The `[infer]` section (beam, CORP, dense weight) comes from here, as for `reg4rec serve`.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Only recommend items of these categories (repeatable or comma-separated).
    #[arg(long = "allow-category", value_delimiter = ',')]
    pub allow_category: Vec<String>,
    /// Never recommend items of these categories.
    #[arg(long = "block-category", value_delimiter = ',')]
    pub block_category: Vec<String>,
    /// Never recommend these items (original ids).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
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

impl RecommendArgs {
    /// The request options these arguments ask for.
    pub fn options(&self) -> RecommendOptions {
        RecommendOptions {
            k: self.top,
            beam: None,
            // `--rank` is applied through `set_infer`.
            rank: None,
            allowed_categories: self.allow_category.clone(),
            blocked_categories: self.block_category.clone(),
            exclude_items: self.exclude.clone(),
            exclude_history: self.exclude_history,
            explain: self.explain,
        }
    }
}

pub fn run(a: RecommendArgs) -> Result<()> {
    let cfg = a.config.resolve_for("recommend", &["infer"])?;
    let mut rec = Recommender::load(&a.model)?;
    let mode = rec.model().config().mode;
    rec.set_infer(
        &a.search
            .infer(&cfg.infer, mode, &a.model, a.config.sets("infer.theta"))?,
    )?;
    if a.history.iter().all(|h| h.trim().is_empty()) {
        bail!("--history is empty");
    }
    let out = rec.recommend(&a.history, &a.options())?;
    if let Some(n) = &out.notice {
        eprintln!("note: {n}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for r in &out.items {
        let e = &r.explanation;
        let item = e
            .item_score
            .map_or(String::new(), |l| format!(", item head {l:.4}"));
        let name = r.name.as_ref().map_or(String::new(), |n| format!(" {n:?}"));
        println!(
            "{:>2}. item {}{name} ({})  score {:.4} (path {:.4}{item})",
            r.rank, r.item_id, r.category, e.score, e.path_score
        );
        if a.explain {
            println!("    {}", e.render().replace('\n', "\n    "));
        }
    }
    Ok(())
}
