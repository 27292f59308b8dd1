//! PARS alignment ([`align`]): GRPO steps from a pre-trained run through the training engine
//! ([`reg4rec_train::fit`]), validation Recall@10 through the inference search every `valid_every` steps, the best
//! weights kept (the pre-trained model is validated first as step 0, so alignment that lowers validation recall
//! is visible in the log and never shipped), checkpoints and exact resume. The engine owns the loop, AdamW,
//! checkpoints and data parallelism; this module says which contexts a step takes ([`Batches`]), what a step
//! minimises ([`sample_step`] then [`grpo_loss`] per update) and how a model is validated.
//!
//! ```text
//! run_dir/
//!   config.json      the pre-trained run's RunConfig (model, vocab, categories, codes hash): the aligned run
//!                    loads with reg4rec_model::load_model(run_dir, Which::Best, codes, ..) like any
//!                    pre-trained run
//!   align.json       AlignRun: the AlignConfig, the pre-trained run it started from, the codes hash
//!   metrics.jsonl    {"kind": "step", ...} per step (every reward component, KL, losses) and {"kind": "valid",
//!                    ...} per validation (step 0 = the pre-trained model; Recall@10 and every metric)
//!   checkpoints/step-N/, latest.json, best/step-N.safetensors, best.json   (reg4rec_train::RunDir)
//!   report.json      AlignReport
//!   ladq.jsonl       with `precision = ladq`: K-FAC sensitivities and per-layer precisions, one line per
//!                    sampling (reg4rec_precision::Ladq, as in pre-training)
//! ```
//!
//! Determinism: contexts are the split's training examples shuffled per pass with ChaCha8 seeded by
//! `seed + pass`; step s (1-based) samples its paths with ChaCha8 seeded by `seed + s`, and the engine reseeds
//! libtorch (dropout of the auxiliary loss) before every step, so a resumed run repeats an uninterrupted one.
//!
//! Data-parallel ([`AlignOptions::data_parallel`], world size W): `batch_contexts` is per rank; step s takes the
//! `W * batch_contexts` contexts a single process with that batch would take, rank r every W-th of them from the
//! r-th, and samples its paths with ChaCha8 seeded by `seed + s` mixed with r (rank 0 as a single process).
//! Gradients are averaged over the ranks' contexts before each update; the logged step statistics are the
//! context-weighted means over the ranks. Rank 0's weights, moments and state are broadcast at the start;
//! every rank validates (the same weights give the same metrics) and rank 0's values decide; only rank 0
//! writes.

use crate::config::AlignConfig;
use crate::error::{AlignError, Result};
use crate::grpo::{grpo_loss, sample_step, GrpoContext, SampledStep};
use crate::msra::{example_window, WindowItem};
use crate::rewards::RewardBreakdown;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reg4rec_data::io::{read_json, write_json_atomic, JsonlLog};
use reg4rec_data::metrics::Metrics;
use reg4rec_data::split::{Example, LeaveOneOut, Stage};
use reg4rec_data::Dataset;
use reg4rec_infer::{evaluate, BeamSearch, ModelScorer};
use reg4rec_model::checkpoint::{codes_hash, load_model, Which};
use reg4rec_model::{
    precision_controller, validation_loss, Objective, Reg4RecModel, SeqBatch, SeqBatchBuilder,
};
use reg4rec_precision::Ladq;
use reg4rec_tokenizer::{Codes, ItemIndex};
use reg4rec_train::{
    fit, AdamWConfig, Batches, Best, DataParallel, Fit, LearnerConfig, LrSchedule, RunDir,
    Schedule, StepLoss, TrainError, Validation, Validator,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Version of `align.json`.
pub const ALIGN_FORMAT_VERSION: u32 = 1;

/// `align.json`: what an alignment run was started from; resume requires the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignRun {
    pub format_version: u32,
    pub dataset: String,
    /// The pre-trained run directory (its best weights are the start and the KL reference).
    pub pretrained: PathBuf,
    /// The pre-trained run's best step.
    pub pretrained_step: u64,
    pub codes_hash: String,
    pub config: AlignConfig,
}

