//! Behaviour of the constrained CRSS/CORP beam search with seeded scorers and tiny item indexes.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use reg4rec_data::split::{LeaveOneOut, Stage};
use reg4rec_data::Dataset;
use reg4rec_infer::{
    evaluate, BeamSearch, Explanation, FnScorer, InferConfig, RandomScorer, StepInput, StepScorer,
};
use reg4rec_tokenizer::{Codes, ItemIndex};

/// Up to `max_items` distinct random tuples over m codebooks of d codes.
fn random_codes(m: usize, d: usize, max_items: usize, ordered: bool, seed: u64) -> Codes {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let cap = d.pow(m as u32).min(max_items);
    let mut seen = std::collections::HashSet::new();
    let mut tuples = Vec::new();
    while seen.len() < cap {
        let t: Vec<u16> = (0..m).map(|_| rng.gen_range(0..d as u16)).collect();
        if seen.insert(t.clone()) {
            tuples.extend(t);
        }
    }
    Codes::new(m, d, ordered, tuples).unwrap()
}

/// Every item scored as the exhaustive search with merged permutations scores it: a dynamic programme over the
/// partial token sets that can still be completed to an item, each kept with its best-scoring order (codebook
/// order only when `ordered`), extended by every valid token; top `n`, ties by item.
fn exhaustive(
    scorer: &mut impl StepScorer,
    codes: &Codes,
    row: usize,
    n: usize,
) -> Vec<(u32, f32)> {
    use std::collections::BTreeMap;
    let (m, d) = (codes.m, codes.d);
    let tokens_of = |item: usize| -> Vec<u32> {
        (0..m)
            .map(|r| (r * d) as u32 + codes.tuple(item)[r] as u32)
            .collect()
    };
    // sorted token set -> (best order, score)
    let mut level: BTreeMap<Vec<u32>, (Vec<u32>, f32)> = BTreeMap::new();
    level.insert(vec![], (vec![], 0.0));
    for depth in 0..m {
        let mut next: BTreeMap<Vec<u32>, (Vec<u32>, f32)> = BTreeMap::new();
        for (set, (order, score)) in &level {
            let out = scorer
                .step(StepInput {
                    rows: &[row],
                    len: order.len(),
                    prefixes: order,
                })
                .unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for item in 0..codes.n_items() {
                let toks = tokens_of(item);
                if !set.iter().all(|t| toks.contains(t)) {
                    continue;
                }
                for (r, &t) in toks.iter().enumerate() {
                    let open = if codes.ordered {
                        r == depth
                    } else {
                        !set.contains(&t)
                    };
                    if !open || !seen.insert(t) {
                        continue;
                    }
                    let mut key = set.clone();
                    key.push(t);
                    key.sort();
                    let s = score + out.logp[t as usize];
                    let better = next.get(&key).is_none_or(|(_, b)| s > *b);
                    if better {
                        let mut o = order.clone();
                        o.push(t);
                        next.insert(key, (o, s));
                    }
                }
            }
        }
        level = next;
    }
    let mut scored: Vec<(u32, f32)> = (0..codes.n_items())
        .map(|item| {
            let mut key = tokens_of(item);
            key.sort();
            (item as u32, level[&key].1)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(n);
    scored
}

fn cfg(beam: usize, top_n: usize, theta: Option<f32>) -> InferConfig {
    InferConfig {
        beam,
        top_n,
        theta,
        ..Default::default()
    }
}

const HISTORIES: [&[u32]; 3] = [&[0, 1], &[2], &[1, 1, 0]];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Invariants for any beam, any theta: valid items only, no duplicates, scores non-increasing and equal to
    /// the path's log-probabilities, explanation tokens exactly the item's tuple (in codebook order when
    /// ordered), every checked divergence within theta, at least one result per user.
    #[test]
    fn search_invariants(
        m in 1usize..4, d in 2usize..5, max_items in 1usize..20, ordered: bool, seed: u64,
        beam in 1usize..12, top_n in 1usize..15, theta in proptest::option::of(0.0f32..0.2),
        n_cat in 1usize..5, cat_scale in 0.0f32..3.0, corp_from_step in 2usize..4,
    ) {
        let codes = random_codes(m, d, max_items, ordered, seed);
        let index = ItemIndex::new(&codes).unwrap();
        let search =
            BeamSearch::new(&index, &InferConfig { corp_from_step, ..cfg(beam, top_n, theta) }).unwrap();
        let mut scorer = RandomScorer::new(m * d, n_cat, seed ^ 99);
        scorer.category_scale = cat_scale;
        let out = search.run(&mut scorer, &HISTORIES, true).unwrap();
        prop_assert_eq!(out.lists.len(), HISTORIES.len());
        let names: Vec<String> = (0..n_cat).map(|c| format!("cat{c}")).collect();
        for list in &out.lists {
            prop_assert!(list.len() <= top_n);
            if theta.is_none() {
                prop_assert!(!list.is_empty(), "every kept beam can be completed");
            }
            let mut seen = std::collections::HashSet::new();
            for (k, rec) in list.iter().enumerate() {
                prop_assert!((rec.item as usize) < codes.n_items());
                prop_assert!(seen.insert(rec.item), "duplicate item {}", rec.item);
                if k > 0 {
                    prop_assert!(list[k - 1].score >= rec.score);
                }
                let sum = rec.path.iter().fold(0.0f32, |s, p| s + p.logp);
                prop_assert_eq!(sum, rec.path_score);
                prop_assert_eq!(rec.score, rec.path_score, "the random scorer has no dense score");
                let ex = Explanation::new(rec, &names, None, theta);
                let mut toks = ex.tokens();
                if ordered {
                    prop_assert!(toks.iter().enumerate().all(|(r, t)| t.0 as usize == r));
                }
                toks.sort();
                let tuple: Vec<(u16, u16)> =
                    codes.tuple(rec.item as usize).iter().enumerate().map(|(r, &c)| (r as u16, c)).collect();
                prop_assert_eq!(toks, tuple);
                for (s, step) in ex.steps.iter().enumerate() {
                    prop_assert_eq!(step.token.clone(), format!("<t{}_{}>", step.codebook, step.code));
                    prop_assert_eq!(step.js.is_none(), s == 0);
                    prop_assert_eq!(step.categories.len(), n_cat.min(3));
                    if let (Some(t), Some(js)) = (theta, step.js) {
                        if s + 1 >= corp_from_step {
                            prop_assert!(js <= t, "kept a path with js {} > theta {}", js, t);
                        }
                    }
                }
            }
        }
        if theta.is_none() {
            prop_assert_eq!(out.stats.pruned_paths, 0);
        }
    }

    /// With CORP off and a beam wider than the number of partial token sets, the search is exhaustive: it
    /// returns exactly the top-N items of a brute-force constrained search that merges permutations (each partial
    /// set continues from its best order) with their scores, and N results whenever N items exist.
    #[test]
    fn wide_beam_equals_exhaustive_search(
        m in 1usize..4, d in 2usize..4, max_items in 1usize..14, ordered: bool, seed: u64, top_n in 1usize..16,
    ) {
        let codes = random_codes(m, d, max_items, ordered, seed);
        let index = ItemIndex::new(&codes).unwrap();
        // at most n_items * 2^m partial token sets at any depth
        let search = BeamSearch::new(&index, &cfg(codes.n_items() * 8, top_n, None)).unwrap();
        let mut scorer = RandomScorer::new(m * d, 2, seed);
        let out = search.run(&mut scorer, &HISTORIES, false).unwrap();
        for (row, list) in out.lists.iter().enumerate() {
            let got: Vec<(u32, f32)> = list.iter().map(|r| (r.item, r.score)).collect();
            let want = exhaustive(&mut scorer, &codes, row, top_n);
            prop_assert_eq!(got.len(), top_n.min(codes.n_items()));
            prop_assert_eq!(got, want);
        }
    }

    /// `fixed_order` (the no-CRSS ablation) decodes unordered codes in codebook order: a wide-beam search equals
    /// the exhaustive search over codebook-ordered paths, and every explanation lists codebooks 0, 1, ..., M - 1.
    #[test]
    fn fixed_order_decodes_unordered_codes_in_codebook_order(
        m in 2usize..4, d in 2usize..4, max_items in 1usize..14, seed: u64, top_n in 1usize..16,
    ) {
        let codes = random_codes(m, d, max_items, false, seed);
        let index = ItemIndex::new(&codes).unwrap();
        let fixed = InferConfig { fixed_order: true, ..cfg(codes.n_items() * 8, top_n, None) };
        let search = BeamSearch::new(&index, &fixed).unwrap();
        let mut scorer = RandomScorer::new(m * d, 2, seed);
        let out = search.run(&mut scorer, &HISTORIES, true).unwrap();
        let mut in_order = codes.clone();
        in_order.ordered = true;
        let names = ["a".to_string(), "b".to_string()];
        for (row, list) in out.lists.iter().enumerate() {
            let got: Vec<(u32, f32)> = list.iter().map(|r| (r.item, r.score)).collect();
            prop_assert_eq!(got, exhaustive(&mut scorer, &in_order, row, top_n));
            for rec in list {
                let toks = Explanation::new(rec, &names, None, None).tokens();
                prop_assert!(toks.iter().enumerate().all(|(r, t)| t.0 as usize == r));
            }
        }
    }

    /// With allowed-item lists, the wide-beam search is the exhaustive search restricted to each user's allowed
    /// items (every returned item allowed, as many as exist up to N), and an unconstrained user in the same batch
    /// is unaffected.
    #[test]
    fn constrained_wide_beam_equals_exhaustive_search_over_the_allowed_items(
        m in 1usize..4, d in 2usize..4, max_items in 1usize..14, ordered: bool, seed: u64, top_n in 1usize..16,
        keep in proptest::collection::vec(any::<bool>(), 14),
    ) {
        let codes = random_codes(m, d, max_items, ordered, seed);
        let index = ItemIndex::new(&codes).unwrap();
        let search = BeamSearch::new(&index, &cfg(codes.n_items() * 8, top_n, None)).unwrap();
        let mut scorer = RandomScorer::new(m * d, 2, seed);
        let allowed: Vec<u32> = (0..codes.n_items() as u32).filter(|&i| keep[i as usize]).collect();
        let lists = [Some(allowed.as_slice()), None, Some(&allowed[..allowed.len() / 2])];
        let out = search.run_constrained(&mut scorer, &HISTORIES, &lists, false).unwrap();
        let free = search.run(&mut scorer, &HISTORIES, false).unwrap();
        prop_assert_eq!(&out.lists[1], &free.lists[1]);
        for (row, list) in out.lists.iter().enumerate() {
            let Some(allow) = lists[row] else { continue };
            let got: Vec<(u32, f32)> = list.iter().map(|r| (r.item, r.score)).collect();
            let want: Vec<(u32, f32)> = exhaustive(&mut scorer, &codes, row, codes.n_items())
                .into_iter()
                .filter(|(i, _)| allow.contains(i))
                .take(top_n)
                .collect();
            prop_assert_eq!(got.len(), top_n.min(allow.len()));
            prop_assert_eq!(got, want);
        }
    }

    /// With the dense lookahead and a path model indifferent between tokens, the beam follows the dense scores:
    /// over ordered codes (disjoint prefixes) a beam of width B returns exactly the B best items by dense score,
    /// and over unordered codes the first item is the best one; both within each user's allowed items, and the
    /// list is full.
    #[test]
    fn dense_lookahead_finds_the_best_dense_items(
        m in 1usize..4, d in 2usize..5, max_items in 1usize..30, ordered: bool, seed: u64, beam in 1usize..6,
        keep in proptest::collection::vec(any::<bool>(), 30),
    ) {
        let codes = random_codes(m, d, max_items, ordered, seed);
        let n = codes.n_items();
        let index = ItemIndex::new(&codes).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 5);
        let dense: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
        let cfg = InferConfig { dense_lookahead: true, dense_weight: 1.0, ..cfg(beam, beam, None) };
        let search = BeamSearch::new(&index, &cfg).unwrap();
        let mut scorer =
            FnScorer::new(m * d, 2, |_, _| (vec![0.0; m * d], vec![0.0; 2])).with_item_scores(dense.clone());
        let allowed: Vec<u32> = (0..n as u32).filter(|&i| keep[i as usize]).collect();
        let lists = [None, Some(allowed.as_slice())];
        let out = search.run_constrained(&mut scorer, &HISTORIES[..2], &lists, false).unwrap();
        for (list, allow) in out.lists.iter().zip(lists) {
            let mut want: Vec<u32> = allow.map_or_else(|| (0..n as u32).collect(), |a| a.to_vec());
            want.sort_by(|&a, &b| dense[b as usize].total_cmp(&dense[a as usize]).then(a.cmp(&b)));
            let got: Vec<u32> = list.iter().map(|r| r.item).collect();
            // The beam spreads over different items: the list is as long as the beam whenever the items exist.
            prop_assert_eq!(got.len(), beam.min(want.len()));
            if want.is_empty() {
                prop_assert!(got.is_empty());
            } else if ordered {
                want.truncate(beam);
                prop_assert_eq!(got, want);
            } else {
                prop_assert_eq!(got[0], want[0]);
            }
        }
    }

    /// A user's results do not depend on which other users share the batch.
    #[test]
    fn batching_does_not_change_results(seed: u64, theta in proptest::option::of(0.0f32..0.1)) {
        let codes = random_codes(3, 4, 40, false, seed);
        let index = ItemIndex::new(&codes).unwrap();
        let search = BeamSearch::new(&index, &cfg(5, 8, theta)).unwrap();
        let mut scorer = RandomScorer::new(12, 4, seed);
        let together = search.run(&mut scorer, &HISTORIES, true).unwrap();
        for (u, h) in HISTORIES.iter().enumerate() {
            let alone = search.run(&mut scorer, &[*h], true).unwrap();
            prop_assert_eq!(&alone.lists[0], &together.lists[u]);
        }
    }
}

