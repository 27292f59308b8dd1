//! The model adapter: masked, normalised step distributions from a tiny random model, and a search over it.

use reg4rec_infer::{BeamSearch, InferConfig, ModelScorer, Rank, StepInput, StepScorer};
use reg4rec_model::{no_seen_items, Mode, ModelConfig, PathScore, Reg4RecModel};
use reg4rec_tokenizer::{Codes, ItemIndex};
use tch::Device;

fn codes(ordered: bool) -> Codes {
    // 8 items, m = 2, d = 4
    Codes::new(
        2,
        4,
        ordered,
        vec![0, 0, 0, 1, 1, 2, 1, 3, 2, 0, 2, 2, 3, 1, 3, 3],
    )
    .unwrap()
}

fn model(mode: Mode) -> Reg4RecModel {
    tch::manual_seed(0);
    let cfg = ModelConfig {
        mode,
        ..ModelConfig::preset("smoke").unwrap()
    };
    Reg4RecModel::new(&cfg, &codes(mode == Mode::Tiger), 3, Device::Cpu).unwrap()
}

#[test]
fn step_distributions_are_masked_and_normalised() {
    let (c, m) = (codes(false), model(Mode::Reg4rec));
    let mut s = ModelScorer::new(&m, &c).unwrap();
    assert_eq!((s.n_tokens(), s.n_categories()), (8, 3));
    s.begin(&[&[0, 1, 2], &[5]]).unwrap();
    // beam 0: empty path of user 1; beam 1: user 0 after <t0_2> (id 2)
    let out = s
        .step(StepInput {
            rows: &[1],
            len: 0,
            prefixes: &[],
        })
        .unwrap();
    let z: f32 = out.logp.iter().map(|x| x.exp()).sum();
    assert!(
        (z - 1.0).abs() < 1e-4,
        "all codebooks open at the first step: {z}"
    );
    let out = s
        .step(StepInput {
            rows: &[0, 1],
            len: 1,
            prefixes: &[2, 2],
        })
        .unwrap();
    for row in out.logp.chunks(8) {
        assert!(
            row[..4].iter().all(|x| *x == f32::NEG_INFINITY),
            "codebook 0 is used"
        );
        let z: f32 = row[4..].iter().map(|x| x.exp()).sum();
        assert!((z - 1.0).abs() < 1e-4);
    }
    assert_ne!(out.logp[..8], out.logp[8..], "users have their own context");
    for row in out.category.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    assert!(s
        .step(StepInput {
            rows: &[2],
            len: 0,
            prefixes: &[]
        })
        .is_err());
    assert!(s.begin(&[&[8]]).is_err(), "item outside the codes");
}

#[test]
fn search_over_the_model_returns_valid_items() {
    for (mode, ordered) in [(Mode::Reg4rec, false), (Mode::Tiger, true)] {
        let (c, m) = (codes(ordered), model(mode));
        let index = ItemIndex::new(&c).unwrap();
        let mut s = ModelScorer::new(&m, &c).unwrap();
        let search = BeamSearch::new(
            &index,
            &InferConfig {
                beam: 4,
                top_n: 5,
                ..Default::default()
            },
        )
        .unwrap();
        let out = search.run(&mut s, &[&[0, 1], &[3, 4, 5]], true).unwrap();
        for list in &out.lists {
            assert!(!list.is_empty());
            for r in list {
                let mut toks: Vec<(u16, u16)> = r
                    .path
                    .iter()
                    .map(|p| (p.token.codebook, p.token.code))
                    .collect();
                if ordered {
                    assert_eq!(toks[0].0, 0);
                }
                toks.sort();
                let want: Vec<(u16, u16)> = c
                    .tuple(r.item as usize)
                    .iter()
                    .enumerate()
                    .map(|(k, &j)| (k as u16, j))
                    .collect();
                assert_eq!(toks, want);
                // Ranked by path score plus the weighted dense item score.
                let path: f32 = r.path.iter().map(|p| p.logp).sum();
                assert_eq!(r.path_score, path);
                let dense = r.item_score.expect("the model has an item head");
                assert_eq!(r.score, r.path_score + 100.0 * dense);
            }
            for w in list.windows(2) {
                assert!(w[0].score >= w[1].score);
            }
        }
    }
    // mode and codes must agree
    let (c, m) = (codes(true), model(Mode::Reg4rec));
    assert!(ModelScorer::new(&m, &c).is_err());
}

