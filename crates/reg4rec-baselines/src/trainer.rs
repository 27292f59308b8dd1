//! Training and scoring of [`SasRec`]: next-item full-softmax cross-entropy at every position of each user's
//! training sequence, AdamW, validation NDCG@10 every `eval_every` epochs with early stopping, atomic checkpoints
//! in a run directory, exact resume, and batched full-ranking evaluation.
//!
//! Run directory layout (everything written atomically; `state.json` is written last and names the weight files,
//! so a crash at any point leaves a consistent run):
//! - `model.json`: format version, `n_items` and the resolved config; with `state.json` and the best weights it
//!   is all [`SasRecModel::load`] needs.
//! - `last-<epoch>.safetensors`, `last-<epoch>.optim.safetensors`: weights and AdamW moments after the last epoch.
//! - `best-<epoch>.safetensors`: weights with the best validation NDCG@10 so far.
//! - `state.json`: epoch, best metric and epoch, patience counter, seed, AdamW step, seconds, per-epoch history.
//! - `report.json`: the [`SasRecReport`] once training has finished.
//!
//! Determinism: the initial weights come from `seed`; epoch `e` reseeds libtorch (dropout) with `seed + e` and
//! shuffles with a ChaCha8 generator seeded from `seed` and `e`, so a resumed run repeats exactly what an
//! uninterrupted one does (same thread count assumed, and no other thread drawing from libtorch's global random
//! generator meanwhile).

use crate::checkpoint::{self, FORMAT_VERSION};
use crate::error::{BaselineError, Result};
use crate::sasrec::{LrSchedule, SasRec, SasRecConfig};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reg4rec_data::batch::length_bucketed_batches;
use reg4rec_data::io::{read_json, write_json_atomic};
use reg4rec_data::metrics::MetricAccumulator;
use reg4rec_data::split::Stage;
use reg4rec_data::{LeaveOneOut, Metrics};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// What a finished training run reports (also written to `report.json` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SasRecReport {
    /// Validation metrics of the restored best checkpoint.
    pub valid: Metrics,
    /// Test metrics of the restored best checkpoint (history = training part + validation item).
    pub test: Metrics,
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

/// `model.json`: what loading a trained model needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format_version: u32,
    n_items: usize,
    config: SasRecConfig,
}

