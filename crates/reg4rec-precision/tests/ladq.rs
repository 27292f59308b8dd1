//! LADQ end to end on tiny CPU layers: K-FAC traces against explicit factor matrices, capture only on sampled
//! steps, per-layer precisions, the controller's assignments and history, and training under ladq.

use reg4rec_precision::{
    kfac, linear, AssignRule, Ladq, LadqConfig, LayerRegistry, Linear, Precision, PrecisionMode,
};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn traces_equal_the_traces_of_explicit_kfac_factors() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let layer = linear(vs.root() / "blk" / "proj", 5, 3, Default::default(), &reg);
    // Two calls in one step (like cross-attention keys and values), sequence inputs [B, T, in].
    let (b, t) = (4i64, 3i64);
    let x1 = Tensor::randn([b, t, 5], CPU);
    let x2 = Tensor::randn([b, 2, 5], CPU) * 2.0;
    let y1_target = Tensor::randn([b, t, 3], CPU);
    let y2_target = Tensor::randn([b, 2, 3], CPU);

    reg.start_capture();
    let y1 = layer.forward(&x1);
    let y2 = layer.forward(&x2);
    // Per-example loss 0.5 * sum of squared errors over positions; the training loss is its batch mean.
    let loss = ((&y1 - &y1_target).square().sum(Kind::Float)
        + (&y2 - &y2_target).square().sum(Kind::Float))
        * 0.5
        / b as f64;
    loss.backward();
    let tr = kfac::collect(&reg, b as f64).unwrap();
    assert!(!reg.is_capturing());
    assert_eq!(tr.len(), 1);
    assert_eq!(tr[0].name, "blk.proj");

    // Direct computation: per-example output gradients g = y - target (of the per-example loss), rows pooled
    // over examples, positions and calls; A and G built explicitly.
    let a = Tensor::cat(&[x1.reshape([-1, 5]), x2.reshape([-1, 5])], 0); // [R, 5]
    let g = Tensor::cat(
        &[
            (&y1 - &y1_target).detach().reshape([-1, 3]),
            (&y2 - &y2_target).detach().reshape([-1, 3]),
        ],
        0,
    ); // [R, 3]
    let r = a.size()[0];
    let a_mat = a.tr().matmul(&a) / r as f64; // [5, 5] = E[a a^T]
    let g_mat = g.tr().matmul(&g) / r as f64; // [3, 3] = E[g g^T]
    let tr_a = a_mat.trace().double_value(&[]);
    let tr_g = g_mat.trace().double_value(&[]);
    assert_eq!(tr[0].rows, r);
    assert!(close(tr[0].tr_a, tr_a, 1e-5), "{} vs {tr_a}", tr[0].tr_a);
    assert!(close(tr[0].tr_g, tr_g, 1e-5), "{} vs {tr_g}", tr[0].tr_g);
    assert!(close(tr[0].sensitivity, tr_a * tr_g, 1e-5));
    // The trace of the Kronecker-factored Fisher block is the product of the factors' traces.
    let fisher_trace = a_mat.kron(&g_mat).trace().double_value(&[]);
    assert!(
        close(tr[0].sensitivity, fisher_trace, 1e-4),
        "{} vs {fisher_trace}",
        tr[0].sensitivity
    );
}

#[test]
fn capture_is_only_on_sampled_grad_steps_and_changes_no_value_or_gradient() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let layer = linear(vs.root() / "l", 4, 4, Default::default(), &reg);
    let x = Tensor::randn([6, 4], CPU);

    let run = |capture: bool| {
        for v in vs.trainable_variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        if capture {
            reg.start_capture();
        }
        let y = layer.forward(&x);
        y.square().sum(Kind::Float).backward();
        (y.detach(), layer.ws.grad().copy())
    };
    let (y0, gw0) = run(false);
    let (y1, gw1) = run(true);
    assert!(y0.equal(&y1) && gw0.equal(&gw1));
    assert_eq!(kfac::collect(&reg, 1.0).unwrap()[0].rows, 6);

    // Not sampling: nothing recorded. Sampling under no_grad: nothing recorded either.
    let _ = layer.forward(&x);
    assert_eq!(kfac::collect(&reg, 1.0).unwrap()[0].rows, 0);
    reg.start_capture();
    let _ = tch::no_grad(|| layer.forward(&x));
    assert_eq!(kfac::collect(&reg, 1.0).unwrap()[0].rows, 0);
    assert!(kfac::collect(&reg, 0.0).is_err());
}

