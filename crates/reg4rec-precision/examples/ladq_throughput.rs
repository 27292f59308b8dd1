//! Training throughput of the LADQ testbed (pre-norm transformer blocks of LADQ layers) under each precision,
//! on CPU or CUDA. For each mode: seed, build, `--warmup` untimed steps, `--steps` timed steps (CUDA synchronised),
//! then one line: examples/s, ms/step, final loss, layers per precision, and whether the real fp8 kernel ran.
//! On CUDA it first checks `_scaled_mm` against the CPU emulation on one layer.
//!
//! ```text
//! ladq_throughput [--device cpu|cuda] [--modes fp32,bf16,ladq,fp8] [--steps 50] [--warmup 5] [--batch 64]
//!                 [--positions 64] [--d-model 256] [--d-ff 1024] [--heads 8] [--blocks 4] [--sample-every 10]
//! ```
//! `fp8` is every layer fp8 (not a `--precision` value; shown for the kernel's speed).

use reg4rec_precision::testbed::{Testbed, TestbedConfig};
use reg4rec_precision::{quant, Ladq, LadqConfig, LayerRegistry, Precision, PrecisionMode};
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

struct Args {
    device: Device,
    modes: Vec<String>,
    steps: u64,
    warmup: u64,
    batch: i64,
    positions: i64,
    cfg: TestbedConfig,
    sample_every: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        device: Device::Cpu,
        modes: vec!["fp32".into(), "bf16".into(), "ladq".into(), "fp8".into()],
        steps: 50,
        warmup: 5,
        batch: 64,
        positions: 64,
        cfg: TestbedConfig {
            d_model: 256,
            d_ff: 1024,
            n_heads: 8,
            n_blocks: 4,
        },
        sample_every: 10,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<i64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--device" => {
                a.device = match v.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda(0),
                    o => return Err(format!("--device {o}: expected cpu or cuda")),
                }
            }
            "--modes" => a.modes = v.split(',').map(String::from).collect(),
            "--steps" => a.steps = num(v)? as u64,
            "--warmup" => a.warmup = num(v)? as u64,
            "--batch" => a.batch = num(v)?,
            "--positions" => a.positions = num(v)?,
            "--d-model" => a.cfg.d_model = num(v)?,
            "--d-ff" => a.cfg.d_ff = num(v)?,
            "--heads" => a.cfg.n_heads = num(v)?,
            "--blocks" => a.cfg.n_blocks = num(v)? as usize,
            "--sample-every" => a.sample_every = num(v)? as u64,
            o => return Err(format!("unknown flag {o}")),
        }
    }
    if a.cfg.n_heads <= 0 || a.cfg.d_model % a.cfg.n_heads != 0 {
        return Err("--heads must divide --d-model".into());
    }
    if a.steps == 0 {
        return Err("--steps must be >= 1".into());
    }
    Ok(a)
}

fn sync(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

/// `_scaled_mm` against the emulation on one `[rows, d] x [d, d]` product: relative difference.
fn check_scaled_mm(d: Device, dim: i64) -> Result<f64, String> {
    tch::manual_seed(0);
    let x = Tensor::randn([128, dim], (Kind::Float, d));
    let w = Tensor::randn([dim, dim], (Kind::Float, d)) / (dim as f64).sqrt();
    let real = quant::scaled_mm_linear(&x, &w, None).map_err(|e| e.to_string())?;
    let emu = quant::fake_quant_e4m3(&x).linear(&quant::fake_quant_e4m3(&w), None::<Tensor>);
    Ok((&real - &emu).norm().double_value(&[]) / emu.norm().double_value(&[]))
}

fn run(a: &Args, mode_name: &str) -> Result<(), String> {
    let (mode, all_fp8) = match mode_name {
        "fp8" => (PrecisionMode::Fp32, true),
        m => (
            m.parse::<PrecisionMode>().map_err(|e| e.to_string())?,
            false,
        ),
    };
    tch::manual_seed(0);
    let vs = nn::VarStore::new(a.device);
    let reg = LayerRegistry::new();
    let model = Testbed::new(vs.root(), &a.cfg, &reg);
    let lcfg = LadqConfig {
        sample_every: a.sample_every,
        ..Default::default()
    };
    let mut ladq = Ladq::new(mode, &lcfg, &reg, None).map_err(|e| e.to_string())?;
    if all_fp8 {
        reg.set_all(Precision::Fp8);
    }
    let mut opt = nn::AdamW::default()
        .build(&vs, 1e-3)
        .map_err(|e| e.to_string())?;
    let shape = [a.batch, a.positions, a.cfg.d_model];
    let x = Tensor::randn(shape, (Kind::Float, a.device));
    let y = Tensor::randn(shape, (Kind::Float, a.device));
    let mut loss_v = f64::NAN;
    let mut t0 = Instant::now();
    for step in 0..a.warmup + a.steps {
        if step == a.warmup {
            sync(a.device);
            t0 = Instant::now();
        }
        ladq.begin_step(step);
        let loss = model.loss(&x, &y);
        opt.zero_grad();
        loss.backward();
        ladq.end_step(step, a.batch as f64)
            .map_err(|e| e.to_string())?;
        opt.step();
        if step + 1 == a.warmup + a.steps {
            loss_v = loss.double_value(&[]);
        }
    }
    sync(a.device);
    let secs = t0.elapsed().as_secs_f64();
    let c = reg4rec_precision::policy::counts(&reg.precisions());
    let fp8_kernel = match (a.device.is_cuda(), reg.fp8_kernel_error()) {
        (false, _) => "emulated (cpu)".to_string(),
        (true, None) if c[2] > 0 => "_scaled_mm".to_string(),
        (true, None) => "-".to_string(),
        (true, Some(e)) => format!("emulated ({e})"),
    };
    println!(
        "{mode_name:>5}  {:>10.1} examples/s  {:>8.2} ms/step  loss {loss_v:.5}  fp32/bf16/fp8 layers {}/{}/{}  fp8: {fp8_kernel}",
        (a.steps as i64 * a.batch) as f64 / secs,
        secs * 1e3 / a.steps as f64,
        c[0],
        c[1],
        c[2],
    );
    Ok(())
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ladq_throughput: {e}");
            std::process::exit(2);
        }
    };
    if a.device.is_cuda() && !tch::Cuda::is_available() {
        eprintln!("ladq_throughput: CUDA is not available to libtorch (is libtorch_cuda linked or preloaded?)");
        std::process::exit(1);
    }
    println!(
        "device {:?}, batch {} x {} positions, d_model {}, d_ff {}, {} blocks ({} LADQ layers), {} timed steps, \
         sample every {}",
        a.device,
        a.batch,
        a.positions,
        a.cfg.d_model,
        a.cfg.d_ff,
        a.cfg.n_blocks,
        a.cfg.n_blocks * 6,
        a.steps,
        a.sample_every
    );
    if a.device.is_cuda() {
        match check_scaled_mm(a.device, a.cfg.d_model) {
            Ok(r) => println!("_scaled_mm vs emulation: relative difference {r:.2e}"),
            Err(e) => println!("_scaled_mm unavailable: {e}"),
        }
    }
    let mut failed = false;
    for m in &a.modes {
        if let Err(e) = run(&a, m) {
            eprintln!("{m}: {e}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
