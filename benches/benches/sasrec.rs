//! Training throughput of SASRec-CE (sequences per second) at the CPU preset's size: the Amazon Beauty item count
//! (12,101 items, full softmax over all of them), d_model 64, 2 layers, batches of the preset's size, sequences of
//! Beauty's typical training length (4 to 14 items, mean about 8).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reg4rec_baselines::trainer::Trainer;
use reg4rec_baselines::{SasRecConfig, SasRecModel};

const N_ITEMS: u32 = 12_101;

fn sasrec_training(c: &mut Criterion) {
    let cfg = SasRecConfig::cpu_preset();
    let model = match SasRecModel::new(&cfg, N_ITEMS as usize) {
        Ok(m) => m,
        Err(e) => panic!("cpu preset must build: {e}"),
    };
    let mut trainer = Trainer::new(model);
    // Deterministic pseudo-random sequences (an LCG; no RNG state shared with the model).
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let seqs: Vec<Vec<u32>> = (0..cfg.batch_size)
        .map(|_| {
            let len = 4 + (next() % 11) as usize;
            (0..len).map(|_| next() % N_ITEMS).collect()
        })
        .collect();
    let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();

    let mut group = c.benchmark_group("sasrec");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("train_step_cpu_preset", |b| {
        b.iter(|| match trainer.step(&batch) {
            Ok((loss, _)) => loss,
            Err(e) => panic!("training step failed: {e}"),
        })
    });
    group.finish();
}

criterion_group!(benches, sasrec_training);
criterion_main!(benches);
