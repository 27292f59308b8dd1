//! `reg4rec export`: a model directory's item semantic IDs and catalog in files other tools read.

use anyhow::{bail, Result};
use clap::Args;
use reg4rec_data::io::{write_atomic, write_json_atomic};
use reg4rec_recommender::{export, Recommender};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A model directory written by `reg4rec pretrain` or `reg4rec align`.
    #[arg(long)]
    pub model: PathBuf,
    /// Write the semantic IDs here: `{"<item id>": ["<a_12>", "<b_3>", ...]}`.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Write the catalog here as JSON lines: item id, category, tokens, available, added.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
}

pub fn run(a: ExportArgs) -> Result<()> {
    if a.ids.is_none() && a.catalog.is_none() {
        bail!("nothing to export: give --ids FILE and/or --catalog FILE");
    }
    let rec = Recommender::load(&a.model)?;
    if let Some(p) = &a.ids {
        write_json_atomic(p, &export::semantic_ids(&rec))?;
        println!(
            "{} items' semantic IDs -> {}",
            rec.codes().n_items(),
            p.display()
        );
    }
    if let Some(p) = &a.catalog {
        let mut out = Vec::new();
        for line in export::catalog_lines(&rec) {
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
        }
        write_atomic(p, &out)?;
        println!(
            "catalog ({} items) -> {}",
            rec.catalog().n_items(),
            p.display()
        );
    }
    Ok(())
}
