//! Readers for the on-disk formats reg4rec accepts, each turning files into a [`Dataset`]:
//!
//! - **S3-Rec** (`<Name>.txt`: one user a line, `user item item ...` in time order, integer ids; optional
//!   `<Name>_item2attributes.json` `{"item": [attribute, ...]}`, `<Name>_attribute_names.json`
//!   `{"attribute": "name"}` and `<Name>_item2l1category.tsv` `item_id<TAB>l1_attr_id<TAB>l1_name` with a header).
//! - **RecBole atomic files**: `<name>.inter` with a header of `field:type` columns (needs `user_id` and
//!   `item_id`; `timestamp` orders each user's items, file order breaks ties and is used when there is no
//!   timestamp column); an optional `<name>.item` whose `category`/`categories`/`class`/`genre`/`genres` field
//!   gives the category (first token of a `token_seq`) and whose other `token`/`token_seq` fields give the
//!   attribute tokens `field=value` (lower-cased words for `token_seq`); a `name`/`title`/`movie_title` field
//!   also gives the item's display name. Ids are opaque tokens, as in RecBole.
//! - **CSV**: `user,item,timestamp[,category]`, with or without a header line (a header has a `user` or
//!   `user_id` column and may name the columns in any order). RFC 4180 quoting (read with the `csv` crate), a
//!   UTF-8 byte-order mark and CRLF line ends are accepted. Ids are opaque tokens, the timestamp must be a
//!   number, an item's category is the one on its first row. A header may add a `name` (or `title`) column: the
//!   item's display name, from its first row that gives one (display only: no model reads it).
//! - **Parquet** (feature `parquet`, on by default): the CSV's columns by name, string or integer ids, a numeric,
//!   date or timestamp time column ([`load_parquet`]).
//!
//! The interaction readers stream: they keep one line, record or batch at a time and append it to an
//! [`InteractionLog`], which builds the [`Dataset`].
//!
//! Users and items are numbered densely in ascending id order (numeric when every id is an integer). Items
//! without a category get the category `unknown`.
//!
//! **Derived top-level category** (S3-Rec sets without an `_item2l1category.tsv`): S3-Rec attribute lists are
//! the brand (when known) followed by the category path. The top-level categories are the attributes that are
//! the first attribute of some item (an unbranded item starts with its top-level category) *and* the second
//! attribute of another (a branded item has it right after the brand); a brand is never second and a
//! sub-category is never first. An item's category is its first attribute in that set; an item with none of
//! them takes its attribute shared by the most items (ties: earliest in its list); an item without attributes
//! is `unknown`. On Amazon Beauty this reproduces the provided `Beauty_item2l1category.tsv` for all 12,101 items.
//! That split is kept when it is useful: at least two categories, none holding more than
//! [`MAX_CATEGORY_SHARE`] of the items. Otherwise (a catalog whose lists all start with the store's own
//! category gives one category for everything) every item's category moves one level down its list, to the
//! attribute after its current category (an item whose list ends there keeps it), until a level is useful;
//! when none is, the level with two or more categories and the smallest largest share is used (the top level
//! when no level has two).

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::interactions::InteractionLog;
use std::collections::HashMap;
use std::path::Path;

pub use crate::interactions::{ItemTable, UNKNOWN_CATEGORY};

/// Reads a whole text file, naming it on error; an empty (or whitespace-only) file is an error.
fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    if text.trim().is_empty() {
        return Err(empty_file(path));
    }
    Ok(text)
}

fn parse_timestamp(path: &Path, line: usize, field: &str) -> Result<f64> {
    match field.trim().parse::<f64>() {
        Ok(t) if t.is_finite() => Ok(t),
        _ => Err(DataError::parse(
            path,
            line,
            format!("timestamp `{field}` is not a finite number"),
        )),
    }
}

fn non_empty_id<'a>(path: &Path, line: usize, what: &str, field: &'a str) -> Result<&'a str> {
    let f = field.trim();
    if f.is_empty() {
        return Err(DataError::parse(path, line, format!("empty {what} id")));
    }
    Ok(f)
}

/// Calls `f` with each non-blank line of a file and its 1-based number, reading one line at a time. A file
/// without a non-blank line is an error.
fn stream_lines(path: &Path, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let (mut ln, mut any) = (0usize, false);
    loop {
        line.clear();
        ln += 1;
        let n = reader.read_line(&mut line).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => DataError::parse(path, ln, "not UTF-8 text"),
            _ => DataError::io(path, e),
        })?;
        if n == 0 {
            return if any { Ok(()) } else { Err(empty_file(path)) };
        }
        let l = line.trim_end_matches(['\n', '\r']);
        if !l.trim().is_empty() {
            any = true;
            f(ln, l)?;
        }
    }
}

/// The error for a log file without any non-blank line.
fn empty_file(path: &Path) -> DataError {
    DataError::invalid(path, "empty file")
}

// ---------------------------------------------------------------------------------------------------------
// S3-Rec

/// Streams an S3-Rec sequence file (`user item item ...` per line, integer ids, items in time order) into
/// `log`, with the line's order as the time order.
fn read_s3rec_sequences(path: &Path, log: &mut InteractionLog) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    stream_lines(path, |ln, line| {
        let canonical = |f: &str, what: &str| -> Result<String> {
            f.parse::<u64>().map(|v| v.to_string()).map_err(|_| {
                DataError::parse(
                    path,
                    ln,
                    format!("{what} id `{f}` is not a non-negative integer"),
                )
            })
        };
        let mut fields = line.split_whitespace();
        let user = canonical(fields.next().unwrap_or_default(), "user")?;
        if !seen.insert(user.clone()) {
            return Err(DataError::parse(
                path,
                ln,
                format!("user {user} appears twice"),
            ));
        }
        let before = log.len();
        for f in fields {
            log.push(&user, &canonical(f, "item")?, 0.0);
        }
        if log.len() == before {
            return Err(DataError::parse(
                path,
                ln,
                format!("user {user} has no items"),
            ));
        }
        Ok(())
    })
}

