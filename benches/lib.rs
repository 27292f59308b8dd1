//! Criterion benches of reg4rec live in `benches/benches/`; run them with `cargo xtask bench`. This library holds
//! what they share: [`per_example`], the replaced per-example layout kept for the layout comparison, and
//! [`distinct_codes`], the synthetic catalogs, and [`report`], what the growth-curve examples share.

pub mod per_example;
pub mod report;

use reg4rec_tokenizer::Codes;

/// `n` items with distinct tuples over `m` codebooks of `d` codes: each attempt draws the `m` codes of one tuple
/// from `code` in codebook order, and a tuple already taken is drawn again.
pub fn distinct_codes(n: usize, m: usize, d: usize, mut code: impl FnMut() -> u16) -> Codes {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut tuples = Vec::with_capacity(n * m);
    while seen.len() < n {
        let t: Vec<u16> = (0..m).map(|_| code()).collect();
        if seen.insert(t.clone()) {
            tuples.extend(t);
        }
    }
    Codes::new(m, d, false, tuples).expect("distinct synthetic codes")
}
