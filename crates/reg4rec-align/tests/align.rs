//! PARS on tiny seeded synthetic data (CPU): GRPO raises the probability of a rewarded path, and the alignment
//! loop logs every component, keeps the best weights (step 0 = pre-trained), and resumes exactly; under bf16 and
//! LADQ it tracks the fp32 run and writes the LADQ history.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reg4rec_align::grpo::{
    allowed_next, grpo_step, item_log_probs, path_log_probs, GrpoContext, StepStats,
};
use reg4rec_align::msra::window;
use reg4rec_align::{align, AlignConfig, RewardWeights, Rollout};
use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::Dataset;
use reg4rec_model::checkpoint::{load_model, Which};
use reg4rec_model::crss::target_contexts;
use reg4rec_model::no_seen_items;
use reg4rec_model::{
    pretrain, LadqConfig, ModelConfig, PrecisionMode, Reg4RecModel, SeqBatchBuilder, TrainConfig,
    Vocab,
};
use reg4rec_tokenizer::{Codes, ItemIndex, Token};
use reg4rec_train::AdamW;
use tch::{Device, Kind, Tensor};

/// `n_items` items with distinct tuples over M = 3 codebooks of D = 4 codes, category = item % 3; user u walks
/// the items cyclically from u.
fn synthetic(n_items: usize, n_users: usize, len: usize) -> (Dataset, Codes) {
    let d = 4usize;
    let mut tuples = Vec::new();
    for i in 0..n_items {
        let k = (i * 7 + 3) % (d * d * d);
        tuples.extend([(k % d) as u16, ((k / d) % d) as u16, (k / (d * d)) as u16]);
    }
    let codes = Codes::new(3, d, false, tuples).unwrap();
    let ds = Dataset {
        name: "synthetic".into(),
        user_ids: (0..n_users).map(|u| u.to_string()).collect(),
        sequences: (0..n_users)
            .map(|u| (0..len).map(|t| ((u + t) % n_items) as u32).collect())
            .collect(),
        item_ids: (0..n_items).map(|i| i.to_string()).collect(),
        item_category: (0..n_items).map(|i| (i % 3) as u32).collect(),
        category_names: vec!["a".into(), "b".into(), "c".into()],
        item_attributes: vec![vec![]; n_items],
        item_names: Vec::new(),
    };
    (ds, codes)
}

/// Exact probability that the policy generates `target`'s token set (summed over the M! orders), under the
/// same masks and valid-item constraint as sampling.
fn set_probability(
    model: &Reg4RecModel,
    index: &ItemIndex,
    history: &[u32],
    target: &[Token],
) -> f64 {
    let v = model.vocab();
    let perms: Vec<Vec<Token>> = {
        let t = target;
        let mut out = Vec::new();
        for a in 0..3 {
            for b in 0..3 {
                for c in 0..3 {
                    if a != b && b != c && a != c {
                        out.push(vec![t[a], t[b], t[c]]);
                    }
                }
            }
        }
        out
    };
    let n = perms.len() as i64;
    let mut ids = Vec::new();
    let mut allowed = vec![false; perms.len() * 3 * v.size()];
    for (i, p) in perms.iter().enumerate() {
        for k in 0..3 {
            ids.push(v.id(p[k]));
            for t in allowed_next(index, &p[..k], false) {
                allowed[(i * 3 + k) * v.size() + v.id(t) as usize] = true;
            }
        }
    }
    let tokens = Tensor::from_slice(&ids).view([n, 3]);
    let allowed = Tensor::from_slice(&allowed).view([n, 3, v.size() as i64]);
    tch::no_grad(|| {
        let ctx = model
            .contexts(&[history])
            .unwrap()
            .hidden
            .index_select(0, &Tensor::zeros([n], (Kind::Int64, Device::Cpu)));
        path_log_probs(model, &ctx, &tokens, &allowed, 1.0)
            .sum_dim_intlist(1, false, Kind::Float)
            .exp()
            .sum(Kind::Float)
            .double_value(&[])
    })
}

/// AdamW without weight decay over `model`'s weights.
fn adamw(model: &Reg4RecModel) -> AdamW {
    AdamW::new(
        model.var_store(),
        TrainConfig {
            weight_decay: 0.0,
            ..TrainConfig::default()
        }
        .adamw(),
    )
}

