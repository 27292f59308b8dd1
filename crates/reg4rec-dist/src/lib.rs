//! Process groups for data-parallel training, on the engine PyTorch itself uses: a C++ shim over c10d
//! (`cpp/shim.cpp`, built by `build.rs` against the libtorch headers tch links) makes a `TCPStore` rendezvous
//! (rank 0 hosts it at the master address and port) and a `ProcessGroupGloo` for CPU tensors or, with the
//! `nccl` feature, a `ProcessGroupNCCL` for CUDA tensors. [`ProcessGroup`] exposes all-reduce (sum, average),
//! a bucketed all-reduce over many tensors (gradients), broadcast and barrier; every call has a timeout so a
//! dead peer gives a [`DistError`], never a hang, and a C++ exception becomes an error message, never an
//! abort. [`DistConfig::from_env`] reads torchrun's variables (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`, `LOCAL_RANK`); [`ProcessGroup`] implements `reg4rec_train::Collective`, through
//! which pre-training and alignment synchronise their replicas.

mod config;
mod error;
mod ffi;
mod group;

pub use config::{Backend, DistConfig};
pub use error::{DistError, Result};
pub use group::{ProcessGroup, ReduceOp, DEFAULT_BUCKET_MB};