/// Reads `<Name>_item2attributes.json`: item id -> attribute ids (keys normalised to canonical integers).
pub fn read_s3rec_attributes(path: &Path) -> Result<HashMap<String, Vec<u64>>> {
    read_text(path)?;
    let raw: HashMap<String, Vec<u64>> = crate::io::read_json(path)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.trim()
                .parse::<u64>()
                .map(|id| (id.to_string(), v))
                .map_err(|_| DataError::invalid(path, format!("item key `{k}` is not an integer")))
        })
        .collect()
}

/// Reads `<Name>_attribute_names.json`: attribute id -> name.
pub fn read_s3rec_attribute_names(path: &Path) -> Result<HashMap<u64, String>> {
    read_text(path)?;
    let raw: HashMap<String, String> = crate::io::read_json(path)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.trim().parse::<u64>().map(|id| (id, v)).map_err(|_| {
                DataError::invalid(path, format!("attribute key `{k}` is not an integer"))
            })
        })
        .collect()
}

/// Reads `<Name>_item2l1category.tsv` (`item_id<TAB>l1_attr_id<TAB>l1_name`, header line first).
pub fn read_s3rec_l1_categories(path: &Path) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    stream_lines(path, |ln, line| {
        let f: Vec<&str> = line.split('\t').collect();
        if ln == 1 && f.first().is_some_and(|h| h.trim() == "item_id") {
            return Ok(());
        }
        if f.len() != 3 {
            return Err(DataError::parse(
                path,
                ln,
                format!("expected 3 tab-separated fields, found {}", f.len()),
            ));
        }
        let item = f[0].trim().parse::<u64>().map_err(|_| {
            DataError::parse(path, ln, format!("item id `{}` is not an integer", f[0]))
        })?;
        let name = f[2].trim();
        if name.is_empty() {
            return Err(DataError::parse(path, ln, "empty category name"));
        }
        out.insert(item.to_string(), name.to_string());
        Ok(())
    })?;
    Ok(out)
}

/// A category split is useful when it has at least two categories and none holds more than this share of the
/// items (see the module doc).
pub const MAX_CATEGORY_SHARE: f64 = 0.5;

/// Number of categories and the largest one's share of the items.
fn split_quality(cats: &HashMap<String, u64>) -> (usize, f64) {
    let mut sizes: HashMap<u64, usize> = HashMap::new();
    for &c in cats.values() {
        *sizes.entry(c).or_default() += 1;
    }
    let largest = sizes.values().copied().max().unwrap_or(0);
    (sizes.len(), largest as f64 / cats.len().max(1) as f64)
}

/// The derived category of each item (attribute id; see the module doc for the rule).
pub fn derive_top_level_categories(attrs: &HashMap<String, Vec<u64>>) -> HashMap<String, u64> {
    let useful = |l: &HashMap<String, u64>| {
        let (n, share) = split_quality(l);
        n >= 2 && share <= MAX_CATEGORY_SHARE
    };
    let mut levels = vec![top_level_categories(attrs)];
    let deepest = attrs.values().map(Vec::len).max().unwrap_or(0);
    for _ in 0..deepest {
        let level = &levels[levels.len() - 1];
        if useful(level) {
            break;
        }
        // One level down: the attribute after each item's current category (kept at the end of its list).
        let next: HashMap<String, u64> = level
            .iter()
            .map(|(item, &c)| {
                let v = &attrs[item];
                let down = v.iter().position(|&a| a == c).and_then(|p| v.get(p + 1));
                (item.clone(), down.copied().unwrap_or(c))
            })
            .collect();
        if &next == level {
            break;
        }
        levels.push(next);
    }
    if let Some(l) = levels.iter().position(useful) {
        return levels.swap_remove(l);
    }
    let pick = (0..levels.len())
        .map(|l| (l, split_quality(&levels[l])))
        .filter(|(_, (n, _))| *n >= 2)
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
        .map_or(0, |(l, _)| l);
    levels.swap_remove(pick)
}

/// The top level of the rule in the module doc: brand-aware first-level categories.
fn top_level_categories(attrs: &HashMap<String, Vec<u64>>) -> HashMap<String, u64> {
    let mut first = std::collections::HashSet::new();
    let mut second = std::collections::HashSet::new();
    let mut freq: HashMap<u64, usize> = HashMap::new();
    for v in attrs.values() {
        if let Some(&a) = v.first() {
            first.insert(a);
        }
        if let Some(&a) = v.get(1) {
            second.insert(a);
        }
        let mut uniq = v.clone();
        uniq.sort_unstable();
        uniq.dedup();
        for a in uniq {
            *freq.entry(a).or_default() += 1;
        }
    }
    let top: std::collections::HashSet<u64> = first.intersection(&second).copied().collect();
    let mut out = HashMap::new();
    for (item, v) in attrs {
        let pick = v.iter().find(|a| top.contains(a)).copied().or_else(|| {
            // Most shared attribute, earliest in the list on ties.
            let mut best: Option<(usize, u64)> = None;
            for &a in v {
                let f = freq.get(&a).copied().unwrap_or(0);
                if best.is_none_or(|(bf, _)| f > bf) {
                    best = Some((f, a));
                }
            }
            best.map(|(_, a)| a)
        });
        if let Some(a) = pick {
            out.insert(item.clone(), a);
        }
    }
    out
}

/// Paths of an S3-Rec dataset's files; only `sequences` is required.
#[derive(Debug, Clone)]
pub struct S3RecFiles<'a> {
    pub sequences: &'a Path,
    pub attributes: Option<&'a Path>,
    pub attribute_names: Option<&'a Path>,
    pub l1_categories: Option<&'a Path>,
}

