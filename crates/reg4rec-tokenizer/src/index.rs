//! Item token tuples ([`Codes`]) and the [`ItemIndex`] that constrained decoding intersects partial token sets
//! with. Pure Rust (no libtorch), so it tests in milliseconds.
//!
//! Every item has M tokens, one per codebook; token `(r, j)` is the vocabulary entry `<t{r}_{j}>`. MPQ tokens
//! are unordered (any generation order over codebooks reaches the item); RQ-VAE tokens are ordered (level r is
//! generated r-th). The index answers, for a partial set of tokens, which items are still reachable, using one
//! bitset of items per `(codebook, code)`: an intersection is a word-wise AND over `ceil(n_items / 64)` words.

use crate::error::{Result, TokenizerError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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

/// A set of items as a bitset over item indices; the result of intersecting token sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachSet {
    words: Vec<u64>,
    /// Words outside `lo..hi` are zero (so intersections scan only the live range).
    lo: usize,
    hi: usize,
}

impl ReachSet {
    fn from_words(words: Vec<u64>) -> Self {
        let lo = words.iter().position(|&w| w != 0).unwrap_or(words.len());
        let hi = words.iter().rposition(|&w| w != 0).map_or(lo, |i| i + 1);
        ReachSet { words, lo, hi }
    }

