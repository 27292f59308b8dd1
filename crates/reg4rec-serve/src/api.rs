//! The HTTP API (axum): routes, request limits, JSON errors and the server's lifecycle (ready, drain).
//!
//! | route | |
//! |---|---|
//! | `POST /v1/recommend` | `{"history": [ids], "options": {...}}` -> `{"items": [...], "catalog_version": n}` |
//! | `POST /v1/recommend/batch` | `{"queries": [query, ...]}` -> `{"results": [{"ok": ...} or {"error": ...}]}` |
//! | `GET /v1/info` | the model, catalog, inference and serving settings |
//! | `GET /health`, `GET /ready` | liveness; readiness (503 while draining) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/items/search?q=&limit=` | items whose id or name holds `q`, best match first (at most `limit`, default 10) |
//! | `POST/GET/DELETE /v1/items` | add (`{"items": [{"id", "category", "features"}]}`), list (`?offset=&limit=`), remove (`{"ids": [...]}`); only with `serve.items_api` |
//! | `GET /` | a page to try it |
//!
//! Errors are JSON `{"error": "...", "field": "..."}` with 400 (bad request, naming the field), 413 (body over
//! `serve.max_body_bytes`), 429 (queue full), 403 (items API off), 503 (draining) or 500.

use crate::config::ServeConfig;
use crate::engine::{Answer, CatalogPage, Engine, Job, QueryError, SubmitError};
use crate::metrics::Metrics;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Query as UrlQuery, State};
use axum::http::{header, StatusCode};
use axum::http::{Method, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reg4rec_recommender::{AddedItem, Info, NewItem, Query, Recommendations};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

const PAGE: &str = include_str!("page.html");

/// What every handler shares.
pub struct AppState {
    pub engine: Engine,
    pub cfg: ServeConfig,
    pub metrics: Metrics,
    /// False once a drain started.
    pub ready: AtomicBool,
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/", get(page))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/recommend", post(recommend))
        .route("/v1/recommend/batch", post(recommend_batch))
        .route(
            "/v1/items",
            post(add_items).get(list_items).delete(remove_items),
        )
        .route("/v1/items/search", get(search_items))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs_f64(state.cfg.body_timeout_s),
        ))
        .with_state(state)
}

/// A JSON error response.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

struct ApiError {
    status: StatusCode,
    cause: &'static str,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, cause: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            cause,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }

    fn field(field: &str, error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            cause: "bad_request",
            body: ErrorBody {
                error: format!("request field `{field}`: {}", error.into()),
                field: Some(field.to_string()),
            },
        }
    }

    fn from_query(e: QueryError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            cause: if e.status == 400 {
                "bad_request"
            } else {
                "engine"
            },
            body: ErrorBody {
                error: e.error,
                field: e.field,
            },
        }
    }

    fn from_json(e: JsonRejection) -> Self {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(status, "payload_too_large", e.body_text());
        }
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(err) = source {
            if err.is::<tower_http::timeout::TimeoutError>() {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the request body did not arrive within serve.body_timeout_s",
                );
            }
            source = err.source();
        }
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
    }

    fn submit(e: SubmitError) -> Self {
        match e {
            SubmitError::Full => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                "the request queue is full; retry later",
            ),
            SubmitError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the engine has stopped",
            ),
        }
    }
}

/// Runs `f`, counts the request and its duration under `endpoint`, and turns errors into JSON.
async fn timed<T: Serialize>(
    s: &AppState,
    endpoint: &'static str,
    f: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Response {
    let t = Instant::now();
    let (status, resp) = match f.await {
        Ok(v) => (StatusCode::OK, Json(v).into_response()),
        Err(e) => {
            s.metrics.failures.with_label_values(&[e.cause]).inc();
            (e.status, (e.status, Json(e.body)).into_response())
        }
    };
    s.metrics
        .requests
        .with_label_values(&[endpoint, status.as_str()])
        .inc();
    s.metrics
        .request_seconds
        .with_label_values(&[endpoint])
        .observe(t.elapsed().as_secs_f64());
    resp
}

/// The routes, for the body of a 404.
const ROUTES: &str =
    "GET /, GET /health, GET /ready, GET /metrics, GET /v1/info, POST /v1/recommend, \
                      POST /v1/recommend/batch, GET /v1/items/search, POST/GET/DELETE /v1/items";

async fn not_found(State(s): State<Arc<AppState>>, method: Method, uri: Uri) -> Response {
    let e = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route `{method} {}`; the routes: {ROUTES}", uri.path()),
    );
    timed(&s, "other", async { Err::<(), _>(e) }).await
}

