//! The catalog of a model directory (`catalog.json`): every item's original id, category and display name (when
//! the data gives names), the category names, the items added after training (with their token tuples) and
//! which items may be recommended. It is
//! versioned: every change raises `version`, and a served response names the version it was computed on.
//!
//! Items `0..n_trained` are the ones the model was trained on, in the order of the training data's dense
//! indices; added items follow. Removing an item marks it unavailable (a mask, not a rebuild): its tokens stay
//! in the index so histories may still name it, but no search reaches it.

use crate::error::{RecommenderError, Result};
use reg4rec_data::Dataset;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The items a recommender knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Raised by every change (1 for the catalog written at training).
    pub version: u64,
    /// Items the model was trained on.
    pub n_trained: usize,
    /// Original id of every item.
    pub item_ids: Vec<String>,
    /// Category index of every item.
    pub item_category: Vec<u32>,
    pub category_names: Vec<String>,
    /// Token tuples of the items added after training (`m` codes each, in item order).
    #[serde(default)]
    pub added_tuples: Vec<u16>,
    /// Items that are not available (removed); sorted.
    #[serde(default)]
    pub unavailable: Vec<u32>,
    /// Display name of every item (`""`: none), or empty when no item has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub item_names: Vec<String>,
}

impl Catalog {
    /// The catalog of the data a model is trained on.
    pub fn of(ds: &Dataset) -> Self {
        Catalog {
            version: 1,
            n_trained: ds.n_items(),
            item_ids: ds.item_ids.clone(),
            item_category: ds.item_category.clone(),
            category_names: ds.category_names.clone(),
            added_tuples: Vec::new(),
            unavailable: Vec::new(),
            item_names: ds.item_names.clone(),
        }
    }

    /// The display name of `item`, when it has one.
    pub fn name(&self, item: u32) -> Option<&str> {
        self.item_names
            .get(item as usize)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// Appends the next item's name (`None`: it has none), keeping `item_names` empty while no item has one.
    pub(crate) fn push_name(&mut self, name: Option<&str>) {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => {
                // The item being added is the last one of `item_ids`.
                self.item_names
                    .resize(self.item_ids.len() - 1, String::new());
                self.item_names.push(n.to_string());
            }
            None if !self.item_names.is_empty() => self.item_names.push(String::new()),
            None => {}
        }
    }

