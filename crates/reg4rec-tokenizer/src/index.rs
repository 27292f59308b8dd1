//! The [`ItemIndex`] that constrained decoding asks which items a partial set of tokens still reaches, and which
//! tokens can extend it. Pure Rust (no libtorch), so it tests in milliseconds.
//!
//! It answers from posting lists: the items of each token and of each pair of tokens from different codebooks,
//! increasing, in two buffers. A partial set of one or two tokens is one list; a longer one walks the shortest
//! of its pairs' lists and checks each item's codes. Memory and lookup costs are measured up to 10^7 items in
//! docs/scale.md.

use crate::codes::{Codes, Token};
use crate::error::{Result, TokenizerError};

/// Items by token tuple, by single token and by pair of tokens, built from distinct [`Codes`].
///
/// Memory grows linearly with the catalog: the codes (`n * m` u16), one posting list per token (`n * m` u32),
/// one per pair of tokens of different codebooks (`n * m (m - 1) / 2` u32), and the items sorted by tuple
/// (`n` u32) for exact look-ups. The pair lists spare the beam search a pass over a token's `n / d` items: the
/// tokens that can follow a token are the non-empty pair lists, and the items a two-token path reaches are one
/// pair list (about `n / d^2` items).
#[derive(Debug, Clone)]
pub struct ItemIndex {
    codes: Codes,
    /// Item indices sorted by tuple (codebook order), for [`ItemIndex::item_of`].
    by_tuple: Vec<u32>,
    /// Every token some item has, sorted (the answer for an empty partial set).
    used_tokens: Vec<Token>,
    /// Posting lists in one buffer: the items having token id `t = r * d + j`, increasing, are
    /// `posting_items[posting_start[t]..posting_start[t + 1]]`.
    posting_start: Vec<usize>,
    posting_items: Vec<u32>,
    /// Pair posting lists: the items having tokens `(r1, j1)` and `(r2, j2)` with `r1 < r2`, increasing, at
    /// key `(pair(r1, r2) * d + j1) * d + j2` of `pair_start` (see [`ItemIndex::pair_posting`]).
    pair_start: Vec<usize>,
    pair_items: Vec<u32>,
}

/// Index of the codebook pair `(r1, r2)`, `r1 < r2 < m`, among the `m (m - 1) / 2` pairs in lexicographic order.
fn pair_of(r1: usize, r2: usize, m: usize) -> usize {
    r1 * (2 * m - r1 - 1) / 2 + (r2 - r1 - 1)
}