/// Means of the step records over a stretch of steps (the start or the end of the reward curves).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Steps averaged (first..=last).
    pub first_step: u64,
    pub last_step: u64,
    pub reward: f64,
    /// Components with the MSRA window.
    pub components: RewardBreakdown,
    /// Components against the target alone.
    pub target: RewardBreakdown,
    pub kl: f64,
}

/// What an alignment run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignReport {
    pub run_dir: PathBuf,
    pub pretrained: PathBuf,
    pub steps: u64,
    /// Validation metrics of the pre-trained model (step 0) and of the last step.
    pub initial_valid: Metrics,
    pub final_valid: Metrics,
    /// Step of the kept (best) weights: 0 means alignment never beat the pre-trained model.
    pub best_step: u64,
    pub best_valid_recall_10: f64,
    /// Mean step records over the first and the last `min(10, steps / 4)` (at least 1) steps.
    pub curve_start: CurvePoint,
    pub curve_end: CurvePoint,
    /// Wall-clock seconds of GRPO steps and of validation, in this process.
    pub train_seconds: f64,
    pub valid_seconds: f64,
    /// Training contexts (one target item each, `group_size` sampled paths) per second of GRPO steps, over
    /// every rank.
    pub contexts_per_s: f64,
}

/// AlignConfig's AdamW constants (the betas and epsilon of pre-training's defaults).
fn adamw_config(cfg: &AlignConfig) -> AdamWConfig {
    let pre = reg4rec_model::TrainConfig::default();
    AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..pre.adamw()
    }
}

/// Validation metrics through the inference search (with the `valid` search settings) and the CRSS validation
/// loss, in eval mode.
fn validate_model(
    model: &Reg4RecModel,
    codes: &Codes,
    index: &ItemIndex,
    valid_split: &LeaveOneOut,
    builder: &SeqBatchBuilder<'_>,
    cfg: &AlignConfig,
    weights: Objective,
) -> Result<(Metrics, f64)> {
    let mut scorer = ModelScorer::new(model, codes)?;
    let search = BeamSearch::new(index, &cfg.valid)?;
    let report = evaluate(
        &mut scorer,
        &search,
        valid_split,
        Stage::Valid,
        model.config().history_len,
    )?;
    let (loss, _, _) = validation_loss(model, valid_split, builder, weights, 512)?;
    Ok((report.metrics, loss))
}

fn curve_point(records: &[&serde_json::Value]) -> CurvePoint {
    let n = records.len().max(1) as f64;
    let mean = |key: &str| {
        records
            .iter()
            .filter_map(|r| r.get(key).and_then(|v| v.as_f64()))
            .sum::<f64>()
            / n
    };
    let step = |r: Option<&&serde_json::Value>| {
        r.and_then(|r| r.get("step"))
            .and_then(|s| s.as_u64())
            .unwrap_or(0)
    };
    CurvePoint {
        first_step: step(records.first()),
        last_step: step(records.last()),
        reward: mean("reward"),
        components: RewardBreakdown {
            step_hit: mean("step_hit"),
            global_path: mean("global_path"),
            category_hit: mean("category_hit"),
            step_consistency: mean("step_consistency"),
            long_tail: mean("long_tail"),
            item_head: mean("item_head"),
        },
        target: RewardBreakdown {
            step_hit: mean("target_step_hit"),
            global_path: mean("target_global_path"),
            category_hit: mean("target_category_hit"),
            step_consistency: mean("target_step_consistency"),
            long_tail: mean("long_tail"),
            item_head: mean("item_head"),
        },
        kl: mean("kl"),
    }
}