    /// Up to `limit` items whose id or name contains `query` (case-insensitive), best match first: an exact id,
    /// then names and ids that start with it, then names with a word that starts with it, then any other
    /// match; ties in item order. An empty query matches nothing.
    pub fn search(&self, query: &str, limit: usize) -> Vec<u32> {
        let q = query.trim().to_lowercase();
        if q.is_empty() || limit == 0 {
            return Vec::new();
        }
        let mut hits: Vec<(u8, u32)> = Vec::new();
        for (i, id) in self.item_ids.iter().enumerate() {
            let id = id.to_lowercase();
            let name = self.name(i as u32).unwrap_or("").to_lowercase();
            let rank = if id == q {
                0
            } else if name.starts_with(&q) || id.starts_with(&q) {
                1
            } else if name
                .match_indices(&q)
                .any(|(at, _)| !name[..at].ends_with(char::is_alphanumeric))
            {
                2
            } else if name.contains(&q) || id.contains(&q) {
                3
            } else {
                continue;
            };
            hits.push((rank, i as u32));
        }
        hits.sort_unstable();
        hits.into_iter().take(limit).map(|(_, i)| i).collect()
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    /// Checks that the fields agree with each other and with `m` codebooks of `n_trained` trained items.
    pub fn validate(&self, m: usize, n_trained: usize, file: &std::path::Path) -> Result<()> {
        let bad = |msg: String| Err(RecommenderError::file(file, msg));
        if self.n_trained != n_trained {
            return bad(format!(
                "n_trained = {} but the model was trained on {n_trained} items",
                self.n_trained
            ));
        }
        let n = self.item_ids.len();
        if self.item_category.len() != n {
            return bad(format!(
                "{} item ids but {} item categories",
                n,
                self.item_category.len()
            ));
        }
        if n < n_trained || self.added_tuples.len() != (n - n_trained) * m {
            return bad(format!(
                "{} items of which {n_trained} trained need {} added codes, found {}",
                n,
                n.saturating_sub(n_trained) * m,
                self.added_tuples.len()
            ));
        }
        if !self.item_names.is_empty() && self.item_names.len() != n {
            return bad(format!(
                "{} item names for {n} items (give every item a name, `\"\"` for none, or leave `item_names` out)",
                self.item_names.len()
            ));
        }
        if let Some(c) = self
            .item_category
            .iter()
            .find(|&&c| c as usize >= self.category_names.len())
        {
            return bad(format!(
                "category {c} outside the {} category names",
                self.category_names.len()
            ));
        }
        if !self.unavailable.windows(2).all(|w| w[0] < w[1])
            || self.unavailable.last().is_some_and(|&i| i as usize >= n)
        {
            return bad("`unavailable` must be sorted, distinct item indices".into());
        }
        let mut seen = HashMap::with_capacity(n);
        for (i, id) in self.item_ids.iter().enumerate() {
            if let Some(j) = seen.insert(id.as_str(), i) {
                return bad(format!("item id `{id}` is given twice (items {j} and {i})"));
            }
        }
        Ok(())
    }

    /// Original id -> item index.
    pub fn id_map(&self) -> HashMap<String, u32> {
        self.item_ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect()
    }

    pub fn is_available(&self, item: u32) -> bool {
        self.unavailable.binary_search(&item).is_err()
    }

    /// The index of category `name`, if the catalog has it.
    pub fn category(&self, name: &str) -> Option<u32> {
        self.category_names
            .iter()
            .position(|c| c == name)
            .map(|c| c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog {
            version: 1,
            n_trained: 2,
            item_ids: vec!["a".into(), "b".into(), "c".into()],
            item_category: vec![0, 1, 1],
            category_names: vec!["x".into(), "y".into()],
            added_tuples: vec![3, 4],
            unavailable: vec![1],
            item_names: Vec::new(),
        }
    }

    #[test]
    fn a_consistent_catalog_validates_and_answers_lookups() {
        let c = catalog();
        c.validate(2, 2, "catalog.json".as_ref()).unwrap();
        assert_eq!(c.id_map()["c"], 2);
        assert!(!c.is_available(1) && c.is_available(2));
        assert_eq!(c.category("y"), Some(1));
        assert_eq!(c.category("z"), None);
        assert_eq!(c.name(0), None);
    }

    #[test]
    fn names_are_optional_searchable_and_checked() {
        let mut c = catalog();
        c.item_names = vec!["Star Wars".into(), "".into(), "Wars of the Roses".into()];
        c.validate(2, 2, "catalog.json".as_ref()).unwrap();
        assert_eq!(c.name(0), Some("Star Wars"));
        assert_eq!(c.name(1), None);
        // A name that starts with the query before a word inside another name; case-insensitive.
        assert_eq!(c.search("WARS", 10), vec![2, 0]);
        assert_eq!(c.search("star", 10), vec![0]);
        // An exact id first; ids match as well as names.
        assert_eq!(c.search("b", 10), vec![1]);
        assert_eq!(c.search("a", 1), vec![0]);
        assert!(c.search("  ", 10).is_empty() && c.search("zzz", 10).is_empty());
        c.item_names.pop();
        let e = c
            .validate(2, 2, "catalog.json".as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 item names for 3 items"), "{e}");
        // Adding a named item to a catalog without names gives the earlier items empty names.
        let mut c = catalog();
        c.item_ids.push("d".into());
        c.push_name(Some("Dune"));
        assert_eq!(c.item_names, vec!["", "", "", "Dune"]);
        let mut c = catalog();
        c.item_ids.push("d".into());
        c.push_name(None);
        assert!(c.item_names.is_empty());
    }

    #[test]
    fn inconsistent_catalogs_are_refused_naming_the_file() {
        let f = std::path::Path::new("dir/catalog.json");
        let mut c = catalog();
        c.added_tuples.pop();
        let e = c.validate(2, 2, f).unwrap_err().to_string();
        assert!(
            e.starts_with("dir/catalog.json: ") && e.contains("added codes"),
            "{e}"
        );
        let mut c = catalog();
        c.item_ids[2] = "a".into();
        assert!(c
            .validate(2, 2, f)
            .unwrap_err()
            .to_string()
            .contains("`a` is given twice"));
        let mut c = catalog();
        c.unavailable = vec![2, 1];
        assert!(c.validate(2, 2, f).is_err());
        assert!(catalog().validate(2, 3, f).is_err());
        let mut c = catalog();
        c.item_category[0] = 5;
        assert!(c
            .validate(2, 2, f)
            .unwrap_err()
            .to_string()
            .contains("category 5"));
    }
}