/// Loads an S3-Rec dataset. Attribute tokens are the attribute names (or `attr<id>` without a names file).
pub fn load_s3rec(name: &str, files: &S3RecFiles<'_>) -> Result<Dataset> {
    let mut log = InteractionLog::new();
    read_s3rec_sequences(files.sequences, &mut log)?;
    let attrs = match files.attributes {
        Some(p) => read_s3rec_attributes(p)?,
        None => HashMap::new(),
    };
    let names = match files.attribute_names {
        Some(p) => read_s3rec_attribute_names(p)?,
        None => HashMap::new(),
    };
    let attr_name = |a: u64| names.get(&a).cloned().unwrap_or_else(|| format!("attr{a}"));
    let categories: HashMap<String, String> = match files.l1_categories {
        Some(p) => read_s3rec_l1_categories(p)?,
        None => derive_top_level_categories(&attrs)
            .into_iter()
            .map(|(i, a)| (i, attr_name(a)))
            .collect(),
    };
    let attributes: HashMap<String, Vec<String>> = attrs
        .iter()
        .map(|(i, v)| (i.clone(), v.iter().map(|&a| attr_name(a)).collect()))
        .collect();
    let side = ItemTable {
        categories,
        attributes,
        names: HashMap::new(),
    };
    log.into_dataset(name, files.sequences, &side)
}

// ---------------------------------------------------------------------------------------------------------
// RecBole atomic files

/// A parsed atomic-file header: field names and types in column order.
struct AtomicHeader {
    fields: Vec<(String, String)>,
}

impl AtomicHeader {
    fn parse(path: &Path, line: &str) -> Result<Self> {
        let mut fields = Vec::new();
        for f in line.split('\t') {
            let (name, ty) = f.trim().split_once(':').ok_or_else(|| {
                DataError::parse(
                    path,
                    1,
                    format!("header field `{f}` is not `name:type` (RecBole atomic header)"),
                )
            })?;
            fields.push((name.to_string(), ty.to_string()));
        }
        Ok(Self { fields })
    }

    fn column(&self, names: &[&str]) -> Option<usize> {
        names
            .iter()
            .find_map(|n| self.fields.iter().position(|(f, _)| f == n))
    }

    fn require(&self, path: &Path, name: &str) -> Result<usize> {
        self.column(&[name])
            .ok_or_else(|| DataError::parse(path, 1, format!("header has no `{name}` field")))
    }
}

/// Splits a data line of an atomic file, checking the field count.
fn atomic_fields<'a>(path: &Path, ln: usize, line: &'a str, n: usize) -> Result<Vec<&'a str>> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != n {
        return Err(DataError::parse(
            path,
            ln,
            format!("expected {n} tab-separated fields, found {}", f.len()),
        ));
    }
    Ok(f)
}

/// Streams a RecBole `.inter` file into `log`.
fn read_atomic_inter(path: &Path, log: &mut InteractionLog) -> Result<()> {
    // Columns of user, item and timestamp, and the field count, once the header is read.
    let mut columns: Option<(usize, usize, Option<usize>, usize)> = None;
    stream_lines(path, |ln, line| {
        let Some((cu, ci, ct, n)) = columns else {
            let header = AtomicHeader::parse(path, line)?;
            columns = Some((
                header.require(path, "user_id")?,
                header.require(path, "item_id")?,
                header.column(&["timestamp"]),
                header.fields.len(),
            ));
            return Ok(());
        };
        let f = atomic_fields(path, ln, line, n)?;
        let u = non_empty_id(path, ln, "user", f[cu])?;
        let i = non_empty_id(path, ln, "item", f[ci])?;
        let t = match ct {
            Some(c) => parse_timestamp(path, ln, f[c])?,
            None => 0.0,
        };
        log.push(u, i, t);
        Ok(())
    })?;
    if log.is_empty() {
        return Err(DataError::invalid(path, "no interactions after the header"));
    }
    Ok(())
}

/// Reads a RecBole `.item` file: per item, the category (when the file has a category field), attribute
/// tokens, and the display name (the text of a [`NAME_COLUMNS`] field, also read as attribute tokens).
pub fn read_atomic_item(path: &Path) -> Result<ItemTable> {
    // The header with its item, category and name columns, once read.
    let mut head: Option<(AtomicHeader, usize, Option<usize>, Option<usize>)> = None;
    let mut cats = HashMap::new();
    let mut attrs = HashMap::new();
    let mut names = HashMap::new();
    stream_lines(path, |ln, line| {
        let Some((header, ci, ccat, cname)) = &head else {
            let header = AtomicHeader::parse(path, line)?;
            let ci = header.require(path, "item_id")?;
            let ccat = header.column(&["category", "categories", "class", "genre", "genres"]);
            let cname = header.column(NAME_COLUMNS);
            head = Some((header, ci, ccat, cname));
            return Ok(());
        };
        let (ci, ccat, cname) = (*ci, *ccat, *cname);
        let f = atomic_fields(path, ln, line, header.fields.len())?;
        let item = non_empty_id(path, ln, "item", f[ci])?.to_string();
        if let Some(c) = ccat {
            if let Some(first) = f[c].split_whitespace().next() {
                cats.insert(item.clone(), first.to_string());
            }
        }
        if let Some(n) = cname.map(|c| f[c].trim()).filter(|n| !n.is_empty()) {
            names.insert(item.clone(), n.to_string());
        }
        let mut tokens = Vec::new();
        for (col, (name, ty)) in header.fields.iter().enumerate() {
            if col == ci {
                continue;
            }
            match ty.as_str() {
                "token" if !f[col].trim().is_empty() => {
                    tokens.push(format!("{name}={}", f[col].trim()));
                }
                "token_seq" => {
                    for w in f[col].split_whitespace() {
                        let w: String = if Some(col) == ccat {
                            w.to_string()
                        } else {
                            w.chars()
                                .filter(|c| c.is_alphanumeric())
                                .flat_map(char::to_lowercase)
                                .collect()
                        };
                        if !w.is_empty() {
                            tokens.push(format!("{name}={w}"));
                        }
                    }
                }
                _ => {}
            }
        }
        attrs.insert(item, tokens);
        Ok(())
    })?;
    Ok(ItemTable {
        categories: cats,
        attributes: attrs,
        names,
    })
}

