//! Two CPU processes over loopback (Gloo). Each test re-runs this test binary as its ranks: the parent
//! spawns `RANK=0,1` children running only the same test with `R4D_ROLE` set, and checks how they exit.

use reg4rec_dist::{Backend, DistConfig, ProcessGroup, ReduceOp};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts rank `rank` of `world` running test `name` in role `role`.
fn spawn_rank(
    name: &str,
    role: &str,
    rank: usize,
    world: usize,
    port: u16,
    timeout_s: f64,
) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("R4D_ROLE", role)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("REG4REC_DIST_TIMEOUT_S", timeout_s.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a rank")
}

/// Runs `world` ranks of test `name` to completion and asserts they all succeed.
fn run_ranks(name: &str, world: usize) {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| spawn_rank(name, "rank", r, world, port, 30.0))
        .collect();
    for (r, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("wait for a rank");
        assert!(
            out.status.success(),
            "rank {r} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn role() -> Option<String> {
    std::env::var("R4D_ROLE").ok()
}

fn join() -> ProcessGroup {
    let cfg = DistConfig::from_env(Backend::Gloo)
        .expect("launch variables")
        .expect("WORLD_SIZE set");
    tch::set_num_threads(1);
    ProcessGroup::init(&cfg).expect("rendezvous")
}

#[test]
fn all_reduce_broadcast_and_barrier_over_two_processes() {
    if role().is_none() {
        return run_ranks("all_reduce_broadcast_and_barrier_over_two_processes", 2);
    }
    let pg = join();
    let r = pg.rank() as f64;
    assert_eq!(pg.world_size(), 2);
    let mut t = Tensor::full([5], r + 1.0, (Kind::Float, Device::Cpu));
    pg.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![3.0; 5]);
    let mut t = Tensor::full([3], r + 1.0, (Kind::Double, Device::Cpu));
    pg.all_reduce(&mut t, ReduceOp::Avg).unwrap();
    assert_eq!(Vec::<f64>::try_from(&t).unwrap(), vec![1.5; 3]);
    let mut b = Tensor::full([4], 10.0 * (r + 1.0), (Kind::Int64, Device::Cpu));
    pg.broadcast(&mut b, 1).unwrap();
    assert_eq!(Vec::<i64>::try_from(&b).unwrap(), vec![20; 4]);
    // Buckets of 64 bytes over mixed kinds and shapes, one of them non-contiguous.
    let ts = vec![
        Tensor::full([3, 4], r, (Kind::Float, Device::Cpu)),
        Tensor::full([4, 3], r + 2.0, (Kind::Float, Device::Cpu)).transpose(0, 1),
        Tensor::full([2], r * 3.0, (Kind::Double, Device::Cpu)),
        Tensor::full([40], 1.0, (Kind::Float, Device::Cpu)),
    ];
    pg.all_reduce_bucketed(&ts, ReduceOp::Sum, 64.0 / (1024.0 * 1024.0))
        .unwrap();
    assert!(ts[0].equal(&Tensor::full([3, 4], 1.0, (Kind::Float, Device::Cpu))));
    assert!(ts[1].equal(&Tensor::full([3, 4], 5.0, (Kind::Float, Device::Cpu))));
    assert!(ts[2].equal(&Tensor::full([2], 3.0, (Kind::Double, Device::Cpu))));
    assert!(ts[3].equal(&Tensor::full([40], 2.0, (Kind::Float, Device::Cpu))));
    pg.barrier().unwrap();
    // A non-contiguous tensor is refused before any collective (on every rank alike).
    let mut strided = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)).transpose(0, 1);
    let e = pg.all_reduce(&mut strided, ReduceOp::Sum).unwrap_err();
    assert!(e.to_string().contains("contiguous"), "{e}");
}

/// A small MLP regression trained with Adam. Returns its parameters in name order.
fn train_mlp(
    pg: Option<&ProcessGroup>,
    batch: usize,
    steps: usize,
    check_each_step: &mut dyn FnMut(&[Tensor]),
) -> Vec<Tensor> {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "l1", 6, 16, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(vs.root() / "l2", 16, 1, Default::default()));
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
    // The same data on every rank (seeded); a rank takes every world-th row of each global batch.
    let (rank, world) = pg.map_or((0, 1), |p| (p.rank(), p.world_size()));
    tch::manual_seed(11);
    let global = batch * world;
    let xs = Tensor::randn([(global * steps) as i64, 6], (Kind::Float, Device::Cpu));
    let ys = xs
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
        .sin();
    if let Some(pg) = pg {
        pg.broadcast_bucketed(&params, 0, 1.0).unwrap();
    }
    for s in 0..steps {
        let lo = (s * global) as i64;
        let idx = Tensor::arange_start_step(
            lo + rank as i64,
            lo + global as i64,
            world as i64,
            (Kind::Int64, Device::Cpu),
        );
        let (x, y) = (xs.index_select(0, &idx), ys.index_select(0, &idx));
        opt.zero_grad();
        let loss = (net.forward(&x) - y).square().mean(Kind::Float);
        loss.backward();
        if let Some(pg) = pg {
            let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
            // Buckets of 1 KB: several collectives per step.
            pg.all_reduce_bucketed(&grads, ReduceOp::Avg, 1.0 / 1024.0)
                .unwrap();
        }
        opt.step();
        check_each_step(&params);
    }
    params
}

