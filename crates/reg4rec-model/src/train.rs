//! Pre-training: AdamW with warmup and decay, gradient clipping, seeded shuffling and dropout, validation loss
//! (and an optional validation-metric callback) every epoch, early stopping, the best weights kept, and
//! checkpoints from which a killed run resumes to exactly the weights an uninterrupted run reaches.
//!
//! Layout: a step trains `batch_size` users, every position of each (the last `history_len` of its training
//! sequence, [`crate::batch::SeqBatchBuilder::sequences`]) in one encoder pass; the loss is the mean over the
//! step's targets. Throughput is counted in *target items* per second (non-padding positions trained).
//!
//! Determinism: the model is initialised after `tch::manual_seed(seed)`; epoch `e`'s batches come from a
//! ChaCha8 generator seeded by `seed + e`: users shuffled, sorted by length within windows of 64 batches (so a
//! batch is mostly real positions, not padding), batches shuffled; every optimizer step `s` first calls
//! `tch::manual_seed(seed + s)`, so dropout never depends on what ran before (libtorch's generator is
//! process-global: exact reproducibility needs no other seeded libtorch work running concurrently in the
//! process). Batches are built on a background thread (a bounded channel of two) while the current step
//! computes.
//!
//! Data-parallel ([`PretrainOptions::data_parallel`], world size W): `batch_size` is per rank. Global batch
//! `b` is the `W * batch_size` users a single process with that batch size would take, and rank `r` takes
//! every W-th of them from the `r`-th; gradients are averaged over the global batch (weighted by each rank's
//! targets) before clipping and the optimizer step, so W ranks with batch B follow a single process with batch
//! W * B up to float rounding. Rank 0's parameters, optimizer moments and
//! state are broadcast at the start (fresh or resumed); only rank 0 reads and writes the run directory;
//! the validation loss is summed over the ranks' shards of the users; a validation metric is computed by
//! every rank and rank 0's value is used.

use crate::batch::{check_codes, SeqBatch, SeqBatchBuilder};
use crate::checkpoint::{codes_hash, Best, RunConfig, RunDir, TrainState, FORMAT_VERSION};
use crate::config::{Mode, ModelConfig, TrainConfig};
use crate::crss::{sequence_loss, Objective};
use crate::dist::DataParallel;
use crate::error::{ModelError, Result};
use crate::model::Reg4RecModel;
use crate::optim::{learning_rate, AdamW};
use crate::vocab::Vocab;
use rand::SeedableRng;
use reg4rec_data::batch::length_bucketed_batches;
use reg4rec_data::io::write_atomic;
use reg4rec_data::io::JsonlLog;
use reg4rec_data::split::{LeaveOneOut, Stage};
use reg4rec_data::Dataset;
use reg4rec_precision::{Ladq, LadqConfig, PrecisionMode};
use reg4rec_tokenizer::Codes;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Validation-metric callback: called with the model after each epoch's validation loss; higher is better.
pub type ValidMetric<'a> = &'a mut dyn FnMut(&Reg4RecModel) -> Result<f64>;

/// Optional behaviour of [`pretrain_with`].
#[derive(Default)]
pub struct PretrainOptions<'a> {
    /// A validation metric (e.g. NDCG@10 on the validation split through reg4rec-infer). When given, it
    /// decides early stopping and the best checkpoint instead of the validation loss.
    pub valid_metric: Option<ValidMetric<'a>>,
    /// Stop after this many optimizer steps in total, leaving a resumable checkpoint (time-boxed runs; tests
    /// use it to simulate a killed run).
    pub stop_after_steps: Option<u64>,
    /// Train as one rank of a data-parallel group (see the module docs). `None`: a single process.
    pub data_parallel: Option<DataParallel<'a>>,
}

/// What a pre-training run did.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    pub run_dir: PathBuf,
    /// Optimizer steps done in total (including before a resume).
    pub steps: u64,
    /// Epochs completed.
    pub epochs: usize,
    /// Early stopping fired.
    pub stopped_early: bool,
    /// Stopped by `stop_after_steps` (the run can be resumed).
    pub interrupted: bool,
    pub best_epoch: Option<usize>,
    pub best_valid_loss: Option<f64>,
    pub best_valid_metric: Option<f64>,
    pub last_valid_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
    /// Target items (non-padding positions) trained per second by this process, or by all ranks when
    /// data-parallel (batch waits included; validation and checkpoint writes excluded).
    pub targets_per_s: f64,
    /// Target items trained per epoch.
    pub targets_per_epoch: u64,
    pub train_seconds: f64,
    /// Seconds of the per-epoch validation (loss and metric).
    pub valid_seconds: f64,
    pub n_parameters: i64,
}