/// Loads RecBole atomic files: an `.inter` and an optional `.item`.
pub fn load_atomic(name: &str, inter: &Path, item: Option<&Path>) -> Result<Dataset> {
    let mut log = InteractionLog::new();
    read_atomic_inter(inter, &mut log)?;
    let table = match item {
        Some(p) => read_atomic_item(p)?,
        None => ItemTable::default(),
    };
    log.into_dataset(name, inter, &table)
}

// ---------------------------------------------------------------------------------------------------------
// CSV

/// Column names a CSV header or a Parquet schema may use (case-insensitive) for the user, the item, the
/// timestamp and the optional category.
const USER_COLUMNS: &[&str] = &["user", "user_id", "userid"];
const ITEM_COLUMNS: &[&str] = &["item", "item_id", "itemid"];
const TIME_COLUMNS: &[&str] = &["timestamp", "time", "ts"];
const CATEGORY_COLUMNS: &[&str] = &["category", "categories"];
/// Column names (case-insensitive) that give an item's display name, in a CSV header, a Parquet schema or a
/// RecBole `.item` header (ml-100k's `movie_title`).
pub const NAME_COLUMNS: &[&str] = &["name", "title", "item_name", "movie_title"];

/// Column positions of a CSV log: user, item, timestamp, category and name (both optional; a name column needs a
/// header).
type CsvColumns = (usize, usize, usize, Option<usize>, Option<usize>);

/// Position of the first of `names` among `header` (case-insensitive).
fn find_column<'a>(header: impl Iterator<Item = &'a str>, names: &[&str]) -> Option<usize> {
    let header: Vec<String> = header.map(|h| h.trim().to_lowercase()).collect();
    names
        .iter()
        .find_map(|n| header.iter().position(|h| h == n))
}

/// The columns a header row names, or `None` when `fields` is not a header (no user column).
fn csv_header(path: &Path, line: usize, fields: &csv::StringRecord) -> Result<Option<CsvColumns>> {
    let find = |names: &[&str]| find_column(fields.iter(), names);
    if find(USER_COLUMNS).is_none() {
        return Ok(None);
    }
    let need = |names: &[&str], what: &str| {
        find(names)
            .ok_or_else(|| DataError::parse(path, line, format!("header has no `{what}` column")))
    };
    Ok(Some((
        need(USER_COLUMNS, "user")?,
        need(ITEM_COLUMNS, "item")?,
        need(TIME_COLUMNS, "timestamp")?,
        find(CATEGORY_COLUMNS),
        find(NAME_COLUMNS),
    )))
}

/// Loads a CSV log `user,item,timestamp[,category]`: RFC 4180 quoting, a UTF-8 byte-order mark and CRLF line
/// ends are accepted; a header row (recognised by a `user` column) may name the columns in any order; without
/// one the columns are positional.
pub fn load_csv(name: &str, path: &Path) -> Result<Dataset> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let mut cols: CsvColumns = (0, 1, 2, Some(3), None);
    let mut n_fields: Option<usize> = None;
    let mut first = true;
    let mut log = InteractionLog::new();
    let mut f = csv::StringRecord::new();
    loop {
        let more = reader.read_record(&mut f).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            DataError::parse(path, line, format!("malformed CSV: {e}"))
        })?;
        if !more {
            break;
        }
        let ln = f.position().map_or(0, |p| p.line() as usize);
        if f.iter().all(|x| x.trim().is_empty()) {
            continue;
        }
        if std::mem::take(&mut first) {
            if let Some(c) = csv_header(path, ln, &f)? {
                (cols, n_fields) = (c, Some(f.len()));
                continue;
            }
        }
        let ok = match n_fields {
            Some(n) => f.len() == n,
            None => f.len() == 3 || f.len() == 4,
        };
        if !ok {
            let expected = n_fields.map_or("3 or 4".to_string(), |n| n.to_string());
            return Err(DataError::parse(
                path,
                ln,
                format!(
                    "expected {expected} comma-separated fields, found {}",
                    f.len()
                ),
            ));
        }
        let u = non_empty_id(path, ln, "user", &f[cols.0])?;
        let i = non_empty_id(path, ln, "item", &f[cols.1])?;
        let t = parse_timestamp(path, ln, &f[cols.2])?;
        let item = log.push(u, i, t);
        if let Some(c) = cols.3.and_then(|c| f.get(c)).map(str::trim) {
            if !c.is_empty() {
                log.set_category(item, c);
            }
        }
        if let Some(n) = cols.4.and_then(|c| f.get(c)) {
            log.set_name(item, n);
        }
    }
    if first {
        return Err(empty_file(path));
    }
    log.into_dataset(name, path, &ItemTable::default())
}

// ---------------------------------------------------------------------------------------------------------
// Parquet

#[cfg(feature = "parquet")]
pub use parquet_log::load_parquet;

#[cfg(feature = "parquet")]
mod parquet_log {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    use arrow_array::{Array, ArrayRef};
    use arrow_schema::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    /// Rows per record batch read.
    const BATCH_ROWS: usize = 65_536;

