//! Tokenizer benches: encoding throughput (items/s) of MPQ and RQ-VAE with the default network sizes, and item
//! index look-ups (the constrained-decoding hot loop) on a catalogue of amazon-beauty size.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reg4rec_tokenizer::{
    train, Codes, FeatureMatrix, ItemIndex, MpqConfig, RqVaeConfig, TokenizerConfig,
    TokenizerTrainConfig,
};
use tch::Tensor;

const N_ITEMS: usize = 12_101;
const DIM: usize = 576;

fn random_features(n: usize, dim: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for row in v.chunks_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn encoding(c: &mut Criterion) {
    // Default network sizes; one epoch of training is enough to time the forward pass.
    let n_train = 2048;
    let values = random_features(n_train, DIM);
    let features = FeatureMatrix::new(n_train, DIM, &values).expect("features");
    let short = TokenizerTrainConfig {
        epochs: 1,
        warmup_epochs: 0,
        kmeans_iters: 2,
        ..TokenizerTrainConfig::default()
    };
    let configs = [
        TokenizerConfig::Mpq(MpqConfig {
            train: short.clone(),
            ..MpqConfig::default()
        }),
        TokenizerConfig::RqVae(RqVaeConfig {
            train: short,
            ..RqVaeConfig::default()
        }),
    ];
    let batch = 4096;
    let x = Tensor::from_slice(&random_features(batch, DIM)).view([batch as i64, DIM as i64]);
    let mut group = c.benchmark_group("tokenizer_encode");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(20);
    for cfg in configs {
        let (tok, _) = train(features, &cfg).expect("train");
        group.bench_function(BenchmarkId::new(cfg.kind().as_str(), batch), |b| {
            b.iter(|| black_box(tok.encode(&x).expect("encode")))
        });
    }
    group.finish();
}

/// A random catalogue of distinct tuples with M = 4, D = 256, with skewed codes (squares of uniforms) so some
/// tokens are common, as with trained codebooks.
fn catalogue() -> Codes {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    reg4rec_benches::distinct_codes(N_ITEMS, 4, 256, || {
        (rng.gen::<f64>().powi(2) * 256.0) as u16
    })
}

fn index(c: &mut Criterion) {
    let codes = catalogue();
    let ix = ItemIndex::new(&codes).expect("index");
    let probe = codes.tokens(123);
    let mut group = c.benchmark_group("item_index");
    group.bench_function("can_extend_depth2", |b| {
        b.iter(|| black_box(ix.can_extend(black_box(&probe[..2]), probe[2])))
    });
    group.bench_function("pair_posting_follow_tokens_256", |b| {
        // One beam-search expansion of a one-token path: the codes of an open codebook whose pair list with
        // the path's token is not empty.
        let a = probe[0].id(256);
        b.iter(|| {
            (0..256usize)
                .filter(|&j| !ix.pair_posting(a, 3 * 256 + j).is_empty())
                .count()
        })
    });
    for depth in 0..4 {
        group.bench_function(BenchmarkId::new("valid_next_tokens", depth), |b| {
            b.iter(|| black_box(ix.valid_next_tokens(black_box(&probe[..depth]))))
        });
    }
    group.bench_function("reachable_depth1", |b| {
        b.iter(|| black_box(ix.reachable(black_box(&probe[..1]))))
    });
    group.finish();
}

criterion_group!(benches, encoding, index);
criterion_main!(benches);