/// The GRPO tests' settings: groups of 16, MSRA off, the global-path reward alone.
fn global_path_only() -> AlignConfig {
    AlignConfig {
        group_size: 16,
        lr: 3e-3,
        beta: 0.01,
        msra_h: 1,
        rewards: RewardWeights {
            step_hit: 0.0,
            global_path: 1.0,
            category_hit: 0.0,
            step_consistency: 0.0,
            ..RewardWeights::default()
        },
        ..AlignConfig::default()
    }
}

/// A fresh policy and its frozen reference with the same weights (seed 3).
fn policy_and_reference(mcfg: &ModelConfig, codes: &Codes) -> (Reg4RecModel, Reg4RecModel) {
    tch::manual_seed(3);
    let policy = Reg4RecModel::new(mcfg, codes, 3, Device::Cpu).unwrap();
    tch::manual_seed(3);
    let reference = Reg4RecModel::new(mcfg, codes, 3, Device::Cpu).unwrap();
    (policy, reference)
}

/// The batch of one context: `history`, then `target`.
fn one_context(
    policy: &Reg4RecModel,
    codes: &Codes,
    ds: &Dataset,
    history: &[u32],
    target: u32,
) -> reg4rec_model::SeqBatch {
    SeqBatchBuilder {
        vocab: policy.vocab(),
        history_len: 5,
        codes,
        item_category: &ds.item_category,
    }
    .last(&[(history, target)])
    .unwrap()
}

/// `steps` GRPO steps under `cfg` on one context (history 1 2 3 4, target 5) of the 12-item catalog, from a
/// fresh policy (seed 3, no dropout), no item in the long tail. Returns the exact probability of the target's
/// token set before and after, and each step's statistics.
fn grpo_on_one_context(cfg: &AlignConfig, steps: usize) -> (f64, f64, Vec<StepStats>) {
    grpo_with_tail(cfg, &[false; 12], steps)
}

/// [`grpo_on_one_context`] with the items `long_tail` flags in the long tail.
fn grpo_with_tail(
    cfg: &AlignConfig,
    long_tail: &[bool],
    steps: usize,
) -> (f64, f64, Vec<StepStats>) {
    let (ds, codes) = synthetic(12, 4, 6);
    let index = ItemIndex::new(&codes).unwrap();
    let mcfg = ModelConfig {
        dropout: 0.0,
        ..ModelConfig::preset("smoke").unwrap()
    };
    let (policy, reference) = policy_and_reference(&mcfg, &codes);
    let ctx = GrpoContext {
        reference: &reference,
        index: &index,
        codes: &codes,
        item_category: &ds.item_category,
        long_tail,
        cfg,
        weights: TrainConfig::default().objective(),
    };
    let target_item = 5u32;
    let history: &[u32] = &[1, 2, 3, 4];
    let batch = one_context(&policy, &codes, &ds, history, target_item);
    let windows = vec![window(&[1, 2, 3, 4, target_item], 4, 1, 0.8)];
    let target = codes.tokens(target_item as usize);
    let before = set_probability(&policy, &index, history, &target);
    let mut opt = adamw(&policy);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let stats = (0..steps)
        .map(|_| {
            let s = grpo_step(&ctx, &policy, &mut opt, &batch, &windows, cfg.lr, &mut rng).unwrap();
            assert!(s.kl >= 0.0 && s.loss.is_finite());
            s
        })
        .collect();
    let after = set_probability(&policy, &index, history, &target);
    (before, after, stats)
}

#[test]
fn grpo_raises_the_probability_of_the_rewarded_path() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    let cfg = global_path_only();
    let (before, after, stats) = grpo_on_one_context(&cfg, 25);
    let hits: Vec<f64> = stats.iter().map(|s| s.target.global_path).collect();
    // 12 items: an untrained model gives the target about 1/12.
    assert!(before < 0.3, "before {before}");
    assert!(
        after > before + 0.3,
        "P(target path) {before:.3} -> {after:.3}; sampled hit rates {hits:?}"
    );
}

