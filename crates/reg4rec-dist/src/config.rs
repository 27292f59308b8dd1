//! Where a rank finds its peers: torchrun's environment variables, or explicit values.

use crate::error::{DistError, Result};
use std::time::Duration;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors, TCP.
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors (needs the `nccl` feature).
    Nccl,
}

impl Backend {
    /// NCCL for CUDA devices, Gloo otherwise (what `torch.distributed` users pick).
    pub fn for_device(device: tch::Device) -> Backend {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

/// Rendezvous and collective settings of one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistConfig {
    /// Host of rank 0, which serves the `TCPStore` (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the `TCPStore` (`MASTER_PORT`).
    pub master_port: u16,
    /// Global rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// Number of ranks over all machines (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank on this machine (`LOCAL_RANK`): the CUDA device index a rank uses.
    pub local_rank: usize,
    /// Limit of the rendezvous and of every collective: a peer silent for longer is an error.
    pub timeout: Duration,
    pub backend: Backend,
}

/// Default limit of the rendezvous and of every collective (`REG4REC_DIST_TIMEOUT_S`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl DistConfig {
    /// A world of one process: rank 0 serving its own store on `127.0.0.1:port`.
    pub fn single(master_port: u16, backend: Backend) -> DistConfig {
        DistConfig {
            master_addr: "127.0.0.1".into(),
            master_port,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            timeout: DEFAULT_TIMEOUT,
            backend,
        }
    }

    /// Reads torchrun's variables `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` and `LOCAL_RANK`
    /// (default: `RANK`), plus `REG4REC_DIST_TIMEOUT_S` (default 600). `None` when `WORLD_SIZE` is unset: the
    /// process was not started as a rank.
    pub fn from_env(backend: Backend) -> Result<Option<DistConfig>> {
        Self::from_lookup(backend, |k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any variable source.
    pub fn from_lookup(
        backend: Backend,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<DistConfig>> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |key: &str, value: Option<String>| -> Result<usize> {
            let v = value.ok_or_else(|| DistError::config(key, "must be set with WORLD_SIZE"))?;
            v.trim()
                .parse::<usize>()
                .map_err(|_| DistError::config(key, format!("`{v}` is not a non-negative integer")))
        };
        let world_size = num("WORLD_SIZE", Some(world))?;
        let rank = num("RANK", get("RANK"))?;
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", Some(v))?,
            None => rank,
        };
        let port = num("MASTER_PORT", get("MASTER_PORT"))?;
        let master_port = u16::try_from(port)
            .map_err(|_| DistError::config("MASTER_PORT", format!("{port} is not a port")))?;
        let master_addr = get("MASTER_ADDR")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| DistError::config("MASTER_ADDR", "must be set with WORLD_SIZE"))?;
        let timeout = match get("REG4REC_DIST_TIMEOUT_S") {
            Some(v) => {
                let s: f64 = v.trim().parse().map_err(|_| {
                    DistError::config("REG4REC_DIST_TIMEOUT_S", format!("`{v}` is not a number"))
                })?;
                if !(s.is_finite() && s > 0.0) {
                    return Err(DistError::config(
                        "REG4REC_DIST_TIMEOUT_S",
                        format!("must be > 0 seconds, got {v}"),
                    ));
                }
                Duration::from_secs_f64(s)
            }
            None => DEFAULT_TIMEOUT,
        };
        let cfg = DistConfig {
            master_addr: master_addr.trim().to_string(),
            master_port,
            rank,
            world_size,
            local_rank,
            timeout,
            backend,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(DistError::config("WORLD_SIZE", "must be >= 1"));
        }
        if self.rank >= self.world_size {
            return Err(DistError::config(
                "RANK",
                format!("{} is not below WORLD_SIZE {}", self.rank, self.world_size),
            ));
        }
        if self.timeout.is_zero() {
            return Err(DistError::config("timeout", "must be > 0"));
        }
        if self.master_addr.is_empty() {
            return Err(DistError::config("MASTER_ADDR", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn torchrun_variables_are_read_and_checked() {
        assert_eq!(
            DistConfig::from_lookup(Backend::Gloo, lookup(&[])).unwrap(),
            None
        );
        let vars = [
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("REG4REC_DIST_TIMEOUT_S", "2.5"),
        ];
        let cfg = DistConfig::from_lookup(Backend::Gloo, lookup(&vars))
            .unwrap()
            .unwrap();
        assert_eq!((cfg.rank, cfg.world_size, cfg.local_rank), (3, 4, 1));
        assert_eq!(cfg.master_addr, "10.0.0.1");
        assert_eq!(cfg.master_port, 29500);
        assert_eq!(cfg.timeout, Duration::from_millis(2500));

        let bad_rank = [
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ];
        let e = DistConfig::from_lookup(Backend::Gloo, lookup(&bad_rank)).unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let no_port = [("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h")];
        let e = DistConfig::from_lookup(Backend::Gloo, lookup(&no_port)).unwrap_err();
        assert!(e.to_string().contains("MASTER_PORT"), "{e}");
        let big_port = [
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ];
        let e = DistConfig::from_lookup(Backend::Gloo, lookup(&big_port)).unwrap_err();
        assert!(e.to_string().contains("70000"), "{e}");
    }
}
