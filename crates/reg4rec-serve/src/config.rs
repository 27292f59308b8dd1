//! The `[serve]` configuration section.

use crate::error::{Result, ServeError};
use serde::{Deserialize, Serialize};

/// Server settings. Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback only; another address exposes the server).
    pub addr: String,
    /// Most queries packed into one batched beam search. Default 32 (1 turns batching off).
    pub max_batch: usize,
    /// Most beam rows (the sum of the batch's beam widths) in one batched search. Default 4096.
    pub max_beam_rows: usize,
    /// How long the batcher waits for more requests after the first one of a batch, in milliseconds. Default 0:
    /// a batch is whatever queued up while the previous one ran, so an idle server adds no latency.
    pub batch_wait_ms: u64,
    /// Requests waiting for the engine; a request beyond it is answered 429. Default 256.
    pub queue: usize,
    /// Largest request body in bytes (413 beyond). Default 65536.
    pub max_body_bytes: usize,
    /// Longest history a request may give. Default 512.
    pub max_history: usize,
    /// Largest `k`. Default 100.
    pub max_k: usize,
    /// Largest beam width. Default 200.
    pub max_beam: usize,
    /// Most queries in one `/v1/recommend/batch` request. Default 64.
    pub max_batch_queries: usize,
    /// Serve `POST`/`GET`/`DELETE /v1/items` (catalog changes). Default false.
    pub items_api: bool,
    /// libtorch's intra-op threads in the engine (0: libtorch's default, one per core). Default 1: one
    /// request's operations are too small to split, and waking a second thread for each costs more than it
    /// gains. On amazon-beauty at beam 20 on 2 cores, 1 thread against the default 2 served 484 against 182
    /// requests/s at batch cap 1 and 883 against 762 at cap 32 (docs/serving.md); the other core then serves
    /// HTTP.
    pub torch_threads: usize,
    /// Write every catalog change into the model directory (`catalog.json` and a new manifest, atomically), so
    /// a restart keeps it. Default false: changes live in the server's memory.
    pub save_catalog: bool,
    /// The popular head's share of the catalogue for the `reg4rec_list_long_tail_share` metric (the long-tail
    /// reward's `align.rewards.head_share`): items outside the most popular share by training interactions are
    /// the long tail. Default 0.2.
    pub head_share: f64,
    /// Seconds a request's body may take to arrive once its headers have (408 after). Default 30.
    pub body_timeout_s: f64,
    /// Seconds the drain after SIGTERM may take: connections still open then (a client that never finishes its
    /// request, a slow reader) are closed and the server exits. Default 30.
    pub drain_timeout_s: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: "127.0.0.1:8080".into(),
            max_batch: 32,
            max_beam_rows: 4096,
            batch_wait_ms: 0,
            queue: 256,
            max_body_bytes: 65536,
            max_history: 512,
            max_k: 100,
            max_beam: 200,
            max_batch_queries: 64,
            items_api: false,
            torch_threads: 1,
            save_catalog: false,
            head_share: 0.2,
            body_timeout_s: 30.0,
            drain_timeout_s: 30.0,
        }
    }
}

impl ServeConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("max_batch", self.max_batch),
            ("max_beam_rows", self.max_beam_rows),
            ("queue", self.queue),
            ("max_body_bytes", self.max_body_bytes),
            ("max_k", self.max_k),
            ("max_beam", self.max_beam),
            ("max_batch_queries", self.max_batch_queries),
        ];
        if let Some((f, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ServeError::Config(format!(
                "`serve.{f}` must be at least 1"
            )));
        }
        if self.max_beam > self.max_beam_rows {
            return Err(ServeError::Config(format!(
                "`serve.max_beam` ({}) exceeds `serve.max_beam_rows` ({}): such a request could never run",
                self.max_beam, self.max_beam_rows
            )));
        }
        for (f, v) in [
            ("body_timeout_s", self.body_timeout_s),
            ("drain_timeout_s", self.drain_timeout_s),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(ServeError::Config(format!(
                    "`serve.{f}` = {v}: expected seconds in (0, 86400]"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.head_share) {
            return Err(ServeError::Config(format!(
                "`serve.head_share` = {}: expected a share in [0, 1]",
                self.head_share
            )));
        }
        self.addr.parse::<std::net::SocketAddr>().map_err(|e| {
            ServeError::Config(format!(
                "`serve.addr` `{}`: {e} (expected ip:port)",
                self.addr
            ))
        })?;
        Ok(())
    }
}
