//! The catalog of a model directory (`catalog.json`): every item's original id and category, the category
//! names, the items added after training (with their token tuples) and which items may be recommended. It is
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
        }
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
