//! Decoding, in one place for training (CRSS), the beam search's scorer and GRPO sampling alike: the
//! vocabulary and its arithmetic, the open-codebook rule, and the decoder's inputs.
//!
//! - **Vocabulary**: four special tokens followed by the `M * D` codebook tokens. `PAD = 0`, `BOS = 1`,
//!   `EOS = 2`, `SEP = 3`; token `(codebook r, code j)` is `4 + r * D + j`, i.e. the tokenizer's `Token::id(D)`
//!   (the *flat* code index the beam search numbers tokens by) shifted past the specials. Every token also has a
//!   *type*: its codebook `r` for a codebook token, `M` for the specials.
//! - **Open-codebook rule**: at each decoder step a codebook already used in the path is forbidden, `<EOS>` is
//!   allowed only once all M codebooks are used (and then it is the only choice), and `<PAD>`, `<BOS>`, `<SEP>`
//!   are never emitted ([`codebook_mask`], and [`open_codebook_log_probs`] for the normalised distribution).
//!   In TIGER mode (ordered codes) only codebook k is open at step k ([`closed_codebooks`]).
//! - **Decoder inputs**: the `[n, k]` ids of `n` prefixes of `k` tokens ([`decoder_input`]) and the codebooks
//!   they have used ([`used_codebooks`], [`codebooks_of`]).

use reg4rec_tokenizer::Token;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub const PAD: i64 = 0;
pub const BOS: i64 = 1;
pub const EOS: i64 = 2;
pub const SEP: i64 = 3;
/// Number of special tokens before the first codebook token.
pub const N_SPECIAL: i64 = 4;

/// Vocabulary of `m` codebooks of `d` codes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocab {
    /// Number of codebooks M (tokens per item).
    pub m: usize,
    /// Codes per codebook D.
    pub d: usize,
}

impl Vocab {
    pub fn new(m: usize, d: usize) -> Self {
        Vocab { m, d }
    }

    /// Vocabulary size: `4 + M * D`.
    pub fn size(&self) -> usize {
        N_SPECIAL as usize + self.m * self.d
    }

    /// Token id of code `j` of codebook `r`.
    pub fn token(&self, r: usize, j: usize) -> i64 {
        debug_assert!(r < self.m && j < self.d);
        N_SPECIAL + (r * self.d + j) as i64
    }

    /// Codebook of a codebook token; `None` for specials and ids out of range.
    pub fn codebook_of(&self, token: i64) -> Option<usize> {
        self.split(token).map(|(r, _)| r)
    }

    /// Code (within its codebook) of a codebook token; `None` for specials and ids out of range.
    pub fn code_of(&self, token: i64) -> Option<usize> {
        self.split(token).map(|(_, j)| j)
    }

    fn split(&self, token: i64) -> Option<(usize, usize)> {
        if token < N_SPECIAL || token >= self.size() as i64 {
            return None;
        }
        let k = (token - N_SPECIAL) as usize;
        Some((k / self.d, k % self.d))
    }

    /// Type of every token id (`[size]` i64): codebook `r` for codebook tokens, `M` for the specials.
    pub fn token_types(&self, device: Device) -> Tensor {
        let types: Vec<i64> = (0..self.size() as i64)
            .map(|t| self.codebook_of(t).unwrap_or(self.m) as i64)
            .collect();
        Tensor::from_slice(&types).to_device(device)
    }

    /// The vocabulary id of a codebook token given by its flat code index `r * D + j` (the tokenizer's
    /// `Token::id(D)`, the beam search's token numbering).
    pub fn flat_id(&self, flat: usize) -> i64 {
        debug_assert!(flat < self.m * self.d);
        N_SPECIAL + flat as i64
    }

    /// The vocabulary id of a tokenizer token.
    pub fn id(&self, t: Token) -> i64 {
        self.flat_id(t.id(self.d))
    }

    /// The tokenizer token of a codebook token id; `None` for specials and ids out of range.
    pub fn token_at(&self, id: i64) -> Option<Token> {
        self.split(id).map(|(r, j)| Token::new(r as u16, j as u16))
    }

