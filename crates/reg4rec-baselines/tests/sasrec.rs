//! Behaviour of SASRec-CE a user relies on: causality, padding invariance, learning, checkpoints and resume.

use reg4rec_baselines::{train_sasrec, Norm, Position, Samples, SasRecConfig, SasRecModel};
use reg4rec_data::metrics::MetricAccumulator;
use reg4rec_data::split::Stage;
use reg4rec_data::{Dataset, LeaveOneOut};
use reg4rec_train::{LrSchedule, Schedule};
use tch::Tensor;

/// libtorch's random generator is global: tests that initialise or train models take turns, so that each run's
/// dropout masks and initial weights come from its own seed only.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn dataset(seqs: Vec<Vec<u32>>, n_items: usize) -> Dataset {
    Dataset {
        name: "synthetic".into(),
        user_ids: (0..seqs.len()).map(|u| u.to_string()).collect(),
        sequences: seqs,
        item_ids: (0..n_items).map(|i| i.to_string()).collect(),
        item_category: vec![0; n_items],
        category_names: vec!["all".into()],
        item_attributes: vec![vec![]; n_items],
        item_names: Vec::new(),
    }
}

/// Users walking a cycle of `n_items` items from different starts: the next item is a function of the last one.
fn cyclic(n_users: usize, n_items: usize, len: usize) -> Dataset {
    let seqs = (0..n_users)
        .map(|u| (0..len).map(|k| ((u * 7 + k) % n_items) as u32).collect())
        .collect();
    dataset(seqs, n_items)
}

fn tiny_config() -> SasRecConfig {
    SasRecConfig {
        max_len: 8,
        d_model: 16,
        n_layers: 1,
        n_heads: 2,
        d_ff: 32,
        dropout: 0.1,
        lr: 1e-2,
        batch_size: 16,
        eval_batch_size: 32,
        max_epochs: 4,
        patience: 100,
        ..SasRecConfig::default()
    }
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_slice(v).view([1, v.len() as i64])
}

#[test]
fn a_position_never_sees_later_items_or_padding() {
    let _rng = rng_lock();
    for norm in [Norm::Pre, Norm::Post] {
        let cfg = SasRecConfig {
            norm,
            ..tiny_config()
        };
        causal_and_padding_blind(&SasRecModel::new(&cfg, 30, None).unwrap());
    }
    let rotary = SasRecConfig {
        position: Position::Rotary,
        ..tiny_config()
    };
    causal_and_padding_blind(&SasRecModel::new(&rotary, 30, None).unwrap());
}

/// With rotary positions a history scores the same wherever it sits in the window: the model reads how far
/// back each item is, not its absolute slot, so a prefix read inside a longer sequence (training) and alone
/// (a user at test time) gives the same hidden state.
#[test]
fn rotary_positions_make_a_prefix_read_the_same_anywhere() {
    let _rng = rng_lock();
    let cfg = SasRecConfig {
        position: Position::Rotary,
        ..tiny_config()
    };
    let m = SasRecModel::new(&cfg, 30, None).unwrap();
    assert!(!m
        .named_weights()
        .iter()
        .any(|(n, _)| n.starts_with("pos_emb")));
    let long = m.net().forward(&ids(&[3, 4, 5, 6, 7, 8]), false);
    let prefix = m.net().forward(&ids(&[3, 4, 5]), false);
    assert!(long.narrow(1, 0, 3).allclose(&prefix, 1e-5, 1e-5, false));
    // With learned absolute positions the same prefix reads differently in the longer window.
    let m = SasRecModel::new(&tiny_config(), 30, None).unwrap();
    let long = m.net().forward(&ids(&[3, 4, 5, 6, 7, 8]), false);
    let prefix = m.net().forward(&ids(&[3, 4, 5]), false);
    assert!(!long.narrow(1, 0, 3).allclose(&prefix, 1e-3, 1e-3, false));
}