#[test]
fn weight_names_match_nn_linear_and_precisions_apply() {
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let layer: Linear = linear(
        vs.root() / "enc" / "layers" / 0 / "q",
        32,
        16,
        Default::default(),
        &reg,
    );
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(names, vec!["enc.layers.0.q.bias", "enc.layers.0.q.weight"]);
    assert_eq!(reg.layers()[0].name, "enc.layers.0.q");
    assert_eq!(layer.ws.size(), vec![16, 32]);

    let x = Tensor::randn([8, 32], CPU);
    let exact = x.linear(&layer.ws, layer.bs.as_ref()).detach();
    let rel_err =
        |y: &Tensor| ((y - &exact).norm().double_value(&[])) / exact.norm().double_value(&[]);
    for (p, lo, hi) in [
        (Precision::Fp32, 0.0, 1e-7),
        (Precision::Bf16, 1e-5, 2e-2),
        (Precision::Fp8, 1e-4, 8e-2),
    ] {
        reg.set_all(p);
        assert_eq!(layer.precision(), p);
        let xg = x.copy().set_requires_grad(true);
        let y = layer.forward(&xg);
        assert_eq!(y.kind(), Kind::Float, "{p}");
        let e = rel_err(&y.detach());
        assert!(e >= lo && e <= hi, "{p}: relative error {e}");
        // Gradients reach the f32 master weight and the input.
        vs.trainable_variables().iter().for_each(|v| {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        });
        y.sum(Kind::Float).backward();
        assert_eq!(layer.ws.grad().kind(), Kind::Float);
        assert!(
            layer.ws.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "{p}"
        );
        assert!(xg.grad().defined());
    }
    // fp8 on CPU is exactly the fake-quantised matmul.
    reg.set_all(Precision::Fp8);
    let fq = reg4rec_precision::quant::fake_quant_e4m3;
    let want = fq(&x).linear(&fq(&layer.ws), layer.bs.as_ref());
    assert!(layer.forward(&x).equal(&want));
}

/// A stack of LADQ layers with a tanh between them; layer 2 gets a large input (scaled), so it is the most
/// sensitive by far.
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(vs: &nn::VarStore, reg: &LayerRegistry, width: i64, depth: usize) -> Self {
        let p = vs.root() / "mlp";
        Mlp {
            layers: (0..depth)
                .map(|i| linear(&p / "layers" / i, width, width, Default::default(), reg))
                .collect(),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h);
            if i + 1 < n {
                h = h.tanh();
            }
        }
        h
    }
}

#[test]
fn controller_samples_every_p_steps_assigns_and_writes_history() {
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let mlp = Mlp::new(&vs, &reg, 8, 4);
    let cfg = LadqConfig {
        sample_every: 3,
        fp32_fraction: 0.25,
        fp8_fraction: 0.25,
        ..Default::default()
    };
    let mut ladq = Ladq::new(PrecisionMode::Ladq, &cfg, &reg, Some(dir.path())).unwrap();
    assert_eq!(reg.precisions(), vec![Precision::Fp32; 4]);
    let x = Tensor::randn([16, 8], CPU);
    let y = Tensor::randn([16, 8], CPU);
    let mut sampled = Vec::new();
    for step in 0..7u64 {
        let s = ladq.begin_step(step);
        let loss = (mlp.forward(&x) - &y).square().mean(Kind::Float);
        loss.backward();
        let out = ladq.end_step(step, 16.0).unwrap();
        assert_eq!(out.is_some(), s);
        if let Some(smp) = out {
            sampled.push(step);
            assert_eq!(smp.counts, [1, 2, 1]);
            // The assignment is the policy applied to the recorded sensitivities.
            let sens: Vec<f64> = smp.layers.iter().map(|l| l.traces.sensitivity).collect();
            assert_eq!(smp.precisions(), reg4rec_precision::assign(&sens, &cfg));
            assert_eq!(reg.precisions(), smp.precisions());
            assert!(sens.iter().all(|s| s.is_finite() && *s > 0.0));
        }
    }
    assert_eq!(sampled, vec![0, 3, 6]);
    let hist = std::fs::read_to_string(dir.path().join("ladq.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = hist
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["step"], 3);
    assert_eq!(lines[0]["layers"][2]["name"], "mlp.layers.2");
    for key in ["tr_a", "tr_g", "sensitivity", "rows", "precision"] {
        assert!(lines[0]["layers"][0].get(key).is_some(), "{key}");
    }

    // Resume at step 4: the samplings of steps 0 and 3 stay, step 3's assignment is re-applied.
    let at3: Vec<Precision> = ladq.samplings()[1].precisions();
    reg.set_all(Precision::Fp32);
    Ladq::resume(PrecisionMode::Ladq, &cfg, &reg, None, 4).unwrap(); // no run dir: nothing to restore
    assert_eq!(reg.precisions(), vec![Precision::Fp32; 4]);
    Ladq::resume(PrecisionMode::Ladq, &cfg, &reg, Some(dir.path()), 4).unwrap();
    assert_eq!(reg.precisions(), at3);
    let path = dir.path().join("ladq.jsonl");
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    // A corrupt line is an error naming the file and line.
    std::fs::write(&path, format!("{}\n{{oops\n", hist.lines().next().unwrap())).unwrap();
    let e = Ladq::resume(PrecisionMode::Ladq, &cfg, &reg, Some(dir.path()), 9).unwrap_err();
    assert!(e.to_string().contains("ladq.jsonl:2"), "{e}");
    // A fresh run empties the history.
    Ladq::new(PrecisionMode::Ladq, &cfg, &reg, Some(dir.path())).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");

    // fp32 / bf16 modes: fixed precision, never sampled.
    let bf = Ladq::new(PrecisionMode::Bf16, &cfg, &reg, None).unwrap();
    assert_eq!(reg.precisions(), vec![Precision::Bf16; 4]);
    assert!(!bf.begin_step(0) && !reg.is_capturing());
}

#[test]
fn threshold_rule_gives_the_scaled_layer_fp32() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let mlp = Mlp::new(&vs, &reg, 8, 3);
    // Make the last layer's input activations 10x larger than the others' (tr(A) grows 100x).
    tch::no_grad(|| {
        let mut w = mlp.layers[0].ws.shallow_clone();
        let _ = w.g_mul_scalar_(0.0);
        let mut w1 = mlp.layers[1].ws.shallow_clone();
        let _ = w1.g_mul_scalar_(100.0); // tanh saturates: inputs of layer 2 near ±1
    });
    let cfg = LadqConfig {
        rule: AssignRule::Threshold,
        sample_every: 1,
        ..Default::default()
    };
    let mut ladq = Ladq::new(PrecisionMode::Ladq, &cfg, &reg, None).unwrap();
    let x = Tensor::randn([32, 8], CPU) * 0.01;
    assert!(ladq.begin_step(0));
    (mlp.forward(&x) - 1.0)
        .square()
        .mean(Kind::Float)
        .backward();
    let s = ladq.end_step(0, 32.0).unwrap().unwrap().clone();
    let rel: Vec<f64> = {
        let m = s
            .layers
            .iter()
            .map(|l| l.traces.sensitivity)
            .fold(0.0, f64::max);
        s.layers.iter().map(|l| l.traces.sensitivity / m).collect()
    };
    assert_eq!(s.layers[2].precision, Precision::Fp32, "{rel:?}");
    for (l, r) in s.layers.iter().zip(&rel) {
        let want = if *r >= 0.5 {
            Precision::Fp32
        } else if *r < 0.05 {
            Precision::Fp8
        } else {
            Precision::Bf16
        };
        assert_eq!(l.precision, want);
    }
}

