//! The generative stages: features -> tokenizers (MPQ, RQ-VAE) -> pre-training (reg4rec, no-MPQ, TIGER) ->
//! alignment (PARS + MSRA, and the no-MSRA ablation) -> evaluation rows and the CORP threshold sweep.
//!
//! | row | tokens | model | alignment | CORP |
//! |---|---|---|---|---|
//! | `reg4rec` | MPQ | CRSS + category head | PARS + MSRA | theta |
//! | `reg4rec-no-mpq` | RQ-VAE (as a set) | CRSS + category head | PARS + MSRA | theta |
//! | `reg4rec-no-pars` | MPQ | CRSS + category head | none | theta |
//! | `reg4rec-no-msra` | MPQ | CRSS + category head | PARS, h = 1 | theta |
//!
//! theta: chosen on the validation split from the sweep, CORP off included (`pipeline.choose_theta`), or
//! `infer.theta`.
//! | `reg4rec-no-corp` | MPQ | CRSS + category head | PARS + MSRA | off |
//! | `tiger` | RQ-VAE (ordered) | fixed order | none | off |
//! | `reg4rec-last-step` | MPQ | CRSS + category head | PARS + MSRA, its last step | theta |
//!
//! Every generative model is also reported path-ranked (`infer.rank = paths`: the list ordered by the path's
//! score alone, no item head, no dense lookahead), where CRSS, PARS and CORP decide the list. The path-ranked
//! rows have their own alignment (`align_paths`, its steps kept on path-ranked validation) and their own CORP
//! threshold (a second sweep, path-ranked), and every mechanism its ablation in that mode, each with its paired
//! interval against `reg4rec-paths`:
//!
//! | row | tokens | alignment | CORP | decoding order |
//! |---|---|---|---|---|
//! | `reg4rec-paths` | MPQ | PARS + MSRA (`align_paths`) | theta (path sweep) | CRSS |
//! | `reg4rec-no-mpq-paths` | RQ-VAE (as a set) | PARS + MSRA (`align_paths`) | theta (path sweep) | CRSS |
//! | `reg4rec-no-pars-paths` | MPQ | none | theta (path sweep) | CRSS |
//! | `reg4rec-no-msra-paths` | MPQ | PARS, h = 1 (`align_paths`) | theta (path sweep) | CRSS |
//! | `reg4rec-no-corp-paths` | MPQ | PARS + MSRA (`align_paths`) | off | CRSS |
//! | `reg4rec-no-crss-paths` | MPQ | PARS + MSRA (`align_paths`) | theta (path sweep) | codebooks 0, 1, .. |
//! | `tiger-paths` | RQ-VAE (ordered) | none | off | fixed (TIGER) |
//!
//! `reg4rec-path-aligned` is the path-aligned model's hybrid list (does aligning the paths move the item
//! head's ranking?), and `reg4rec-last-step-paths` the path-aligned model's last step when validation kept an
//! earlier one.
//!
//! `item-head` is the full model's item head alone ranking every item (full ranking, no search), so the report
//! shows what the generative search adds.
//!
//! `reg4rec-last-step` appears only when the full model's alignment kept an earlier step than its last (step 0:
//! the pre-trained model): the aligned model's own numbers, never a model chosen on validation.

use super::report::{
    AlignPoint, AlignSeed, Headline, MethodRow, PairedDiff, PrecisionPoint, RankedRow, SeedResult,
    SweepPoint, ThetaChoice, TrainingPoint,
};
use super::stage::{self, Done};
use super::Ctx;
use crate::config::PipelineConfig;
use crate::ops;
use anyhow::{bail, Result};
use reg4rec_data::features::ItemFeatures;
use reg4rec_data::metrics::UserRanks;
use reg4rec_data::split::Stage;
use reg4rec_infer::{EvalReport, InferConfig, Rank};
use reg4rec_model::config::Mode;
use reg4rec_model::{PrecisionMode, Which};
use reg4rec_tokenizer::{TokenizerKind, TokenizerReport};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

