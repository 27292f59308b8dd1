//! The engine: one thread owns the [`Recommender`] (the model never crosses threads), and a batcher packs the
//! requests that queued up while the previous batch ran into one batched beam search, capped by queries
//! (`max_batch`) and beam rows (`max_beam_rows`). The queue is bounded: when it is full, [`Engine::submit`]
//! refuses at once (the API answers 429) instead of letting latency grow without bound. Catalog changes go
//! through the same queue, so they happen between batches and never under a running search.

use crate::config::ServeConfig;
use crate::error::{Result, ServeError};
use crate::metrics::Metrics;
use reg4rec_recommender::{
    AddedItem, Catalog, Info, NewItem, Query, Recommendations, Recommender, RecommenderError,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Why one query was not answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryError {
    /// The HTTP status it maps to (400: the request; 500: the engine).
    pub status: u16,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub error: String,
}

impl From<RecommenderError> for QueryError {
    fn from(e: RecommenderError) -> Self {
        match &e {
            RecommenderError::Request { field, message } => QueryError {
                status: 400,
                field: Some(field.clone()),
                error: format!("request field `{field}`: {message}"),
            },
            _ => QueryError {
                status: 500,
                field: None,
                error: e.to_string(),
            },
        }
    }
}

/// The answer to one query.
pub type Answer = std::result::Result<Recommendations, QueryError>;

/// One item of the catalog listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogItem {
    pub id: String,
    /// The display name, when the catalog has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub category: String,
    pub available: bool,
    /// Added after training.
    pub added: bool,
}

/// A page of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogPage {
    pub items: Vec<CatalogItem>,
    pub total: usize,
    pub catalog_version: u64,
}

/// Work for the engine thread.
pub enum Job {
    Recommend {
        queries: Vec<Query>,
        arrived: Instant,
        reply: oneshot::Sender<Vec<Answer>>,
    },
    AddItems {
        items: Vec<NewItem>,
        reply: oneshot::Sender<std::result::Result<(Vec<AddedItem>, u64), QueryError>>,
    },
    RemoveItems {
        ids: Vec<String>,
        reply: oneshot::Sender<std::result::Result<(usize, u64), QueryError>>,
    },
    ListItems {
        offset: usize,
        limit: usize,
        reply: oneshot::Sender<CatalogPage>,
    },
    /// Items whose id or name matches a text ([`reg4rec_recommender::Catalog::search`]).
    SearchItems {
        query: String,
        limit: usize,
        reply: oneshot::Sender<CatalogPage>,
    },
    Info {
        reply: oneshot::Sender<Info>,
    },
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: answer 429.
    Full,
    /// The engine thread has stopped.
    Stopped,
}

/// The handle the HTTP side holds: a bounded queue into the engine thread.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    metrics: Metrics,
}

impl Engine {
    /// Starts the engine thread, which calls `load` to build its recommender; returns once it is loaded
    /// (with its [`Info`]) or failed to load.
    pub fn start(
        load: impl FnOnce() -> reg4rec_recommender::Result<Recommender> + Send + 'static,
        cfg: &ServeConfig,
        metrics: Metrics,
    ) -> Result<(Engine, Info, std::thread::JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cfg.queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let cfg = cfg.clone();
        let m = metrics.clone();
        let handle = std::thread::Builder::new()
            .name("reg4rec-engine".into())
            .spawn(move || {
                if cfg.torch_threads > 0 {
                    tch::set_num_threads(cfg.torch_threads.min(i32::MAX as usize) as i32);
                }
                let rec = match load() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rec.info()));
                run(rec, rx, &cfg, &m);
            })
            .map_err(|e| ServeError::Io {
                what: "starting the engine thread".into(),
                source: e,
            })?;
        let info = ready_rx
            .recv()
            .map_err(|_| ServeError::Engine("it ended while loading the model".into()))?
            .map_err(ServeError::Engine)?;
        metrics.catalog_version.set(info.catalog_version as i64);
        metrics.available_items.set(info.n_available_items as i64);
        Ok((Engine { tx, metrics }, info, handle))
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> std::result::Result<(), SubmitError> {
        self.metrics.queue_depth.inc();
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.dec();
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }
}

