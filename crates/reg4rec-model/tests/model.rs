//! Behaviour of the generative model, CRSS training and the trainer on tiny seeded synthetic data (CPU).

use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::Dataset;
use reg4rec_model::checkpoint::{load_weights, save_weights, Which};
use reg4rec_model::crss::{
    greedy_decode, path_log_probs, select_order, sequence_loss, target_contexts,
};
use reg4rec_model::decoding::{codebook_mask, used_codebooks};
use reg4rec_model::{
    load_model, no_seen_items, pretrain, LadqConfig, Mode, ModelConfig, Objective, PathScore,
    PrecisionMode, PretrainOptions, Reg4RecModel, SeqBatch, SeqBatchBuilder, StepTarget,
    TrainConfig,
};
use reg4rec_tokenizer::Codes;
use tch::{Device, Kind, Tensor};

/// libtorch's RNG is process-global: tests that seed it run one at a time, on one intra-op thread (tiny ops do
/// not gain from more, and spinning workers crawl on a shared machine).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = reg4rec_model::torch_rng_lock();
    tch::set_num_threads(1);
    guard
}

/// `n_items` items with distinct tuples over M = 3 codebooks of D = 4 codes, category = item % 3, and users whose
/// sequences walk the items in a fixed cycle (so the next item is a function of the last one).
fn synthetic(n_items: usize, n_users: usize, len: usize) -> (Dataset, Codes) {
    let (m, d) = (3usize, 4usize);
    let mut tuples = Vec::new();
    for i in 0..n_items {
        // Distinct: mixed-radix digits of a scrambled index.
        let k = (i * 7 + 3) % (d * d * d);
        tuples.extend([(k % d) as u16, ((k / d) % d) as u16, (k / (d * d)) as u16]);
    }
    let codes = Codes::new(m, d, false, tuples).unwrap();
    let sequences: Vec<Vec<u32>> = (0..n_users)
        .map(|u| (0..len).map(|t| ((u + t) % n_items) as u32).collect())
        .collect();
    let ds = Dataset {
        name: "synthetic".into(),
        user_ids: (0..n_users).map(|u| u.to_string()).collect(),
        sequences,
        item_ids: (0..n_items).map(|i| i.to_string()).collect(),
        item_category: (0..n_items).map(|i| (i % 3) as u32).collect(),
        category_names: vec!["a".into(), "b".into(), "c".into()],
        item_attributes: vec![vec![]; n_items],
        item_names: Vec::new(),
    };
    (ds, codes)
}

fn tiny_model(mode: Mode, seed: i64, codes: &Codes) -> Reg4RecModel {
    tch::manual_seed(seed);
    let cfg = ModelConfig {
        mode,
        repeat_bias: true,
        ..ModelConfig::preset("smoke").unwrap()
    };
    let model = Reg4RecModel::new(&cfg, codes, 3, Device::Cpu).unwrap();
    // A non-zero repeat bias, so every loss below depends on which items each position has seen.
    tch::no_grad(|| {
        let mut b = model.var_store().variables()["repeat_bias"].shallow_clone();
        let _ = b.fill_(-0.7);
    });
    model
}

fn builder<'a>(model: &Reg4RecModel, ds: &'a Dataset, codes: &'a Codes) -> SeqBatchBuilder<'a> {
    SeqBatchBuilder {
        vocab: model.vocab(),
        history_len: model.config().history_len,
        codes,
        item_category: &ds.item_category,
    }
}

const W: Objective = Objective {
    step_target: StepTarget::Set,
    lambda_cat: 0.5,
    lambda_item: 1.0,
    lambda_path: 0.0,
    lambda_distill: 0.0,
};

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

