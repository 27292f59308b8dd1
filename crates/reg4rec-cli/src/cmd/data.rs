//! `reg4rec data stats`.

use crate::args::DataArgs;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Users, items, interactions and categories of a dataset.
    Stats {
        #[command(flatten)]
        data: DataArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Stats { data, json } => {
            let ds = data.load()?;
            let stats = ds.stats();
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            }
        }
    }
    Ok(())
}