/// `state.json`: where training stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainState {
    format_version: u32,
    n_items: usize,
    config: SasRecConfig,
    seed: u64,
    /// Completed epochs.
    epoch: usize,
    adam_step: i64,
    /// Current learning rate (after plateau decays).
    lr: f64,
    /// Best validation NDCG@10 so far and its epoch (`None` / 0: not validated yet).
    best_ndcg10: Option<f64>,
    best_epoch: usize,
    /// Validations since the last improvement.
    bad_evals: usize,
    train_seconds: f64,
    last_weights: Option<String>,
    last_optim: Option<String>,
    best_weights: Option<String>,
    history: Vec<EpochLog>,
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
    /// Fresh weights initialised from `config.seed` (CPU).
    pub fn new(config: &SasRecConfig, n_items: usize) -> Result<Self> {
        config.validate()?;
        if n_items == 0 {
            return Err(BaselineError::input("n_items", "no items to rank"));
        }
        tch::manual_seed(config.seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SasRec::new(&vs.root(), config, n_items);
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

    /// The weights sorted by name (names follow the module tree: `layers.0.attn.qkv.weight`, ...).
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Writes the weights to a safetensors file atomically.
    pub fn save_weights(&self, path: &Path, epoch: usize) -> Result<()> {
        checkpoint::save(path, &self.named_weights(), epoch)
    }

    /// Loads weights written by [`Self::save_weights`] (names and shapes checked); returns their epoch.
    pub fn load_weights(&mut self, path: &Path) -> Result<usize> {
        checkpoint::load_into(path, &self.named_weights())
    }

    /// The best model of a finished (or interrupted) run directory.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let mf: ModelFile = read_json(&run_dir.join("model.json"))?;
        check_version(&run_dir.join("model.json"), mf.format_version)?;
        let state: TrainState = read_json(&run_dir.join("state.json"))?;
        let best = state.best_weights.ok_or_else(|| {
            BaselineError::checkpoint(run_dir.join("state.json"), "no validated checkpoint yet")
        })?;
        let mut m = SasRecModel::new(&mf.config, mf.n_items)?;
        m.load_weights(&run_dir.join(best))?;
        Ok(m)
    }

    /// Scores of every item for each history (oldest first, at most `max_len` used) -> [users, n_items].
    pub fn score(&self, histories: &[Vec<u32>]) -> Result<Tensor> {
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
        Ok(tch::no_grad(|| self.net.score_last(&items)))
    }

    /// Full-ranking metrics on `stage`: users in batches of `eval_batch_size`, one matmul against the item table
    /// per batch, the target's rank counted on the tensor (pessimistic ties, as `reg4rec_data::metrics::rank_of`).
    /// With `config.exclude_history` every item of the user's whole history (not only the `max_len` the model
    /// reads) is removed from the ranking first, and a target that repeats a history item is not ranked.
    pub fn evaluate(&self, split: &LeaveOneOut, stage: Stage) -> Result<Metrics> {
        check_split(split, self.n_items)?;
        // Similar lengths together: less padding, same results (padding is masked out).
        let mut users: Vec<usize> = (0..split.n_users()).collect();
        users.sort_by_key(|&u| split.train[u].len());
        let mut acc = MetricAccumulator::new();
        for chunk in users.chunks(self.config.eval_batch_size) {
            let histories: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&u| split.history(u, stage, usize::MAX))
                .collect();
            let targets: Vec<i64> = chunk
                .iter()
                .map(|&u| split.target(u, stage) as i64)
                .collect();
            let mut scores = self.score(&histories)?; // [users, n_items]
            if self.config.exclude_history {
                exclude_items(&mut scores, &histories);
            }
            for ((r, h), &t) in ranks_on_tensor(&scores, &targets)?
                .into_iter()
                .zip(&histories)
                .zip(&targets)
            {
                // A repeated target left the ranking with the rest of the history.
                let repeated = self.config.exclude_history && h.contains(&(t as u32));
                acc.add_rank((!repeated).then_some(r));
            }
        }
        Ok(acc.finish())
    }
}

/// 0-based pessimistic rank of each row's target: the number of other items whose score is not below the
/// target's (`!(s < t)`, so NaN scores count as above, exactly like `reg4rec_data::metrics::rank_of`).
/// `scores`: [users, n_items]; `targets`: one item per row, each below `n_items`.
///
/// A shape that does not match or a target out of range is an error, never a shorter list: every user of an
/// evaluation gets a rank.
pub fn ranks_on_tensor(scores: &Tensor, targets: &[i64]) -> Result<Vec<usize>> {
    let &[rows, n_items] = scores.size().as_slice() else {
        return Err(BaselineError::input(
            "scores",
            format!("expected [users, items], got shape {:?}", scores.size()),
        ));
    };
    if rows != targets.len() as i64 {
        return Err(BaselineError::input(
            "targets",
            format!("{} targets for {rows} rows of scores", targets.len()),
        ));
    }
    if let Some(&t) = targets.iter().find(|&&t| !(0..n_items).contains(&t)) {
        return Err(BaselineError::input(
            "targets",
            format!("item {t} is outside the {n_items} scored items"),
        ));
    }
    let ranks = || -> std::result::Result<Vec<i64>, tch::TchError> {
        let t = Tensor::from_slice(targets)
            .to_device(scores.device())
            .unsqueeze(1); // [users, 1]
        let target_scores = scores.f_gather(1, &t, false)?; // [users, 1]
        let not_below = scores
            .f_lt_tensor(&target_scores)?
            .f_logical_not()?
            .f_sum_dim_intlist(1, false, Kind::Int64)?; // [users], includes the target itself
        Vec::<i64>::try_from(&(not_below - 1))
    };
    let ranks = ranks().map_err(|e| BaselineError::torch("ranking the targets", e))?;
    Ok(ranks.into_iter().map(|r| r.max(0) as usize).collect())
}