pub struct Generative {
    /// The rows with their per-user test ranks.
    pub rows: Vec<RankedRow>,
    pub training: Vec<TrainingPoint>,
    pub alignment: Vec<AlignPoint>,
    pub theta_sweep: Vec<SweepPoint>,
    /// The CORP threshold the CORP rows were evaluated with (`None`: off) and how it was chosen.
    pub theta: ThetaChoice,
    /// The path-ranked sweep (the path-aligned model, `*-paths` searches) and the threshold of the path-ranked
    /// rows.
    pub path_theta_sweep: Vec<SweepPoint>,
    pub path_theta: ThetaChoice,
    /// The path-ranked model's alignment under each seed of `pipeline.align_seeds`, against no-pars-paths.
    pub path_align_seeds: Vec<AlignSeed>,
    pub precision: Vec<PrecisionPoint>,
    /// The full model's rows under the extra seeds of `--seeds`.
    pub seeds: Vec<SeedResult>,
}

/// A trained stage: what training cost (where it is: the stage's [`Done::dir`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trained {
    /// Seconds of this stage and every stage it builds on (features, tokenizer, pre-training, ...).
    seconds: f64,
    /// The library's own report of this stage.
    report: StageReport,
}

/// The report of a training stage, as its library wrote it (the JSON of `result.json` is the library's
/// report itself, so results cached before the reports were typed read back).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum StageReport {
    Align(Box<reg4rec_align::AlignReport>),
    Pretrain(reg4rec_model::PretrainReport),
    Tokenizer(TokenizerReport),
}

impl StageReport {
    /// The seconds this stage's own training took (validation included for alignment).
    fn seconds(&self) -> f64 {
        match self {
            StageReport::Align(r) => r.train_seconds + r.valid_seconds,
            StageReport::Pretrain(r) => r.train_seconds,
            StageReport::Tokenizer(r) => r.seconds,
        }
    }

    fn pretrain(&self, stage: &str) -> Result<&reg4rec_model::PretrainReport> {
        match self {
            StageReport::Pretrain(r) => Ok(r),
            _ => bail!("stage `{stage}`: its result.json does not hold a pre-training report"),
        }
    }

    fn align(&self, stage: &str) -> Result<&reg4rec_align::AlignReport> {
        match self {
            StageReport::Align(r) => Ok(r),
            _ => bail!("stage `{stage}`: its result.json does not hold an alignment report"),
        }
    }