#[test]
fn encode_and_decode_have_the_documented_shapes() {
    let _serial = serial();
    let (_, codes) = synthetic(10, 1, 3);
    let model = tiny_model(Mode::Reg4rec, 0, &codes);
    let enc = model.contexts(&[&[0, 1, 2], &[5], &[]]).unwrap();
    assert_eq!(enc.hidden.size(), vec![3, 32]);
    assert_eq!(enc.items.size(), vec![10, 32]);
    let tokens = Tensor::from_slice(&[5i64, 9, 13]).view([3, 1]);
    let out = model.decode(&enc.hidden, &tokens, false);
    assert_eq!(out.token_logits.size(), vec![3, 2, 16]);
    assert_eq!(out.category_logits.size(), vec![3, 2, 3]);
    assert_eq!(out.token_logits.isfinite().all().int64_value(&[]), 1);
    let last = model.decode_last(&enc.hidden, &tokens, false);
    assert_eq!(last.token_logits.size(), vec![3, 1, 16]);
    // The same step computed alone: equal up to float rounding (the products have other shapes, and some CPU
    // kernels, AMD's among them, round them differently).
    assert!(last
        .token_logits
        .allclose(&out.token_logits.narrow(1, 1, 1), 1e-5, 1e-6, false));
    assert_eq!(
        model
            .item_logits(&enc.hidden, &enc.items, &no_seen_items(), false)
            .size(),
        vec![3, 10]
    );
    // Histories longer than L read their last L items; an unknown item is an error naming it.
    let long: Vec<u32> = (0..9).collect();
    let a = model.contexts(&[&long]).unwrap().hidden;
    let b = model.contexts(&[&long[4..]]).unwrap().hidden;
    assert!(a.equal(&b));
    let e = model.contexts(&[&[10]]).unwrap_err().to_string();
    assert!(e.contains("item 10"), "{e}");
}

/// The per-user layout is causal: changing a later item of a sequence changes neither the contexts of the
/// earlier positions nor their loss terms.
#[test]
fn the_layout_is_causal() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 1, 3);
    let model = tiny_model(Mode::Reg4rec, 7, &codes);
    let b = builder(&model, &ds, &codes);
    let a = b.sequences(&[&[1, 2, 3, 4]]).unwrap();
    let c = b.sequences(&[&[1, 2, 8, 6]]).unwrap();
    let ha = model.encode(&a.stream, false).hidden;
    let hc = model.encode(&c.stream, false).hidden;
    // Streams [START, 1, 2, 3] and [START, 1, 2, 8]: positions 0..3 read the same items.
    assert!(ha.narrow(1, 0, 3).equal(&hc.narrow(1, 0, 3)));
    assert!(!ha.narrow(1, 3, 1).equal(&hc.narrow(1, 3, 1)));
    // The loss terms of positions 0 and 1 (targets 1 and 2) only.
    let first_two = |batch: SeqBatch| batch.targets_slice(0, 2);
    let la = sequence_loss(&model, &first_two(a), W, false);
    let lc = sequence_loss(&model, &first_two(c), W, false);
    assert_eq!(value(&la.total), value(&lc.total));
}

/// One pass over a batch of users equals the mean of the losses of every position computed alone (its prefix as
/// the history), and padding changes nothing.
#[test]
fn a_per_user_batch_equals_its_positions_one_at_a_time() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 1, 3);
    for mode in [Mode::Reg4rec, Mode::Tiger] {
        let codes = Codes::new(3, 4, mode == Mode::Tiger, codes.tuples.clone()).unwrap();
        let model = tiny_model(mode, 8, &codes);
        let b = builder(&model, &ds, &codes);
        let seqs: [&[u32]; 3] = [&[1, 2, 3, 4], &[7], &[5, 0, 9]];
        let batch = b.sequences(&seqs).unwrap();
        assert_eq!(batch.n_targets, 8);
        let all = sequence_loss(&model, &batch, W, false);
        let mut sums = [0.0; 4];
        for s in seqs {
            for t in 0..s.len() {
                let one = b.last(&[(&s[..t], s[t])]).unwrap();
                let l = sequence_loss(&model, &one, W, false);
                for (acc, x) in sums
                    .iter_mut()
                    .zip([&l.total, &l.token, &l.category, &l.item])
                {
                    *acc += value(x) / 8.0;
                }
            }
        }
        for (x, want) in [&all.total, &all.token, &all.category, &all.item]
            .iter()
            .zip(sums)
        {
            assert!(
                (value(x) - want).abs() < 1e-5,
                "{mode:?}: {} vs {want}",
                value(x)
            );
        }
        // Each row alone (no padding) gives the same per-row loss as inside the padded batch.
        let short = b.sequences(&[seqs[1]]).unwrap();
        let padded = batch.targets_slice(4, 1);
        let a = sequence_loss(&model, &short, W, false);
        let p = sequence_loss(&model, &padded, W, false);
        assert!((value(&a.total) - value(&p.total)).abs() < 1e-5);
    }
}

