//! Collision resolution: every item must end with a distinct token tuple (spec section 2).
//!
//! Rule (deterministic, no randomness): items sharing a tuple form a group; the item whose codewords are closest
//! to its own codebook inputs (smallest summed squared distance, ties to the lower index) keeps the tuple. Every
//! other item, in increasing item order, moves ONE codebook to a code whose resulting tuple is unused; among all
//! (codebook, code) moves it takes the one with the smallest increase in squared distance - i.e. the nearest free
//! code in its least-confident codebook (the codebook whose best and next codes are closest). Should no single
//! move be free (only when the tuple space is nearly full), the cheapest free two-codebook move is taken.

use crate::codes::Codes;
use crate::error::{Result, TokenizerError};
use std::collections::{HashMap, HashSet};

/// Collision resolution outcome.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Distinct tuples.
    pub codes: Codes,
    /// [`Codes::collision_rate`] of the nearest-code tuples.
    pub rate_before: f64,
    /// [`Codes::collision_rate`] after resolution (0 on success).
    pub rate_after: f64,
    /// Items that were moved.
    pub moved: Vec<u32>,
}

/// Resolves collisions of `codes` given `dists`, the squared distance of each item's codebook input to each
/// code: row-major `[n_items, m, d]`.
pub fn resolve(codes: &Codes, dists: &[f32]) -> Result<Resolution> {
    codes.validate()?;
    let (m, d, n) = (codes.m, codes.d, codes.n_items());
    if dists.len() != n * m * d {
        return Err(TokenizerError::Collision(format!(
            "distance table has {} values, expected n_items x m x d = {n} x {m} x {d}",
            dists.len()
        )));
    }
    if (d as f64).powi(m as i32) < n as f64 {
        return Err(TokenizerError::Collision(format!(
            "{n} items cannot have distinct tuples over {m} codebooks of {d} codes"
        )));
    }
    let dist = |i: usize, r: usize, j: usize| dists[(i * m + r) * d + j];
    let own_cost = |i: usize| -> f64 {
        codes
            .tuple(i)
            .iter()
            .enumerate()
            .map(|(r, &c)| dist(i, r, c as usize) as f64)
            .sum()
    };

    let rate_before = codes.collision_rate();
    let mut groups: HashMap<&[u16], Vec<usize>> = HashMap::new();
    for i in 0..n {
        groups.entry(codes.tuple(i)).or_default().push(i);
    }
    let mut movers = Vec::new();
    for members in groups.values().filter(|g| g.len() > 1) {
        let keeper = *members
            .iter()
            .min_by(|&&a, &&b| own_cost(a).total_cmp(&own_cost(b)).then(a.cmp(&b)))
            .unwrap_or(&members[0]);
        movers.extend(members.iter().copied().filter(|&i| i != keeper));
    }
    movers.sort_unstable();
    let mut used: HashSet<Vec<u16>> = groups.keys().map(|t| t.to_vec()).collect();
    drop(groups);

    let mut tuples = codes.tuples.clone();
    for &i in &movers {
        let cur: Vec<u16> = tuples[i * m..(i + 1) * m].to_vec();
        let new = cheapest_single_move(&cur, i, d, &dist, &used)
            .or_else(|| cheapest_double_move(&cur, i, d, &dist, &used))
            .ok_or_else(|| {
                TokenizerError::Collision(format!(
                    "item {i}: no free tuple within two codebook moves of {cur:?}"
                ))
            })?;
        tuples[i * m..(i + 1) * m].copy_from_slice(&new);
        used.insert(new);
    }
    let codes = Codes::new(m, d, codes.ordered, tuples)?;
    let rate_after = codes.collision_rate();
    Ok(Resolution {
        codes,
        rate_before,
        rate_after,
        moved: movers.into_iter().map(|i| i as u32).collect(),
    })
}

