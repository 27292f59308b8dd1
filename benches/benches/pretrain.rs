//! Pre-training throughput of the REG4Rec model at the CPU preset's size (`ModelConfig::cpu_preset`,
//! `TrainConfig::cpu_preset`: d_model 64, 1 + 1 layers, L = 20, batches of 256) on MovieLens-100k-shaped
//! synthetic data (943 users, 1,682 items, ~106 interactions per user; M = 4 codebooks of D = 256 codes).
//!
//! - `bare_step`: forward (encoder, CRSS order selection, decoder, losses) + backward + clipping + AdamW on one
//!   pre-built batch of tensors: the compute-bound ceiling.
//! - `trainer`: the real trainer (`pretrain_with`, background batch building, logging) for a fixed number of
//!   steps; time counted as the trainer reports it (checkpoint writes excluded). It must reach >= 80% of
//!   `bare_step`'s examples/s. Tokens/s = examples/s * (L * (M + 1) + M) = examples/s * 104.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::Dataset;
use reg4rec_model::batch::BatchBuilder;
use reg4rec_model::crss::crss_loss;
use reg4rec_model::optim::AdamW;
use reg4rec_model::{
    pretrain_with, ModelConfig, PretrainOptions, Reg4RecModel, TrainConfig, Vocab,
};
use reg4rec_tokenizer::index::Codes;
use std::time::Duration;

const N_USERS: usize = 943;
const N_ITEMS: usize = 1682;
const M: usize = 4;
const D: usize = 256;
const TRAINER_STEPS: u64 = 6;

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
}

fn synthetic() -> (Dataset, Codes) {
    let mut rng = Lcg(7);
    let mut seen = std::collections::HashSet::new();
    let mut tuples = Vec::with_capacity(N_ITEMS * M);
    while seen.len() < N_ITEMS {
        let t: Vec<u16> = (0..M).map(|_| (rng.next() % D as u64) as u16).collect();
        if seen.insert(t.clone()) {
            tuples.extend(t);
        }
    }
    let codes = match Codes::new(M, D, false, tuples) {
        Ok(c) => c,
        Err(e) => panic!("synthetic codes: {e}"),
    };
    let sequences: Vec<Vec<u32>> = (0..N_USERS)
        .map(|_| {
            let len = 20 + (rng.next() % 173) as usize;
            (0..len)
                .map(|_| (rng.next() % N_ITEMS as u64) as u32)
                .collect()
        })
        .collect();
    let ds = Dataset {
        name: "ml-100k-shaped".into(),
        user_ids: (0..N_USERS).map(|u| u.to_string()).collect(),
        sequences,
        item_ids: (0..N_ITEMS).map(|i| i.to_string()).collect(),
        item_category: (0..N_ITEMS).map(|i| (i % 18) as u32).collect(),
        category_names: (0..18).map(|c| format!("genre{c}")).collect(),
        item_attributes: vec![vec![]; N_ITEMS],
    };
    (ds, codes)
}

fn pretrain_throughput(c: &mut Criterion) {
    std::env::set_var("REG4REC_NO_PROGRESS", "1");
    let (ds, codes) = synthetic();
    let split = LeaveOneOut::new(&ds);
    let mcfg = ModelConfig::cpu_preset();
    let tcfg = TrainConfig::cpu_preset();
    let bs = tcfg.batch_size;

    let mut group = c.benchmark_group("pretrain");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(bs as u64));

    // Bare step on one pre-built batch.
    tch::manual_seed(0);
    let vocab = Vocab::new(M, D);
    let model = match Reg4RecModel::new(&mcfg, vocab, ds.n_categories(), tch::Device::Cpu) {
        Ok(m) => m,
        Err(e) => panic!("cpu preset must build: {e}"),
    };
    let mut opt = AdamW::new(model.var_store(), &tcfg);
    let builder = BatchBuilder {
        vocab,
        history_len: mcfg.history_len,
        codes: &codes,
        item_category: &ds.item_category,
    };
    let examples = split.training_examples();
    let ex: Vec<(&[u32], u32)> = examples[..bs]
        .iter()
        .map(|&e| split.example(e, mcfg.history_len))
        .collect();
    let batch = match builder.build(&ex) {
        Ok(b) => b,
        Err(e) => panic!("batch: {e}"),
    };
    let mut step = 0i64;
    group.bench_function("bare_step", |b| {
        b.iter(|| {
            tch::manual_seed(step);
            step += 1;
            let enc = model.encode(&batch.history, true);
            let loss = crss_loss(
                &model,
                &enc,
                &batch.targets,
                &batch.categories,
                tcfg.lambda_cat,
                true,
            );
            opt.zero_grad();
            loss.total.backward();
            opt.clip_grad_norm(tcfg.grad_clip);
            opt.step(1e-3);
            loss.total.double_value(&[])
        })
    });

    // The real trainer, TRAINER_STEPS steps per run.
    group.throughput(Throughput::Elements(bs as u64 * TRAINER_STEPS));
    group.bench_function("trainer", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = match tempfile::tempdir() {
                    Ok(d) => d,
                    Err(e) => panic!("tempdir: {e}"),
                };
                let opts = PretrainOptions {
                    stop_after_steps: Some(TRAINER_STEPS),
                    ..Default::default()
                };
                match pretrain_with(&ds, &split, &codes, &mcfg, &tcfg, dir.path(), false, opts) {
                    Ok(r) => total += Duration::from_secs_f64(r.train_seconds),
                    Err(e) => panic!("trainer: {e}"),
                }
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, pretrain_throughput);
criterion_main!(benches);