/// Sets the score of every listed item of each row to -inf, so it ranks after every other item (a target among
/// them can still be ranked: pessimistic ties put it last). `scores`: [rows, n_items], contiguous (as
/// [`SasRecModel::score`] returns them); `items`: one list per row, ids below `n_items`.
fn exclude_items(scores: &mut Tensor, items: &[Vec<u32>]) {
    let n_items = scores.size()[1];
    let flat: Vec<i64> = items
        .iter()
        .enumerate()
        .flat_map(|(r, row)| row.iter().map(move |&i| r as i64 * n_items + i as i64))
        .collect();
    let mut view = scores.view([-1]);
    let _ = view.index_fill_(0, &Tensor::from_slice(&flat), f64::NEG_INFINITY);
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

fn check_version(path: &Path, found: u32) -> Result<()> {
    if found != FORMAT_VERSION {
        return Err(BaselineError::checkpoint(
            path,
            format!("format_version {found}, expected {FORMAT_VERSION}"),
        ));
    }
    Ok(())
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

/// AdamW with decoupled weight decay on matrices and tables (not on biases or LayerNorm parameters).
/// Written out (rather than `tch::nn::AdamW`) so its moments can be checkpointed and a resume is exact.
struct AdamW {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    decay: Vec<bool>,
    step: i64,
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
}

impl AdamW {
    const EPS: f64 = 1e-8;

    fn new(params: Vec<(String, Tensor)>, cfg: &SasRecConfig) -> Self {
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let decay = params
            .iter()
            .map(|(n, p)| p.dim() >= 2 && !n.contains("ln"))
            .collect();
        AdamW {
            params,
            m,
            v,
            decay,
            step: 0,
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            weight_decay: cfg.weight_decay,
        }
    }

    fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    fn step(&mut self) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = self.m[i].lerp_(&g, 1.0 - self.beta1);
                let _ = self.v[i].g_mul_scalar_(self.beta2);
                let _ = self.v[i].g_add_(&(g.square() * (1.0 - self.beta2)));
                if self.decay[i] && self.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
                }
                let denom = (&self.v[i] / bc2).sqrt() + Self::EPS;
                let _ = p.g_sub_(&(&self.m[i] / denom * (self.lr / bc1)));
            }
        });
    }

    /// Moments named `m.<param>` / `v.<param>`.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let m = self
            .params
            .iter()
            .zip(&self.m)
            .map(|((n, _), t)| (format!("m.{n}"), t.shallow_clone()));
        let v = self
            .params
            .iter()
            .zip(&self.v)
            .map(|((n, _), t)| (format!("v.{n}"), t.shallow_clone()));
        m.chain(v).collect()
    }
}

/// One training sequence: inputs `seq[..n-1]`, targets `seq[1..]` (the last `max_len + 1` items of the user's
/// training part).
fn training_rows(split: &LeaveOneOut, max_len: usize) -> Vec<&[u32]> {
    split
        .train
        .iter()
        .filter(|s| s.len() >= 2)
        .map(|s| reg4rec_data::split::truncate_front(s, max_len + 1))
        .collect()
}