/// Tuples for items added to an existing catalog: new item i (in order) keeps its nearest-code tuple when no
/// existing item and no earlier new item has it, else it takes the cheapest free move of [`resolve`]'s rule
/// (one codebook, then two). Existing items never move. `new_dists`: `[n_new, m, d]` as in [`resolve`].
pub fn resolve_against(existing: &Codes, new: &Codes, new_dists: &[f32]) -> Result<Codes> {
    existing.validate()?;
    new.validate()?;
    let (m, d, n) = (new.m, new.d, new.n_items());
    if (existing.m, existing.d, existing.ordered) != (m, d, new.ordered) {
        return Err(TokenizerError::Collision(format!(
            "new codes have m = {m}, d = {d}, the catalog's m = {}, d = {}",
            existing.m, existing.d
        )));
    }
    if new_dists.len() != n * m * d {
        return Err(TokenizerError::Collision(format!(
            "distance table has {} values, expected n_new x m x d = {n} x {m} x {d}",
            new_dists.len()
        )));
    }
    let dist = |i: usize, r: usize, j: usize| new_dists[(i * m + r) * d + j];
    let mut used: HashSet<Vec<u16>> = (0..existing.n_items())
        .map(|i| existing.tuple(i).to_vec())
        .collect();
    let mut tuples = Vec::with_capacity(n * m);
    for i in 0..n {
        let cur = new.tuple(i).to_vec();
        let t = if used.contains(&cur) {
            cheapest_single_move(&cur, i, d, &dist, &used)
                .or_else(|| cheapest_double_move(&cur, i, d, &dist, &used))
                .ok_or_else(|| {
                    TokenizerError::Collision(format!(
                        "new item {i}: no free tuple within two codebook moves of {cur:?}"
                    ))
                })?
        } else {
            cur
        };
        tuples.extend_from_slice(&t);
        used.insert(t);
    }
    Codes::new(m, d, new.ordered, tuples)
}

fn cheapest_single_move(
    cur: &[u16],
    i: usize,
    d: usize,
    dist: &impl Fn(usize, usize, usize) -> f32,
    used: &HashSet<Vec<u16>>,
) -> Option<Vec<u16>> {
    let mut best: Option<(f32, usize, u16)> = None;
    let mut cand = cur.to_vec();
    for (r, &c) in cur.iter().enumerate() {
        let base = dist(i, r, c as usize);
        let mut order: Vec<u16> = (0..d as u16).filter(|&j| j != c).collect();
        order.sort_by(|&a, &b| {
            dist(i, r, a as usize)
                .total_cmp(&dist(i, r, b as usize))
                .then(a.cmp(&b))
        });
        for j in order {
            cand[r] = j;
            if !used.contains(&cand) {
                let cost = dist(i, r, j as usize) - base;
                if best.is_none_or(|(bc, _, _)| cost < bc) {
                    best = Some((cost, r, j));
                }
                break;
            }
        }
        cand[r] = c;
    }
    best.map(|(_, r, j)| {
        let mut t = cur.to_vec();
        t[r] = j;
        t
    })
}

