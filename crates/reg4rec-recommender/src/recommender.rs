//! [`Recommender`]: a loaded model directory that turns histories into explained top-k lists.

use crate::catalog::Catalog;
use crate::error::{RecommenderError, Result};
use crate::model_dir::{self, CATALOG_FILE, SOURCE_FILE};
use crate::source::DataSource;
use reg4rec_data::io::read_json;
use reg4rec_data::Dataset;
use reg4rec_infer::{BeamSearch, Explanation, InferConfig, ModelScorer, Rank, SearchStats};
use reg4rec_model::config::Mode;
use reg4rec_model::{load_model, Reg4RecModel, Which};
use reg4rec_tokenizer::{Codes, ItemIndex};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What a request may ask for besides the history. Every field has a default (JSON: all optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendOptions {
    /// Items returned, best first. Default 10.
    pub k: usize,
    /// Beam width (default: the recommender's `infer.beam`).
    pub beam: Option<usize>,
    /// What orders the list: `paths` (the reasoning path's score alone) or `hybrid` (with the item head);
    /// default: the recommender's `infer.rank`.
    pub rank: Option<Rank>,
    /// Only recommend items of these categories (by name; empty: every category).
    pub allowed_categories: Vec<String>,
    /// Never recommend items of these categories.
    pub blocked_categories: Vec<String>,
    /// Never recommend these items (original ids).
    pub exclude_items: Vec<String>,
    /// Never recommend the history's own items. Default false.
    pub exclude_history: bool,
    /// Give each item's per-step categories (the path's tokens and log-probabilities are always given).
    pub explain: bool,
}

impl Default for RecommendOptions {
    fn default() -> Self {
        RecommendOptions {
            k: 10,
            beam: None,
            rank: None,
            allowed_categories: Vec::new(),
            blocked_categories: Vec::new(),
            exclude_items: Vec::new(),
            exclude_history: false,
            explain: false,
        }
    }
}

/// One request of a batch: a history (original item ids, oldest first) and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub history: Vec<String>,
    pub options: RecommendOptions,
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommended {
    /// 1-based.
    pub rank: usize,
    pub item_id: String,
    /// The item's display name, when the catalog has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub category: String,
    /// True for an item added after training.
    pub added: bool,
    /// Score, path score, item-head log-probability and the reasoning path.
    pub explanation: Explanation,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendations {
    pub items: Vec<Recommended>,
    /// The catalog version the list was computed on.
    pub catalog_version: u64,
    /// Why the list is shorter than `k`, when it is (the beam reached fewer items that pass the request's
    /// constraints; a wider beam reaches more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// What a recommender is, for `/v1/info` and logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub dir: PathBuf,
    pub mode: Mode,
    pub n_items: usize,
    pub n_trained_items: usize,
    pub n_available_items: usize,
    pub categories: Vec<String>,
    pub catalog_version: u64,
    pub history_len: usize,
    pub m: usize,
    pub d: usize,
    pub infer: InferConfig,
    pub data: String,
    /// False when the directory has no manifest (written before manifests were recorded).
    pub verified: bool,
}

/// A model directory loaded for recommendation. Owns the model, the item codes and index, the catalog and the
/// inference settings, and applies the model kind's rules once (a TIGER model over ordered codes is searched
/// without CORP).
pub struct Recommender {
    dir: PathBuf,
    model: Reg4RecModel,
    /// The item index, which holds every item's codes (trained and added).
    index: ItemIndex,
    catalog: Catalog,
    ids: HashMap<String, u32>,
    source: DataSource,
    infer: InferConfig,
    verified: bool,
    /// The model's encoder input table, computed once (again after items are added).
    table: tch::Tensor,
}

impl std::fmt::Debug for Recommender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommender")
            .field("dir", &self.dir)
            .field("n_items", &self.index.n_items())
            .finish_non_exhaustive()
    }
}