#[test]
fn grpo_with_beam_rollouts_raises_the_probability_of_the_rewarded_path() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    // A group of 6 of the 12 items: the graded step-hit reward leads the beam to the target's tokens, then the
    // global-path reward to the target itself.
    let cfg = AlignConfig {
        rollout: Rollout::Beam,
        group_size: 6,
        rewards: RewardWeights {
            step_hit: 1.0,
            ..global_path_only().rewards
        },
        ..global_path_only()
    };
    let (before, after, stats) = grpo_on_one_context(&cfg, 25);
    let hits: Vec<f64> = stats.iter().map(|s| s.target.global_path).collect();
    assert!(before < 0.3, "before {before}");
    assert!(
        after > before + 0.3,
        "P(target path) {before:.3} -> {after:.3}; hit rates in the beam group {hits:?}"
    );
    assert!(
        hits.iter().rev().take(5).all(|&h| h > 0.0),
        "the target ends inside the group: {hits:?}"
    );
}

#[test]
fn guided_groups_hold_the_target_and_raise_its_path_where_rollouts_miss_it() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    // The untrained policy's two most likely items are not the target, so a beam group of 2 with the
    // global-path reward alone is flat: no policy gradient, and the KL to the reference is 0 at the start.
    let cfg = AlignConfig {
        rollout: Rollout::Beam,
        group_size: 2,
        ..global_path_only()
    };
    let (before, plain_after, plain) = grpo_on_one_context(&cfg, 15);
    assert_eq!(plain[0].flat_groups, 1.0, "{:?}", plain[0]);
    assert_eq!(plain[0].target.global_path, 0.0);
    assert!(
        (plain_after - before).abs() < 0.05,
        "flat groups moved P(target) {before:.3} -> {plain_after:.3}"
    );
    // Guided: the group's last path becomes the target's, so every group holds it and the update raises it.
    let guided = AlignConfig {
        guided: true,
        ..cfg
    };
    let (before_g, after, stats) = grpo_on_one_context(&guided, 15);
    assert_eq!(before, before_g);
    assert_eq!(stats[0].guided_groups, 1.0);
    assert!(
        stats.iter().all(|s| s.target.global_path == 0.5),
        "one of the two paths is always the target: {stats:?}"
    );
    assert!(
        after > before + 0.3,
        "P(target path) {before:.3} -> {after:.3} with guided groups"
    );
}

#[test]
fn the_item_head_teacher_raises_the_teachers_expected_share_under_the_path_policy() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    let (ds, codes) = synthetic(12, 4, 6);
    let index = ItemIndex::new(&codes).unwrap();
    let history: &[u32] = &[1, 2, 3, 4];
    // A beam group of all 12 items rewarded by the frozen reference's item head alone.
    let cfg = AlignConfig {
        rollout: Rollout::Beam,
        group_size: 12,
        rewards: RewardWeights {
            global_path: 0.0,
            item_head: 1.0,
            ..global_path_only().rewards
        },
        ..global_path_only()
    };
    let run = |item_head: bool| -> reg4rec_align::Result<(f64, f64)> {
        let mcfg = ModelConfig {
            dropout: 0.0,
            item_head,
            ..ModelConfig::preset("smoke").unwrap()
        };
        let (policy, reference) = policy_and_reference(&mcfg, &codes);
        let ctx = GrpoContext {
            reference: &reference,
            index: &index,
            codes: &codes,
            item_category: &ds.item_category,
            long_tail: &[],
            cfg: &cfg,
            weights: TrainConfig::default().objective(),
        };
        let batch = one_context(&policy, &codes, &ds, history, 5);
        let windows = vec![window(&[1, 2, 3, 4, 5], 4, 1, 0.8)];
        // The teacher: the reference's item head over the 12 items after this history (its repeat bias on the
        // history items included, as the reward reads it), normalised over them.
        let teacher: Vec<f64> = match item_head {
            true => tch::no_grad(|| {
                let (context, enc) = target_contexts(&reference, &batch, false);
                let all = Tensor::arange(12, (Kind::Int64, Device::Cpu));
                let rows = Tensor::zeros([12], (Kind::Int64, Device::Cpu));
                let lp = item_log_probs(
                    &reference,
                    &context,
                    &enc.items,
                    &batch.seen,
                    &rows,
                    &all,
                    1.0,
                );
                Vec::<f64>::try_from(lp.softmax(0, Kind::Double)).unwrap()
            }),
            false => vec![0.0; 12],
        };
        // The teacher's share expected under the policy's distribution over item paths.
        let expected = |policy: &Reg4RecModel| -> f64 {
            (0..12)
                .map(|i| set_probability(policy, &index, history, &codes.tokens(i)) * teacher[i])
                .sum()
        };
        let before = expected(&policy);
        let mut opt = adamw(&policy);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..60 {
            let s = grpo_step(&ctx, &policy, &mut opt, &batch, &windows, cfg.lr, &mut rng)?;
            assert!((s.components.item_head - 1.0 / 12.0).abs() < 1e-6, "{s:?}");
        }
        Ok((before, expected(&policy)))
    };
    let (before, after) = run(true).unwrap();
    // Uniform would be 1/12 = .0833 and the teacher's favourite alone about .10.
    assert!(
        after > before + 0.004,
        "the teacher's expected share under the path policy {before:.4} -> {after:.4}"
    );
    // A model without an item head has no teacher: a clear error naming the reward.
    let e = run(false).unwrap_err().to_string();
    assert!(e.contains("rewards.item_head"), "{e}");
}