/// The repeat bias moves exactly the logits of the items each position has already seen, and learns from the
/// positions: where no target repeats a history item, its gradient pushes it down.
#[test]
fn the_repeat_bias_applies_to_seen_items_only_and_is_learned() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 1, 3);
    let model = tiny_model(Mode::Reg4rec, 9, &codes);
    let batch = builder(&model, &ds, &codes)
        .sequences(&[&[1, 2, 3, 4], &[5, 6]])
        .unwrap();
    let (context, enc) = target_contexts(&model, &batch, false);
    let plain = model.item_logits(&context, &enc.items, &no_seen_items(), false);
    let biased = model.item_logits(&context, &enc.items, &batch.seen, false);
    let diff: Vec<Vec<f32>> = Vec::try_from(&(biased - plain)).unwrap();
    // Targets 1, 2, 3, 4 (row 0) and 5, 6 (row 1): each position has seen the items before its target.
    let seen: [&[usize]; 6] = [&[], &[1], &[1, 2], &[1, 2, 3], &[], &[5]];
    for (t, row) in diff.iter().enumerate() {
        for (item, &d) in row.iter().enumerate() {
            let want = if seen[t].contains(&item) { -0.7 } else { 0.0 };
            assert!((d - want).abs() < 1e-6, "target {t}, item {item}: {d}");
        }
    }
    assert!((model.repeat_bias().unwrap() + 0.7).abs() < 1e-6);
    // No target here repeats a history item: the loss falls as the bias falls.
    let loss = sequence_loss(&model, &batch, W, true);
    loss.total.backward();
    let grad = model.var_store().variables()["repeat_bias"].grad();
    assert!(value(&grad.sum(Kind::Float)) > 0.0);
    let bad = ModelConfig {
        item_head: false,
        repeat_bias: true,
        ..ModelConfig::default()
    };
    let e = bad.validate().unwrap_err();
    assert!(e.to_string().contains("repeat_bias"), "{e}");
}

/// The item head's distillation into a parallel path: the cross-entropy of the path's item-level
/// distribution against the item head's softmax, with the item head a fixed teacher (no gradient reaches what
/// only the item head reads, such as its repeat bias).
#[test]
fn distillation_is_the_path_cross_entropy_against_the_detached_item_head() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 1, 3);
    tch::manual_seed(4);
    let cfg = ModelConfig {
        path: PathScore::Parallel,
        repeat_bias: true,
        ..ModelConfig::preset("smoke").unwrap()
    };
    let model = Reg4RecModel::new(&cfg, &codes, 3, Device::Cpu).unwrap();
    let batch = builder(&model, &ds, &codes)
        .sequences(&[&[1, 2, 3, 4], &[5, 6]])
        .unwrap();
    let only_distill = Objective {
        lambda_cat: 0.0,
        lambda_item: 0.0,
        lambda_distill: 1.0,
        ..W
    };
    let loss = sequence_loss(&model, &batch, only_distill, false);
    let (context, enc) = target_contexts(&model, &batch, false);
    let teacher = model
        .item_logits(&context, &enc.items, &batch.seen, false)
        .softmax(-1, Kind::Float);
    let first = model.first_state(&context, false);
    let student = model
        .path_item_logits(&first, false)
        .log_softmax(-1, Kind::Float);
    let want = value(&-(teacher * student).sum(Kind::Float)) / batch.n_targets as f64;
    assert!(
        (value(&loss.distill) - want).abs() < 1e-5,
        "{} vs {want}",
        value(&loss.distill)
    );
    assert_eq!(value(&loss.path), 0.0);
    // Only the token loss and the distillation: the repeat bias (read by the item head alone) gets no gradient.
    loss.total.backward();
    let grad = model.var_store().variables()["repeat_bias"].grad();
    assert!(!grad.defined() || value(&grad.abs().sum(Kind::Float)) == 0.0);
    let head = model.var_store().variables()["token_head.weight"].grad();
    assert!(
        value(&head.abs().sum(Kind::Float)) > 0.0,
        "the path's token rows learn from the distillation"
    );
}

