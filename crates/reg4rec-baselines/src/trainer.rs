//! Training and scoring of [`SasRecModel`]: next-item full-softmax cross-entropy at every position of each user's
//! training sequence, trained through the workspace's training engine ([`reg4rec_train::fit`]: AdamW, the
//! learning-rate schedule, validation NDCG@10 every `eval_every` epochs with early stopping, a time budget,
//! checkpoints with checksums and exact resume), and batched full-ranking evaluation.
//!
//! The run directory is the engine's ([`reg4rec_train::checkpoint`]) with `config.json` = [`RunFile`] (format
//! version, `n_items`, the resolved config: with `best.json` and its weights all [`SasRecModel::load`] needs) and
//! `report.json` = the [`SasRecReport`] once training has finished.
//!
//! Determinism: the initial weights come from `seed`; the engine shuffles epoch `e` with `seed + e` and reseeds
//! libtorch (dropout) with `seed + s` before step `s`, so a resumed run repeats exactly what an uninterrupted one
//! does (same thread count assumed, and no other thread drawing from libtorch's global random generator
//! meanwhile).

use crate::error::{BaselineError, Result};
use crate::sasrec::{Samples, SasRec, SasRecConfig};
use reg4rec_data::features::ItemFeatures;
use reg4rec_data::io::{read_json, write_json_atomic};
use reg4rec_data::metrics::{UserRanks, TOP_KEPT};
use reg4rec_data::ranking::{tensor_ranks, tensor_tops};
use reg4rec_data::split::Stage;
use reg4rec_data::{LeaveOneOut, Metrics};
use reg4rec_train::checkpoint::FORMAT_VERSION;
use reg4rec_train::{
    fit, AdamWConfig, Batches, Fit, LearnerConfig, LrSchedule, Objective, RunDir, StepLoss,
    StopReason, TrainError, Validation, Validator,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Reduction, Tensor};

/// What a finished training run reports (also written to `report.json` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SasRecReport {
    /// Validation metrics of the restored best checkpoint.
    pub valid: Metrics,
    /// Test metrics of the restored best checkpoint (history = training part + validation item).
    pub test: Metrics,
    /// Validation metrics under the history-filtered protocol (the user's history removed before ranking;
    /// the same as `valid` when `exclude_history` is on). All zeros in reports written before it was kept.
    #[serde(default)]
    pub valid_filtered: Metrics,
    /// Test metrics under the history-filtered protocol.
    #[serde(default)]
    pub test_filtered: Metrics,
    /// Every test user's target rank under both protocols, in the split's user order (paired comparisons;
    /// `all` is the filtered protocol's too under `exclude_history`, as `test`).
    #[serde(default)]
    pub test_ranks: UserRanks,
    /// Wall-clock seconds of the training loop, periodic validation included, summed over resumed runs.
    pub train_seconds: f64,
    /// Wall-clock seconds of the final validation + test scoring.
    pub eval_seconds: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Epoch of the restored checkpoint.
    pub best_epoch: usize,
    /// Why training stopped: `max_epochs`, `early_stopping` or `time_budget`.
    pub stop_reason: String,
    /// The configuration the run used.
    pub config: SasRecConfig,
    /// Per-epoch mean training loss, learning rate and validation NDCG@10.
    pub history: Vec<EpochLog>,
}

/// One epoch of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    /// Mean cross-entropy per predicted position.
    pub loss: f64,
    /// Learning rate used in this epoch.
    pub lr: f64,
    /// Validation NDCG@10 when this epoch was validated.
    pub valid_ndcg10: Option<f64>,
    /// Validation Recall@10 when this epoch was validated.
    pub valid_recall10: Option<f64>,
    /// Seconds this epoch took (training and validation).
    pub seconds: f64,
}

/// `config.json` of a SASRec run: what loading the trained model needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    pub format_version: u32,
    pub n_items: usize,
    pub config: SasRecConfig,
    /// Width of the item feature matrix the model reads (`config.item_features`; the values are saved with
    /// the weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_features: Option<usize>,
}

/// A SASRec network with its weights, ready to score users.
pub struct SasRecModel {
    pub config: SasRecConfig,
    pub n_items: usize,
    vs: nn::VarStore,
    net: SasRec,
}

impl std::fmt::Debug for SasRecModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasRecModel")
            .field("config", &self.config)
            .field("n_items", &self.n_items)
            .finish_non_exhaustive()
    }
}

