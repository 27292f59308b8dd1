//! fp8 e4m3 ("e4m3fn": 1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities, largest finite
//! value 448, smallest normal 2^-6, subnormal step 2^-9) with one scale per tensor.
//!
//! - [`fake_quant_e4m3`]: quantise-dequantise emulation with a straight-through gradient (the value is the
//!   fp8-rounded tensor, the gradient flows to the f32 input unchanged). Used for fp8 layers on CPU.
//! - [`scaled_mm_linear`]: a real fp8 matmul through libtorch's `_scaled_mm` (CUDA, sm89+).
//!
//! Scaling: `scale = amax(|x|) / 448`, so the largest magnitude maps to the top of the e4m3 range; the tensor is
//! rounded as `round_e4m3(x / scale) * scale`. After scaling, a value in the normal range (`|x / scale| >= 2^-6`)
//! has relative rounding error at most 2^-4 (half a unit in the last of 3 mantissa bits).
//!
//! Rounding to e4m3 uses libtorch's own `Float8e4m3fn` cast when it works in this libtorch build (probed once,
//! and checked against [`round_e4m3_ops`] by the tests); otherwise the same round-to-nearest-even written with
//! ordinary tensor ops.

use crate::error::Result;
use std::sync::OnceLock;
use tch::{Kind, Tensor};

/// Largest finite e4m3fn value.
pub const E4M3_MAX: f64 = 448.0;
/// Smallest normal e4m3fn magnitude, 2^-6.
pub const E4M3_MIN_NORMAL: f64 = 0.015625;
/// Bound on the relative rounding error of a normal value: 2^-4.
pub const E4M3_REL_ERROR: f64 = 0.0625;

/// Round-to-nearest-even onto the e4m3fn grid, saturating at ±448, written with plain f32 tensor ops (works on
/// every device and every libtorch). `x`: any shape, f32.
pub fn round_e4m3_ops(x: &Tensor) -> Tensor {
    let ax = x.abs().clamp_max(E4M3_MAX);
    // Exponent of the binade, at least the normal minimum -6 (below it the spacing stays 2^-9: subnormals).
    let e = ax.clamp_min(E4M3_MIN_NORMAL).log2().floor();
    let step = (e - 3.0).exp2(); // spacing of 3-bit mantissas in that binade
    let q = (ax / &step).round() * step; // torch's round is half-to-even
    q.clamp_max(E4M3_MAX) * x.sign()
}

/// Round-to-nearest-even onto the e4m3fn grid through libtorch's `Float8e4m3fn` kind (saturating first: the
/// cast itself maps out-of-range values to NaN).
pub fn round_e4m3_native(x: &Tensor) -> Result<Tensor> {
    Ok(x.clamp(-E4M3_MAX, E4M3_MAX)
        .f_to_kind(Kind::Float8e4m3fn)?
        .f_to_kind(Kind::Float)?)
}

/// Whether libtorch's `Float8e4m3fn` cast works here and agrees with [`round_e4m3_ops`] on a probe grid
/// (checked once per process).
pub fn native_cast_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let probe = Tensor::linspace(-460.0, 460.0, 4097, (Kind::Float, tch::Device::Cpu));
        match round_e4m3_native(&probe) {
            Ok(n) => n.equal(&round_e4m3_ops(&probe)),
            Err(_) => false,
        }
    })
}

/// Rounds f32 `x` onto the e4m3fn grid (native cast when it works, else [`round_e4m3_ops`]).
pub fn round_e4m3(x: &Tensor) -> Tensor {
    if native_cast_works() {
        if let Ok(t) = round_e4m3_native(x) {
            return t;
        }
    }
    round_e4m3_ops(x)
}

/// Per-tensor scale `amax(|x|) / 448` as a 0-dim f32 tensor (1 for an all-zero tensor); no gradient.
pub fn e4m3_scale(x: &Tensor) -> Tensor {
    let amax = x.detach().abs().max().to_kind(Kind::Float);
    let scale = amax / E4M3_MAX;
    // An all-zero (or denormal-tiny) tensor gets scale 1 so that nothing divides by zero.
    scale.where_self(&scale.gt(f32::MIN_POSITIVE as f64), &scale.ones_like())
}

/// Quantise-dequantise `x` (f32) through e4m3 with a per-tensor scale. Straight-through estimator: the value is
/// the dequantised tensor, the gradient with respect to `x` is the identity.
pub fn fake_quant_e4m3(x: &Tensor) -> Tensor {
    let xd = x.detach();
    let scale = e4m3_scale(&xd);
    let q = round_e4m3(&(&xd / &scale)) * &scale;
    // q + (x - x.detach()) has exactly q's value and x's gradient.
    q + (x - xd)
}

/// `x` (f32) as e4m3 with its per-tensor scale: `(q, scale)` with `x ~ q.to(f32) * scale`; no gradient.
pub fn quantize_e4m3(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let xd = x.detach();
    let scale = e4m3_scale(&xd);
    let q = (&xd / &scale)
        .clamp(-E4M3_MAX, E4M3_MAX)
        .f_to_kind(Kind::Float8e4m3fn)?;
    Ok((q, scale))
}

