//! A load generator for a reg4rec server on this machine: `clients` concurrent clients send
//! `/v1/recommend` requests (histories drawn, seeded, from the given list) until `requests` were sent or
//! `seconds` passed, whichever comes first. Loopback addresses only.

use crate::error::{Result, ServeError};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL, `http://127.0.0.1:PORT` (loopback only).
    pub url: String,
    pub clients: usize,
    /// Requests in all (an upper bound).
    pub requests: usize,
    /// Time limit (an upper bound).
    pub seconds: f64,
    pub k: usize,
    /// Beam width of every request (`None`: the server's).
    pub beam: Option<usize>,
    /// Histories to draw from (original item ids).
    pub histories: Vec<Vec<String>>,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub clients: usize,
    pub sent: usize,
    pub ok: usize,
    /// 429 answers (queue full).
    pub rejected: usize,
    /// Other HTTP errors and transport failures.
    pub failed: usize,
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency of successful requests, milliseconds.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Items returned in all, and items the responses listed beyond their `k` (must be 0).
    pub items: usize,
    pub over_k: usize,
}

/// Checks that `url` points at this machine.
pub fn check_loopback(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ServeError::Load(format!("`{url}`: only http:// URLs")))?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host == "127.0.0.1" || host == "localhost" || rest.starts_with("[::1]") {
        Ok(())
    } else {
        Err(ServeError::Load(format!(
            "`{url}`: the load generator only talks to loopback addresses (127.0.0.1, localhost, [::1])"
        )))
    }
}

/// Runs the load and reports latency percentiles and throughput.
pub async fn run(cfg: &LoadConfig) -> Result<LoadReport> {
    check_loopback(&cfg.url)?;
    if cfg.histories.is_empty() || cfg.clients == 0 || cfg.requests == 0 {
        return Err(ServeError::Load(
            "needs at least one history, one client and one request".into(),
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(cfg.seconds.max(1.0) + 30.0))
        .build()
        .map_err(|e| ServeError::Load(format!("building the HTTP client: {e}")))?;
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.seconds);
    let url = format!("{}/v1/recommend", cfg.url.trim_end_matches('/'));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.clients);
    for c in 0..cfg.clients {
        let (client, next, url) = (client.clone(), next.clone(), url.clone());
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ (c as u64 + 1));
            let mut out = ClientStats::default();
            while Instant::now() < deadline && next.fetch_add(1, Ordering::SeqCst) < cfg.requests {
                let h = &cfg.histories[rng.gen_range(0..cfg.histories.len())];
                let body = serde_json::json!({
                    "history": h,
                    "options": { "k": cfg.k, "beam": cfg.beam },
                });
                let t = Instant::now();
                out.sent += 1;
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
                        Ok(v) => {
                            out.latencies.push(t.elapsed().as_secs_f64() * 1e3);
                            let n = v["items"].as_array().map_or(0, Vec::len);
                            out.items += n;
                            out.over_k += n.saturating_sub(cfg.k);
                        }
                        Err(_) => out.failed += 1,
                    },
                    Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                        out.rejected += 1
                    }
                    _ => out.failed += 1,
                }
            }
            out
        }));
    }
    let mut all = ClientStats::default();
    for t in tasks {
        let s = t
            .await
            .map_err(|e| ServeError::Load(format!("a client task failed: {e}")))?;
        all.sent += s.sent;
        all.rejected += s.rejected;
        all.failed += s.failed;
        all.items += s.items;
        all.over_k += s.over_k;
        all.latencies.extend(s.latencies);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut lat = all.latencies;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i]
    };
    Ok(LoadReport {
        clients: cfg.clients,
        sent: all.sent,
        ok: lat.len(),
        rejected: all.rejected,
        failed: all.failed,
        seconds,
        throughput: lat.len() as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        items: all.items,
        over_k: all.over_k,
    })
}

#[derive(Default)]
struct ClientStats {
    sent: usize,
    rejected: usize,
    failed: usize,
    items: usize,
    over_k: usize,
    latencies: Vec<f64>,
}

/// [`run`] on a runtime of its own (for the CLI).
pub fn run_blocking(cfg: &LoadConfig) -> Result<LoadReport> {
    crate::runtime()?.block_on(run(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:80",
        ] {
            check_loopback(ok).unwrap();
        }
        for bad in [
            "http://10.0.0.1:80",
            "https://127.0.0.1",
            "http://example.com",
            "127.0.0.1:80",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }
}