impl SasRecModel {
    /// Fresh weights initialised from `config.seed` (CPU). `features`: the item feature matrix, which a
    /// config with `item_features` needs and one without refuses.
    pub fn new(
        config: &SasRecConfig,
        n_items: usize,
        features: Option<&ItemFeatures>,
    ) -> Result<Self> {
        let mut m = Self::untrained(config, n_items, features.map(|f| f.dim))?;
        if let Some(f) = features {
            if f.n_items != n_items {
                return Err(BaselineError::input(
                    "features",
                    format!("{} feature rows for {n_items} items", f.n_items),
                ));
            }
            m.net.set_features(&f.values)?;
        }
        Ok(m)
    }

    /// Fresh weights with the feature values at zero (a checkpoint fills them).
    fn untrained(config: &SasRecConfig, n_items: usize, n_features: Option<usize>) -> Result<Self> {
        config.validate()?;
        if n_items == 0 {
            return Err(BaselineError::input("n_items", "no items to rank"));
        }
        match (config.item_features, n_features) {
            (true, None) => {
                return Err(BaselineError::config(
                    "item_features",
                    "is on but no item feature matrix was given",
                ))
            }
            (false, Some(_)) => {
                return Err(BaselineError::config(
                    "item_features",
                    "is off but an item feature matrix was given",
                ))
            }
            (true, Some(0)) => {
                return Err(BaselineError::input(
                    "features",
                    "the matrix has no columns",
                ))
            }
            _ => {}
        }
        tch::manual_seed(config.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SasRec::new(&vs.root(), config, n_items, n_features);
        Ok(SasRecModel {
            config: config.clone(),
            n_items,
            vs,
            net,
        })
    }

    /// The network (forward pass, logits).
    pub fn net(&self) -> &SasRec {
        &self.net
    }

    /// The variables (what an optimizer updates and a checkpoint holds).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The weights sorted by name (names follow the module tree: `layers.0.attn.qkv.weight`, ...).
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Writes the weights to a safetensors file atomically (with their checksum).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        Ok(reg4rec_train::save_weights(&self.vs, path)?)
    }