fn metrics_of(records: &[serde_json::Value], step: u64) -> Option<Metrics> {
    records
        .iter()
        .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("valid"))
        .filter(|r| r.get("step").and_then(|s| s.as_u64()) == Some(step))
        .filter_map(|r| {
            r.get("metrics")
                .and_then(|m| serde_json::from_value(m.clone()).ok())
        })
        .next_back()
}

/// Optional behaviour of [`align`] (`Default::default()`: none of it).
#[derive(Default, Clone, Copy)]
pub struct AlignOptions<'a> {
    /// Align as one rank of a data-parallel group (see the module docs). `None`: a single process.
    pub data_parallel: Option<DataParallel<'a>>,
}

/// The contexts of alignment: the split's training examples; step s (0-based) takes the `global_b` examples
/// from position `s * global_b` of the concatenated passes, each pass the examples shuffled with `seed + pass`.
/// An engine "epoch" is the `valid_every` steps between two validations.
struct Contexts<'a> {
    examples: Vec<Example>,
    split: &'a LeaveOneOut,
    builder: SeqBatchBuilder<'a>,
    cfg: &'a AlignConfig,
}

/// A step's contexts and their MSRA windows.
struct ContextBatch {
    batch: SeqBatch,
    windows: Vec<Vec<WindowItem>>,
}

impl Batches for Contexts<'_> {
    type Batch = ContextBatch;

    fn n_rows(&self) -> usize {
        self.examples.len()
    }

    fn row_len(&self, _: usize) -> usize {
        1
    }

    fn row_targets(&self, _: usize) -> usize {
        1
    }

    fn build(&self, rows: &[usize]) -> reg4rec_train::Result<(ContextBatch, usize)> {
        let chosen: Vec<Example> = rows.iter().map(|&i| self.examples[i]).collect();
        let pairs: Vec<(&[u32], u32)> = chosen
            .iter()
            .map(|&e| self.split.example(e, self.builder.history_len))
            .collect();
        let batch = self.builder.last(&pairs).map_err(TrainError::task)?;
        let windows = chosen
            .iter()
            .map(|&e| example_window(self.split, e, self.cfg.msra_h, self.cfg.msra_w))
            .collect();
        Ok((ContextBatch { batch, windows }, rows.len()))
    }

    fn epoch_batches(
        &self,
        epoch: usize,
        global_b: usize,
        seed: u64,
    ) -> reg4rec_train::Result<Vec<Vec<usize>>> {
        let k = self.cfg.valid_every;
        let (first, last) = (
            epoch as u64 * k,
            ((epoch as u64 + 1) * k).min(self.cfg.steps),
        );
        let n = self.examples.len();
        let mut order_pass = usize::MAX;
        let mut order: Vec<usize> = Vec::new();
        let mut batches = Vec::new();
        for step in first..last {
            let mut rows = Vec::with_capacity(global_b);
            for i in 0..global_b {
                let p = step as usize * global_b + i;
                let pass = p / n;
                if pass != order_pass {
                    order = (0..n).collect();
                    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                        seed.wrapping_add(pass as u64),
                    ));
                    order_pass = pass;
                }
                rows.push(order[p % n]);
            }
            batches.push(rows);
        }
        Ok(batches)
    }

    fn total_steps(&self, _epochs: usize, _global_bs: usize) -> u64 {
        self.cfg.steps
    }
}

/// GRPO as an objective: update 0 of a step samples and rewards the paths, every update takes the loss.
struct Grpo<'a> {
    ctx: GrpoContext<'a>,
    policy: &'a Reg4RecModel,
    rank: usize,
    ladq: Ladq,
    step: Option<SampledStep>,
}