#[test]
fn the_long_tail_reward_is_plain_pars_at_weight_zero_and_moves_rollouts_to_the_tail_at_a_weight() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    // Items 8..12 are the long tail; the target (5) is not.
    let tail: Vec<bool> = (0..12).map(|i| i >= 8).collect();
    let cfg = global_path_only();
    let (before, after, plain) = grpo_on_one_context(&cfg, 5);
    let (before_t, after_t, with_tail) = grpo_with_tail(&cfg, &tail, 5);
    // Weight 0: the same rewards, advantages and updates, bit for bit; only the logged component differs.
    assert_eq!((before, after), (before_t, after_t));
    for (a, b) in plain.iter().zip(&with_tail) {
        assert_eq!(a.reward, b.reward);
        assert_eq!(a.loss, b.loss);
        assert_eq!(a.components.long_tail, 0.0);
    }
    assert!(with_tail.iter().any(|s| s.components.long_tail > 0.0));
    // The long-tail reward alone: the rollouts move to the tail.
    let tail_only = AlignConfig {
        rewards: RewardWeights {
            global_path: 0.0,
            long_tail: 1.0,
            ..cfg.rewards.clone()
        },
        ..cfg
    };
    let (_, _, stats) = grpo_with_tail(&tail_only, &tail, 25);
    let share: Vec<f64> = stats.iter().map(|s| s.components.long_tail).collect();
    let last = share[20..].iter().sum::<f64>() / 5.0;
    assert!(
        last > share[0] + 0.3,
        "tail share of the rollouts by step: {share:?}"
    );
}

#[test]
fn constant_rewards_give_no_policy_gradient_and_the_anchor_still_trains() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    // A constant reward gives zero advantages: the policy gradient vanishes (only the KL term could act, and
    // it is zero at the reference).
    let flat = AlignConfig {
        rewards: RewardWeights {
            step_hit: 0.0,
            global_path: 0.0,
            category_hit: 0.0,
            step_consistency: 0.0,
            ..RewardWeights::default()
        },
        ..global_path_only()
    };
    for rollout in [Rollout::Sample, Rollout::Beam] {
        let cfg = AlignConfig {
            rollout,
            ..flat.clone()
        };
        let (before, after, stats) = grpo_on_one_context(&cfg, 1);
        assert_eq!(stats[0].flat_groups, 1.0, "{rollout:?}");
        assert!(
            stats[0].grad_norm < 1e-6,
            "{rollout:?}: {}",
            stats[0].grad_norm
        );
        assert!(
            (after - before).abs() < 1e-6,
            "{rollout:?}: {before} -> {after}"
        );
    }
    // The auxiliary CRSS loss adds a gradient even when the rewards carry no signal.
    let aux = AlignConfig {
        aux_weight: 0.5,
        ..flat
    };
    let (_, _, stats) = grpo_on_one_context(&aux, 1);
    assert!(
        stats[0].aux_loss > 0.0 && stats[0].grad_norm > 1e-4,
        "aux {} grad {}",
        stats[0].aux_loss,
        stats[0].grad_norm
    );
}

/// The item head's probability of `item` after `history`.
fn item_head_probability(model: &Reg4RecModel, history: &[u32], item: u32) -> f64 {
    tch::no_grad(|| {
        let enc = model.contexts(&[history]).unwrap();
        model
            .item_logits(&enc.hidden, &enc.items, &no_seen_items(), false)
            .softmax(-1, Kind::Float)
            .double_value(&[0, item as i64])
    })
}

