//! The four PARS path rewards (spec section 4, figure 2 "Preference Alignment for Reasoning"). Pure Rust.
//!
//! A sampled path is M tokens in generation order (one per codebook) and, at each step, the category
//! distribution the model predicted there. Against a target item (its token set and its category):
//! - **step-hit**: number of generated tokens that are in the target's token set (0..=M);
//! - **global path**: 1 when the generated token set equals the target's set, else 0;
//! - **category-hit**: number of steps whose predicted (most likely) category is the target's (0..=M);
//! - **step-consistency**: number of adjacent step pairs whose category distributions agree (0..=M-1), by JS
//!   divergence at most theta or, as a switch, by equal argmax. It does not depend on the target.
//!
//! The path reward is the weighted sum ([`RewardWeights`]).
//!
//! A fifth reward carries a goal that cross-entropy on the log cannot express (weight 0 by default, so plain
//! PARS is unchanged): **long-tail**, 1 when the item the path completes is outside the most popular
//! `rewards.head_share` of the catalogue by training interactions ([`reg4rec_data::metrics::long_tail`]), else 0.
//! It does not depend on the target, so MSRA counts it once.

use crate::config::{Consistency, RewardWeights};
use reg4rec_infer::corp::js_divergence;
use reg4rec_tokenizer::Token;
use serde::{Deserialize, Serialize};

/// The four reward components of one path (or their weighted sums / means over paths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardBreakdown {
    pub step_hit: f64,
    pub global_path: f64,
    pub category_hit: f64,
    pub step_consistency: f64,
    /// The path's item is in the long tail (1) or the head (0).
    #[serde(default)]
    pub long_tail: f64,
    /// The teacher's share of the group for the path's item: the frozen reference's item head, its softmax
    /// over the items of the group (a group's shares sum to 1).
    #[serde(default)]
    pub item_head: f64,
}

impl RewardBreakdown {
    /// The weighted sum of the components.
    pub fn total(&self, w: &RewardWeights) -> f64 {
        w.step_hit * self.step_hit
            + w.global_path * self.global_path
            + w.category_hit * self.category_hit
            + w.step_consistency * self.step_consistency
            + w.long_tail * self.long_tail
            + w.item_head * self.item_head
    }

    /// `self + k * other`, component-wise.
    pub fn add_scaled(&mut self, other: &RewardBreakdown, k: f64) {
        self.step_hit += k * other.step_hit;
        self.global_path += k * other.global_path;
        self.category_hit += k * other.category_hit;
        self.step_consistency += k * other.step_consistency;
        self.long_tail += k * other.long_tail;
        self.item_head += k * other.item_head;
    }
}

/// The teacher reward of each path of groups of `group_size` (consecutive): the softmax within its group of
/// the teacher's log-probabilities `log_probs` of the paths' items.
pub fn group_shares(log_probs: &[f32], group_size: usize) -> Vec<RewardBreakdown> {
    let mut out = Vec::with_capacity(log_probs.len());
    for grp in log_probs.chunks(group_size.max(1)) {
        let max = grp
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
        let z: f64 = grp.iter().map(|&x| (f64::from(x) - max).exp()).sum();
        out.extend(grp.iter().map(|&x| RewardBreakdown {
            item_head: (f64::from(x) - max).exp() / z,
            ..RewardBreakdown::default()
        }));
    }
    out
}

/// Step-hit: generated tokens that belong to the target's token set.
pub fn step_hit(path: &[Token], target: &[Token]) -> f64 {
    path.iter().filter(|t| target.contains(t)).count() as f64
}

/// Global path: 1 when the generated token set is exactly the target's set (in any order).
pub fn global_path(path: &[Token], target: &[Token]) -> f64 {
    let same = path.len() == target.len()
        && path.iter().all(|t| target.contains(t))
        && target.iter().all(|t| path.contains(t));
    f64::from(u8::from(same))
}

/// Category-hit: steps whose predicted category equals the target's category.
pub fn category_hit(step_categories: &[u32], target_category: u32) -> f64 {
    step_categories
        .iter()
        .filter(|&&c| c == target_category)
        .count() as f64
}

/// Index of the largest probability (first on ties); `None` for an empty distribution.
pub fn argmax(p: &[f32]) -> Option<u32> {
    p.iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, &x)| match best {
            Some((_, b)) if b >= x => best,
            _ => Some((i, x)),
        })
        .map(|(i, _)| i as u32)
}

