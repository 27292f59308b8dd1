//! [`Linear`]: a drop-in for `tch::nn::linear` whose compute precision is set per layer from outside, and
//! which captures what K-FAC needs on sampling steps.
//!
//! Every layer registers itself (under its `nn::Path`, e.g. `encoder.layers.0.attn.q`) in a shared
//! [`LayerRegistry`] that holds, per layer, the current [`Precision`], and run-wide a capture flag. Weight names
//! are those of `nn::linear` (`weight` `[out, in]`, `bias` `[out]`), so checkpoints keep their keys.
//!
//! **Capturing without hooks.** libtorch module and tensor hooks are not exposed by tch. On a sampling step
//! (capture flag on, and only when the output takes part in autograd) the forward pass
//! - keeps the input activations `a` (`x.detach()`, which shares storage: no copy; autograd keeps `x` for the
//!   weight gradient anyway), and
//! - adds a **probe**: `out = out + probe` with `probe` a zero tensor of `out`'s shape with `requires_grad`.
//!   The value of `out` is unchanged (adding zeros) and `d loss / d probe = d loss / d out`, so after
//!   `loss.backward()` the probe's `.grad()` is exactly the output gradient `g` of this call.
//!
//! A layer called several times in one step (e.g. cross-attention keys on the encoder memory and, in a
//! decoder, once per call) records one `(a, probe)` pair per call that produced a gradient-tracked output;
//! calls under `no_grad` record nothing. Steps without the flag pay one mutex lock per call and nothing else.
//!
//! **Precision.** Master weights stay f32 and receive f32 gradients through the casts:
//! - fp32: `x W^T + b`;
//! - bf16: `x`, `W`, `b` cast to bf16, the matmul in bf16, the output cast back to f32;
//! - fp8: on CPU (and with `fp8_kernel = emulate`) `x` and `W` go through per-tensor e4m3
//!   quantise-dequantise ([`quant::fake_quant_e4m3`], straight-through gradient) and an f32 matmul; on CUDA
//!   the forward value is a real e4m3 `_scaled_mm` ([`quant::scaled_mm_linear`]). `_scaled_mm` has no autograd
//!   formula and tch cannot define one, so under autograd the output is `y_bf16 + (y_fp8 - y_bf16).detach()`:
//!   the fp8 value with the bf16 layer's gradient. Under `no_grad` (validation, inference) only the fp8 matmul
//!   runs. If `_scaled_mm` fails once (GPU without fp8 tensor cores, `in`/`out` not multiples of 16), every fp8
//!   layer emulates for the rest of the process and [`LayerRegistry::fp8_kernel_error`] says why.

use crate::config::{Fp8Kernel, Precision};
use crate::quant;
use std::sync::{Arc, Mutex, MutexGuard};
use tch::{nn, Kind, Tensor};

/// Index of a layer in its [`LayerRegistry`], in creation order.
pub type LayerId = usize;

/// What one layer recorded on a sampling step: input activations and the probe whose gradient is `g`.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) a: Tensor,     // [..., in], detached
    pub(crate) probe: Tensor, // [..., out], zeros, requires_grad
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) in_features: i64,
    pub(crate) out_features: i64,
    pub(crate) precision: Precision,
    pub(crate) records: Vec<Record>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) layers: Vec<Slot>,
    pub(crate) capturing: bool,
    pub(crate) fp8_kernel: Fp8Kernel,
    pub(crate) fp8_kernel_error: Option<String>,
}

/// Shared handle on the LADQ layers of one model: clone it freely (all clones see the same layers).
#[derive(Debug, Clone)]
pub struct LayerRegistry {
    inner: Arc<Mutex<Inner>>,
}

impl Default for LayerRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// Static description of a registered layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub name: String,
    pub in_features: i64,
    pub out_features: i64,
    pub precision: Precision,
}