#[test]
fn grpo_with_the_item_head_as_a_step_moves_the_item_head_to_the_rewarded_item() {
    let _rng = reg4rec_model::torch_rng_lock();
    let (ds, codes) = synthetic(12, 4, 6);
    let index = ItemIndex::new(&codes).unwrap();
    let mcfg = ModelConfig {
        dropout: 0.0,
        ..ModelConfig::preset("smoke").unwrap()
    };
    assert!(mcfg.item_head);
    let target_item = 5u32;
    let history: &[u32] = &[1, 2, 3, 4];
    let windows = vec![window(&[1, 2, 3, 4, target_item], 4, 1, 0.8)];
    // The same seeded run with and without the item head as the policy's last step.
    let run = |mcfg: &ModelConfig, item_head: bool| -> reg4rec_align::Result<(f64, f64)> {
        let (policy, reference) = policy_and_reference(mcfg, &codes);
        let cfg = AlignConfig {
            item_head,
            ..global_path_only()
        };
        let ctx = GrpoContext {
            reference: &reference,
            index: &index,
            codes: &codes,
            item_category: &ds.item_category,
            long_tail: &[],
            cfg: &cfg,
            weights: TrainConfig::default().objective(),
        };
        let batch = one_context(&policy, &codes, &ds, history, target_item);
        let before = item_head_probability(&policy, history, target_item);
        let mut opt = adamw(&policy);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..25 {
            let s = grpo_step(&ctx, &policy, &mut opt, &batch, &windows, cfg.lr, &mut rng)?;
            assert!(s.kl >= 0.0 && s.loss.is_finite(), "{s:?}");
        }
        Ok((before, item_head_probability(&policy, history, target_item)))
    };
    let (before, with_head) = run(&mcfg, true).unwrap();
    let (same_start, without_head) = run(&mcfg, false).unwrap();
    assert!((before - same_start).abs() < 1e-9);
    assert!(before < 0.3, "an untrained head: about 1/12, got {before}");
    assert!(
        with_head > before + 0.3,
        "item head P(target) {before:.3} -> {with_head:.3} with the item head as a step"
    );
    assert!(
        with_head > without_head + 0.2,
        "with the item head as a step {with_head:.3}, without {without_head:.3}"
    );
    // A model without an item head cannot take it as a step: a clear error, not a silent token-only run.
    let headless = ModelConfig {
        item_head: false,
        ..mcfg.clone()
    };
    let e = run(&headless, true).unwrap_err().to_string();
    assert!(e.contains("item_head"), "{e}");
}

/// The 12-item catalog, its index and an untrained smoke-preset model (weights seeded by `seed`).
fn untrained(seed: i64) -> (Codes, ItemIndex, Reg4RecModel) {
    let (_, codes) = synthetic(12, 1, 3);
    let index = ItemIndex::new(&codes).unwrap();
    tch::manual_seed(seed);
    let model = Reg4RecModel::new(
        &ModelConfig::preset("smoke").unwrap(),
        &codes,
        3,
        Device::Cpu,
    )
    .unwrap();
    (codes, index, model)
}