/// Step-consistency: adjacent step pairs whose category distributions agree under `rule` (`theta` is the JS
/// threshold of [`Consistency::Js`]; a NaN divergence never agrees).
pub fn step_consistency(dists: &[&[f32]], rule: Consistency, theta: f64) -> f64 {
    dists
        .windows(2)
        .filter(|pair| match rule {
            Consistency::Js => (js_divergence(pair[0], pair[1]) as f64) <= theta,
            Consistency::Argmax => argmax(pair[0]) == argmax(pair[1]),
        })
        .count() as f64
}

/// How to score paths: weights aside, the consistency rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardRule {
    pub consistency: Consistency,
    pub theta: f64,
}

/// One sampled path: tokens in generation order and the category distribution at each step.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPath<'a> {
    pub tokens: &'a [Token],
    /// One distribution per step (same length as `tokens`).
    pub categories: &'a [&'a [f32]],
}

/// The target-dependent rewards (step-hit, global path, category-hit) of `path` against one item; the
/// step-consistency component is 0 here (see [`consistency_of`]).
pub fn target_rewards(
    path: &ScoredPath<'_>,
    target: &[Token],
    target_category: u32,
) -> RewardBreakdown {
    let cats: Vec<u32> = path.categories.iter().filter_map(|p| argmax(p)).collect();
    RewardBreakdown {
        step_hit: step_hit(path.tokens, target),
        global_path: global_path(path.tokens, target),
        category_hit: category_hit(&cats, target_category),
        step_consistency: 0.0,
        long_tail: 0.0,
        item_head: 0.0,
    }
}

/// The long-tail component of a path whose item is `item`: 1 when `tail[item]` (the item is outside the
/// popular head), else 0 (also for an item `tail` does not cover).
pub fn long_tail_of(item: u32, tail: &[bool]) -> RewardBreakdown {
    RewardBreakdown {
        long_tail: f64::from(u8::from(tail.get(item as usize).copied().unwrap_or(false))),
        ..Default::default()
    }
}

/// The step-consistency component of `path` alone.
pub fn consistency_of(path: &ScoredPath<'_>, rule: RewardRule) -> RewardBreakdown {
    RewardBreakdown {
        step_consistency: step_consistency(path.categories, rule.consistency, rule.theta),
        ..Default::default()
    }
}