/// Beam rows a query will use.
fn rows(rec: &Recommender, q: &Query) -> usize {
    q.options.beam.unwrap_or(rec.infer().beam)
}

/// The engine loop: runs until every sender is gone and the queue is empty.
fn run(mut rec: Recommender, rx: Receiver<Job>, cfg: &ServeConfig, metrics: &Metrics) {
    let wait = Duration::from_millis(cfg.batch_wait_ms);
    // The long tail of the training catalogue, for the goal metric (none when the training data cannot be
    // read again: the metric then stays empty).
    let tail = rec
        .long_tail(cfg.head_share)
        .inspect_err(|e| {
            tracing::warn!(error = %e, "no long-tail metric: the training data could not be read")
        })
        .unwrap_or_default();
    let mut pending: Option<Job> = None;
    loop {
        let job = match pending.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => {
                    metrics.queue_depth.dec();
                    j
                }
                Err(_) => break,
            },
        };
        match job {
            Job::Recommend { .. } => {
                let mut batch = vec![job];
                let (mut n_q, mut n_rows) = count(&rec, &batch[0]);
                let deadline = Instant::now() + wait;
                while n_q < cfg.max_batch {
                    let next = match rx.try_recv() {
                        Ok(j) => j,
                        Err(TryRecvError::Disconnected) => break,
                        Err(TryRecvError::Empty) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            match rx.recv_timeout(left) {
                                Ok(j) => j,
                                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                    break
                                }
                            }
                        }
                    };
                    metrics.queue_depth.dec();
                    let (q, r) = count(&rec, &next);
                    let fits = matches!(next, Job::Recommend { .. })
                        && n_q + q <= cfg.max_batch
                        && n_rows + r <= cfg.max_beam_rows;
                    if !fits {
                        pending = Some(next);
                        break;
                    }
                    n_q += q;
                    n_rows += r;
                    batch.push(next);
                }
                run_batch(&rec, batch, metrics, &tail);
            }
            Job::AddItems { items, reply } => {
                let r = rec
                    .add_items(&items)
                    .map_err(QueryError::from)
                    .and_then(|a| saved(&rec, cfg).map(|v| (a, v)));
                catalog_gauges(&rec, metrics);
                let _ = reply.send(r);
            }
            Job::RemoveItems { ids, reply } => {
                let r = rec
                    .remove_items(&ids)
                    .map_err(QueryError::from)
                    .and_then(|n| saved(&rec, cfg).map(|v| (n, v)));
                catalog_gauges(&rec, metrics);
                let _ = reply.send(r);
            }
            Job::ListItems {
                offset,
                limit,
                reply,
            } => {
                let c = rec.catalog();
                let items = (offset..c.n_items().min(offset.saturating_add(limit)))
                    .map(|i| catalog_item(rec.catalog(), i as u32))
                    .collect();
                let _ = reply.send(CatalogPage {
                    items,
                    total: c.n_items(),
                    catalog_version: c.version,
                });
            }
            Job::SearchItems {
                query,
                limit,
                reply,
            } => {
                let c = rec.catalog();
                let items: Vec<CatalogItem> = c
                    .search(&query, limit)
                    .into_iter()
                    .map(|i| catalog_item(c, i))
                    .collect();
                let _ = reply.send(CatalogPage {
                    total: items.len(),
                    items,
                    catalog_version: c.version,
                });
            }
            Job::Info { reply } => {
                let _ = reply.send(rec.info());
            }
        }
    }
}

fn catalog_item(c: &Catalog, i: u32) -> CatalogItem {
    CatalogItem {
        id: c.item_ids[i as usize].clone(),
        name: c.name(i).map(str::to_string),
        category: c.category_names[c.item_category[i as usize] as usize].clone(),
        available: c.is_available(i),
        added: i as usize >= c.n_trained,
    }
}

