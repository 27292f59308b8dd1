//! The in-memory dataset every stage consumes: per-user chronological item sequences over dense item indices,
//! with the original ids kept for input and output, item categories, and item side information.

use serde::{Deserialize, Serialize};

/// A loaded dataset. Items are dense indices `0..n_items()`; users are dense indices `0..n_users()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    /// Registry name (or the user-supplied name of a custom dataset).
    pub name: String,
    /// Per user, items in chronological order (dense item indices).
    pub sequences: Vec<Vec<u32>>,
    /// Original user id of each dense user index.
    pub user_ids: Vec<String>,
    /// Original item id of each dense item index.
    pub item_ids: Vec<String>,
    /// Category index of each item (`0..category_names.len()`).
    pub item_category: Vec<u32>,
    /// Human-readable category names.
    pub category_names: Vec<String>,
    /// Side information per item: attribute tokens (brand, category path, genres, title words, ...) used by
    /// the TF-IDF part of the item features. May be empty for an item.
    pub item_attributes: Vec<Vec<String>>,
    /// Display names (titles) of the items, shown wherever an item is shown; never read by a model. Empty when
    /// the data ships none; otherwise one per item, an empty string for an item without one.
    #[serde(default)]
    pub item_names: Vec<String>,
}

impl Dataset {
    pub fn n_users(&self) -> usize {
        self.sequences.len()
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    pub fn n_categories(&self) -> usize {
        self.category_names.len()
    }

    pub fn n_interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// The sha256 (hex) of what a trained model depends on: the name, users, items, their categories and every
    /// interaction in order. A model records it, and loading it against other data is an error.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(self.name.as_bytes());
        for ids in [&self.user_ids, &self.item_ids, &self.category_names] {
            field(&(ids.len() as u64).to_le_bytes());
            for id in ids {
                field(id.as_bytes());
            }
        }
        let cats: Vec<u8> = self
            .item_category
            .iter()
            .flat_map(|c| c.to_le_bytes())
            .collect();
        field(&cats);
        for s in &self.sequences {
            let items: Vec<u8> = s.iter().flat_map(|i| i.to_le_bytes()).collect();
            field(&items);
        }
        format!("{:x}", h.finalize())
    }

    /// The display name of item `i`, when the data gives it one.
    pub fn item_name(&self, i: usize) -> Option<&str> {
        self.item_names
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// Dense index of an original item id, if known.
    pub fn item_index(&self, raw: &str) -> Option<u32> {
        // Linear scan is fine for CLI look-ups; bulk paths build their own map.
        self.item_ids
            .iter()
            .position(|s| s == raw)
            .map(|i| i as u32)
    }
}

/// Summary figures of a dataset (`reg4rec data stats --json` prints this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    pub name: String,
    pub users: usize,
    pub items: usize,
    pub interactions: usize,
    pub categories: usize,
    /// Mean number of interactions per user.
    pub avg_seq_len: f64,
    pub min_seq_len: usize,
    pub max_seq_len: usize,
    /// Interactions / (users * items).
    pub density: f64,
    /// Users with fewer than 3 items: the leave-one-out split drops (and counts) them.
    pub short_users: usize,
    /// Items without any attribute token.
    pub items_without_attributes: usize,
    /// The largest category's share of the items (1.0 with a single category): the category head, the
    /// category rewards and CORP need at least two categories and carry little signal when one dominates.
    pub largest_category_share: f64,
    /// Number of items per category, in `category_names` order.
    pub category_items: Vec<(String, usize)>,
    /// How often an interaction repeats an item already in its user's history: what a learned repeat bias
    /// (a score added to history items) can learn, and how far the history-filtered protocol differs from
    /// the unfiltered one.
    pub repeats: RepeatStats,
}

/// Repeated items in the leave-one-out split (users with at least 3 interactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RepeatStats {
    /// Users whose test target (last item) is already in their history.
    pub test_targets: usize,
    /// Users whose validation target (second to last item) is already in their history.
    pub valid_targets: usize,
    /// Training positions (every item before the validation target but the first) that repeat an earlier
    /// item of the same user, and all such positions.
    pub train_positions: usize,
    pub train_positions_total: usize,
}

/// What a k-core filter removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KCoreReport {
    pub k: usize,
    pub users_dropped: usize,
    pub items_dropped: usize,
    pub interactions_dropped: usize,
}

