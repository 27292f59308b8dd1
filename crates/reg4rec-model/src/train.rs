//! Pre-training through the training engine ([`reg4rec_train::fit`]): the CRSS objective on batches of users,
//! the validation loss (and an optional validation-metric callback) every epoch, early stopping, the best
//! weights kept, and checkpoints from which a killed run resumes to exactly the weights an uninterrupted run
//! reaches. The engine owns the loop, AdamW, the schedule, checkpoints and data parallelism; this module says
//! what a row, a batch, the loss and the validation are.
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
use crate::checkpoint::{codes_hash, RunConfig};
use crate::config::{Mode, ModelConfig, TrainConfig};
use crate::crss::{sequence_loss, Objective};
use crate::decoding::Vocab;
use crate::error::{ModelError, Result};
use crate::model::Reg4RecModel;
use reg4rec_data::split::{LeaveOneOut, Stage};
use reg4rec_data::Dataset;
use reg4rec_precision::{Ladq, LadqConfig, PrecisionMode};
use reg4rec_tokenizer::Codes;
use reg4rec_train::checkpoint::FORMAT_VERSION;
use reg4rec_train::{
    fit, Batches, DataParallel, Fit, LearnerConfig, RunDir, StepLoss, StopReason, TrainError,
    Validation, Validator,
};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Validation-metric callback: called with the model after each epoch's validation loss; higher is better.
pub type ValidMetric<'a> = &'a mut dyn FnMut(&Reg4RecModel) -> Result<f64>;

/// Optional behaviour of [`pretrain`] (`Default::default()`: none of it).
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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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

/// Puts `model` under precision `mode` for a training run in `run_dir` (`None` on ranks other than 0, which do
/// not read it) and returns the [`Ladq`] controller the trainer calls around each step (`begin_step` before the
/// forward pass, `end_step` after `backward`). `bf16`: every linear layer and attention in bf16; `ladq`: every
/// LADQ projection fp32 until the first sampling, or, when `resume`-ing, the last assignment in
/// `run_dir/<ladq.history_file>` before the step the run continues from (its latest checkpoint; later history
/// lines are dropped); `fp32`: everything f32. Shared by pre-training and alignment so that both honour
/// `--precision` the same way.
pub fn precision_controller(
    model: &mut Reg4RecModel,
    mode: PrecisionMode,
    ladq: &LadqConfig,
    run_dir: Option<&Path>,
    resume: bool,
) -> Result<Ladq> {
    let step = match run_dir {
        Some(dir) if resume => RunDir::new(dir).latest_step()?.unwrap_or(0),
        _ => 0,
    };
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

/// The training rows of pre-training: the users' training sequences (users with at least one training item),
/// oldest item first; each trains its last `history_len` positions.
struct UserRows<'a> {
    rows: Vec<&'a [u32]>,
    builder: SeqBatchBuilder<'a>,
}

impl Batches for UserRows<'_> {
    type Batch = SeqBatch;

    fn n_rows(&self) -> usize {
        self.rows.len()
    }

    fn row_len(&self, i: usize) -> usize {
        self.rows[i].len()
    }

    fn row_targets(&self, i: usize) -> usize {
        self.rows[i].len().min(self.builder.history_len)
    }

    fn build(&self, rows: &[usize]) -> reg4rec_train::Result<(SeqBatch, usize)> {
        let seqs: Vec<&[u32]> = rows.iter().map(|&i| self.rows[i]).collect();
        let batch = self.builder.sequences(&seqs).map_err(TrainError::task)?;
        let n = batch.n_targets;
        Ok((batch, n))
    }
}

/// The CRSS objective of a batch of users, with the LADQ controller around each step.
struct CrssObjective<'a> {
    model: &'a Reg4RecModel,
    weights: Objective,
    ladq: Ladq,
}

impl reg4rec_train::Objective<SeqBatch> for CrssObjective<'_> {
    fn loss(
        &mut self,
        batch: &SeqBatch,
        step: u64,
        _update: usize,
    ) -> reg4rec_train::Result<StepLoss> {
        let batch = batch.to_device(self.model.device());
        // LADQ sampling step: the LADQ layers capture activations and output gradients.
        self.ladq.begin_step(step);
        let loss = sequence_loss(self.model, &batch, self.weights, true);
        Ok(StepLoss {
            total: loss.total,
            parts: vec![
                ("token_loss", loss.token.double_value(&[])),
                ("category_loss", loss.category.double_value(&[])),
                ("item_loss", loss.item.double_value(&[])),
                ("path_loss", loss.path.double_value(&[])),
                ("distill_loss", loss.distill.double_value(&[])),
            ],
        })
    }

    fn after_backward(
        &mut self,
        step: u64,
        _update: usize,
        targets: f64,
    ) -> reg4rec_train::Result<()> {
        // Sampled: K-FAC traces -> new precisions -> `ladq.jsonl` (the loss is a mean over the targets).
        self.ladq
            .end_step(step, targets)
            .map(|_| ())
            .map_err(TrainError::task)
    }
}

/// The validation loss on every user (each rank a strided shard of them when data-parallel, summed over the
/// ranks) and the optional metric (computed by every rank; rank 0's value decides).
struct CrssValidator<'a, 'm> {
    model: &'a Reg4RecModel,
    split: &'a LeaveOneOut,
    builder: SeqBatchBuilder<'a>,
    weights: Objective,
    batch_size: usize,
    metric: Option<ValidMetric<'m>>,
    dp: Option<DataParallel<'a>>,
}