fn cheapest_double_move(
    cur: &[u16],
    i: usize,
    d: usize,
    dist: &impl Fn(usize, usize, usize) -> f32,
    used: &HashSet<Vec<u16>>,
) -> Option<Vec<u16>> {
    let m = cur.len();
    let mut best: Option<(f32, Vec<u16>)> = None;
    let mut cand = cur.to_vec();
    for r1 in 0..m {
        for r2 in r1 + 1..m {
            let base = dist(i, r1, cur[r1] as usize) + dist(i, r2, cur[r2] as usize);
            for j1 in 0..d as u16 {
                for j2 in 0..d as u16 {
                    if j1 == cur[r1] || j2 == cur[r2] {
                        continue;
                    }
                    cand[r1] = j1;
                    cand[r2] = j2;
                    let cost = dist(i, r1, j1 as usize) + dist(i, r2, j2 as usize) - base;
                    if best.as_ref().is_none_or(|(bc, _)| cost < *bc) && !used.contains(&cand) {
                        best = Some((cost, cand.clone()));
                    }
                }
            }
            cand[r1] = cur[r1];
            cand[r2] = cur[r2];
        }
    }
    best.map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_items_never_take_an_existing_tuple_and_existing_items_stay() {
        // m = 2, d = 3; existing items hold (0,0) and (1,1).
        let existing = Codes::new(2, 3, false, vec![0, 0, 1, 1]).unwrap();
        // New items: nearest (0,0) (taken: moves its less confident codebook), then (2,2) (free), then (2,2)
        // again (taken by the previous new item).
        let new = Codes::new(2, 3, false, vec![0, 0, 2, 2, 2, 2]).unwrap();
        #[rustfmt::skip]
        let dists = vec![
            0.0, 5.0, 9.0,   0.0, 1.0, 9.0, // item 0: codebook 1's next code (1) is the cheaper move
            9.0, 9.0, 0.0,   9.0, 9.0, 0.0,
            3.0, 9.0, 0.0,   9.0, 9.0, 0.0, // item 2: codebook 0's code 0 is the cheaper move
        ];
        let out = resolve_against(&existing, &new, &dists).unwrap();
        assert_eq!(out.tuples, vec![0, 1, 2, 2, 0, 2]);
        let e = resolve_against(&existing, &new, &dists[..3]).unwrap_err();
        assert!(e.to_string().contains("distance table"));
    }

    #[test]
    fn colliding_item_moves_its_least_confident_codebook() {
        // 3 items, m = 2, d = 3. Items 0 and 1 both pick (0, 0); item 2 holds (1, 0).
        let codes = Codes::new(2, 3, false, vec![0, 0, 0, 0, 1, 0]).unwrap();
        #[rustfmt::skip]
        let dists = vec![
            // item 0: very sure of both codes -> keeps (0, 0)
            0.0, 5.0, 5.0,   0.0, 5.0, 5.0,
            // item 1: codebook 0 next code 1 costs +0.2 (but (1, 0) is taken), codebook 1 next code 2 costs +0.5
            0.1, 0.3, 0.9,   0.1, 0.9, 0.6,
            // item 2
            5.0, 0.0, 5.0,   0.0, 5.0, 5.0,
        ];
        let r = resolve(&codes, &dists).unwrap();
        assert_eq!(r.rate_before, 1.0 / 3.0);
        assert_eq!(r.rate_after, 0.0);
        assert_eq!(r.moved, vec![1]);
        // (1, 0) is used, so codebook 0's nearest free is code 2 (+0.8); codebook 1's is code 2 (+0.5): take it.
        assert_eq!(r.codes.tuple(1), &[0, 2]);
        assert_eq!(r.codes.tuple(0), &[0, 0]);
        assert_eq!(r.codes.tuple(2), &[1, 0]);
    }

    #[test]
    fn closer_item_keeps_the_tuple_and_result_is_deterministic() {
        let codes = Codes::new(1, 4, true, vec![2, 2, 2]).unwrap();
        let dists = vec![
            1.0, 1.0, 0.5, 1.0, //
            1.0, 0.0, 0.1, 3.0, //
            0.2, 0.0, 0.3, 3.0,
        ];
        let a = resolve(&codes, &dists).unwrap();
        let b = resolve(&codes, &dists).unwrap();
        assert_eq!(a.codes, b.codes);
        // item 1 is closest to code 2 and keeps it; item 0 then takes its nearest free (0: tie with 1 and 3 ->
        // lowest code), item 2 takes code 1.
        assert_eq!(a.codes.tuples, vec![0, 2, 1]);
        assert_eq!(a.moved, vec![0, 2]);
    }

    #[test]
    fn full_space_needs_a_double_move_or_fails() {
        // m = 2, d = 2: 4 tuples. Items use (0,0) x2, (0,1), (1,0): the only free tuple is (1,1), two moves away.
        let codes = Codes::new(2, 2, false, vec![0, 0, 0, 0, 0, 1, 1, 0]).unwrap();
        let dists = vec![0.0; 4 * 2 * 2];
        let r = resolve(&codes, &dists).unwrap();
        assert_eq!(r.rate_after, 0.0);
        assert_eq!(r.codes.tuple(1), &[1, 1]);
        let too_many = Codes::new(1, 2, false, vec![0, 0, 0]).unwrap();
        assert!(resolve(&too_many, &[0.0; 6]).is_err());
        assert!(resolve(&codes, &[0.0; 3]).is_err());
    }
}
