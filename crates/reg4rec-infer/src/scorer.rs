//! The seam between the search and the network: a [`StepScorer`] gives, for a batch of partial paths, the
//! log-probabilities of the next semantic token and the category distribution at this step.
//!
//! Tokens crossing this seam are dense semantic ids `codebook * d + code` ([`Token::id`]); the model adapter
//! maps them to and from its own vocabulary (special tokens included). Two scorers live here: [`RandomScorer`]
//! (seeded, prefix-dependent, for tests and benches) and [`FnScorer`] (a closure, for hand-built cases); the
//! neural one is [`crate::ModelScorer`].

use crate::error::{InferError, Result};

pub use reg4rec_tokenizer::index::Token;

/// The partial paths of one step: beam `i` belongs to user `rows[i]` (an index into the histories given to
/// [`StepScorer::begin`]) and has generated `prefixes[i * len..(i + 1) * len]` (dense semantic ids, in
/// generation order). Every beam of a step has the same length.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub rows: &'a [usize],
    pub len: usize,
    pub prefixes: &'a [u32],
}

impl<'a> StepInput<'a> {
    pub fn n(&self) -> usize {
        self.rows.len()
    }

    /// Tokens generated so far by beam `i`.
    pub fn prefix(&self, i: usize) -> &'a [u32] {
        &self.prefixes[i * self.len..(i + 1) * self.len]
    }
}

/// What a scorer returns for a step of `n` beams.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Row-major `[n, m * d]`: log-probability of each semantic token as the next one.
    pub logp: Vec<f32>,
    /// Row-major `[n, n_categories]`: the category distribution predicted at this step (sums to 1).
    pub category: Vec<f32>,
}

impl StepOutput {
    /// Checks the buffer sizes against `n` beams.
    pub fn check(&self, n: usize, n_tokens: usize, n_categories: usize) -> Result<()> {
        if self.logp.len() != n * n_tokens {
            return Err(InferError::Shape {
                name: "logp".into(),
                expected: vec![n, n_tokens],
                found: self.logp.len(),
            });
        }
        if self.category.len() != n * n_categories {
            return Err(InferError::Shape {
                name: "category".into(),
                expected: vec![n, n_categories],
                found: self.category.len(),
            });
        }
        Ok(())
    }
}

/// Scores next steps of partial paths for a batch of users.
pub trait StepScorer {
    /// Size of the semantic vocabulary, `m * d`.
    fn n_tokens(&self) -> usize;
    /// Number of item categories.
    fn n_categories(&self) -> usize;
    /// Starts a batch: row `u` of later steps is the user with history `histories[u]` (dense item indices,
    /// oldest first).
    fn begin(&mut self, histories: &[&[u32]]) -> Result<()>;
    /// Scores one step for every beam of `input`.
    fn step(&mut self, input: StepInput<'_>) -> Result<StepOutput>;
}

/// In-place log-softmax of one row.
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    for x in row {
        *x -= lse;
    }
}

/// In-place softmax of one row.
pub fn softmax(row: &mut [f32]) {
    log_softmax(row);
    for x in row {
        *x = x.exp();
    }
}

