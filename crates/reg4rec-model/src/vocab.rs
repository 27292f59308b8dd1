//! The decoder/encoder vocabulary: four special tokens followed by the `M * D` codebook tokens.
//!
//! `PAD = 0`, `BOS = 1`, `EOS = 2`, `SEP = 3`; token `(codebook r, code j)` is `4 + r * D + j`, i.e. the
//! tokenizer's `Token::id(D)` shifted past the specials. Every token also has a *type*: its codebook `r` for a
//! codebook token, `M` for the specials (the codebook-type embedding of the model).

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

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

    /// The token ids of an item's codes given in codebook order.
    pub fn item_tokens(&self, codes: &[u16]) -> Vec<i64> {
        codes
            .iter()
            .enumerate()
            .map(|(r, &j)| self.token(r, j as usize))
            .collect()
    }
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
}