/// The dense lookahead keeps a prefix the path model ranks low when the best dense item lies under it: with
/// beam 1, the search without it follows the likelier first token and misses the item.
#[test]
fn dense_lookahead_keeps_the_prefix_of_the_best_dense_item() {
    let index = full_2x2();
    // Token 0 (codebook 0, code 0) is the likelier first step; item 3 = (1, 1) has the best dense score.
    let path = |_: usize, prefix: &[u32]| {
        let mut lp = vec![0.0; 4];
        if prefix.is_empty() {
            lp[0] = 3.0;
            lp[2] = 3.0;
        }
        (lp, vec![0.0; 1])
    };
    let dense = vec![0.0, 0.0, 0.0, 5.0];
    for (lookahead, want) in [(false, 0u32), (true, 3)] {
        let cfg = InferConfig {
            dense_lookahead: lookahead,
            dense_weight: 1.0,
            ..cfg(1, 1, None)
        };
        let search = BeamSearch::new(&index, &cfg).unwrap();
        let mut scorer = FnScorer::new(4, 1, path).with_item_scores(dense.clone());
        let out = search.run(&mut scorer, &[&[0]], false).unwrap();
        assert_eq!(out.lists[0][0].item, want, "lookahead {lookahead}");
    }
}

/// m = 2, d = 2, all four tuples; token ids: (0,0)=0 (0,1)=1 (1,0)=2 (1,1)=3.
fn full_2x2() -> ItemIndex {
    ItemIndex::new(&Codes::new(2, 2, false, vec![0, 0, 0, 1, 1, 0, 1, 1]).unwrap()).unwrap()
}

