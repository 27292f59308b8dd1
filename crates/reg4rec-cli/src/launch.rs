//! Data-parallel launch, like `torchrun`: `--nproc N` re-executes this command as N local ranks with torchrun's
//! variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`), and
//! `--nnodes`/`--node-rank`/`--master-addr`/`--master-port` place them among several machines. A process that
//! finds `WORLD_SIZE` in its environment (started by this launcher or by `torchrun`) runs as that rank. When a
//! rank fails the launcher kills the other local ranks and fails naming it; ranks on other machines stop at
//! their next collective (a closed connection, or the `--dist-timeout`).

use anyhow::{bail, Context, Result};
use clap::Args;
use reg4rec_dist::{Backend, DistConfig, ProcessGroup};
use reg4rec_train::DataParallel;
use std::process::{Child, Command};
use std::time::Duration;

/// The launch flags of `pretrain` and `align` (torchrun's names).
#[derive(Args, Debug, Clone)]
pub struct DistArgs {
    /// Processes (ranks) to start on this machine. With `--nnodes 1`, 1 is a plain single process.
    #[arg(long, default_value_t = 1)]
    pub nproc: usize,
    /// Machines taking part; each runs the same command with its own `--node-rank`.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's index, `0..nnodes` (node 0 hosts the rendezvous).
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of node 0, reachable from every node.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Free TCP port on node 0 for the rendezvous store.
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// Seconds a rank waits for its peers (rendezvous and each collective) before failing.
    #[arg(long, default_value_t = 600.0)]
    pub dist_timeout: f64,
    /// Size (MB) of the gradient buckets all-reduced together.
    #[arg(long, default_value_t = reg4rec_dist::DEFAULT_BUCKET_MB)]
    pub bucket_mb: f64,
    /// Every N optimizer steps, check that all ranks hold bit-identical parameters (0: never).
    #[arg(long, default_value_t = 0)]
    pub check_replicas_every: u64,
}

/// What this process is.
pub enum Role {
    /// Not distributed: train as before.
    Single,
    /// The launcher: its ranks did the work.
    Launched,
    /// One rank of a group.
    Rank(ProcessGroup),
}

impl DistArgs {
    fn validate(&self) -> Result<()> {
        if self.nproc == 0 || self.nnodes == 0 {
            bail!("--nproc and --nnodes must be >= 1");
        }
        if self.node_rank >= self.nnodes {
            bail!(
                "--node-rank {} must be below --nnodes {}",
                self.node_rank,
                self.nnodes
            );
        }
        if !(self.dist_timeout.is_finite() && self.dist_timeout > 0.0) {
            bail!("--dist-timeout must be > 0 seconds");
        }
        if !(self.bucket_mb.is_finite() && self.bucket_mb > 0.0) {
            bail!("--bucket-mb must be > 0");
        }
        Ok(())
    }

    /// Decides the role: joins the group when started as a rank, launches the local ranks (and waits for
    /// them) when `--nproc`/`--nnodes` ask for more than one process, else a single process. `device` picks
    /// the backend (NCCL for CUDA, Gloo otherwise).
    pub fn role(&self, device: tch::Device) -> Result<Role> {
        self.validate()?;
        if let Some(cfg) = DistConfig::from_env(Backend::for_device(device))? {
            let pg = ProcessGroup::init(&cfg)
                .with_context(|| format!("joining the process group as rank {}", cfg.rank))?
                .with_bucket_mb(self.bucket_mb)?;
            return Ok(Role::Rank(pg));
        }
        if self.nproc * self.nnodes == 1 {
            return Ok(Role::Single);
        }
        self.launch()?;
        Ok(Role::Launched)
    }

    /// [`Self::role`] for a trainer whose config names its `device`: `None` when this process was the
    /// launcher (its ranks did the work); otherwise `Some` of this rank's group (`None` for a single process),
    /// with `device` set to the rank's own GPU (`cuda:LOCAL_RANK`) under NCCL.
    pub fn join(&self, device: &mut String) -> Result<Option<Option<ProcessGroup>>> {
        let parsed = reg4rec_model::config::require_device(device)?;
        Ok(match self.role(parsed)? {
            Role::Launched => None,
            Role::Single => Some(None),
            Role::Rank(pg) => {
                if pg.device().is_cuda() {
                    *device = format!("cuda:{}", pg.device_index());
                }
                Some(Some(pg))
            }
        })
    }

    /// The trainers' view of this rank's group.
    pub fn data_parallel<'a>(&self, pg: &'a Option<ProcessGroup>) -> Option<DataParallel<'a>> {
        pg.as_ref().map(|pg| DataParallel {
            group: pg,
            check_replicas_every: self.check_replicas_every,
        })
    }

    /// Starts `nproc` copies of this command as ranks and waits for all of them; the first failure kills the
    /// others.
    fn launch(&self) -> Result<()> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let world = self.nproc * self.nnodes;
        let mut children: Vec<(usize, Child)> = Vec::with_capacity(self.nproc);
        for local in 0..self.nproc {
            let rank = self.node_rank * self.nproc + local;
            let mut c = Command::new(&exe);
            c.args(&args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", local.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_WORLD_SIZE", self.nproc.to_string())
                .env("GROUP_RANK", self.node_rank.to_string())
                .env("MASTER_ADDR", &self.master_addr)
                .env("MASTER_PORT", self.master_port.to_string())
                .env("REG4REC_DIST_TIMEOUT_S", self.dist_timeout.to_string());
            die_with_parent(&mut c);
            match c.spawn() {
                Ok(child) => children.push((rank, child)),
                Err(e) => {
                    kill_all(&mut children);
                    return Err(e).with_context(|| format!("starting rank {rank}"));
                }
            }
        }
        tracing::info!(world, nproc = self.nproc, "launched ranks");
        loop {
            let mut running = 0;
            for i in 0..children.len() {
                let (rank, child) = &mut children[i];
                match child.try_wait() {
                    Ok(None) => running += 1,
                    Ok(Some(status)) if status.success() => {}
                    Ok(Some(status)) => {
                        let rank = *rank;
                        kill_all(&mut children);
                        bail!("rank {rank} failed ({status}); the other local ranks were stopped");
                    }
                    Err(e) => {
                        let rank = *rank;
                        kill_all(&mut children);
                        return Err(e).with_context(|| format!("waiting for rank {rank}"));
                    }
                }
            }
            if running == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn kill_all(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait();
    }
}

/// Ranks receive SIGKILL when the launcher dies (Linux), so that a killed launcher leaves no rank behind.
#[cfg(target_os = "linux")]
fn die_with_parent(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}
