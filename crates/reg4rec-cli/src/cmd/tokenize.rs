//! `reg4rec tokenize`: item features, then an MPQ or RQ-VAE tokenizer, saved to a directory.

use crate::args::{ConfigArgs, DataArgs};
use crate::ops;
use anyhow::Result;
use clap::Args;
use reg4rec_data::io::write_json_atomic;
use reg4rec_data::LeaveOneOut;
use reg4rec_tokenizer::TokenizerKind;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// mpq (REG4Rec) or rqvae (TIGER).
    #[arg(long, default_value = "mpq")]
    pub tokenizer: TokenizerKind,
    /// Output directory (tokenizer weights, config, codes and `report.json`).
    #[arg(long)]
    pub out: PathBuf,
    /// Your own item features, one row per item in dense item order: a NumPy `.npy` file (2-D float32 or
    /// float64) or a safetensors file with one 2-D f32 tensor.
    #[arg(long)]
    pub features: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let cfg = a
        .config
        .resolve_for("tokenize", &["features", "mpq", "rqvae"])?;
    let ds = a.data.load()?;
    let split = LeaveOneOut::new(&ds);
    let features = ops::features(&ds, &split, &cfg, a.features.as_deref())?;
    let (tok, report) = ops::tokenizer(&features, a.tokenizer, &cfg)?;
    tok.save(&a.out)?;
    write_json_atomic(&a.out.join("report.json"), &report)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("tokenizer written to {}", a.out.display());
    }
    Ok(())
}