impl reg4rec_train::Objective<ContextBatch> for Grpo<'_> {
    fn loss(
        &mut self,
        b: &ContextBatch,
        step: u64,
        update: usize,
    ) -> reg4rec_train::Result<StepLoss> {
        let cfg = self.ctx.cfg;
        if update == 0 {
            let mut rng = ChaCha8Rng::seed_from_u64(
                cfg.seed
                    .wrapping_add(step + 1)
                    .wrapping_add((self.rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            );
            // LADQ sampling steps: the policy's projections capture their inputs and output gradients in the
            // gradient-tracked passes (path sampling and the reference run under no_grad and record nothing);
            // with ppo_epochs > 1 the updates of the step are pooled.
            self.ladq.begin_step(step);
            self.step = Some(
                sample_step(&self.ctx, self.policy, &b.batch, &b.windows, &mut rng)
                    .map_err(TrainError::task)?,
            );
        }
        let sampled = self
            .step
            .as_mut()
            .ok_or_else(|| TrainError::Input("a GRPO update before its sampling".into()))?;
        let total = grpo_loss(&self.ctx, self.policy, sampled, update);
        let s = &sampled.stats;
        Ok(StepLoss {
            total,
            parts: vec![
                ("policy_loss", s.policy_loss),
                ("kl", s.kl),
                ("aux_loss", s.aux_loss),
                ("clip_fraction", s.clip_fraction),
                ("reward", s.reward),
                ("reward_std", s.reward_std),
                ("flat_groups", s.flat_groups),
                ("guided_groups", s.guided_groups),
                ("step_hit", s.components.step_hit),
                ("global_path", s.components.global_path),
                ("category_hit", s.components.category_hit),
                ("step_consistency", s.components.step_consistency),
                ("long_tail", s.components.long_tail),
                ("item_head", s.components.item_head),
                ("target_step_hit", s.target.step_hit),
                ("target_global_path", s.target.global_path),
                ("target_category_hit", s.target.category_hit),
                ("target_step_consistency", s.target.step_consistency),
            ],
        })
    }

    fn after_backward(
        &mut self,
        step: u64,
        update: usize,
        _targets: f64,
    ) -> reg4rec_train::Result<()> {
        if update + 1 == self.ctx.cfg.ppo_epochs {
            // The GRPO loss is a mean over the step's sampled paths (and their tokens).
            let paths = self.step.as_ref().map_or(0, SampledStep::n_paths) as f64;
            self.ladq.end_step(step, paths).map_err(TrainError::task)?;
        }
        Ok(())
    }
}

/// Validation Recall@10 through the inference search (the criterion; every rank computes it, rank 0's decides)
/// and the CRSS validation loss.
struct SearchValidator<'a> {
    model: &'a Reg4RecModel,
    codes: &'a Codes,
    index: &'a ItemIndex,
    split: LeaveOneOut,
    builder: SeqBatchBuilder<'a>,
    cfg: &'a AlignConfig,
    weights: Objective,
    dp: Option<DataParallel<'a>>,
}

impl Validator for SearchValidator<'_> {
    fn validate(&mut self) -> reg4rec_train::Result<Validation> {
        let (metrics, loss) = validate_model(
            self.model,
            self.codes,
            self.index,
            &self.split,
            &self.builder,
            self.cfg,
            self.weights,
        )
        .map_err(TrainError::task)?;
        let (metrics, loss) = match self.dp {
            Some(dp) => dp.broadcast_json(&(metrics, loss))?,
            None => (metrics, loss),
        };
        let mut record = serde_json::Map::new();
        record.insert("recall@10".into(), json!(metrics.recall_10));
        record.insert("metrics".into(), json!(metrics));
        Ok(Validation {
            criterion: -metrics.recall_10,
            loss: Some(loss),
            metric: Some(metrics.recall_10),
            record,
        })
    }
}