/// Pre-trains a model on `ds` with the leave-one-out `split` and item `codes`, writing the run to `run_dir`.
/// With `resume`, continues from the run's latest checkpoint (the configs must equal the run's `config.json`).
pub fn pretrain(
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    run_dir: &Path,
    resume: bool,
) -> Result<PretrainReport> {
    pretrain_with(
        ds,
        split,
        codes,
        model_cfg,
        train_cfg,
        run_dir,
        resume,
        PretrainOptions::default(),
    )
}

/// Puts `model` under precision `mode` for a training run that is about to run optimizer step `step` (0 for a
/// fresh run) and returns the [`Ladq`] controller the trainer calls around each step (`begin_step` before the
/// forward pass, `end_step` after `backward`). `bf16`: every linear layer and attention in bf16; `ladq`: every
/// LADQ projection fp32 until the first sampling, or the last assignment in `run_dir/<ladq.history_file>` before
/// `step` when resuming (later history lines are dropped); `fp32`: everything f32. Shared by pre-training and
/// alignment so that both honour `--precision` the same way.
pub fn precision_controller(
    model: &mut Reg4RecModel,
    mode: PrecisionMode,
    ladq: &LadqConfig,
    run_dir: Option<&Path>,
    step: u64,
) -> Result<Ladq> {
    model.set_bf16(mode == PrecisionMode::Bf16);
    Ok(Ladq::resume(
        mode,
        ladq,
        model.ladq_layers(),
        run_dir,
        step,
    )?)
}

/// Validation loss over every split user (history = training part, target = validation item), in eval mode.
/// Returns `(total, token, category)` means over users.
pub fn validation_loss(
    model: &Reg4RecModel,
    split: &LeaveOneOut,
    builder: &SeqBatchBuilder<'_>,
    weights: Objective,
    batch_size: usize,
) -> Result<(f64, f64, f64)> {
    let users: Vec<usize> = (0..split.n_users()).collect();
    let (sums, n) = validation_sums(model, split, builder, weights, batch_size, &users)?;
    let n = n.max(1) as f64;
    Ok((sums[0] / n, sums[1] / n, sums[2] / n))
}

/// Sums over `users` of the validation `(total, token, category)` losses, and the number of users.
fn validation_sums(
    model: &Reg4RecModel,
    split: &LeaveOneOut,
    builder: &SeqBatchBuilder<'_>,
    weights: Objective,
    batch_size: usize,
    users: &[usize],
) -> Result<([f64; 3], usize)> {
    let device = model.device();
    let l = model.config().history_len;
    let mut sums = [0.0f64; 3];
    let mut n = 0usize;
    for chunk in users.chunks(batch_size) {
        let histories: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&u| split.history(u, Stage::Valid, l))
            .collect();
        let pairs: Vec<(&[u32], u32)> = chunk
            .iter()
            .zip(&histories)
            .map(|(&u, h)| (h.as_slice(), split.target(u, Stage::Valid)))
            .collect();
        let batch = builder.last(&pairs)?.to_device(device);
        let loss = tch::no_grad(|| sequence_loss(model, &batch, weights, false));
        let w = batch.n_targets as f64;
        sums[0] += loss.total.double_value(&[]) * w;
        sums[1] += loss.token.double_value(&[]) * w;
        sums[2] += loss.category.double_value(&[]) * w;
        n += batch.n_targets;
    }
    Ok((sums, n))
}

/// The training sequences of `split` (users with at least one training item), oldest item first.
fn training_rows(split: &LeaveOneOut) -> Vec<&[u32]> {
    split
        .train
        .iter()
        .filter(|s| !s.is_empty())
        .map(Vec::as_slice)
        .collect()
}

/// Targets a row contributes under window `l`.
fn row_targets(row: &[u32], l: usize) -> usize {
    row.len().min(l)
}

