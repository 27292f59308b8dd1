//! The training engine on its own, with a one-weight linear model fitted to `y = 2x`: a run stopped and resumed
//! ends with the same weights as one that was not, early stopping follows `patience`, the kept weights are the
//! best validation's, and the time budget ends a run. (The models' own tests pin the engine too; these need no
//! model.)

use reg4rec_train::*;
use std::cell::RefCell;
use tch::{nn, nn::Module, Kind, Tensor};

/// 64 rows: x = i / 64, one target each.
struct Rows;

impl Batches for Rows {
    type Batch = Vec<usize>;
    fn n_rows(&self) -> usize {
        64
    }
    fn row_len(&self, _: usize) -> usize {
        1
    }
    fn row_targets(&self, _: usize) -> usize {
        1
    }
    fn build(&self, rows: &[usize]) -> Result<(Vec<usize>, usize)> {
        Ok((rows.to_vec(), rows.len()))
    }
}

fn x(rows: &[usize]) -> Tensor {
    let v: Vec<f32> = rows.iter().map(|&i| i as f32 / 64.0).collect();
    Tensor::from_slice(&v).unsqueeze(1)
}

/// Mean squared error against `2x`.
struct Mse<'a>(&'a nn::Linear);

impl Objective<Vec<usize>> for Mse<'_> {
    fn loss(&mut self, rows: &Vec<usize>, _step: u64, _update: usize) -> Result<StepLoss> {
        let x = x(rows);
        Ok(StepLoss {
            total: (self.0.forward(&x) - &x * 2.0).square().mean(Kind::Float),
            parts: vec![],
        })
    }
}

/// Validation by a scripted list of criteria (one per validation; the last repeats), recording the weight
/// each validation saw.
struct Scripted<'a> {
    line: &'a nn::Linear,
    criteria: Vec<f64>,
    seen: RefCell<Vec<f64>>,
}

impl Validator for Scripted<'_> {
    fn validate(&mut self) -> Result<Validation> {
        let mut seen = self.seen.borrow_mut();
        let i = seen.len().min(self.criteria.len() - 1);
        seen.push(self.line.ws.double_value(&[0, 0]));
        Ok(Validation {
            criterion: self.criteria[i],
            ..Default::default()
        })
    }
}

fn config(epochs: usize) -> LearnerConfig {
    LearnerConfig {
        seed: 1,
        epochs,
        batch_size: 16,
        grad_clip: 0.0,
        patience: 0,
        validate_every: 1,
        checkpoint_every: 0,
        log_every: 1,
        time_budget_s: 0.0,
        validate_at_start: false,
        updates_per_batch: 1,
        label: "line".into(),
        lr: LrSchedule {
            lr: 0.05,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            final_lr_ratio: 1.0,
        },
        adamw: AdamWConfig::default(),
    }
}

/// A seeded one-weight model and its var store (the seed and the draw under one lock: the tests of this file
/// run in parallel and libtorch's generator is global).
fn line() -> (nn::VarStore, nn::Linear) {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(3);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let l = nn::linear(vs.root() / "line", 1, 1, Default::default());
    (vs, l)
}

fn run(
    cfg: &LearnerConfig,
    dir: &std::path::Path,
    resume: bool,
    stop_after_steps: Option<u64>,
    criteria: Vec<f64>,
) -> (FitReport, Vec<f64>, f64) {
    let (vs, l) = line();
    let mut v = Scripted {
        line: &l,
        criteria,
        seen: RefCell::new(Vec::new()),
    };
    let report = fit(
        Fit {
            cfg,
            run: RunDir::new(dir),
            vs: &vs,
            resume,
            stop_after_steps,
            data_parallel: None,
        },
        &Rows,
        &mut Mse(&l),
        &mut v,
    )
    .unwrap();
    let w = l.ws.double_value(&[0, 0]);
    (report, v.seen.into_inner(), w)
}

#[test]
fn a_run_stopped_and_resumed_ends_with_the_weights_of_one_that_was_not() {
    let cfg = config(6);
    let whole = tempfile::tempdir().unwrap();
    let (r, _, w) = run(&cfg, whole.path(), false, None, vec![1.0]);
    assert_eq!((r.steps, r.stop), (24, StopReason::MaxEpochs));
    let split = tempfile::tempdir().unwrap();
    let (r1, _, _) = run(&cfg, split.path(), false, Some(10), vec![1.0]);
    assert_eq!((r1.steps, r1.stop), (10, StopReason::StepLimit));
    let (r2, _, w2) = run(&cfg, split.path(), true, None, vec![1.0]);
    assert_eq!(r2.steps, 24);
    assert_eq!(
        w.to_bits(),
        w2.to_bits(),
        "{w} against {w2} after the resume"
    );
}

#[test]
fn early_stopping_follows_patience_and_the_best_validation_is_kept() {
    let mut cfg = config(20);
    cfg.patience = 2;
    // Validations after epochs 1..: the second is the best, then two without improvement.
    let dir = tempfile::tempdir().unwrap();
    let (r, seen, _) = run(&cfg, dir.path(), false, None, vec![3.0, 1.0, 2.0, 4.0]);
    assert_eq!(r.stop, StopReason::EarlyStopping);
    assert_eq!(r.epochs, 4);
    assert_eq!(seen.len(), 4);
    let best = r.best.expect("a validation ran");
    assert_eq!((best.epoch, best.step), (1, 8));
    // The kept weights are the ones the best validation saw.
    let (vs, l) = line();
    load_weights(&vs, &RunDir::new(dir.path()).best_weights().unwrap()).unwrap();
    assert_eq!(l.ws.double_value(&[0, 0]).to_bits(), seen[1].to_bits());
}

#[test]
fn the_time_budget_ends_a_run_and_says_so() {
    let mut cfg = config(100_000);
    cfg.time_budget_s = 0.2;
    let dir = tempfile::tempdir().unwrap();
    let (r, seen, w) = run(&cfg, dir.path(), false, None, vec![1.0]);
    assert_eq!(r.stop, StopReason::TimeBudget);
    assert!(r.epochs < 100_000, "{} epochs", r.epochs);
    // The run validates before it stops, so its last weights are judged.
    assert_eq!(seen.last().map(|s| s.to_bits()), Some(w.to_bits()));
}