/// The model prefers token 0 first, but after token 0 its category jumps from "a" to "b".
fn jumpy(_row: usize, prefix: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let logits = match prefix {
        [] => vec![3.0, 1.0, 2.0, 0.0],
        _ => vec![0.0, 1.0, 0.0, 1.0],
    };
    let cats = match prefix {
        [0] => vec![-5.0, 5.0],
        _ => vec![5.0, -5.0],
    };
    (logits, cats)
}

#[test]
fn corp_prunes_a_category_jump_and_rolls_back_to_the_next_best_candidate() {
    let index = full_2x2();
    let names = vec!["a".to_string(), "b".to_string()];

    // CORP off: the best path starts with token 0 = <t0_0>.
    let off = BeamSearch::new(&index, &cfg(1, 4, None)).unwrap();
    let mut s = FnScorer::new(4, 2, jumpy);
    let out = off.run(&mut s, &[&[]], true).unwrap();
    assert_eq!(out.stats.pruned_paths, 0);
    let top = &out.lists[0][0];
    assert_eq!(top.path[0].token.to_string(), "<t0_0>");
    assert!(
        top.path[1].js.unwrap() > 0.5,
        "the jump is visible in the explanation"
    );

    // CORP on: the path through token 0 is pruned at step 2; its slot goes to the next-best first step,
    // token 2 = <t1_0>, whose category stays consistent.
    let on = BeamSearch::new(
        &index,
        &InferConfig {
            corp_from_step: 2,
            ..cfg(1, 4, Some(0.06))
        },
    )
    .unwrap();
    let out = on.run(&mut s, &[&[]], true).unwrap();
    assert_eq!(out.stats.pruned_paths, 1);
    assert_eq!(out.stats.rollback_rounds, 1);
    let list = &out.lists[0];
    assert!(list.iter().all(|r| r.path[0].token.to_string() == "<t1_0>"));
    // After <t1_0> the open codebook 0 offers codes 0 and 1, with logits 0 and 1.
    assert_eq!(list.iter().map(|r| r.item).collect::<Vec<_>>(), vec![2, 0]);
    let ex = Explanation::new(&list[0], &names, None, Some(0.06));
    assert_eq!(ex.steps[0].categories[0].category, "a");
    assert!(ex.steps[1].js.unwrap() < 1e-3);
    assert!(ex.render().starts_with("<t1_0> (a 1.00"), "{}", ex.render());

    // Without rollback rounds the pruned slot stays empty and nothing is generated.
    let no_rollback = BeamSearch::new(
        &index,
        &InferConfig {
            max_rollback_rounds: 0,
            corp_from_step: 2,
            ..cfg(1, 4, Some(0.06))
        },
    )
    .unwrap();
    let out = no_rollback.run(&mut s, &[&[]], false).unwrap();
    assert_eq!(out.stats.pruned_paths, 1);
    assert!(out.lists[0].is_empty());
}