/// Posting lists in one buffer: `keys(item)` lists the keys (below `n_keys`) item `item` belongs to; returns
/// the start offsets (`n_keys + 1`) and the items, increasing within each key.
fn postings<I: Iterator<Item = usize>>(
    n: usize,
    n_keys: usize,
    keys: impl Fn(usize) -> I,
) -> (Vec<usize>, Vec<u32>) {
    let mut start = vec![0usize; n_keys + 1];
    for item in 0..n {
        for k in keys(item) {
            start[k + 1] += 1;
        }
    }
    for k in 0..n_keys {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut items = vec![0u32; start[n_keys]];
    for item in 0..n {
        for k in keys(item) {
            items[fill[k]] = item as u32;
            fill[k] += 1;
        }
    }
    (start, items)
}

impl ItemIndex {
    /// Builds the index; two items with the same tuple are an error (resolve collisions first).
    pub fn new(codes: &Codes) -> Result<Self> {
        codes.validate()?;
        let (m, d, n) = (codes.m, codes.d, codes.n_items());
        if n > u32::MAX as usize {
            return Err(TokenizerError::Codes(format!("{n} items do not fit u32")));
        }
        let mut by_tuple: Vec<u32> = (0..n as u32).collect();
        by_tuple.sort_unstable_by(|&a, &b| {
            codes
                .tuple(a as usize)
                .cmp(codes.tuple(b as usize))
                .then(a.cmp(&b))
        });
        if let Some(w) = by_tuple
            .windows(2)
            .find(|w| codes.tuple(w[0] as usize) == codes.tuple(w[1] as usize))
        {
            return Err(TokenizerError::Codes(format!(
                "items {} and {} share the tuple {:?}; resolve collisions before indexing",
                w[0],
                w[1],
                codes.tuple(w[0] as usize)
            )));
        }
        let (posting_start, posting_items) = postings(n, m * d, |item| {
            codes
                .tuple(item)
                .iter()
                .enumerate()
                .map(move |(r, &c)| r * d + c as usize)
        });
        let used_tokens = (0..m * d)
            .filter(|&t| posting_start[t + 1] > posting_start[t])
            .map(|t| Token::new((t / d) as u16, (t % d) as u16))
            .collect();
        let n_pairs = m * (m - 1) / 2;
        let (pair_start, pair_items) = postings(n, n_pairs * d * d, |item| {
            let t = codes.tuple(item);
            (0..m).flat_map(move |r1| {
                (r1 + 1..m)
                    .map(move |r2| (pair_of(r1, r2, m) * d + t[r1] as usize) * d + t[r2] as usize)
            })
        });
        Ok(ItemIndex {
            codes: codes.clone(),
            by_tuple,
            used_tokens,
            posting_start,
            posting_items,
            pair_start,
            pair_items,
        })
    }

    /// The items having token id `t = codebook * d + code`, in increasing order (empty outside the vocabulary).
    pub fn posting(&self, t: usize) -> &[u32] {
        match (self.posting_start.get(t), self.posting_start.get(t + 1)) {
            (Some(&a), Some(&b)) => &self.posting_items[a..b],
            _ => &[],
        }
    }

    /// The items having both token ids `a` and `b` (any order), in increasing order; empty when they are of the
    /// same codebook or outside the vocabulary.
    pub fn pair_posting(&self, a: usize, b: usize) -> &[u32] {
        let (m, d) = (self.codes.m, self.codes.d);
        let (lo, hi) = (a.min(b), a.max(b));
        let (r1, r2) = (lo / d, hi / d);
        if r1 == r2 || r2 >= m {
            return &[];
        }
        let key = (pair_of(r1, r2, m) * d + lo % d) * d + hi % d;
        &self.pair_items[self.pair_start[key]..self.pair_start[key + 1]]
    }

    /// Bytes the index holds (codes, posting lists, pair lists, the tuple order), for capacity planning.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.codes.tuples.len() * size_of::<u16>()
            + self.by_tuple.len() * size_of::<u32>()
            + self.used_tokens.len() * size_of::<Token>()
            + (self.posting_start.len() + self.pair_start.len()) * size_of::<usize>()
            + (self.posting_items.len() + self.pair_items.len()) * size_of::<u32>()
    }

    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    pub fn n_items(&self) -> usize {
        self.codes.n_items()
    }

    /// The item with exactly this tuple (codebook order), if any.
    pub fn item_of(&self, tuple: &[u16]) -> Option<u32> {
        self.by_tuple
            .binary_search_by(|&i| self.codes.tuple(i as usize).cmp(tuple))
            .ok()
            .map(|at| self.by_tuple[at])
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

    /// The items having every token of `partial`, in increasing order: the shortest pair (or single-token)
    /// posting list among `partial`'s tokens, filtered by the rest.
    pub fn reachable(&self, partial: &[Token]) -> Vec<u32> {
        let (m, d) = (self.codes.m, self.codes.d);
        if partial
            .iter()
            .any(|t| t.codebook as usize >= m || t.code as usize >= d)
        {
            return Vec::new();
        }
        let ids: Vec<usize> = partial.iter().map(|t| t.id(d)).collect();
        let base: &[u32] = match ids.as_slice() {
            [] => return (0..self.n_items() as u32).collect(),
            [a] => self.posting(*a),
            _ => {
                let mut best: Option<&[u32]> = None;
                for (i, &a) in ids.iter().enumerate() {
                    for &b in &ids[i + 1..] {
                        let list = if a == b {
                            self.posting(a)
                        } else {
                            self.pair_posting(a, b)
                        };
                        if best.is_none_or(|x| list.len() < x.len()) {
                            best = Some(list);
                        }
                    }
                }
                best.unwrap_or(&[])
            }
        };
        base.iter()
            .copied()
            .filter(|&it| {
                let tuple = self.codes.tuple(it as usize);
                partial.iter().all(|t| tuple[t.codebook as usize] == t.code)
            })
            .collect()
    }

    /// Whether `partial` plus `next` can still be completed to an item.
    pub fn can_extend(&self, partial: &[Token], next: Token) -> bool {
        let mut with = partial.to_vec();
        with.push(next);
        !self.reachable(&with).is_empty()
    }

    /// Every token of a codebook not used by `partial` that keeps `partial` completable, sorted by
    /// (codebook, code). Cost: one pass over the reachable items (for a single token, over the pair lists'
    /// offsets instead).
    pub fn valid_next_tokens(&self, partial: &[Token]) -> Vec<Token> {
        let (m, d) = (self.codes.m, self.codes.d);
        let mut used = vec![false; m];
        for t in partial {
            if let Some(u) = used.get_mut(t.codebook as usize) {
                *u = true;
            }
        }
        let token = |k: usize| Token::new((k / d) as u16, (k % d) as u16);
        match partial {
            [] => return self.used_tokens.clone(),
            [a] if (a.codebook as usize) < m && (a.code as usize) < d => {
                return (0..m * d)
                    .filter(|&k| !used[k / d] && !self.pair_posting(a.id(d), k).is_empty())
                    .map(token)
                    .collect();
            }
            _ => {}
        }
        let mut seen = vec![false; m * d];
        for item in self.reachable(partial) {
            for (r, &c) in self.codes.tuple(item as usize).iter().enumerate() {
                if !used[r] {
                    seen[r * d + c as usize] = true;
                }
            }
        }
        (0..m * d).filter(|&k| seen[k]).map(token).collect()
    }

    /// The codes of `codebook` that keep `partial` completable (ordered decoding: the next level), sorted.
    pub fn valid_next_codes(&self, partial: &[Token], codebook: u16) -> Vec<u16> {
        self.valid_next_tokens(partial)
            .into_iter()
            .filter(|t| t.codebook == codebook)
            .map(|t| t.code)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::small;
    use proptest::prelude::*;

    #[test]
    fn items_sharing_a_tuple_are_refused() {
        let dup = Codes::new(2, 3, false, vec![0, 1, 0, 1, 0, 1, 2, 0]).unwrap();
        assert!(ItemIndex::new(&dup)
            .unwrap_err()
            .to_string()
            .contains("share"));
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
                    prop_assert!(ix.reachable(&sub).contains(&(item as u32)));
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
                    // a pair list holds exactly the items having both tokens
                    for &a in &partial {
                        if a.codebook != r && (a.codebook as usize) < codes.m && (a.code as usize) < codes.d {
                            let want: Vec<u32> = (0..n as u32).filter(|&i| {
                                let toks = codes.tokens(i as usize);
                                toks.contains(&a) && toks.contains(&next)
                            }).collect();
                            prop_assert_eq!(ix.pair_posting(a.id(codes.d), next.id(codes.d)), want.as_slice());
                            prop_assert_eq!(ix.pair_posting(next.id(codes.d), a.id(codes.d)), want.as_slice());
                        }
                    }
                }
            }
        }
    }
}