async fn method_not_allowed(State(s): State<Arc<AppState>>, method: Method, uri: Uri) -> Response {
    let e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{}` does not take {method}; the routes: {ROUTES}",
            uri.path()
        ),
    );
    timed(&s, "other", async { Err::<(), _>(e) }).await
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// `/v1/info`: the recommender's description and the serving limits.
#[derive(Debug, Serialize, Deserialize)]
pub struct InfoBody {
    pub model: Info,
    pub serve: ServeConfig,
}

async fn info(State(s): State<Arc<AppState>>) -> Response {
    timed(&s, "info", async {
        let model = engine_call(&s, |reply| Job::Info { reply }).await?;
        Ok(InfoBody {
            model,
            serve: s.cfg.clone(),
        })
    })
    .await
}

/// Queues the job `make(reply)` and waits for the engine's answer.
async fn engine_call<T>(
    s: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Job,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.engine.submit(make(tx)).map_err(ApiError::submit)?;
    rx.await.map_err(|_| stopped())
}

fn stopped() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "engine",
        "the engine stopped before answering",
    )
}

/// Checks a query against the serving limits; `at` prefixes field names in a batch (`queries[3].`).
fn check(cfg: &ServeConfig, q: &Query, at: &str) -> Result<(), ApiError> {
    if q.history.len() > cfg.max_history {
        return Err(ApiError::field(
            &format!("{at}history"),
            format!(
                "{} items; at most serve.max_history = {}",
                q.history.len(),
                cfg.max_history
            ),
        ));
    }
    if q.options.k > cfg.max_k {
        return Err(ApiError::field(
            &format!("{at}options.k"),
            format!("{}; at most serve.max_k = {}", q.options.k, cfg.max_k),
        ));
    }
    if let Some(b) = q.options.beam.filter(|&b| b > cfg.max_beam) {
        return Err(ApiError::field(
            &format!("{at}options.beam"),
            format!("{b}; at most serve.max_beam = {}", cfg.max_beam),
        ));
    }
    Ok(())
}

/// Queues queries and waits for their answers.
async fn ask(s: &AppState, queries: Vec<Query>) -> Result<Vec<Answer>, ApiError> {
    let arrived = Instant::now();
    engine_call(s, |reply| Job::Recommend {
        queries,
        arrived,
        reply,
    })
    .await
}

/// The body of `/v1/recommend`: one [`Query`] (`history` plus optional `options`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    pub history: Vec<String>,
    #[serde(default)]
    pub options: reg4rec_recommender::RecommendOptions,
}

impl From<RecommendBody> for Query {
    fn from(b: RecommendBody) -> Query {
        Query {
            history: b.history,
            options: b.options,
        }
    }
}

async fn recommend(
    State(s): State<Arc<AppState>>,
    body: Result<Json<RecommendBody>, JsonRejection>,
) -> Response {
    timed(&s, "recommend", async {
        let Json(b) = body.map_err(ApiError::from_json)?;
        let q = Query::from(b);
        check(&s.cfg, &q, "")?;
        let mut answers = ask(&s, vec![q]).await?;
        answers
            .pop()
            .ok_or_else(stopped)?
            .map_err(ApiError::from_query)
    })
    .await
}

/// The body of `/v1/recommend/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub queries: Vec<RecommendBody>,
}