    /// Loads weights written by [`Self::save_weights`] (checksum, names and shapes checked).
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        Ok(reg4rec_train::load_weights(&self.vs, path)?)
    }

    /// The best model of a finished (or interrupted) run directory.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let run = RunDir::new(run_dir);
        let rf = read_run_file(&run)?;
        if !run.best().exists() {
            return Err(BaselineError::checkpoint(
                run.best(),
                "no validated checkpoint yet",
            ));
        }
        let mut m = SasRecModel::untrained(&rf.config, rf.n_items, rf.n_features)?;
        m.load_weights(&run.best_weights()?)?;
        Ok(m)
    }

    /// A training batch of rows: for each (its last `max_len + 1` items) the inputs are `seq[..n-1]` and the
    /// target is the next item at every position, or at the last one only with `samples = prefixes` (each row
    /// then being one prefix).
    pub fn training_batch(&self, seqs: &[&[u32]]) -> Result<SasRecBatch> {
        build_batch(
            seqs,
            self.n_items,
            self.config.max_len,
            self.net.pad_id(),
            self.config.samples == Samples::Prefixes,
        )
    }

    /// The mean full-softmax cross-entropy over a batch's predicted positions, in training mode.
    pub fn loss(&self, batch: &SasRecBatch) -> Tensor {
        let table = self.net.item_table();
        let h = self.net.forward_with(&batch.items, &table, true); // [batch, steps, d_model]
        let d = h.size()[2];
        let h = h.view([-1, d]).index_select(0, &batch.at); // [positions, d_model]
        self.net
            .logits_seen(&h, &table, &batch.seen)
            .cross_entropy_loss::<Tensor>(&batch.next, None, Reduction::Mean, -100, 0.0)
    }

    /// Scores of every item for each history (oldest first, at most `max_len` used) -> [users, n_items].
    pub fn score(&self, histories: &[Vec<u32>]) -> Result<Tensor> {
        self.score_with(histories, &tch::no_grad(|| self.net.item_table()))
    }

    /// [`Self::score`] against an item table computed once for many calls ([`SasRec::item_table`]).
    fn score_with(&self, histories: &[Vec<u32>], table: &Tensor) -> Result<Tensor> {
        for h in histories {
            if let Some(&bad) = h.iter().find(|&&i| i as usize >= self.n_items) {
                return Err(BaselineError::input(
                    "history",
                    format!("item {bad} is outside 0..{}", self.n_items),
                ));
            }
        }
        let rows: Vec<&[u32]> = histories
            .iter()
            .map(|h| reg4rec_data::split::truncate_front(h, self.config.max_len))
            .collect();
        let items = pad_left(&rows, self.net.pad_id());
        let (r, i) =
            reg4rec_train::repeat::seen_pairs(rows.iter().map(|h| h.iter().map(|&i| i64::from(i))));
        let seen = (Tensor::from_slice(&r), Tensor::from_slice(&i));
        Ok(tch::no_grad(|| self.net.score_last(&items, table, &seen)))
    }

    /// Full-ranking metrics on `stage`: users in batches of `eval_batch_size`, one matmul against the item table
    /// per batch, the target's rank counted on the tensor (pessimistic ties, as `reg4rec_data::metrics::rank_of`).
    /// With `config.exclude_history` every item of the user's whole history (not only the `max_len` the model
    /// reads) is removed from the ranking first, and a target that repeats a history item is not ranked: the
    /// filtered protocol of [`Self::ranks`].
    pub fn evaluate(&self, split: &LeaveOneOut, stage: Stage) -> Result<Metrics> {
        Ok(self
            .ranks(split, stage)?
            .under(self.config.exclude_history)
            .metrics())
    }

    /// Every user's 0-based full-ranking target rank on `stage`, in the split's user order, under both
    /// protocols: every item ranked, and the items of the user's whole history removed first (a target that
    /// repeats one is not ranked). Pessimistic ties in both.
    pub fn ranks(&self, split: &LeaveOneOut, stage: Stage) -> Result<UserRanks> {
        check_split(split, self.n_items)?;
        // Similar lengths together: less padding, same results (padding is masked out).
        let mut users: Vec<usize> = (0..split.n_users()).collect();
        users.sort_by_key(|&u| split.train[u].len());
        // The projected item features once for every batch of users, not once per batch.
        let table = tch::no_grad(|| self.net.item_table());
        let mut out = UserRanks {
            all: vec![None; split.n_users()],
            filtered: vec![None; split.n_users()],
            top: vec![Vec::new(); split.n_users()],
            top_filtered: vec![Vec::new(); split.n_users()],
        };
        for chunk in users.chunks(self.config.eval_batch_size) {
            let histories: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&u| split.history(u, stage, usize::MAX))
                .collect();
            let targets: Vec<i64> = chunk
                .iter()
                .map(|&u| split.target(u, stage) as i64)
                .collect();
            let scores = self.score_with(&histories, &table)?; // [users, n_items]
            let tops = tensor_tops(&scores, &histories, TOP_KEPT)?;
            for ((&u, (all, filtered)), (top, top_filtered)) in chunk
                .iter()
                .zip(tensor_ranks(&scores, &targets, &histories)?)
                .zip(tops)
            {
                out.all[u] = Some(all as u32);
                out.filtered[u] = filtered.map(|r| r as u32);
                out.top[u] = top;
                out.top_filtered[u] = top_filtered;
            }
        }
        Ok(out)
    }
}

/// Left-pads histories to the longest one: [rows, steps] int64 with `pad` in front.
fn pad_left(rows: &[&[u32]], pad: i64) -> Tensor {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut flat = vec![pad; rows.len() * t];
    for (i, r) in rows.iter().enumerate() {
        let start = i * t + (t - r.len());
        for (j, &item) in r.iter().enumerate() {
            flat[start + j] = item as i64;
        }
    }
    Tensor::from_slice(&flat).view([rows.len() as i64, t as i64])
}

/// A run's `config.json`, refusing another format version.
fn read_run_file(run: &RunDir) -> Result<RunFile> {
    let rf: RunFile = read_json(&run.config())?;
    if rf.format_version != FORMAT_VERSION {
        return Err(BaselineError::checkpoint(
            run.config(),
            format!(
                "format_version {}, expected {FORMAT_VERSION}",
                rf.format_version
            ),
        ));
    }
    Ok(rf)
}

/// Every item of the split must be a real item; there must be users.
fn check_split(split: &LeaveOneOut, n_items: usize) -> Result<()> {
    if split.n_users() == 0 {
        return Err(BaselineError::input(
            "split",
            "no users to train or evaluate on",
        ));
    }
    let all = split
        .train
        .iter()
        .flatten()
        .chain(&split.valid)
        .chain(&split.test);
    if let Some(&bad) = all.into_iter().find(|&&i| i as usize >= n_items) {
        return Err(BaselineError::input(
            "split",
            format!("item {bad} is outside 0..{n_items}"),
        ));
    }
    Ok(())
}