#[test]
fn an_item_reached_in_two_orders_is_listed_once_with_its_best_score() {
    let index = full_2x2();
    let search = BeamSearch::new(&index, &cfg(4, 4, None)).unwrap();
    let mut s = FnScorer::new(4, 1, |_, _: &[u32]| (vec![0.0; 4], vec![0.0]));
    let out = search.run(&mut s, &[&[]], false).unwrap();
    // uniform model: 4 first tokens, each followed by 2 codes: every path has log(1/4) + log(1/4)
    let list = &out.lists[0];
    assert_eq!(list.len(), 4);
    let want = 2.0 * (0.25f32).ln();
    assert!(list.iter().all(|r| (r.score - want).abs() < 1e-6));
    let mut items: Vec<u32> = list.iter().map(|r| r.item).collect();
    items.sort();
    assert_eq!(items, vec![0, 1, 2, 3]);
}

/// Two orders of the same partial token set do not both take a beam slot: with a beam of 2, where the model
/// rates tokens A then B and B then A far above anything else, the second slot goes to another set.
#[test]
fn permutations_of_one_token_set_share_one_beam_slot() {
    // m = 3, d = 2, all 8 tuples; A = <t0_0> (id 0), B = <t1_0> (id 2).
    let tuples: Vec<u16> = (0..8u16)
        .flat_map(|i| [i & 1, (i >> 1) & 1, i >> 2])
        .collect();
    let index = ItemIndex::new(&Codes::new(3, 2, false, tuples).unwrap()).unwrap();
    let model = |_: usize, prefix: &[u32]| {
        let mut logits = vec![0.0f32; 6];
        match prefix {
            [] => {
                logits[0] = 8.0;
                logits[2] = 8.0;
            }
            [0] => logits[2] = 8.0,
            [2] => logits[0] = 8.0,
            _ => {}
        }
        (logits, vec![0.0])
    };
    let search = BeamSearch::new(&index, &cfg(2, 8, None)).unwrap();
    let mut s = FnScorer::new(6, 1, model);
    let list = &search.run(&mut s, &[&[]], false).unwrap().lists[0];
    // {A, B} gives items 0 and 4 (codebook 2 open); the other slot's set gives two more.
    let items: std::collections::BTreeSet<u32> = list.iter().map(|r| r.item).collect();
    assert_eq!(items.len(), 4, "{list:?}");
    assert!(items.contains(&0) && items.contains(&4));
}