fn count(rec: &Recommender, job: &Job) -> (usize, usize) {
    match job {
        Job::Recommend { queries, .. } => {
            (queries.len(), queries.iter().map(|q| rows(rec, q)).sum())
        }
        _ => (0, 0),
    }
}

/// After a catalog change: writes the catalog when `serve.save_catalog` asks; the catalog version.
fn saved(rec: &Recommender, cfg: &ServeConfig) -> std::result::Result<u64, QueryError> {
    if cfg.save_catalog {
        rec.save_catalog().map_err(|e| QueryError {
            status: 500,
            field: None,
            error: format!("the catalog changed in memory but could not be saved: {e}"),
        })?;
    }
    Ok(rec.catalog().version)
}

fn catalog_gauges(rec: &Recommender, metrics: &Metrics) {
    let c = rec.catalog();
    metrics.catalog_version.set(c.version as i64);
    metrics
        .available_items
        .set((c.n_items() - c.unavailable.len()) as i64);
}

/// One batched search over every query of `batch`; answers each job.
fn run_batch(rec: &Recommender, batch: Vec<Job>, metrics: &Metrics, tail: &[bool]) {
    let mut all = Vec::new();
    let mut jobs = Vec::new();
    let now = Instant::now();
    for job in batch {
        if let Job::Recommend {
            queries,
            arrived,
            reply,
        } = job
        {
            metrics
                .queue_seconds
                .observe(now.duration_since(arrived).as_secs_f64());
            jobs.push((queries.len(), reply));
            all.extend(queries);
        }
    }
    let t = Instant::now();
    let answers: Vec<Answer> = match rec.recommend_batch(&all) {
        Ok((answers, _)) => answers
            .into_iter()
            .zip(&all)
            .map(|(a, q)| {
                a.inspect(|r| {
                    let bad = violations(rec, q, r);
                    if bad > 0 {
                        metrics.invalid_items.inc_by(bad);
                        tracing::error!(invalid = bad, "the search returned invalid items");
                    }
                    if !tail.is_empty() && !r.items.is_empty() {
                        // An item added after training has no training interaction: the tail.
                        let in_tail = r
                            .items
                            .iter()
                            .filter(|it| {
                                tail.get(it.explanation.item as usize)
                                    .copied()
                                    .unwrap_or(true)
                            })
                            .count();
                        metrics
                            .long_tail_share
                            .observe(in_tail as f64 / r.items.len() as f64);
                    }
                })
                .map_err(QueryError::from)
            })
            .collect(),
        Err(e) => {
            let e = QueryError::from(e);
            all.iter().map(|_| Err(e.clone())).collect()
        }
    };
    metrics.inference_seconds.observe(t.elapsed().as_secs_f64());
    metrics.batch_size.observe(all.len() as f64);
    let mut answers = answers.into_iter();
    for (n, reply) in jobs {
        let _ = reply.send(answers.by_ref().take(n).collect());
    }
}

/// Returned items that break the catalog or the query's constraints, checked independently of the search:
/// unknown or unavailable items, items of a category not allowed or blocked, excluded items, history items
/// under `exclude_history`, duplicates, and more than `k` items.
pub fn violations(rec: &Recommender, q: &Query, r: &Recommendations) -> u64 {
    let c = rec.catalog();
    let o = &q.options;
    let excluded: HashSet<&str> = o
        .exclude_items
        .iter()
        .map(|s| s.trim())
        .chain(
            q.history
                .iter()
                .map(|s| s.trim())
                .filter(|_| o.exclude_history),
        )
        .collect();
    let mut seen = HashSet::new();
    let mut bad = r.items.len().saturating_sub(o.k) as u64;
    for it in &r.items {
        let ok = match rec.item(&it.item_id) {
            None => false,
            Some(i) => {
                let cat = &c.category_names[c.item_category[i as usize] as usize];
                c.is_available(i)
                    && (o.allowed_categories.is_empty() || o.allowed_categories.contains(cat))
                    && !o.blocked_categories.contains(cat)
                    && !excluded.contains(it.item_id.as_str())
                    && seen.insert(i)
            }
        };
        if !ok {
            bad += 1;
        }
    }
    bad
}