#[test]
fn bf16_compute_stays_close_to_f32_and_trains() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 1, 3);
    let mut model = tiny_model(Mode::Reg4rec, 6, &codes);
    let tokens = Tensor::from_slice(&[5i64, 9]).view([2, 1]);
    let ctx = model.contexts(&[&[0, 1, 2], &[5]]).unwrap().hidden;
    let f32_logits = model.decode(&ctx, &tokens, false).token_logits;
    model.set_bf16(true);
    let ctx = model.contexts(&[&[0, 1, 2], &[5]]).unwrap().hidden;
    let out = model.decode(&ctx, &tokens, false);
    assert_eq!(out.token_logits.kind(), Kind::Float);
    let diff = value(&(&out.token_logits - &f32_logits).abs().max());
    assert!(
        diff > 0.0 && diff < 0.1,
        "bf16 vs f32 logits differ by {diff}"
    );
    let batch = builder(&model, &ds, &codes)
        .sequences(&[&[0, 1, 2], &[5, 3]])
        .unwrap();
    let loss = sequence_loss(&model, &batch, W, true);
    loss.total.backward();
    let grad = model.var_store().variables()["token_head.weight"].grad();
    assert_eq!(grad.kind(), Kind::Float);
    assert_eq!(grad.isfinite().all().int64_value(&[]), 1);
}

#[test]
fn masked_decoding_never_reuses_a_codebook() {
    let _serial = serial();
    let (_, codes) = synthetic(10, 1, 3);
    let model = tiny_model(Mode::Reg4rec, 1, &codes);
    let v = model.vocab();
    let ctx = model.contexts(&[&[0, 1], &[2, 3, 4], &[7]]).unwrap().hidden;
    let (tokens, cats) = greedy_decode(&model, &ctx);
    assert_eq!(cats.size(), vec![3, 3]);
    let tokens: Vec<Vec<i64>> = Vec::try_from(&tokens).unwrap();
    for row in &tokens {
        let mut cb: Vec<usize> = row.iter().map(|&t| v.codebook_of(t).unwrap()).collect();
        cb.sort();
        assert_eq!(cb, vec![0, 1, 2], "{row:?}");
    }
    // At every later step, every token of an already used codebook has exactly zero probability.
    for k in 1..3usize {
        let prefix: Vec<i64> = tokens.iter().flat_map(|r| r[..k].to_vec()).collect();
        let prefix = Tensor::from_slice(&prefix).view([3, k as i64]);
        let logits = model
            .decode_last(&ctx, &prefix, false)
            .token_logits
            .select(1, 0);
        let used = used_codebooks(&v, &prefix);
        let p = (logits + codebook_mask(&v, &used)).softmax(-1, Kind::Float);
        let p: Vec<Vec<f32>> = Vec::try_from(&p).unwrap();
        for (b, row) in tokens.iter().enumerate() {
            for t in 0..v.size() as i64 {
                let open = v
                    .codebook_of(t)
                    .is_some_and(|r| !row[..k].iter().any(|&x| v.codebook_of(x) == Some(r)));
                assert_eq!(p[b][t as usize] > 0.0, open, "step {k} token {t}");
            }
        }
    }
}

