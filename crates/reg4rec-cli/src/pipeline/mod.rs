//! `reg4rec pipeline`: data -> baselines -> report, every stage cached under the run directory so a re-run skips
//! finished stages and an interrupted run resumes.

mod figures;
mod generative;
mod plot;
mod ranks;
mod report;
mod stage;

use report::{
    CategorySplit, Headline, PairedDiff, Protocol, RankedRow, SeedResult, SeedRow, Stopped,
    TailShare,
};
pub use report::{MethodRow, Report};

use crate::args::{ConfigArgs, DataArgs};
use crate::config::PipelineConfig;
use anyhow::{Context, Result};
use clap::Args;
use reg4rec_data::split::Stage;
use reg4rec_data::{Dataset, LeaveOneOut};
use sha2::{Digest, Sha256};
use stage::StageRunner;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run directory. Default `runs/<dataset>-<preset>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Recompute every stage even when a cached result exists.
    #[arg(long)]
    pub force: bool,
    /// Train the pre-training and alignment stages with this many local data-parallel ranks
    /// (docs/distributed.md); 1 trains them in the pipeline's process.
    #[arg(long, default_value_t = 1)]
    pub nproc: usize,
    /// Rendezvous port of those ranks on 127.0.0.1.
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// Train the headline rows this many times with different seeds (SASRec-CE; the full model's pre-training
    /// and alignment) and report each run, the mean and the spread (report.json `seeds`). 1: no repeats.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
}

pub fn run(args: PipelineArgs) -> Result<()> {
    let cfg = args.config.resolve()?;
    // A GPU setting on a machine without one fails here, before any stage runs.
    cfg.pretrain.device().context("pretrain.device")?;
    cfg.align.device().context("align.device")?;
    let preset = &args.config.preset;
    let name = args.data.name();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{name}-{preset}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    reg4rec_data::io::write_atomic(
        &out.join("config.toml"),
        toml::to_string_pretty(&cfg)?.as_bytes(),
    )?;

    let ds = args.data.load()?;
    let split = LeaveOneOut::new(&ds);
    if split.n_users() == 0 {
        anyhow::bail!(
            "`{name}`: no user has the 3 items leave-one-out needs (one to train on, one to validate, one to \
             test); {} users were dropped, so no stage ran",
            split.dropped_users
        );
    }
    tracing::info!(
        dataset = %name,
        users = split.n_users(),
        items = ds.n_items(),
        dropped_users = split.dropped_users,
        "data loaded"
    );
    let ctx = Ctx {
        runner: StageRunner::new(out.clone(), args.force),
        data: &args.data,
        ds: &ds,
        split: &split,
        cfg: &cfg,
        seeds: args.seeds as usize,
        ranks: match args.nproc {
            0 => anyhow::bail!("--nproc must be >= 1"),
            1 => None,
            n => Some(ranks::Ranks {
                nproc: n,
                master_port: args.master_port,
            }),
        },
    };
    let data_key = data_key(&ds);
    let filter = cfg.infer.exclude_history;
    let Baselines {
        mut ranked,
        mut seed_results,
        features,
    } = baselines(&ctx, &data_key)?;

    let (mut sweep, mut precision, mut training, mut alignment) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut theta, mut path_sweep, mut path_theta) = (None, Vec::new(), None);
    let mut path_align_seeds = Vec::new();
    if let (true, Some(features)) = (cfg.pipeline.generative, &features) {
        let g = generative::run(&ctx, features)?;
        ranked.extend(g.rows);
        sweep = g.theta_sweep;
        theta = Some(g.theta);
        path_sweep = g.path_theta_sweep;
        path_theta = Some(g.path_theta);
        path_align_seeds = g.path_align_seeds;
        precision = g.precision;
        training = g.training;
        alignment = g.alignment;
        seed_results.extend(g.seeds);
    }
    let seeds = seed_rows(&ranked, &seed_results);
    let head_share = cfg.align.rewards.head_share;
    let methods = finish_rows(ranked, &ctx, head_share);

    let report = Report {
        dataset: name,
        preset: preset.clone(),
        users: split.n_users(),
        items: ds.n_items(),
        interactions: ds.n_interactions(),
        categories: Some(CategorySplit {
            count: ds.n_categories(),
            largest_share: ds.stats().largest_category_share,
        }),
        protocol: Protocol::new(
            filter,
            cfg.infer.beam,
            cfg.infer.top_n,
            &ds.repeats(),
            split.n_users(),
        ),
        methods,
        theta_sweep: sweep,
        theta,
        path_theta_sweep: path_sweep,
        path_theta,
        path_align_seeds,
        precision,
        head_share: Some(head_share),
        seeds,
        training,
        alignment,
        stages: ctx.runner.times.take(),
        figures: Vec::new(),
    };
    publish(&out, report, &cfg)
}

/// The baseline rows (popularity, SASRec-CE with its extra seeds, SASRec-CE with the item features) and the
/// item features stage the generative stages read.
struct Baselines {
    ranked: Vec<RankedRow>,
    seed_results: Vec<SeedResult>,
    features: Option<stage::Done<f64>>,
}

fn baselines(ctx: &Ctx<'_>, data_key: &str) -> Result<Baselines> {
    let (cfg, split, ds) = (ctx.cfg, ctx.split, ctx.ds);
    let filter = cfg.infer.exclude_history;
    let pop = ctx.runner.run(
        "popularity",
        &(data_key, filter, RANKS_REVISION, "top-lists"),
        |_, _| {
            let t = Instant::now();
            let test = reg4rec_baselines::popularity_ranks(split, ds.n_items(), Stage::Test);
            let valid =
                reg4rec_baselines::evaluate_popularity(split, ds.n_items(), Stage::Valid, filter);
            let mut r = MethodRow::ranked(
                "popularity",
                test.under(filter),
                0.0,
                t.elapsed().as_secs_f64(),
            );
            r.row = r.row.with_valid(valid);
            Ok(r)
        },
    )?;
    let mut ranked = vec![pop.result];
    ranked.push(sasrec_row(ctx, stage::SASREC, data_key, None, 0)?);
    let mut seed_results = Vec::new();
    for k in 1..ctx.seeds as u64 {
        let r = sasrec_row(
            ctx,
            &format!("{}-seed{k}", stage::SASREC),
            data_key,
            None,
            k,
        )?;
        seed_results.push(SeedResult {
            row: SASREC_ROW.to_string(),
            seed: k,
            metrics: Headline::of(&r.ranks),
        });
    }
    let features = (cfg.pipeline.generative || cfg.pipeline.sasrec_features)
        .then(|| generative::features(ctx, data_key))
        .transpose()?;
    if let (true, Some(f)) = (cfg.pipeline.sasrec_features, &features) {
        let file = f.dir.join(generative::FEATURE_FILE);
        ranked.push(sasrec_row(
            ctx,
            stage::SASREC_FEATURES,
            &f.key,
            Some(&file),
            0,
        )?);
    }
    Ok(Baselines {
        ranked,
        seed_results,
        features,
    })
}

/// A SASRec-CE stage and its row; `features`: the item feature file its embeddings read; `seed`: added to
/// `sasrec.seed`.
fn sasrec_row(
    ctx: &Ctx<'_>,
    name: &str,
    key: &str,
    features: Option<&Path>,
    seed: u64,
) -> Result<RankedRow> {
    let (split, ds) = (ctx.split, ctx.ds);
    let mut sasrec_cfg = ctx.cfg.sasrec.clone();
    sasrec_cfg.item_features = features.is_some();
    sasrec_cfg.seed += seed;
    let done = ctx.runner.run(
        name,
        &(key, &sasrec_cfg, RANKS_REVISION, "stop-reason"),
        |dir, resume| {
            let features = features.map(reg4rec_data::ItemFeatures::load).transpose()?;
            let r = reg4rec_baselines::train_sasrec(
                split,
                ds.n_items(),
                &sasrec_cfg,
                features.as_ref(),
                dir,
                resume,
            )?;
            let mut row = MethodRow::ranked(name, r.test_ranks, r.train_seconds, r.eval_seconds);
            row.row = row.row.with_valid(r.valid);
            row.row.stopped = Some(Stopped {
                epochs: r.epochs,
                best_epoch: r.best_epoch,
                reason: r.stop_reason,
            });
            Ok(row)
        },
    )?;
    Ok(done.result)
}

/// Each repeated row (`--seeds`): the report's own run (seed offset 0), then the others.
fn seed_rows(ranked: &[RankedRow], seed_results: &[SeedResult]) -> Vec<SeedRow> {
    let mut seeds = Vec::new();
    for name in [
        SASREC_ROW,
        "reg4rec",
        "reg4rec-no-pars",
        generative::REG4REC_PATHS_ROW,
        generative::NO_PARS_PATHS_ROW,
    ] {
        let extra: Vec<_> = seed_results.iter().filter(|r| r.row == name).collect();
        let own = ranked.iter().find(|r| r.row.name == name);
        if let (false, Some(own)) = (extra.is_empty(), own) {
            let runs = std::iter::once((0, Headline::of(&own.ranks)))
                .chain(extra.iter().map(|r| (r.seed, r.metrics)))
                .collect();
            seeds.push(SeedRow::new(name, runs));
        }
    }
    seeds
}

/// The report's rows: every row against SASRec-CE on the same users (both lists history-filtered), and its
/// lists' long-tail share (the tail as the alignment's long-tail reward defines it: training interactions
/// only, the most popular `head_share` of the catalogue as the head).
fn finish_rows(ranked: Vec<RankedRow>, ctx: &Ctx<'_>, head_share: f64) -> Vec<MethodRow> {
    let reference = ranked
        .iter()
        .find(|r| r.row.name == SASREC_ROW)
        .map(|r| r.ranks.filtered.clone())
        .unwrap_or_default();
    let tail = reg4rec_data::metrics::long_tail(&ctx.split.train, ctx.ds.n_items(), head_share);
    ranked
        .into_iter()
        .map(|RankedRow { mut row, ranks }| {
            if row.name != SASREC_ROW {
                row.vs_sasrec_ce =
                    PairedDiff::new(&ranks.filtered, &reference, ctx.cfg.pretrain.seed);
            }
            row.long_tail_10 = ranks
                .tail_share(&tail, 10, false)
                .zip(ranks.tail_share(&tail, 10, true))
                .map(|(all, filtered)| TailShare { all, filtered });
            row
        })
        .collect()
}

/// Draws the figures into `run/plots/`, writes `report.json` and `report.md`, and prints the table.
fn publish(run: &Path, mut report: Report, cfg: &PipelineConfig) -> Result<()> {
    report.figures = figures::write(run, &report, (cfg.mpq.d, cfg.rqvae.d))?;
    report.write(run)?;
    print!("{}", report.markdown());
    eprintln!("report written to {}", run.join("report.json").display());
    Ok(())
}

/// `reg4rec report --run DIR`: redraws the figures and rewrites `report.md` (and `report.json`) of a finished
/// pipeline run from its `report.json`, `config.toml` and stage logs, without recomputing anything (e.g. after
/// upgrading reg4rec, whose newer report layout would otherwise need every stage re-run).
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run directory of `reg4rec pipeline` (holds report.json, config.toml and stages/).
    #[arg(long)]
    pub run: PathBuf,
}

pub fn rerender(args: ReportArgs) -> Result<()> {
    let run = &args.run;
    let report_path = run.join("report.json");
    let report: Report = reg4rec_data::io::read_json(&report_path)
        .with_context(|| format!("reading the finished run's {}", report_path.display()))?;
    let config_path = run.join("config.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let cfg: PipelineConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    publish(run, report, &cfg)
}

/// The report row of the SASRec baseline, the reference of every row's `vs_sasrec_ce`.
pub const SASREC_ROW: &str = "sasrec-ce";

/// Part of the key of the stages whose result holds per-user ranks under both protocols: results written
/// before they were kept are recomputed, not read without them. (The SASRec stages keep results written before
/// top lists were kept, rather than train again: their rows then have no `long_tail_10`.)
const RANKS_REVISION: &str = "ranks-both-protocols";

/// What every stage reads.
pub(crate) struct Ctx<'a> {
    pub runner: StageRunner,
    pub data: &'a DataArgs,
    pub ds: &'a Dataset,
    pub split: &'a LeaveOneOut,
    pub cfg: &'a PipelineConfig,
    /// How many times the headline rows are trained (`--seeds`).
    pub seeds: usize,
    /// Data-parallel training stages (`--nproc` > 1).
    pub ranks: Option<ranks::Ranks>,
}

/// The key every downstream stage builds on: the dataset's fingerprint (users, items, categories and every
/// interaction) and the item attributes the features are built from, so editing an item file recomputes the
/// features and everything trained on them.
fn data_key(ds: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update(ds.fingerprint().as_bytes());
    for attrs in &ds.item_attributes {
        h.update((attrs.len() as u64).to_le_bytes());
        for a in attrs {
            h.update((a.len() as u64).to_le_bytes());
            h.update(a.as_bytes());
        }
    }
    format!("{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset {
            name: "toy".into(),
            sequences: vec![vec![0, 1, 2], vec![2, 1, 0]],
            user_ids: vec!["u0".into(), "u1".into()],
            item_ids: vec!["a".into(), "b".into(), "c".into()],
            item_category: vec![0, 0, 1],
            category_names: vec!["x".into(), "y".into()],
            item_attributes: vec![vec!["brand:a".into()], vec![], vec!["brand:c".into()]],
            item_names: Vec::new(),
        }
    }

    /// Editing an item's attributes (an `.item` file) changes the key the features and every model build on,
    /// so the pipeline recomputes them instead of reusing features of the old attributes.
    #[test]
    fn the_data_key_covers_item_attributes_and_interactions() {
        let ds = toy();
        let key = data_key(&ds);
        assert_eq!(key, data_key(&toy()));
        let mut edited = toy();
        edited.item_attributes[1].push("title:new".into());
        assert_ne!(key, data_key(&edited));
        // Moving an attribute to the next item is a change too (lengths are part of the hash).
        let mut moved = toy();
        let a = moved.item_attributes[0].pop().unwrap();
        moved.item_attributes[1].push(a);
        assert_ne!(key, data_key(&moved));
        let mut more = toy();
        more.sequences[0].push(1);
        assert_ne!(key, data_key(&more));
    }
}
