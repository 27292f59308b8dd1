//! Traces of the K-FAC factors of each linear layer, the LADQ sensitivity (spec section 6).
//!
//! For a linear layer with input activations `a` (`[in]` per row) and output gradients `g` (`[out]` per row),
//! K-FAC approximates the layer's Fisher block by `A ⊗ G` with `A = E[a a^T]` and `G = E[g g^T]`, so its trace is
//! `tr(A) tr(G)`. The traces are computed directly, never the matrices:
//! `tr(A) = E[||a||^2]` and `tr(G) = E[||g||^2]`, the expectation over every row (example, and position for
//! sequence inputs; all calls of the layer in the step pooled).
//!
//! **Loss-scaling convention.** `g` must be the gradient of a *per-example* loss, but training backpropagates a
//! loss averaged over the batch, whose gradient is the per-example one divided by the number of averaged terms.
//! The captured gradients are therefore multiplied by `loss_scale`, the number of terms the training loss is a
//! mean of (the batch size for a per-example mean): `g = loss_scale * d(mean loss)/d out`, and
//! `tr(G) = loss_scale^2 E[||d(mean loss)/d out||^2]`. The factor is common to all layers of one sampling, so
//! rankings and the policy's assignments (by rank, or relative to the largest sensitivity) do not depend on it;
//! it only makes the absolute traces comparable across batch sizes.

use crate::error::{PrecisionError, Result};
use crate::linear::LayerRegistry;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// K-FAC traces of one layer on one sampled batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTraces {
    /// The layer's path, e.g. `encoder.layers.0.ffn.up`.
    pub name: String,
    /// `tr(A) = E[||a||^2]`.
    pub tr_a: f64,
    /// `tr(G) = E[||g||^2]` (per-example gradients, see the module doc).
    pub tr_g: f64,
    /// `tr(A) * tr(G)`.
    pub sensitivity: f64,
    /// Rows the expectations averaged over (0: the layer took no part in the sampled loss).
    pub rows: i64,
}

/// `(tr(A), tr(G), rows)` from pairs of input activations `[..., in]` and mean-loss output gradients
/// `[..., out]` (one pair per call of the layer), with `g = loss_scale * grad`. `(0, 0, 0)` for no pairs.
pub fn traces(layer: &str, pairs: &[(Tensor, Tensor)], loss_scale: f64) -> Result<(f64, f64, i64)> {
    let (mut sa, mut sg, mut rows) = (0.0f64, 0.0f64, 0i64);
    for (a, g) in pairs {
        let (ra, rg) = (leading_rows(a), leading_rows(g));
        if ra != rg {
            return Err(PrecisionError::layer(
                layer,
                format!(
                    "activations {:?} and output gradients {:?} have different rows",
                    a.size(),
                    g.size()
                ),
            ));
        }
        // Squared Frobenius norms: one reduction each, no squared copy of the tensor.
        sa += a.f_norm()?.f_double_value(&[])?.powi(2);
        sg += g.f_norm()?.f_double_value(&[])?.powi(2);
        rows += ra;
    }
    if rows == 0 {
        return Ok((0.0, 0.0, 0));
    }
    let n = rows as f64;
    Ok((sa / n, sg * loss_scale * loss_scale / n, rows))
}

/// Number of rows of a `[..., features]` tensor.
fn leading_rows(t: &Tensor) -> i64 {
    let s = t.size();
    s[..s.len().saturating_sub(1)].iter().product()
}

/// After `loss.backward()` on a step that ran with [`LayerRegistry::start_capture`]: the traces of every
/// registered layer (in creation order), read from the recorded activations and probe gradients. Turns capture
/// off and frees what was recorded.
pub fn collect(registry: &LayerRegistry, loss_scale: f64) -> Result<Vec<LayerTraces>> {
    if !(loss_scale.is_finite() && loss_scale > 0.0) {
        return Err(PrecisionError::config(
            "loss_scale",
            format!("must be a positive number, got {loss_scale}"),
        ));
    }
    let mut inner = registry.lock();
    inner.capturing = false;
    let mut out = Vec::with_capacity(inner.layers.len());
    for slot in inner.layers.iter_mut() {
        let records = std::mem::take(&mut slot.records);
        let pairs: Vec<(Tensor, Tensor)> = records
            .into_iter()
            .filter_map(|r| {
                let g = r.probe.grad();
                g.defined().then_some((r.a, g))
            })
            .collect();
        let (tr_a, tr_g, rows) = traces(&slot.name, &pairs, loss_scale)?;
        out.push(LayerTraces {
            name: slot.name.clone(),
            tr_a,
            tr_g,
            sensitivity: tr_a * tr_g,
            rows,
        });
    }
    Ok(out)
}