/// [`pretrain`] with options (validation-metric callback, step limit, data parallelism).
#[allow(clippy::too_many_arguments)]
pub fn pretrain_with(
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    mut opts: PretrainOptions<'_>,
) -> Result<PretrainReport> {
    model_cfg.validate()?;
    train_cfg.validate()?;
    let dp = opts.data_parallel;
    let (rank, world) = dp.map_or((0, 1), |d| (d.rank(), d.world_size()));
    let main = rank == 0;
    if world > 1 && train_cfg.precision_mode() == PrecisionMode::Ladq {
        return Err(ModelError::config(
            "precision",
            "ladq is not supported data-parallel (each rank would choose its own precisions); use fp32 or bf16",
        ));
    }
    let vocab = Vocab::new(codes.m, codes.d);
    check_codes(&vocab, codes)?;
    if codes.n_items() != ds.n_items() {
        return Err(ModelError::Input(format!(
            "codes cover {} items but dataset `{}` has {}",
            codes.n_items(),
            ds.name,
            ds.n_items()
        )));
    }
    if ds.item_category.len() != ds.n_items() {
        return Err(ModelError::Input(format!(
            "dataset `{}`: {} item categories for {} items",
            ds.name,
            ds.item_category.len(),
            ds.n_items()
        )));
    }
    if model_cfg.mode == Mode::Tiger && !codes.ordered {
        return Err(ModelError::config(
            "mode",
            "tiger mode needs ordered (RQ-VAE) codes",
        ));
    }
    let device = train_cfg.device()?;
    let run = RunDir::new(run_dir);
    let run_cfg = RunConfig {
        format_version: FORMAT_VERSION,
        dataset: ds.name.clone(),
        model: model_cfg.clone(),
        train: train_cfg.clone(),
        vocab,
        n_categories: ds.n_categories(),
        n_items: ds.n_items(),
        codes_hash: codes_hash(codes),
    };
    // Only rank 0 reads and writes the run directory; the others receive its state below.
    let has_checkpoint = main && run.latest().exists();
    if has_checkpoint && !resume {
        return Err(ModelError::checkpoint(
            run.latest(),
            "the run directory already holds a checkpoint: resume it or choose a new directory",
        ));
    }
    if resume && has_checkpoint {
        let saved = run.read_config()?;
        if saved != run_cfg {
            return Err(ModelError::checkpoint(
                run.config(),
                "the run was started with another config, dataset or codes; resume needs the same ones",
            ));
        }
    } else if main {
        reg4rec_data::io::write_json_atomic(&run.config(), &run_cfg)?;
    }

    tch::manual_seed(train_cfg.seed as i64);
    let mut model = Reg4RecModel::new(model_cfg, codes, ds.n_categories(), device)?;
    let mut opt = AdamW::new(model.var_store(), train_cfg);
    let log = JsonlLog::new(run.metrics());
    let loaded = if main {
        run.load_latest(&mut model, &mut opt)?
    } else {
        None
    };
    let mut state = match loaded {
        Some(s) => {
            log.truncate_after(s.step)?;
            s
        }
        None => {
            if main && run.metrics().exists() {
                write_atomic(&run.metrics(), b"")?;
            }
            TrainState {
                format_version: FORMAT_VERSION,
                step: 0,
                epoch: 0,
                epoch_step: 0,
                best_criterion: None,
                best_epoch: None,
                bad_epochs: 0,
                finished: false,
                epoch_loss_sum: 0.0,
                epoch_examples: 0,
            }
        }
    };
    // Trainable parameters in name order (the optimizer's order): what data parallelism synchronises.
    let params: Vec<tch::Tensor> = opt.params().iter().map(|p| p.shallow_clone()).collect();
    if let Some(dp) = dp {
        // Every rank starts from rank 0's weights, moments and state (fresh or resumed).
        state = dp.broadcast_json(&state)?;
        opt.t = state.step;
        dp.broadcast_tensors(&params)?;
        let moments: Vec<tch::Tensor> = opt.state_tensors().into_iter().map(|(_, t)| t).collect();
        dp.broadcast_tensors(&moments)?;
    }
    let mut ladq = precision_controller(
        &mut model,
        train_cfg.precision_mode(),
        &train_cfg.ladq,
        main.then_some(run_dir),
        state.step,
    )?;

    let rows = training_rows(split);
    if rows.is_empty() {
        return Err(ModelError::Input(format!(
            "dataset `{}` has no training interactions",
            ds.name
        )));
    }
    let builder = SeqBatchBuilder {
        vocab,
        history_len: model_cfg.history_len,
        codes,
        item_category: &ds.item_category,
    };
    let weights = train_cfg.objective();
    let bs = train_cfg.batch_size;
    // The global batch: `bs` users per rank.
    let global_bs = bs * world;
    let steps_per_epoch = rows.len().div_ceil(global_bs) as u64;
    let total_steps = steps_per_epoch * train_cfg.epochs as u64;
    let targets_per_epoch: u64 = rows
        .iter()
        .map(|r| row_targets(r, model_cfg.history_len) as u64)
        .sum();

    let mut report = PretrainReport {
        run_dir: run_dir.to_path_buf(),
        steps: state.step,
        epochs: state.epoch,
        stopped_early: false,
        interrupted: false,
        best_epoch: state.best_epoch,
        best_valid_loss: None,
        best_valid_metric: None,
        last_valid_loss: None,
        last_train_loss: None,
        targets_per_s: 0.0,
        targets_per_epoch,
        train_seconds: 0.0,
        valid_seconds: 0.0,
        n_parameters: model.n_parameters(),
    };
    if let Ok(best) = reg4rec_data::io::read_json::<Best>(&run.best()) {
        report.best_valid_loss = Some(best.valid_loss);
        report.best_valid_metric = best.valid_metric;
    }
    let mut train_secs = 0.0f64;
    let mut valid_secs = 0.0f64;
    let mut train_targets = 0u64;

    let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    while !state.finished && state.epoch < train_cfg.epochs {
        let epoch = state.epoch;
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(train_cfg.seed.wrapping_add(epoch as u64));
        let batches = length_bucketed_batches(&lengths, global_bs, &mut rng)?;
        let first_batch = state.epoch_step;
        let pb = reg4rec_data::progress::bar(
            steps_per_epoch,
            &format!("epoch {}/{}", epoch + 1, train_cfg.epochs),
        );
        pb.set_position(first_batch);
        let t_epoch = Instant::now();
        let mut epoch_new_targets = 0u64;
        let mut interrupted = false;
        let mut checkpoint_secs = 0.0f64;

        let loop_result: Result<()> = std::thread::scope(|s| {
            // Each item: this rank's batch and its weight (its number of targets).
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(SeqBatch, f64)>>(2);
            let (batches, rows, builder) = (&batches, &rows, &builder);
            s.spawn(move || {
                for global in &batches[first_batch as usize..] {
                    let mut mine: Vec<&[u32]> = global
                        .iter()
                        .skip(rank)
                        .step_by(world)
                        .map(|&i| rows[i])
                        .collect();
                    // A rank left without users by the last global batch still takes part: one user with
                    // weight 0.
                    let empty = mine.is_empty();
                    if empty {
                        mine.push(rows[global[0]]);
                    }
                    let batch = builder.sequences(&mine).map(|b| {
                        let w = if empty { 0.0 } else { b.n_targets as f64 };
                        (b, w)
                    });
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            for item in rx.iter() {
                let (batch, weight) = item?;
                let batch = batch.to_device(device);
                tch::manual_seed(train_cfg.seed.wrapping_add(state.step) as i64);
                let lr = learning_rate(train_cfg, state.step, total_steps);
                // LADQ sampling step: the LADQ layers capture activations and output gradients.
                ladq.begin_step(state.step);
                let loss = sequence_loss(&model, &batch, weights, true);
                opt.zero_grad();
                loss.total.backward();
                // Sampled: K-FAC traces -> new precisions -> `ladq.jsonl` (the loss is a mean over the targets).
                ladq.end_step(state.step, batch.n_targets as f64)?;
                // Losses of the (global) batch: target-weighted means over the ranks.
                let mut parts = [
                    loss.total.double_value(&[]),
                    loss.token.double_value(&[]),
                    loss.category.double_value(&[]),
                    loss.item.double_value(&[]),
                ];
                let mut batch_targets = batch.n_targets as f64;
                if let Some(dp) = dp {
                    dp.average_gradients(&params, weight)?;
                    let mut v: Vec<f64> = parts.iter().map(|x| x * weight).collect();
                    v.push(weight);
                    let sums = dp.sum_f64(&v)?;
                    batch_targets = sums[4];
                    for (p, s) in parts.iter_mut().zip(&sums) {
                        *p = s / batch_targets.max(1.0);
                    }
                }
                let total = parts[0];
                let grad_norm = opt.clip_grad_norm(train_cfg.grad_clip);
                opt.step(lr);
                if !total.is_finite() {
                    return Err(ModelError::Input(format!(
                        "non-finite training loss at step {}",
                        state.step
                    )));
                }
                state.step += 1;
                state.epoch_step += 1;
                if let Some(dp) = dp {
                    if dp.check_replicas_every > 0 && state.step % dp.check_replicas_every == 0 {
                        dp.check_replicas(&params, state.step)?;
                    }
                }
                state.epoch_loss_sum += total * batch_targets;
                state.epoch_examples += batch_targets as u64;
                epoch_new_targets += batch_targets as u64;
                let secs = t_epoch.elapsed().as_secs_f64() - checkpoint_secs;
                let per_s = epoch_new_targets as f64 / secs.max(1e-9);
                pb.set_position(state.epoch_step);
                pb.set_message(format!(
                    "epoch {}/{} loss {total:.4} {per_s:.0} targets/s",
                    epoch + 1,
                    train_cfg.epochs
                ));
                if main && state.step % train_cfg.log_every == 0 {
                    log.append(&json!({
                        "kind": "step", "step": state.step, "epoch": epoch, "lr": lr, "loss": total,
                        "token_loss": parts[1], "category_loss": parts[2], "item_loss": parts[3],
                        "grad_norm": grad_norm, "targets_per_s": per_s,
                    }))?;
                }
                let stop = opts.stop_after_steps.is_some_and(|n| state.step >= n);
                if main
                    && (stop
                        || (train_cfg.checkpoint_every > 0
                            && state.step % train_cfg.checkpoint_every == 0))
                {
                    let t = Instant::now();
                    run.save_checkpoint(&model, &opt, &state)?;
                    checkpoint_secs += t.elapsed().as_secs_f64();
                }
                if stop {
                    interrupted = true;
                    break;
                }
            }
            drop(rx);
            Ok(())
        });
        let secs = t_epoch.elapsed().as_secs_f64() - checkpoint_secs;
        pb.finish_and_clear();
        loop_result?;
        train_secs += secs;
        train_targets += epoch_new_targets;
        report.steps = state.step;
        if interrupted {
            report.interrupted = true;
            break;
        }

        // End of epoch: validation, best weights, early stopping, checkpoint.
        let t_valid = Instant::now();
        let train_loss = state.epoch_loss_sum / state.epoch_examples.max(1) as f64;
        let (valid_loss, valid_token, valid_cat) = match dp {
            None => validation_loss(&model, split, &builder, weights, train_cfg.valid_batch_size)?,
            Some(dp) => {
                // Each rank a strided shard of the users; sums over the ranks.
                let users: Vec<usize> = (rank..split.n_users()).step_by(world).collect();
                let (sums, n) = validation_sums(
                    &model,
                    split,
                    &builder,
                    weights,
                    train_cfg.valid_batch_size,
                    &users,
                )?;
                let t = dp.sum_f64(&[sums[0], sums[1], sums[2], n as f64])?;
                let n = t[3].max(1.0);
                (t[0] / n, t[1] / n, t[2] / n)
            }
        };
        let mut valid_metric = match opts.valid_metric.as_mut() {
            Some(f) => Some(f(&model).map_err(|e| ModelError::Callback(e.to_string()))?),
            None => None,
        };
        if let Some(dp) = dp {
            // Every rank decides early stopping on rank 0's value.
            valid_metric = dp.broadcast_json(&valid_metric)?;
        }
        valid_secs += t_valid.elapsed().as_secs_f64();
        let criterion = valid_metric.map_or(valid_loss, |m| -m);
        let improved = state.best_criterion.is_none_or(|b| criterion < b);
        if improved {
            state.best_criterion = Some(criterion);
            state.best_epoch = Some(epoch);
            state.bad_epochs = 0;
            if main {
                run.save_best(
                    &model,
                    &Best {
                        weights: RunDir::best_weights_name(state.step),
                        step: state.step,
                        epoch,
                        valid_loss,
                        valid_metric,
                    },
                )?;
            }
            report.best_valid_loss = Some(valid_loss);
            report.best_valid_metric = valid_metric;
        } else {
            state.bad_epochs += 1;
        }
        let stop_early = train_cfg.patience > 0 && state.bad_epochs >= train_cfg.patience;
        if main {
            log.append(&json!({
                "kind": "epoch", "step": state.step, "epoch": epoch, "train_loss": train_loss,
                "valid_loss": valid_loss, "valid_token_loss": valid_token, "valid_category_loss": valid_cat,
                "valid_metric": valid_metric, "best": improved,
                "targets_per_s": epoch_new_targets as f64 / secs.max(1e-9),
                "train_seconds": secs, "valid_seconds": t_valid.elapsed().as_secs_f64(),
            }))?;
        }
        state.epoch += 1;
        state.epoch_step = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_examples = 0;
        state.finished = stop_early || state.epoch >= train_cfg.epochs;
        if main {
            run.save_checkpoint(&model, &opt, &state)?;
        }
        report.epochs = state.epoch;
        report.best_epoch = state.best_epoch;
        report.last_valid_loss = Some(valid_loss);
        report.last_train_loss = Some(train_loss);
        report.stopped_early = stop_early;
    }
    report.train_seconds = train_secs;
    report.valid_seconds = valid_secs;
    report.targets_per_s = train_targets as f64 / train_secs.max(1e-9);
    Ok(report)
}