#[test]
fn beams_decode_after_their_users_context_and_dense_scores_are_the_item_head() {
    use reg4rec_model::decoding::{codebook_mask, used_codebooks};
    use tch::{Kind, Tensor};
    let (c, m) = (codes(false), model(Mode::Reg4rec));
    let hist: [&[u32]; 2] = [&[0, 1, 2], &[5, 7]];
    let mut s = ModelScorer::new(&m, &c).unwrap();
    s.begin(&hist).unwrap();
    // interleaved users, uneven counts (3 beams of user 1, 2 of user 0)
    let rows = [1usize, 0, 1, 1, 0];
    let prefixes = [2u32, 5, 6, 1, 4];
    let got = s
        .step(StepInput {
            rows: &rows,
            len: 1,
            prefixes: &prefixes,
        })
        .unwrap();

    let v = m.vocab();
    let enc = tch::no_grad(|| m.contexts(&hist)).unwrap();
    let want = tch::no_grad(|| {
        let ctx = enc
            .hidden
            .index_select(0, &Tensor::from_slice(&rows.map(|r| r as i64)));
        let dec = Tensor::from_slice(&prefixes.map(|t| 4 + t as i64)).view([5, 1]);
        let out = m.decode_last(&ctx, &dec, false);
        let used = used_codebooks(&v, &dec);
        let logp = (out.token_logits.select(1, 0) + codebook_mask(&v, &used))
            .log_softmax(-1, Kind::Float)
            .narrow(1, 4, 8);
        let cat = out.category_logits.select(1, 0).softmax(-1, Kind::Float);
        (
            Vec::<f32>::try_from(logp.contiguous().view([-1])).unwrap(),
            Vec::<f32>::try_from(cat.contiguous().view([-1])).unwrap(),
        )
    });
    for (a, b) in got.logp.iter().zip(&want.0) {
        assert!(a == b || (a - b).abs() < 1e-4, "{a} vs {b}");
    }
    for (a, b) in got.category.iter().zip(&want.1) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Dense scores: the item head's logits over every item, for the asked (user, item) pairs; they differ
    // from its log-softmax by one constant per user, so they order each user's items the same way.
    let logits = tch::no_grad(|| m.item_logits(&enc.hidden, &enc.items, &no_seen_items(), false));
    let logp = logits.log_softmax(-1, Kind::Float);
    let got = s.item_scores(&[1, 0, 1], &[7, 3, 0]).unwrap().unwrap();
    for (k, (r, i)) in [(1i64, 7i64), (0, 3), (1, 0)].into_iter().enumerate() {
        assert!((got[k] as f64 - logits.double_value(&[r, i])).abs() < 1e-5);
    }
    let shift = |r: i64, i: i64| logits.double_value(&[r, i]) - logp.double_value(&[r, i]);
    assert!((shift(1, 7) - shift(1, 0)).abs() < 1e-4);
    assert!(s.item_scores(&[2], &[0]).is_err(), "row outside the batch");
    assert!(s.item_scores(&[0], &[8]).is_err(), "item outside the codes");
}

/// With the model's repeat bias, the dense score of an item in the user's window is the head's logit plus the
/// learned bias, for the scored pairs and for the lookahead's scores of every item alike.
#[test]
fn dense_scores_carry_the_repeat_bias_on_window_items() {
    tch::manual_seed(0);
    let cfg = ModelConfig {
        repeat_bias: true,
        ..ModelConfig::preset("smoke").unwrap()
    };
    let c = codes(false);
    let m = Reg4RecModel::new(&cfg, &c, 3, Device::Cpu).unwrap();
    tch::no_grad(|| {
        let mut b = m.var_store().variables()["repeat_bias"].shallow_clone();
        let _ = b.fill_(-1.5);
    });
    let hist: [&[u32]; 2] = [&[0, 1, 2, 1], &[5, 7]];
    let mut s = ModelScorer::new(&m, &c).unwrap();
    s.begin(&hist).unwrap();
    let enc = tch::no_grad(|| m.contexts(&hist)).unwrap();
    let logits = tch::no_grad(|| m.item_logits(&enc.hidden, &enc.items, &no_seen_items(), false));
    let want = |u: usize, i: usize| {
        let b = if hist[u].contains(&(i as u32)) {
            -1.5
        } else {
            0.0
        };
        logits.double_value(&[u as i64, i as i64]) + b
    };
    let all = s.all_item_scores(8).unwrap().unwrap();
    for u in 0..2 {
        for i in 0..8 {
            assert!(
                (all[u * 8 + i] as f64 - want(u, i)).abs() < 1e-5,
                "user {u}, item {i}"
            );
        }
    }
    let got = s
        .item_scores(&[0, 0, 1, 1], &[1, 3, 7, 0])
        .unwrap()
        .unwrap();
    for (k, (u, i)) in [(0, 1), (0, 3), (1, 7), (1, 0)].into_iter().enumerate() {
        assert!(
            (got[k] as f64 - want(u, i)).abs() < 1e-5,
            "user {u}, item {i}"
        );
    }
}