impl Recommender {
    /// Loads `dir` on the CPU with the default inference settings and the search the directory records
    /// ([`model_dir::ChosenSearch`]: the CORP threshold a pipeline chose on validation), when it has one.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let mut infer = InferConfig::default();
        if let Some(s) = model_dir::read_search(dir.as_ref())? {
            infer.theta = s.theta;
        }
        Self::load_with(dir, &infer, tch::Device::Cpu)
    }

    /// Loads `dir` with inference settings `infer` on `device`: verifies the manifest, reads the codes, the
    /// catalog and the best weights, and adds the catalog's items added after training.
    pub fn load_with(
        dir: impl AsRef<Path>,
        infer: &InferConfig,
        device: tch::Device,
    ) -> Result<Self> {
        Self::load_weights(dir, Which::Best, infer, device)
    }

    /// [`Recommender::load_with`] with the run's `which` weights: the best validation checkpoint (what
    /// the manifest covers) or the latest one (checked by its own checksum), for instance to measure an aligned
    /// model whose validation never beat the pre-trained one.
    pub fn load_weights(
        dir: impl AsRef<Path>,
        which: Which,
        infer: &InferConfig,
        device: tch::Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let dir = std::path::absolute(dir)
            .map_err(|e| RecommenderError::file(dir, format!("cannot resolve the path: {e}")))?;
        model_dir::require(&dir)?;
        let manifest = model_dir::verify(&dir)?;
        if manifest.is_none() {
            tracing::warn!(
                dir = %dir.display(),
                "no manifest.json (written before manifests were recorded): only the weights' own checksums \
                 are verified"
            );
        }
        let (trained_codes, source) = model_dir::read_extras(&dir)?;
        let n_trained = trained_codes.n_items();
        let catalog_path = dir.join(CATALOG_FILE);
        let catalog = if catalog_path.is_file() {
            let c: Catalog = read_json(&catalog_path)?;
            c.validate(trained_codes.m, n_trained, &catalog_path)?;
            c
        } else {
            let ds = source.load(&dir.join(SOURCE_FILE))?;
            let c = Catalog::of(&ds);
            c.validate(trained_codes.m, n_trained, &dir.join(SOURCE_FILE))?;
            c
        };
        let (mut model, _) = load_model(&dir, which, &trained_codes, device)?;
        let mut codes = trained_codes;
        if !catalog.added_tuples.is_empty() {
            codes.tuples.extend_from_slice(&catalog.added_tuples);
            codes
                .validate()
                .map_err(|e| RecommenderError::file(&catalog_path, e.to_string()))?;
            model.add_items(&catalog.added_tuples)?;
        }
        let index = ItemIndex::new(&codes)
            .map_err(|e| RecommenderError::file(&catalog_path, e.to_string()))?;
        let table = tch::no_grad(|| model.stream_table());
        let mut r = Recommender {
            table,
            ids: catalog.id_map(),
            dir,
            model,
            index,
            catalog,
            source,
            infer: InferConfig::default(),
            verified: manifest.is_some(),
        };
        r.set_infer(infer)?;
        Ok(r)
    }

    /// Sets the inference settings (validated); a TIGER model's CORP threshold is turned off.
    pub fn set_infer(&mut self, infer: &InferConfig) -> Result<()> {
        infer.validate()?;
        self.infer = infer.for_mode(self.model.config().mode);
        Ok(())
    }

    pub fn infer(&self) -> &InferConfig {
        &self.infer
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn model(&self) -> &Reg4RecModel {
        &self.model
    }

    pub fn codes(&self) -> &Codes {
        self.index.codes()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// The data the model was trained on, loaded again and checked against the recorded fingerprint (for
    /// evaluation).
    pub fn training_data(&self) -> Result<Dataset> {
        self.source.load(&self.dir.join(SOURCE_FILE))
    }

    /// Each trained item's long-tail flag: outside the most popular `head_share` of the catalogue by the
    /// training split's interactions ([`reg4rec_data::metrics::long_tail`], the long-tail reward's definition;
    /// reads the training data again). Items added later are not covered (no training interaction: the tail).
    pub fn long_tail(&self, head_share: f64) -> Result<Vec<bool>> {
        let ds = self.training_data()?;
        let split = reg4rec_data::LeaveOneOut::new(&ds);
        Ok(reg4rec_data::metrics::long_tail(
            &split.train,
            ds.n_items(),
            head_share,
        ))
    }

    pub fn info(&self) -> Info {
        Info {
            dir: self.dir.clone(),
            mode: self.model.config().mode,
            n_items: self.index.n_items(),
            n_trained_items: self.catalog.n_trained,
            n_available_items: self.catalog.n_items() - self.catalog.unavailable.len(),
            categories: self.catalog.category_names.clone(),
            catalog_version: self.catalog.version,
            history_len: self.model.config().history_len,
            m: self.codes().m,
            d: self.codes().d,
            infer: self.infer.clone(),
            data: self.source.describe(),
            verified: self.verified,
        }
    }

    /// The item index of an original id.
    pub fn item(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    /// Top-`options.k` items for one history (original ids, oldest first; an empty history gives the
    /// model's recommendations for a user with no interactions yet).
    pub fn recommend(
        &self,
        history: &[String],
        options: &RecommendOptions,
    ) -> Result<Recommendations> {
        let q = Query {
            history: history.to_vec(),
            options: options.clone(),
        };
        self.recommend_batch(std::slice::from_ref(&q))
            .map(|(mut v, _)| v.remove(0))?
    }

    /// Answers several queries with one batched search per distinct beam width. Each query gets its own result
    /// (a bad query does not fail the others); the search counters come back alongside. A query's list does not
    /// depend on the other queries of the batch (its scores may differ in the last bits: batched matrix
    /// products round differently).
    #[allow(clippy::type_complexity)]
    pub fn recommend_batch(
        &self,
        queries: &[Query],
    ) -> Result<(Vec<Result<Recommendations>>, SearchStats)> {
        let mut out: Vec<Option<Result<Recommendations>>> =
            (0..queries.len()).map(|_| None).collect();
        let mut groups: BTreeMap<(usize, Rank), Vec<(usize, Prepared)>> = BTreeMap::new();
        for (i, q) in queries.iter().enumerate() {
            match self.prepare(q) {
                Ok(p) => groups.entry((p.beam, p.rank)).or_default().push((i, p)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut stats = SearchStats::default();
        let _guard = tch::no_grad_guard();
        for ((beam, rank), group) in groups {
            let cfg = InferConfig {
                beam,
                rank,
                top_n: group.iter().map(|(_, p)| p.k).max().unwrap_or(1),
                exclude_history: false,
                ..self.infer.clone()
            };
            let search = BeamSearch::new(&self.index, &cfg)?;
            let mut scorer =
                ModelScorer::with_table(&self.model, self.codes(), self.table.shallow_clone())?;
            let histories: Vec<&[u32]> = group.iter().map(|(_, p)| p.history.as_slice()).collect();
            let allowed: Vec<Option<&[u32]>> =
                group.iter().map(|(_, p)| p.allowed.as_deref()).collect();
            let explain = group.iter().any(|(_, p)| p.explain);
            let res = search.run_constrained(&mut scorer, &histories, &allowed, explain)?;
            stats.merge(&res.stats);
            for ((i, p), list) in group.iter().zip(res.lists) {
                let items: Vec<Recommended> = list
                    .iter()
                    .take(p.k)
                    .enumerate()
                    .map(|(r, rec)| {
                        let mut e = Explanation::new(
                            rec,
                            &self.catalog.category_names,
                            Some(&self.catalog.item_ids),
                            cfg.theta,
                        );
                        if !p.explain {
                            e.steps.iter_mut().for_each(|s| s.categories.clear());
                        }
                        let cat = self.catalog.item_category[rec.item as usize] as usize;
                        Recommended {
                            rank: r + 1,
                            item_id: self.catalog.item_ids[rec.item as usize].clone(),
                            name: self.catalog.name(rec.item).map(str::to_string),
                            category: self.catalog.category_names[cat].clone(),
                            added: rec.item as usize >= self.catalog.n_trained,
                            explanation: e,
                        }
                    })
                    .collect();
                let notice = (items.len() < p.k).then(|| {
                    format!(
                        "{} of the k = {} items asked for: the beam (width {beam}) reached no more items \
                         that pass the request's constraints; a wider beam reaches more",
                        items.len(),
                        p.k
                    )
                });
                out[*i] = Some(Ok(Recommendations {
                    items,
                    catalog_version: self.catalog.version,
                    notice,
                }));
            }
        }
        Ok((
            out.into_iter()
                .map(|r| r.expect("every query is answered or refused"))
                .collect(),
            stats,
        ))
    }

    /// Resolves a query's ids and options into what the search takes.
    fn prepare(&self, q: &Query) -> Result<Prepared> {
        let o = &q.options;
        if o.k == 0 {
            return Err(RecommenderError::request("k", "must be at least 1"));
        }
        let beam = o.beam.unwrap_or(self.infer.beam);
        if beam == 0 {
            return Err(RecommenderError::request("beam", "must be at least 1"));
        }
        let mut history = Vec::with_capacity(q.history.len());
        for (j, raw) in q.history.iter().enumerate() {
            match self.ids.get(raw.trim()) {
                Some(&i) => history.push(i),
                None => {
                    return Err(RecommenderError::request(
                        format!("history[{j}]"),
                        format!("unknown item id `{raw}`"),
                    ))
                }
            }
        }
        let categories = |field: &str, names: &[String]| -> Result<HashSet<u32>> {
            names
                .iter()
                .enumerate()
                .map(|(j, n)| {
                    self.catalog.category(n).ok_or_else(|| {
                        RecommenderError::request(
                            format!("{field}[{j}]"),
                            format!(
                                "unknown category `{n}` (known: {})",
                                preview(&self.catalog.category_names)
                            ),
                        )
                    })
                })
                .collect()
        };
        let allow = categories("allowed_categories", &o.allowed_categories)?;
        let block = categories("blocked_categories", &o.blocked_categories)?;
        let mut excluded: HashSet<u32> = HashSet::new();
        for (j, raw) in o.exclude_items.iter().enumerate() {
            match self.ids.get(raw.trim()) {
                Some(&i) => {
                    excluded.insert(i);
                }
                None => {
                    return Err(RecommenderError::request(
                        format!("exclude_items[{j}]"),
                        format!("unknown item id `{raw}`"),
                    ))
                }
            }
        }
        if o.exclude_history {
            excluded.extend(history.iter().copied());
        }
        let constrained = !allow.is_empty()
            || !block.is_empty()
            || !excluded.is_empty()
            || !self.catalog.unavailable.is_empty();
        let allowed = constrained.then(|| {
            (0..self.index.n_items() as u32)
                .filter(|&i| {
                    let c = self.catalog.item_category[i as usize];
                    (allow.is_empty() || allow.contains(&c))
                        && !block.contains(&c)
                        && !excluded.contains(&i)
                        && self.catalog.is_available(i)
                })
                .collect()
        });
        Ok(Prepared {
            history,
            allowed,
            k: o.k,
            beam,
            rank: o.rank.unwrap_or(self.infer.rank),
            explain: o.explain,
        })
    }
}

/// An item to add to a trained model's catalog ([`Recommender::add_items`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// Its original id (not used by any item yet).
    pub id: String,
    /// One of the catalog's categories (the category head knows no others).
    pub category: String,
    /// Its display name (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its feature vector in the tokenizer's input space (`input_dim` values): the row your feature pipeline
    /// gives the item (a `--features` matrix row; for built-in features, the item's row of the features stage).
    pub features: Vec<f32>,
}

/// An item after it was added: where it sits and the tokens it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddedItem {
    pub id: String,
    pub item: u32,
    pub category: String,
    /// Its token tuple, `<t{codebook}_{code}>` in codebook order; no other item has the same tuple.
    pub tokens: Vec<String>,
}

impl Recommender {
    /// Adds items without retraining: their features go through the model directory's copy of the trained
    /// tokenizer to codes, collisions are resolved against every existing tuple (existing items never move),
    /// the index and the model's item table grow, and the catalog version goes up. Nothing is written to disk
    /// until [`Recommender::save_catalog`].
    pub fn add_items(&mut self, items: &[NewItem]) -> Result<Vec<AddedItem>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let tok_dir = self.dir.join(model_dir::TOKENIZER_DIR);
        if !tok_dir.is_dir() {
            return Err(RecommenderError::file(
                &tok_dir,
                "missing: the model directory was written before tokenizers were kept with it, so new items \
                 cannot be encoded; train it again to add items",
            ));
        }
        let tok = reg4rec_tokenizer::load(&tok_dir)?;
        let dim = tok.input_dim();
        let mut seen = HashSet::new();
        let mut cats = Vec::with_capacity(items.len());
        let mut flat = Vec::with_capacity(items.len() * dim);
        for (j, it) in items.iter().enumerate() {
            let id = it.id.trim();
            if id.is_empty() || self.ids.contains_key(id) || !seen.insert(id) {
                return Err(RecommenderError::request(
                    format!("items[{j}].id"),
                    format!(
                        "`{}` is empty, already in the catalog, or given twice",
                        it.id
                    ),
                ));
            }
            let c = self.catalog.category(&it.category).ok_or_else(|| {
                RecommenderError::request(
                    format!("items[{j}].category"),
                    format!(
                        "unknown category `{}` (known: {})",
                        it.category,
                        preview(&self.catalog.category_names)
                    ),
                )
            })?;
            if it.features.len() != dim || !it.features.iter().all(|v| v.is_finite()) {
                return Err(RecommenderError::request(
                    format!("items[{j}].features"),
                    format!(
                        "{} values: the tokenizer takes {dim} finite values",
                        it.features.len()
                    ),
                ));
            }
            cats.push(c);
            flat.extend_from_slice(&it.features);
        }
        let features = tch::Tensor::from_slice(&flat).view([items.len() as i64, dim as i64]);
        // Resolved against the catalog's tuples as the tokenizer sees them (the no-MPQ model reads RQ-VAE
        // tuples as sets, the tokenizer as levels).
        let mut codes = self.codes().clone();
        let ordered = std::mem::replace(&mut codes.ordered, tok.codes().ordered);
        let new = tok.encode_new(&features, &codes)?;
        codes.ordered = ordered;
        codes.tuples.extend_from_slice(&new.tuples);
        let index = ItemIndex::new(&codes)?;
        self.model.add_items(&new.tuples)?;
        self.table = tch::no_grad(|| self.model.stream_table());
        let first = self.index.n_items() as u32;
        self.index = index;
        let mut out = Vec::with_capacity(items.len());
        for (j, (it, c)) in items.iter().zip(cats).enumerate() {
            let item = first + j as u32;
            let id = it.id.trim().to_string();
            self.catalog.item_ids.push(id.clone());
            self.catalog.push_name(it.name.as_deref());
            self.catalog.item_category.push(c);
            self.ids.insert(id.clone(), item);
            out.push(AddedItem {
                id,
                item,
                category: it.category.clone(),
                tokens: self
                    .codes()
                    .tokens(item as usize)
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
            });
        }
        self.catalog.added_tuples.extend_from_slice(&new.tuples);
        self.catalog.version += 1;
        Ok(out)
    }

    /// Makes items unavailable (never recommended; histories may still name them). Returns how many changed.
    pub fn remove_items(&mut self, ids: &[String]) -> Result<usize> {
        let mut idx = Vec::with_capacity(ids.len());
        for (j, id) in ids.iter().enumerate() {
            idx.push(self.item(id.trim()).ok_or_else(|| {
                RecommenderError::request(format!("ids[{j}]"), format!("unknown item id `{id}`"))
            })?);
        }
        let before = self.catalog.unavailable.len();
        self.catalog.unavailable.extend(idx);
        self.catalog.unavailable.sort_unstable();
        self.catalog.unavailable.dedup();
        let changed = self.catalog.unavailable.len() - before;
        if changed > 0 {
            self.catalog.version += 1;
        }
        Ok(changed)
    }

    /// Writes the catalog (`catalog.json`, atomically) and seals the directory again.
    pub fn save_catalog(&self) -> Result<()> {
        reg4rec_data::io::write_json_atomic(&self.dir.join(CATALOG_FILE), &self.catalog)?;
        model_dir::seal(&self.dir)?;
        Ok(())
    }
}

/// A query resolved to item indices.
struct Prepared {
    history: Vec<u32>,
    allowed: Option<Vec<u32>>,
    k: usize,
    beam: usize,
    rank: Rank,
    explain: bool,
}

/// The first few names, for error messages.
fn preview(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(8)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 8 {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}
