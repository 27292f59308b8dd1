//! The compact form every reader streams interactions into before a [`Dataset`] is built: one row per
//! interaction as a user index (`u32`), an item index (`u32`) and a timestamp (`f64`), 16 bytes a row, with each
//! raw id stored once. No reader holds a whole file's text or a string per row, so a log loads with peak memory
//! near its compact size (measured in docs/scale.md: rows/s and peak RSS up to 10^8 rows).
//!
//! [`InteractionLog::into_dataset`] orders each user's items by timestamp (stable: rows with equal timestamps keep
//! their order in the input) and numbers users and items densely in ascending id order (numeric when every id is
//! an integer). It groups the rows by user with a counting sort, so its extra memory is one `u32` per row.

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use std::collections::HashMap;
use std::path::Path;

/// Raw ids, each stored once, numbered in order of first sight (hashed with aHash: the hash of the standard
/// library was a third of a log's load time).
type IndexSet<T> = indexmap::IndexSet<T, ahash::RandomState>;

/// Interned ids. An id written as a canonical integer (digits, no leading zero) is also found through its value,
/// one memory access instead of three (table, entry, string): most logs number their users and items.
#[derive(Debug, Default)]
struct Ids {
    set: IndexSet<Box<str>>,
    by_value: HashMap<u64, u32, ahash::RandomState>,
}

/// The value of an id written as a canonical integer (`0`, `7`, `120`; not `07`, `+7` or `7.0`).
fn canonical_integer(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    let canonical = !b.is_empty()
        && b.len() <= 19
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] != b'0' || b.len() == 1);
    canonical.then(|| id.parse().ok()).flatten()
}

impl Ids {
    /// Index of `id`, inserting it when new (no allocation for a known id).
    fn intern(&mut self, id: &str) -> u32 {
        match canonical_integer(id) {
            Some(v) => match self.by_value.get(&v) {
                Some(&i) => i,
                None => {
                    let i = intern(&mut self.set, id);
                    self.by_value.insert(v, i);
                    i
                }
            },
            None => intern(&mut self.set, id),
        }
    }
}

/// Category given to items that have none.
pub const UNKNOWN_CATEGORY: &str = "unknown";

/// Interactions in their compact form, with the raw ids they name (see the module doc).
#[derive(Debug, Default)]
pub struct InteractionLog {
    users: Ids,
    items: Ids,
    categories: IndexSet<Box<str>>,
    /// Category (index into `categories`) of each item in `items` order, set by the first row that names one.
    item_category: Vec<Option<u32>>,
    /// Display name of each item in `items` order, set by the first row that names one (empty until a row does).
    item_name: Vec<Option<Box<str>>>,
    user: Vec<u32>,
    item: Vec<u32>,
    time: Vec<f64>,
}

/// Index of `id` in `set`, inserting it when new (no allocation for a known id).
fn intern(set: &mut IndexSet<Box<str>>, id: &str) -> u32 {
    match set.get_index_of(id) {
        Some(i) => i as u32,
        None => set.insert_full(id.into()).0 as u32,
    }
}

/// The order of `ids` as the dataset numbers them: ascending, numeric when every id is an integer (ties between
/// equal numbers such as `01` and `1` broken lexicographically). Returns, for each id, its rank.
fn ranks(ids: &IndexSet<Box<str>>) -> Vec<u32> {
    let numeric: Option<Vec<u64>> = ids.iter().map(|s| s.parse::<u64>().ok()).collect();
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    match numeric {
        Some(n) => order.sort_unstable_by(|&a, &b| {
            (n[a as usize], &ids[a as usize]).cmp(&(n[b as usize], &ids[b as usize]))
        }),
        None => order.sort_unstable_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize])),
    }
    let mut rank = vec![0u32; ids.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    rank
}

/// The ids of `set` in rank order.
fn in_rank_order(set: IndexSet<Box<str>>, rank: &[u32]) -> Vec<String> {
    let mut out = vec![String::new(); set.len()];
    for (i, id) in set.into_iter().enumerate() {
        out[rank[i] as usize] = id.into_string();
    }
    out
}

