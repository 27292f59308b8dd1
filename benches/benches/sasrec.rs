//! Training throughput of SASRec-CE (sequences per second) at the CPU preset's size: the Amazon Beauty item count
//! (12,101 items, full softmax over all of them), d_model 64, 2 layers, batches of the preset's size, sequences of
//! Beauty's typical training length (4 to 14 items, mean about 8).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reg4rec_baselines::{SasRecConfig, SasRecModel};

const N_ITEMS: u32 = 12_101;

fn sasrec_training(c: &mut Criterion) {
    let cfg = SasRecConfig::preset("cpu").unwrap();
    let model = match SasRecModel::new(&cfg, N_ITEMS as usize, None) {
        Ok(m) => m,
        Err(e) => panic!("cpu preset must build: {e}"),
    };
    let mut opt = reg4rec_train::AdamW::new(model.var_store(), Default::default());
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
        b.iter(|| {
            // One step as the training engine takes it: build the batch, forward, backward, AdamW.
            let batch = model
                .training_batch(&batch)
                .unwrap_or_else(|e| panic!("training batch: {e}"));
            let loss = model.loss(&batch);
            opt.zero_grad();
            loss.backward();
            opt.step(cfg.lr);
            loss.double_value(&[])
        })
    });
    group.finish();
}

criterion_group!(benches, sasrec_training);
criterion_main!(benches);