/// One result of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchResult {
    Ok(Recommendations),
    Error(QueryError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

async fn recommend_batch(
    State(s): State<Arc<AppState>>,
    body: Result<Json<BatchBody>, JsonRejection>,
) -> Response {
    timed(&s, "recommend_batch", async {
        let Json(b) = body.map_err(ApiError::from_json)?;
        if b.queries.len() > s.cfg.max_batch_queries {
            return Err(ApiError::field(
                "queries",
                format!(
                    "{} queries; at most serve.max_batch_queries = {}",
                    b.queries.len(),
                    s.cfg.max_batch_queries
                ),
            ));
        }
        // An entry over a serving limit gets its own error, as an unknown id does; the others are answered.
        let mut results: Vec<Option<BatchResult>> = Vec::with_capacity(b.queries.len());
        let mut queries = Vec::new();
        for (i, q) in b.queries.into_iter().map(Query::from).enumerate() {
            match check(&s.cfg, &q, &format!("queries[{i}].")) {
                Ok(()) => {
                    queries.push(q);
                    results.push(None);
                }
                Err(e) => results.push(Some(BatchResult::Error(QueryError {
                    status: e.status.as_u16(),
                    field: e.body.field,
                    error: e.body.error,
                }))),
            }
        }
        let mut answers = ask(&s, queries).await?.into_iter();
        let results: Vec<BatchResult> = results
            .into_iter()
            .map(|r| match r {
                Some(r) => Some(r),
                None => answers.next().map(|a| match a {
                    Ok(r) => BatchResult::Ok(r),
                    Err(e) => BatchResult::Error(e),
                }),
            })
            .collect::<Option<_>>()
            .ok_or_else(stopped)?;
        for r in &results {
            if let BatchResult::Error(e) = r {
                let cause = if e.status == 400 {
                    "bad_request"
                } else {
                    "engine"
                };
                s.metrics.failures.with_label_values(&[cause]).inc();
            }
        }
        Ok(BatchResponse { results })
    })
    .await
}

fn items_api(s: &AppState) -> Result<(), ApiError> {
    if s.cfg.items_api {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "items_disabled",
            "the catalog API is off (start the server with `--set serve.items_api=true`)",
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddItemsBody {
    pub items: Vec<NewItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddItemsResponse {
    pub added: Vec<AddedItem>,
    pub catalog_version: u64,
}

async fn add_items(
    State(s): State<Arc<AppState>>,
    body: Result<Json<AddItemsBody>, JsonRejection>,
) -> Response {
    timed(&s, "items_add", async {
        items_api(&s)?;
        let Json(b) = body.map_err(ApiError::from_json)?;
        let items = b.items;
        let (added, catalog_version) = engine_call(&s, |reply| Job::AddItems { items, reply })
            .await?
            .map_err(ApiError::from_query)?;
        Ok(AddItemsResponse {
            added,
            catalog_version,
        })
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveItemsBody {
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveItemsResponse {
    pub removed: usize,
    pub catalog_version: u64,
}

async fn remove_items(
    State(s): State<Arc<AppState>>,
    body: Result<Json<RemoveItemsBody>, JsonRejection>,
) -> Response {
    timed(&s, "items_remove", async {
        items_api(&s)?;
        let Json(b) = body.map_err(ApiError::from_json)?;
        let ids = b.ids;
        let (removed, catalog_version) = engine_call(&s, |reply| Job::RemoveItems { ids, reply })
            .await?
            .map_err(ApiError::from_query)?;
        Ok(RemoveItemsResponse {
            removed,
            catalog_version,
        })
    })
    .await
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub offset: usize,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn list_items(
    State(s): State<Arc<AppState>>,
    params: Result<UrlQuery<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    timed(&s, "items_list", async {
        items_api(&s)?;
        let UrlQuery(p) = params
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        engine_call::<CatalogPage>(&s, |reply| Job::ListItems {
            offset: p.offset,
            limit: p.limit.min(10_000),
            reply,
        })
        .await
    })
    .await
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub q: String,
    #[serde(default = "default_search_limit")]
    pub limit: usize,
}

fn default_search_limit() -> usize {
    10
}

/// Read-only and always on (the page's history box uses it), unlike the rest of `/v1/items`.
async fn search_items(
    State(s): State<Arc<AppState>>,
    params: Result<UrlQuery<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    timed(&s, "items_search", async {
        let UrlQuery(p) = params
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        engine_call::<CatalogPage>(&s, |reply| Job::SearchItems {
            query: p.q,
            limit: p.limit.min(100),
            reply,
        })
        .await
    })
    .await
}
