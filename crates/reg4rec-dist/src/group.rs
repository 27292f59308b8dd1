//! [`ProcessGroup`]: a c10d backend (Gloo or NCCL) behind a `TCPStore` rendezvous.

use crate::config::{Backend, DistConfig};
use crate::error::{DistError, Result};
use crate::ffi;
use std::ffi::{c_char, c_int, c_void, CString};
use tch::{Kind, Tensor};

/// Default size of a gradient bucket (MB) in [`ProcessGroup::all_reduce_bucketed`], PyTorch DDP's default.
pub const DEFAULT_BUCKET_MB: f64 = 25.0;

/// How an all-reduce combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size.
    Avg,
}

/// One rank's membership of a process group. Collectives must be called in the same order on every rank.
/// Dropping it closes the connections.
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    backend: Backend,
    device: tch::Device,
    bucket_mb: f64,
}

// SAFETY: a c10d backend may be used from any thread; `ProcessGroup` is not `Sync`, so collectives are never
// issued concurrently through one group.
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world)
            .field("backend", &self.backend)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group: rank 0 serves the `TCPStore` on `master_port`, every rank connects to it, then the
    /// backend connects the ranks to each other. Fails after `cfg.timeout` when a rank does not come.
    pub fn init(cfg: &DistConfig) -> Result<ProcessGroup> {
        cfg.validate()?;
        if cfg.backend == Backend::Nccl && !Self::nccl_available() {
            return Err(DistError::config(
                "backend",
                "NCCL requested but reg4rec-dist was built without the `nccl` feature",
            ));
        }
        let addr = CString::new(cfg.master_addr.as_str())
            .map_err(|_| DistError::config("MASTER_ADDR", "contains a NUL byte"))?;
        let to_int = |v: usize, field: &str| {
            c_int::try_from(v).map_err(|_| DistError::config(field, format!("{v} is too large")))
        };
        let timeout_ms = i64::try_from(cfg.timeout.as_millis())
            .map_err(|_| DistError::config("timeout", "too large"))?
            .max(1);
        let mut raw: *mut c_void = std::ptr::null_mut();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid C string, out-pointers to locals; the shim catches every exception.
        let rc = unsafe {
            ffi::r4d_init(
                addr.as_ptr(),
                cfg.master_port,
                to_int(cfg.rank, "RANK")?,
                to_int(cfg.world_size, "WORLD_SIZE")?,
                timeout_ms,
                match cfg.backend {
                    Backend::Gloo => 0,
                    Backend::Nccl => 1,
                },
                &mut raw,
                &mut err,
            )
        };
        if rc != 0 || raw.is_null() {
            return Err(DistError::C10d {
                op: "rendezvous",
                rank: cfg.rank,
                world: cfg.world_size,
                message: format!(
                    "{} (master {}:{})",
                    ffi::take_error(err),
                    cfg.master_addr,
                    cfg.master_port
                ),
            });
        }
        Ok(ProcessGroup {
            raw,
            rank: cfg.rank,
            world: cfg.world_size,
            backend: cfg.backend,
            device: match cfg.backend {
                Backend::Gloo => tch::Device::Cpu,
                Backend::Nccl => tch::Device::Cuda(cfg.local_rank),
            },
            bucket_mb: DEFAULT_BUCKET_MB,
        })
    }

    /// Whether this build can create NCCL groups (cargo feature `nccl`).
    pub fn nccl_available() -> bool {
        // SAFETY: no arguments, no state.
        unsafe { ffi::r4d_nccl_available() != 0 }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The device of this rank's tensors: CPU for Gloo, `cuda:LOCAL_RANK` for NCCL.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// The CUDA device index of this rank's tensors (`LOCAL_RANK` under NCCL, 0 under Gloo).
    pub fn device_index(&self) -> usize {
        match self.device {
            tch::Device::Cuda(i) => i,
            _ => 0,
        }
    }

    /// Sets the bucket size (MB) the `reg4rec_train::Collective` implementation uses.
    pub fn with_bucket_mb(mut self, bucket_mb: f64) -> Result<Self> {
        if !(bucket_mb.is_finite() && bucket_mb > 0.0) {
            return Err(DistError::config(
                "bucket_mb",
                format!("must be > 0, got {bucket_mb}"),
            ));
        }
        self.bucket_mb = bucket_mb;
        Ok(self)
    }

    fn check(&self, op: &'static str, rc: c_int, err: *mut c_char) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        Err(DistError::C10d {
            op,
            rank: self.rank,
            world: self.world,
            message: ffi::take_error(err),
        })
    }

    fn check_tensors(&self, tensors: &[&Tensor]) -> Result<()> {
        for t in tensors {
            if !t.defined() {
                return Err(DistError::Tensor("undefined tensor in a collective".into()));
            }
            if !t.is_contiguous() {
                return Err(DistError::Tensor(format!(
                    "collectives need contiguous tensors (shape {:?})",
                    t.size()
                )));
            }
            let cuda = t.device().is_cuda();
            if cuda != (self.backend == Backend::Nccl) {
                return Err(DistError::Tensor(format!(
                    "a tensor on {:?} cannot go through the {:?} backend",
                    t.device(),
                    self.backend
                )));
            }
        }
        Ok(())
    }

    /// In-place all-reduce of one contiguous tensor.
    pub fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.all_reduce_each(&[&*t], op)
    }

    /// In-place all-reduce of each tensor, one collective per tensor.
    pub fn all_reduce_each(&self, tensors: &[&Tensor], op: ReduceOp) -> Result<()> {
        self.check_tensors(tensors)?;
        let ptrs: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        let mut err: *mut c_char = std::ptr::null_mut();
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
        };
        // SAFETY: the pointers are live `at::Tensor`s borrowed for the call.
        let rc = unsafe { ffi::r4d_all_reduce(self.raw, ptrs.as_ptr(), ptrs.len(), op, &mut err) };
        self.check("all_reduce", rc, err)
    }

    /// In-place broadcast of one contiguous tensor from `root` to every rank.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.broadcast_each(&[&*t], root)
    }

    /// In-place broadcast of each tensor from `root`, one collective per tensor.
    pub fn broadcast_each(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        self.check_tensors(tensors)?;
        let root = c_int::try_from(root)
            .map_err(|_| DistError::config("root", format!("{root} is too large")))?;
        let ptrs: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in `all_reduce_each`.
        let rc = unsafe { ffi::r4d_broadcast(self.raw, ptrs.as_ptr(), ptrs.len(), root, &mut err) };
        self.check("broadcast", rc, err)
    }

    /// Waits until every rank reaches the barrier.
    pub fn barrier(&self) -> Result<()> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: live group, out-pointer to a local.
        let rc = unsafe { ffi::r4d_barrier(self.raw, &mut err) };
        self.check("barrier", rc, err)
    }

    /// All-reduce of many tensors (gradients) through flat buckets of at most `bucket_mb` MB: tensors of one
    /// kind and device are concatenated in order, reduced in one collective per bucket, and copied back. A
    /// tensor larger than a bucket goes alone. Tensors need not be contiguous.
    pub fn all_reduce_bucketed(
        &self,
        tensors: &[Tensor],
        op: ReduceOp,
        bucket_mb: f64,
    ) -> Result<()> {
        self.bucketed(tensors, bucket_mb, |flat| self.all_reduce_each(&[flat], op))
    }

    /// Broadcast of many tensors (parameters) from `root` through flat buckets, as
    /// [`Self::all_reduce_bucketed`].
    pub fn broadcast_bucketed(
        &self,
        tensors: &[Tensor],
        root: usize,
        bucket_mb: f64,
    ) -> Result<()> {
        self.bucketed(tensors, bucket_mb, |flat| {
            self.broadcast_each(&[flat], root)
        })
    }

    fn bucketed(
        &self,
        tensors: &[Tensor],
        bucket_mb: f64,
        collective: impl Fn(&Tensor) -> Result<()>,
    ) -> Result<()> {
        if !(bucket_mb.is_finite() && bucket_mb > 0.0) {
            return Err(DistError::config(
                "bucket_mb",
                format!("must be > 0, got {bucket_mb}"),
            ));
        }
        let limit = (bucket_mb * 1024.0 * 1024.0) as usize;
        for bucket in buckets(tensors, limit)? {
            let group = &tensors[bucket];
            tch::no_grad(|| -> Result<()> {
                let flat = if group.len() == 1 {
                    group[0].reshape([-1]).contiguous()
                } else {
                    let views: Vec<Tensor> = group.iter().map(|t| t.reshape([-1])).collect();
                    Tensor::f_cat(&views, 0)?
                };
                collective(&flat)?;
                let mut offset = 0i64;
                for t in group {
                    let n = t.numel() as i64;
                    let mut dst = t.shallow_clone();
                    dst.f_copy_(&flat.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?)?;
                    offset += n;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Splits `tensors` into consecutive runs of one kind and device holding at most `limit` bytes (a larger
/// tensor alone).
fn buckets(tensors: &[Tensor], limit: usize) -> Result<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut bytes = 0usize;
    let mut key: Option<(Kind, tch::Device)> = None;
    for (i, t) in tensors.iter().enumerate() {
        if !t.defined() {
            return Err(DistError::Tensor(format!("tensor {i} is undefined")));
        }
        let k = (t.kind(), t.device());
        let size = t.numel() * t.kind().elt_size_in_bytes();
        if i > start && (key != Some(k) || bytes + size > limit) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        key = Some(k);
        bytes += size;
    }
    if start < tensors.len() {
        out.push(start..tensors.len());
    }
    Ok(out)
}

impl reg4rec_train::Collective for ProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, tensors: &[Tensor]) -> std::result::Result<(), String> {
        self.all_reduce_bucketed(tensors, ReduceOp::Sum, self.bucket_mb)
            .map_err(|e| e.to_string())
    }

    fn broadcast(&self, tensors: &[Tensor], root: usize) -> std::result::Result<(), String> {
        self.broadcast_bucketed(tensors, root, self.bucket_mb)
            .map_err(|e| e.to_string())
    }

    fn device(&self) -> tch::Device {
        self.device
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `r4d_init` and is freed once.
        unsafe { ffi::r4d_free(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_respect_the_size_limit_kind_and_order() {
        let f = |n: i64| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu));
        let d = |n: i64| Tensor::zeros([n], (Kind::Double, tch::Device::Cpu));
        // 4-byte floats, limit 40 bytes = 10 floats.
        let ts = vec![f(4), f(4), f(4), f(20), d(1), d(1), f(1)];
        let b = buckets(&ts, 40).unwrap();
        assert_eq!(b, vec![0..2, 2..3, 3..4, 4..6, 6..7]);
        assert!(buckets(&[], 40).unwrap().is_empty());
    }
}