/// All four rewards of `path` against one target item.
pub fn path_rewards(
    path: &ScoredPath<'_>,
    target: &[Token],
    target_category: u32,
    rule: RewardRule,
) -> RewardBreakdown {
    let mut r = target_rewards(path, target, target_category);
    r.step_consistency = consistency_of(path, rule).step_consistency;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(codebook: u16, code: u16) -> Token {
        Token::new(codebook, code)
    }

    #[test]
    fn group_shares_are_the_teachers_softmax_within_each_group() {
        let ln = |p: f64| p.ln() as f32;
        let shares = group_shares(
            &[ln(0.2), ln(0.1), ln(0.1), ln(0.5), ln(0.5), ln(0.0001)],
            3,
        );
        let got: Vec<f64> = shares.iter().map(|r| r.item_head).collect();
        let want = [0.5, 0.25, 0.25, 0.5 / 1.0001, 0.5 / 1.0001, 0.0001 / 1.0001];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        let w = RewardWeights {
            item_head: 2.0,
            ..RewardWeights::default()
        };
        assert!((shares[0].total(&w) - 1.0).abs() < 1e-6);
        assert_eq!(shares[0].total(&RewardWeights::default()), 0.0);
    }

    /// The figure's target item: tokens {t0_1, t1_2, t2_3}, category c27.
    fn target() -> Vec<Token> {
        vec![t(0, 1), t(1, 2), t(2, 3)]
    }

    /// A distribution over 40 categories peaked (0.9) on `c`.
    fn peaked(c: usize) -> Vec<f32> {
        let mut p = vec![0.1 / 39.0; 40];
        p[c] = 0.9;
        p
    }

    #[test]
    fn step_hit_matches_the_figure() {
        assert_eq!(step_hit(&[t(0, 1), t(1, 20), t(2, 3)], &target()), 2.0);
        assert_eq!(step_hit(&[t(0, 10), t(1, 2), t(2, 30)], &target()), 1.0);
        // generation order does not matter, the codebook does: code 1 of codebook 1 is not t0_1
        assert_eq!(step_hit(&[t(2, 3), t(0, 1), t(1, 2)], &target()), 3.0);
        assert_eq!(step_hit(&[t(1, 1), t(0, 2), t(2, 4)], &target()), 0.0);
    }

    #[test]
    fn global_path_matches_the_figure() {
        assert_eq!(global_path(&[t(0, 1), t(1, 2), t(2, 3)], &target()), 1.0);
        assert_eq!(global_path(&[t(0, 20), t(1, 20), t(2, 20)], &target()), 0.0);
        assert_eq!(
            global_path(&[t(1, 2), t(2, 3), t(0, 1)], &target()),
            1.0,
            "any order"
        );
        assert_eq!(
            global_path(&[t(0, 1), t(1, 2), t(2, 4)], &target()),
            0.0,
            "two of three is not the item"
        );
        assert_eq!(
            global_path(&[t(0, 1), t(1, 2)], &target()),
            0.0,
            "incomplete path"
        );
    }

    #[test]
    fn category_hit_matches_the_figure() {
        assert_eq!(category_hit(&[30, 30, 27], 27), 1.0);
        assert_eq!(category_hit(&[27, 30, 27], 27), 2.0);
        assert_eq!(category_hit(&[12, 30, 30], 27), 0.0);
    }

    #[test]
    fn step_consistency_matches_the_figure_under_both_rules() {
        let (c30, c27) = (peaked(30), peaked(27));
        for rule in [Consistency::Js, Consistency::Argmax] {
            assert_eq!(
                step_consistency(&[&c30, &c30, &c30], rule, 0.06),
                2.0,
                "{rule:?}"
            );
            assert_eq!(
                step_consistency(&[&c27, &c30, &c30], rule, 0.06),
                1.0,
                "{rule:?}"
            );
            assert_eq!(
                step_consistency(&[&c27], rule, 0.06),
                0.0,
                "one step has no pair"
            );
        }
    }

    #[test]
    fn js_rule_uses_theta_and_argmax_rule_ignores_it() {
        // Same argmax, but different confidence: JS ~ 0.1 nats.
        let mut flat = vec![0.6f32 / 39.0; 40];
        flat[30] = 0.4;
        let sharp = peaked(30);
        let js = js_divergence(&flat, &sharp) as f64;
        assert!(js > 0.06 && js < 0.5, "{js}");
        assert_eq!(
            step_consistency(&[&flat, &sharp], Consistency::Js, 0.06),
            0.0
        );
        assert_eq!(
            step_consistency(&[&flat, &sharp], Consistency::Js, js + 1e-6),
            1.0
        );
        assert_eq!(
            step_consistency(&[&flat, &sharp], Consistency::Argmax, 0.0),
            1.0
        );
    }

    #[test]
    fn path_rewards_combine_and_weight_the_four_components() {
        let (c30, c27) = (peaked(30), peaked(27));
        let tokens = [t(0, 1), t(1, 20), t(2, 3)];
        let cats: [&[f32]; 3] = [&c27, &c30, &c27];
        let path = ScoredPath {
            tokens: &tokens,
            categories: &cats,
        };
        let rule = RewardRule {
            consistency: Consistency::Argmax,
            theta: 0.06,
        };
        let r = path_rewards(&path, &target(), 27, rule);
        assert_eq!(
            r,
            RewardBreakdown {
                step_hit: 2.0,
                global_path: 0.0,
                category_hit: 2.0,
                step_consistency: 0.0,
                long_tail: 0.0,
                item_head: 0.0,
            }
        );
        let mut w = RewardWeights {
            step_hit: 1.0,
            global_path: 2.0,
            category_hit: 0.5,
            step_consistency: 3.0,
            ..Default::default()
        };
        assert_eq!(r.total(&w), 3.0);
        // The long-tail reward: 1 for an item of the tail, 0 for the head or an item outside the table.
        let tail = [false, true, false];
        assert_eq!(long_tail_of(1, &tail).long_tail, 1.0);
        assert_eq!(long_tail_of(0, &tail).long_tail, 0.0);
        assert_eq!(long_tail_of(7, &tail).long_tail, 0.0);
        let mut with_tail = r;
        with_tail.add_scaled(&long_tail_of(1, &tail), 1.0);
        // Weight 0 (the default) gives plain PARS's total exactly; a weight adds it.
        assert_eq!(with_tail.total(&w), r.total(&w));
        w.long_tail = 1.5;
        assert_eq!(with_tail.total(&w), 4.5);
        let mut acc = RewardBreakdown::default();
        acc.add_scaled(&r, 0.5);
        assert_eq!(acc.step_hit, 1.0);
    }
}
