//! The training loop every trainer runs ([`fit`]): epochs of seeded, length-bucketed batches built on a
//! background thread, the learning-rate schedule, AdamW with global-norm clipping, step records in
//! `metrics.jsonl`, a progress bar, validation every `validate_every` epochs, the best weights kept, early
//! stopping, a time budget, checkpoints ([`crate::checkpoint`]) and exact resume, and data-parallel steps.
//!
//! A model plugs in three things: a [`Batches`] source (what a row is, how rows become a batch, and, when an
//! epoch is not one pass over the rows, which rows each step takes), an [`Objective`] (the loss of a batch)
//! and a [`Validator`] (a criterion on held-out data, lower is better). `metrics.jsonl` gets a
//! `{"kind": "step"}` record every `log_every` steps, a `{"kind": "valid"}` record per validation and an
//! `{"kind": "epoch"}` record per epoch.
//!
//! Determinism: epoch `e`'s batches come from a ChaCha8 generator seeded by `seed + e` (rows shuffled, sorted by
//! length within windows of batches so little of a batch is padding, batches shuffled:
//! [`reg4rec_data::batch::length_bucketed_batches`]); every optimizer step `s` first calls
//! `tch::manual_seed(seed + s)`, so dropout never depends on what ran before. A run killed at any point and
//! resumed from its latest checkpoint reaches the weights an uninterrupted run reaches (libtorch's generator is
//! process-global: no other seeded libtorch work may run concurrently in the process).
//!
//! Data-parallel (world size W): `batch_size` is per rank. Global batch `b` is the `W * batch_size` rows a single
//! process with that batch size would take, and rank `r` takes every W-th of them from the `r`-th; gradients
//! are averaged over the global batch (weighted by each rank's targets) before clipping and the update, so W
//! ranks with batch B follow a single process with batch W * B up to float rounding. Rank 0's parameters,
//! moments and state are broadcast at the start; only rank 0 reads and writes the run directory; the
//! validator must return the same criterion on every rank.

use crate::checkpoint::{Best, RunDir, StopReason, TrainState};
use crate::dist::DataParallel;
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, LrSchedule};
use rand::SeedableRng;
use reg4rec_data::batch::length_bucketed_batches;
use reg4rec_data::io::{write_atomic, JsonlLog};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::Instant;
use tch::{nn, Tensor};

/// The loop's settings (each trainer fills them from its own config).
#[derive(Debug, Clone, PartialEq)]
pub struct LearnerConfig {
    /// Seeds shuffling (`seed + epoch`) and dropout (`seed + step`).
    pub seed: u64,
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Rows per step (per rank when data-parallel).
    pub batch_size: usize,
    pub lr: LrSchedule,
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip: f64,
    /// Validations without improvement before stopping (0 = never stop early).
    pub patience: usize,
    /// Validate after every this many epochs (the last epoch and the one that exhausts the time budget are
    /// always validated).
    pub validate_every: usize,
    /// Also checkpoint every this many steps inside an epoch (0 = only at epoch ends).
    pub checkpoint_every: u64,
    /// Append a step record to `metrics.jsonl` every this many steps.
    pub log_every: u64,
    /// Stop after the epoch during which training and validation have taken this many seconds, over every
    /// resumed process (0 = no budget).
    pub time_budget_s: f64,
    /// Validate a fresh run before its first step (its weights are then the first candidate for the best).
    pub validate_at_start: bool,
    /// Optimizer updates per batch (each a new loss of the same batch: [`Objective::loss`]'s `update`). 1
    /// for plain training; PPO-style objectives take several.
    pub updates_per_batch: usize,
    /// Name in progress bars and messages.
    pub label: String,
}

impl LearnerConfig {
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("validate_every", self.validate_every),
            ("log_every", self.log_every as usize),
            ("updates_per_batch", self.updates_per_batch),
        ] {
            if v == 0 {
                return Err(TrainError::config(field, "must be >= 1"));
            }
        }
        if !(self.lr.lr.is_finite() && self.lr.lr > 0.0) {
            return Err(TrainError::config(
                "lr",
                format!("must be a positive number, got {}", self.lr.lr),
            ));
        }
        Ok(())
    }
}