impl Dataset {
    /// Counts users, items, interactions and categories.
    pub fn stats(&self) -> DatasetStats {
        let lens: Vec<usize> = self.sequences.iter().map(Vec::len).collect();
        let interactions: usize = lens.iter().sum();
        let users = self.n_users();
        let items = self.n_items();
        let mut per_cat = vec![0usize; self.n_categories()];
        for &c in &self.item_category {
            if let Some(n) = per_cat.get_mut(c as usize) {
                *n += 1;
            }
        }
        DatasetStats {
            name: self.name.clone(),
            users,
            items,
            interactions,
            categories: self.n_categories(),
            avg_seq_len: interactions as f64 / users.max(1) as f64,
            min_seq_len: lens.iter().copied().min().unwrap_or(0),
            max_seq_len: lens.iter().copied().max().unwrap_or(0),
            density: interactions as f64 / (users.max(1) * items.max(1)) as f64,
            short_users: lens.iter().filter(|&&n| n < 3).count(),
            items_without_attributes: self.item_attributes.iter().filter(|a| a.is_empty()).count(),
            largest_category_share: per_cat.iter().copied().max().unwrap_or(0) as f64
                / items.max(1) as f64,
            category_items: self.category_names.iter().cloned().zip(per_cat).collect(),
            repeats: self.repeats(),
        }
    }

    /// Counts the repeated items of the leave-one-out split ([`RepeatStats`]).
    pub fn repeats(&self) -> RepeatStats {
        let mut r = RepeatStats::default();
        for s in self.sequences.iter().filter(|s| s.len() >= 3) {
            let mut seen = std::collections::HashSet::new();
            let n = s.len();
            for (t, &item) in s.iter().enumerate() {
                let repeat = !seen.insert(item);
                match t {
                    0 => {}
                    t if t + 2 < n => {
                        r.train_positions_total += 1;
                        r.train_positions += usize::from(repeat);
                    }
                    t if t + 2 == n => r.valid_targets += usize::from(repeat),
                    _ => r.test_targets += usize::from(repeat),
                }
            }
        }
        r
    }

