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

    /// Dense index of an original item id, if known.
    pub fn item_index(&self, raw: &str) -> Option<u32> {
        // Linear scan is fine for CLI look-ups; bulk paths build their own map.
        self.item_ids.iter().position(|s| s == raw).map(|i| i as u32)
    }
}