/// A training batch ([`SasRecModel::training_batch`]): left-padded inputs `[rows, steps]`, the flat indices of
/// the predicted positions and their next items.
pub struct SasRecBatch {
    items: Tensor,
    at: Tensor,
    next: Tensor,
    /// The (predicted position, item) pairs of the items each position has read (`reg4rec_train::repeat`).
    seen: (Tensor, Tensor),
}

/// The training batch of `seqs` (see [`SasRecModel::training_batch`]); `last_only`: the last position of each
/// row is its only target (a prefix sample, [`Samples::Prefixes`]).
fn build_batch(
    seqs: &[&[u32]],
    n_items: usize,
    max_len: usize,
    pad: i64,
    last_only: bool,
) -> Result<SasRecBatch> {
    let seqs: Vec<&[u32]> = seqs
        .iter()
        .map(|s| reg4rec_data::split::truncate_front(s, max_len + 1))
        .collect();
    if let Some(s) = seqs.iter().find(|s| s.len() < 2) {
        return Err(BaselineError::input(
            "training batch",
            format!(
                "a sequence of {} items has no next item to predict",
                s.len()
            ),
        ));
    }
    if let Some(&bad) = seqs
        .iter()
        .flat_map(|s| s.iter())
        .find(|&&i| i as usize >= n_items)
    {
        return Err(BaselineError::input(
            "training batch",
            format!("item {bad} is outside 0..{n_items}"),
        ));
    }
    let inputs: Vec<&[u32]> = seqs.iter().map(|s| &s[..s.len() - 1]).collect();
    let t = inputs.iter().map(|r| r.len()).max().unwrap_or(1);
    // Flat indices (row * steps + step) of the predicted positions, and their next items.
    let mut at = Vec::new();
    let mut next = Vec::new();
    let mut read = Vec::new();
    for (r, seq) in seqs.iter().enumerate() {
        let offset = t + 1 - seq.len();
        let first = if last_only { seq.len() - 1 } else { 1 };
        for (j, &item) in seq.iter().enumerate().skip(first) {
            at.push((r * t + offset + j - 1) as i64);
            next.push(item as i64);
            read.push(&seq[..j]);
        }
    }
    let (seen_rows, seen_items) =
        reg4rec_train::repeat::seen_pairs(read.iter().map(|h| h.iter().map(|&i| i64::from(i))));
    Ok(SasRecBatch {
        items: pad_left(&inputs, pad),
        at: Tensor::from_slice(&at),
        next: Tensor::from_slice(&next),
        seen: (
            Tensor::from_slice(&seen_rows),
            Tensor::from_slice(&seen_items),
        ),
    })
}

/// The training rows: with [`Samples::Sequences`] the last `max_len + 1` items of each user's training part
/// with at least two, every position a target; with [`Samples::Prefixes`] every such part's every prefix of at
/// least two items (its last `max_len + 1`), the last item the only target.
struct SasRecRows<'a> {
    rows: Vec<&'a [u32]>,
    n_items: usize,
    max_len: usize,
    pad: i64,
    last_only: bool,
}

impl<'a> SasRecRows<'a> {
    fn new(train: &'a [Vec<u32>], n_items: usize, cfg: &SasRecConfig, pad: i64) -> Self {
        let users = train.iter().filter(|s| s.len() >= 2);
        let rows = match cfg.samples {
            Samples::Sequences => users
                .map(|s| reg4rec_data::split::truncate_front(s, cfg.max_len + 1))
                .collect(),
            Samples::Prefixes => users
                .flat_map(|s| {
                    (2..=s.len()).map(move |end| {
                        reg4rec_data::split::truncate_front(&s[..end], cfg.max_len + 1)
                    })
                })
                .collect(),
        };
        SasRecRows {
            rows,
            n_items,
            max_len: cfg.max_len,
            pad,
            last_only: cfg.samples == Samples::Prefixes,
        }
    }
}

