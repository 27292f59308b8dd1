//! Leave-one-out protocol: per user the last item is the test target, the second-to-last the validation target,
//! everything before it is training. Every prefix of a user's training part is a training example.

use crate::dataset::Dataset;
use serde::{Deserialize, Serialize};

/// Which held-out target to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Valid,
    Test,
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "valid" | "validation" => Ok(Stage::Valid),
            "test" => Ok(Stage::Test),
            other => Err(format!("unknown split `{other}` (expected valid or test)")),
        }
    }
}

/// A leave-one-out split of a dataset's users that have at least 3 items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveOneOut {
    /// Dense user index (into `Dataset::sequences`) of each kept user.
    pub users: Vec<u32>,
    /// Per kept user: the training part (all but the last two items).
    pub train: Vec<Vec<u32>>,
    /// Per kept user: the validation target.
    pub valid: Vec<u32>,
    /// Per kept user: the test target.
    pub test: Vec<u32>,
    /// Users dropped because they had fewer than 3 items.
    pub dropped_users: usize,
}

/// One training example: the target is `train[user][end]`, the history is the (truncated) prefix before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Index into the split's kept users.
    pub user: u32,
    /// Position of the target inside that user's training part (>= 1).
    pub end: u32,
}

impl LeaveOneOut {
    /// Splits every user; users with fewer than 3 items are dropped and counted.
    pub fn new(ds: &Dataset) -> Self {
        let mut out = LeaveOneOut {
            users: Vec::new(),
            train: Vec::new(),
            valid: Vec::new(),
            test: Vec::new(),
            dropped_users: 0,
        };
        for (u, seq) in ds.sequences.iter().enumerate() {
            let n = seq.len();
            if n < 3 {
                out.dropped_users += 1;
                continue;
            }
            out.users.push(u as u32);
            out.train.push(seq[..n - 2].to_vec());
            out.valid.push(seq[n - 2]);
            out.test.push(seq[n - 1]);
        }
        out
    }

