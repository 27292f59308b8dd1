//! The training engine of reg4rec: one loop, one optimizer, one checkpoint format, for every model.
//!
//! - [`learner`]: [`fit`] runs the loop (seeded length-bucketed batches built on a background thread, the
//!   learning-rate schedule, AdamW with clipping, logging, progress, validation, best weights, early stopping,
//!   a time budget, exact resume, data-parallel steps). A model plugs in [`Batches`], an [`Objective`] and a
//!   [`Validator`].
//! - [`optim`]: [`AdamW`] with exportable moments and the [`LrSchedule`].
//! - [`checkpoint`]: the run directory ([`RunDir`]): checkpoints, best weights, `metrics.jsonl`; weights in
//!   safetensors files with checksums.
//! - [`repeat`]: the repeat bias, a learned scalar on the logits of the items already in a history, shared
//!   by the models that score every item.
//! - [`dist`]: the [`Collective`] a data-parallel run synchronises through (implemented over c10d by
//!   `reg4rec-dist`) and the steps built on it.
//!
//! A linear model fitted to `y = 2x` through the whole engine:
//!
//! ```
//! use reg4rec_train::*;
//! use tch::{nn, nn::Module, Kind, Tensor};
//!
//! struct Rows; // 64 rows: x = i / 64, one target each
//! impl Batches for Rows {
//!     type Batch = Vec<usize>;
//!     fn n_rows(&self) -> usize { 64 }
//!     fn row_len(&self, _: usize) -> usize { 1 }
//!     fn row_targets(&self, _: usize) -> usize { 1 }
//!     fn build(&self, rows: &[usize]) -> Result<(Vec<usize>, usize)> { Ok((rows.to_vec(), rows.len())) }
//! }
//! let x = |rows: &[usize]| Tensor::from_slice(&rows.iter().map(|&i| i as f32 / 64.0).collect::<Vec<_>>()).unsqueeze(1);
//!
//! let vs = nn::VarStore::new(tch::Device::Cpu);
//! let line = nn::linear(vs.root() / "line", 1, 1, Default::default());
//! struct Mse<'a>(&'a nn::Linear, &'a dyn Fn(&[usize]) -> Tensor);
//! impl Objective<Vec<usize>> for Mse<'_> {
//!     fn loss(&mut self, rows: &Vec<usize>, _step: u64, _update: usize) -> Result<StepLoss> {
//!         let x = (self.1)(rows);
//!         Ok(StepLoss { total: (self.0.forward(&x) - &x * 2.0).square().mean(Kind::Float), parts: vec![] })
//!     }
//! }
//! struct Fit0<'a>(&'a nn::Linear, &'a dyn Fn(&[usize]) -> Tensor);
//! impl Validator for Fit0<'_> {
//!     fn validate(&mut self) -> Result<Validation> {
//!         let x = (self.1)(&(0..64).collect::<Vec<_>>());
//!         let mse = tch::no_grad(|| (self.0.forward(&x) - &x * 2.0).square().mean(Kind::Float));
//!         Ok(Validation { criterion: mse.double_value(&[]), ..Default::default() })
//!     }
//! }
//! let cfg = LearnerConfig {
//!     seed: 1, epochs: 60, batch_size: 16, grad_clip: 0.0, patience: 0, validate_every: 10,
//!     checkpoint_every: 0, log_every: 1, time_budget_s: 0.0, validate_at_start: false, updates_per_batch: 1,
//!     label: "line".into(),
//!     lr: LrSchedule { lr: 0.05, warmup_steps: 0, schedule: Schedule::Constant, final_lr_ratio: 1.0 },
//!     adamw: AdamWConfig::default(),
//! };
//! let dir = tempfile::tempdir()?;
//! let run = Fit { cfg: &cfg, run: RunDir::new(dir.path()), vs: &vs, resume: false, stop_after_steps: None, data_parallel: None };
//! let report = fit(run, &Rows, &mut Mse(&line, &x), &mut Fit0(&line, &x))?;
//! assert_eq!(report.steps, 60 * 4);
//! assert!(report.best.unwrap().step > 0);
//! assert!(line.ws.double_value(&[0, 0]) > 1.5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkpoint;
pub mod dist;
pub mod error;
pub mod learner;
pub mod optim;
pub mod repeat;

pub use checkpoint::{load_weights, save_weights, Best, RunDir, StopReason, TrainState};
pub use dist::{Collective, DataParallel};
pub use error::{Result, TrainError};
pub use learner::{
    fit, Batches, Fit, FitReport, LearnerConfig, Objective, StepLoss, Validation, Validator,
};
pub use optim::{AdamW, AdamWConfig, LrSchedule, Schedule};
