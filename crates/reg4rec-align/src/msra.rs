//! MSRA, multi-step reward augmentation (spec section 4, figure 2 top right): a path is rewarded not only
//! against the target item but also against the next items of the user's sequence, with a time decay: the n-th
//! item of the window (n = 1 is the target) weighs `w^(n-1)`, `n = 1..=h`.
//!
//! The window is cut from the user's TRAINING part only (`LeaveOneOut::train`), so it never reaches the
//! validation or test items: for the last training position the window is the target alone. `h = 1` turns
//! MSRA off. The step-consistency reward does not depend on the target, so it is counted once (weight 1), not
//! once per window item.

use crate::rewards::{consistency_of, target_rewards, RewardBreakdown, RewardRule, ScoredPath};
use reg4rec_data::split::{Example, LeaveOneOut};
use reg4rec_tokenizer::Codes;

/// One rewarded item of a window and its weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowItem {
    pub item: u32,
    pub weight: f64,
}

/// The window of a target at position `end` of a training sequence: `train[end..end + h]` (cut at the end of
/// the training part) with weights `w^(n-1)`.
pub fn window(train: &[u32], end: usize, h: usize, w: f64) -> Vec<WindowItem> {
    let stop = end.saturating_add(h).min(train.len());
    train
        .get(end..stop)
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(n, &item)| WindowItem {
            item,
            weight: w.powi(n as i32),
        })
        .collect()
}

/// The window of a training example of `split` (its target and the following training items).
pub fn example_window(split: &LeaveOneOut, e: Example, h: usize, w: f64) -> Vec<WindowItem> {
    split
        .train
        .get(e.user as usize)
        .map_or_else(Vec::new, |seq| window(seq, e.end as usize, h, w))
}

/// The rewards of one window item's point of view, and the MSRA sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowRewards {
    /// `sum_n w^(n-1) * rewards(path, item_n)` plus the step-consistency once: what the policy is trained on.
    pub total: RewardBreakdown,
    /// The rewards against the target alone (n = 1), step-consistency included: what is logged as "target".
    pub target: RewardBreakdown,
}

/// Scores `path` against every item of `window` (item tokens from `codes`, categories from `item_category`).
pub fn window_rewards(
    path: &ScoredPath<'_>,
    window: &[WindowItem],
    codes: &Codes,
    item_category: &[u32],
    rule: RewardRule,
) -> WindowRewards {
    let consistency = consistency_of(path, rule);
    let mut out = WindowRewards {
        total: consistency,
        target: consistency,
    };
    for (n, wi) in window.iter().enumerate() {
        let i = wi.item as usize;
        if i >= codes.n_items() {
            continue;
        }
        let cat = item_category.get(i).copied().unwrap_or(u32::MAX);
        let r = target_rewards(path, &codes.tokens(i), cat);
        out.total.add_scaled(&r, wi.weight);
        if n == 0 {
            out.target.add_scaled(&r, 1.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Consistency;
    use reg4rec_data::Dataset;
    use reg4rec_tokenizer::Token;

    #[test]
    fn window_weights_decay_and_stop_at_the_training_end() {
        let train = [10, 11, 12, 13, 14];
        let w = window(&train, 1, 3, 0.8);
        assert_eq!(
            w.iter().map(|x| x.item).collect::<Vec<_>>(),
            vec![11, 12, 13]
        );
        let weights: Vec<f64> = w.iter().map(|x| x.weight).collect();
        assert!((weights[0] - 1.0).abs() < 1e-12 && (weights[1] - 0.8).abs() < 1e-12);
        assert!((weights[2] - 0.64).abs() < 1e-12);
        assert_eq!(
            window(&train, 4, 3, 0.8).len(),
            1,
            "last training target: the target alone"
        );
        assert_eq!(window(&train, 3, 1, 0.8).len(), 1, "h = 1 is MSRA off");
        assert!(window(&train, 9, 3, 0.8).is_empty());
    }

    /// Users whose held-out items are unique ids never seen in training: no window of any training example may
    /// contain one, and every window item comes from the user's training part at or after the target.
    #[test]
    fn windows_never_reach_validation_or_test_items() {
        let n_users = 6;
        let mut sequences = Vec::new();
        for u in 0..n_users {
            let len = 3 + u * 2; // 3..=13 items, the shortest has a single-item training part
            let mut s: Vec<u32> = (0..len as u32 - 2)
                .map(|t| (u as u32 * 7 + t) % 50)
                .collect();
            s.push(100 + 2 * u as u32); // validation target
            s.push(101 + 2 * u as u32); // test target
            sequences.push(s);
        }
        let n_items = 120;
        let ds = Dataset {
            name: "leak".into(),
            user_ids: (0..n_users).map(|u| u.to_string()).collect(),
            sequences,
            item_ids: (0..n_items).map(|i| i.to_string()).collect(),
            item_category: vec![0; n_items],
            category_names: vec!["all".into()],
            item_attributes: vec![vec![]; n_items],
            item_names: Vec::new(),
        };
        let split = LeaveOneOut::new(&ds);
        let held_out: Vec<u32> = split.valid.iter().chain(&split.test).copied().collect();
        let mut checked = 0;
        for h in [1, 3, 8, 100] {
            for e in split.training_examples() {
                let win = example_window(&split, e, h, 0.8);
                let train = &split.train[e.user as usize];
                assert!(!win.is_empty() && win.len() <= h);
                assert_eq!(
                    win[0].item, train[e.end as usize],
                    "n = 1 is the example's target"
                );
                for (n, wi) in win.iter().enumerate() {
                    assert!(
                        !held_out.contains(&wi.item),
                        "user {} window reached held-out item {}",
                        e.user,
                        wi.item
                    );
                    assert_eq!(wi.item, train[e.end as usize + n]);
                    checked += 1;
                }
                if e.end as usize + 1 == train.len() {
                    assert_eq!(
                        win.len(),
                        1,
                        "the last training position must not look past the training part"
                    );
                }
            }
        }
        assert!(checked > 50);
    }

    #[test]
    fn window_rewards_add_decayed_future_items_and_count_consistency_once() {
        // Three items over 3 codebooks; the path generates item 1 exactly.
        let codes = Codes::new(3, 4, false, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]).unwrap();
        let tokens = [Token::new(0, 1), Token::new(1, 1), Token::new(2, 1)];
        let c0: Vec<f32> = vec![0.9, 0.1];
        let cats: [&[f32]; 3] = [&c0, &c0, &c0];
        let path = ScoredPath {
            tokens: &tokens,
            categories: &cats,
        };
        let rule = RewardRule {
            consistency: Consistency::Argmax,
            theta: 0.06,
        };
        let item_category = [1, 0, 0];
        let win = window(&[5, 0, 1, 2], 1, 3, 0.5); // target item 0, then items 1 and 2
        let r = window_rewards(&path, &win, &codes, &item_category, rule);
        // target (item 0, category 1): nothing hits; consistency 2
        assert_eq!(
            r.target,
            RewardBreakdown {
                step_hit: 0.0,
                global_path: 0.0,
                category_hit: 0.0,
                step_consistency: 2.0,
                long_tail: 0.0,
                item_head: 0.0,
            }
        );
        // + 0.5 * item 1 (3 hits, exact, category 0 at 3 steps) + 0.25 * item 2 (category 0 at 3 steps)
        assert_eq!(
            r.total,
            RewardBreakdown {
                step_hit: 1.5,
                global_path: 0.5,
                category_hit: 1.5 + 0.75,
                step_consistency: 2.0,
                long_tail: 0.0,
                item_head: 0.0,
            }
        );
    }
}