#[test]
fn exclude_history_drops_the_users_items_and_refills_the_list() {
    let index = full_2x2();
    let mut s = RandomScorer::new(4, 2, 3);
    let keep = BeamSearch::new(&index, &cfg(8, 4, None)).unwrap();
    let all = keep.run(&mut s, &[&[1, 2]], false).unwrap();
    assert_eq!(all.lists[0].len(), 4);
    let drop = BeamSearch::new(
        &index,
        &InferConfig {
            exclude_history: true,
            ..cfg(8, 4, None)
        },
    )
    .unwrap();
    let out = drop.run(&mut s, &[&[1, 2]], false).unwrap();
    let items: Vec<u32> = out.lists[0].iter().map(|r| r.item).collect();
    let want: Vec<u32> = all.lists[0]
        .iter()
        .map(|r| r.item)
        .filter(|i| *i != 1 && *i != 2)
        .collect();
    assert_eq!(items, want);
}

#[test]
fn a_narrow_beam_still_reaches_the_only_allowed_item() {
    // Token scores: (0,0) best, (1,1) worst; item 3 = (0,1),(1,1) is the least likely item. A filter after the
    // search (beam 1 keeps the best token's items only) would return nothing.
    let index = full_2x2();
    let mut s = FnScorer::new(4, 1, |_, _: &[u32]| {
        (vec![-0.1, -1.0, -2.0, -3.0], vec![0.0])
    });
    let search = BeamSearch::new(&index, &cfg(1, 4, None)).unwrap();
    let free = search.run(&mut s, &[&[]], false).unwrap();
    assert!(
        free.lists[0].iter().all(|r| r.item != 3),
        "{:?}",
        free.lists[0]
    );
    let out = search
        .run_constrained(&mut s, &[&[]], &[Some(&[3])], false)
        .unwrap();
    let items: Vec<u32> = out.lists[0].iter().map(|r| r.item).collect();
    assert_eq!(items, vec![3]);
    let e = search
        .run_constrained(&mut s, &[&[]], &[Some(&[4])], false)
        .unwrap_err();
    assert!(e.to_string().contains("allowed item 4"), "{e}");
    let e = search
        .run_constrained(&mut s, &[&[], &[]], &[None], false)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("1 allowed-item lists for 2 histories"),
        "{e}"
    );
}