#[test]
fn crss_feeds_a_permutation_of_the_target_tuple() {
    let _serial = serial();
    let (ds, codes) = synthetic(12, 1, 3);
    let model = tiny_model(Mode::Reg4rec, 2, &codes);
    let v = model.vocab();
    let items: Vec<u32> = (0..12).collect();
    let hist: Vec<Vec<u32>> = items
        .iter()
        .map(|&i| vec![(i + 1) % 12, (i + 5) % 12])
        .collect();
    let pairs: Vec<(&[u32], u32)> = hist.iter().map(Vec::as_slice).zip(items.clone()).collect();
    let batch = builder(&model, &ds, &codes).last(&pairs).unwrap();
    let (ctx, _) = target_contexts(&model, &batch, false);
    let fed: Vec<Vec<i64>> = Vec::try_from(&select_order(&model, &ctx, &batch.targets)).unwrap();
    let want: Vec<Vec<i64>> = Vec::try_from(&batch.targets).unwrap();
    let mut orders = std::collections::HashSet::new();
    for (f, w) in fed.iter().zip(&want) {
        let (mut a, mut b) = (f.clone(), w.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        orders.insert(
            f.iter()
                .map(|&t| v.codebook_of(t).unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        orders.len() > 1,
        "an untrained model should pick varied orders: {orders:?}"
    );
    let loss = sequence_loss(&model, &batch, W, true);
    let (tot, tok, cat, item) = (
        value(&loss.total),
        value(&loss.token),
        value(&loss.category),
        value(&loss.item),
    );
    assert!((tot - (tok + 0.5 * cat + item)).abs() < 1e-5);
    // The set loss is at most the loss of the single chosen token (it sums probability over the set).
    assert!(tok > 0.0 && tok < (v.size() as f64).ln());
    // Full-softmax item loss of an untrained model: about ln(n_items).
    assert!((item - 12f64.ln()).abs() < 0.5, "{item}");
    // The `chosen` step target scores only the fed token: never below the set loss, and equal to the
    // cross-entropy of the fed order, step by step.
    let chosen = Objective {
        step_target: StepTarget::Chosen,
        ..W
    };
    let c = sequence_loss(&model, &batch, chosen, false);
    let set = sequence_loss(&model, &batch, W, false);
    assert!(value(&c.token) > value(&set.token));
    let fed = select_order(&model, &ctx, &batch.targets);
    let mut ce = 0.0;
    for k in 0..3i64 {
        let logits = model
            .decode_last(&ctx, &fed.narrow(1, 0, k), false)
            .token_logits
            .select(1, 0);
        let used = used_codebooks(&v, &fed.narrow(1, 0, k));
        let logp = (logits + codebook_mask(&v, &used)).log_softmax(-1, Kind::Float);
        ce -= value(
            &logp
                .gather(1, &fed.narrow(1, k, 1), false)
                .mean(Kind::Float),
        ) / 3.0;
    }
    assert!(
        (value(&c.token) - ce).abs() < 1e-4,
        "{} vs {ce}",
        value(&c.token)
    );
    // The path log-probability of each target is the sum of the same step log-probabilities.
    let paths = path_log_probs(&model, &ctx, &batch.targets);
    assert_eq!(paths.size(), vec![12]);
    let mean_step = -value(&paths.mean(Kind::Float)) / 3.0;
    assert!((mean_step - ce).abs() < 1e-4, "{mean_step} vs {ce}");
}

#[test]
fn tiger_mode_uses_codebook_order_and_no_category_weight() {
    let _serial = serial();
    let (ds, codes) = synthetic(6, 1, 3);
    let codes = Codes::new(3, 4, true, codes.tuples).unwrap();
    let model = tiny_model(Mode::Tiger, 3, &codes);
    let v = model.vocab();
    let batch = builder(&model, &ds, &codes)
        .last(&[(&[0, 1], 3), (&[2], 4)])
        .unwrap();
    let loss = sequence_loss(&model, &batch, W, false);
    let want = value(&loss.token) + value(&loss.item);
    assert!((value(&loss.total) - want).abs() < 1e-6);
    let (ctx, _) = target_contexts(&model, &batch, false);
    let (tokens, _) = greedy_decode(&model, &ctx);
    let tokens: Vec<Vec<i64>> = Vec::try_from(&tokens).unwrap();
    for row in tokens {
        let cb: Vec<usize> = row.iter().map(|&t| v.codebook_of(t).unwrap()).collect();
        assert_eq!(cb, vec![0, 1, 2]);
    }
}

#[test]
fn weights_round_trip_through_safetensors() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (_, codes) = synthetic(6, 1, 3);
    let a = tiny_model(Mode::Reg4rec, 4, &codes);
    let path = dir.path().join("w.safetensors");
    save_weights(&a, &path).unwrap();
    let mut b = tiny_model(Mode::Reg4rec, 5, &codes);
    let tokens = Tensor::zeros([1, 0], (Kind::Int64, Device::Cpu));
    let out = |m: &Reg4RecModel| {
        let ctx = m.contexts(&[&[0, 1, 2]]).unwrap().hidden;
        m.decode(&ctx, &tokens, false).token_logits
    };
    assert!(out(&a).not_equal_tensor(&out(&b)).any().int64_value(&[]) == 1);
    load_weights(&mut b, &path).unwrap();
    assert!(out(&a).equal(&out(&b)));
    // A model of another shape is refused, naming the weight.
    tch::manual_seed(0);
    let mut c = Reg4RecModel::new(
        &ModelConfig {
            d_model: 16,
            ..ModelConfig::preset("smoke").unwrap()
        },
        &codes,
        3,
        Device::Cpu,
    )
    .unwrap();
    let e = load_weights(&mut c, &path).unwrap_err().to_string();
    assert!(
        e.contains("w.safetensors") && e.contains("has shape"),
        "{e}"
    );
    // One flipped byte in the tensor data is caught by the recorded checksum.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let e = load_weights(&mut b, &path).unwrap_err().to_string();
    assert!(
        e.contains("w.safetensors") && e.contains("sha256 mismatch"),
        "{e}"
    );
}

/// Every (history, next item) pair of the training sequences after their first position.
fn training_pairs(split: &LeaveOneOut) -> Vec<(&[u32], u32)> {
    let mut pairs: Vec<(&[u32], u32)> = Vec::new();
    for s in &split.train {
        for t in 1..s.len() {
            pairs.push((&s[..t], s[t]));
        }
    }
    pairs
}

fn overfit_configs() -> (ModelConfig, TrainConfig) {
    let m = ModelConfig {
        dropout: 0.0,
        history_len: 8,
        ..ModelConfig::preset("smoke").unwrap()
    };
    let t = TrainConfig {
        epochs: 60,
        batch_size: 2,
        lr: 1e-2,
        warmup_steps: 10,
        weight_decay: 0.0,
        patience: 0,
        log_every: 5,
        ..TrainConfig::preset("smoke").unwrap()
    };
    (m, t)
}

#[test]
fn overfits_a_tiny_dataset_and_regenerates_the_items() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (ds, codes) = synthetic(8, 8, 8);
    let split = LeaveOneOut::new(&ds);
    let (m, t) = overfit_configs();
    let report = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        dir.path(),
        false,
        Default::default(),
    )
    .unwrap();
    assert_eq!(report.epochs, 60);
    let (model, cfg) = load_model(dir.path(), Which::Latest, &codes, Device::Cpu).unwrap();
    assert_eq!(cfg.n_items, 8);
    // Every training position after the first (whose empty history cannot tell the users apart) is learnt: a
    // near-zero loss, and greedy decoding regenerates its target and category.
    let pairs = training_pairs(&split);
    let batch = builder(&model, &ds, &codes).last(&pairs).unwrap();
    let loss = value(&sequence_loss(&model, &batch, W, false).total);
    assert!(loss < 0.1, "loss {loss}");
    let hist: Vec<&[u32]> = pairs.iter().map(|p| p.0).collect();
    let ctx = model.contexts(&hist).unwrap().hidden;
    let (tokens, cats) = greedy_decode(&model, &ctx);
    let tokens: Vec<Vec<i64>> = Vec::try_from(&tokens).unwrap();
    let cats: Vec<Vec<i64>> = Vec::try_from(&cats).unwrap();
    let v = model.vocab();
    for ((row, cat), (_, target)) in tokens.iter().zip(&cats).zip(&pairs) {
        let mut tuple = vec![0u16; 3];
        for &tok in row {
            tuple[v.codebook_of(tok).unwrap()] = v.code_of(tok).unwrap() as u16;
        }
        assert_eq!(tuple, codes.tuple(*target as usize), "target {target}");
        assert!(cat
            .iter()
            .all(|&c| c == ds.item_category[*target as usize] as i64));
    }
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains("\"kind\":\"epoch\""))
            .count(),
        60
    );
}