fn parallel_model(item_head: bool) -> Reg4RecModel {
    tch::manual_seed(3);
    let cfg = ModelConfig {
        path: PathScore::Parallel,
        item_head,
        ..ModelConfig::preset("smoke").unwrap()
    };
    Reg4RecModel::new(&cfg, &codes(false), 3, Device::Cpu).unwrap()
}

/// A parallel path scores every token from the first decoder state, each codebook a distribution of its own;
/// every path of a user opens the codebooks in one order, most confident first (CRSS), and a codebook's scores
/// do not depend on the tokens emitted before it.
#[test]
fn parallel_steps_open_the_users_codebooks_in_confidence_order() {
    let (c, m) = (codes(false), parallel_model(false));
    let mut s = ModelScorer::new(&m, &c).unwrap();
    s.begin(&[&[0, 1, 2]]).unwrap();
    let first = s
        .step(StepInput {
            rows: &[0],
            len: 0,
            prefixes: &[],
        })
        .unwrap();
    let open: Vec<usize> = (0..2)
        .filter(|&r| first.logp[r * 4..(r + 1) * 4].iter().any(|x| x.is_finite()))
        .collect();
    assert_eq!(open.len(), 1, "one codebook per step: {:?}", first.logp);
    let (a, b) = (open[0], 1 - open[0]);
    let z: f32 = first.logp[a * 4..(a + 1) * 4].iter().map(|x| x.exp()).sum();
    assert!((z - 1.0).abs() < 1e-4, "the open codebook sums to 1: {z}");
    // The first codebook is the more confident one: its best token is likelier than the other's.
    let enc = tch::no_grad(|| m.contexts(&[&[0, 1, 2]])).unwrap();
    let full: Vec<f32> = tch::no_grad(|| {
        let logits = m.token_logits(&m.first_state(&enc.hidden, false), false);
        Vec::<f32>::try_from(
            logits
                .narrow(1, 4, 8)
                .view([2, 4])
                .log_softmax(-1, tch::Kind::Float)
                .view([-1]),
        )
    })
    .unwrap();
    let best = |r: usize| {
        full[r * 4..(r + 1) * 4]
            .iter()
            .copied()
            .fold(f32::MIN, f32::max)
    };
    assert!(best(a) >= best(b));
    // After either of two tokens of that codebook, the other codebook is open with the same scores.
    let next = s
        .step(StepInput {
            rows: &[0, 0],
            len: 1,
            prefixes: &[(a * 4) as u32, (a * 4 + 3) as u32],
        })
        .unwrap();
    for row in next.logp.chunks(8) {
        assert!(row[a * 4..(a + 1) * 4]
            .iter()
            .all(|x| *x == f32::NEG_INFINITY));
        for (x, y) in row[b * 4..(b + 1) * 4]
            .iter()
            .zip(&full[b * 4..(b + 1) * 4])
        {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
    // The step's category still reads the prefix.
    assert_ne!(next.category[..3], next.category[3..]);
}

/// The path-ranked list of a parallel model is exactly the catalogue ranked by every item's path score (sum
/// of its tokens' log-probabilities), with a beam wide enough to hold every partial path; the item head of the
/// model is never read, and every listed item exists with its own tokens.
#[test]
fn path_ranked_top_k_equals_exhaustive_path_scoring() {
    let c = codes(false);
    let index = ItemIndex::new(&c).unwrap();
    for item_head in [false, true] {
        let m = parallel_model(item_head);
        let hist: [&[u32]; 2] = [&[0, 1, 2], &[6]];
        let search = BeamSearch::new(
            &index,
            &InferConfig {
                beam: 16,
                top_n: 8,
                theta: None,
                rank: Rank::Paths,
                ..Default::default()
            },
        )
        .unwrap();
        let mut s = ModelScorer::new(&m, &c).unwrap();
        let out = search.run(&mut s, &hist, true).unwrap();
        let enc = tch::no_grad(|| m.contexts(&hist)).unwrap();
        let all: Vec<Vec<f32>> = Vec::try_from(&m.parallel_path_scores(&enc.hidden)).unwrap();
        for (list, scores) in out.lists.iter().zip(&all) {
            let mut want: Vec<u32> = (0..8).collect();
            want.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
            let got: Vec<u32> = list.iter().map(|r| r.item).collect();
            assert_eq!(got, want, "item head {item_head}");
            for r in list {
                assert!((r.score - scores[r.item as usize]).abs() < 1e-4);
                assert_eq!(r.score, r.path_score);
                assert!(r.item_score.is_none(), "no item-level score in path mode");
                let mut toks: Vec<(u16, u16)> = r
                    .path
                    .iter()
                    .map(|p| (p.token.codebook, p.token.code))
                    .collect();
                toks.sort();
                let tuple = c.tuple(r.item as usize);
                assert_eq!(toks, vec![(0, tuple[0]), (1, tuple[1])]);
            }
        }
    }
}
