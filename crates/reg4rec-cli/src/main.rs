//! `reg4rec`: the command line of the reg4rec workspace. It is the only crate that knows all the others: data
//! statistics, tokenizer training, pre-training, alignment, evaluation, recommendations with explanations, and
//! the pipeline that runs them all and writes the report.

mod args;
mod artifacts;
mod cmd;
mod config;
mod launch;
mod ops;
mod pipeline;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reg4rec",
    version,
    about = "REG4Rec: reasoning-enhanced generative recommendation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dataset commands (statistics).
    #[command(subcommand)]
    Data(cmd::data::DataCmd),
    /// Train an item tokenizer (MPQ or RQ-VAE) on item features; prints its report.
    Tokenize(cmd::tokenize::TokenizeArgs),
    /// Pre-train the generative model on a tokenizer's codes.
    Pretrain(cmd::pretrain::PretrainArgs),
    /// Align a pre-trained model with PARS (GRPO, four rewards) and MSRA.
    Align(cmd::align::AlignArgs),
    /// Full-ranking metrics of a model on the validation or test split.
    Eval(cmd::eval::EvalArgs),
    /// Top-N recommendations for a history, optionally with their reasoning paths.
    Recommend(cmd::recommend::RecommendArgs),
    /// Write a model's item semantic IDs (JSON) and catalog (JSON lines) for other tools.
    Export(cmd::export::ExportArgs),
    /// Serve recommendations over HTTP (127.0.0.1 by default) until SIGTERM, then drain.
    Serve(cmd::serve::ServeArgs),
    /// Load-test a server on this machine: concurrent clients, bounded in requests and time.
    Loadtest(cmd::serve::LoadTestArgs),
    /// Run every stage on a dataset and write `report.json` and `report.md`.
    Pipeline(pipeline::PipelineArgs),
    /// Rewrite a finished pipeline run's `report.md` and figures from its `report.json` and logs.
    Report(pipeline::ReportArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REG4REC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if !matches!(cli.cmd, Command::Serve(_) | Command::Loadtest(_)) {
        quiet_on_closed_stdout();
    }
    if let Err(e) = run(cli) {
        // The cause chain, each cause once: an error whose message already holds its source's text (the
        // file errors of the library crates) is not repeated.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(": ");
                msg.push_str(&c);
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

/// Like other Unix tools, end quietly when whoever reads stdout goes away (`reg4rec eval --json | head -c 10`)
/// instead of panicking in `println!`: the default action of SIGPIPE, which Rust programs ignore. Not for the
/// server and the load generator, whose sockets must outlive a closed peer.
fn quiet_on_closed_stdout() {
    // SAFETY: called once at start-up, before any thread is spawned; `signal` with `SIG_DFL` only resets the
    // disposition of SIGPIPE.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Data(c) => cmd::data::run(c),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Pretrain(a) => cmd::pretrain::run(a),
        Command::Align(a) => cmd::align::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Recommend(a) => cmd::recommend::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Loadtest(a) => cmd::serve::loadtest(a),
        Command::Pipeline(a) => pipeline::run(a),
        Command::Report(a) => pipeline::rerender(a),
    }
}
