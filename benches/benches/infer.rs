//! Inference: constrained CRSS beam search with and without CORP over the real `Reg4RecModel` (random weights,
//! CPU), at the Amazon Beauty scale: 12,101 items with distinct random tuples over M = 4 codebooks of D = 256
//! codes, 6 categories, histories of L = 20 items.
//!
//! Measured: latency per user at batch 1 and throughput (users/s) at batch 256, beam 20 and 50, CORP on
//! (theta 0.06) and off. Each configuration's time is split into model time (inside the scorer: encoder,
//! decoder, masking and log-softmax in libtorch, copy to the search buffers) and search bookkeeping (valid-token
//! enumeration from the reachable items, index intersection, top-B selection, CORP divergences and rollback,
//! result assembly); the split is printed and written to `target/criterion/infer-split.json`.
//!
//! `REG4REC_BENCH_MODEL=default` benches the default model size (d_model 128) instead of the CPU preset
//! (d_model 64).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use reg4rec_infer::{BeamSearch, InferConfig, ModelScorer, SearchStats};
use reg4rec_model::{ModelConfig, Reg4RecModel};
use reg4rec_tokenizer::ItemIndex;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

const N_ITEMS: usize = 12_101;
const M: usize = 4;
const D: usize = 256;
const N_CATEGORIES: usize = 6;
const HISTORY: usize = 20;

/// Deterministic pseudo-random numbers (an LCG; no RNG state shared with the model).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// One configuration's averages per search call.
#[derive(Serialize)]
struct Split {
    batch: usize,
    beam: usize,
    theta: Option<f32>,
    model_name: String,
    runs: u64,
    total_ms: f64,
    model_ms: f64,
    /// Part of `model_ms` spent copying libtorch outputs into the search's buffers.
    copy_ms: f64,
    bookkeeping_ms: f64,
    bookkeeping_share: f64,
    ms_per_user: f64,
    users_per_s: f64,
    pruned_paths_per_user: f64,
    model_rows_per_user: f64,
}

fn inference(c: &mut Criterion) {
    let mut rng = Lcg(7);
    let codes = reg4rec_benches::distinct_codes(N_ITEMS, M, D, || (rng.next() % D as u32) as u16);
    let index = match ItemIndex::new(&codes) {
        Ok(i) => i,
        Err(e) => panic!("index: {e}"),
    };
    let (model_name, cfg) = match std::env::var("REG4REC_BENCH_MODEL").as_deref() {
        Ok("default") => ("default", ModelConfig::default()),
        _ => ("cpu_preset", ModelConfig::preset("cpu").unwrap()),
    };
    tch::manual_seed(0);
    let model = match Reg4RecModel::new(&cfg, &codes, N_CATEGORIES, tch::Device::Cpu) {
        Ok(m) => m,
        Err(e) => panic!("model: {e}"),
    };
    let histories: Vec<Vec<u32>> = (0..256)
        .map(|_| (0..HISTORY).map(|_| rng.next() % N_ITEMS as u32).collect())
        .collect();

    let mut splits = Vec::new();
    let mut group = c.benchmark_group("infer");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for batch in [1usize, 256] {
        for beam in [20usize, 50] {
            for theta in [Some(0.06f32), None] {
                let icfg = InferConfig {
                    beam,
                    top_n: 20,
                    theta,
                    ..Default::default()
                };
                let search = match BeamSearch::new(&index, &icfg) {
                    Ok(s) => s,
                    Err(e) => panic!("search: {e}"),
                };
                let mut scorer = match ModelScorer::new(&model, &codes) {
                    Ok(s) => s,
                    Err(e) => panic!("scorer: {e}"),
                };
                let refs: Vec<&[u32]> = histories[..batch].iter().map(Vec::as_slice).collect();
                let mut acc = SearchStats::default();
                let mut runs = 0u64;
                let mut wall = 0.0f64;
                let corp = if theta.is_some() { "corp" } else { "no-corp" };
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(
                    BenchmarkId::new(format!("b{batch}/beam{beam}"), corp),
                    |b| {
                        b.iter_custom(|iters| {
                            let t = Instant::now();
                            for _ in 0..iters {
                                match search.run(&mut scorer, &refs, false) {
                                    Ok(out) => acc.merge(&out.stats),
                                    Err(e) => panic!("search failed: {e}"),
                                }
                            }
                            let el = t.elapsed();
                            runs += iters;
                            wall += el.as_secs_f64();
                            el
                        })
                    },
                );
                if runs == 0 {
                    continue; // filtered out on the command line
                }
                let r = runs as f64;
                let total_ms = 1e3 * wall / r;
                let s = Split {
                    batch,
                    beam,
                    theta,
                    model_name: model_name.to_string(),
                    runs,
                    total_ms,
                    model_ms: 1e3 * acc.model_secs / r,
                    copy_ms: 1e3 * scorer.copy_secs / r,
                    bookkeeping_ms: 1e3 * acc.search_secs / r,
                    bookkeeping_share: acc.search_secs
                        / (acc.model_secs + acc.search_secs).max(1e-12),
                    ms_per_user: total_ms / batch as f64,
                    users_per_s: 1e3 * batch as f64 / total_ms.max(1e-12),
                    pruned_paths_per_user: acc.pruned_paths as f64 / acc.users.max(1) as f64,
                    model_rows_per_user: acc.model_rows as f64 / acc.users.max(1) as f64,
                };
                eprintln!(
                    "infer b{batch} beam{beam} {corp} ({model_name}): {:.1} ms/call = model {:.1} ms (copy {:.1}) \
                     + bookkeeping {:.1} ms ({:.1}%); {:.2} ms/user, {:.1} users/s, {:.2} pruned paths/user",
                    s.total_ms,
                    s.model_ms,
                    s.copy_ms,
                    s.bookkeeping_ms,
                    100.0 * s.bookkeeping_share,
                    s.ms_per_user,
                    s.users_per_s,
                    s.pruned_paths_per_user
                );
                splits.push(s);
            }
        }
    }
    group.finish();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion/infer-split.json");
    if let Err(e) = reg4rec_data::io::write_json_atomic(&out, &splits) {
        eprintln!("could not write {}: {e}", out.display());
    }
}

criterion_group!(benches, inference);
criterion_main!(benches);