/// SplitMix64: a cheap, well-mixed hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in `[-1, 1)` from a hash.
fn unit(h: u64) -> f32 {
    ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A seeded scorer whose logits are a hash of (seed, user history, prefix, token): deterministic, dependent on
/// the whole prefix and its order (like a decoder), and independent of how beams are batched. For tests (an
/// exhaustive search can replay it) and for benches of the search bookkeeping.
#[derive(Debug, Clone)]
pub struct RandomScorer {
    n_tokens: usize,
    n_categories: usize,
    seed: u64,
    /// Token logits are uniform in `[-token_scale, token_scale]`.
    pub token_scale: f32,
    /// Category logits are uniform in `[-category_scale, category_scale]`; larger gives larger JS divergences.
    pub category_scale: f32,
    users: Vec<u64>,
}

impl RandomScorer {
    pub fn new(n_tokens: usize, n_categories: usize, seed: u64) -> Self {
        RandomScorer {
            n_tokens,
            n_categories,
            seed,
            token_scale: 4.0,
            category_scale: 1.0,
            users: Vec::new(),
        }
    }

    fn prefix_hash(&self, row: usize, prefix: &[u32]) -> u64 {
        prefix
            .iter()
            .fold(mix(self.seed ^ self.users[row]), |h, &t| {
                mix(h ^ (t as u64 + 1))
            })
    }
}

impl StepScorer for RandomScorer {
    fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    fn n_categories(&self) -> usize {
        self.n_categories
    }

    fn begin(&mut self, histories: &[&[u32]]) -> Result<()> {
        self.users = histories
            .iter()
            .map(|h| h.iter().fold(0x5EED, |a, &i| mix(a ^ i as u64)))
            .collect();
        Ok(())
    }

    fn step(&mut self, input: StepInput<'_>) -> Result<StepOutput> {
        let (v, c) = (self.n_tokens, self.n_categories);
        let mut out = StepOutput {
            logp: vec![0.0; input.n() * v],
            category: vec![0.0; input.n() * c],
        };
        for (i, &row) in input.rows.iter().enumerate() {
            if row >= self.users.len() {
                return Err(InferError::Input(format!(
                    "row {row} outside the batch of {} users",
                    self.users.len()
                )));
            }
            let h = self.prefix_hash(row, input.prefix(i));
            let lp = &mut out.logp[i * v..(i + 1) * v];
            for (t, x) in lp.iter_mut().enumerate() {
                *x = self.token_scale
                    * unit(mix(h ^ (t as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)));
            }
            log_softmax(lp);
            let hc = mix(h ^ 0xC47E_6011);
            let cp = &mut out.category[i * c..(i + 1) * c];
            for (k, x) in cp.iter_mut().enumerate() {
                *x = self.category_scale * unit(mix(hc ^ (k as u64 + 1)));
            }
            softmax(cp);
        }
        Ok(out)
    }
}

/// A scorer from a closure `f(user_row, prefix) -> (token_logits [m * d], category_logits [n_categories])`;
/// logits are normalised with (log-)softmax. For hand-built tests.
pub struct FnScorer<F> {
    n_tokens: usize,
    n_categories: usize,
    f: F,
}

impl<F: FnMut(usize, &[u32]) -> (Vec<f32>, Vec<f32>)> FnScorer<F> {
    pub fn new(n_tokens: usize, n_categories: usize, f: F) -> Self {
        FnScorer {
            n_tokens,
            n_categories,
            f,
        }
    }
}

impl<F: FnMut(usize, &[u32]) -> (Vec<f32>, Vec<f32>)> StepScorer for FnScorer<F> {
    fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    fn n_categories(&self) -> usize {
        self.n_categories
    }

    fn begin(&mut self, _histories: &[&[u32]]) -> Result<()> {
        Ok(())
    }

    fn step(&mut self, input: StepInput<'_>) -> Result<StepOutput> {
        let mut out = StepOutput::default();
        for i in 0..input.n() {
            let (mut lp, mut cp) = (self.f)(input.rows[i], input.prefix(i));
            if lp.len() != self.n_tokens || cp.len() != self.n_categories {
                return Err(InferError::Shape {
                    name: "FnScorer closure".into(),
                    expected: vec![self.n_tokens, self.n_categories],
                    found: lp.len() + cp.len(),
                });
            }
            log_softmax(&mut lp);
            softmax(&mut cp);
            out.logp.extend(lp);
            out.category.extend(cp);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_scorer_is_normalised_and_batch_independent() {
        let mut s = RandomScorer::new(12, 5, 7);
        s.begin(&[&[1, 2], &[3]]).unwrap();
        let a = s
            .step(StepInput {
                rows: &[0, 1, 0],
                len: 1,
                prefixes: &[4, 4, 5],
            })
            .unwrap();
        let b = s
            .step(StepInput {
                rows: &[1],
                len: 1,
                prefixes: &[4],
            })
            .unwrap();
        assert_eq!(&a.logp[12..24], &b.logp[..]);
        assert_eq!(&a.category[5..10], &b.category[..]);
        assert_ne!(
            &a.logp[..12],
            &a.logp[12..24],
            "different users score differently"
        );
        assert_ne!(
            &a.logp[..12],
            &a.logp[24..],
            "different prefixes score differently"
        );
        for row in a.logp.chunks(12) {
            let z: f32 = row.iter().map(|x| x.exp()).sum();
            assert!((z - 1.0).abs() < 1e-5);
        }
        for row in a.category.chunks(5) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(s
            .step(StepInput {
                rows: &[2],
                len: 0,
                prefixes: &[]
            })
            .is_err());
    }
}
