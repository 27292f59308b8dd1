//! The model adapter: masked, normalised step distributions from a tiny random model, and a search over it.

use reg4rec_infer::{BeamSearch, InferConfig, ModelScorer, StepInput, StepScorer};
use reg4rec_model::{Mode, ModelConfig, Reg4RecModel, Vocab};
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
        ..ModelConfig::smoke_preset()
    };
    Reg4RecModel::new(&cfg, Vocab::new(2, 4), 3, Device::Cpu).unwrap()
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
    assert_ne!(out.logp[..8], out.logp[8..], "users have their own memory");
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
                assert!(r.score.is_finite());
            }
        }
    }
    // mode and codes must agree
    let (c, m) = (codes(true), model(Mode::Reg4rec));
    assert!(ModelScorer::new(&m, &c).is_err());
}

#[test]
fn grouped_decoding_equals_decoding_repeated_memory() {
    use reg4rec_model::mask::{codebook_mask, used_codebooks};
    use tch::{Kind, Tensor};
    let (c, m) = (codes(false), model(Mode::Reg4rec));
    let hist: [&[u32]; 2] = [&[0, 1, 2], &[5, 7]];
    let mut s = ModelScorer::new(&m, &c).unwrap();
    s.begin(&hist).unwrap();
    // interleaved users, uneven groups (3 beams of user 1, 2 of user 0)
    let rows = [1usize, 0, 1, 1, 0];
    let prefixes = [2u32, 5, 2, 6, 7, 1, 4, 0, 3, 6];
    let got = s
        .step(StepInput {
            rows: &rows,
            len: 2,
            prefixes: &prefixes,
        })
        .unwrap();

    let v = m.vocab();
    let want = tch::no_grad(|| {
        let enc = m.encode(&m.history_tokens(&hist, &c).unwrap(), false);
        let idx = Tensor::from_slice(&rows.map(|r| r as i64));
        let mut dec = Vec::new();
        for p in prefixes.chunks(2) {
            dec.push(1i64);
            dec.extend(p.iter().map(|&t| 4 + t as i64));
        }
        let dec = Tensor::from_slice(&dec).view([5, 3]);
        let out = m.decode(&enc.repeat_rows(&idx), &dec, false);
        let used = used_codebooks(&v, &dec.narrow(1, 1, 2));
        let logp = (out.token_logits.select(1, 2) + codebook_mask(&v, &used))
            .log_softmax(-1, Kind::Float)
            .narrow(1, 4, 8);
        let cat = out.category_logits.select(1, 2).softmax(-1, Kind::Float);
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
}