/// Trains SASRec-CE on `split.train` (validation NDCG@10 for early stopping), restores the best checkpoint and
/// reports validation and test metrics. `resume`: continue from `run_dir`'s last checkpoint if there is one (the
/// architecture and optimisation fields must match; `max_epochs`, `patience`, `time_budget_s`, `eval_batch_size`
/// and `threads` may change); otherwise training starts afresh and overwrites the run directory's state.
pub fn train_sasrec(
    split: &LeaveOneOut,
    n_items: usize,
    config: &SasRecConfig,
    run_dir: &Path,
    resume: bool,
) -> Result<SasRecReport> {
    config.validate()?;
    check_split(split, n_items)?;
    let rows = training_rows(split, config.max_len);
    if rows.is_empty() {
        return Err(BaselineError::input(
            "split",
            "no user has two training items",
        ));
    }
    if config.threads > 0 {
        tch::set_num_threads(config.threads as i32);
    }
    let mut trainer = Trainer::new(SasRecModel::new(config, n_items)?);
    let state_path = run_dir.join("state.json");
    let mut state = if resume && state_path.exists() {
        let mut st: TrainState = read_json(&state_path)?;
        check_version(&state_path, st.format_version)?;
        check_resumable(&st, config, n_items, &state_path)?;
        if let (Some(w), Some(o)) = (&st.last_weights, &st.last_optim) {
            let e1 = trainer.model.load_weights(&run_dir.join(w))?;
            let e2 = checkpoint::load_into(&run_dir.join(o), &trainer.opt.state_tensors())?;
            if e1 != st.epoch || e2 != st.epoch {
                return Err(BaselineError::checkpoint(
                    &state_path,
                    format!("state is at epoch {}, weight files at {e1}/{e2}", st.epoch),
                ));
            }
            trainer.opt.step = st.adam_step;
            trainer.opt.lr = st.lr;
        }
        st.config = config.clone();
        st
    } else {
        remove_previous_run(run_dir)?;
        write_json_atomic(
            &run_dir.join("model.json"),
            &ModelFile {
                format_version: FORMAT_VERSION,
                n_items,
                config: config.clone(),
            },
        )?;
        TrainState {
            format_version: FORMAT_VERSION,
            n_items,
            config: config.clone(),
            seed: config.seed,
            epoch: 0,
            adam_step: 0,
            lr: config.lr,
            best_ndcg10: None,
            best_epoch: 0,
            bad_evals: 0,
            train_seconds: 0.0,
            last_weights: None,
            last_optim: None,
            best_weights: None,
            history: Vec::new(),
        }
    };

    let bar = reg4rec_data::progress::bar(config.max_epochs as u64, "sasrec");
    bar.set_position(state.epoch as u64);
    let stop_reason = loop {
        if let Some(reason) = stop_reason(&state, config) {
            break reason;
        }
        let started = Instant::now();
        let epoch = state.epoch + 1;
        tch::manual_seed(config.seed.wrapping_add(epoch as u64) as i64);
        if let Some(lr) = config
            .lr_schedule
            .planned(config.lr, epoch, config.max_epochs)
        {
            trainer.opt.lr = lr;
        }
        let loss = train_epoch(&mut trainer, &rows, config, epoch, &bar)?;
        let budget_spent = config.time_budget_s > 0
            && state.train_seconds + started.elapsed().as_secs_f64() >= config.time_budget_s as f64;
        let validate =
            epoch.is_multiple_of(config.eval_every) || epoch == config.max_epochs || budget_spent;
        let mut log = EpochLog {
            epoch,
            loss,
            lr: trainer.opt.lr,
            valid_ndcg10: None,
            valid_recall10: None,
            seconds: 0.0,
        };
        let mut new_best = None;
        if validate {
            let m = trainer.model.evaluate(split, Stage::Valid)?;
            log.valid_ndcg10 = Some(m.ndcg_10);
            log.valid_recall10 = Some(m.recall_10);
            if state.best_ndcg10.is_none_or(|b| m.ndcg_10 > b) {
                state.best_ndcg10 = Some(m.ndcg_10);
                state.best_epoch = epoch;
                state.bad_evals = 0;
                let name = format!("best-{epoch}.safetensors");
                trainer.model.save_weights(&run_dir.join(&name), epoch)?;
                new_best = Some(name);
            } else {
                state.bad_evals += 1;
                if config.lr_schedule == LrSchedule::Plateau
                    && state.bad_evals.is_multiple_of(config.lr_decay_patience)
                {
                    trainer.opt.lr *= config.lr_decay_factor;
                }
            }
        }
        let w = format!("last-{epoch}.safetensors");
        let o = format!("last-{epoch}.optim.safetensors");
        trainer.model.save_weights(&run_dir.join(&w), epoch)?;
        checkpoint::save(&run_dir.join(&o), &trainer.opt.state_tensors(), epoch)?;
        log.seconds = started.elapsed().as_secs_f64();
        let old = [
            state.last_weights.replace(w),
            state.last_optim.replace(o),
            match new_best {
                Some(b) => state.best_weights.replace(b),
                None => None,
            },
        ];
        state.epoch = epoch;
        state.adam_step = trainer.opt.step;
        state.lr = trainer.opt.lr;
        state.train_seconds += log.seconds;
        state.history.push(log.clone());
        write_json_atomic(&state_path, &state)?;
        for f in old.into_iter().flatten() {
            let _ = std::fs::remove_file(run_dir.join(f));
        }
        let line = format!(
            "epoch {epoch} lr {:.2e} loss {loss:.4}{} ({:.1}s)",
            log.lr,
            log.valid_ndcg10
                .map(|n| format!(
                    " valid ndcg@10 {n:.4} (best {:.4} @ {})",
                    state.best_ndcg10.unwrap_or(n),
                    state.best_epoch
                ))
                .unwrap_or_default(),
            log.seconds
        );
        if bar.is_hidden() {
            eprintln!("sasrec: {line}");
        }
        bar.set_message(format!("sasrec {line}"));
        bar.inc(1);
    };
    bar.finish_and_clear();

    let best = state.best_weights.clone().ok_or_else(|| {
        BaselineError::checkpoint(&state_path, "training ended without a validated checkpoint")
    })?;
    let mut model = trainer.into_model();
    model.load_weights(&run_dir.join(best))?;
    let started = Instant::now();
    let valid = model.evaluate(split, Stage::Valid)?;
    let test = model.evaluate(split, Stage::Test)?;
    let report = SasRecReport {
        valid,
        test,
        train_seconds: state.train_seconds,
        eval_seconds: started.elapsed().as_secs_f64(),
        epochs: state.epoch,
        best_epoch: state.best_epoch,
        stop_reason,
        config: config.clone(),
        history: state.history.clone(),
    };
    write_json_atomic(&run_dir.join("report.json"), &report)?;
    Ok(report)
}

