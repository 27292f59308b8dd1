//! LADQ sampling overhead: one training step (forward, backward, Adam) of `reg4rec_precision::testbed` (pre-norm
//! transformer blocks of LADQ layers at the cpu preset's width: d_model 64, d_ff 256, 4 heads, 4 blocks = 24
//! LADQ layers), batch 32 x 20 positions, one libtorch thread, with and without K-FAC capture. The captured step
//! also runs `kfac::collect` and the policy (`Ladq::end_step`), i.e. everything a sampling step adds. Also: the
//! same step with every layer in bf16 and under a LADQ mixed assignment (fp8 emulated on CPU). Before criterion
//! runs, 30 interleaved (capture, no capture) step pairs print the median per-pair ratio, which stays meaningful
//! on a loaded machine where sequential criterion groups drift.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reg4rec_precision::testbed::{Testbed, TestbedConfig};
use reg4rec_precision::{Ladq, LadqConfig, LayerRegistry, Precision, PrecisionMode};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const CFG: TestbedConfig = TestbedConfig {
    d_model: 64,
    d_ff: 256,
    n_heads: 4,
    n_blocks: 4,
};
const BATCH: i64 = 32;
const POSITIONS: i64 = 20;

struct Setup {
    model: Testbed,
    opt: nn::Optimizer,
    ladq: Ladq,
    x: Tensor,
    y: Tensor,
    _vs: nn::VarStore,
}

fn setup(mode: PrecisionMode, sample_every: u64) -> Setup {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let model = Testbed::new(vs.root(), &CFG, &reg);
    let cfg = LadqConfig {
        sample_every,
        ..Default::default()
    };
    let ladq = match Ladq::new(mode, &cfg, &reg, None) {
        Ok(l) => l,
        Err(e) => panic!("ladq config: {e}"),
    };
    let opt = match nn::Adam::default().build(&vs, 1e-3) {
        Ok(o) => o,
        Err(e) => panic!("optimizer: {e}"),
    };
    let shape = [BATCH, POSITIONS, CFG.d_model];
    Setup {
        model,
        opt,
        ladq,
        x: Tensor::randn(shape, (Kind::Float, Device::Cpu)),
        y: Tensor::randn(shape, (Kind::Float, Device::Cpu)),
        _vs: vs,
    }
}

impl Setup {
    /// One optimizer step; `step` decides (through the controller) whether it is a sampling step.
    fn step(&mut self, step: u64) -> f64 {
        self.ladq.begin_step(step);
        let loss = self.model.loss(&self.x, &self.y);
        self.opt.zero_grad();
        loss.backward();
        if let Err(e) = self.ladq.end_step(step, BATCH as f64) {
            panic!("ladq end_step: {e}");
        }
        self.opt.step();
        loss.double_value(&[])
    }

    /// A sampling step whose new assignment is undone, so the layers stay fp32.
    fn sampled_fp32_step(&mut self) -> f64 {
        let l = self.step(0);
        self.ladq.registry().set_all(Precision::Fp32);
        l
    }
}

/// Medians over interleaved pairs: (plain step s, sampled step s, sampled / plain).
fn paired(plain: &mut Setup, sampled: &mut Setup, pairs: usize) -> (f64, f64, f64) {
    let (mut tp, mut ts, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let t = std::time::Instant::now();
        plain.step(1);
        let a = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        sampled.sampled_fp32_step();
        let b = t.elapsed().as_secs_f64();
        tp.push(a);
        ts.push(b);
        ratios.push(b / a);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(tp), median(ts), median(ratios))
}

fn ladq_overhead(c: &mut Criterion) {
    tch::set_num_threads(1);
    {
        // P = u64::MAX: only step 0 would sample, and step 1 is used. P = 1: every step samples.
        let (mut plain, mut sampled) = (
            setup(PrecisionMode::Ladq, u64::MAX),
            setup(PrecisionMode::Ladq, 1),
        );
        let (tp, ts, r) = paired(&mut plain, &mut sampled, 30);
        eprintln!(
            "ladq paired: plain step {:.2} ms, sampled step {:.2} ms, median ratio {r:.3} (+{:.1}% on sampled steps, \
             +{:.2}% per step amortised at the default P = 100)",
            tp * 1e3,
            ts * 1e3,
            (r - 1.0) * 100.0,
            (r - 1.0)
        );
    }
    let mut group = c.benchmark_group("ladq");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut plain = setup(PrecisionMode::Ladq, u64::MAX);
    group.bench_function("step_fp32_no_capture", |b| b.iter(|| plain.step(1)));

    let mut sampled = setup(PrecisionMode::Ladq, 1);
    group.bench_function("step_fp32_with_capture", |b| {
        b.iter(|| sampled.sampled_fp32_step())
    });

    let mut bf16 = setup(PrecisionMode::Bf16, 100);
    group.bench_function("step_all_bf16", |b| b.iter(|| bf16.step(1)));

    let mut mixed = setup(PrecisionMode::Ladq, 1_000_000);
    mixed.step(0); // one sampling: 25% fp32, 50% bf16, 25% fp8 (emulated on CPU)
    group.bench_function("step_ladq_mixed", |b| b.iter(|| mixed.step(1)));
    group.finish();
}

criterion_group!(benches, ladq_overhead);
criterion_main!(benches);