/// Final training loss of the MLP regression under `mode` (same seed, data and steps).
fn train(mode: PrecisionMode, steps: u64) -> (f64, Vec<[usize; 3]>) {
    tch::set_num_threads(1);
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let reg = LayerRegistry::new();
    let mlp = Mlp::new(&vs, &reg, 32, 4);
    let cfg = LadqConfig {
        sample_every: 10,
        ..Default::default()
    };
    let mut ladq = Ladq::new(mode, &cfg, &reg, None).unwrap();
    let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
    let x = Tensor::randn([128, 32], CPU);
    let teacher = Tensor::randn([32, 32], CPU) / 32f64.sqrt();
    let y = x.matmul(&teacher).sin();
    let mut last = f64::NAN;
    let mut counts = Vec::new();
    for step in 0..steps {
        ladq.begin_step(step);
        let loss = (mlp.forward(&x) - &y).square().mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        if let Some(s) = ladq.end_step(step, 128.0).unwrap() {
            counts.push(s.counts);
        }
        opt.step();
        last = loss.double_value(&[]);
    }
    (last, counts)
}

#[test]
fn tiny_model_trains_to_the_same_loss_under_ladq_as_under_fp32() {
    let (fp32, _) = train(PrecisionMode::Fp32, 150);
    let (bf16, _) = train(PrecisionMode::Bf16, 150);
    let (ladq, counts) = train(PrecisionMode::Ladq, 150);
    let (init, _) = train(PrecisionMode::Fp32, 1);
    eprintln!("initial {init:.4}, final fp32 {fp32:.4}, bf16 {bf16:.4}, ladq {ladq:.4}, counts {counts:?}");
    assert!(fp32 < 0.5 * init, "fp32 did not train: {init} -> {fp32}");
    assert!(
        (ladq - fp32).abs() <= 0.1 * fp32,
        "ladq {ladq} vs fp32 {fp32}"
    );
    assert!(
        (bf16 - fp32).abs() <= 0.1 * fp32,
        "bf16 {bf16} vs fp32 {fp32}"
    );
    // Every sampling after the first used all three precisions (4 layers: 1 fp32, 2 bf16, 1 fp8).
    assert_eq!(counts.len(), 15);
    assert!(counts.iter().all(|c| *c == [1, 2, 1]));
}