impl InteractionLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one interaction; returns the item's index in this log (for [`Self::set_category`]).
    pub fn push(&mut self, user: &str, item: &str, time: f64) -> u32 {
        // Logs often hold a user's rows together: the previous row's user needs no lookup.
        let u = match self.user.last() {
            Some(&last) if *self.users.set[last as usize] == *user => last,
            _ => self.users.intern(user),
        };
        let i = self.items.intern(item);
        if i as usize == self.item_category.len() {
            self.item_category.push(None);
            self.item_name.push(None);
        }
        self.user.push(u);
        self.item.push(i);
        self.time.push(time);
        i
    }

    /// Gives the item (an index [`Self::push`] returned) its category, unless an earlier row gave it one.
    pub fn set_category(&mut self, item: u32, category: &str) {
        if self.item_category[item as usize].is_none() {
            self.item_category[item as usize] = Some(intern(&mut self.categories, category));
        }
    }

    /// Gives the item (an index [`Self::push`] returned) its display name, unless an earlier row gave it one.
    pub fn set_name(&mut self, item: u32, name: &str) {
        let slot = &mut self.item_name[item as usize];
        if slot.is_none() && !name.trim().is_empty() {
            *slot = Some(name.trim().into());
        }
    }

    /// Number of interactions.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// Bytes of the compact form: 16 a row (user and item as `u32`, timestamp as 8 bytes).
    pub fn compact_bytes(&self) -> usize {
        self.len() * 16
    }

    /// Builds the dataset. `side` (keyed by raw item id) comes from side files; a category or name given by a
    /// row of the log wins over `side`'s, and items with neither category get [`UNKNOWN_CATEGORY`]. The dataset
    /// has item names when any item has one. An empty log is an error naming `source`.
    pub fn into_dataset(self, name: &str, source: &Path, side: &ItemTable) -> Result<Dataset> {
        let ItemTable {
            categories,
            attributes,
            names: side_names,
        } = side;
        if self.is_empty() {
            return Err(DataError::invalid(source, "no interactions"));
        }
        if self.len() > u32::MAX as usize {
            return Err(DataError::invalid(
                source,
                format!(
                    "{} interactions: at most {} fit the row index (split the log)",
                    self.len(),
                    u32::MAX
                ),
            ));
        }
        let user_rank = ranks(&self.users.set);
        let item_rank = ranks(&self.items.set);
        let Self {
            users:
                Ids {
                    set: users,
                    by_value: user_values,
                },
            items:
                Ids {
                    set: items,
                    by_value: item_values,
                },
            categories: row_categories,
            item_category: row_category,
            item_name: row_name,
            user,
            item,
            time,
        } = self;
        drop((user_values, item_values));
        // Counting sort of the rows by user (stable), then each user's rows by timestamp (stable).
        let mut start = vec![0usize; users.len() + 1];
        for &u in &user {
            start[user_rank[u as usize] as usize + 1] += 1;
        }
        for k in 1..start.len() {
            start[k] += start[k - 1];
        }
        let mut next = start.clone();
        let mut rows = vec![0u32; user.len()];
        for (r, &u) in user.iter().enumerate() {
            let slot = &mut next[user_rank[u as usize] as usize];
            rows[*slot] = r as u32;
            *slot += 1;
        }
        drop(user);
        let sequences: Vec<Vec<u32>> = start
            .windows(2)
            .map(|w| {
                let user_rows = &mut rows[w[0]..w[1]];
                user_rows.sort_by(|&a, &b| time[a as usize].total_cmp(&time[b as usize]));
                user_rows
                    .iter()
                    .map(|&r| item_rank[item[r as usize] as usize])
                    .collect()
            })
            .collect();
        drop((rows, item, time));

        let user_ids = in_rank_order(users, &user_rank);
        let item_cat: Vec<&str> = {
            let mut by_rank = vec![UNKNOWN_CATEGORY; items.len()];
            for (i, id) in items.iter().enumerate() {
                by_rank[item_rank[i] as usize] = match row_category[i] {
                    Some(c) => &row_categories[c as usize],
                    None => categories
                        .get(id.as_ref())
                        .map_or(UNKNOWN_CATEGORY, String::as_str),
                };
            }
            by_rank
        };
        let mut names = IndexSet::<Box<str>>::default();
        let cat_raw: Vec<u32> = item_cat.iter().map(|c| intern(&mut names, c)).collect();
        let cat_rank = ranks(&names);
        let item_category = cat_raw.iter().map(|&c| cat_rank[c as usize]).collect();
        let category_names = in_rank_order(names, &cat_rank);
        let any_name = row_name.iter().any(Option::is_some) || !side_names.is_empty();
        let mut item_names = Vec::new();
        if any_name {
            item_names = vec![String::new(); items.len()];
            for (i, id) in items.iter().enumerate() {
                let n = row_name[i]
                    .as_deref()
                    .or_else(|| side_names.get(id.as_ref()).map(String::as_str));
                item_names[item_rank[i] as usize] = n.unwrap_or_default().to_string();
            }
        }
        let item_ids = in_rank_order(items, &item_rank);
        let item_attributes = item_ids
            .iter()
            .map(|i| attributes.get(i).cloned().unwrap_or_default())
            .collect();
        Ok(Dataset {
            name: name.to_string(),
            sequences,
            user_ids,
            item_ids,
            item_category,
            category_names,
            item_attributes,
            item_names,
        })
    }
}

