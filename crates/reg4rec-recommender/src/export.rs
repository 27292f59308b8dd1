//! Files other tools read: the items' semantic IDs as JSON in the layout generative-recommendation projects share,
//! `{"<item id>": ["<a_12>", "<b_3>", ...]}` (codebook r is the r-th letter, then the code), and the catalog as
//! JSON lines (one item per line: id, category, tokens, availability). [`codes_from_semantic_ids`] reads the JSON
//! back into [`Codes`] over a given item order, so IDs made elsewhere can be brought in and exported IDs
//! round-trip.

use crate::error::{RecommenderError, Result};
use crate::recommender::Recommender;
use reg4rec_tokenizer::Codes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The token of code `code` in codebook `r`: `<a_12>` for codebook 0, code 12; codebooks 0 to 24 are the letters
/// `a` to `y`, later ones `z` and their number (`<z30_5>`).
pub fn token_name(r: usize, code: u16) -> String {
    match r {
        0..=24 => format!("<{}_{code}>", (b'a' + r as u8) as char),
        _ => format!("<z{r}_{code}>"),
    }
}

/// Parses [`token_name`]'s format into `(codebook, code)`.
pub fn parse_token(s: &str) -> Option<(usize, u16)> {
    let inner = s.strip_prefix('<')?.strip_suffix('>')?;
    let (book, code) = inner.split_once('_')?;
    let r = match book.as_bytes() {
        [c] if c.is_ascii_lowercase() && *c != b'z' => (c - b'a') as usize,
        [b'z', rest @ ..] if !rest.is_empty() => std::str::from_utf8(rest).ok()?.parse().ok()?,
        _ => return None,
    };
    Some((r, code.parse().ok()?))
}

/// Every item's semantic ID, by original id, tokens in codebook order.
pub fn semantic_ids(rec: &Recommender) -> BTreeMap<String, Vec<String>> {
    let (codes, c) = (rec.codes(), rec.catalog());
    (0..codes.n_items())
        .map(|i| {
            let tokens = codes
                .tuple(i)
                .iter()
                .enumerate()
                .map(|(r, &code)| token_name(r, code))
                .collect();
            (c.item_ids[i].clone(), tokens)
        })
        .collect()
}

/// One line of the JSON-lines catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogLine {
    pub item_id: String,
    /// The display name, when the catalog has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub category: String,
    pub tokens: Vec<String>,
    pub available: bool,
    /// Added after training.
    pub added: bool,
}

/// The catalog as JSON lines, in item order.
pub fn catalog_lines(rec: &Recommender) -> Vec<CatalogLine> {
    let ids = semantic_ids(rec);
    let c = rec.catalog();
    (0..c.n_items())
        .map(|i| CatalogLine {
            item_id: c.item_ids[i].clone(),
            name: c.name(i as u32).map(str::to_string),
            category: c.category_names[c.item_category[i] as usize].clone(),
            tokens: ids[&c.item_ids[i]].clone(),
            available: c.is_available(i as u32),
            added: i >= c.n_trained,
        })
        .collect()
}

/// Codes from semantic IDs (`{"item id": ["<a_12>", ...]}`) for the items `item_ids` in that order, with `m`
/// codebooks of `d` codes; every item needs an ID with one token per codebook, and no two items may share one.
/// `ordered`: whether the codebooks are levels (RQ-VAE) or a set (MPQ). Errors name the item and the token.
pub fn codes_from_semantic_ids(
    ids: &HashMap<String, Vec<String>>,
    item_ids: &[String],
    m: usize,
    d: usize,
    ordered: bool,
) -> Result<Codes> {
    let mut tuples = Vec::with_capacity(item_ids.len() * m);
    for id in item_ids {
        let tokens = ids.get(id).ok_or_else(|| {
            RecommenderError::request(format!("ids[{id}]"), "the item has no semantic ID")
        })?;
        let mut tuple = vec![None; m];
        for t in tokens {
            let (r, code) = parse_token(t)
                .filter(|&(r, code)| r < m && (code as usize) < d)
                .ok_or_else(|| {
                    RecommenderError::request(
                        format!("ids[{id}]"),
                        format!(
                            "`{t}` is not a token of {m} codebooks of {d} codes (`<a_12>` style)"
                        ),
                    )
                })?;
            if tuple[r].replace(code).is_some() {
                return Err(RecommenderError::request(
                    format!("ids[{id}]"),
                    format!("two tokens of codebook {r}"),
                ));
            }
        }
        for (r, c) in tuple.iter().enumerate() {
            tuples.push(c.ok_or_else(|| {
                RecommenderError::request(format!("ids[{id}]"), format!("no token of codebook {r}"))
            })?);
        }
    }
    let codes = Codes::new(m, d, ordered, tuples)?;
    reg4rec_tokenizer::ItemIndex::new(&codes)?;
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_round_trip() {
        for (r, c) in [(0, 0), (3, 255), (25, 7), (26, 1), (40, 9)] {
            assert_eq!(parse_token(&token_name(r, c)), Some((r, c)));
        }
        assert_eq!(token_name(1, 12), "<b_12>");
        for bad in ["a_1", "<a1>", "<A_1>", "<a_x>", "<z_1>", "<ab_1>"] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn semantic_ids_become_codes_and_bad_ones_are_refused() {
        let ids: HashMap<String, Vec<String>> = [
            ("x", vec!["<b_1>", "<a_0>"]),
            ("y", vec!["<a_2>", "<b_1>"]),
            ("dup", vec!["<a_0>", "<b_1>"]),
            ("bad", vec!["<a_9>", "<b_1>"]),
            ("half", vec!["<a_1>"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        let order = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let codes = codes_from_semantic_ids(&ids, &order(&["y", "x"]), 2, 4, false).unwrap();
        assert_eq!(codes.tuples, vec![2, 1, 0, 1]);
        for (items, what) in [
            (order(&["x", "dup"]), "share"),
            (order(&["bad"]), "`<a_9>`"),
            (order(&["half"]), "no token of codebook 1"),
            (order(&["none"]), "no semantic ID"),
        ] {
            let e = codes_from_semantic_ids(&ids, &items, 2, 4, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{e}");
        }
    }
}
