//! `reg4rec serve`: online recommendations over HTTP (see `reg4rec_serve`), and `reg4rec loadtest`, a bounded
//! load generator for such a server on this machine.

use crate::args::ConfigArgs;
use anyhow::{Context, Result};
use clap::Args;
use reg4rec_data::split::Stage;
use reg4rec_data::LeaveOneOut;
use reg4rec_recommender::model_dir;
use reg4rec_serve::LoadConfig;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A model directory written by `reg4rec pretrain` or `reg4rec align`.
    #[arg(long)]
    pub model: PathBuf,
    /// Settings: the `[serve]` section (address, batching, queue, limits, items API) and `[infer]` (beam,
    /// CORP); `--set serve.addr=127.0.0.1:9000`, `--set serve.max_batch=8`, `--set infer.beam=50`. The CORP
    /// threshold recorded with the model (`search.json`, chosen on validation by the pipeline) wins over the
    /// preset's unless `--set infer.theta` gives one.
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut cfg = a.config.resolve_for("serve", &["serve", "infer"])?;
    if !a.config.sets("infer.theta") {
        crate::args::apply_chosen_search(&mut cfg.infer, &a.model)?;
    }
    reg4rec_serve::run_blocking(a.model.clone(), cfg.infer, cfg.serve, |addr| {
        // The first line of stdout says where the server listens (port 0 picks a free one).
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("serving {}", a.model.display()))
}

#[derive(Args, Debug)]
pub struct LoadTestArgs {
    /// The server, on this machine: `http://127.0.0.1:8080`.
    #[arg(long)]
    pub url: String,
    /// The model directory the server serves: the histories are its users' training histories.
    #[arg(long)]
    pub model: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Requests in all (an upper bound).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Time limit in seconds (an upper bound).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Beam width of every request (default: the server's).
    #[arg(long)]
    pub beam: Option<usize>,
    /// Seed of the history draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn loadtest(a: LoadTestArgs) -> Result<()> {
    let (_, source) = model_dir::read_extras(&a.model)?;
    let ds = source.load(&a.model.join(model_dir::SOURCE_FILE))?;
    let split = LeaveOneOut::new(&ds);
    // Each user's history as the test split sees it (training interactions and the validation item).
    let histories: Vec<Vec<String>> = (0..split.n_users())
        .map(|u| {
            split
                .history(u, Stage::Test, 50)
                .iter()
                .map(|&i| ds.item_ids[i as usize].clone())
                .collect()
        })
        .collect();
    let report = reg4rec_serve::loadgen::run_blocking(&LoadConfig {
        url: a.url,
        clients: a.clients,
        requests: a.requests,
        seconds: a.seconds,
        k: a.k,
        beam: a.beam,
        histories,
        seed: a.seed,
    })?;
    // The load is over and its sockets closed: a reader that went away (`reg4rec loadtest ... | head`) ends the
    // command quietly (this command keeps SIGPIPE ignored for its sockets, so `println!` would panic).
    let text = serde_json::to_string_pretty(&report)?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
