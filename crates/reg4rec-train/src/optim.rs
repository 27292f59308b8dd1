//! AdamW over a `VarStore`'s variables, with its moments exposed so a checkpoint can save and restore them
//! exactly (tch's `nn::Optimizer` cannot export them), global-norm gradient clipping, and the learning-rate
//! schedule (linear warmup, then cosine or linear decay).

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{nn, Tensor};

/// AdamW's constants (the learning rate comes with each step from an [`LrSchedule`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to tensors of rank >= 2 only.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// beta1 0.9, beta2 0.98, eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Half a cosine from `lr` to `lr * final_lr_ratio` at the last step.
    Cosine,
    /// A straight line from `lr` to `lr * final_lr_ratio` at the last step.
    Linear,
    /// `lr` throughout (after warmup).
    Constant,
}

/// The learning rate of every optimizer step: linear warmup over `warmup_steps` to `lr`, then `schedule`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub final_lr_ratio: f64,
}

impl LrSchedule {
    /// The learning rate at optimizer step `step` (0-based) of `total_steps`.
    pub fn at(&self, step: u64, total_steps: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
        let f = self.final_lr_ratio;
        let scale = match self.schedule {
            Schedule::Cosine => {
                f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Schedule::Linear => 1.0 - (1.0 - f) * progress,
            Schedule::Constant => 1.0,
        };
        self.lr * scale
    }
}

/// Decoupled-weight-decay Adam (Loshchilov & Hutter). Weight decay applies to tensors of rank >= 2 (linear
/// weights and embedding tables), not to biases or norm parameters.
#[derive(Debug)]
pub struct AdamW {
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates done so far (bias correction uses `t + 1`).
    pub t: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// Zero moments for every trainable variable of `vs`, in name order.
    pub fn new(vs: &nn::VarStore, cfg: AdamWConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |vars: &[(String, Tensor)]| {
            vars.iter().map(|(_, t)| t.zeros_like()).collect::<Vec<_>>()
        };
        AdamW {
            m: zeros(&vars),
            v: zeros(&vars),
            names: vars.iter().map(|(n, _)| n.clone()).collect(),
            params: vars.into_iter().map(|(_, t)| t).collect(),
            t: 0,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        }
    }

    /// The optimized variables, in name order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Global L2 norm of the gradients; when above `max_norm > 0`, scales them down to `max_norm`.
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .collect();
            if grads.is_empty() {
                return 0.0;
            }
            let sq: Vec<Tensor> = grads
                .iter()
                .map(|g| g.square().sum(tch::Kind::Float))
                .collect();
            let norm = Tensor::stack(&sq, 0)
                .sum(tch::Kind::Float)
                .sqrt()
                .double_value(&[]);
            if max_norm > 0.0 && norm > max_norm {
                let scale = max_norm / (norm + 1e-6);
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
            norm
        })
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(self.beta1);
                let _ = m.g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v.g_mul_scalar_(self.beta2);
                let _ = v.g_add_(&(g.square() * (1.0 - self.beta2)));
                if self.weight_decay > 0.0 && p.dim() >= 2 {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                }
                let denom = (&*v / bc2).sqrt() + self.eps;
                let _ = p.g_sub_(&((&*m / bc1) / denom * lr));
            }
        })
    }

    /// The moments as named tensors: `m.<variable>` and `v.<variable>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.names.len());
        for (n, (m, v)) in self.names.iter().zip(self.m.iter().zip(&self.v)) {
            out.push((format!("m.{n}"), m.shallow_clone()));
            out.push((format!("v.{n}"), v.shallow_clone()));
        }
        out
    }

    /// Restores moments saved by [`Self::state_tensors`] and the update count `t`; every variable must be
    /// present with its shape. `source` names the file for errors.
    pub fn load_state(
        &mut self,
        named: Vec<(String, Tensor)>,
        t: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        let mut map: HashMap<String, Tensor> = named.into_iter().collect();
        for (n, (m, v)) in self
            .names
            .iter()
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            for (key, dst) in [(format!("m.{n}"), m), (format!("v.{n}"), v)] {
                let src = map.remove(&key).ok_or_else(|| {
                    TrainError::checkpoint(source, format!("missing optimizer tensor `{key}`"))
                })?;
                if src.size() != dst.size() {
                    return Err(TrainError::checkpoint(
                        source,
                        format!(
                            "optimizer tensor `{key}` has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        ),
                    ));
                }
                tch::no_grad(|| dst.copy_(&src));
            }
        }
        if let Some(extra) = map.keys().next() {
            return Err(TrainError::checkpoint(
                source,
                format!("unexpected optimizer tensor `{extra}`"),
            ));
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_final_ratio() {
        let cfg = LrSchedule {
            lr: 1.0,
            warmup_steps: 10,
            schedule: Schedule::Cosine,
            final_lr_ratio: 0.1,
        };
        assert!((cfg.at(0, 100) - 0.1).abs() < 1e-12);
        assert!((cfg.at(9, 100) - 1.0).abs() < 1e-12);
        assert!((cfg.at(100, 100) - 0.1).abs() < 1e-12);
        let lin = LrSchedule {
            schedule: Schedule::Linear,
            ..cfg
        };
        assert!((lin.at(55, 100) - 0.55).abs() < 1e-12);
        let constant = LrSchedule {
            schedule: Schedule::Constant,
            ..cfg
        };
        assert_eq!(constant.at(55, 100), 1.0);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[2, 2], nn::Init::Const(1.0));
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, cfg);
        (&w * Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([2, 2]))
            .sum(tch::Kind::Float)
            .backward();
        opt.step(0.01);
        // First step: m_hat = g, v_hat = g^2, so the update is lr * sign(g) (up to eps) after decay.
        let got: Vec<f32> = Vec::try_from(w.flatten(0, -1)).unwrap();
        let decayed = 1.0 - 0.01 * 0.1;
        let want = [
            decayed - 0.01,
            decayed + 0.01,
            decayed - 0.01,
            decayed - 0.01,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?}");
        }
    }
}