    /// The throughput line of a training stage (pre-training in target items per second, alignment in
    /// contexts per second).
    fn training_point(&self, stage: &str) -> Result<TrainingPoint> {
        let (per_second, unit, iterations, train_seconds, valid_seconds) = match self {
            StageReport::Pretrain(r) => (
                r.targets_per_s,
                "targets",
                r.epochs as u64,
                r.train_seconds,
                r.valid_seconds,
            ),
            StageReport::Align(r) => (
                r.contexts_per_s,
                "contexts",
                r.steps,
                r.train_seconds,
                r.valid_seconds,
            ),
            StageReport::Tokenizer(_) => {
                bail!("stage `{stage}`: a tokenizer has no training throughput line")
            }
        };
        Ok(TrainingPoint {
            stage: stage.to_string(),
            per_second,
            unit: unit.into(),
            iterations,
            train_seconds,
            valid_seconds,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Evaluated {
    report: EvalReport,
    seconds: f64,
    /// Per-user target ranks under both protocols ([`EvalReport::ranks`]).
    ranks: UserRanks,
}

/// The item feature matrix every feature reader shares (the tokenizers and `sasrec-ce-features`): its stage's
/// result is the seconds it took; the matrix is [`FEATURE_FILE`] in the stage's directory.
pub fn features(ctx: &Ctx<'_>, data_key: &str) -> Result<Done<f64>> {
    ctx.runner.run(
        "features",
        &(
            data_key,
            &ctx.cfg.features,
            reg4rec_data::features::REVISION,
        ),
        |dir, _| {
            let t = Instant::now();
            let f = ops::features(ctx.ds, ctx.split, ctx.cfg, None)?;
            f.save(&dir.join(FEATURE_FILE))?;
            Ok(t.elapsed().as_secs_f64())
        },
    )
}

/// The file of the features stage.
pub const FEATURE_FILE: &str = "features.safetensors";

/// The generative stages on the features of [`features`].
pub fn run(ctx: &Ctx<'_>, features: &Done<f64>) -> Result<Generative> {
    let st = Stages { ctx, cfg: ctx.cfg };
    let cfg = st.cfg;
    let mpq = st.tokenizer(TokenizerKind::Mpq, features)?;
    let rqvae = st.tokenizer(TokenizerKind::RqVae, features)?;
    let precision = cfg.pretrain.precision;
    let pre = st.pretrain(stage::PRETRAIN_REG4REC, &mpq, Mode::Reg4rec, precision, 0)?;
    let pre_no_mpq = st.pretrain(stage::PRETRAIN_NO_MPQ, &rqvae, Mode::Reg4rec, precision, 0)?;
    let pre_tiger = st.pretrain(stage::PRETRAIN_TIGER, &rqvae, Mode::Tiger, precision, 0)?;
    let msra_h = cfg.align.msra_h;
    let full = st.align(stage::ALIGN_REG4REC, &pre, st.align_cfg(msra_h, 0))?;
    let no_msra = st.align(stage::ALIGN_NO_MSRA, &pre, st.align_cfg(1, 0))?;
    let no_mpq = st.align(stage::ALIGN_NO_MPQ, &pre_no_mpq, st.align_cfg(msra_h, 0))?;
    let paths_h = cfg.align_paths.msra_h;
    let path_full = st.align(stage::ALIGN_REG4REC_PATHS, &pre, st.path_align_cfg(paths_h))?;
    let path_no_msra = st.align(stage::ALIGN_NO_MSRA_PATHS, &pre, st.path_align_cfg(1))?;
    let path_no_mpq = st.align(
        stage::ALIGN_NO_MPQ_PATHS,
        &pre_no_mpq,
        st.path_align_cfg(paths_h),
    )?;
    let aligned = [
        (stage::ALIGN_REG4REC, &full),
        (stage::ALIGN_NO_MSRA, &no_msra),
        (stage::ALIGN_NO_MPQ, &no_mpq),
        (stage::ALIGN_REG4REC_PATHS, &path_full),
        (stage::ALIGN_NO_MSRA_PATHS, &path_no_msra),
        (stage::ALIGN_NO_MPQ_PATHS, &path_no_mpq),
    ];

    // Pre-training in target items per second, alignment in contexts per second.
    let training: Vec<TrainingPoint> = [
        (stage::PRETRAIN_REG4REC, &pre),
        (stage::PRETRAIN_NO_MPQ, &pre_no_mpq),
        (stage::PRETRAIN_TIGER, &pre_tiger),
    ]
    .into_iter()
    .chain(aligned)
    .map(|(name, d)| d.result.report.training_point(name))
    .collect::<Result<_>>()?;
    let alignment: Vec<AlignPoint> = aligned
        .into_iter()
        .map(|(name, d)| d.result.report.align(name).map(|r| align_point(name, r)))
        .collect::<Result<_>>()?;

    let theta_sweep = st.theta_sweep(&full, "")?;
    let chosen = st.choose_theta(&theta_sweep, &full)?;
    let corp = Some(chosen);
    let path_theta_sweep = st.theta_sweep(&path_full, PATHS_SUFFIX)?;
    let path_chosen = st.choose_theta(&path_theta_sweep, &path_full)?;
    let path_corp = Some(path_chosen);
    let best = Which::Best;
    let mut ranked = vec![
        st.row("tiger", &pre_tiger, Some(None), best)?,
        st.row("reg4rec", &full, corp, best)?,
        st.row("reg4rec-no-mpq", &no_mpq, corp, best)?,
        st.row("tiger-paths", &pre_tiger, Some(None), best)?,
        st.row(REG4REC_PATHS_ROW, &path_full, path_corp, best)?,
        st.row("reg4rec-no-mpq-paths", &path_no_mpq, path_corp, best)?,
        st.row(NO_PARS_PATHS_ROW, &pre, path_corp, best)?,
        st.row("reg4rec-no-msra-paths", &path_no_msra, path_corp, best)?,
        st.row("reg4rec-no-corp-paths", &path_full, Some(None), best)?,
        st.row(NO_CRSS_PATHS_ROW, &path_full, path_corp, best)?,
        st.row(PATH_ALIGNED_ROW, &path_full, corp, best)?,
        st.row("reg4rec-no-pars", &pre, corp, best)?,
        st.row("reg4rec-no-msra", &no_msra, corp, best)?,
        st.row("reg4rec-no-corp", &full, Some(None), best)?,
    ];
    // The full model's item head alone, ranking every item (what the generative search adds is the
    // difference).
    if cfg.model.item_head {
        ranked.push(st.item_head_row(&full)?);
    }
    // When validation kept earlier weights than alignment's last step, the aligned model's own numbers too.
    for (stage_name, model, row, theta) in [
        (stage::ALIGN_REG4REC, &full, LAST_STEP_ROW.to_string(), corp),
        (
            stage::ALIGN_REG4REC_PATHS,
            &path_full,
            format!("{LAST_STEP_ROW}{PATHS_SUFFIX}"),
            path_corp,
        ),
    ] {
        let kept_earlier = alignment
            .iter()
            .any(|a| a.stage == stage_name && a.kept_step < a.steps);
        if kept_earlier {
            ranked.push(st.row(&row, model, theta, Which::Latest)?);
        }
    }
    ranked.extend(st.tail_rows(&pre, corp, path_corp)?);
    let path_align_seeds = st.path_align_seeds(&ranked, &pre, &path_full, path_corp)?;
    against_the_full_model(&mut ranked, cfg.pretrain.seed);

    let seeds = st.seed_results(&mpq, corp, path_corp)?;
    let precision = st.precision_points(&mpq, &pre)?;
    Ok(Generative {
        rows: ranked,
        training,
        alignment,
        theta_sweep,
        theta: ThetaChoice {
            theta: chosen,
            on_validation: cfg.pipeline.choose_theta,
        },
        path_theta_sweep,
        path_theta: ThetaChoice {
            theta: path_chosen,
            on_validation: cfg.pipeline.choose_theta,
        },
        path_align_seeds,
        precision,
        seeds,
    })
}

/// Each row against the full model on the same users, and each path-ranked row against `reg4rec-paths`
/// (seeded: a cached re-run reproduces the intervals).
fn against_the_full_model(ranked: &mut [RankedRow], seed: u64) {
    let reference_of = |name: &str| {
        ranked
            .iter()
            .find(|r| r.row.name == name)
            .map(|r| r.ranks.all.clone())
            .unwrap_or_default()
    };
    let reference = reference_of("reg4rec");
    let path_reference = reference_of(REG4REC_PATHS_ROW);
    for RankedRow { row: r, ranks } in ranked {
        if r.name != "reg4rec" {
            r.vs_reg4rec = PairedDiff::new(&ranks.all, &reference, seed);
        }
        if r.name.ends_with(PATHS_SUFFIX) && r.name != REG4REC_PATHS_ROW {
            r.vs_reg4rec_paths = PairedDiff::new(&ranks.all, &path_reference, seed);
        }
    }
}

/// The generative stages of one pipeline run: each builds (or reuses) a stage of the run directory.
struct Stages<'a> {
    ctx: &'a Ctx<'a>,
    cfg: &'a PipelineConfig,
}

impl Stages<'_> {
    /// A tokenizer of `kind` trained on the item features.
    fn tokenizer(&self, kind: TokenizerKind, features: &Done<f64>) -> Result<Done<Trained>> {
        let cfg = self.cfg;
        let section = match kind {
            TokenizerKind::Mpq => serde_json::to_value(&cfg.mpq)?,
            TokenizerKind::RqVae => serde_json::to_value(&cfg.rqvae)?,
        };
        let feature_file = features.dir.join(FEATURE_FILE);
        self.ctx.runner.run(
            &stage::tokenizer(kind),
            &(&features.key, section),
            |dir, _| {
                let f = ItemFeatures::load(&feature_file)?;
                let (t, report): (_, TokenizerReport) = ops::tokenizer(&f, kind, cfg)?;
                t.save(dir)?;
                Ok(Trained {
                    seconds: features.result + report.seconds,
                    report: StageReport::Tokenizer(report),
                })
            },
        )
    }

    /// Pre-training of a `mode` model on `tok`'s codes under `precision`; `seed` is added to `pretrain.seed`
    /// (the repeated seeds of `--seeds`).
    fn pretrain(
        &self,
        name: &str,
        tok: &Done<Trained>,
        mode: Mode,
        precision: PrecisionMode,
        seed: u64,
    ) -> Result<Done<Trained>> {
        let ctx = self.ctx;
        let mut cfg = self.cfg.clone();
        cfg.pretrain.precision = precision;
        cfg.pretrain.seed += seed;
        let cfg = &cfg;
        let inputs = (
            &tok.key,
            mode,
            &cfg.model,
            &cfg.pretrain,
            &cfg.pipeline.valid_recall,
            &cfg.pipeline.valid_users,
            &cfg.infer,
        );
        ctx.runner.run(name, &inputs, |dir, resume| {
            // LADQ trains single-process (each rank would choose its own precisions).
            let ranks = ctx
                .ranks
                .filter(|_| cfg.pretrain.precision != PrecisionMode::Ladq);
            let report = match ranks {
                Some(ranks) => ranks.pretrain(ctx.data, &tok.dir, mode, cfg, dir, resume)?,
                None => ops::pretrain(
                    ctx.data, ctx.ds, ctx.split, &tok.dir, mode, cfg, dir, resume, None,
                )?,
            };
            let report = StageReport::Pretrain(report);
            Ok(Trained {
                seconds: tok.result.seconds + report.seconds(),
                report,
            })
        })
    }

    /// `align_paths` with `msra_h`, validated path-ranked.
    fn path_align_cfg(&self, msra_h: usize) -> reg4rec_align::AlignConfig {
        let mut acfg = self.cfg.align_paths.clone();
        acfg.msra_h = msra_h;
        acfg.valid.rank = Rank::Paths;
        acfg
    }

    /// Alignment to a goal beyond accuracy: the long-tail reward at each weight of
    /// `pipeline.long_tail_weights`, ranked both ways (the trade-off against R@10 / N@10 is read from the rows'
    /// metrics and their `long_tail_10`). These rows are the aligned model's last weights: validation keeps the
    /// step with the best Recall@10, which is the pre-trained model whenever the goal costs recall.
    fn tail_rows(
        &self,
        pre: &Done<Trained>,
        corp: Option<Option<f32>>,
        path_corp: Option<Option<f32>>,
    ) -> Result<Vec<RankedRow>> {
        let mut rows = Vec::new();
        for &w in &self.cfg.pipeline.long_tail_weights {
            let mut acfg = self.align_cfg(self.cfg.align.msra_h, 0);
            acfg.rewards.long_tail = w;
            let tail = self.align(&format!("{}-tail{w}", stage::ALIGN_REG4REC), pre, acfg)?;
            rows.push(self.row(&format!("reg4rec-tail{w}"), &tail, corp, Which::Latest)?);
            let name = format!("reg4rec-tail{w}{PATHS_SUFFIX}");
            rows.push(self.row(&name, &tail, path_corp, Which::Latest)?);
        }
        Ok(rows)
    }

    /// `--seeds`: the full model pre-trained and aligned (both alignments) again with other seeds (the
    /// tokenizer, the CORP thresholds and every setting kept): the test metrics of `reg4rec`, `reg4rec-no-pars`,
    /// `reg4rec-paths` and `reg4rec-no-pars-paths` under each.
    fn seed_results(
        &self,
        mpq: &Done<Trained>,
        corp: Option<Option<f32>>,
        path_corp: Option<Option<f32>>,
    ) -> Result<Vec<SeedResult>> {
        let cfg = self.cfg;
        let mut seeds = Vec::new();
        for k in 1..self.ctx.seeds as u64 {
            let pre_name = format!("{}-seed{k}", stage::PRETRAIN_REG4REC);
            let precision = cfg.pretrain.precision;
            let pre_k = self.pretrain(&pre_name, mpq, Mode::Reg4rec, precision, k)?;
            let align_name = format!("{}-seed{k}", stage::ALIGN_REG4REC);
            let full_k = self.align(&align_name, &pre_k, self.align_cfg(cfg.align.msra_h, k))?;
            let path_name = format!("{}-seed{k}", stage::ALIGN_REG4REC_PATHS);
            let mut path_cfg = self.path_align_cfg(cfg.align_paths.msra_h);
            path_cfg.seed += k;
            let path_k = self.align(&path_name, &pre_k, path_cfg)?;
            for (name, model, theta) in [
                ("reg4rec", &full_k, corp),
                ("reg4rec-no-pars", &pre_k, corp),
                (REG4REC_PATHS_ROW, &path_k, path_corp),
                (NO_PARS_PATHS_ROW, &pre_k, path_corp),
            ] {
                // `reg4rec-paths` -> `reg4rec-seed1-paths`, `reg4rec` -> `reg4rec-seed1`.
                let row_name = match name.strip_suffix(PATHS_SUFFIX) {
                    Some(base) => format!("{base}-seed{k}{PATHS_SUFFIX}"),
                    None => format!("{name}-seed{k}"),
                };
                let r = self.row(&row_name, model, theta, Which::Best)?;
                seeds.push(SeedResult {
                    row: name.to_string(),
                    seed: k,
                    metrics: Headline::of(&r.ranks),
                });
            }
        }
        Ok(seeds)
    }

    /// The path-ranked model's alignment under each seed of `pipeline.align_seeds` (seed 0: `path_full`, the
    /// `reg4rec-paths` row of `ranked`), each minus `reg4rec-no-pars-paths` on the same test users.
    fn path_align_seeds(
        &self,
        ranked: &[RankedRow],
        pre: &Done<Trained>,
        path_full: &Done<Trained>,
        theta: Option<Option<f32>>,
    ) -> Result<Vec<AlignSeed>> {
        let cfg = self.cfg;
        if cfg.pipeline.align_seeds < 2 {
            return Ok(Vec::new());
        }
        let ranks_of = |name: &str| {
            ranked
                .iter()
                .find(|r| r.row.name == name)
                .map(|r| r.ranks.clone())
                .ok_or_else(|| anyhow::anyhow!("the pipeline has no `{name}` row"))
        };
        let no_pars = ranks_of(NO_PARS_PATHS_ROW)?;
        let mut out = Vec::new();
        for k in 0..cfg.pipeline.align_seeds as u64 {
            let (model, ranks) = if k == 0 {
                (path_full.clone(), ranks_of(REG4REC_PATHS_ROW)?)
            } else {
                let mut acfg = self.path_align_cfg(cfg.align_paths.msra_h);
                acfg.seed += k;
                let name = format!("{}-aseed{k}", stage::ALIGN_REG4REC_PATHS);
                let model = self.align(&name, pre, acfg)?;
                let row = format!("reg4rec-aseed{k}{PATHS_SUFFIX}");
                let ranks = self.row(&row, &model, theta, Which::Best)?.ranks;
                (model, ranks)
            };
            let stage_name = format!("{}-aseed{k}", stage::ALIGN_REG4REC_PATHS);
            out.push(AlignSeed {
                seed: k,
                kept_step: model.result.report.align(&stage_name)?.best_step,
                metrics: Headline::of(&ranks),
                vs_no_pars: PairedDiff::new(&ranks.all, &no_pars.all, cfg.pretrain.seed),
            });
        }
        Ok(out)
    }

    /// `align` with `msra_h` and `seed` added to `align.seed`.
    fn align_cfg(&self, msra_h: usize, seed: u64) -> reg4rec_align::AlignConfig {
        let mut acfg = self.cfg.align.clone();
        acfg.msra_h = msra_h;
        acfg.seed += seed;
        acfg
    }

    /// Alignment of the pre-trained `pre` under `acfg`.
    fn align(
        &self,
        name: &str,
        pre: &Done<Trained>,
        acfg: reg4rec_align::AlignConfig,
    ) -> Result<Done<Trained>> {
        let ctx = self.ctx;
        ctx.runner.run(name, &(&pre.key, &acfg), |dir, resume| {
            let ranks = ctx.ranks.filter(|_| acfg.precision != PrecisionMode::Ladq);
            let report = match ranks {
                Some(ranks) => {
                    let mut stage_cfg = self.cfg.clone();
                    stage_cfg.align = acfg.clone();
                    ranks.align(&pre.dir, &stage_cfg, dir, resume)?
                }
                None => ops::align(ctx.ds, ctx.split, &pre.dir, &acfg, dir, resume, None)?,
            };
            let report = StageReport::Align(Box::new(report));
            Ok(Trained {
                seconds: pre.result.seconds + report.seconds(),
                report,
            })
        })
    }

    /// `which` weights of `model` on `stage`, at CORP `theta` (`None`: `infer.theta`). A row named `*-paths`
    /// is searched path-ranked (`Rank::Paths`), every other one as `infer.rank` says.
    fn eval(
        &self,
        name: &str,
        model: &Done<Trained>,
        stage: Stage,
        theta: Option<Option<f32>>,
        which: Which,
    ) -> Result<Evaluated> {
        let ctx = self.ctx;
        let mut infer = self.cfg.infer.clone();
        if let Some(t) = theta {
            infer.theta = t;
        }
        if name.ends_with(PATHS_SUFFIX) {
            infer.rank = Rank::Paths;
        }
        if name == NO_CRSS_PATHS_ROW {
            infer.fixed_order = true;
        }
        let stage_name = format!("eval-{name}");
        let work = |_: &Path, _: bool| evaluate_dir(&model.dir, which, ctx, stage, &infer);
        match which {
            Which::Best => ctx.runner.run(
                &stage_name,
                &(&model.key, stage, &infer, EVAL_REVISION),
                work,
            ),
            Which::Latest => ctx.runner.run(
                &stage_name,
                &(&model.key, stage, &infer, "latest", EVAL_REVISION),
                work,
            ),
        }
        .map(|d| d.result)
    }

    /// The test row of `model` ([`Self::eval`]).
    fn row(
        &self,
        name: &str,
        model: &Done<Trained>,
        theta: Option<Option<f32>>,
        which: Which,
    ) -> Result<RankedRow> {
        let test = self.eval(name, model, Stage::Test, theta, which)?;
        Ok(MethodRow::ranked(
            name,
            test.ranks,
            model.result.seconds,
            test.seconds,
        ))
    }

    /// The full model on the validation split at every CORP threshold of `pipeline.theta_sweep` and off,
    /// searched as rows named with `suffix` are (`-paths`: path-ranked).
    fn theta_sweep(&self, full: &Done<Trained>, suffix: &str) -> Result<Vec<SweepPoint>> {
        let mut thetas: Vec<Option<f32>> = self
            .cfg
            .pipeline
            .theta_sweep
            .iter()
            .map(|&t| Some(t))
            .collect();
        thetas.push(None);
        let mut sweep = Vec::new();
        for theta in thetas {
            let label = theta.map_or("off".to_string(), |t| format!("{t}"));
            let e = self.eval(
                &format!("sweep-{label}{suffix}"),
                full,
                Stage::Valid,
                Some(theta),
                Which::Best,
            )?;
            sweep.push(SweepPoint {
                theta,
                recall_10: e.report.metrics.recall_10,
                ndcg_10: e.report.metrics.ndcg_10,
                pruned_paths: e.report.pruned_paths,
            });
        }
        Ok(sweep)
    }

    /// The threshold of the CORP rows: chosen on validation (the sweep's best Recall@10, off included), or
    /// `infer.theta` as given. The full model's directory records it: `serve`, `recommend` and `eval` apply it.
    fn choose_theta(&self, sweep: &[SweepPoint], full: &Done<Trained>) -> Result<Option<f32>> {
        let cfg = self.cfg;
        let chosen = if cfg.pipeline.choose_theta {
            let best = sweep
                .iter()
                .fold(None::<&SweepPoint>, |best, p| match best {
                    Some(b) if (p.recall_10, p.ndcg_10) <= (b.recall_10, b.ndcg_10) => Some(b),
                    _ => Some(p),
                });
            best.map(|p| p.theta).unwrap_or(cfg.infer.theta)
        } else {
            cfg.infer.theta
        };
        reg4rec_recommender::model_dir::write_search(
            &full.dir,
            &reg4rec_recommender::ChosenSearch {
                theta: chosen,
                how: if cfg.pipeline.choose_theta {
                    "the pipeline's CORP sweep on the validation split (the best Recall@10, CORP off included)"
                        .into()
                } else {
                    "infer.theta of the pipeline's configuration (pipeline.choose_theta = false)"
                        .into()
                },
            },
        )?;
        Ok(chosen)
    }

    /// The full model's item head alone ranking every item (full ranking, no search).
    fn item_head_row(&self, full: &Done<Trained>) -> Result<RankedRow> {
        let (ctx, cfg) = (self.ctx, self.cfg);
        let head = ctx.runner.run(
            &format!("eval-{ITEM_HEAD_ROW}"),
            &(
                &full.key,
                Stage::Test,
                &cfg.infer.batch_users,
                EVAL_REVISION,
            ),
            |_, _| {
                let t = Instant::now();
                let rec = reg4rec_recommender::Recommender::load_weights(
                    &full.dir,
                    Which::Best,
                    &cfg.infer,
                    tch::Device::Cpu,
                )?;
                let mut scorer = reg4rec_infer::ModelScorer::new(rec.model(), rec.codes())?;
                let _guard = tch::no_grad_guard();
                let ranks = reg4rec_infer::evaluate_dense(
                    &mut scorer,
                    ctx.split,
                    Stage::Test,
                    rec.model().config().history_len,
                    rec.codes().n_items(),
                    cfg.infer.batch_users,
                )?;
                Ok(DenseEvaluated {
                    ranks,
                    seconds: t.elapsed().as_secs_f64(),
                })
            },
        )?;
        Ok(MethodRow::ranked(
            ITEM_HEAD_ROW,
            head.result.ranks.under(cfg.infer.exclude_history),
            full.result.seconds,
            head.result.seconds,
        ))
    }

    /// The REG4Rec model pre-trained under each of `pipeline.precisions` (and `pretrain.precision`, which is
    /// `pre`), evaluated on test.
    fn precision_points(
        &self,
        mpq: &Done<Trained>,
        pre: &Done<Trained>,
    ) -> Result<Vec<PrecisionPoint>> {
        let cfg = self.cfg;
        let mut points = Vec::new();
        if cfg.pipeline.precisions.is_empty() {
            return Ok(points);
        }
        let mut modes = vec![cfg.pretrain.precision];
        for &p in &cfg.pipeline.precisions {
            if !modes.contains(&p) {
                modes.push(p);
            }
        }
        for mode in modes {
            let name = format!("pretrain-reg4rec-{}", mode.as_str());
            let model = if mode == cfg.pretrain.precision {
                pre.clone()
            } else {
                self.pretrain(&name, mpq, Mode::Reg4rec, mode, 0)?
            };
            let test = self.eval(
                &format!("precision-{}", mode.as_str()),
                &model,
                Stage::Test,
                None,
                Which::Best,
            )?;
            let r = model.result.report.pretrain(&name)?;
            points.push(PrecisionPoint {
                precision: mode.as_str().to_string(),
                targets_per_s: r.targets_per_s,
                best_valid_loss: r.best_valid_loss,
                recall_10: test.report.metrics.recall_10,
                ndcg_10: test.report.metrics.ndcg_10,
                train_seconds: r.train_seconds,
            });
        }
        Ok(points)
    }
}

/// Part of every evaluation stage's key: evaluations cached before generated lists broke ties pessimistically
/// (they ordered equal scores by item index), or before each user's top list was kept (the long-tail share),
/// are recomputed.
const EVAL_REVISION: &str = "pessimistic-ties+top-lists";

/// The full model's item head ranking every item alone (no search).
pub const ITEM_HEAD_ROW: &str = "item-head";

/// A full-ranking evaluation's per-user ranks and seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DenseEvaluated {
    ranks: UserRanks,
    seconds: f64,
}

/// The suffix of the path-ranked rows: the same model searched with `Rank::Paths`.
pub const PATHS_SUFFIX: &str = "-paths";

/// The full model, path-ranked: the reference of every other path-ranked row.
pub const REG4REC_PATHS_ROW: &str = "reg4rec-paths";

/// The row of the full model's alignment at its last step, shown when validation kept an earlier step.
pub const LAST_STEP_ROW: &str = "reg4rec-last-step";

/// The pre-trained model, path-ranked: the reference of PARS on paths.
pub const NO_PARS_PATHS_ROW: &str = "reg4rec-no-pars-paths";

/// The path-aligned model decoding its codebooks in a fixed order (no CRSS step selection), path-ranked.
pub const NO_CRSS_PATHS_ROW: &str = "reg4rec-no-crss-paths";

/// The path-aligned model's hybrid list (item head and path score).
pub const PATH_ALIGNED_ROW: &str = "reg4rec-path-aligned";

/// What an alignment stage's validation kept, from its [`reg4rec_align::AlignReport`].
fn align_point(stage: &str, r: &reg4rec_align::AlignReport) -> AlignPoint {
    let pair = |m: &reg4rec_data::Metrics| [m.recall_10, m.ndcg_10];
    AlignPoint {
        stage: stage.to_string(),
        steps: r.steps,
        kept_step: r.best_step,
        step0: pair(&r.initial_valid),
        last: pair(&r.final_valid),
        kept_recall_10: r.best_valid_recall_10,
    }
}

fn evaluate_dir(
    dir: &Path,
    which: Which,
    ctx: &Ctx<'_>,
    stage: Stage,
    infer: &InferConfig,
) -> Result<Evaluated> {
    let t = Instant::now();
    let rec = reg4rec_recommender::Recommender::load_weights(dir, which, infer, tch::Device::Cpu)?;
    let mut report = ops::evaluate_model(rec.model(), rec.codes(), ctx.split, stage, rec.infer())?;
    Ok(Evaluated {
        ranks: std::mem::take(&mut report.ranks),
        report,
        seconds: t.elapsed().as_secs_f64(),
    })
}