/// Path-ranked models learn to put the target first by its path score alone: the parallel path (every token
/// from the first decoder state, with the item-level path loss) and the per-codebook chain. For the parallel
/// path, the teacher-forced path score of an item is exactly its entry in the every-item scoring.
#[test]
fn path_scored_models_rank_the_target_first() {
    let _serial = serial();
    let (ds, codes) = synthetic(8, 8, 8);
    let split = LeaveOneOut::new(&ds);
    for path in [PathScore::Parallel, PathScore::Codebook] {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, mut t) = overfit_configs();
        m.path = path;
        m.item_head = false;
        t.lambda_path = if path == PathScore::Parallel {
            1.0
        } else {
            0.0
        };
        pretrain(
            &ds,
            &split,
            &codes,
            &m,
            &t,
            dir.path(),
            false,
            Default::default(),
        )
        .unwrap();
        let (model, _) = load_model(dir.path(), Which::Latest, &codes, Device::Cpu).unwrap();
        assert_eq!(model.config().path, path);
        let pairs = training_pairs(&split);
        let hist: Vec<&[u32]> = pairs.iter().map(|p| p.0).collect();
        let ctx = model.contexts(&hist).unwrap().hidden;
        let n = pairs.len() as i64;
        // Every item's path score after every context: [n, 8].
        let all_targets = builder(&model, &ds, &codes)
            .last(&(0..8u32).map(|i| (&[][..], i)).collect::<Vec<_>>())
            .unwrap()
            .targets; // [8, M]
        let mut scores = vec![vec![0f32; 8]; n as usize];
        for i in 0..8i64 {
            let targets = all_targets.get(i).unsqueeze(0).expand([n, 3], false);
            let col: Vec<f32> = Vec::try_from(&path_log_probs(&model, &ctx, &targets)).unwrap();
            for (row, x) in scores.iter_mut().zip(col) {
                row[i as usize] = x;
            }
        }
        if path == PathScore::Parallel {
            let every: Vec<Vec<f32>> = Vec::try_from(&model.parallel_path_scores(&ctx)).unwrap();
            for (a, b) in every.iter().flatten().zip(scores.iter().flatten()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        for (row, (_, target)) in scores.iter().zip(&pairs) {
            let best = (0..8).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            assert_eq!(best, *target as usize, "{path:?}: {row:?}");
        }
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 6, 9);
    let split = LeaveOneOut::new(&ds);
    let m = ModelConfig::preset("smoke").unwrap(); // dropout 0.1: the per-step reseed must make it reproducible
    let t = TrainConfig {
        epochs: 3,
        batch_size: 2,
        checkpoint_every: 2,
        ..TrainConfig::preset("smoke").unwrap()
    };
    let full = tempfile::tempdir().unwrap();
    let a = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        full.path(),
        false,
        Default::default(),
    )
    .unwrap();
    let steps_per_epoch = split.n_users().div_ceil(2) as u64;
    assert_eq!(a.steps, 3 * steps_per_epoch);

    let killed = tempfile::tempdir().unwrap();
    // Stop mid-epoch (not on a checkpoint_every boundary), then resume twice: once more mid-run, then to the end.
    let opts = |n| PretrainOptions {
        stop_after_steps: Some(n),
        ..Default::default()
    };
    let b1 = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        killed.path(),
        false,
        opts(steps_per_epoch + 1),
    )
    .unwrap();
    assert!(b1.interrupted);
    let e = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        killed.path(),
        false,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("resume"), "{e}");
    pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        killed.path(),
        true,
        opts(2 * steps_per_epoch + 3),
    )
    .unwrap();
    let b = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        killed.path(),
        true,
        Default::default(),
    )
    .unwrap();
    assert_eq!(b.steps, a.steps);
    assert_eq!(b.best_epoch, a.best_epoch);

    let (ma, _) = load_model(full.path(), Which::Latest, &codes, Device::Cpu).unwrap();
    let (mb, _) = load_model(killed.path(), Which::Latest, &codes, Device::Cpu).unwrap();
    let va = ma.var_store().variables();
    for (name, tb) in mb.var_store().variables() {
        assert!(va[&name].equal(&tb), "weight {name} differs after resume");
    }
    // The metrics log holds each step once, with the same losses as the uninterrupted run.
    let losses = |dir: &std::path::Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "step")
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(losses(full.path()), losses(killed.path()));

    // Another config cannot resume this run.
    let t2 = TrainConfig { lr: 0.5, ..t };
    let e = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t2,
        killed.path(),
        true,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn validation_metric_callback_drives_the_best_checkpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (ds, codes) = synthetic(8, 4, 6);
    let split = LeaveOneOut::new(&ds);
    let (m, mut t) = overfit_configs();
    t.epochs = 6;
    t.patience = 2;
    // A metric that peaks at the second epoch: early stopping fires two epochs later.
    let mut calls = 0usize;
    let mut metric = |_: &Reg4RecModel| {
        calls += 1;
        Ok(if calls == 2 { 1.0 } else { 0.0 })
    };
    let report = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        dir.path(),
        false,
        PretrainOptions {
            valid_metric: Some(&mut metric),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.best_epoch, Some(1));
    assert_eq!(report.best_valid_metric, Some(1.0));
    assert!(report.stopped_early);
    assert_eq!(report.epochs, 4);
}