/// Post-LN blocks normalise the input embeddings instead of the output: a LayerNorm named for it.
#[test]
fn post_ln_normalises_the_embeddings_instead_of_the_output() {
    let _rng = rng_lock();
    let names = |norm| {
        let cfg = SasRecConfig {
            norm,
            ..tiny_config()
        };
        SasRecModel::new(&cfg, 30, None)
            .unwrap()
            .named_weights()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    let (pre, post) = (names(Norm::Pre), names(Norm::Post));
    assert!(
        pre.contains(&"ln_f.weight".to_string()) && !pre.contains(&"ln_emb.weight".to_string())
    );
    assert!(
        post.contains(&"ln_emb.weight".to_string()) && !post.contains(&"ln_f.weight".to_string())
    );
    // The serialized config leaves the default out, so configs written before the option still match.
    let json = serde_json::to_string(&tiny_config()).unwrap();
    assert!(
        !json.contains("norm") && !json.contains("item_features"),
        "{json}"
    );
    let post_cfg: SasRecConfig = serde_json::from_str(r#"{"norm": "post"}"#).unwrap();
    assert_eq!(post_cfg.norm, Norm::Post);
}

fn causal_and_padding_blind(m: &SasRecModel) {
    let pad = m.net().pad_id();
    let a = m.net().forward(&ids(&[pad, pad, 3, 4, 5, 6, 7, 8]), false);
    let b = m
        .net()
        .forward(&ids(&[pad, pad, 3, 4, 5, 6, 20, 21]), false);
    // Positions up to the last shared item are unchanged...
    assert!(a
        .narrow(1, 2, 4)
        .allclose(&b.narrow(1, 2, 4), 1e-6, 1e-6, false));
    // ...and the changed ones do change (the test can fail).
    assert!(!a
        .narrow(1, 6, 2)
        .allclose(&b.narrow(1, 6, 2), 1e-3, 1e-3, false));
    // Replacing padding by other padding-masked content changes nothing: compare with fewer padding columns.
    let c = m.net().forward(&ids(&[pad, 3, 4, 5, 6, 7, 8]), false);
    assert!(a
        .narrow(1, 2, 6)
        .allclose(&c.narrow(1, 1, 6), 1e-5, 1e-5, false));
}

#[test]
fn scores_do_not_depend_on_the_batch() {
    let _rng = rng_lock();
    let m = SasRecModel::new(&tiny_config(), 30, None).unwrap();
    let alone = m.score(&[vec![1, 2, 3]]).unwrap();
    let batched = m
        .score(&[vec![1, 2, 3], vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
        .unwrap();
    assert_eq!(batched.size(), vec![2, 30]);
    assert!(alone.get(0).allclose(&batched.get(0), 1e-5, 1e-5, false));
    let e = m.score(&[vec![30]]).unwrap_err().to_string();
    assert!(e.contains("item 30"), "{e}");
}

#[test]
fn overfits_deterministic_cycles() {
    let _rng = rng_lock();
    let ds = cyclic(120, 20, 12);
    let split = LeaveOneOut::new(&ds);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SasRecConfig {
        max_epochs: 40,
        patience: 5,
        dropout: 0.0,
        ..tiny_config()
    };
    let report = train_sasrec(&split, 20, &cfg, None, dir.path(), false).unwrap();
    let first = report.history[0].loss;
    let last = report.history.last().unwrap().loss;
    assert!(last < first / 4.0, "loss {first} -> {last}");
    // The next item is determined by the last one: nearly every target is ranked first.
    assert!(report.test.ndcg_5 > 0.95, "{:?}", report.test);
    assert!(report.valid.recall_5 > 0.99, "{:?}", report.valid);
}

#[test]
fn checkpoint_round_trip_gives_identical_scores() {
    let _rng = rng_lock();
    let ds = cyclic(40, 15, 9);
    let split = LeaveOneOut::new(&ds);
    let dir = tempfile::tempdir().unwrap();
    let report = train_sasrec(&split, 15, &tiny_config(), None, dir.path(), false).unwrap();
    let loaded = SasRecModel::load(dir.path()).unwrap();
    assert_eq!(loaded.evaluate(&split, Stage::Test).unwrap(), report.test);
    assert_eq!(loaded.evaluate(&split, Stage::Valid).unwrap(), report.valid);

    let path = dir.path().join("copy.safetensors");
    loaded.save_weights(&path).unwrap();
    let other = SasRecConfig {
        seed: 7,
        ..tiny_config()
    };
    let mut fresh = SasRecModel::new(&other, 15, None).unwrap();
    let h = vec![vec![1, 2, 3], vec![4]];
    assert!(!fresh.score(&h).unwrap().equal(&loaded.score(&h).unwrap()));
    fresh.load_weights(&path).unwrap();
    assert!(fresh.score(&h).unwrap().equal(&loaded.score(&h).unwrap()));

    // Another architecture cannot load these weights, and the error names the tensor and shapes.
    let mut wide = SasRecModel::new(
        &SasRecConfig {
            d_model: 32,
            ..tiny_config()
        },
        15,
        None,
    )
    .unwrap();
    let e = wide.load_weights(&path).unwrap_err().to_string();
    assert!(
        e.contains("copy.safetensors") && e.contains("has shape"),
        "{e}"
    );
}

#[test]
fn resume_continues_exactly_where_training_stopped() {
    let _rng = rng_lock();
    let ds = cyclic(40, 15, 9);
    let split = LeaveOneOut::new(&ds);
    // Under a constant learning rate more epochs may be added to a finished run.
    let cfg = SasRecConfig {
        lr_schedule: Schedule::Constant,
        ..tiny_config()
    };
    let straight = tempfile::tempdir().unwrap();
    let full = train_sasrec(&split, 15, &cfg, None, straight.path(), false).unwrap();
    assert_eq!(full.epochs, 4);

    let parts = tempfile::tempdir().unwrap();
    let half = SasRecConfig {
        max_epochs: 2,
        ..cfg.clone()
    };
    let first = train_sasrec(&split, 15, &half, None, parts.path(), false).unwrap();
    assert_eq!(first.epochs, 2);
    let resumed = train_sasrec(&split, 15, &cfg, None, parts.path(), true).unwrap();
    assert_eq!(resumed.epochs, 4);
    assert_eq!(resumed.best_epoch, full.best_epoch);
    assert_eq!(resumed.valid, full.valid);
    assert_eq!(resumed.test, full.test);
    let losses =
        |r: &reg4rec_baselines::SasRecReport| r.history.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&resumed), losses(&full));

    // Resuming a finished run trains nothing more; resuming with another model is refused, naming the field.
    let again = train_sasrec(&split, 15, &cfg, None, parts.path(), true).unwrap();
    assert_eq!(again.epochs, 4);
    assert_eq!(again.test, full.test);
    let e = train_sasrec(
        &split,
        15,
        &SasRecConfig {
            d_model: 32,
            ..cfg.clone()
        },
        None,
        parts.path(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`d_model`"), "{e}");
    // Only the current checkpoint and the best weights are kept.
    let entries = |d: &str| std::fs::read_dir(parts.path().join(d)).unwrap().count();
    assert_eq!(entries("checkpoints"), 1);
    assert_eq!(entries("best"), 1);
}

#[test]
fn config_errors_name_the_field() {
    let e = SasRecConfig {
        n_heads: 3,
        ..SasRecConfig::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("`n_heads`"), "{e}");
    let e = SasRecConfig {
        dropout: 1.0,
        ..SasRecConfig::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("`dropout`"), "{e}");
    let e = serde_json::from_str::<SasRecConfig>(r#"{"d_modle": 8}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("d_modle"), "{e}");
    let partial: SasRecConfig = serde_json::from_str(r#"{"d_model": 32}"#).unwrap();
    assert_eq!(partial.max_len, 50);
    assert!(SasRecConfig::preset("laptop").is_err());
    for name in ["cpu", "smoke", "gpu", "default"] {
        SasRecConfig::preset(name).unwrap().validate().unwrap();
    }
}

#[test]
fn cosine_schedule_sets_each_steps_rate_and_fixes_max_epochs() {
    let _rng = rng_lock();
    let ds = cyclic(40, 15, 9);
    let split = LeaveOneOut::new(&ds);
    let cfg = tiny_config(); // the default schedule: cosine to 0 over every step of max_epochs
    assert_eq!(cfg.lr_schedule, Schedule::Cosine);
    let dir = tempfile::tempdir().unwrap();
    let report = train_sasrec(&split, 15, &cfg, None, dir.path(), false).unwrap();
    // 40 users in batches of 16: 3 steps an epoch, 12 in all; each epoch logs the rate of its last step.
    let schedule = LrSchedule {
        lr: cfg.lr,
        warmup_steps: 0,
        schedule: Schedule::Cosine,
        final_lr_ratio: 0.0,
    };
    assert_eq!(report.history.len(), 4);
    for (e, log) in report.history.iter().enumerate() {
        let want = schedule.at(3 * e as u64 + 2, 12);
        assert!((log.lr - want).abs() < 1e-12, "{log:?}");
    }
    // Under the cosine schedule max_epochs shapes every rate: a resume may not change it.
    let e = train_sasrec(
        &split,
        15,
        &SasRecConfig {
            max_epochs: 8,
            ..cfg.clone()
        },
        None,
        dir.path(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`max_epochs`"), "{e}");
    let e = serde_json::from_str::<SasRecConfig>(r#"{"lr_schedule": "plateau"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("plateau"), "{e}");
}

#[test]
fn excluding_history_removes_the_users_items_from_the_ranking() {
    let _rng = rng_lock();
    let ds = cyclic(40, 15, 9);
    let split = LeaveOneOut::new(&ds);
    let mut filtered = SasRecModel::new(&tiny_config(), 15, None).unwrap();
    let plain = filtered.evaluate(&split, Stage::Test).unwrap();
    filtered.config.exclude_history = true;
    assert_ne!(filtered.evaluate(&split, Stage::Test).unwrap(), plain);
    for stage in [Stage::Valid, Stage::Test] {
        // By hand: each user's full score row with every history item (not only the last max_len) at -inf.
        let mut acc = MetricAccumulator::new();
        for u in 0..split.n_users() {
            let history = split.history(u, stage, usize::MAX);
            assert!(!history.contains(&split.target(u, stage))); // no repeats in these cycles
            let mut row = Vec::<f32>::try_from(
                &filtered
                    .score(std::slice::from_ref(&history))
                    .unwrap()
                    .get(0),
            )
            .unwrap();
            for &i in &history {
                row[i as usize] = f32::NEG_INFINITY;
            }
            acc.add_scores(&row, split.target(u, stage) as usize);
        }
        assert_eq!(filtered.evaluate(&split, stage).unwrap(), acc.finish());
    }
}

#[test]
fn an_untied_output_table_scores_items_and_checkpoints_say_when_it_is_missing() {
    let _rng = rng_lock();
    let untied_cfg = SasRecConfig {
        tie_output: false,
        ..tiny_config()
    };
    let tied = SasRecModel::new(&tiny_config(), 15, None).unwrap();
    let untied = SasRecModel::new(&untied_cfg, 15, None).unwrap();
    let names = |m: &SasRecModel| {
        m.named_weights()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect::<Vec<_>>()
    };
    let extra: Vec<_> = names(&untied)
        .into_iter()
        .filter(|w| !names(&tied).contains(w))
        .collect();
    assert_eq!(extra, vec![("out_emb.weight".to_string(), vec![15, 16])]);
    // Same seed: the shared weights start equal (the output table is created last) ...
    for (n, t) in tied.named_weights() {
        let other = untied
            .named_weights()
            .into_iter()
            .find(|(m, _)| *m == n)
            .unwrap()
            .1;
        assert!(t.equal(&other), "{n}");
    }
    // ... and the scores are the hidden state against the output table, not the input one.
    let h = vec![vec![1, 2, 3]];
    let scores = untied.score(&h).unwrap();
    let hidden = untied.net().forward(&ids(&[1, 2, 3]), false).select(1, -1);
    let out = untied
        .named_weights()
        .into_iter()
        .find(|(n, _)| n == "out_emb.weight")
        .unwrap()
        .1;
    assert!(scores.allclose(&hidden.matmul(&out.tr()), 1e-6, 1e-6, false));
    assert!(!scores.allclose(&tied.score(&h).unwrap(), 1e-6, 1e-6, false));
    // A tied checkpoint does not load into an untied model: the error names the file and the count.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tied.safetensors");
    tied.save_weights(&path).unwrap();
    let mut untied = untied;
    let e = untied.load_weights(&path).unwrap_err().to_string();
    assert!(
        e.contains("tied.safetensors") && e.contains("missing tensor `out_emb.weight`"),
        "{e}"
    );
}

/// With `repeat_bias`, the score of an item the history holds is its logit plus the learned bias, and on data
/// where no user repeats an item training pushes the bias below zero.
#[test]
fn the_repeat_bias_is_learned_and_added_to_history_items() {
    let _rng = rng_lock();
    let ds = cyclic(120, 20, 12);
    let split = LeaveOneOut::new(&ds);
    let dir = tempfile::tempdir().unwrap();
    let cfg = SasRecConfig {
        repeat_bias: true,
        max_epochs: 3,
        ..tiny_config()
    };
    train_sasrec(&split, 20, &cfg, None, dir.path(), false).unwrap();
    let m = SasRecModel::load(dir.path()).unwrap();
    let bias = m
        .named_weights()
        .into_iter()
        .find(|(n, _)| n == "repeat_bias")
        .unwrap()
        .1
        .double_value(&[0]);
    assert!(
        bias < 0.0,
        "no user repeats an item, yet the bias is {bias}"
    );
    let h = vec![1u32, 2, 3, 2];
    let scores = Vec::<f32>::try_from(&m.score(std::slice::from_ref(&h)).unwrap().get(0)).unwrap();
    let hidden = m.net().forward(&ids(&[1, 2, 3, 2]), false).select(1, -1);
    let plain = Vec::<f32>::try_from(&m.net().logits(&hidden).get(0)).unwrap();
    for (i, (s, p)) in scores.iter().zip(&plain).enumerate() {
        let want = p + if h.contains(&(i as u32)) {
            bias as f32
        } else {
            0.0
        };
        assert!((s - want).abs() < 1e-5, "item {i}: {s} vs {want}");
    }
}

/// With `item_features`, an item's embedding is its id embedding plus the projected feature row, in the input
/// and the tied output alike; the features travel with the checkpoint, and a model cannot be built with the
/// option and without features (or the other way round).
#[test]
fn item_features_enter_the_item_table_and_travel_with_the_weights() {
    let _rng = rng_lock();
    let (n_items, dim) = (15usize, 3usize);
    let features = reg4rec_data::ItemFeatures {
        n_items,
        dim,
        values: (0..n_items * dim)
            .map(|k| ((k * 37 % 11) as f32) / 11.0)
            .collect(),
    };
    let cfg = SasRecConfig {
        item_features: true,
        max_epochs: 2,
        ..tiny_config()
    };
    let m = SasRecModel::new(&cfg, n_items, Some(&features)).unwrap();
    let w = |m: &SasRecModel, name: &str| {
        m.named_weights()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    };
    let (ids_w, proj) = (w(&m, "item_emb.weight"), w(&m, "features.proj"));
    let values = Tensor::from_slice(&features.values).view([n_items as i64, dim as i64]);
    let want = ids_w.narrow(0, 0, n_items as i64) + values.matmul(&proj);
    let table = m.net().item_table();
    assert!(table
        .narrow(0, 0, n_items as i64)
        .allclose(&want, 1e-6, 1e-6, false));
    // The scores are the hidden state against that table: features move them.
    let h = vec![vec![1, 2, 3]];
    let hidden = m.net().forward(&ids(&[1, 2, 3]), false).select(1, -1);
    assert!(m
        .score(&h)
        .unwrap()
        .allclose(&hidden.matmul(&want.tr()), 1e-5, 1e-5, false));
    // Only the projection is trained; the feature values are saved with the weights.
    assert!(!w(&m, "features.values").requires_grad());
    let split = LeaveOneOut::new(&cyclic(60, n_items, 8));
    let dir = tempfile::tempdir().unwrap();
    let report = train_sasrec(&split, n_items, &cfg, Some(&features), dir.path(), false).unwrap();
    let loaded = SasRecModel::load(dir.path()).unwrap();
    assert!(w(&loaded, "features.values").equal(&values));
    assert_eq!(loaded.evaluate(&split, Stage::Test).unwrap(), report.test);
    // A resume without the features is refused, naming the option.
    let e = train_sasrec(&split, n_items, &tiny_config(), None, dir.path(), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("feature"), "{e}");
    // The option and the matrix go together.
    let e = SasRecModel::new(&cfg, n_items, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("item_features"), "{e}");
    let e = SasRecModel::new(&tiny_config(), n_items, Some(&features))
        .unwrap_err()
        .to_string();
    assert!(e.contains("item_features"), "{e}");
    let short = reg4rec_data::ItemFeatures {
        n_items: 4,
        ..features.clone()
    };
    let e = SasRecModel::new(&cfg, n_items, Some(&short))
        .unwrap_err()
        .to_string();
    assert!(e.contains("feature rows"), "{e}");
}

/// With `samples = prefixes` every training position is a row of its own (so an epoch takes as many steps as
/// positions over the batch size), and the model still learns the cycles.
#[test]
fn prefix_samples_make_every_position_a_row() {
    let _rng = rng_lock();
    // 40 users of 10 items: training parts of 8, so 7 targets each, 280 in all.
    let ds = cyclic(40, 15, 10);
    let split = LeaveOneOut::new(&ds);
    let step = |dir: &std::path::Path| -> u64 {
        let latest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap())
                .unwrap();
        latest["step"].as_u64().unwrap()
    };
    let cfg = SasRecConfig {
        max_epochs: 2,
        ..tiny_config()
    };
    let sequences = tempfile::tempdir().unwrap();
    train_sasrec(&split, 15, &cfg, None, sequences.path(), false).unwrap();
    // 40 rows in batches of 16: 3 steps an epoch.
    assert_eq!(step(sequences.path()), 6);
    let prefixes = tempfile::tempdir().unwrap();
    let cfg = SasRecConfig {
        samples: Samples::Prefixes,
        max_epochs: 6,
        ..cfg
    };
    let report = train_sasrec(&split, 15, &cfg, None, prefixes.path(), false).unwrap();
    // 280 rows in batches of 16: 18 steps an epoch.
    assert_eq!(step(prefixes.path()), 18 * 6);
    assert!(report.test.recall_10 > 0.9, "{:?}", report.test);
}

/// A run stopped early continues when resumed with more patience than it has used, and stays stopped when
/// resumed with the same.
#[test]
fn a_run_stopped_early_continues_with_more_patience() {
    let _rng = rng_lock();
    let ds = cyclic(40, 15, 9);
    let split = LeaveOneOut::new(&ds);
    let dir = tempfile::tempdir().unwrap();
    // A learning rate too small to move any ranking: every validation after the first is no better.
    let cfg = SasRecConfig {
        lr: 1e-12,
        max_epochs: 20,
        patience: 1,
        ..tiny_config()
    };
    let first = train_sasrec(&split, 15, &cfg, None, dir.path(), false).unwrap();
    assert_eq!(
        (first.epochs, first.stop_reason.as_str()),
        (2, "early_stopping")
    );
    let same = train_sasrec(&split, 15, &cfg, None, dir.path(), true).unwrap();
    assert_eq!(same.epochs, 2);
    let more = SasRecConfig { patience: 3, ..cfg };
    let resumed = train_sasrec(&split, 15, &more, None, dir.path(), true).unwrap();
    assert_eq!(
        (resumed.epochs, resumed.stop_reason.as_str()),
        (4, "early_stopping")
    );
}