impl CrssValidator<'_, '_> {
    fn run(&mut self) -> Result<Validation> {
        let (loss, token, category) = match self.dp {
            None => validation_loss(
                self.model,
                self.split,
                &self.builder,
                self.weights,
                self.batch_size,
            )?,
            Some(dp) => {
                let users: Vec<usize> = (dp.rank()..self.split.n_users())
                    .step_by(dp.world_size())
                    .collect();
                let (sums, n) = validation_sums(
                    self.model,
                    self.split,
                    &self.builder,
                    self.weights,
                    self.batch_size,
                    &users,
                )?;
                let t = dp.sum_f64(&[sums[0], sums[1], sums[2], n as f64])?;
                let n = t[3].max(1.0);
                (t[0] / n, t[1] / n, t[2] / n)
            }
        };
        let mut metric = match self.metric.as_mut() {
            Some(f) => Some(f(self.model).map_err(|e| ModelError::Callback(e.to_string()))?),
            None => None,
        };
        if let Some(dp) = self.dp {
            // Every rank decides early stopping on rank 0's value.
            metric = dp.broadcast_json(&metric)?;
        }
        let mut record = serde_json::Map::new();
        record.insert("valid_token_loss".into(), json!(token));
        record.insert("valid_category_loss".into(), json!(category));
        Ok(Validation {
            criterion: metric.map_or(loss, |m| -m),
            loss: Some(loss),
            metric,
            record,
        })
    }
}

impl Validator for CrssValidator<'_, '_> {
    fn validate(&mut self) -> reg4rec_train::Result<Validation> {
        self.run().map_err(TrainError::task)
    }
}

/// The engine's settings of a pre-training run.
fn learner_config(cfg: &TrainConfig) -> LearnerConfig {
    LearnerConfig {
        seed: cfg.seed,
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        lr: cfg.lr_schedule(),
        adamw: cfg.adamw(),
        grad_clip: cfg.grad_clip,
        patience: cfg.patience,
        validate_every: 1,
        checkpoint_every: cfg.checkpoint_every,
        log_every: cfg.log_every,
        time_budget_s: 0.0,
        validate_at_start: false,
        updates_per_batch: 1,
        label: "epoch".into(),
    }
}

/// Pre-trains a model on `ds` with the leave-one-out `split` and item `codes`, writing the run to `run_dir`.
/// With `resume`, continues from the run's latest checkpoint (the configs must equal the run's `config.json`).
/// `opts`: a validation metric, a step limit, data parallelism (`Default::default()` for none).
#[allow(clippy::too_many_arguments)]
pub fn pretrain(
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    model_cfg: &ModelConfig,
    train_cfg: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    opts: PretrainOptions<'_>,
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
    // Only rank 0 reads and writes the run directory; the others receive its state from the engine.
    if main && resume && run.latest().exists() {
        let saved = RunConfig::read(&run)?;
        if saved != run_cfg {
            return Err(ModelError::checkpoint(
                run.config(),
                "the run was started with another config, dataset or codes; resume needs the same ones",
            ));
        }
    } else if main && !run.latest().exists() {
        reg4rec_data::io::write_json_atomic(&run.config(), &run_cfg)?;
    }

    tch::manual_seed(train_cfg.seed as i64);
    let mut model = Reg4RecModel::new(model_cfg, codes, ds.n_categories(), device)?;
    let learner = learner_config(train_cfg);
    let ladq = precision_controller(
        &mut model,
        train_cfg.precision_mode(),
        &train_cfg.ladq,
        main.then_some(run_dir),
        resume,
    )?;
    let rows: Vec<&[u32]> = split
        .train
        .iter()
        .filter(|s| !s.is_empty())
        .map(Vec::as_slice)
        .collect();
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
    let source = UserRows { rows, builder };
    let mut objective = CrssObjective {
        model: &model,
        weights,
        ladq,
    };
    let mut validator = CrssValidator {
        model: &model,
        split,
        builder,
        weights,
        batch_size: train_cfg.valid_batch_size,
        metric: opts.valid_metric,
        dp,
    };
    let fit_run = Fit {
        cfg: &learner,
        run,
        vs: model.var_store(),
        resume,
        stop_after_steps: opts.stop_after_steps,
        data_parallel: dp,
    };
    let r = fit(fit_run, &source, &mut objective, &mut validator)?;
    Ok(PretrainReport {
        run_dir: run_dir.to_path_buf(),
        steps: r.steps,
        epochs: r.epochs,
        stopped_early: r.stop == StopReason::EarlyStopping,
        interrupted: r.stop == StopReason::StepLimit,
        best_epoch: r.best_epoch,
        best_valid_loss: r.best.as_ref().and_then(|b| b.valid_loss),
        best_valid_metric: r.best.as_ref().and_then(|b| b.valid_metric),
        last_valid_loss: r.last_valid_loss,
        last_train_loss: r.last_train_loss,
        targets_per_s: r.targets_per_s,
        targets_per_epoch: r.targets_per_epoch,
        train_seconds: r.train_seconds,
        valid_seconds: r.valid_seconds,
        n_parameters: model.n_parameters(),
    })
}