/// The rows an epoch trains on and how they become batches. Batches are built on a background thread.
pub trait Batches: Sync {
    type Batch: Send;
    /// The number of rows.
    fn n_rows(&self) -> usize;
    /// The length of row `i` (rows of similar length share batches).
    fn row_len(&self, i: usize) -> usize;
    /// The targets (loss terms) row `i` contributes.
    fn row_targets(&self, i: usize) -> usize;
    /// The batch of `rows` and its number of targets.
    fn build(&self, rows: &[usize]) -> Result<(Self::Batch, usize)>;
    /// The global batches of epoch `epoch` (`global_bs` rows each, the last may be smaller; data-parallel
    /// ranks split every batch). Default: every row once, shuffled and bucketed by length with a ChaCha8
    /// generator seeded by `seed + epoch` ([`reg4rec_data::batch::length_bucketed_batches`]).
    fn epoch_batches(&self, epoch: usize, global_bs: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
        let lengths: Vec<usize> = (0..self.n_rows()).map(|i| self.row_len(i)).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64));
        Ok(length_bucketed_batches(&lengths, global_bs, &mut rng)?)
    }
    /// Optimizer steps (batches) in `epochs` epochs, for the learning-rate schedule. Default: every row once an
    /// epoch.
    fn total_steps(&self, epochs: usize, global_bs: usize) -> u64 {
        self.n_rows().div_ceil(global_bs) as u64 * epochs as u64
    }
}

/// The loss of one batch.
pub struct StepLoss {
    /// The loss to minimise: a mean over the batch's targets.
    pub total: Tensor,
    /// Named components logged with each step record (`token_loss`, `reward`, ...), means over the same
    /// targets (scalars; the last update's when there are several).
    pub parts: Vec<(&'static str, f64)>,
}

/// What a model minimises.
pub trait Objective<B> {
    /// The loss of `batch` at step `step` (0-based), update `update` of [`LearnerConfig::updates_per_batch`],
    /// in training mode.
    fn loss(&mut self, batch: &B, step: u64, update: usize) -> Result<StepLoss>;
    /// Called after the backward pass of each update with the batch's targets (LADQ reads its traces here).
    fn after_backward(&mut self, _step: u64, _update: usize, _targets: f64) -> Result<()> {
        Ok(())
    }
}

/// One validation.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// What early stopping and the best weights follow: lower is better (negate a metric).
    pub criterion: f64,
    /// The validation loss, when computed.
    pub loss: Option<f64>,
    /// The validation metric, when computed (higher is better).
    pub metric: Option<f64>,
    /// More fields for the epoch's record in `metrics.jsonl`.
    pub record: Map<String, Value>,
}

/// What a model is judged by between epochs.
pub trait Validator {
    fn validate(&mut self) -> Result<Validation>;
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Optimizer steps done in total (including before a resume).
    pub steps: u64,
    /// Epochs completed.
    pub epochs: usize,
    pub stop: StopReason,
    pub best_epoch: Option<usize>,
    /// `best.json` (the kept weights), once a validation ran.
    pub best: Option<Best>,
    pub last_valid_loss: Option<f64>,
    pub last_valid_metric: Option<f64>,
    pub last_train_loss: Option<f64>,
    /// Targets trained per second by this process, or by all ranks when data-parallel (batch waits
    /// included; validation and checkpoint writes excluded).
    pub targets_per_s: f64,
    /// Targets trained per epoch.
    pub targets_per_epoch: u64,
    /// Seconds of training steps and of validation in this process.
    pub train_seconds: f64,
    pub valid_seconds: f64,
    /// Seconds of training and validation over every resumed process (the time budget's clock).
    pub total_seconds: f64,
}

/// One training run: where it writes, what it trains, how it is distributed.
pub struct Fit<'a> {
    pub cfg: &'a LearnerConfig,
    pub run: RunDir,
    /// The model's variables (AdamW's parameters; what checkpoints hold).
    pub vs: &'a nn::VarStore,
    /// Continue from the run's latest checkpoint; without it a run directory that holds one is an error.
    pub resume: bool,
    /// Stop after this many optimizer steps in total, leaving a resumable checkpoint (time-boxed runs; tests
    /// use it to simulate a killed run).
    pub stop_after_steps: Option<u64>,
    pub data_parallel: Option<DataParallel<'a>>,
}

