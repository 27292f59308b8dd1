//! The PARS training loop ([`align`]): GRPO steps from a pre-trained run, validation Recall@10 through the
//! inference search, the best weights kept (the pre-trained model is step 0, so alignment that lowers validation
//! recall is visible in the log and never shipped), atomic checkpoints and exact resume.
//!
//! ```text
//! run_dir/
//!   config.json      the pre-trained run's RunConfig (model, vocab, categories, codes hash): the aligned run
//!                    loads with reg4rec_model::load_model(run_dir, Which::Best, codes, ..) like any
//!                    pre-trained run
//!   align.json       AlignRun: the AlignConfig, the pre-trained run it started from, the codes hash
//!   metrics.jsonl    {"kind": "step", ...} per step (every reward component, KL, losses, the latest validation
//!                    Recall@10) and {"kind": "valid", ...} per validation (step 0 = the pre-trained model)
//!   checkpoints/step-N/, latest.json, best/step-N.safetensors, best.json   (reg4rec_train::RunDir)
//!   report.json      AlignReport
//!   ladq.jsonl       with `precision = ladq`: K-FAC sensitivities and per-layer precisions, one line per
//!                    sampling (reg4rec_precision::Ladq, as in pre-training)
//! ```
//!
//! Determinism: contexts are the split's training examples shuffled per pass with ChaCha8 seeded by
//! `seed + pass`; step s samples its paths with ChaCha8 seeded by `seed + s` and calls `tch::manual_seed(seed + s)`
//! (dropout of the auxiliary loss), so a resumed run repeats an uninterrupted one.
//!
//! Data-parallel ([`align_with`], world size W): `batch_contexts` is per rank; step s takes the
//! `W * batch_contexts` contexts a single process with that batch would take, rank r every W-th of them from the
//! r-th, and samples its paths with ChaCha8 seeded by `seed + s` mixed with r (rank 0 as a single process).
//! Gradients are averaged over the ranks' paths before each update; the logged step statistics are the
//! path-weighted means over the ranks. Rank 0's weights, moments and state are broadcast when resuming; every
//! rank validates (the same weights give the same metrics) and rank 0's values decide; only rank 0 writes.