#[test]
fn ladq_pretraining_assigns_precisions_logs_them_and_resumes_exactly() {
    let _serial = serial();
    let (ds, codes) = synthetic(10, 6, 9);
    let split = LeaveOneOut::new(&ds);
    let m = ModelConfig::preset("smoke").unwrap(); // 1 encoder layer + 1 decoder block: 6 + 2 LADQ projections
    let base = TrainConfig {
        epochs: 3,
        batch_size: 2,
        ..TrainConfig::preset("smoke").unwrap()
    };
    let t = TrainConfig {
        precision: PrecisionMode::Ladq,
        ladq: LadqConfig {
            sample_every: 3,
            ..Default::default()
        },
        ..base.clone()
    };
    let fp32 = tempfile::tempdir().unwrap();
    let a = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &base,
        fp32.path(),
        false,
        Default::default(),
    )
    .unwrap();
    let full = tempfile::tempdir().unwrap();
    let b = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        full.path(),
        false,
        Default::default(),
    )
    .unwrap();
    let (la, lb) = (a.last_train_loss.unwrap(), b.last_train_loss.unwrap());
    assert!(
        (la - lb).abs() <= 0.1 * la,
        "fp32 loss {la}, ladq loss {lb}"
    );
    assert!(!fp32.path().join("ladq.jsonl").exists());

    // One history line per sampling (steps 0, 3, 6, ...), every projection ranked: 2 fp32, 4 bf16, 2 fp8.
    let hist = std::fs::read_to_string(full.path().join("ladq.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = hist
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, b.steps.div_ceil(3));
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"].as_u64().unwrap(), 3 * i as u64);
        assert_eq!(l["counts"], serde_json::json!([2, 4, 2]));
        let layers = l["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 8);
        assert!(layers
            .iter()
            .all(|x| x["rows"].as_i64().unwrap() > 0 && x["sensitivity"].as_f64().unwrap() > 0.0));
    }
    assert_eq!(lines[0]["layers"][0]["name"], "encoder.layers.0.attn.q");
    assert_eq!(lines[0]["layers"][7]["name"], "decoder.blocks.0.ffn.down");

    // Killed between samplings and resumed: the same weights and the same history as the uninterrupted run.
    let killed = tempfile::tempdir().unwrap();
    let opts = PretrainOptions {
        stop_after_steps: Some(7),
        ..Default::default()
    };
    pretrain(&ds, &split, &codes, &m, &t, killed.path(), false, opts).unwrap();
    let c = pretrain(
        &ds,
        &split,
        &codes,
        &m,
        &t,
        killed.path(),
        true,
        Default::default(),
    )
    .unwrap();
    assert_eq!(c.steps, b.steps);
    assert_eq!(
        std::fs::read_to_string(killed.path().join("ladq.jsonl")).unwrap(),
        hist
    );
    let (mb, _) = load_model(full.path(), Which::Latest, &codes, Device::Cpu).unwrap();
    let (mc, _) = load_model(killed.path(), Which::Latest, &codes, Device::Cpu).unwrap();
    let vb = mb.var_store().variables();
    for (name, tc) in mc.var_store().variables() {
        assert!(vb[&name].equal(&tc), "weight {name} differs after resume");
    }

    // bf16 flag and ladq together are rejected, naming the field.
    let bad = TrainConfig {
        bf16: true,
        ..t.clone()
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("bf16"), "{e}");
    let bad = TrainConfig {
        ladq: LadqConfig {
            sample_every: 0,
            ..Default::default()
        },
        ..t
    };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("ladq.sample_every"), "{e}");
}