    /// The token ids of an item's codes given in codebook order.
    pub fn item_tokens(&self, codes: &[u16]) -> Vec<i64> {
        codes
            .iter()
            .enumerate()
            .map(|(r, &j)| self.token(r, j as usize))
            .collect()
    }
}

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

/// Log-probabilities over the `M * D` codebook tokens (codebook-major) of token logits `[..., vocab]` with
/// each codebook normalised on its own (a log-softmax over its D codes); the tokens of `used` codebooks
/// (`[..., M]` bool) get `-inf` ([`crate::PathScore::Codebook`] and [`crate::PathScore::Parallel`]).
pub fn codebook_log_probs(vocab: &Vocab, logits: &Tensor, used: &Tensor) -> Tensor {
    let (m, d) = (vocab.m as i64, vocab.d as i64);
    let lead: Vec<i64> = logits.size()[..logits.dim() - 1].to_vec();
    let shape = |tail: &[i64]| [lead.as_slice(), tail].concat();
    let logp = logits
        .narrow(-1, N_SPECIAL, m * d)
        .reshape(shape(&[m, d]).as_slice())
        .log_softmax(-1, Kind::Float);
    // As in `open_codebook_log_probs`: subtracting +inf closes a codebook without a masked fill over every token.
    let used = used.to_kind(Kind::Bool).unsqueeze(-1); // [..., M, 1]
    let zero = Tensor::zeros(used.size(), (Kind::Float, logits.device()));
    let offset = Tensor::full_like(&zero, f64::INFINITY).where_self(&used, &zero);
    (logp - offset).reshape(shape(&[m * d]).as_slice())
}