use crate::config::AlignConfig;
use crate::error::{AlignError, Result};
use crate::grpo::{grpo_step_with, GrpoContext, StepStats};
use crate::msra::example_window;
use crate::rewards::RewardBreakdown;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reg4rec_data::io::JsonlLog;
use reg4rec_data::io::{read_json, write_atomic, write_json_atomic};
use reg4rec_data::metrics::Metrics;
use reg4rec_data::split::{Example, LeaveOneOut, Stage};
use reg4rec_data::Dataset;
use reg4rec_infer::{evaluate, BeamSearch, ModelScorer};
use reg4rec_model::checkpoint::{codes_hash, load_model, Which};
use reg4rec_model::train::validation_loss;
use reg4rec_model::{precision_controller, Objective, Reg4RecModel, SeqBatchBuilder};
use reg4rec_tokenizer::{Codes, ItemIndex};
use reg4rec_train::{AdamW, AdamWConfig, Best, DataParallel, RunDir, TrainState};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// The first `n` users of `split` (all when `n` is 0 or larger).
fn first_users(split: &LeaveOneOut, n: usize) -> LeaveOneOut {
    if n == 0 || n >= split.n_users() {
        return split.clone();
    }
    LeaveOneOut {
        users: split.users[..n].to_vec(),
        train: split.train[..n].to_vec(),
        valid: split.valid[..n].to_vec(),
        test: split.test[..n].to_vec(),
        dropped_users: split.dropped_users,
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

fn step_record(step: u64, lr: f64, s: &StepStats, valid_r10: f64, secs: f64) -> serde_json::Value {
    json!({
        "kind": "step", "step": step, "lr": lr, "loss": s.loss, "policy_loss": s.policy_loss, "kl": s.kl,
        "aux_loss": s.aux_loss, "clip_fraction": s.clip_fraction, "grad_norm": s.grad_norm,
        "reward": s.reward, "reward_std": s.reward_std, "flat_groups": s.flat_groups,
        "step_hit": s.components.step_hit, "global_path": s.components.global_path,
        "category_hit": s.components.category_hit, "step_consistency": s.components.step_consistency,
        "target_step_hit": s.target.step_hit, "target_global_path": s.target.global_path,
        "target_category_hit": s.target.category_hit, "target_step_consistency": s.target.step_consistency,
        "valid_recall@10": valid_r10, "seconds": secs,
    })
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
        },
        target: RewardBreakdown {
            step_hit: mean("target_step_hit"),
            global_path: mean("target_global_path"),
            category_hit: mean("target_category_hit"),
            step_consistency: mean("target_step_consistency"),
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

/// Aligns the pre-trained model of run directory `pretrained` (its best weights) with PARS on `ds` / `split`
/// with item `codes`, writing the run to `run_dir`. With `resume`, continues from the run's latest checkpoint
/// (the dataset, codes, pre-trained run and config must be the ones the run started with, except `steps`,
/// which may grow to continue a finished run).
pub fn align(
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    pretrained: &Path,
    cfg: &AlignConfig,
    run_dir: &Path,
    resume: bool,
) -> Result<AlignReport> {
    align_with(ds, split, codes, pretrained, cfg, run_dir, resume, None)
}

/// [`align`] as one rank of a data-parallel group (see the module docs); `dp = None` is [`align`].
#[allow(clippy::too_many_arguments)]
pub fn align_with(
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    pretrained: &Path,
    cfg: &AlignConfig,
    run_dir: &Path,
    resume: bool,
    dp: Option<DataParallel<'_>>,
) -> Result<AlignReport> {
    cfg.validate()?;
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
    if has_checkpoint && !resume {
        return Err(AlignError::run(
            run.latest(),
            "the run directory already holds a checkpoint: resume it or choose a new directory",
        ));
    }
    if resume && has_checkpoint {
        let mut saved: AlignRun = read_json(&align_path)?;
        // `steps` may grow on resume (continue a finished run); everything else must match.
        saved.config.steps = cfg.steps;
        if saved != align_run {
            return Err(AlignError::run(
                align_path,
                "the run was started from another pre-trained model, dataset, codes or config; resume needs the same",
            ));
        }
        write_json_atomic(&align_path, &align_run)?;
    } else if main {
        write_json_atomic(&run.config(), &pre_cfg)?;
        write_json_atomic(&align_path, &align_run)?;
    }

    let mut opt = AdamW::new(policy.var_store(), adamw_config(cfg));
    let log = JsonlLog::new(run.metrics());
    let builder = SeqBatchBuilder {
        vocab: policy.vocab(),
        history_len: policy.config().history_len,
        codes,
        item_category: &ds.item_category,
    };
    let valid_split = first_users(split, cfg.valid_users);
    let weights = pre_cfg.train.objective();
    let mut valid_secs = 0.0f64;

    let mut resumed = if main {
        run.load_latest(policy.var_store(), &mut opt)?
    } else {
        None
    };
    if let Some(dp) = dp {
        // Every rank continues from rank 0's state; a resumed run also takes its weights and moments (a fresh
        // one starts from the same pre-trained file everywhere, broadcast anyway).
        resumed = dp.broadcast_json(&resumed)?;
        if let Some(s) = &resumed {
            opt.t = s.step;
        }
        let params: Vec<tch::Tensor> = opt.params().iter().map(|p| p.shallow_clone()).collect();
        dp.broadcast_tensors(&params)?;
        let moments: Vec<tch::Tensor> = opt.state_tensors().into_iter().map(|(_, t)| t).collect();
        dp.broadcast_tensors(&moments)?;
    }
    // The policy's precision (ladq: restored from the history up to the resumed step); the step-0 validation
    // of a fresh run already runs under it.
    let mut ladq = precision_controller(
        &mut policy,
        cfg.precision,
        &cfg.ladq,
        main.then_some(run_dir),
        resumed.as_ref().map_or(0, |s| s.step),
    )?;
    let mut state = match resumed {
        Some(s) => {
            if main {
                log.truncate_after(s.step)?;
            }
            s
        }
        None => {
            if main {
                write_atomic(&run.metrics(), b"")?;
            }
            // Step 0: the pre-trained model is the first candidate for the kept weights.
            let t = Instant::now();
            let (metrics, loss) =
                validate_model(&policy, codes, &index, &valid_split, &builder, cfg, weights)?;
            valid_secs += t.elapsed().as_secs_f64();
            let (metrics, loss) = match dp {
                Some(dp) => dp.broadcast_json(&(metrics, loss))?,
                None => (metrics, loss),
            };
            if main {
                log.append(&json!({
                    "kind": "valid", "step": 0, "recall@10": metrics.recall_10, "metrics": metrics,
                    "valid_loss": loss, "best": true,
                }))?;
                run.save_best(
                    policy.var_store(),
                    &Best {
                        weights: RunDir::best_weights_name(0),
                        step: 0,
                        epoch: 0,
                        valid_loss: Some(loss),
                        valid_metric: Some(metrics.recall_10),
                    },
                )?;
            }
            let s = TrainState {
                best_criterion: Some(-metrics.recall_10),
                best_epoch: Some(0),
                ..TrainState::fresh()
            };
            if main {
                run.save_checkpoint(policy.var_store(), &opt, &s)?;
            }
            s
        }
    };
    let mut last_r10 = log
        .records()
        .iter()
        .rev()
        .find_map(|r| r.get("recall@10").and_then(|v| v.as_f64()))
        .unwrap_or(0.0);
    if let Some(dp) = dp {
        last_r10 = dp.broadcast_json(&last_r10)?;
    }

    let ctx = GrpoContext {
        reference: &reference,
        index: &index,
        codes,
        item_category: &ds.item_category,
        cfg,
        weights,
    };
    let b = cfg.batch_contexts;
    // The global batch of contexts: `b` per rank.
    let global_b = b * world;
    let n_ex = examples.len();
    let mut order_pass = usize::MAX;
    let mut order: Vec<usize> = Vec::new();
    let pb = reg4rec_data::progress::bar(cfg.steps, "align");
    pb.set_position(state.step);
    let mut train_secs = 0.0f64;
    let mut steps_run = 0u64;
    while state.step < cfg.steps {
        let step = state.step + 1;
        let t = Instant::now();
        let mut chosen = Vec::with_capacity(b);
        for i in (rank..global_b).step_by(world) {
            let p = (state.step as usize) * global_b + i;
            let pass = p / n_ex;
            if pass != order_pass {
                order = (0..n_ex).collect();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    cfg.seed.wrapping_add(pass as u64),
                ));
                order_pass = pass;
            }
            chosen.push(examples[order[p % n_ex]]);
        }
        let pairs: Vec<(&[u32], u32)> = chosen
            .iter()
            .map(|&e| split.example(e, builder.history_len))
            .collect();
        let batch = builder.last(&pairs)?;
        let windows: Vec<_> = chosen
            .iter()
            .map(|&e| example_window(split, e, cfg.msra_h, cfg.msra_w))
            .collect();
        let lr = if cfg.warmup_steps > 0 && step <= cfg.warmup_steps {
            cfg.lr * step as f64 / cfg.warmup_steps as f64
        } else {
            cfg.lr
        };
        tch::manual_seed(cfg.seed.wrapping_add(step) as i64);
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed
                .wrapping_add(step)
                .wrapping_add((rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        // LADQ sampling steps (0-based step index, as in pre-training): the policy's projections capture their
        // inputs and output gradients in the gradient-tracked passes (path sampling and the reference run
        // under no_grad and record nothing); with ppo_epochs > 1 the updates of the step are pooled.
        ladq.begin_step(state.step);
        let mut stats =
            grpo_step_with(&ctx, &policy, &mut opt, &batch, &windows, lr, &mut rng, dp)?;
        if let Some(dp) = dp {
            stats = mean_over_ranks(dp, &stats, (batch.rows * cfg.group_size) as f64)?;
            if dp.check_replicas_every > 0 && step % dp.check_replicas_every == 0 {
                dp.check_replicas(opt.params(), step)?;
            }
        }
        // The GRPO loss is a mean over the step's sampled paths (and their tokens).
        ladq.end_step(state.step, (batch.rows * cfg.group_size) as f64)
            .map_err(reg4rec_model::ModelError::from)?;
        let secs = t.elapsed().as_secs_f64();
        train_secs += secs;
        steps_run += 1;
        state.step = step;
        state.epoch = (step as usize * global_b) / n_ex;

        let validate_now = step % cfg.valid_every == 0 || step == cfg.steps;
        if validate_now {
            let t = Instant::now();
            let (metrics, loss) =
                validate_model(&policy, codes, &index, &valid_split, &builder, cfg, weights)?;
            valid_secs += t.elapsed().as_secs_f64();
            let (metrics, loss) = match dp {
                Some(dp) => dp.broadcast_json(&(metrics, loss))?,
                None => (metrics, loss),
            };
            last_r10 = metrics.recall_10;
            let improved = state
                .best_criterion
                .is_none_or(|best| -metrics.recall_10 < best);
            if improved {
                state.best_criterion = Some(-metrics.recall_10);
                if main {
                    run.save_best(
                        policy.var_store(),
                        &Best {
                            weights: RunDir::best_weights_name(step),
                            step,
                            epoch: state.epoch,
                            valid_loss: Some(loss),
                            valid_metric: Some(metrics.recall_10),
                        },
                    )?;
                }
            }
            if main {
                log.append(&step_record(step, lr, &stats, last_r10, secs))?;
                log.append(&json!({
                "kind": "valid", "step": step, "recall@10": metrics.recall_10, "metrics": metrics,
                "valid_loss": loss, "best": improved,
            }))?;
            }
        } else if main {
            log.append(&step_record(step, lr, &stats, last_r10, secs))?;
        }
        state.finished = step >= cfg.steps;
        if main && (validate_now || (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0))
        {
            run.save_checkpoint(policy.var_store(), &opt, &state)?;
        }
        pb.set_position(step);
        pb.set_message(format!(
            "reward {:.3} hit {:.3} kl {:.4} R@10 {last_r10:.4}",
            stats.reward, stats.target.global_path, stats.kl
        ));
    }
    pb.finish_and_clear();
    if !main {
        // The report is rank 0's (it reads the run directory).
        let dp = dp.ok_or_else(|| AlignError::Input("a non-zero rank without a group".into()))?;
        return dp
            .broadcast_json(&None::<AlignReport>)?
            .ok_or_else(|| AlignError::Input("rank 0 sent no alignment report".into()));
    }

    let records = log.records();
    let steps: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("step"))
        .collect();
    let k = ((steps.len() / 4).clamp(1, 10)).min(steps.len());
    let best: Best = read_json(&run.best())?;
    let initial_valid = metrics_of(&records, 0)
        .ok_or_else(|| AlignError::run(run.metrics(), "no step-0 validation record"))?;
    let final_valid = metrics_of(&records, state.step).ok_or_else(|| {
        AlignError::run(
            run.metrics(),
            format!("no validation record at step {}", state.step),
        )
    })?;
    let report = AlignReport {
        run_dir: run_dir.to_path_buf(),
        pretrained: pretrained.to_path_buf(),
        steps: state.step,
        initial_valid,
        final_valid,
        best_step: best.step,
        best_valid_recall_10: best.valid_metric.unwrap_or(0.0),
        curve_start: curve_point(&steps[..k]),
        curve_end: curve_point(&steps[steps.len() - k..]),
        train_seconds: train_secs,
        valid_seconds: valid_secs,
        contexts_per_s: (steps_run * global_b as u64) as f64 / train_secs.max(1e-9),
    };
    write_json_atomic(&run_dir.join("report.json"), &report)?;
    if let Some(dp) = dp {
        dp.broadcast_json(&Some(report.clone()))?;
    }
    Ok(report)
}

/// The path-weighted mean over the ranks of every statistic of a step (each rank's are means over its
/// `weight` paths).
fn mean_over_ranks(dp: DataParallel<'_>, stats: &StepStats, weight: f64) -> Result<StepStats> {
    fn numbers<'v>(v: &'v mut serde_json::Value, out: &mut Vec<&'v mut serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => m.values_mut().for_each(|x| numbers(x, out)),
            serde_json::Value::Number(_) => out.push(v),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(stats)
        .map_err(|e| AlignError::Input(format!("step statistics: {e}")))?;
    let mut slots = Vec::new();
    numbers(&mut v, &mut slots);
    let mut sums: Vec<f64> = slots
        .iter()
        .map(|x| x.as_f64().unwrap_or(0.0) * weight)
        .collect();
    sums.push(weight);
    let totals = dp.sum_f64(&sums)?;
    let total_weight = totals[slots.len()].max(f64::MIN_POSITIVE);
    for (slot, t) in slots.into_iter().zip(&totals) {
        *slot = serde_json::json!(t / total_weight);
    }
    serde_json::from_value(v).map_err(|e| AlignError::Input(format!("step statistics: {e}")))
}