#[test]
fn data_parallel_steps_keep_replicas_bit_identical_and_match_one_process() {
    if role().is_none() {
        return run_ranks(
            "data_parallel_steps_keep_replicas_bit_identical_and_match_one_process",
            2,
        );
    }
    let pg = join();
    let mut steps_checked = 0;
    let params = train_mlp(Some(&pg), 8, 5, &mut |params| {
        // Rank 0's parameters, broadcast, must equal this rank's bit for bit.
        let flat = Tensor::cat(
            &params
                .iter()
                .map(|p| p.detach().reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        );
        let mut theirs = flat.copy();
        pg.broadcast(&mut theirs, 0).unwrap();
        assert!(
            flat.equal(&theirs),
            "replicas differ after step {steps_checked}"
        );
        steps_checked += 1;
    });
    assert_eq!(steps_checked, 5);
    // One process with the 2x batch reaches the same weights up to float rounding.
    let single = train_mlp(None, 16, 5, &mut |_| {});
    for (a, b) in params.iter().zip(&single) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "2 ranks x 8 vs 1 rank x 16 differ by {diff}");
    }
    // ...and the test can fail: a different batch gives different weights.
    let other = train_mlp(None, 8, 5, &mut |_| {});
    let diff = (&params[0] - &other[0]).abs().max().double_value(&[]);
    assert!(diff > 1e-4, "{diff}");
}

/// Rank 0 keeps all-reducing; rank 1 joins, takes part once, then dies (role `die`: the parent kills it) or
/// stops answering (role `hang`). Rank 0 must exit with an error well within the 3 s timeout.
fn peer_failure(name: &str, role: &str) {
    let port = free_port();
    let timeout_s = 3.0;
    let mut r0 = spawn_rank(name, "survivor", 0, 2, port, timeout_s);
    let mut r1 = spawn_rank(name, role, 1, 2, port, timeout_s);
    // Rank 1 prints `R4D-READY` after its first collective.
    let stdout = r1.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            match line {
                Ok(l) if l.contains("R4D-READY") => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = r0.kill();
        let _ = r1.kill();
        let o0 = r0.wait_with_output().unwrap();
        let o1 = r1.wait_with_output().unwrap();
        panic!(
            "rank 1 never became ready.\nrank 0: {}\nrank 1: {}",
            String::from_utf8_lossy(&o0.stderr),
            String::from_utf8_lossy(&o1.stderr)
        );
    }
    if role == "die" {
        r1.kill().unwrap();
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = r0.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = r0.kill();
            let _ = r1.kill();
            panic!("rank 0 still running 30 s after its peer failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t0.elapsed();
    let _ = r1.kill();
    let _ = r1.wait();
    let out = r0.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "rank 0 succeeded: {stderr}");
    assert!(
        stderr.contains("SURVIVOR-ERROR"),
        "rank 0 did not report a c10d error: {stderr}"
    );
    assert!(
        elapsed < Duration::from_secs_f64(timeout_s + 5.0),
        "rank 0 took {elapsed:?} to fail"
    );
}

fn peer_role() {
    let pg = join();
    let mut t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
    match role().as_deref() {
        Some("survivor") => loop {
            if let Err(e) = pg.all_reduce(&mut t, ReduceOp::Sum) {
                eprintln!("SURVIVOR-ERROR: {e}");
                std::process::exit(2);
            }
        },
        Some(r) => {
            pg.all_reduce(&mut t, ReduceOp::Sum).unwrap();
            println!("R4D-READY");
            if r == "hang" {
                std::thread::sleep(Duration::from_secs(600));
            }
            loop {
                pg.all_reduce(&mut t, ReduceOp::Sum).unwrap();
            }
        }
        None => unreachable!(),
    }
}

#[test]
fn a_killed_rank_makes_the_other_fail_with_an_error() {
    match role() {
        None => peer_failure("a_killed_rank_makes_the_other_fail_with_an_error", "die"),
        Some(_) => peer_role(),
    }
}

#[test]
fn a_silent_rank_makes_the_other_fail_at_the_timeout() {
    match role() {
        None => peer_failure("a_silent_rank_makes_the_other_fail_at_the_timeout", "hang"),
        Some(_) => peer_role(),
    }
}

#[test]
fn a_missing_rank_fails_the_rendezvous_at_the_timeout() {
    if role().is_none() {
        let port = free_port();
        let t0 = Instant::now();
        let out = spawn_rank(
            "a_missing_rank_fails_the_rendezvous_at_the_timeout",
            "alone",
            0,
            2,
            port,
            2.0,
        )
        .wait_with_output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("RENDEZVOUS-ERROR"), "{stderr}");
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
        return;
    }
    let cfg = DistConfig::from_env(Backend::Gloo).unwrap().unwrap();
    match ProcessGroup::init(&cfg) {
        Ok(_) => panic!("rendezvous with a missing rank succeeded"),
        Err(e) => {
            eprintln!("RENDEZVOUS-ERROR: {e}");
            std::process::exit(2);
        }
    }
}