/// The step distribution of a path under `path` ([`crate::PathScore`]): log-probabilities `[..., M * D]` of
/// the next codebook token from logits `[..., vocab]`, the codebooks in `used` (`[..., M]` bool) closed. The
/// one place training, the beam search's scorer and every path score take it from.
pub fn step_log_probs(
    path: crate::PathScore,
    vocab: &Vocab,
    logits: &Tensor,
    used: &Tensor,
) -> Tensor {
    match path {
        crate::PathScore::Open => open_codebook_log_probs(vocab, logits, used),
        crate::PathScore::Codebook | crate::PathScore::Parallel => {
            codebook_log_probs(vocab, logits, used)
        }
    }
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

/// The decoder input `[n, k]` (vocabulary ids, on `device`) of `n` prefixes of `k` tokens each, given row after
/// row by their flat code indices `r * D + j`.
pub fn decoder_input(vocab: &Vocab, flat: &[usize], n: usize, device: Device) -> Tensor {
    let ids: Vec<i64> = flat.iter().map(|&t| vocab.flat_id(t)).collect();
    let k = ids.len().checked_div(n).unwrap_or(0);
    Tensor::from_slice(&ids)
        .view([n as i64, k as i64])
        .to_device(device)
}

/// The codebooks closed before step `k` (`[n, M]` bool, on `device`) of `n` prefixes of `k` tokens given row
/// after row by their flat code indices: the codebooks a prefix has used (REG4Rec), or every codebook but `k`
/// (TIGER mode, `fixed_order`: the codes are generated in codebook order).
pub fn closed_codebooks(
    vocab: &Vocab,
    flat: &[usize],
    n: usize,
    k: usize,
    fixed_order: bool,
    device: Device,
) -> Tensor {
    let m = vocab.m;
    let mut closed = vec![false; n * m];
    for (i, row) in closed.chunks_mut(m).enumerate() {
        if fixed_order {
            for (r, x) in row.iter_mut().enumerate() {
                *x = r != k;
            }
        } else {
            for &t in &flat[i * k..(i + 1) * k] {
                row[t / vocab.d] = true;
            }
        }
    }
    Tensor::from_slice(&closed)
        .view([n as i64, m as i64])
        .to_device(device)
}

/// The flat code index `r * D + j` of each codebook token of `ids` (any shape, i64 vocabulary ids; specials are
/// not allowed): the inverse of [`Vocab::flat_id`].
pub fn flat_codes(ids: &Tensor) -> Tensor {
    ids - N_SPECIAL
}

/// The codebook of each codebook token of `ids` (any shape, i64 vocabulary ids; specials are not allowed).
pub fn codebooks_of(vocab: &Vocab, ids: &Tensor) -> Tensor {
    flat_codes(ids).divide_scalar_mode(vocab.d as i64, "floor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_round_trip_and_skip_specials() {
        let v = Vocab::new(3, 5);
        assert_eq!(v.size(), 19);
        assert_eq!(v.token(0, 0), 4);
        assert_eq!(v.token(2, 4), 18);
        for t in 0..v.size() as i64 {
            match v.codebook_of(t) {
                None => assert!(t < 4),
                Some(r) => assert_eq!(v.token(r, v.code_of(t).unwrap()), t),
            }
        }
        assert_eq!(v.codebook_of(19), None);
        assert_eq!(v.item_tokens(&[1, 0, 4]), vec![5, 9, 18]);
    }

    #[test]
    fn tokenizer_tokens_decoder_inputs_and_closed_codebooks() {
        let v = Vocab::new(3, 4);
        let t = Token::new(2, 1);
        assert_eq!(v.id(t), v.token(2, 1));
        assert_eq!(v.token_at(v.id(t)), Some(t));
        assert_eq!(v.token_at(EOS), None);
        // Two prefixes of two tokens, as flat code indices.
        let flat = [
            t.id(4),
            Token::new(0, 3).id(4),
            Token::new(1, 0).id(4),
            Token::new(2, 2).id(4),
        ];
        let input = decoder_input(&v, &flat, 2, Device::Cpu);
        let want =
            Tensor::from_slice(&[v.token(2, 1), v.token(0, 3), v.token(1, 0), v.token(2, 2)])
                .view([2, 2]);
        assert!(input.equal(&want));
        let closed: Vec<Vec<bool>> =
            Vec::try_from(&closed_codebooks(&v, &flat, 2, 2, false, Device::Cpu)).unwrap();
        assert_eq!(
            closed,
            vec![vec![true, false, true], vec![false, true, true]]
        );
        let u: Vec<Vec<bool>> = Vec::try_from(&used_codebooks(&v, &input)).unwrap();
        assert_eq!(u, closed);
        let tiger: Vec<Vec<bool>> =
            Vec::try_from(&closed_codebooks(&v, &flat, 2, 2, true, Device::Cpu)).unwrap();
        assert_eq!(tiger, vec![vec![true, true, false]; 2]);
        let cb: Vec<i64> = Vec::try_from(&codebooks_of(&v, &input.view([-1]))).unwrap();
        assert_eq!(cb, vec![2, 0, 1, 2]);
        assert_eq!(decoder_input(&v, &[], 3, Device::Cpu).size(), vec![3, 0]);
    }

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
    fn codebook_log_probs_normalise_each_open_codebook_alone() {
        let v = Vocab::new(3, 4);
        let used = Tensor::from_slice(&[true, false, false, false, true, true]).view([2, 3]);
        let logits = Tensor::randn([2, v.size() as i64], tch::kind::FLOAT_CPU);
        let got = codebook_log_probs(&v, &logits, &used).view([2, 3, 4]);
        let mass: Vec<Vec<f32>> = Vec::try_from(&got.exp().sum_dim_intlist(
            [-1i64].as_slice(),
            false,
            Kind::Float,
        ))
        .unwrap();
        let want = [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]];
        for (row, w) in mass.iter().zip(want) {
            for (x, y) in row.iter().zip(w) {
                assert!((x - y).abs() < 1e-5, "{mass:?}");
            }
        }
        // Within an open codebook, the order of the logits is kept.
        let a = logits.narrow(1, N_SPECIAL + 4, 4).get(0);
        let b = got.get(0).get(1);
        assert!(a.argsort(0, false).equal(&b.argsort(0, false)));
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
