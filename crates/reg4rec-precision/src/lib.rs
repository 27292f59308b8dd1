//! LADQ: layer-adaptive mixed precision (spec section 6). Every `P` steps each linear layer's sensitivity is
//! estimated as the trace of its K-FAC Fisher block, `tr(A) tr(G)` with `A = E[a a^T]` over input activations
//! and `G = E[g g^T]` over output gradients; the most sensitive layers then run in fp32, the middle in bf16, the
//! least in fp8 (e4m3 with per-tensor scales: a real `_scaled_mm` on CUDA, quantise-dequantise emulation on
//! CPU). Master weights, optimizer state and losses stay f32.
//!
//! - [`config`]: [`Precision`], [`PrecisionMode`] (`--precision fp32|bf16|ladq`), [`LadqConfig`].
//! - [`linear`]: [`Linear`], the drop-in for `nn::linear` that applies its precision and captures `a` and `g`
//!   on sampling steps (a zero "probe" added to the output stands in for a backward hook), and the shared
//!   [`LayerRegistry`].
//! - [`kfac`]: the traces and sensitivities from what was captured.
//! - [`policy`]: the ranking-to-precision rule and the [`Ladq`] controller a trainer calls around each step.
//! - [`quant`]: e4m3 rounding, fake quantisation and the fp8 matmul.
//! - [`testbed`]: a stand-in transformer of LADQ layers for benches and device throughput checks.
//!
//! A trainer under LADQ (`Ladq::resume(.., step)` instead of `Ladq::new` when continuing a run):
//! ```ignore
//! let mut ladq = Ladq::new(PrecisionMode::Ladq, &ladq_cfg, model.ladq_layers(), Some(run_dir))?;
//! let sampled = ladq.begin_step(step);            // capture on every sample_every steps
//! let loss = model_loss(&batch);                  // forward through reg4rec_precision::Linear layers
//! opt.zero_grad();
//! loss.backward();
//! ladq.end_step(step, batch_size as f64)?;        // traces -> new assignment -> ladq.jsonl
//! opt.step();
//! ```

pub mod config;
pub mod error;
pub mod kfac;
pub mod linear;
pub mod policy;
pub mod quant;
pub mod testbed;

pub use config::{AssignRule, Fp8Kernel, LadqConfig, Precision, PrecisionMode};
pub use error::{PrecisionError, Result};
pub use kfac::LayerTraces;
pub use linear::{linear, LayerId, LayerInfo, LayerRegistry, Linear};
pub use policy::{assign, Ladq, Sampling};
