//! All-reduce throughput over c10d/Gloo on this machine: `--world N` local ranks (this example re-executes
//! itself as each rank), float32 tensors of each `--mb` size, `--iters` timed all-reduces after 2 warm-ups.
//! Prints one JSON line per size (rank 0): seconds per all-reduce and the algorithm bandwidth (payload MB/s).
//! `--cuda`: CUDA tensors through NCCL (rank r on cuda:r; needs the `nccl` feature).
//!
//! `cargo run --release -p reg4rec-dist --example allreduce -- --world 2 --mb 1,4,16,64 --iters 20`

use reg4rec_dist::{Backend, DistConfig, ProcessGroup, ReduceOp};
use std::process::Command;
use std::time::Instant;
use tch::{Kind, Tensor};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let world: usize = arg(&args, "--world", "2").parse()?;
    let iters: usize = arg(&args, "--iters", "20").parse()?;
    let sizes: Vec<f64> = arg(&args, "--mb", "1,4,16,64")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    tch::set_num_threads(1);
    let cuda = args.iter().any(|a| a == "--cuda");
    let backend = if cuda { Backend::Nccl } else { Backend::Gloo };
    let Some(cfg) = DistConfig::from_env(backend)? else {
        // The launcher: ranks 0..world of this example on a free loopback port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut children = Vec::new();
        for r in 0..world {
            children.push(
                Command::new(std::env::current_exe()?)
                    .args(&args)
                    .env("RANK", r.to_string())
                    .env("WORLD_SIZE", world.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", port.to_string())
                    .env("REG4REC_DIST_TIMEOUT_S", "120")
                    .spawn()?,
            );
        }
        for (r, mut c) in children.into_iter().enumerate() {
            if !c.wait()?.success() {
                return Err(format!("rank {r} failed").into());
            }
        }
        return Ok(());
    };
    let pg = ProcessGroup::init(&cfg)?;
    let device = pg.device();
    for mb in sizes {
        let n = (mb * 1024.0 * 1024.0 / 4.0) as i64;
        let mut t = Tensor::ones([n], (Kind::Float, device));
        for _ in 0..2 {
            pg.all_reduce(&mut t, ReduceOp::Sum)?;
        }
        pg.barrier()?;
        let t0 = Instant::now();
        for _ in 0..iters {
            pg.all_reduce(&mut t, ReduceOp::Sum)?;
        }
        if device.is_cuda() {
            tch::Cuda::synchronize(pg.device_index() as i64);
        }
        let secs = t0.elapsed().as_secs_f64() / iters as f64;
        if pg.rank() == 0 {
            println!(
                "{{\"world\": {world}, \"device\": \"{device:?}\", \"mb\": {mb}, \"iters\": {iters}, \"ms_per_all_reduce\": {:.3}, \"mb_per_s\": {:.1}}}",
                secs * 1e3,
                mb / secs
            );
        }
    }
    Ok(())
}