impl LayerRegistry {
    /// An empty registry: capture off, fp8 kernel `auto`.
    pub fn new() -> Self {
        LayerRegistry {
            inner: Arc::new(Mutex::new(Inner {
                layers: Vec::new(),
                capturing: false,
                fp8_kernel: Fp8Kernel::Auto,
                fp8_kernel_error: None,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the plain data inconsistent: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, name: String, in_features: i64, out_features: i64) -> LayerId {
        let mut g = self.lock();
        g.layers.push(Slot {
            name,
            in_features,
            out_features,
            precision: Precision::Fp32,
            records: Vec::new(),
        });
        g.layers.len() - 1
    }

    pub fn len(&self) -> usize {
        self.lock().layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every layer, in creation order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.lock()
            .layers
            .iter()
            .map(|s| LayerInfo {
                name: s.name.clone(),
                in_features: s.in_features,
                out_features: s.out_features,
                precision: s.precision,
            })
            .collect()
    }

    /// Current precision of every layer, in creation order.
    pub fn precisions(&self) -> Vec<Precision> {
        self.lock().layers.iter().map(|s| s.precision).collect()
    }

    /// Sets every layer to `p`.
    pub fn set_all(&self, p: Precision) {
        for s in self.lock().layers.iter_mut() {
            s.precision = p;
        }
    }

    /// Sets layer `id` to `p` (ignored for an unknown id).
    pub fn set_precision(&self, id: LayerId, p: Precision) {
        if let Some(s) = self.lock().layers.get_mut(id) {
            s.precision = p;
        }
    }

    /// Sets the layers' precisions in creation order (`ps` shorter than the layers leaves the rest as is).
    pub fn set_precisions(&self, ps: &[Precision]) {
        for (s, p) in self.lock().layers.iter_mut().zip(ps) {
            s.precision = *p;
        }
    }

    pub fn set_fp8_kernel(&self, k: Fp8Kernel) {
        self.lock().fp8_kernel = k;
    }

    /// Why the real fp8 kernel was given up (and every fp8 layer emulates), if it was.
    pub fn fp8_kernel_error(&self) -> Option<String> {
        self.lock().fp8_kernel_error.clone()
    }

    /// Turns capture on for the next forward/backward (drops anything recorded before).
    pub fn start_capture(&self) {
        let mut g = self.lock();
        g.capturing = true;
        for s in g.layers.iter_mut() {
            s.records.clear();
        }
    }

    /// Turns capture off and drops what was recorded.
    pub fn cancel_capture(&self) {
        let mut g = self.lock();
        g.capturing = false;
        for s in g.layers.iter_mut() {
            s.records.clear();
        }
    }

    pub fn is_capturing(&self) -> bool {
        self.lock().capturing
    }

    fn record(&self, id: LayerId, r: Record) {
        if let Some(s) = self.lock().layers.get_mut(id) {
            s.records.push(r);
        }
    }
}

/// A linear layer `x W^T + b` whose precision is set through its [`LayerRegistry`].
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`, f32 master weight.
    pub ws: Tensor,
    /// `[out]`.
    pub bs: Option<Tensor>,
    id: LayerId,
    registry: LayerRegistry,
}

/// Creates a linear layer exactly like `nn::linear(p, in_dim, out_dim, c)` (same variables, names and
/// initialisation) and registers it in `registry` under the path of `p`.
pub fn linear<'a, T: std::borrow::Borrow<nn::Path<'a>>>(
    p: T,
    in_dim: i64,
    out_dim: i64,
    c: nn::LinearConfig,
    registry: &LayerRegistry,
) -> Linear {
    let p = p.borrow();
    let nn::Linear { ws, bs } = nn::linear(p, in_dim, out_dim, c);
    let name = p.components().collect::<Vec<_>>().join(".");
    let id = registry.register(name, in_dim, out_dim);
    Linear {
        ws,
        bs,
        id,
        registry: registry.clone(),
    }
}

impl Linear {
    pub fn id(&self) -> LayerId {
        self.id
    }

    pub fn precision(&self) -> Precision {
        self.registry
            .lock()
            .layers
            .get(self.id)
            .map_or(Precision::Fp32, |s| s.precision)
    }

    /// `x`: `[..., in]` f32 -> `[..., out]` f32, in this layer's current precision (see the module doc).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (precision, capturing, kernel) = {
            let g = self.registry.lock();
            let precision = g
                .layers
                .get(self.id)
                .map_or(Precision::Fp32, |s| s.precision);
            let kernel = if g.fp8_kernel_error.is_some() {
                Fp8Kernel::Emulate
            } else {
                g.fp8_kernel
            };
            (precision, g.capturing, kernel)
        };
        let y = match precision {
            Precision::Fp32 => x.linear(&self.ws, self.bs.as_ref()),
            Precision::Bf16 => self.bf16(x),
            Precision::Fp8 => self.fp8(x, kernel),
        };
        if capturing && y.requires_grad() {
            let probe = y.zeros_like().set_requires_grad(true);
            let out = &y + &probe;
            self.registry.record(
                self.id,
                Record {
                    a: x.detach(),
                    probe,
                },
            );
            out
        } else {
            y
        }
    }

    fn bf16(&self, x: &Tensor) -> Tensor {
        let w = self.ws.to_kind(Kind::BFloat16);
        let b = self.bs.as_ref().map(|b| b.to_kind(Kind::BFloat16));
        x.to_kind(Kind::BFloat16)
            .linear(&w, b.as_ref())
            .to_kind(Kind::Float)
    }

    fn fp8(&self, x: &Tensor, kernel: Fp8Kernel) -> Tensor {
        if kernel == Fp8Kernel::Auto && x.device().is_cuda() {
            match quant::scaled_mm_linear(x, &self.ws, self.bs.as_ref()) {
                Ok(y) => {
                    // Gradient-tracked call: carry the bf16 layer's gradient under the fp8 value
                    // (`hp - hp.detach()` is exactly zero, so the value is exactly `y`).
                    if (x.requires_grad() || self.ws.requires_grad()) && grad_mode_enabled() {
                        let hp = self.bf16(x);
                        return y + (&hp - hp.detach());
                    }
                    return y;
                }
                Err(e) => {
                    let mut g = self.registry.lock();
                    if g.fp8_kernel_error.is_none() {
                        g.fp8_kernel_error = Some(format!("layer `{}`: {e}", self.name_locked(&g)));
                    }
                }
            }
        }
        quant::fake_quant_e4m3(x).linear(&quant::fake_quant_e4m3(&self.ws), self.bs.as_ref())
    }

    fn name_locked(&self, g: &Inner) -> String {
        g.layers
            .get(self.id)
            .map_or_else(String::new, |s| s.name.clone())
    }
}

/// Whether autograd records operations right now (tch exposes no getter: an op on a leaf that requires grad
/// tells).
fn grad_mode_enabled() -> bool {
    let t = Tensor::zeros([], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    (&t * 1.0).requires_grad()
}

impl nn::Module for Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        Linear::forward(self, xs)
    }
}
