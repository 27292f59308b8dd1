//! Pre-training throughput of the per-user layout against the per-example layout it replaced, at the same model
//! size (`configs/cpu.toml`'s `[model]`: d_model, layers, heads, feed-forward), in target items per second, on
//! Amazon-Beauty-shaped synthetic data: 22,363 users, 12,101 items with distinct random tuples over M = 4
//! codebooks of D = 256 codes, 6 categories, sequence lengths 5 + an exponential tail (mean about 8.9 items, as
//! Beauty's 5-core sequences).
//!
//! - `per_example_step`: the replaced layout ([`reg4rec_benches::per_example`]): one batch of 256 (history,
//!   target) examples with L = 20 history items (its preset), forward (encoder over `L * (M + 1)` tokens, CRSS
//!   order selection, decoder with cross-attention, losses) + backward + AdamW. One example = one target item.
//! - `per_user_step`: the per-user layout (`reg4rec_model::crss::sequence_loss`) on one batch of
//!   `pretrain.batch_size` users of length-bucketed training sequences, item head included, + backward + AdamW;
//!   throughput in the batch's target items (non-padding positions).
//! - `trainer`: the real trainer (`pretrain` through the training engine: batch building on a background
//!   thread, logging) for a fixed number of steps, time as the trainer reports it.
//!
//! The ratio of the two steps' target items per second is printed and written to
//! `target/criterion/pretrain-layouts.json`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reg4rec_benches::per_example::PerExampleModel;
use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::Dataset;
use reg4rec_model::crss::sequence_loss;
use reg4rec_model::{
    pretrain, ModelConfig, PretrainOptions, Reg4RecModel, SeqBatchBuilder, TrainConfig, Vocab,
};
use reg4rec_tokenizer::Codes;
use reg4rec_train::AdamW;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tch::Tensor;

const N_USERS: usize = 22_363;
const N_ITEMS: usize = 12_101;
const M: usize = 4;
const D: usize = 256;
const N_CATEGORIES: usize = 6;
const OLD_BATCH: usize = 256;
const OLD_HISTORY: usize = 20;
const TRAINER_STEPS: u64 = 20;

/// Deterministic LCG (no RNG state shared with the model).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn unit(&mut self) -> f64 {
        (self.next() as f64 + 0.5) / (1u64 << 31) as f64
    }
}

fn beauty_shaped() -> (Dataset, Codes) {
    let mut rng = Lcg(7);
    let mut seen = HashSet::new();
    let mut tuples = Vec::with_capacity(N_ITEMS * M);
    while seen.len() < N_ITEMS {
        let t: Vec<u16> = (0..M).map(|_| (rng.next() % D as u64) as u16).collect();
        if seen.insert(t.clone()) {
            tuples.extend(t);
        }
    }
    let codes = Codes::new(M, D, false, tuples).unwrap_or_else(|e| panic!("codes: {e}"));
    let sequences: Vec<Vec<u32>> = (0..N_USERS)
        .map(|_| {
            let len = (5.0 - 3.9 * rng.unit().ln()).min(200.0) as usize;
            (0..len)
                .map(|_| (rng.next() % N_ITEMS as u64) as u32)
                .collect()
        })
        .collect();
    let ds = Dataset {
        name: "beauty-shaped".into(),
        user_ids: (0..N_USERS).map(|u| u.to_string()).collect(),
        sequences,
        item_ids: (0..N_ITEMS).map(|i| i.to_string()).collect(),
        item_category: (0..N_ITEMS).map(|i| (i % N_CATEGORIES) as u32).collect(),
        category_names: (0..N_CATEGORIES).map(|c| format!("c{c}")).collect(),
        item_attributes: vec![vec![]; N_ITEMS],
        item_names: Vec::new(),
    };
    (ds, codes)
}

/// The `[model]` and `[pretrain]` sections of `configs/cpu.toml`.
fn cpu_preset() -> (ModelConfig, TrainConfig) {
    let text = include_str!("../../configs/cpu.toml");
    let mut t: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("cpu.toml: {e}"));
    let mut section = |name: &str| {
        t.remove(name)
            .unwrap_or(toml::Value::Table(Default::default()))
    };
    let model: ModelConfig = section("model")
        .try_into()
        .unwrap_or_else(|e| panic!("cpu.toml [model]: {e}"));
    let train: TrainConfig = section("pretrain")
        .try_into()
        .unwrap_or_else(|e| panic!("cpu.toml [pretrain]: {e}"));
    (model, train)
}