/// The engine's settings of an alignment run: an "epoch" is `valid_every` steps.
fn learner_config(cfg: &AlignConfig) -> LearnerConfig {
    LearnerConfig {
        seed: cfg.seed,
        epochs: cfg.steps.div_ceil(cfg.valid_every) as usize,
        batch_size: cfg.batch_contexts,
        lr: LrSchedule {
            lr: cfg.lr,
            warmup_steps: cfg.warmup_steps,
            schedule: Schedule::Constant,
            final_lr_ratio: 1.0,
        },
        adamw: adamw_config(cfg),
        grad_clip: cfg.grad_clip,
        patience: 0,
        validate_every: 1,
        checkpoint_every: cfg.checkpoint_every,
        log_every: 1,
        time_budget_s: 0.0,
        validate_at_start: true,
        updates_per_batch: cfg.ppo_epochs,
        label: "align".into(),
    }
}

/// Aligns the pre-trained model of run directory `pretrained` (its best weights) with PARS on `ds` / `split`
/// with item `codes`, writing the run to `run_dir`. With `resume`, continues from the run's latest checkpoint
/// (the dataset, codes, pre-trained run and config must be the ones the run started with, except `steps`,
/// which may grow to continue a finished run whose steps were a multiple of `valid_every`). `opts`: data
/// parallelism (`Default::default()` for a single process).
#[allow(clippy::too_many_arguments)]
pub fn align(
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    pretrained: &Path,
    cfg: &AlignConfig,
    run_dir: &Path,
    resume: bool,
    opts: AlignOptions<'_>,
) -> Result<AlignReport> {
    cfg.validate()?;
    let dp = opts.data_parallel;
    let (rank, world) = dp.map_or((0, 1), |d| (d.rank(), d.world_size()));
    let main = rank == 0;
    if world > 1 && cfg.precision == reg4rec_model::PrecisionMode::Ladq {
        return Err(AlignError::Input(
            "precision ladq is not supported data-parallel (each rank would choose its own precisions); use fp32 or bf16"
                .into(),
        ));
    }
    let device = cfg.device()?;
    let (mut policy, pre_cfg) = load_model(pretrained, Which::Best, codes, device)?;
    let (reference, _) = load_model(pretrained, Which::Best, codes, device)?;
    if policy.config().path != reg4rec_model::PathScore::Open {
        // GRPO's rollouts and surrogate score each step with the open-codebook softmax of the decoder at the
        // path's prefix; a `codebook` or `parallel` path scores its tokens otherwise, so aligning it would train
        // a policy that is not the one the search follows.
        return Err(AlignError::Input(format!(
            "{}: model.path = {:?}; alignment (GRPO) supports the `open` path score only",
            pretrained.display(),
            policy.config().path
        )));
    }
    let pre_best: Best = read_json(&RunDir::new(pretrained).best())?;
    let hash = codes_hash(codes);
    if pre_cfg.n_items != ds.n_items() || pre_cfg.n_categories != ds.n_categories() {
        return Err(AlignError::Input(format!(
            "the pre-trained model has {} items and {} categories, dataset `{}` has {} and {}",
            pre_cfg.n_items,
            pre_cfg.n_categories,
            ds.name,
            ds.n_items(),
            ds.n_categories()
        )));
    }
    let index = ItemIndex::new(codes)?;
    let examples: Vec<Example> = split.training_examples();
    let long_tail =
        reg4rec_data::metrics::long_tail(&split.train, ds.n_items(), cfg.rewards.head_share);
    if examples.is_empty() {
        return Err(AlignError::Input(format!(
            "dataset `{}` has no training examples",
            ds.name
        )));
    }

    let run = RunDir::new(run_dir);
    let align_path = run_dir.join("align.json");
    let align_run = AlignRun {
        format_version: ALIGN_FORMAT_VERSION,
        dataset: ds.name.clone(),
        pretrained: pretrained.to_path_buf(),
        pretrained_step: pre_best.step,
        codes_hash: hash,
        config: cfg.clone(),
    };
    // Only rank 0 reads and writes the run directory.
    let has_checkpoint = main && run.latest().exists();
    if resume && has_checkpoint {
        let mut saved: AlignRun = read_json(&align_path)?;
        // `steps` may grow on resume (continue a finished run); everything else must match.
        let saved_steps = saved.config.steps;
        saved.config.steps = cfg.steps;
        if saved != align_run {
            return Err(AlignError::run(
                align_path,
                "the run was started from another pre-trained model, dataset, codes or config; resume needs the same",
            ));
        }
        if saved_steps != cfg.steps && !saved_steps.is_multiple_of(cfg.valid_every) {
            return Err(AlignError::config(
                "steps",
                format!(
                    "the run stopped at {saved_steps} steps, not a multiple of valid_every = {}: its validation \
                     periods cannot be continued",
                    cfg.valid_every
                ),
            ));
        }
        write_json_atomic(&align_path, &align_run)?;
    } else if main && !has_checkpoint {
        write_json_atomic(&run.config(), &pre_cfg)?;
        write_json_atomic(&align_path, &align_run)?;
    }

    let learner = learner_config(cfg);
    // The policy's precision (ladq: restored from the history up to the resumed step); the step-0 validation
    // of a fresh run already runs under it.
    let ladq = precision_controller(
        &mut policy,
        cfg.precision,
        &cfg.ladq,
        main.then_some(run_dir),
        resume,
    )?;
    let builder = SeqBatchBuilder {
        vocab: policy.vocab(),
        history_len: policy.config().history_len,
        codes,
        item_category: &ds.item_category,
    };
    let weights = pre_cfg.train.objective();
    let source = Contexts {
        examples,
        split,
        builder,
        cfg,
    };
    let mut objective = Grpo {
        ctx: GrpoContext {
            reference: &reference,
            index: &index,
            codes,
            item_category: &ds.item_category,
            long_tail: &long_tail,
            cfg,
            weights,
        },
        policy: &policy,
        rank,
        ladq,
        step: None,
    };
    let mut validator = SearchValidator {
        model: &policy,
        codes,
        index: &index,
        split: split.subset(cfg.valid_users, cfg.seed),
        builder,
        cfg,
        weights,
        dp,
    };
    let f = Fit {
        cfg: &learner,
        run: run.clone(),
        vs: policy.var_store(),
        resume,
        stop_after_steps: None,
        data_parallel: dp,
    };
    let fitted = fit(f, &source, &mut objective, &mut validator)?;
    if !main {
        // The report is rank 0's (it reads the run directory).
        let dp = dp.ok_or_else(|| AlignError::Input("a non-zero rank without a group".into()))?;
        return dp
            .broadcast_json(&None::<AlignReport>)?
            .ok_or_else(|| AlignError::Input("rank 0 sent no alignment report".into()));
    }

    let records = JsonlLog::new(run.metrics()).records();
    let steps: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("step"))
        .collect();
    let k = ((steps.len() / 4).clamp(1, 10)).min(steps.len());
    let best: Best = read_json(&run.best())?;
    let initial_valid = metrics_of(&records, 0)
        .ok_or_else(|| AlignError::run(run.metrics(), "no step-0 validation record"))?;
    let final_valid = metrics_of(&records, fitted.steps).ok_or_else(|| {
        AlignError::run(
            run.metrics(),
            format!("no validation record at step {}", fitted.steps),
        )
    })?;
    let report = AlignReport {
        run_dir: run_dir.to_path_buf(),
        pretrained: pretrained.to_path_buf(),
        steps: fitted.steps,
        initial_valid,
        final_valid,
        best_step: best.step,
        best_valid_recall_10: best.valid_metric.unwrap_or(0.0),
        curve_start: curve_point(&steps[..k]),
        curve_end: curve_point(&steps[steps.len() - k..]),
        train_seconds: fitted.train_seconds,
        valid_seconds: fitted.valid_seconds,
        contexts_per_s: fitted.targets_per_s,
    };
    write_json_atomic(&run_dir.join("report.json"), &report)?;
    if let Some(dp) = dp {
        dp.broadcast_json(&Some(report.clone()))?;
    }
    Ok(report)
}