/// Trains: see the module doc. The run goes through named phases: [`Session::start`] (a fresh or resumed
/// state, shared with every rank), an optional validation of the starting weights, then per epoch
/// [`Session::train_epoch`] (the batches, each an optimizer [`Session::step`]) and [`Session::end_epoch`]
/// (validation through the one best-keeping path, [`Session::validate`], early stopping, the time budget and
/// the checkpoint).
pub fn fit<S: Batches>(
    f: Fit<'_>,
    source: &S,
    objective: &mut dyn Objective<S::Batch>,
    validator: &mut dyn Validator,
) -> Result<FitReport> {
    f.cfg.validate()?;
    let mut session = Session::start(f, source)?;
    let state = &session.state;
    if session.cfg.validate_at_start && state.step == 0 && state.best_criterion.is_none() {
        session.validate(validator, 0)?;
        if session.main {
            session
                .run
                .save_checkpoint(session.vs, &session.opt, &session.state)?;
        }
    }
    while !session.state.finished && session.state.epoch < session.cfg.epochs {
        let trained = session.train_epoch(source, objective)?;
        if trained.interrupted {
            session.report.stop = StopReason::StepLimit;
            break;
        }
        session.end_epoch(validator, &trained)?;
    }
    Ok(session.finish())
}

/// A run in progress: the settings, the run directory, the optimizer, the state checkpoints hold and the
/// report being filled.
struct Session<'a> {
    cfg: &'a LearnerConfig,
    run: RunDir,
    vs: &'a nn::VarStore,
    stop_after_steps: Option<u64>,
    dp: Option<DataParallel<'a>>,
    rank: usize,
    world: usize,
    /// Rank 0: the only one that reads and writes the run directory.
    main: bool,
    opt: AdamW,
    log: JsonlLog,
    state: TrainState,
    /// Trainable parameters in name order (the optimizer's order): what data parallelism synchronises.
    params: Vec<Tensor>,
    global_bs: usize,
    total_steps: u64,
    report: FitReport,
    train_secs: f64,
    valid_secs: f64,
    train_targets: u64,
}

/// What one epoch's batches did.
struct EpochTrained {
    /// Seconds of training steps (checkpoint writes excluded).
    secs: f64,
    /// Targets trained in this process's part of the epoch (all ranks' when data-parallel).
    new_targets: u64,
    /// Stopped by [`Fit::stop_after_steps`].
    interrupted: bool,
}

/// What one optimizer step did.
struct StepDone {
    lr: f64,
    /// The loss, then the objective's named parts (the global batch's when data-parallel).
    values: Vec<f64>,
    names: Vec<&'static str>,
    grad_norm: f64,
    /// Targets of the global batch.
    targets: f64,
}

