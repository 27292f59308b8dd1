//! AdamW over a `VarStore`'s variables, with its moments exposed so a checkpoint can save and restore them
//! exactly (tch's `nn::Optimizer` cannot export them), global-norm gradient clipping, and the learning-rate
//! schedule (linear warmup, then cosine or linear decay).

use crate::config::{Schedule, TrainConfig};
use crate::error::{ModelError, Result};
use std::collections::HashMap;
use tch::{nn, Tensor};

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
    pub fn new(vs: &nn::VarStore, cfg: &TrainConfig) -> Self {
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
                    ModelError::checkpoint(source, format!("missing optimizer tensor `{key}`"))
                })?;
                if src.size() != dst.size() {
                    return Err(ModelError::Shape {
                        what: format!("{}: `{key}`", source.display()),
                        expected: dst.size(),
                        found: src.size(),
                    });
                }
                tch::no_grad(|| dst.copy_(&src));
            }
        }
        if let Some(extra) = map.keys().next() {
            return Err(ModelError::checkpoint(
                source,
                format!("unexpected optimizer tensor `{extra}`"),
            ));
        }
        self.t = t;
        Ok(())
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total_steps`: linear warmup over `warmup_steps` to
/// `lr`, then cosine or linear decay to `lr * final_lr_ratio` at the last step.
pub fn learning_rate(cfg: &TrainConfig, step: u64, total_steps: u64) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = total_steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / span).clamp(0.0, 1.0);
    let f = cfg.final_lr_ratio;
    let scale = match cfg.schedule {
        Schedule::Cosine => f + (1.0 - f) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::Linear => 1.0 - (1.0 - f) * progress,
    };
    cfg.lr * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_final_ratio() {
        let cfg = TrainConfig {
            lr: 1.0,
            warmup_steps: 10,
            final_lr_ratio: 0.1,
            ..Default::default()
        };
        assert!((learning_rate(&cfg, 0, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&cfg, 9, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cfg, 100, 100) - 0.1).abs() < 1e-12);
        let lin = TrainConfig {
            schedule: Schedule::Linear,
            ..cfg
        };
        assert!((learning_rate(&lin, 55, 100) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[2, 2], nn::Init::Const(1.0));
        let cfg = TrainConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, &cfg);
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