/// Side information per raw item id, read from side files: category name, attribute tokens, display name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemTable {
    pub categories: HashMap<String, String>,
    pub attributes: HashMap<String, Vec<String>>,
    pub names: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_keeps_ties_in_input_order_and_numbers_ids_ascending() {
        let mut log = InteractionLog::new();
        for (u, i, t) in [
            ("10", "b", 5.0),
            ("2", "a", 9.0),
            ("10", "c", 1.0),
            ("2", "c", 9.0),
            ("10", "a", 5.0),
        ] {
            log.push(u, i, t);
        }
        assert_eq!(log.compact_bytes(), 5 * 16);
        let ds = log
            .into_dataset("x", Path::new("x.csv"), &ItemTable::default())
            .unwrap();
        assert_eq!(ds.user_ids, vec!["2", "10"]);
        assert_eq!(ds.item_ids, vec!["a", "b", "c"]);
        assert_eq!(ds.sequences, vec![vec![0, 2], vec![2, 1, 0]]);
        assert_eq!(ds.category_names, vec![UNKNOWN_CATEGORY]);
    }

    #[test]
    fn a_row_category_wins_over_the_side_file_and_the_first_row_wins() {
        let mut log = InteractionLog::new();
        let a = log.push("u", "a", 1.0);
        log.set_category(a, "Shoes");
        let a2 = log.push("v", "a", 1.0);
        log.set_category(a2, "Hats");
        log.push("u", "b", 2.0);
        log.push("u", "c", 3.0);
        log.set_name(a, "Red shoe");
        log.set_name(a2, "Blue shoe");
        let side = ItemTable {
            categories: HashMap::from([
                ("a".to_string(), "Socks".to_string()),
                ("b".to_string(), "Hats".to_string()),
            ]),
            names: HashMap::from([
                ("a".to_string(), "Sock".to_string()),
                ("b".to_string(), "Cap".to_string()),
            ]),
            ..ItemTable::default()
        };
        let ds = log.into_dataset("x", Path::new("x.csv"), &side).unwrap();
        assert_eq!(ds.category_names, vec!["Hats", "Shoes", UNKNOWN_CATEGORY]);
        assert_eq!(ds.item_category, vec![1, 0, 2]);
        assert_eq!(ds.item_names, vec!["Red shoe", "Cap", ""]);
        assert_eq!(ds.item_name(2), None);
    }

    #[test]
    fn integer_ids_and_their_other_spellings_stay_distinct() {
        assert_eq!(canonical_integer("0"), Some(0));
        assert_eq!(canonical_integer("120"), Some(120));
        for other in ["07", "+7", "7.0", "", " 7", "99999999999999999999"] {
            assert_eq!(canonical_integer(other), None, "{other}");
        }
        let mut log = InteractionLog::new();
        for (u, i) in [("1", "7"), ("1", "07"), ("1", "7"), ("01", "x")] {
            log.push(u, i, 0.0);
        }
        let ds = log
            .into_dataset("x", Path::new("x"), &ItemTable::default())
            .unwrap();
        assert_eq!(ds.user_ids, vec!["01", "1"]);
        assert_eq!(ds.item_ids, vec!["07", "7", "x"]);
        assert_eq!(ds.sequences, vec![vec![2], vec![1, 0, 1]]);
    }

    #[test]
    fn an_empty_log_is_an_error_naming_its_source() {
        let e = InteractionLog::new()
            .into_dataset("x", Path::new("dir/e.csv"), &ItemTable::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("e.csv") && e.contains("no interactions"), "{e}");
    }

    proptest::proptest! {
        /// Against a direct model: group by user, stable sort by time, ids numbered in ascending order.
        #[test]
        fn matches_a_direct_grouping(rows in proptest::collection::vec((0u8..6, 0u8..9, 0u8..4), 1..60)) {
            let mut log = InteractionLog::new();
            for &(u, i, t) in &rows {
                log.push(&u.to_string(), &format!("i{i}"), t as f64);
            }
            let ds = log
                .into_dataset("x", Path::new("x"), &ItemTable::default())
                .unwrap();
            let mut users: Vec<u8> = rows.iter().map(|r| r.0).collect();
            users.sort();
            users.dedup();
            let mut items: Vec<String> = rows.iter().map(|r| format!("i{}", r.1)).collect();
            items.sort();
            items.dedup();
            proptest::prop_assert_eq!(&ds.item_ids, &items);
            for (k, u) in users.iter().enumerate() {
                let mut mine: Vec<(u8, String)> =
                    rows.iter().filter(|r| r.0 == *u).map(|r| (r.2, format!("i{}", r.1))).collect();
                mine.sort_by_key(|r| r.0);
                let got: Vec<String> = ds.sequences[k].iter().map(|&i| ds.item_ids[i as usize].clone()).collect();
                let want: Vec<String> = mine.into_iter().map(|r| r.1).collect();
                proptest::prop_assert_eq!(got, want);
                proptest::prop_assert_eq!(&ds.user_ids[k], &u.to_string());
            }
        }
    }
}