impl<'a> Session<'a> {
    /// A fresh run, or the run directory's latest checkpoint when resuming; every rank gets rank 0's weights,
    /// moments and state.
    fn start<S: Batches>(f: Fit<'a>, source: &S) -> Result<Self> {
        let cfg = f.cfg;
        let dp = f.data_parallel;
        let (rank, world) = dp.map_or((0, 1), |d| (d.rank(), d.world_size()));
        let main = rank == 0;
        let run = f.run;
        // Only rank 0 reads and writes the run directory; the others receive its state below.
        if main && run.latest().exists() && !f.resume {
            return Err(TrainError::checkpoint(
                run.latest(),
                "the run directory already holds a checkpoint: resume it or choose a new directory",
            ));
        }
        let n_rows = source.n_rows();
        if n_rows == 0 {
            return Err(TrainError::Input(format!(
                "{}: no training rows",
                cfg.label
            )));
        }
        let mut opt = AdamW::new(f.vs, cfg.adamw);
        let log = JsonlLog::new(run.metrics());
        let loaded = if main {
            run.load_latest(f.vs, &mut opt)?
        } else {
            None
        };
        let mut state = match loaded {
            Some(s) => {
                log.truncate_after(s.step)?;
                continued(s, cfg)
            }
            None => {
                if main && run.metrics().exists() {
                    write_atomic(&run.metrics(), b"")?;
                }
                TrainState::fresh()
            }
        };
        // AdamW counts updates; checkpoints count batches.
        opt.t = state.step * cfg.updates_per_batch as u64;
        let params: Vec<Tensor> = opt.params().iter().map(|p| p.shallow_clone()).collect();
        if let Some(dp) = dp {
            // Every rank starts from rank 0's weights, moments and state (fresh or resumed).
            state = dp.broadcast_json(&state)?;
            opt.t = state.step * cfg.updates_per_batch as u64;
            dp.broadcast_tensors(&params)?;
            let moments: Vec<Tensor> = opt.state_tensors().into_iter().map(|(_, t)| t).collect();
            dp.broadcast_tensors(&moments)?;
        }
        let global_bs = cfg.batch_size * world;
        let report = FitReport {
            steps: state.step,
            epochs: state.epoch,
            stop: state.stop.unwrap_or(StopReason::MaxEpochs),
            best_epoch: state.best_epoch,
            best: if main {
                reg4rec_data::io::read_json::<Best>(&run.best()).ok()
            } else {
                None
            },
            last_valid_loss: None,
            last_valid_metric: None,
            last_train_loss: None,
            targets_per_s: 0.0,
            targets_per_epoch: (0..n_rows).map(|i| source.row_targets(i) as u64).sum(),
            train_seconds: 0.0,
            valid_seconds: 0.0,
            total_seconds: 0.0,
        };
        Ok(Session {
            cfg,
            vs: f.vs,
            stop_after_steps: f.stop_after_steps,
            dp,
            rank,
            world,
            main,
            opt,
            log,
            state,
            params,
            global_bs,
            total_steps: source.total_steps(cfg.epochs, global_bs),
            report,
            train_secs: 0.0,
            valid_secs: 0.0,
            train_targets: 0,
            run,
        })
    }