#[test]
fn scorer_and_index_must_agree() {
    let index = full_2x2();
    let search = BeamSearch::new(&index, &InferConfig::default()).unwrap();
    let mut s = RandomScorer::new(5, 2, 0);
    let e = search.run(&mut s, &[&[]], false).unwrap_err();
    assert!(e.to_string().contains("semantic tokens"), "{e}");
    let mut bad = FnScorer::new(4, 2, |_, _: &[u32]| (vec![0.0; 3], vec![0.0; 2]));
    assert!(search.run(&mut bad, &[&[]], false).is_err());
}

#[test]
fn evaluate_ranks_the_generated_list() {
    // Items 0..4 with the 2x2 tuples; token logits (t0_0, t0_1, t1_0, t1_1) = (2, 0, 0, 4) at every step, so
    // the items rank 1 = {t0_0, t1_1} (6), 3 (4), 0 (2), 2 (0); greedy (beam 1) goes t1_1 then t0_0 = item 1.
    let index = full_2x2();
    let ds = Dataset {
        name: "tiny".into(),
        sequences: vec![vec![0, 3, 1, 2], vec![1, 2, 0, 3], vec![2, 1, 2, 0]],
        user_ids: vec!["a".into(), "b".into(), "c".into()],
        item_ids: (0..4).map(|i| format!("i{i}")).collect(),
        item_category: vec![0; 4],
        category_names: vec!["all".into()],
        item_attributes: vec![vec![]; 4],
        item_names: Vec::new(),
    };
    let split = LeaveOneOut::new(&ds);
    let mut s = FnScorer::new(4, 1, |_, _: &[u32]| (vec![2.0, 0.0, 0.0, 4.0], vec![0.0]));
    let search = BeamSearch::new(&index, &cfg(1, 1, None)).unwrap();
    let r = evaluate(&mut s, &search, &split, Stage::Valid, 20).unwrap();
    // beam 1, top 1: only item 1 is generated; valid targets are 1, 0, 2 -> one hit at rank 0.
    assert_eq!(r.metrics.users, 3);
    assert!((r.metrics.recall_5 - 1.0 / 3.0).abs() < 1e-12);
    assert!((r.metrics.ndcg_10 - 1.0 / 3.0).abs() < 1e-12);
    let search = BeamSearch::new(&index, &cfg(4, 4, None)).unwrap();
    let r = evaluate(&mut s, &search, &split, Stage::Test, 20).unwrap();
    // all 4 items generated in the order 1, 3, 0, 2; test targets 2, 3, 0 rank 3, 1, 2.
    assert_eq!(r.metrics.recall_5, 1.0);
    let want = (1.0 / 5f64.log2() + 1.0 / 3f64.log2() + 1.0 / 4f64.log2()) / 3.0;
    assert!((r.metrics.ndcg_5 - want).abs() < 1e-12);
    assert_eq!(r.pruned_paths, 0);
}