/// A fresh start in a used run directory: its state, report and checkpoints go first, so that an interrupted new
/// run can never be resumed from the old one's files.
fn remove_previous_run(run_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Ok(()); // not created yet
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == "state.json"
            || name == "report.json"
            || ((name.starts_with("last-") || name.starts_with("best-"))
                && name.ends_with(".safetensors"));
        if ours {
            std::fs::remove_file(entry.path())
                .map_err(|e| reg4rec_data::DataError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Why training should stop now, if it should.
fn stop_reason(state: &TrainState, cfg: &SasRecConfig) -> Option<String> {
    if state.epoch >= cfg.max_epochs {
        Some("max_epochs".into())
    } else if state.bad_evals >= cfg.patience {
        Some("early_stopping".into())
    } else if cfg.time_budget_s > 0 && state.train_seconds >= cfg.time_budget_s as f64 {
        Some("time_budget".into())
    } else {
        None
    }
}

/// A run can be resumed with another budget (`max_epochs` (not under the cosine schedule), `patience`,
/// `time_budget_s`, `eval_batch_size`, `threads`), never with another model, optimiser, data, seed or evaluation
/// protocol.
fn check_resumable(st: &TrainState, cfg: &SasRecConfig, n_items: usize, path: &Path) -> Result<()> {
    if st.n_items != n_items {
        return Err(BaselineError::checkpoint(
            path,
            format!("run has {} items, the data has {n_items}", st.n_items),
        ));
    }
    let old = serde_json::to_value(&st.config).unwrap_or_default();
    let new = serde_json::to_value(cfg).unwrap_or_default();
    let mut budget = vec!["patience", "time_budget_s", "eval_batch_size", "threads"];
    // Under the cosine schedule `max_epochs` sets the learning rate of every epoch, so it cannot change.
    if cfg.lr_schedule == LrSchedule::Plateau {
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

/// One pass over the training sequences (in the epoch's batch order); returns the mean cross-entropy per predicted
/// position.
fn train_epoch(
    trainer: &mut Trainer,
    rows: &[&[u32]],
    cfg: &SasRecConfig,
    epoch: usize,
    bar: &ProgressBar,
) -> Result<f64> {
    let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let batches = length_bucketed_batches(&lengths, cfg.batch_size, &mut rng)?;
    let (mut loss_sum, mut positions) = (0.0f64, 0usize);
    for (b, batch) in batches.iter().enumerate() {
        let seqs: Vec<&[u32]> = batch.iter().map(|&i| rows[i]).collect();
        let (l, n) = trainer.step(&seqs)?;
        if !l.is_finite() {
            return Err(BaselineError::input(
                "training",
                format!("loss became {l} at epoch {epoch}, batch {b}; lower lr"),
            ));
        }
        loss_sum += l * n as f64;
        positions += n;
        if b.is_multiple_of(20) {
            bar.set_message(format!(
                "sasrec epoch {epoch} batch {b}/{} loss {:.4}",
                batches.len(),
                loss_sum / positions.max(1) as f64
            ));
        }
    }
    Ok(loss_sum / positions.max(1) as f64)
}

/// A model with its AdamW state: one optimisation step per batch of training sequences.
pub struct Trainer {
    model: SasRecModel,
    opt: AdamW,
}

impl Trainer {
    /// Wraps a model with a fresh AdamW (learning rate, betas and weight decay from the model's config).
    pub fn new(model: SasRecModel) -> Self {
        let opt = AdamW::new(model.named_weights(), &model.config);
        Trainer { model, opt }
    }

    pub fn model(&self) -> &SasRecModel {
        &self.model
    }

    pub fn into_model(self) -> SasRecModel {
        self.model
    }

    /// One AdamW step on a batch of training sequences: for each sequence (its last `max_len + 1` items) the
    /// inputs are `seq[..n-1]` and the target at every position is the next item, full-softmax cross-entropy
    /// averaged over all predicted positions. Returns that mean loss and the number of positions.
    pub fn step(&mut self, seqs: &[&[u32]]) -> Result<(f64, usize)> {
        let net = &self.model.net;
        let n_items = self.model.n_items;
        let seqs: Vec<&[u32]> = seqs
            .iter()
            .map(|s| reg4rec_data::split::truncate_front(s, self.model.config.max_len + 1))
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
        for (r, seq) in seqs.iter().enumerate() {
            let offset = t + 1 - seq.len();
            for (j, &item) in seq.iter().enumerate().skip(1) {
                at.push((r * t + offset + j - 1) as i64);
                next.push(item as i64);
            }
        }
        let x = pad_left(&inputs, net.pad_id()); // [batch, steps]
        let h = net.forward(&x, true); // [batch, steps, d_model]
        let d = h.size()[2];
        let h = h.view([-1, d]).index_select(0, &Tensor::from_slice(&at)); // [positions, d_model]
        let logits = net.logits(&h); // [positions, n_items]
        let loss = logits.cross_entropy_loss::<Tensor>(
            &Tensor::from_slice(&next),
            None,
            Reduction::Mean,
            -100,
            0.0,
        );
        self.opt.zero_grad();
        loss.backward();
        self.opt.step();
        Ok((loss.double_value(&[]), next.len()))
    }
}