    /// Number of evaluated users.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// A seeded subset of `n` users (all of them when `n` is 0 or at least [`Self::n_users`]), in their
    /// original order: validation on a sample of users (checkpoint selection) without the bias of taking the
    /// first users of the file. The same `(n, seed)` always picks the same users.
    pub fn subset(&self, n: usize, seed: u64) -> LeaveOneOut {
        if n == 0 || n >= self.n_users() {
            return self.clone();
        }
        // A multiplicative-hash order is deterministic and spreads over the users.
        let mut order: Vec<usize> = (0..self.n_users()).collect();
        order.sort_by_key(|&u| (u as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.truncate(n);
        order.sort_unstable();
        LeaveOneOut {
            users: order.iter().map(|&u| self.users[u]).collect(),
            train: order.iter().map(|&u| self.train[u].clone()).collect(),
            valid: order.iter().map(|&u| self.valid[u]).collect(),
            test: order.iter().map(|&u| self.test[u]).collect(),
            dropped_users: self.dropped_users,
        }
    }

    /// The evaluation history of user `u` (kept-user index) for `stage`, most recent `max_len` items:
    /// training part for validation, training part plus the validation target for test.
    pub fn history(&self, u: usize, stage: Stage, max_len: usize) -> Vec<u32> {
        let mut h: Vec<u32> = self.train[u].clone();
        if stage == Stage::Test {
            h.push(self.valid[u]);
        }
        truncate_front(&h, max_len).to_vec()
    }

    /// The held-out target of user `u` for `stage`.
    pub fn target(&self, u: usize, stage: Stage) -> u32 {
        match stage {
            Stage::Valid => self.valid[u],
            Stage::Test => self.test[u],
        }
    }

    /// Every training example: for each user, each position `end >= 1` of the training part.
    pub fn training_examples(&self) -> Vec<Example> {
        self.recent_training_examples(0)
    }

    /// The most recent `max_per_user` training examples of every user (all of them when 0): long histories
    /// (MovieLens users average over 100 items) otherwise dominate an epoch with near-duplicate prefixes.
    pub fn recent_training_examples(&self, max_per_user: usize) -> Vec<Example> {
        let mut ex = Vec::new();
        for (u, seq) in self.train.iter().enumerate() {
            let first = match max_per_user {
                0 => 1,
                k => seq.len().saturating_sub(k).max(1),
            };
            for end in first..seq.len() {
                ex.push(Example {
                    user: u as u32,
                    end: end as u32,
                });
            }
        }
        ex
    }

    /// History of a training example (the items before its target, most recent `max_len`) and its target.
    pub fn example(&self, e: Example, max_len: usize) -> (&[u32], u32) {
        let seq = &self.train[e.user as usize];
        let end = e.end as usize;
        (truncate_front(&seq[..end], max_len), seq[end])
    }

    /// Training interactions only (what features and rewards may use): per kept user, the training part.
    pub fn train_sequences(&self) -> &[Vec<u32>] {
        &self.train
    }
}

/// The last `max_len` elements of `s`.
pub fn truncate_front(s: &[u32], max_len: usize) -> &[u32] {
    &s[s.len().saturating_sub(max_len)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(seqs: Vec<Vec<u32>>) -> Dataset {
        let n_items = seqs.iter().flatten().max().map_or(0, |m| *m as usize + 1);
        Dataset {
            name: "t".into(),
            user_ids: (0..seqs.len()).map(|u| u.to_string()).collect(),
            sequences: seqs,
            item_ids: (0..n_items).map(|i| i.to_string()).collect(),
            item_category: vec![0; n_items],
            category_names: vec!["all".into()],
            item_attributes: vec![vec![]; n_items],
            item_names: Vec::new(),
        }
    }

    #[test]
    fn leave_one_out_holds_out_last_two_and_drops_short_users() {
        let d = ds(vec![vec![0, 1, 2, 3, 4], vec![5, 6], vec![1, 2, 3]]);
        let s = LeaveOneOut::new(&d);
        assert_eq!(s.dropped_users, 1);
        assert_eq!(s.users, vec![0, 2]);
        assert_eq!(s.train[0], vec![0, 1, 2]);
        assert_eq!((s.valid[0], s.test[0]), (3, 4));
        assert_eq!(s.history(0, Stage::Valid, 50), vec![0, 1, 2]);
        assert_eq!(s.history(0, Stage::Test, 2), vec![2, 3]);
        assert_eq!(s.train[1], vec![1]);
    }

    #[test]
    fn a_subset_is_seeded_spread_and_keeps_each_users_parts_together() {
        // User u's sequence is 10u, 10u + 1, ..., so every part names its user.
        let d = ds((0..100)
            .map(|u| (0..4).map(|t| 10 * u + t).collect())
            .collect());
        let s = LeaveOneOut::new(&d);
        let a = s.subset(20, 42);
        assert_eq!(a.n_users(), 20);
        assert_eq!(
            a.users,
            s.subset(20, 42).users,
            "the same seed picks the same users"
        );
        assert_ne!(a.users, s.subset(20, 7).users, "another seed picks others");
        assert!(a.users.windows(2).all(|w| w[0] < w[1]), "original order");
        assert!(
            a.users.iter().any(|&u| u >= 50),
            "not the first users: {:?}",
            a.users
        );
        for (i, &u) in a.users.iter().enumerate() {
            assert_eq!(a.train[i], vec![10 * u, 10 * u + 1]);
            assert_eq!((a.valid[i], a.test[i]), (10 * u + 2, 10 * u + 3));
        }
        assert_eq!(s.subset(0, 42).users, s.users, "0 = every user");
        assert_eq!(s.subset(500, 42).users, s.users);
    }

    #[test]
    fn recent_examples_are_the_last_positions_of_each_user() {
        let d = ds(vec![vec![0, 1, 2, 3, 4, 5, 6, 7], vec![1, 2, 3, 4]]);
        let s = LeaveOneOut::new(&d);
        let ends: Vec<(u32, u32)> = s
            .recent_training_examples(2)
            .iter()
            .map(|e| (e.user, e.end))
            .collect();
        assert_eq!(ends, vec![(0, 4), (0, 5), (1, 1)]);
        assert_eq!(s.recent_training_examples(0), s.training_examples());
        assert_eq!(s.training_examples().len(), 5 + 1);
    }

    #[test]
    fn training_examples_never_contain_held_out_items() {
        let d = ds(vec![vec![0, 1, 2, 3, 4, 5]]);
        let s = LeaveOneOut::new(&d);
        let ex = s.training_examples();
        assert_eq!(ex.len(), 3);
        for e in ex {
            let (h, t) = s.example(e, 2);
            assert!(h.len() <= 2 && !h.is_empty());
            assert!(t != 4 && t != 5);
            assert!(!h.contains(&4) && !h.contains(&5));
        }
    }
}