#[test]
fn sampled_paths_respect_masks_and_the_valid_item_constraint() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    let (_, index, model) = untrained(1);
    let ctx = model.contexts(&[&[0, 1], &[4]]).unwrap().hidden;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let s = reg4rec_align::grpo::sample_paths(&model, &index, &ctx, 50, 2.0, &mut rng).unwrap();
    assert_eq!(s.paths.len(), 100);
    assert_eq!(s.tokens.size(), vec![100, 3]);
    let mut orders = std::collections::HashSet::new();
    for (i, p) in s.paths.iter().enumerate() {
        assert!(
            index.item_of_tokens(p).is_some(),
            "path {p:?} is not an item"
        );
        orders.insert(p.iter().map(|t| t.codebook).collect::<Vec<_>>());
        assert_eq!(s.categories[i].len(), 3);
        assert!((s.categories[i][2].iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    assert!(
        orders.len() > 1,
        "all open codebooks compete: several generation orders are sampled"
    );
    // Recorded log-probs equal a teacher-forced recomputation.
    let rows = Tensor::from_slice(&(0..100).map(|i| i / 50).collect::<Vec<i64>>());
    let re = path_log_probs(
        &model,
        &ctx.index_select(0, &rows),
        &s.tokens,
        &s.allowed,
        2.0,
    );
    let diff = (re - &s.logp).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn beam_rollouts_are_the_most_likely_distinct_items() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    let (codes, index, model) = untrained(3);
    let v = model.vocab();
    let history: &[u32] = &[0, 5];
    let ctx = model.contexts(&[history]).unwrap().hidden;
    // Every item's best score over its 3! generation orders, exhaustively.
    let mut expected: Vec<(f64, u32)> = (0..12u32)
        .map(|item| {
            let t: Vec<Token> = (0..3)
                .map(|r| Token::new(r as u16, codes.tuple(item as usize)[r]))
                .collect();
            let mut best = f64::NEG_INFINITY;
            for (a, b, c) in [
                (0, 1, 2),
                (0, 2, 1),
                (1, 0, 2),
                (1, 2, 0),
                (2, 0, 1),
                (2, 1, 0),
            ] {
                let p = [t[a], t[b], t[c]];
                let mut allowed = vec![false; 3 * v.size()];
                for k in 0..3 {
                    for x in allowed_next(&index, &p[..k], false) {
                        allowed[k * v.size() + v.id(x) as usize] = true;
                    }
                }
                let ids: Vec<i64> = p.iter().map(|&x| v.id(x)).collect();
                let lp = tch::no_grad(|| {
                    path_log_probs(
                        &model,
                        &ctx,
                        &Tensor::from_slice(&ids).view([1, 3]),
                        &Tensor::from_slice(&allowed).view([1, 3, v.size() as i64]),
                        1.0,
                    )
                    .sum(Kind::Float)
                    .double_value(&[])
                });
                best = best.max(lp);
            }
            (best, item)
        })
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0));

    // A group of 40 keeps every partial set of this catalog, so the search is exact: all 12 items, best first,
    // each once (at its best order), then the group is filled by repeating them.
    let s = reg4rec_align::grpo::beam_paths(&model, &index, &ctx, 40, 1.0).unwrap();
    assert_eq!(s.paths.len(), 40);
    let scores: Vec<f64> = Vec::<f32>::try_from(s.logp.sum_dim_intlist(1, false, Kind::Float))
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    for (j, &(score, item)) in expected.iter().enumerate() {
        assert_eq!(
            s.items[j],
            item,
            "rank {j}: {:?} vs {expected:?}",
            &s.items[..12]
        );
        assert!(
            (scores[j] - score).abs() < 1e-4,
            "rank {j}: {} vs {score}",
            scores[j]
        );
    }
    assert_eq!(
        s.items[12..24],
        s.items[..12],
        "the group is filled by repeating the items in order"
    );

    // A narrower beam: distinct valid items, best first, and the recorded log-probabilities are the policy's.
    let s = reg4rec_align::grpo::beam_paths(&model, &index, &ctx, 4, 1.0).unwrap();
    let distinct: std::collections::HashSet<u32> = s.items.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "{:?}", s.items);
    let scores: Vec<f32> = Vec::try_from(s.logp.sum_dim_intlist(1, false, Kind::Float)).unwrap();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    for p in &s.paths {
        assert!(
            index.item_of_tokens(p).is_some(),
            "path {p:?} is not an item"
        );
    }
    let re = path_log_probs(
        &model,
        &ctx.index_select(0, &Tensor::zeros([4], (Kind::Int64, Device::Cpu))),
        &s.tokens,
        &s.allowed,
        1.0,
    );
    let diff = (re - &s.logp).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{diff}");
}

fn pretrained(dir: &std::path::Path, ds: &Dataset, split: &LeaveOneOut, codes: &Codes) {
    pretrained_as(
        dir,
        ds,
        split,
        codes,
        &ModelConfig::preset("smoke").unwrap(),
        3,
    );
}

/// The smoke pre-training of `model` for `epochs` epochs into `dir`.
fn pretrained_as(
    dir: &std::path::Path,
    ds: &Dataset,
    split: &LeaveOneOut,
    codes: &Codes,
    model: &ModelConfig,
    epochs: usize,
) {
    let t = TrainConfig {
        epochs,
        ..TrainConfig::preset("smoke").unwrap()
    };
    pretrain(ds, split, codes, model, &t, dir, false, Default::default()).unwrap();
}

