//! Data parallelism seen from the trainers: a [`Collective`] (implemented by `reg4rec-dist` over c10d, so
//! the engine does not depend on it) and the synchronisation steps built on it: averaging gradients weighted
//! by each rank's examples, broadcasting rank 0's parameters, optimizer moments and training state, summing
//! metrics, and checking that the replicas are bit-identical.

use crate::error::{Result, TrainError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// The collectives a data-parallel trainer needs. Every rank calls them in the same order.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// In-place sum over the ranks of each tensor (bucketed by the implementation).
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> std::result::Result<(), String>;
    /// In-place copy of rank `root`'s tensors to every rank.
    fn broadcast(&self, tensors: &[Tensor], root: usize) -> std::result::Result<(), String>;
    /// The device collectives take their tensors on (CPU for Gloo, the rank's GPU for NCCL).
    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// How a trainer runs data-parallel: `group` synchronises the replicas; every `check_replicas_every` steps
/// (0 = never) the ranks verify that their parameters are bit-identical to rank 0's and fail otherwise.
#[derive(Clone, Copy)]
pub struct DataParallel<'a> {
    pub group: &'a dyn Collective,
    pub check_replicas_every: u64,
}

impl<'a> DataParallel<'a> {
    pub fn new(group: &'a dyn Collective) -> Self {
        DataParallel {
            group,
            check_replicas_every: 0,
        }
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    pub fn is_main(&self) -> bool {
        self.group.rank() == 0
    }

    fn err(&self, what: &str, e: String) -> TrainError {
        TrainError::Dist(format!(
            "{what} (rank {} of {}): {e}",
            self.rank(),
            self.world_size()
        ))
    }

    fn on_group(&self, t: &Tensor) -> Tensor {
        t.to_device(self.group.device())
    }

    /// Sums `values` over the ranks (f64, exact for counts below 2^53).
    pub fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = self.on_group(&Tensor::from_slice(values));
        self.group
            .all_reduce_sum(std::slice::from_ref(&t))
            .map_err(|e| self.err("summing metrics", e))?;
        Ok(Vec::<f64>::try_from(t.to_device(Device::Cpu))?)
    }

    /// Rank 0's value of `value` on every rank (JSON through a byte tensor).
    pub fn broadcast_json<T: Serialize + DeserializeOwned>(&self, value: &T) -> Result<T> {
        let bytes = if self.is_main() {
            serde_json::to_vec(value)
                .map_err(|e| TrainError::Input(format!("serialising the training state: {e}")))?
        } else {
            Vec::new()
        };
        let len = self.on_group(&Tensor::from_slice(&[bytes.len() as i64]));
        self.group
            .broadcast(std::slice::from_ref(&len), 0)
            .map_err(|e| self.err("broadcasting the state size", e))?;
        let n = len.int64_value(&[0]);
        let buf = if self.is_main() {
            Tensor::from_slice(&bytes)
        } else {
            Tensor::zeros([n], (Kind::Uint8, Device::Cpu))
        };
        let buf = self.on_group(&buf);
        self.group
            .broadcast(std::slice::from_ref(&buf), 0)
            .map_err(|e| self.err("broadcasting the state", e))?;
        let got = Vec::<u8>::try_from(buf.to_device(Device::Cpu))?;
        serde_json::from_slice(&got)
            .map_err(|e| TrainError::Input(format!("training state from rank 0: {e}")))
    }

    /// Copies rank 0's tensors (parameters, optimizer moments) to every rank, in place.
    pub fn broadcast_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        tch::no_grad(|| {
            let staged = self.stage(tensors);
            self.group
                .broadcast(&staged, 0)
                .map_err(|e| self.err("broadcasting parameters", e))?;
            self.unstage(tensors, &staged);
            Ok(())
        })
    }

    /// Replaces each rank's gradients by `sum_r weight_r * grad_r / sum_r weight_r`: with a loss that is a
    /// mean over the rank's `weight` examples, that is the gradient of the mean over the global batch. The
    /// parameters without a gradient must be the same on every rank (checked).
    pub fn average_gradients(&self, params: &[Tensor], weight: f64) -> Result<()> {
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        let n = grads.len() as f64;
        let totals = self.sum_f64(&[weight, n])?;
        if totals[1] != n * self.world_size() as f64 {
            return Err(self.err(
                "averaging gradients",
                format!(
                    "this rank has {n} gradients, the ranks {} in total",
                    totals[1]
                ),
            ));
        }
        if totals[0] <= 0.0 {
            return Err(self.err("averaging gradients", "no examples on any rank".into()));
        }
        tch::no_grad(|| {
            let scale = weight / totals[0];
            let staged = self.stage(&grads);
            for g in &staged {
                let _ = g.shallow_clone().g_mul_scalar_(scale);
            }
            self.group
                .all_reduce_sum(&staged)
                .map_err(|e| self.err("all-reducing gradients", e))?;
            self.unstage(&grads, &staged);
            Ok(())
        })
    }

    /// Fails on every rank when any rank's `params` differ from rank 0's in any bit.
    pub fn check_replicas(&self, params: &[Tensor], step: u64) -> Result<()> {
        let theirs: Vec<Tensor> = tch::no_grad(|| {
            params
                .iter()
                .map(|p| self.on_group(&p.detach()).copy())
                .collect()
        });
        self.group
            .broadcast(&theirs, 0)
            .map_err(|e| self.err("checking replicas", e))?;
        let differ = params
            .iter()
            .zip(&theirs)
            .filter(|(p, t)| !p.detach().equal(&t.to_device(p.device())))
            .count();
        let total = self.sum_f64(&[differ as f64])?[0];
        if total > 0.0 {
            return Err(self.err(
                "checking replicas",
                format!(
                    "after step {step}, {total} parameter tensors differ from rank 0's over the ranks \
                     ({differ} on this rank)"
                ),
            ));
        }
        Ok(())
    }

    /// The tensors on the group's device (themselves when already there).
    fn stage(&self, tensors: &[Tensor]) -> Vec<Tensor> {
        tensors
            .iter()
            .map(|t| {
                if t.device() == self.group.device() {
                    t.shallow_clone()
                } else {
                    self.on_group(t)
                }
            })
            .collect()
    }

    /// Copies staged copies back (nothing to do for tensors that were already on the group's device).
    fn unstage(&self, tensors: &[Tensor], staged: &[Tensor]) {
        for (t, s) in tensors.iter().zip(staged) {
            if t.device() != s.device() {
                let mut dst = t.shallow_clone();
                dst.copy_(s);
            }
        }
    }
}