    /// Loads a Parquet log with a user, an item and a timestamp column and optional category and name columns,
    /// named as in a CSV header (`user`/`user_id`, `item`/`item_id`, `timestamp`/`time`/`ts`, `category`, `name`; any case,
    /// any order, other columns ignored). Ids may be strings or integers; the timestamp any number, a date or
    /// a timestamp type (ordered by its stored value). Reads one record batch at a time. A missing value is an
    /// error naming the file, the column and the row (1-based).
    pub fn load_parquet(name: &str, path: &Path) -> Result<Dataset> {
        let fail = |e: &dyn std::fmt::Display| DataError::invalid(path, format!("Parquet: {e}"));
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
        let fields: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let find = |names: &[&str]| find_column(fields.iter().map(String::as_str), names);
        let need = |names: &[&str], what: &str| {
            find(names).ok_or_else(|| {
                DataError::invalid(
                    path,
                    format!(
                        "no {what} column (one of {}); columns: {}",
                        names.join(", "),
                        fields.join(", ")
                    ),
                )
            })
        };
        let (cu, ci, ct) = (
            need(USER_COLUMNS, "user")?,
            need(ITEM_COLUMNS, "item")?,
            need(TIME_COLUMNS, "timestamp")?,
        );
        let cc = find(CATEGORY_COLUMNS);
        let cn = find(NAME_COLUMNS);
        let roots: Vec<usize> = [Some(cu), Some(ci), Some(ct), cc, cn]
            .into_iter()
            .flatten()
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| fail(&e))?;
        let mut log = InteractionLog::new();
        let mut row0 = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| fail(&e))?;
            let column = |c: usize| -> Result<ArrayRef> {
                batch.column_by_name(&fields[c]).cloned().ok_or_else(|| {
                    DataError::invalid(path, format!("column `{}` missing from a batch", fields[c]))
                })
            };
            let text = |c: usize| -> Result<ArrayRef> {
                arrow_cast::cast(&column(c)?, &DataType::Utf8)
                    .map_err(|e| DataError::invalid(path, format!("column `{}`: {e}", fields[c])))
            };
            let (users, items) = (text(cu)?, text(ci)?);
            let (users, items) = (users.as_string::<i32>(), items.as_string::<i32>());
            let times = timestamps(path, &fields[ct], &column(ct)?)?;
            let times = times.as_primitive::<Float64Type>();
            let cats = cc.map(text).transpose()?;
            let cats = cats.as_ref().map(|c| c.as_string::<i32>());
            let names = cn.map(text).transpose()?;
            let names = names.as_ref().map(|c| c.as_string::<i32>());
            let missing = |r: usize, c: usize, what: &str| {
                DataError::invalid(
                    path,
                    format!("row {}: column `{}`: {what}", row0 + r + 1, fields[c]),
                )
            };
            for r in 0..batch.num_rows() {
                if users.is_null(r) || users.value(r).trim().is_empty() {
                    return Err(missing(r, cu, "empty user id"));
                }
                if items.is_null(r) || items.value(r).trim().is_empty() {
                    return Err(missing(r, ci, "empty item id"));
                }
                let t = times.value(r);
                if times.is_null(r) || !t.is_finite() {
                    return Err(missing(r, ct, "missing or non-finite timestamp"));
                }
                let item = log.push(users.value(r).trim(), items.value(r).trim(), t);
                if let Some(c) = cats.filter(|c| !c.is_null(r) && !c.value(r).is_empty()) {
                    log.set_category(item, c.value(r));
                }
                if let Some(n) = names.filter(|n| !n.is_null(r)) {
                    log.set_name(item, n.value(r));
                }
            }
            row0 += batch.num_rows();
        }
        log.into_dataset(name, path, &ItemTable::default())
    }

    /// A timestamp column as `f64`: numbers as they are, dates and timestamps as their stored integer.
    fn timestamps(path: &Path, name: &str, col: &ArrayRef) -> Result<ArrayRef> {
        let err = |e: arrow_schema::ArrowError| {
            DataError::invalid(path, format!("column `{name}` is not a timestamp: {e}"))
        };
        let col = match col.data_type() {
            DataType::Timestamp(..) | DataType::Date64 | DataType::Duration(_) => {
                arrow_cast::cast(col, &DataType::Int64).map_err(err)?
            }
            DataType::Date32 => arrow_cast::cast(col, &DataType::Int32).map_err(err)?,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                return Err(DataError::invalid(
                    path,
                    format!("column `{name}` holds text; a timestamp must be a number, a date or a timestamp"),
                ))
            }
            _ => col.clone(),
        };
        arrow_cast::cast(&col, &DataType::Float64).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn s3rec_reads_sequences_attributes_and_derives_categories() {
        let d = tempfile::tempdir().unwrap();
        let seq = write(d.path(), "X.txt", "1 1 2 3\n2 3 4 1\n10 2 4\n");
        // attributes: 100/101 top-level, 7 a brand, 50/51 sub-categories.
        let attrs = write(
            d.path(),
            "X_item2attributes.json",
            r#"{"1": [100, 50], "2": [7, 101, 51], "3": [7, 100], "4": [101]}"#,
        );
        let names = write(
            d.path(),
            "X_attribute_names.json",
            r#"{"100": "Makeup", "101": "Hair", "7": "Acme", "50": "Face", "51": "Shampoo"}"#,
        );
        let files = S3RecFiles {
            sequences: &seq,
            attributes: Some(&attrs),
            attribute_names: Some(&names),
            l1_categories: None,
        };
        let ds = load_s3rec("x", &files).unwrap();
        assert_eq!(ds.user_ids, vec!["1", "2", "10"]);
        assert_eq!(ds.item_ids, vec!["1", "2", "3", "4"]);
        assert_eq!(ds.sequences, vec![vec![0, 1, 2], vec![2, 3, 0], vec![1, 3]]);
        assert_eq!(ds.category_names, vec!["Hair", "Makeup"]);
        assert_eq!(ds.item_category, vec![1, 0, 1, 0]);
        assert_eq!(ds.item_attributes[1], vec!["Acme", "Hair", "Shampoo"]);

        let l1 = write(
            d.path(),
            "X_item2l1category.tsv",
            "item_id\tl1_attr_id\tl1_name\n1\t100\tMakeup\n",
        );
        let files = S3RecFiles {
            l1_categories: Some(&l1),
            ..files
        };
        let ds = load_s3rec("x", &files).unwrap();
        assert_eq!(ds.category_names, vec!["Makeup", UNKNOWN_CATEGORY]);
        assert_eq!(ds.item_category, vec![0, 1, 1, 1]);
    }

    /// Attribute lists shaped like the registry's Amazon sets: `tops[t]` items under top-level category
    /// `100 + t`, each with one of three sub-categories `1000 + 10 t + k` and, on every other item, a brand
    /// `5000..5007`. Without `store` the brand comes first (Beauty); with it every list starts with the store's
    /// own category and the brand comes last (Sports, Toys).
    fn amazon_shaped(store: Option<u64>, tops: &[usize]) -> HashMap<String, Vec<u64>> {
        let mut attrs = HashMap::new();
        let mut item = 0u64;
        for (t, &n) in tops.iter().enumerate() {
            for j in 0..n as u64 {
                let (top, sub, brand) = (
                    100 + t as u64,
                    1000 + 10 * t as u64 + j % 3,
                    5000 + item % 7,
                );
                let v = match (store, item.is_multiple_of(2)) {
                    (None, true) => vec![brand, top, sub],
                    (None, false) => vec![top, sub],
                    (Some(s), true) => vec![s, top, sub, brand],
                    (Some(s), false) => vec![s, top, sub],
                };
                attrs.insert(item.to_string(), v);
                item += 1;
            }
        }
        attrs
    }

    /// Position `p` of every item's list.
    fn at_level(
        attrs: &HashMap<String, Vec<u64>>,
        p: impl Fn(&[u64]) -> usize,
    ) -> HashMap<String, u64> {
        attrs.iter().map(|(i, v)| (i.clone(), v[p(v)])).collect()
    }

    #[test]
    fn derived_categories_split_every_catalog_shape_usefully() {
        // Beauty: the brand-aware top level is already useful.
        let beauty = amazon_shaped(None, &[40, 35, 25]);
        let top = |v: &[u64]| usize::from(v[0] >= 5000);
        assert_eq!(derive_top_level_categories(&beauty), at_level(&beauty, top));
        // Store first on every item: the top level is one category, so the split moves one level down.
        let store = amazon_shaped(Some(1), &[40, 35, 25]);
        assert_eq!(split_quality(&top_level_categories(&store)), (1, 1.0));
        let derived = derive_top_level_categories(&store);
        assert_eq!(derived, at_level(&store, |_| 1));
        assert_eq!(split_quality(&derived), (3, 0.4));
        // A dominant second level (80% of the items) moves down once more, to the sub-categories.
        let skewed = amazon_shaped(Some(1), &[80, 10, 10]);
        let derived = derive_top_level_categories(&skewed);
        assert_eq!(derived, at_level(&skewed, |_| 2));
        assert_eq!(split_quality(&derived).0, 9);
        // No useful level: the one with two or more categories and the smallest largest share.
        let flat: HashMap<String, Vec<u64>> = (0..10u64)
            .map(|i| (i.to_string(), vec![1, 2 + u64::from(i == 0)]))
            .collect();
        assert_eq!(split_quality(&derive_top_level_categories(&flat)), (2, 0.9));
        // A single shared attribute stays one category (the loader warns about it).
        let one: HashMap<String, Vec<u64>> =
            (0..5).map(|i: u64| (i.to_string(), vec![7])).collect();
        assert_eq!(split_quality(&derive_top_level_categories(&one)), (1, 1.0));
    }

    #[test]
    fn s3rec_bad_input_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "B.txt", "1 1 2\n2 3 x\n");
        let e = err_text(read_s3rec_sequences(&p, &mut InteractionLog::new()));
        assert!(e.contains("B.txt:2") && e.contains("`x`"), "{e}");
        let p = write(d.path(), "C.txt", "1 1 2\nabc 3\n");
        let e = err_text(read_s3rec_sequences(&p, &mut InteractionLog::new()));
        assert!(e.contains("C.txt:2") && e.contains("user id"), "{e}");
        let p = write(d.path(), "D.txt", "1 1 2\n\n7\n");
        let e = err_text(read_s3rec_sequences(&p, &mut InteractionLog::new()));
        assert!(e.contains("D.txt:3") && e.contains("no items"), "{e}");
        let p = write(d.path(), "E.txt", "  \n");
        let e = err_text(read_s3rec_sequences(&p, &mut InteractionLog::new()));
        assert!(e.contains("E.txt") && e.contains("empty file"), "{e}");
        let p = write(d.path(), "F_item2attributes.json", "{\"1\": [1,\n 2,, 3]}");
        let e = err_text(read_s3rec_attributes(&p));
        assert!(e.contains("F_item2attributes.json:2"), "{e}");
        let p = write(d.path(), "G.tsv", "item_id\tl1_attr_id\tl1_name\n1\t2\n");
        let e = err_text(read_s3rec_l1_categories(&p));
        assert!(
            e.contains("G.tsv:2") && e.contains("3 tab-separated"),
            "{e}"
        );
        let e = err_text(read_s3rec_sequences(
            &d.path().join("missing.txt"),
            &mut InteractionLog::new(),
        ));
        assert!(e.contains("missing.txt"), "{e}");
    }

    #[test]
    fn atomic_files_order_by_timestamp_and_read_item_features() {
        let d = tempfile::tempdir().unwrap();
        let inter = write(
            d.path(),
            "m.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
             u1\t10\t3\t300\nu1\t20\t4\t100\nu2\t10\t5\t50\nu1\t30\t1\t100\n",
        );
        let item = write(
            d.path(),
            "m.item",
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
             10\tToy Story!\t1995\tAnimation Comedy\n20\tHeat\t1995\t\n",
        );
        let ds = load_atomic("m", &inter, Some(&item)).unwrap();
        assert_eq!(ds.user_ids, vec!["u1", "u2"]);
        assert_eq!(ds.item_ids, vec!["10", "20", "30"]);
        // u1: 20 (t=100), 30 (t=100, later in the file), 10 (t=300).
        assert_eq!(ds.sequences[0], vec![1, 2, 0]);
        assert_eq!(ds.category_names, vec!["Animation", UNKNOWN_CATEGORY]);
        assert_eq!(ds.item_category, vec![0, 1, 1]);
        assert_eq!(
            ds.item_attributes[0],
            vec![
                "movie_title=toy",
                "movie_title=story",
                "release_year=1995",
                "class=Animation",
                "class=Comedy"
            ]
        );
        assert!(ds.item_attributes[2].is_empty());
        // The title is also the display name, as written; item 30 has no row in the item file.
        assert_eq!(ds.item_names, vec!["Toy Story!", "Heat", ""]);
    }

    #[test]
    fn atomic_bad_input_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let h = "user_id:token\titem_id:token\ttimestamp:float\n";
        let p = write(d.path(), "a.inter", &format!("{h}1\t2\t3\n1\t2\tnoon\n"));
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(e.contains("a.inter:3") && e.contains("timestamp"), "{e}");
        let p = write(d.path(), "b.inter", &format!("{h}1\t2\n"));
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(e.contains("b.inter:2") && e.contains("expected 3"), "{e}");
        let p = write(d.path(), "c.inter", "user\titem\n1\t2\n");
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(e.contains("c.inter:1") && e.contains("name:type"), "{e}");
        let p = write(d.path(), "d.inter", "user_id:token\tts:float\n1\t2\n");
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(e.contains("item_id"), "{e}");
        let p = write(d.path(), "e.inter", h);
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(
            e.contains("e.inter") && e.contains("no interactions"),
            "{e}"
        );
        let p = write(d.path(), "f.inter", "");
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(e.contains("f.inter") && e.contains("empty file"), "{e}");
        let p = write(d.path(), "g.inter", &format!("{h}1\t\t5\n"));
        let e = err_text(read_atomic_inter(&p, &mut InteractionLog::new()));
        assert!(
            e.contains("g.inter:2") && e.contains("empty item id"),
            "{e}"
        );
    }

    #[test]
    fn csv_with_and_without_header() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "a.csv",
            "1,5,20,shoes\n1,6,10,hats\n2,5,1,boots\n",
        );
        let ds = load_csv("a", &p).unwrap();
        assert_eq!(ds.sequences, vec![vec![1, 0], vec![0]]);
        // first row wins for item 5's category.
        assert_eq!(ds.category_names, vec!["hats", "shoes"]);
        assert_eq!(ds.item_category, vec![1, 0]);
        // A header may name the columns in any order.
        let p = write(d.path(), "b.csv", "timestamp,item,user\n5,x,u\n1,y,u\n");
        let ds = load_csv("b", &p).unwrap();
        assert_eq!(
            (ds.user_ids.clone(), ds.item_ids.clone()),
            (
                vec!["u".to_string()],
                vec!["x".to_string(), "y".to_string()]
            )
        );
        assert_eq!(ds.sequences, vec![vec![1, 0]]);
        // Quoted fields (commas inside), a byte-order mark and CRLF line ends.
        let p = write(
            d.path(),
            "q.csv",
            "\u{feff}user_id,item_id,timestamp,category\r\n\"u,1\",\"i 1\",2,\"Hats, caps\"\r\n\"u,1\",i2,1,\"Shoes \"\"x\"\"\"\r\n",
        );
        let ds = load_csv("q", &p).unwrap();
        assert_eq!(ds.user_ids, vec!["u,1"]);
        assert_eq!(ds.item_ids, vec!["i 1", "i2"]);
        assert_eq!(ds.sequences, vec![vec![1, 0]]);
        assert_eq!(ds.category_names, vec!["Hats, caps", "Shoes \"x\""]);
        let p = write(d.path(), "h.csv", "user,timestamp\nu,5\n");
        let e = err_text(load_csv("h", &p));
        assert!(e.contains("h.csv:1") && e.contains("`item`"), "{e}");
        let p = write(d.path(), "c.csv", "user,timestamp,item\nu,5,x\nu,1.5,y\n");
        let ds = load_csv("c", &p).unwrap();
        assert_eq!(ds.item_ids, vec!["x", "y"]);
        assert_eq!(ds.sequences, vec![vec![1, 0]]);
        assert_eq!(ds.category_names, vec![UNKNOWN_CATEGORY]);
        assert!(ds.item_names.is_empty() && ds.item_name(0).is_none());
        // A name column (any case; the first row that names an item wins; an item may have none).
        let p = write(
            d.path(),
            "n.csv",
            "user,item,timestamp,Title\nu,x,1,\"Heat (1995)\"\nv,x,2,Other\nu,y,3,\n",
        );
        let ds = load_csv("n", &p).unwrap();
        assert_eq!(ds.item_names, vec!["Heat (1995)", ""]);
        assert_eq!(ds.item_name(0), Some("Heat (1995)"));
        assert_eq!(ds.item_name(1), None);
    }

    #[test]
    fn csv_bad_input_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "a.csv", "1,5,20\n1,6\n");
        let e = err_text(load_csv("a", &p));
        assert!(e.contains("a.csv:2") && e.contains("found 2"), "{e}");
        let p = write(
            d.path(),
            "b.csv",
            "user,item,timestamp\n1,5,20\n1,6,yesterday\n",
        );
        let e = err_text(load_csv("b", &p));
        assert!(e.contains("b.csv:3") && e.contains("yesterday"), "{e}");
        let p = write(d.path(), "c.csv", "user,item,timestamp\n");
        let e = err_text(load_csv("c", &p));
        assert!(e.contains("c.csv") && e.contains("no interactions"), "{e}");
        let p = write(d.path(), "d.csv", "\n\n");
        let e = err_text(load_csv("d", &p));
        assert!(e.contains("d.csv") && e.contains("empty file"), "{e}");
        let p = write(d.path(), "e.csv", "1,5,NaN\n");
        let e = err_text(load_csv("e", &p));
        assert!(e.contains("e.csv:1"), "{e}");
        // An unterminated quote runs to the end of the file: the row count is wrong, on the line it starts.
        let p = write(d.path(), "f.csv", "1,5,20\n1,\"6,30\n2,7,40\n");
        let e = err_text(load_csv("f", &p));
        assert!(e.contains("f.csv:2") && e.contains("fields"), "{e}");
    }

    #[cfg(feature = "parquet")]
    mod parquet {
        use super::*;
        use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampSecondArray};
        use std::sync::Arc;

        fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
            let batch = RecordBatch::try_from_iter(columns).unwrap();
            let file = std::fs::File::create(path).unwrap();
            let mut w = ::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }

        fn strings(v: &[&str]) -> ArrayRef {
            Arc::new(StringArray::from(v.to_vec()))
        }

        #[test]
        fn parquet_reads_like_the_same_csv() {
            let d = tempfile::tempdir().unwrap();
            let csv = write(
                d.path(),
                "log.csv",
                "user,item,timestamp,category\n7,10,300,Hats\n7,20,100,\n3,10,50,Socks\n7,30,100,Shoes\n",
            );
            // Other column names, another order, integer ids, a timestamp type, an ignored column.
            let pq = d.path().join("log.parquet");
            write_parquet(
                &pq,
                vec![
                    (
                        "Timestamp",
                        Arc::new(TimestampSecondArray::from(vec![300, 100, 50, 100])) as ArrayRef,
                    ),
                    (
                        "rating",
                        Arc::new(Int32Array::from(vec![5, 4, 3, 2])) as ArrayRef,
                    ),
                    (
                        "ITEM_ID",
                        Arc::new(Int32Array::from(vec![10, 20, 10, 30])) as ArrayRef,
                    ),
                    (
                        "user_id",
                        Arc::new(Int32Array::from(vec![7, 7, 3, 7])) as ArrayRef,
                    ),
                    (
                        "category",
                        Arc::new(StringArray::from(vec![
                            Some("Hats"),
                            None,
                            Some("Socks"),
                            Some("Shoes"),
                        ])) as ArrayRef,
                    ),
                    (
                        "name",
                        Arc::new(StringArray::from(vec![
                            Some("Cap"),
                            None,
                            None,
                            Some("Boot"),
                        ])) as ArrayRef,
                    ),
                ],
            );
            let a = load_csv("log", &csv).unwrap();
            let b = load_parquet("log", &pq).unwrap();
            assert_eq!(a.sequences, vec![vec![0], vec![1, 2, 0]]);
            // Names are display only: the fingerprint (what a model depends on) ignores them.
            assert_eq!(a.fingerprint(), b.fingerprint());
            assert_eq!(b.category_names, vec!["Hats", "Shoes", UNKNOWN_CATEGORY]);
            assert_eq!(b.item_names, vec!["Cap", "", "Boot"]);
        }

        #[test]
        fn parquet_bad_input_names_file_column_and_row() {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("a.parquet");
            write_parquet(
                &p,
                vec![
                    ("user", strings(&["u", "v"])),
                    (
                        "item",
                        Arc::new(StringArray::from(vec![Some("x"), None])) as ArrayRef,
                    ),
                    ("ts", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
                ],
            );
            let e = err_text(load_parquet("a", &p));
            assert!(
                e.contains("a.parquet") && e.contains("row 2") && e.contains("`item`"),
                "{e}"
            );
            let p = d.path().join("b.parquet");
            write_parquet(
                &p,
                vec![("user", strings(&["u"])), ("time", strings(&["noon"]))],
            );
            let e = err_text(load_parquet("b", &p));
            assert!(
                e.contains("b.parquet") && e.contains("no item column") && e.contains("user, time"),
                "{e}"
            );
            let p = d.path().join("c.parquet");
            write_parquet(
                &p,
                vec![
                    ("user", strings(&["u"])),
                    ("item", strings(&["x"])),
                    ("time", strings(&["noon"])),
                ],
            );
            let e = err_text(load_parquet("c", &p));
            assert!(
                e.contains("c.parquet") && e.contains("`time` holds text"),
                "{e}"
            );
            let p = write(d.path(), "d.parquet", "user,item,timestamp\n1,2,3\n");
            let e = err_text(load_parquet("d", &p));
            assert!(e.contains("d.parquet") && e.contains("Parquet"), "{e}");
            let p = d.path().join("e.parquet");
            write_parquet(
                &p,
                vec![
                    ("user", strings(&[])),
                    ("item", strings(&[])),
                    (
                        "ts",
                        Arc::new(Int32Array::from(Vec::<i32>::new())) as ArrayRef,
                    ),
                ],
            );
            let e = err_text(load_parquet("e", &p));
            assert!(
                e.contains("e.parquet") && e.contains("no interactions"),
                "{e}"
            );
        }
    }
}
