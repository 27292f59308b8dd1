//! Item token tuples: every item has M tokens, one per codebook, and token `(r, j)` is the vocabulary entry
//! `<t{r}_{j}>`. MPQ tokens are unordered (any generation order over codebooks reaches the item); RQ-VAE tokens
//! are ordered (level r is generated r-th).

use crate::error::{Result, TokenizerError};
use serde::{Deserialize, Serialize};

/// One semantic token: code `code` of codebook `codebook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Token {
    pub codebook: u16,
    pub code: u16,
}

impl Token {
    pub fn new(codebook: u16, code: u16) -> Self {
        Token { codebook, code }
    }

    /// Dense vocabulary id `codebook * d + code` (0-based, before any special tokens).
    pub fn id(self, d: usize) -> usize {
        self.codebook as usize * d + self.code as usize
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<t{}_{}>", self.codebook, self.code)
    }
}

/// The token tuple of every item: `tuples[item * m + r]` is item `item`'s code in codebook `r`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Codes {
    /// Number of codebooks (tokens per item).
    pub m: usize,
    /// Codes per codebook.
    pub d: usize,
    /// True for RQ-VAE (level r is the r-th token), false for MPQ (a set of tokens).
    pub ordered: bool,
    /// Row-major `n_items x m`, codebook order.
    pub tuples: Vec<u16>,
}

impl Codes {
    /// Checks the shape and that every code is below `d`.
    pub fn new(m: usize, d: usize, ordered: bool, tuples: Vec<u16>) -> Result<Self> {
        let codes = Codes {
            m,
            d,
            ordered,
            tuples,
        };
        codes.validate()?;
        Ok(codes)
    }

    pub fn validate(&self) -> Result<()> {
        if self.m == 0 || self.m > u16::MAX as usize {
            return Err(TokenizerError::Codes(format!(
                "m = {} out of range",
                self.m
            )));
        }
        if self.d == 0 || self.d > u16::MAX as usize + 1 {
            return Err(TokenizerError::Codes(format!(
                "d = {} out of range",
                self.d
            )));
        }
        if !self.tuples.len().is_multiple_of(self.m) {
            return Err(TokenizerError::Codes(format!(
                "{} codes is not a multiple of m = {}",
                self.tuples.len(),
                self.m
            )));
        }
        if let Some(pos) = self.tuples.iter().position(|&c| c as usize >= self.d) {
            return Err(TokenizerError::Codes(format!(
                "item {} codebook {}: code {} >= d = {}",
                pos / self.m,
                pos % self.m,
                self.tuples[pos],
                self.d
            )));
        }
        Ok(())
    }

    pub fn n_items(&self) -> usize {
        self.tuples.len() / self.m
    }

    /// Item `item`'s codes in codebook order.
    pub fn tuple(&self, item: usize) -> &[u16] {
        &self.tuples[item * self.m..(item + 1) * self.m]
    }

    /// Item `item`'s tokens in codebook order.
    pub fn tokens(&self, item: usize) -> Vec<Token> {
        self.tuple(item)
            .iter()
            .enumerate()
            .map(|(r, &c)| Token::new(r as u16, c))
            .collect()
    }

    /// Fraction of items whose tuple an earlier item already has: `(n_items - distinct tuples) / n_items`,
    /// i.e. the share of items collision resolution has to move.
    pub fn collision_rate(&self) -> f64 {
        let n = self.n_items();
        if n == 0 {
            return 0.0;
        }
        let distinct: std::collections::HashSet<&[u16]> = self.tuples.chunks(self.m).collect();
        (n - distinct.len()) as f64 / n as f64
    }

    /// Item counts per code, per codebook: `[m][d]`.
    pub fn usage(&self) -> Vec<Vec<u64>> {
        let mut counts = vec![vec![0u64; self.d]; self.m];
        for t in self.tuples.chunks(self.m) {
            for (r, &c) in t.iter().enumerate() {
                counts[r][c as usize] += 1;
            }
        }
        counts
    }

    /// Per codebook, the fraction of its `d` codes used by at least one item.
    pub fn utilisation(&self) -> Vec<f64> {
        self.usage()
            .iter()
            .map(|c| c.iter().filter(|&&n| n > 0).count() as f64 / self.d as f64)
            .collect()
    }

    /// Per codebook, `exp(entropy)` of the code distribution over items (from 1 to `d`).
    pub fn perplexity(&self) -> Vec<f64> {
        let n = self.n_items() as f64;
        self.usage()
            .iter()
            .map(|c| {
                let h: f64 = c
                    .iter()
                    .filter(|&&k| k > 0)
                    .map(|&k| {
                        let p = k as f64 / n;
                        -p * p.ln()
                    })
                    .sum();
                h.exp()
            })
            .collect()
    }
}

/// A small distinct table for this crate's tests: 4 items, m = 2, d = 3.
#[cfg(test)]
pub(crate) fn small() -> Codes {
    Codes::new(2, 3, false, vec![0, 1, 0, 2, 1, 1, 2, 0]).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_small_table() {
        let c = small();
        assert_eq!(c.n_items(), 4);
        assert_eq!(c.collision_rate(), 0.0);
        assert_eq!(c.utilisation(), vec![1.0, 1.0]);
        let dup = Codes::new(2, 3, false, vec![0, 1, 0, 1, 0, 1, 2, 0]).unwrap();
        assert_eq!(dup.collision_rate(), 0.5);
        assert_eq!(dup.utilisation(), vec![2.0 / 3.0, 2.0 / 3.0]);
        let p = dup.perplexity()[0];
        let expected = (-(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln())).exp();
        assert!((p - expected).abs() < 1e-12);
    }

    #[test]
    fn bad_codes_are_rejected() {
        assert!(Codes::new(2, 3, false, vec![0, 3]).is_err());
        assert!(Codes::new(2, 3, false, vec![0, 1, 2]).is_err());
        assert!(Codes::new(0, 3, false, vec![]).is_err());
    }
}