/// Mean seconds of `f` over `n` runs after one warm-up run.
fn seconds_per_run(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn pretrain_throughput(c: &mut Criterion) {
    std::env::set_var("REG4REC_NO_PROGRESS", "1");
    let (ds, codes) = beauty_shaped();
    let split = LeaveOneOut::new(&ds);
    let (mcfg, tcfg) = cpu_preset();
    let vocab = Vocab::new(M, D);
    let weights = tcfg.objective();

    // The replaced layout: one batch of the most recent training examples of the first users.
    let old_cfg = ModelConfig {
        history_len: OLD_HISTORY,
        ..mcfg.clone()
    };
    tch::manual_seed(0);
    let old = PerExampleModel::new(&old_cfg, vocab, N_CATEGORIES);
    let mut old_opt = AdamW::new(&old.vs, tcfg.adamw());
    let examples: Vec<(&[u32], u32)> = split
        .training_examples()
        .into_iter()
        .take(OLD_BATCH)
        .map(|e| split.example(e, OLD_HISTORY))
        .collect();
    let hist: Vec<&[u32]> = examples.iter().map(|e| e.0).collect();
    let old_history = old.history_tokens(&hist, &codes);
    let old_targets: Vec<i64> = examples
        .iter()
        .flat_map(|e| vocab.item_tokens(codes.tuple(e.1 as usize)))
        .collect();
    let old_targets = Tensor::from_slice(&old_targets).view([OLD_BATCH as i64, M as i64]);
    let old_cats: Vec<i64> = examples
        .iter()
        .map(|e| ds.item_category[e.1 as usize] as i64)
        .collect();
    let old_cats = Tensor::from_slice(&old_cats);
    let mut old_step = || {
        let loss = old.loss(&old_history, &old_targets, &old_cats, tcfg.lambda_cat);
        old_opt.zero_grad();
        loss.backward();
        old_opt.clip_grad_norm(tcfg.grad_clip);
        old_opt.step(1e-3);
    };

    // The per-user layout: one batch of `batch_size` users of similar length (as the trainer buckets them).
    tch::manual_seed(0);
    let model = Reg4RecModel::new(&mcfg, &codes, N_CATEGORIES, tch::Device::Cpu)
        .unwrap_or_else(|e| panic!("model: {e}"));
    let mut opt = AdamW::new(model.var_store(), tcfg.adamw());
    let builder = SeqBatchBuilder {
        vocab,
        history_len: mcfg.history_len,
        codes: &codes,
        item_category: &ds.item_category,
    };
    let mut rows: Vec<&[u32]> = split.train.iter().map(Vec::as_slice).collect();
    rows.truncate(tcfg.batch_size * 64);
    rows.sort_by_key(|r| r.len());
    let mid = rows.len() / 2;
    let seqs = &rows[mid..mid + tcfg.batch_size];
    let batch = builder
        .sequences(seqs)
        .unwrap_or_else(|e| panic!("batch: {e}"));
    let mut new_step = || {
        let loss = sequence_loss(&model, &batch, weights, true);
        opt.zero_grad();
        loss.total.backward();
        opt.clip_grad_norm(tcfg.grad_clip);
        opt.step(1e-3);
    };

    let mut group = c.benchmark_group("pretrain");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(OLD_BATCH as u64));
    group.bench_function("per_example_step", |b| b.iter(&mut old_step));
    group.throughput(Throughput::Elements(batch.n_targets as u64));
    group.bench_function("per_user_step", |b| b.iter(&mut new_step));

    // The real trainer, TRAINER_STEPS steps per run.
    group.bench_function("trainer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                let opts = PretrainOptions {
                    stop_after_steps: Some(TRAINER_STEPS),
                    ..Default::default()
                };
                let r = pretrain(&ds, &split, &codes, &mcfg, &tcfg, dir.path(), false, opts)
                    .unwrap_or_else(|e| panic!("trainer: {e}"));
                // Scale to the per-user step's target count so criterion's element rate reads as targets/s.
                let per_target = r.train_seconds / (r.targets_per_s * r.train_seconds).max(1.0);
                total += Duration::from_secs_f64(per_target * batch.n_targets as f64);
            }
            total
        })
    });
    group.finish();

    // The comparison, measured once more side by side.
    let old_s = seconds_per_run(10, &mut old_step);
    let new_s = seconds_per_run(10, &mut new_step);
    let old_rate = OLD_BATCH as f64 / old_s;
    let new_rate = batch.n_targets as f64 / new_s;
    let summary = serde_json::json!({
        "per_example_targets_per_s": old_rate,
        "per_user_targets_per_s": new_rate,
        "ratio": new_rate / old_rate,
        "per_user_batch": {"users": tcfg.batch_size, "targets": batch.n_targets,
                           "positions": batch.stream.numel()},
        "model": {"d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads,
                  "d_ff": mcfg.d_ff, "history_len": mcfg.history_len, "old_history_len": OLD_HISTORY},
    });
    println!("pretrain layouts: {summary}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion/pretrain-layouts.json");
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&out, summary.to_string());
}

criterion_group!(benches, pretrain_throughput);
criterion_main!(benches);