/// GRPO scores steps with the open-codebook softmax: a model whose paths are scored otherwise is refused with
/// an error naming the directory and the setting, before any step.
#[test]
fn align_refuses_a_model_whose_paths_it_does_not_score() {
    let _rng = reg4rec_model::torch_rng_lock();
    std::env::set_var("REG4REC_NO_PROGRESS", "1");
    let (ds, codes) = synthetic(12, 24, 7);
    let split = LeaveOneOut::new(&ds);
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    let m = ModelConfig {
        path: reg4rec_model::PathScore::Parallel,
        ..ModelConfig::preset("smoke").unwrap()
    };
    pretrained_as(&pre, &ds, &split, &codes, &m, 1);
    let cfg = AlignConfig::preset("smoke").unwrap();
    let out = tmp.path().join("aligned");
    let e = align(
        &ds,
        &split,
        &codes,
        &pre,
        &cfg,
        &out,
        false,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.path = Parallel") && e.contains("pre"),
        "{e}"
    );
    assert!(!out.join("metrics.jsonl").exists(), "nothing was trained");
}

#[test]
fn align_logs_keeps_the_best_and_resumes_exactly() {
    // The tests seed libtorch's process-global generator: one at a time.
    let _rng = reg4rec_model::torch_rng_lock();
    std::env::set_var("REG4REC_NO_PROGRESS", "1");
    let (ds, codes) = synthetic(12, 24, 7);
    let split = LeaveOneOut::new(&ds);
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    pretrained(&pre, &ds, &split, &codes);
    let cfg = AlignConfig {
        steps: 4,
        lr: 1e-3,
        ..AlignConfig::preset("smoke").unwrap()
    };

    let full = tmp.path().join("full");
    let rep = align(
        &ds,
        &split,
        &codes,
        &pre,
        &cfg,
        &full,
        false,
        Default::default(),
    )
    .unwrap();
    assert_eq!(rep.steps, 4);
    let text = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<_> = records.iter().filter(|r| r["kind"] == "step").collect();
    let valids: Vec<_> = records.iter().filter(|r| r["kind"] == "valid").collect();
    assert_eq!(steps.len(), 4);
    assert_eq!(
        valids
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    for key in [
        "step_hit",
        "global_path",
        "category_hit",
        "step_consistency",
        "kl",
        "reward",
    ] {
        assert!(steps.iter().all(|r| r[key].is_f64()), "missing {key}");
    }
    // The kept weights are the best validation point, step 0 (pre-trained) included.
    let best_r10 = valids
        .iter()
        .map(|r| r["recall@10"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(rep.best_valid_recall_10, best_r10);
    assert!(rep.best_valid_recall_10 >= rep.initial_valid.recall_10);
    let (model, _) = load_model(&full, Which::Best, &codes, Device::Cpu).unwrap();
    assert_eq!(model.vocab(), Vocab::new(3, 4));
    assert!(full.join("report.json").exists());

    // An existing run is not overwritten without resume.
    assert!(align(
        &ds,
        &split,
        &codes,
        &pre,
        &cfg,
        &full,
        false,
        Default::default()
    )
    .is_err());

    // Stop after 2 steps, then resume to 4: same weights and same step records as the uninterrupted run.
    let part = tmp.path().join("part");
    align(
        &ds,
        &split,
        &codes,
        &pre,
        &AlignConfig {
            steps: 2,
            ..cfg.clone()
        },
        &part,
        false,
        Default::default(),
    )
    .unwrap();
    let other = AlignConfig {
        lr: 5e-4,
        ..cfg.clone()
    };
    assert!(
        align(
            &ds,
            &split,
            &codes,
            &pre,
            &other,
            &part,
            true,
            Default::default()
        )
        .is_err(),
        "resume refuses another config"
    );
    align(
        &ds,
        &split,
        &codes,
        &pre,
        &cfg,
        &part,
        true,
        Default::default(),
    )
    .unwrap();
    let (a, _) = load_model(&full, Which::Latest, &codes, Device::Cpu).unwrap();
    let (b, _) = load_model(&part, Which::Latest, &codes, Device::Cpu).unwrap();
    let vb = b.var_store().variables();
    for (na, ta) in a.var_store().variables() {
        let tb = &vb[&na];
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{na}: {diff}");
    }
    let text = std::fs::read_to_string(part.join("metrics.jsonl")).unwrap();
    let resumed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rsteps: Vec<_> = resumed.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(rsteps.len(), 4);
    for (x, y) in steps.iter().zip(&rsteps) {
        assert_eq!(x["reward"], y["reward"]);
        assert_eq!(x["kl"], y["kl"]);
    }
}

/// The validation CRSS loss of the last validation record in a run's `metrics.jsonl`.
fn last_valid_loss(run: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in records.iter().filter(|r| r["kind"] == "step") {
        for key in ["loss", "kl", "policy_loss"] {
            let v = r[key].as_f64().unwrap();
            assert!(
                v.is_finite(),
                "{}: step {} {key} = {v}",
                run.display(),
                r["step"]
            );
        }
    }
    records
        .iter()
        .rev()
        .find(|r| r["kind"] == "valid")
        .and_then(|r| r["valid_loss"].as_f64())
        .unwrap()
}

#[test]
fn align_under_bf16_and_ladq_tracks_fp32_and_logs_the_ladq_history() {
    let _rng = reg4rec_model::torch_rng_lock();
    std::env::set_var("REG4REC_NO_PROGRESS", "1");
    let (ds, codes) = synthetic(12, 24, 7);
    let split = LeaveOneOut::new(&ds);
    let tmp = tempfile::tempdir().unwrap();
    let pre = tmp.path().join("pre");
    pretrained(&pre, &ds, &split, &codes);
    let fp32 = AlignConfig {
        steps: 4,
        lr: 1e-3,
        ..AlignConfig::preset("smoke").unwrap()
    };
    let ladq = AlignConfig {
        precision: PrecisionMode::Ladq,
        ladq: LadqConfig {
            sample_every: 2,
            ..Default::default()
        },
        ..fp32.clone()
    };
    let bf16 = AlignConfig {
        precision: PrecisionMode::Bf16,
        ..fp32.clone()
    };
    let mut valid_loss = Vec::new();
    for (name, cfg) in [("fp32", &fp32), ("bf16", &bf16), ("ladq", &ladq)] {
        let run = tmp.path().join(name);
        let rep = align(
            &ds,
            &split,
            &codes,
            &pre,
            cfg,
            &run,
            false,
            Default::default(),
        )
        .unwrap();
        assert_eq!(rep.steps, 4, "{name}");
        assert_eq!(run.join("ladq.jsonl").exists(), name == "ladq", "{name}");
        valid_loss.push(last_valid_loss(&run));
    }
    // After the same GRPO steps the policy's validation loss stays close to the fp32 run's.
    eprintln!("validation loss after 4 steps, fp32 / bf16 / ladq: {valid_loss:?}");
    assert_ne!(valid_loss[1], valid_loss[0], "bf16 compute is in effect");
    for (name, l) in ["bf16", "ladq"].iter().zip(&valid_loss[1..]) {
        let l32 = valid_loss[0];
        assert!(
            (l - l32).abs() <= 0.05 * l32,
            "fp32 valid loss {l32}, {name} {l}"
        );
    }

    // One history line per sampling (steps 0 and 2), every projection of the policy ranked from the GRPO update:
    // 2 fp32, 4 bf16, 2 fp8 of 8.
    let hist = std::fs::read_to_string(tmp.path().join("ladq/ladq.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = hist
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 2]
    );
    for l in &lines {
        assert_eq!(l["counts"], serde_json::json!([2, 4, 2]));
        let layers = l["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 8);
        assert!(layers
            .iter()
            .all(|x| x["rows"].as_i64().unwrap() > 0 && x["sensitivity"].as_f64().unwrap() > 0.0));
    }

    // Stopped after 2 steps and resumed: the same history and weights as the uninterrupted ladq run.
    let part = tmp.path().join("ladq-part");
    let two = AlignConfig {
        steps: 2,
        ..ladq.clone()
    };
    align(
        &ds,
        &split,
        &codes,
        &pre,
        &two,
        &part,
        false,
        Default::default(),
    )
    .unwrap();
    align(
        &ds,
        &split,
        &codes,
        &pre,
        &ladq,
        &part,
        true,
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(part.join("ladq.jsonl")).unwrap(),
        hist
    );
    let (a, _) = load_model(&tmp.path().join("ladq"), Which::Latest, &codes, Device::Cpu).unwrap();
    let (b, _) = load_model(&part, Which::Latest, &codes, Device::Cpu).unwrap();
    let vb = b.var_store().variables();
    for (na, ta) in a.var_store().variables() {
        let diff = (ta - &vb[&na]).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{na}: {diff}");
    }
    // Resume refuses another precision.
    assert!(align(
        &ds,
        &split,
        &codes,
        &pre,
        &bf16,
        &part,
        true,
        Default::default()
    )
    .is_err());
}