impl Batches for SasRecRows<'_> {
    type Batch = SasRecBatch;

    fn n_rows(&self) -> usize {
        self.rows.len()
    }

    fn row_len(&self, i: usize) -> usize {
        self.rows[i].len()
    }

    fn row_targets(&self, i: usize) -> usize {
        match self.last_only {
            true => 1,
            false => self.rows[i].len() - 1,
        }
    }

    fn build(&self, rows: &[usize]) -> reg4rec_train::Result<(SasRecBatch, usize)> {
        let seqs: Vec<&[u32]> = rows.iter().map(|&i| self.rows[i]).collect();
        let targets = rows.iter().map(|&i| self.row_targets(i)).sum();
        let batch = build_batch(&seqs, self.n_items, self.max_len, self.pad, self.last_only)
            .map_err(TrainError::task)?;
        Ok((batch, targets))
    }
}

struct CrossEntropy<'a>(&'a SasRecModel);

impl Objective<SasRecBatch> for CrossEntropy<'_> {
    fn loss(
        &mut self,
        batch: &SasRecBatch,
        _step: u64,
        _update: usize,
    ) -> reg4rec_train::Result<StepLoss> {
        Ok(StepLoss {
            total: self.0.loss(batch),
            parts: Vec::new(),
        })
    }
}

/// Validation NDCG@10 (the criterion) and Recall@10 by full ranking.
struct ValidNdcg<'a> {
    model: &'a SasRecModel,
    split: &'a LeaveOneOut,
}

impl Validator for ValidNdcg<'_> {
    fn validate(&mut self) -> reg4rec_train::Result<Validation> {
        let m = self
            .model
            .evaluate(self.split, Stage::Valid)
            .map_err(TrainError::task)?;
        let mut record = serde_json::Map::new();
        record.insert("valid_ndcg@10".into(), serde_json::json!(m.ndcg_10));
        record.insert("valid_recall@10".into(), serde_json::json!(m.recall_10));
        Ok(Validation {
            criterion: -m.ndcg_10,
            loss: None,
            metric: Some(m.ndcg_10),
            record,
        })
    }
}

/// The engine's settings of a SASRec run.
fn learner_config(cfg: &SasRecConfig) -> LearnerConfig {
    LearnerConfig {
        seed: cfg.seed,
        epochs: cfg.max_epochs,
        batch_size: cfg.batch_size,
        lr: LrSchedule {
            lr: cfg.lr,
            warmup_steps: cfg.warmup_steps,
            schedule: cfg.lr_schedule,
            final_lr_ratio: cfg.final_lr_ratio,
        },
        adamw: AdamWConfig {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
        grad_clip: 0.0,
        patience: cfg.patience,
        validate_every: cfg.eval_every,
        checkpoint_every: 0,
        log_every: 20,
        time_budget_s: cfg.time_budget_s as f64,
        validate_at_start: false,
        updates_per_batch: 1,
        label: "sasrec".into(),
    }
}

/// The per-epoch history of a run, from its `metrics.jsonl`.
fn history(run: &RunDir) -> Vec<EpochLog> {
    reg4rec_data::io::JsonlLog::new(run.metrics())
        .records()
        .iter()
        .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("epoch"))
        .map(|r| {
            let f = |k: &str| r.get(k).and_then(serde_json::Value::as_f64);
            EpochLog {
                epoch: r.get("epoch").and_then(|e| e.as_u64()).unwrap_or(0) as usize + 1,
                loss: f("train_loss").unwrap_or(f64::NAN),
                lr: f("lr").unwrap_or(f64::NAN),
                valid_ndcg10: f("valid_ndcg@10"),
                valid_recall10: f("valid_recall@10"),
                seconds: f("train_seconds").unwrap_or(0.0) + f("valid_seconds").unwrap_or(0.0),
            }
        })
        .collect()
}