    pub fn is_empty(&self) -> bool {
        self.lo >= self.hi
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn contains(&self, item: u32) -> bool {
        let i = item as usize;
        self.words
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Items in increasing order.
    pub fn items(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len());
        for (wi, &w) in self.words.iter().enumerate().take(self.hi).skip(self.lo) {
            let mut w = w;
            while w != 0 {
                out.push((wi * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
        }
        out
    }
}

/// Items by token tuple and by single token, built from distinct [`Codes`].
#[derive(Debug, Clone)]
pub struct ItemIndex {
    codes: Codes,
    /// `ceil(n_items / 64)`.
    words: usize,
    /// Bitset of the items having token `(r, j)` at `[(r * d + j) * words ..][..words]`.
    bits: Vec<u64>,
    by_tuple: HashMap<Box<[u16]>, u32>,
    /// The bitset of all items.
    all: Vec<u64>,
    /// Every token some item has, sorted (the answer for an empty partial set).
    used_tokens: Vec<Token>,
    /// Posting lists in one buffer: the items having token id `t = r * d + j`, increasing, are
    /// `posting_items[posting_start[t]..posting_start[t + 1]]`.
    posting_start: Vec<u32>,
    posting_items: Vec<u32>,
}

impl ItemIndex {
    /// Builds the index; two items with the same tuple are an error (resolve collisions first).
    pub fn new(codes: &Codes) -> Result<Self> {
        codes.validate()?;
        let (m, d, n) = (codes.m, codes.d, codes.n_items());
        if n > u32::MAX as usize {
            return Err(TokenizerError::Codes(format!("{n} items do not fit u32")));
        }
        let words = n.div_ceil(64);
        let mut bits = vec![0u64; m * d * words];
        let mut by_tuple = HashMap::with_capacity(n);
        for item in 0..n {
            let t = codes.tuple(item);
            if let Some(prev) = by_tuple.insert(t.to_vec().into_boxed_slice(), item as u32) {
                return Err(TokenizerError::Codes(format!(
                    "items {prev} and {item} share the tuple {t:?}; resolve collisions before indexing"
                )));
            }
            for (r, &c) in t.iter().enumerate() {
                bits[(r * d + c as usize) * words + item / 64] |= 1 << (item % 64);
            }
        }
        let mut all = vec![u64::MAX; words];
        if n % 64 != 0 {
            all[words - 1] = (1u64 << (n % 64)) - 1;
        }
        let used_tokens = (0..m * d)
            .filter(|&k| bits[k * words..(k + 1) * words].iter().any(|&w| w != 0))
            .map(|k| Token::new((k / d) as u16, (k % d) as u16))
            .collect();
        let mut posting_start = vec![0u32; m * d + 1];
        for item in 0..n {
            for (r, &c) in codes.tuple(item).iter().enumerate() {
                posting_start[r * d + c as usize + 1] += 1;
            }
        }
        for t in 0..m * d {
            posting_start[t + 1] += posting_start[t];
        }
        let mut fill = posting_start.clone();
        let mut posting_items = vec![0u32; n * m];
        for item in 0..n {
            for (r, &c) in codes.tuple(item).iter().enumerate() {
                let t = r * d + c as usize;
                posting_items[fill[t] as usize] = item as u32;
                fill[t] += 1;
            }
        }
        Ok(ItemIndex {
            codes: codes.clone(),
            words,
            bits,
            by_tuple,
            all,
            used_tokens,
            posting_start,
            posting_items,
        })
    }

    /// The items having token id `t = codebook * d + code`, in increasing order (empty outside the vocabulary).
    pub fn posting(&self, t: usize) -> &[u32] {
        match (self.posting_start.get(t), self.posting_start.get(t + 1)) {
            (Some(&a), Some(&b)) => &self.posting_items[a as usize..b as usize],
            _ => &[],
        }
    }

    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    pub fn n_items(&self) -> usize {
        self.codes.n_items()
    }

    /// The item with exactly this tuple (codebook order), if any.
    pub fn item_of(&self, tuple: &[u16]) -> Option<u32> {
        self.by_tuple.get(tuple).copied()
    }

    /// The item whose token set is exactly `tokens` (any order), if any.
    pub fn item_of_tokens(&self, tokens: &[Token]) -> Option<u32> {
        let m = self.codes.m;
        if tokens.len() != m {
            return None;
        }
        let mut tuple = vec![u16::MAX; m];
        for t in tokens {
            let slot = tuple.get_mut(t.codebook as usize)?;
            if *slot != u16::MAX {
                return None;
            }
            *slot = t.code;
        }
        self.item_of(&tuple)
    }

    /// Bitset words of the items having `token`; empty for a token outside the vocabulary.
    fn token_bits(&self, token: Token) -> &[u64] {
        let (r, j) = (token.codebook as usize, token.code as usize);
        if r >= self.codes.m || j >= self.codes.d {
            return &[];
        }
        let start = (r * self.codes.d + j) * self.words;
        &self.bits[start..start + self.words]
    }

    /// All items (the reach of the empty token set).
    pub fn all(&self) -> ReachSet {
        ReachSet::from_words(self.all.clone())
    }

    /// Narrows `set` to the items that also have `token`.
    pub fn narrow(&self, set: &ReachSet, token: Token) -> ReachSet {
        let b = self.token_bits(token);
        let mut words = vec![0; self.words];
        if !b.is_empty() {
            for w in set.lo..set.hi {
                words[w] = set.words[w] & b[w];
            }
        }
        ReachSet::from_words(words)
    }

    /// Whether some item in `set` has `token` (no allocation; stops at the first common word).
    pub fn intersects(&self, set: &ReachSet, token: Token) -> bool {
        let b = self.token_bits(token);
        if b.is_empty() {
            return false;
        }
        (set.lo..set.hi).any(|w| set.words[w] & b[w] != 0)
    }

    /// The items having every token of `partial`, as a bitset.
    pub fn reach(&self, partial: &[Token]) -> ReachSet {
        let mut set = self.all();
        for &t in partial {
            let b = self.token_bits(t);
            if b.is_empty() {
                return ReachSet::from_words(vec![0; self.words]);
            }
            for (a, b) in set.words.iter_mut().zip(b) {
                *a &= b;
            }
        }
        ReachSet::from_words(set.words)
    }

    /// The items having every token of `partial`, in increasing order.
    pub fn reachable(&self, partial: &[Token]) -> Vec<u32> {
        self.reach(partial).items()
    }

    /// Whether `partial` plus `next` can still be completed to an item.
    pub fn can_extend(&self, partial: &[Token], next: Token) -> bool {
        let nb = self.token_bits(next);
        if nb.is_empty() {
            return false;
        }
        let mut lists: Vec<&[u64]> = Vec::with_capacity(partial.len());
        for &t in partial {
            let b = self.token_bits(t);
            if b.is_empty() {
                return false;
            }
            lists.push(b);
        }
        (0..self.words).any(|w| lists.iter().fold(nb[w], |acc, b| acc & b[w]) != 0)
    }

    /// Every token of a codebook not used by `partial` that keeps `partial` completable, sorted by
    /// (codebook, code). Cost: one intersection plus one pass over the reachable items.
    pub fn valid_next_tokens(&self, partial: &[Token]) -> Vec<Token> {
        let (m, d) = (self.codes.m, self.codes.d);
        if partial.is_empty() {
            return self.used_tokens.clone();
        }
        let mut used = vec![false; m];
        for t in partial {
            if let Some(u) = used.get_mut(t.codebook as usize) {
                *u = true;
            }
        }
        let mut seen = vec![false; m * d];
        for item in self.reach(partial).items() {
            for (r, &c) in self.codes.tuple(item as usize).iter().enumerate() {
                if !used[r] {
                    seen[r * d + c as usize] = true;
                }
            }
        }
        seen.iter()
            .enumerate()
            .filter(|(_, &s)| s)
            .map(|(k, _)| Token::new((k / d) as u16, (k % d) as u16))
            .collect()
    }

    /// The codes of `codebook` that keep `partial` completable (ordered decoding: the next level), sorted.
    pub fn valid_next_codes(&self, partial: &[Token], codebook: u16) -> Vec<u16> {
        let r = codebook as usize;
        if r >= self.codes.m || partial.iter().any(|t| t.codebook == codebook) {
            return Vec::new();
        }
        let mut seen = vec![false; self.codes.d];
        for item in self.reach(partial).items() {
            seen[self.codes.tuple(item as usize)[r] as usize] = true;
        }
        (0..self.codes.d as u16)
            .filter(|&c| seen[c as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Codes {
        // 4 items, m = 2, d = 3
        Codes::new(2, 3, false, vec![0, 1, 0, 2, 1, 1, 2, 0]).unwrap()
    }

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
        assert!(ItemIndex::new(&dup)
            .unwrap_err()
            .to_string()
            .contains("share"));
    }

    #[test]
    fn bad_codes_are_rejected() {
        assert!(Codes::new(2, 3, false, vec![0, 3]).is_err());
        assert!(Codes::new(2, 3, false, vec![0, 1, 2]).is_err());
        assert!(Codes::new(0, 3, false, vec![]).is_err());
    }

    #[test]
    fn small_index_queries() {
        let ix = ItemIndex::new(&small()).unwrap();
        let t = Token::new;
        assert_eq!(ix.reachable(&[]), vec![0, 1, 2, 3]);
        assert_eq!(ix.reachable(&[t(0, 0)]), vec![0, 1]);
        assert_eq!(ix.reachable(&[t(1, 1)]), vec![0, 2]);
        assert_eq!(ix.reachable(&[t(0, 0), t(1, 1)]), vec![0]);
        assert!(ix.can_extend(&[t(1, 1)], t(0, 1)));
        assert!(!ix.can_extend(&[t(1, 0)], t(0, 0)));
        assert!(!ix.can_extend(&[], t(5, 0)));
        assert_eq!(ix.valid_next_tokens(&[t(1, 1)]), vec![t(0, 0), t(0, 1)]);
        assert_eq!(ix.valid_next_codes(&[t(0, 0)], 1), vec![1, 2]);
        assert_eq!(ix.item_of(&[2, 0]), Some(3));
        assert_eq!(ix.item_of_tokens(&[t(1, 0), t(0, 2)]), Some(3));
        assert_eq!(ix.item_of_tokens(&[t(1, 0), t(1, 2)]), None);
        assert_eq!(t(1, 2).to_string(), "<t1_2>");
        assert_eq!(t(1, 2).id(3), 5);
    }

    /// Up to 300 items with distinct random tuples over m codebooks of d codes.
    fn distinct_codes() -> impl Strategy<Value = Codes> {
        (1usize..5, 2usize..6, 1usize..300, any::<u64>()).prop_map(|(m, d, n, seed)| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let cap = d.pow(m as u32).min(n);
            let mut seen = std::collections::HashSet::new();
            let mut tuples = Vec::new();
            while seen.len() < cap {
                let t: Vec<u16> = (0..m).map(|_| rng.gen_range(0..d as u16)).collect();
                if seen.insert(t.clone()) {
                    tuples.extend(t);
                }
            }
            Codes::new(m, d, false, tuples).unwrap()
        })
    }

    proptest! {
        #[test]
        fn index_is_exact(codes in distinct_codes(), probe in proptest::collection::vec((0u16..5, 0u16..6), 0..4)) {
            let ix = ItemIndex::new(&codes).unwrap();
            let n = codes.n_items();
            for item in 0..n {
                // every tuple maps back to its item
                prop_assert_eq!(ix.item_of(codes.tuple(item)), Some(item as u32));
                // every subset of an item's tokens reaches it
                let toks = codes.tokens(item);
                for mask in 0u32..(1 << codes.m) {
                    let sub: Vec<Token> = toks.iter().enumerate()
                        .filter(|(r, _)| mask >> r & 1 == 1).map(|(_, &t)| t).collect();
                    prop_assert!(ix.reach(&sub).contains(item as u32));
                }
            }
            // each posting list holds exactly the items having the token, in increasing order
            for t in 0..codes.m * codes.d + 2 {
                let want: Vec<u32> = (0..n as u32)
                    .filter(|&i| t < codes.m * codes.d && codes.tuple(i as usize)[t / codes.d] as usize == t % codes.d)
                    .collect();
                prop_assert_eq!(ix.posting(t), want.as_slice());
            }
            // an arbitrary token set reaches exactly the items whose token set contains it
            let partial: Vec<Token> = probe.iter().map(|&(r, j)| Token::new(r, j)).collect();
            let expected: Vec<u32> = (0..n as u32).filter(|&i| {
                let toks = codes.tokens(i as usize);
                partial.iter().all(|t| toks.contains(t))
            }).collect();
            prop_assert_eq!(ix.reachable(&partial), expected.clone());
            // can_extend and valid_next_tokens agree with the brute force
            for r in 0..codes.m as u16 {
                for j in 0..codes.d as u16 {
                    let next = Token::new(r, j);
                    let mut with = partial.clone();
                    with.push(next);
                    let brute = (0..n).any(|i| {
                        let toks = codes.tokens(i);
                        with.iter().all(|t| toks.contains(t))
                    });
                    prop_assert_eq!(ix.can_extend(&partial, next), brute);
                    let used = partial.iter().any(|t| t.codebook == r);
                    prop_assert_eq!(ix.valid_next_tokens(&partial).contains(&next), brute && !used);
                    prop_assert_eq!(ix.valid_next_codes(&partial, r).contains(&j), brute && !used);
                    prop_assert_eq!(ix.intersects(&ix.reach(&partial), next), brute);
                    prop_assert_eq!(ix.narrow(&ix.reach(&partial), next), ix.reach(&with));
                }
            }
        }
    }
}