    /// The batches of the current epoch from where the state stands: built on a background thread, each an
    /// optimizer [`Self::step`], logged every `log_every` steps and checkpointed every `checkpoint_every`.
    fn train_epoch<S: Batches>(
        &mut self,
        source: &S,
        objective: &mut dyn Objective<S::Batch>,
    ) -> Result<EpochTrained> {
        let cfg = self.cfg;
        let epoch = self.state.epoch;
        let batches = source.epoch_batches(epoch, self.global_bs, cfg.seed)?;
        let first_batch = self.state.epoch_step;
        let pb = reg4rec_data::progress::bar(
            batches.len() as u64,
            &format!("{} {}/{}", cfg.label, epoch + 1, cfg.epochs),
        );
        pb.set_position(first_batch);
        let t_epoch = Instant::now();
        let (mut new_targets, mut interrupted, mut checkpoint_secs) = (0u64, false, 0.0f64);
        let (rank, world) = (self.rank, self.world);
        let loop_result: Result<()> = std::thread::scope(|s| {
            // Each item: this rank's batch and its weight (its number of targets).
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(S::Batch, f64)>>(2);
            let batches = &batches;
            s.spawn(move || {
                for global in &batches[first_batch as usize..] {
                    let mut mine: Vec<usize> =
                        global.iter().skip(rank).step_by(world).copied().collect();
                    // A rank left without rows by the last global batch still takes part: one row with weight 0.
                    let empty = mine.is_empty();
                    if empty {
                        mine.push(global[0]);
                    }
                    let batch = source
                        .build(&mine)
                        .map(|(b, n)| (b, if empty { 0.0 } else { n as f64 }));
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            for item in rx.iter() {
                let (batch, weight) = item?;
                let done = self.step(objective, &batch, weight)?;
                let total = done.values[0];
                self.state.step += 1;
                self.state.epoch_step += 1;
                if let Some(dp) = self.dp {
                    if dp.check_replicas_every > 0
                        && self.state.step.is_multiple_of(dp.check_replicas_every)
                    {
                        dp.check_replicas(&self.params, self.state.step)?;
                    }
                }
                self.state.epoch_loss_sum += total * done.targets;
                self.state.epoch_examples += done.targets as u64;
                new_targets += done.targets as u64;
                let secs = t_epoch.elapsed().as_secs_f64() - checkpoint_secs;
                let per_s = new_targets as f64 / secs.max(1e-9);
                pb.set_position(self.state.epoch_step);
                pb.set_message(format!(
                    "{} {}/{} loss {total:.4} {per_s:.0} targets/s",
                    cfg.label,
                    epoch + 1,
                    cfg.epochs
                ));
                if self.main && self.state.step.is_multiple_of(cfg.log_every) {
                    let mut rec = json!({
                        "kind": "step", "step": self.state.step, "epoch": epoch, "lr": done.lr,
                        "loss": total, "grad_norm": done.grad_norm, "targets_per_s": per_s,
                    });
                    for (name, v) in done.names.iter().zip(&done.values[1..]) {
                        rec[*name] = json!(v);
                    }
                    self.log.append(&rec)?;
                }
                let stop = self.stop_after_steps.is_some_and(|n| self.state.step >= n);
                let periodic = cfg.checkpoint_every > 0
                    && self.state.step.is_multiple_of(cfg.checkpoint_every);
                if self.main && (stop || periodic) {
                    let t = Instant::now();
                    self.run.save_checkpoint(self.vs, &self.opt, &self.state)?;
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
        self.train_secs += secs;
        self.train_targets += new_targets;
        self.state.seconds += secs;
        self.report.steps = self.state.step;
        Ok(EpochTrained {
            secs,
            new_targets,
            interrupted,
        })
    }

    /// One optimizer step on `batch` (`weight`: its targets): `updates_per_batch` updates, each a loss, a
    /// backward pass, gradients averaged over the ranks, clipping and AdamW. Dropout is seeded by the step.
    fn step<B>(
        &mut self,
        objective: &mut dyn Objective<B>,
        batch: &B,
        weight: f64,
    ) -> Result<StepDone> {
        let cfg = self.cfg;
        let step = self.state.step;
        tch::manual_seed(cfg.seed.wrapping_add(step) as i64);
        let lr = cfg.lr.at(step, self.total_steps);
        let mut done = StepDone {
            lr,
            values: Vec::new(),
            names: Vec::new(),
            grad_norm: 0.0,
            targets: weight,
        };
        for update in 0..cfg.updates_per_batch {
            let loss = objective.loss(batch, step, update)?;
            self.opt.zero_grad();
            loss.total.backward();
            objective.after_backward(step, update, weight)?;
            // Losses of the (global) batch: target-weighted means over the ranks.
            done.values = std::iter::once(loss.total.double_value(&[]))
                .chain(loss.parts.iter().map(|(_, v)| *v))
                .collect();
            done.names = loss.parts.iter().map(|(n, _)| *n).collect();
            if let Some(dp) = self.dp {
                dp.average_gradients(&self.params, weight)?;
                let mut v: Vec<f64> = done.values.iter().map(|x| x * weight).collect();
                v.push(weight);
                let sums = dp.sum_f64(&v)?;
                done.targets = sums[done.values.len()];
                for (p, s) in done.values.iter_mut().zip(&sums) {
                    *p = s / done.targets.max(1.0);
                }
            }
            if !done.values[0].is_finite() {
                return Err(TrainError::Input(format!(
                    "{}: the training loss became {} at step {step}; lower the learning rate",
                    cfg.label, done.values[0]
                )));
            }
            done.grad_norm = self.opt.clip_grad_norm(cfg.grad_clip);
            self.opt.step(lr);
        }
        Ok(done)
    }

    /// Validates the current weights after `epoch` (0 with the starting weights) and keeps them as the best
    /// when the criterion improved: the one best-keeping path. Logs the validation record; returns the
    /// validation, whether it improved and its seconds.
    fn validate(
        &mut self,
        validator: &mut dyn Validator,
        epoch: usize,
    ) -> Result<(Validation, bool, f64)> {
        let t = Instant::now();
        let v = validator.validate()?;
        let secs = t.elapsed().as_secs_f64();
        self.valid_secs += secs;
        self.state.seconds += secs;
        let improved = self.state.best_criterion.is_none_or(|b| v.criterion < b);
        if improved {
            self.state.best_criterion = Some(v.criterion);
            self.state.best_epoch = Some(epoch);
            self.state.bad_epochs = 0;
            let best = Best {
                weights: RunDir::best_weights_name(self.state.step),
                step: self.state.step,
                epoch,
                valid_loss: v.loss,
                valid_metric: v.metric,
            };
            if self.main {
                self.run.save_best(self.vs, &best)?;
            }
            self.report.best = Some(best);
            self.report.best_epoch = Some(epoch);
        } else {
            self.state.bad_epochs += 1;
        }
        if self.main {
            let rec = valid_record(self.state.step, epoch, &v, improved, secs);
            self.log.append(&rec)?;
        }
        self.report.last_valid_loss = v.loss;
        self.report.last_valid_metric = v.metric;
        Ok((v, improved, secs))
    }

    /// The end of an epoch: validation when due, early stopping, the time budget, the epoch record and the
    /// checkpoint.
    fn end_epoch(&mut self, validator: &mut dyn Validator, trained: &EpochTrained) -> Result<()> {
        let cfg = self.cfg;
        let epoch = self.state.epoch;
        let train_loss = self.state.epoch_loss_sum / self.state.epoch_examples.max(1) as f64;
        let last_epoch = epoch + 1 >= cfg.epochs;
        let out_of_time = cfg.time_budget_s > 0.0 && self.state.seconds >= cfg.time_budget_s;
        let validate_now =
            (epoch + 1).is_multiple_of(cfg.validate_every) || last_epoch || out_of_time;
        let mut record = json!({
            "kind": "epoch", "step": self.state.step, "epoch": epoch, "train_loss": train_loss,
            "lr": cfg.lr.at(self.state.step.saturating_sub(1), self.total_steps),
            "targets_per_s": trained.new_targets as f64 / trained.secs.max(1e-9),
            "train_seconds": trained.secs,
        });
        let mut stop_early = false;
        if validate_now {
            let (v, improved, secs) = self.validate(validator, epoch)?;
            stop_early = cfg.patience > 0 && self.state.bad_epochs >= cfg.patience;
            record["valid_loss"] = json!(v.loss);
            record["valid_metric"] = json!(v.metric);
            for (k, x) in &v.record {
                record[k.as_str()] = x.clone();
            }
            record["best"] = json!(improved);
            record["valid_seconds"] = json!(secs);
        }
        if self.main {
            self.log.append(&record)?;
        }
        let state = &mut self.state;
        state.epoch += 1;
        state.epoch_step = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_examples = 0;
        self.report.stop = if stop_early {
            StopReason::EarlyStopping
        } else if out_of_time && !last_epoch {
            StopReason::TimeBudget
        } else {
            StopReason::MaxEpochs
        };
        state.finished = stop_early || out_of_time || state.epoch >= cfg.epochs;
        if state.finished {
            state.stop = Some(self.report.stop);
        }
        if self.main {
            self.run.save_checkpoint(self.vs, &self.opt, &self.state)?;
        }
        self.report.epochs = self.state.epoch;
        self.report.best_epoch = self.state.best_epoch;
        self.report.last_train_loss = Some(train_loss);
        Ok(())
    }

    /// The report with this process's times.
    fn finish(mut self) -> FitReport {
        self.report.train_seconds = self.train_secs;
        self.report.valid_seconds = self.valid_secs;
        self.report.targets_per_s = self.train_targets as f64 / self.train_secs.max(1e-9);
        self.report.total_seconds = self.state.seconds;
        self.report
    }
}

/// A resumed state: a run that ended on a budget continues when the budget asked for now is larger (more
/// epochs, more time, or more patience than the validations it has gone without improving).
fn continued(mut s: TrainState, cfg: &LearnerConfig) -> TrainState {
    let more = match s.stop {
        Some(StopReason::MaxEpochs) => s.epoch < cfg.epochs,
        Some(StopReason::TimeBudget) => cfg.time_budget_s <= 0.0 || s.seconds < cfg.time_budget_s,
        Some(StopReason::EarlyStopping) => cfg.patience == 0 || s.bad_epochs < cfg.patience,
        _ => false,
    };
    if more && s.epoch < cfg.epochs {
        s.finished = false;
        s.stop = None;
    }
    s
}

/// The `{"kind": "valid", ...}` record of a validation after step `step`.
fn valid_record(step: u64, epoch: usize, v: &Validation, best: bool, secs: f64) -> Value {
    let mut rec = json!({
        "kind": "valid", "step": step, "epoch": epoch, "criterion": v.criterion, "valid_loss": v.loss,
        "valid_metric": v.metric, "best": best, "valid_seconds": secs,
    });
    for (k, x) in &v.record {
        rec[k.as_str()] = x.clone();
    }
    rec
}