/// Trains SASRec-CE on `split.train` (validation NDCG@10 for early stopping), restores the best checkpoint and
/// reports validation and test metrics. `resume`: continue from `run_dir`'s latest checkpoint if there is one
/// (the architecture and optimisation fields must match; see `check_resumable` for what may change); otherwise
/// training starts afresh, removing the run directory's previous run first.
pub fn train_sasrec(
    split: &LeaveOneOut,
    n_items: usize,
    config: &SasRecConfig,
    features: Option<&ItemFeatures>,
    run_dir: &Path,
    resume: bool,
) -> Result<SasRecReport> {
    config.validate()?;
    check_split(split, n_items)?;
    if split.train.iter().all(|s| s.len() < 2) {
        return Err(BaselineError::input(
            "split",
            "no user has two training items",
        ));
    }
    if config.threads > 0 {
        tch::set_num_threads(config.threads as i32);
    }
    let mut model = SasRecModel::new(config, n_items, features)?;
    let run_file = RunFile {
        format_version: FORMAT_VERSION,
        n_items,
        config: config.clone(),
        n_features: model.net.n_features(),
    };
    let run = RunDir::new(run_dir);
    let resuming = resume && run.latest().exists();
    if resuming {
        let rf = read_run_file(&run)?;
        check_resumable(&rf, &run_file, &run.config())?;
    } else {
        remove_previous_run(&run)?;
    }
    write_json_atomic(&run.config(), &run_file)?;
    let cfg = learner_config(config);
    let report = {
        let source = SasRecRows::new(&split.train, n_items, config, model.net.pad_id());
        let mut validator = ValidNdcg {
            model: &model,
            split,
        };
        let f = Fit {
            cfg: &cfg,
            run: run.clone(),
            vs: &model.vs,
            resume: resuming,
            stop_after_steps: None,
            data_parallel: None,
        };
        fit(f, &source, &mut CrossEntropy(&model), &mut validator)?
    };
    let best = report.best.as_ref().ok_or_else(|| {
        BaselineError::checkpoint(run.best(), "training ended without a validated checkpoint")
    })?;
    model.load_weights(&run_dir.join(&best.weights))?;
    let started = Instant::now();
    let valid_ranks = model
        .ranks(split, Stage::Valid)?
        .under(config.exclude_history);
    let test_ranks = model
        .ranks(split, Stage::Test)?
        .under(config.exclude_history);
    let report = SasRecReport {
        valid: valid_ranks.metrics(),
        test: test_ranks.metrics(),
        valid_filtered: valid_ranks.filtered_metrics(),
        test_filtered: test_ranks.filtered_metrics(),
        test_ranks,
        train_seconds: report.total_seconds,
        eval_seconds: started.elapsed().as_secs_f64(),
        epochs: report.epochs,
        best_epoch: best.epoch + 1,
        stop_reason: match report.stop {
            StopReason::MaxEpochs | StopReason::StepLimit => "max_epochs",
            StopReason::EarlyStopping => "early_stopping",
            StopReason::TimeBudget => "time_budget",
        }
        .into(),
        config: config.clone(),
        history: history(&run),
    };
    write_json_atomic(&run_dir.join("report.json"), &report)?;
    Ok(report)
}

/// A fresh start in a used run directory: the previous run's pointer files go first (so an interrupted clean-up
/// can never be resumed from the old files), then its checkpoints, best weights, metrics and report.
fn remove_previous_run(run: &RunDir) -> Result<()> {
    let remove = |p: PathBuf| -> Result<()> {
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(reg4rec_data::DataError::io(&p, e).into())
            }
            _ => Ok(()),
        }
    };
    for p in [
        run.latest(),
        run.best(),
        run.root.join("report.json"),
        run.metrics(),
        run.root.join("checkpoints"),
        run.root.join("best"),
    ] {
        remove(p)?;
    }
    Ok(())
}

/// A run can be resumed with another budget (`patience`, `time_budget_s`, `eval_batch_size`, `threads`, and
/// `max_epochs` under a constant learning rate), never with another model, optimiser, schedule, data, seed or
/// evaluation protocol.
fn check_resumable(rf: &RunFile, now: &RunFile, path: &Path) -> Result<()> {
    let (cfg, n_items) = (&now.config, now.n_items);
    if rf.n_items != n_items {
        return Err(BaselineError::checkpoint(
            path,
            format!("run has {} items, the data has {n_items}", rf.n_items),
        ));
    }
    if rf.n_features != now.n_features {
        return Err(BaselineError::checkpoint(
            path,
            format!(
                "run read {:?} item features, now {:?}",
                rf.n_features, now.n_features
            ),
        ));
    }
    let old = serde_json::to_value(&rf.config).unwrap_or_default();
    let new = serde_json::to_value(cfg).unwrap_or_default();
    let mut budget = vec!["patience", "time_budget_s", "eval_batch_size", "threads"];
    // Only a constant learning rate leaves every step's rate independent of the number of epochs.
    if cfg.lr_schedule == reg4rec_train::Schedule::Constant {
        budget.push("max_epochs");
    }
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (field, v) in new {
            if !budget.contains(&field.as_str()) && old.get(field) != Some(v) {
                return Err(BaselineError::config(
                    field.clone(),
                    format!(
                        "is {v} but the run in {} used {}; start a new run to change it",
                        path.parent()
                            .map(PathBuf::from)
                            .unwrap_or_default()
                            .display(),
                        old.get(field).cloned().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}