/// `x W^T + b` with a real fp8 matmul (`_scaled_mm`, f32 output). `x`: `[..., in]`, `w`: `[out, in]`, `b`:
/// `[out]`. libtorch needs CUDA with fp8 tensor cores and `in`, `out` multiples of 16; any failure is returned
/// as an error so that the caller can fall back to emulation. No gradient (see [`crate::linear`]).
pub fn scaled_mm_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let size = x.size();
    let n_in = *size.last().unwrap_or(&0);
    let n_out = w.size()[0];
    let x2 = x.f_reshape([-1, n_in])?; // [R, in]
    let (xq, sx) = quantize_e4m3(&x2)?;
    let (wq, sw) = quantize_e4m3(w)?; // [out, in]; its transpose is the column-major [in, out] `_scaled_mm` wants
    let y = xq.f_internal_scaled_mm(
        &wq.tr(),
        &sx,
        &sw,
        None::<Tensor>,
        None::<Tensor>,
        Kind::Float,
        false,
    )?;
    let y = match b {
        Some(b) => y + b.detach(),
        None => y,
    };
    let mut out_size = size.clone();
    if let Some(last) = out_size.last_mut() {
        *last = n_out;
    }
    Ok(y.f_reshape(out_size.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The e4m3fn grid, enumerated from the bit layout: every finite non-negative value.
    fn grid() -> Vec<f64> {
        let mut v = Vec::new();
        for e in 0..16i32 {
            for m in 0..8i32 {
                if e == 15 && m == 7 {
                    continue; // NaN
                }
                let x = if e == 0 {
                    m as f64 / 8.0 * 2f64.powi(-6)
                } else {
                    (1.0 + m as f64 / 8.0) * 2f64.powi(e - 7)
                };
                v.push(x);
            }
        }
        v
    }

    #[test]
    fn ops_rounding_maps_the_grid_to_itself_and_midpoints_to_even() {
        let g = grid();
        assert_eq!(*g.last().unwrap(), 448.0);
        let t = Tensor::from_slice(&g).to_kind(Kind::Float);
        assert!(round_e4m3_ops(&t).equal(&t));
        assert!(round_e4m3_ops(&-&t).equal(&-&t));
        // Midpoints between neighbours round to the one with an even mantissa.
        let mids: Vec<f64> = g.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        let r = Vec::<f64>::try_from(
            round_e4m3_ops(&Tensor::from_slice(&mids).to_kind(Kind::Float)).to_kind(Kind::Double),
        )
        .unwrap();
        for (i, (m, q)) in mids.iter().zip(&r).enumerate() {
            let (lo, hi) = (g[i], g[i + 1]);
            assert!(*q == lo || *q == hi, "midpoint {m} rounded to {q}");
            let even = if (i % 8) % 2 == 0 { lo } else { hi };
            assert_eq!(*q, even, "midpoint {m} of {lo} and {hi}");
        }
        // Saturation.
        let big = Tensor::from_slice(&[1000.0f32, -500.0]);
        assert_eq!(
            Vec::<f32>::try_from(round_e4m3_ops(&big)).unwrap(),
            vec![448.0, -448.0]
        );
    }

    #[test]
    fn native_cast_agrees_with_the_ops_rounding_when_available() {
        tch::manual_seed(0);
        let x = Tensor::randn([10_000], (Kind::Float, tch::Device::Cpu)) * 50.0;
        match round_e4m3_native(&x) {
            Ok(n) => {
                assert!(n.equal(&round_e4m3_ops(&x)));
                assert!(native_cast_works());
            }
            Err(e) => {
                eprintln!("libtorch has no CPU Float8e4m3fn cast here: {e}");
                assert!(!native_cast_works());
            }
        }
    }

    #[test]
    fn fake_quant_error_is_within_the_e4m3_bound_and_gradient_is_straight_through() {
        tch::manual_seed(1);
        let x = (Tensor::randn([64, 48], (Kind::Float, tch::Device::Cpu)) * 3.0)
            .set_requires_grad(true);
        let q = fake_quant_e4m3(&x);
        let scale = e4m3_scale(&x).double_value(&[]);
        let amax = x.abs().max().double_value(&[]);
        assert!((scale - amax / 448.0).abs() <= 1e-6 * scale);
        let xs = Vec::<f32>::try_from(x.detach().flatten(0, -1)).unwrap();
        let qs = Vec::<f32>::try_from(q.detach().flatten(0, -1)).unwrap();
        let mut n_normal = 0;
        for (a, b) in xs.iter().zip(&qs) {
            let (a, b) = (*a as f64, *b as f64);
            if (a / scale).abs() >= E4M3_MIN_NORMAL {
                n_normal += 1;
                assert!(
                    (a - b).abs() <= E4M3_REL_ERROR * a.abs() * (1.0 + 1e-6),
                    "{a} -> {b}"
                );
            } else {
                // Subnormal range: absolute error at most half the subnormal step 2^-9, in scaled units.
                assert!(
                    (a - b).abs() <= 2f64.powi(-10) * scale * (1.0 + 1e-6),
                    "{a} -> {b}"
                );
            }
        }
        assert!(n_normal > 3000);
        // The values are on the scaled grid: at most 2 * 127 + 1 distinct ones.
        let distinct: std::collections::BTreeSet<u32> = qs.iter().map(|v| v.to_bits()).collect();
        assert!(
            distinct.len() <= 255 && distinct.len() > 100,
            "{}",
            distinct.len()
        );
        // Straight-through: d sum(c * q) / dx = c.
        let c = Tensor::randn([64, 48], (Kind::Float, tch::Device::Cpu));
        (&q * &c).sum(Kind::Float).backward();
        assert!(x.grad().allclose(&c, 0.0, 0.0, false));
        // All-zero input: no NaN.
        let z = fake_quant_e4m3(&Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)));
        assert_eq!(Vec::<f32>::try_from(z).unwrap(), vec![0.0; 3]);
    }
}