    /// Keeps the k-core: repeatedly removes users and items with fewer than `k` interactions until every
    /// remaining user and item has at least `k`. Items and categories are re-indexed densely (order kept).
    pub fn k_core(&self, k: usize) -> (Dataset, KCoreReport) {
        let mut seqs = self.sequences.clone();
        let mut user_keep = vec![true; seqs.len()];
        loop {
            let mut item_count = vec![0usize; self.n_items()];
            for (u, s) in seqs.iter().enumerate() {
                if user_keep[u] {
                    for &i in s {
                        item_count[i as usize] += 1;
                    }
                }
            }
            let mut changed = false;
            for (u, s) in seqs.iter_mut().enumerate() {
                if !user_keep[u] {
                    continue;
                }
                let before = s.len();
                s.retain(|&i| item_count[i as usize] >= k);
                changed |= s.len() != before;
                if s.len() < k {
                    user_keep[u] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut item_used = vec![false; self.n_items()];
        for (u, s) in seqs.iter().enumerate() {
            if user_keep[u] {
                for &i in s {
                    item_used[i as usize] = true;
                }
            }
        }
        let mut new_item = vec![u32::MAX; self.n_items()];
        let mut item_ids = Vec::new();
        let mut old_cat = Vec::new();
        let mut item_attributes = Vec::new();
        let mut item_names = Vec::new();
        for i in (0..self.n_items()).filter(|&i| item_used[i]) {
            new_item[i] = item_ids.len() as u32;
            item_ids.push(self.item_ids[i].clone());
            old_cat.push(self.item_category[i]);
            item_attributes.push(self.item_attributes[i].clone());
            if let Some(n) = self.item_names.get(i) {
                item_names.push(n.clone());
            }
        }
        let mut cat_used = vec![false; self.n_categories()];
        for &c in &old_cat {
            cat_used[c as usize] = true;
        }
        let mut new_cat = vec![u32::MAX; self.n_categories()];
        let mut category_names = Vec::new();
        for c in (0..self.n_categories()).filter(|&c| cat_used[c]) {
            new_cat[c] = category_names.len() as u32;
            category_names.push(self.category_names[c].clone());
        }
        let mut sequences = Vec::new();
        let mut user_ids = Vec::new();
        for (u, s) in seqs.into_iter().enumerate() {
            if user_keep[u] {
                sequences.push(
                    s.into_iter()
                        .map(|i| new_item[i as usize])
                        .collect::<Vec<u32>>(),
                );
                user_ids.push(self.user_ids[u].clone());
            }
        }
        let out = Dataset {
            name: self.name.clone(),
            sequences,
            user_ids,
            item_ids,
            item_category: old_cat.into_iter().map(|c| new_cat[c as usize]).collect(),
            category_names,
            item_attributes,
            item_names,
        };
        let report = KCoreReport {
            k,
            users_dropped: self.n_users() - out.n_users(),
            items_dropped: self.n_items() - out.n_items(),
            interactions_dropped: self.n_interactions() - out.n_interactions(),
        };
        (out, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset {
            name: "toy".into(),
            // item 3 is seen once, user 2 has two items.
            sequences: vec![vec![0, 1, 2, 3], vec![0, 1, 2], vec![0, 1], vec![2, 1, 0]],
            user_ids: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            item_ids: vec!["i0".into(), "i1".into(), "i2".into(), "i3".into()],
            item_category: vec![0, 0, 1, 2],
            category_names: vec!["x".into(), "y".into(), "z".into()],
            item_attributes: vec![vec!["t".into()], vec![], vec![], vec![]],
            item_names: Vec::new(),
        }
    }

    #[test]
    fn the_fingerprint_changes_with_any_interaction_or_item() {
        let d = toy();
        assert_eq!(d.fingerprint(), toy().fingerprint());
        assert_eq!(d.fingerprint().len(), 64);
        let mut e = toy();
        e.sequences[0].pop();
        assert_ne!(e.fingerprint(), d.fingerprint());
        let mut e = toy();
        e.item_ids[0].push('x');
        assert_ne!(e.fingerprint(), d.fingerprint());
        let mut e = toy();
        e.item_category[0] = (e.item_category[0] + 1) % d.n_categories() as u32;
        assert_ne!(e.fingerprint(), d.fingerprint());
    }

    /// Repeats are counted per part of the leave-one-out split, and users it drops (fewer than 3 items) are not.
    #[test]
    fn repeats_count_each_part_of_the_split() {
        let mut d = toy();
        assert_eq!(
            d.repeats(),
            RepeatStats {
                train_positions_total: 1,
                ..Default::default()
            }
        );
        // User a: 0 1 0 3 0 -> training positions 1, 0 (second 0 repeats), validation 3, test 0 (repeats).
        d.sequences[0] = vec![0, 1, 0, 3, 0];
        // User d: 1 1 2 -> validation target 1 repeats; user c (2 items) is dropped by the split.
        d.sequences[3] = vec![1, 1, 2];
        d.sequences[2] = vec![1, 1];
        let r = d.repeats();
        assert_eq!((r.test_targets, r.valid_targets), (1, 1));
        assert_eq!((r.train_positions, r.train_positions_total), (1, 2));
        assert_eq!(d.stats().repeats, r);
    }

    #[test]
    fn stats_count_everything() {
        let s = toy().stats();
        assert_eq!(
            (s.users, s.items, s.interactions, s.categories),
            (4, 4, 12, 3)
        );
        assert_eq!((s.min_seq_len, s.max_seq_len, s.short_users), (2, 4, 1));
        assert!((s.avg_seq_len - 3.0).abs() < 1e-12);
        assert_eq!(s.items_without_attributes, 3);
        assert_eq!(s.category_items[1], ("y".to_string(), 1));
        let largest = s.category_items.iter().map(|c| c.1).max().unwrap();
        assert!((s.largest_category_share - largest as f64 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn k_core_removes_rare_items_and_short_users_and_reindexes() {
        let (d, r) = toy().k_core(3);
        // item 3 (1 interaction) goes, user c (2 items) goes; the rest has >= 3 everywhere.
        assert_eq!(d.user_ids, vec!["a", "b", "d"]);
        assert_eq!(d.item_ids, vec!["i0", "i1", "i2"]);
        assert_eq!(d.sequences[0], vec![0, 1, 2]);
        assert_eq!(d.category_names, vec!["x", "y"]);
        assert_eq!(
            r,
            KCoreReport {
                k: 3,
                users_dropped: 1,
                items_dropped: 1,
                interactions_dropped: 3
            }
        );
        let (same, r1) = d.k_core(3);
        assert_eq!(same.sequences, d.sequences);
        assert_eq!(r1.interactions_dropped, 0);
    }

    proptest::proptest! {
        #[test]
        fn k_core_leaves_only_users_and_items_with_k_interactions(
            seqs in proptest::collection::vec(proptest::collection::vec(0u32..15, 0..12), 1..20),
            k in 1usize..5,
        ) {
            let n_items = 15;
            let ds = Dataset {
                name: "p".into(),
                user_ids: (0..seqs.len()).map(|u| u.to_string()).collect(),
                sequences: seqs,
                item_ids: (0..n_items).map(|i| i.to_string()).collect(),
                item_category: (0..n_items).map(|i| (i % 3) as u32).collect(),
                category_names: vec!["a".into(), "b".into(), "c".into()],
                item_attributes: vec![vec![]; n_items],
                item_names: Vec::new(),
            };
            let (d, r) = ds.k_core(k);
            let mut count = vec![0usize; d.n_items()];
            for s in &d.sequences {
                proptest::prop_assert!(s.len() >= k);
                for &i in s {
                    count[i as usize] += 1;
                }
            }
            proptest::prop_assert!(count.iter().all(|&c| c >= k));
            proptest::prop_assert_eq!(r.interactions_dropped, ds.n_interactions() - d.n_interactions());
            proptest::prop_assert_eq!(d.item_category.len(), d.n_items());
            proptest::prop_assert!(d.item_category.iter().all(|&c| (c as usize) < d.n_categories()));
        }
    }
}