#[test]
fn corp_prunes_random_paths_and_keeps_only_consistent_ones() {
    let codes = random_codes(3, 6, 120, false, 11);
    let index = ItemIndex::new(&codes).unwrap();
    let mut scorer = RandomScorer::new(18, 8, 5);
    scorer.category_scale = 1.5;
    let histories: Vec<Vec<u32>> = (0..16).map(|u| vec![u, u + 1]).collect();
    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
    let off = BeamSearch::new(&index, &cfg(8, 10, None)).unwrap();
    let on = BeamSearch::new(
        &index,
        &InferConfig {
            corp_from_step: 2,
            ..cfg(8, 10, Some(0.05))
        },
    )
    .unwrap();
    let a = off.run(&mut scorer, &refs, true).unwrap();
    let b = on.run(&mut scorer, &refs, true).unwrap();
    assert!(b.stats.pruned_paths > 0 && b.stats.rollback_rounds > 0);
    assert!(
        b.stats.model_rows > a.stats.model_rows,
        "refills are scored"
    );
    // CORP off keeps some inconsistent paths, CORP on none.
    let max_js = |o: &reg4rec_infer::SearchOutput| {
        o.lists
            .iter()
            .flatten()
            .flat_map(|r| r.path.iter().filter_map(|p| p.js))
            .fold(0.0f32, f32::max)
    };
    assert!(max_js(&a) > 0.05);
    assert!(max_js(&b) <= 0.05);
    assert_ne!(a.lists, b.lists);
}
