//! The decoding mask shared by training (CRSS) and inference: at each decoder step a codebook already used in
//! the path is forbidden, `<EOS>` is allowed only once all M codebooks are used (and then it is the only
//! choice), and `<PAD>`, `<BOS>`, `<SEP>` are never emitted.

use crate::vocab::{Vocab, BOS, N_SPECIAL, PAD, SEP};
use tch::{Kind, Tensor};

/// Additive logit mask for the next decoder step.
///
/// `used` is a bool tensor `[..., M]` (true = codebook already emitted in this path); the result is an f32
/// tensor `[..., vocab]` on the same device holding `0` for allowed tokens and `-inf` for forbidden ones, so
/// `softmax(logits + mask)` gives forbidden tokens exactly zero probability.
pub fn codebook_mask(vocab: &Vocab, used: &Tensor) -> Tensor {
    let device = used.device();
    let used = used.to_kind(Kind::Bool);
    let all_used = used.all_dim(-1, true); // [..., 1]
                                           // Column M of the extended table is the specials' "forbidden" flag: EOS is forbidden until all are used.
    let ext = Tensor::cat(&[used, all_used.logical_not()], -1); // [..., M + 1]
    let forbidden = ext.index_select(-1, &vocab.token_types(device)); // [..., vocab]
    let mut never = vec![false; vocab.size()];
    for t in [PAD, BOS, SEP] {
        never[t as usize] = true;
    }
    let never = Tensor::from_slice(&never).to_device(device);
    let forbidden = forbidden.logical_or(&never);
    Tensor::zeros_like(&forbidden.to_kind(Kind::Float)).masked_fill(&forbidden, f64::NEG_INFINITY)
}

/// Log-probabilities over the `M * D` codebook tokens (codebook-major, without the special tokens) of token
/// logits `[..., vocab]`: the softmax over the tokens of the codebooks not `used` (`[..., M]` bool), computed
/// blockwise (a log-sum-exp per codebook, then over the open ones); used codebooks get `-inf`. The same
/// distribution as `log_softmax(logits + codebook_mask)` restricted to codebook tokens, before all M are used.
pub fn open_codebook_log_probs(vocab: &Vocab, logits: &Tensor, used: &Tensor) -> Tensor {
    let (m, d) = (vocab.m as i64, vocab.d as i64);
    let lead: Vec<i64> = logits.size()[..logits.dim() - 1].to_vec();
    let shape = |tail: &[i64]| [lead.as_slice(), tail].concat();
    let blocks = logits
        .narrow(-1, N_SPECIAL, m * d)
        .reshape(shape(&[m, d]).as_slice());
    let used = used.to_kind(Kind::Bool).unsqueeze(-1); // [..., M, 1]
                                                       // The per-codebook log-sum-exp runs on finite logits (an exponential of -inf takes the math library's slow
                                                       // path); the used codebooks are dropped from the M per-codebook terms. The tokens of a used codebook then
                                                       // subtract +inf, which gives -inf without a masked fill over every token (a slow, unvectorized kernel that
                                                       // was a tenth of a batched search's time).
    let per = blocks.logsumexp([-1], true);
    let norm = per
        .masked_fill(&used, f64::NEG_INFINITY)
        .logsumexp([-2], true);
    let offset = Tensor::full_like(&per, f64::INFINITY).where_self(&used, &norm);
    (blocks - offset).reshape(shape(&[m * d]).as_slice())
}

/// Used-codebook flags `[B, M]` of decoder prefixes `[B, k]` of codebook tokens (no BOS).
pub fn used_codebooks(vocab: &Vocab, prefix: &Tensor) -> Tensor {
    let device = prefix.device();
    let b = prefix.size()[0];
    let mut used = Tensor::zeros([b, vocab.m as i64], (Kind::Bool, device));
    if prefix.size()[1] == 0 {
        return used;
    }
    let types = vocab
        .token_types(device)
        .index_select(0, &prefix.flatten(0, -1));
    let types = types.view([b, -1]);
    let ones = Tensor::ones(types.size(), (Kind::Bool, device));
    // Specials map to type M, outside `used`; only codebook tokens are scattered.
    let is_code = types.lt(vocab.m as i64);
    let idx = types.where_self(&is_code, &Tensor::zeros_like(&types));
    used = used.scatter(1, &idx, &ones.logical_and(&is_code));
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::EOS;

    #[test]
    fn open_codebook_log_probs_equal_the_masked_log_softmax() {
        let v = Vocab::new(3, 4);
        let used = Tensor::from_slice(&[true, false, false, false, true, true]).view([2, 3]);
        let logits = Tensor::randn([2, v.size() as i64], tch::kind::FLOAT_CPU);
        let want = (&logits + codebook_mask(&v, &used))
            .log_softmax(-1, Kind::Float)
            .narrow(1, N_SPECIAL, 12);
        let got = open_codebook_log_probs(&v, &logits, &used);
        assert_eq!(got.size(), vec![2, 12]);
        let finite = want.isfinite();
        assert!(finite.equal(&got.isfinite()));
        let diff = (got - &want)
            .masked_fill(&finite.logical_not(), 0.0)
            .abs()
            .max();
        assert!(diff.double_value(&[]) < 1e-5);
    }

    #[test]
    fn used_codebooks_get_zero_probability_and_eos_only_at_the_end() {
        let v = Vocab::new(3, 4);
        let used = Tensor::from_slice(&[true, false, true, true, true, true]).view([2, 3]);
        let mask = codebook_mask(&v, &used);
        assert_eq!(mask.size(), vec![2, v.size() as i64]);
        let p = (Tensor::randn([2, v.size() as i64], tch::kind::FLOAT_CPU) + &mask)
            .softmax(-1, Kind::Float);
        let p: Vec<Vec<f32>> = Vec::try_from(&p).unwrap();
        for t in 0..v.size() as i64 {
            let q0 = p[0][t as usize];
            match v.codebook_of(t) {
                Some(1) => assert!(q0 > 0.0),
                _ => assert_eq!(q0, 0.0, "token {t}"),
            }
            let q1 = p[1][t as usize];
            if t == EOS {
                assert!((q1 - 1.0).abs() < 1e-6);
            } else {
                assert_eq!(q1, 0.0);
            }
        }
    }

    #[test]
    fn used_codebooks_reads_prefix_tokens() {
        let v = Vocab::new(3, 4);
        let prefix =
            Tensor::from_slice(&[v.token(2, 1), v.token(0, 3), v.token(1, 0), PAD]).view([2, 2]);
        let u: Vec<Vec<bool>> = Vec::try_from(&used_codebooks(&v, &prefix)).unwrap();
        assert_eq!(u, vec![vec![true, false, true], vec![false, true, false]]);
    }
}
