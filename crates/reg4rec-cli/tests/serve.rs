//! End-to-end tests of `reg4rec serve` on a small model trained by the test: the served list equals the offline
//! `recommend`, concurrent clients get valid items or 429s while the catalog changes, SIGTERM drains the
//! requests in flight, an item added through the API is recommended and explained, request limits name their
//! field, and the page renders recommendations in headless Chromium; on MovieLens-100k a user of the page types a
//! history by name, sees each item's path and steers the list by clicking a category. Every loop is bounded in
//! count and time.

#[path = "support/cdp.rs"]
mod cdp;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reg4rec"));
    c.env("REG4REC_NO_PROGRESS", "1").env("REG4REC_LOG", "warn");
    c
}

/// A REG4Rec model trained once (smoke preset) on a CSV of 200 users over 60 items in 3 categories; the CSV's
/// `name` column names the items below 30 and leaves the others without a name.
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-model");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = String::from("user,item,timestamp,category,name\n");
        for u in 0..200 {
            for t in 0..6 + u % 5 {
                let item = (u * 3 + t * (1 + u % 2)) % 60;
                let name = if item < 30 {
                    format!("\"Item {item}, named\"")
                } else {
                    String::new()
                };
                s.push_str(&format!("u{u},i{item},{t},c{},{name}\n", item % 3));
            }
        }
        let csv = dir.join("toy.csv");
        std::fs::write(&csv, s).unwrap();
        let out = dir.join("run");
        let o = bin()
            .args([
                "pipeline",
                "--data",
                csv.to_str().unwrap(),
                "--preset",
                "smoke",
            ])
            .args(["--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out.join("stages/align-reg4rec")
    })
}

/// A running `reg4rec serve`; killed when dropped.
struct Server {
    child: Child,
    url: String,
    http: reqwest::blocking::Client,
}

impl Server {
    fn start(sets: &[&str]) -> Server {
        Server::start_on(model(), sets)
    }

    fn start_on(model: &Path, sets: &[&str]) -> Server {
        let mut c = bin();
        c.args([
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--preset",
            "smoke",
        ])
        .args(["--set", "serve.addr=127.0.0.1:0"]);
        for s in sets {
            c.args(["--set", s]);
        }
        let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the server did not start: `{line}`"))
            .to_string();
        Server {
            child,
            url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    fn delete(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.url))
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// The value of an unlabelled metric.
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Sends SIGTERM and waits (at most 60 s) for the exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no exit 60 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn items(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_served_list_equals_the_offline_recommend() {
    let server = Server::start(&[]);
    let body = json!({"history": ["i1", "i4", "i7"], "options": {
        "k": 5, "beam": 30, "allowed_categories": ["c0", "c1"], "exclude_history": true, "explain": true}});
    let (status, served) = server.post("/v1/recommend", &body);
    assert_eq!(status, 200, "{served}");
    let o = bin()
        .args([
            "recommend",
            "--model",
            model().to_str().unwrap(),
            "--preset",
            "smoke",
        ])
        .args(["--history", "i1,i4,i7", "--top", "5", "--beam", "30"])
        .args([
            "--allow-category",
            "c0,c1",
            "--exclude-history",
            "--explain",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let offline: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(served, offline);
    let got = items(&served);
    assert_eq!(got.len(), 5);
    for it in served["items"].as_array().unwrap() {
        // The CSV names the items below 30 only: those carry `name`, the others none.
        let n: usize = it["item_id"].as_str().unwrap()[1..].parse().unwrap();
        if n < 30 {
            assert_eq!(it["name"], format!("Item {n}, named"), "{it}");
        } else {
            assert!(it.get("name").is_none(), "{it}");
        }
        assert_ne!(it["category"], "c2", "{it}");
        assert!(!["i1", "i4", "i7"].contains(&it["item_id"].as_str().unwrap()));
        assert!(!it["explanation"]["steps"][0]["categories"]
            .as_array()
            .unwrap()
            .is_empty());
    }
    // The batch endpoint answers each query, a bad one with its own error.
    let (status, batch) = server.post(
        "/v1/recommend/batch",
        &json!({"queries": [body, {"history": ["nope"]}]}),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["results"][0]["ok"], served);
    assert_eq!(batch["results"][1]["error"]["field"], "history[0]");
    assert_eq!(server.metric("reg4rec_invalid_items_total"), 0.0);
    // The model directory records the CORP threshold the pipeline chose on validation, and the server uses it.
    let run = model().parent().unwrap().parent().unwrap();
    let report: Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let (_, info) = server.get("/v1/info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        info["model"]["infer"]["theta"], report["theta"]["theta"],
        "{info}"
    );
    assert!(model().join("search.json").is_file());
    // The goal beyond accuracy: every answered list's long-tail share is observed, each within [0, 1].
    assert_eq!(server.metric("reg4rec_list_long_tail_share_count"), 2.0);
    let sum = server.metric("reg4rec_list_long_tail_share_sum");
    assert!((0.0..=2.0).contains(&sum), "{sum}");
    // The catalogue search (always on: the page's history box reads it) finds items by name or id.
    let (status, text) = server.get("/v1/items/search?q=ITEM%201,&limit=3");
    assert_eq!(status, 200, "{text}");
    let found: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(found["items"][0]["id"], "i1", "{found}");
    assert_eq!(found["items"][0]["name"], "Item 1, named");
    let (status, text) = server.get("/v1/items/search?q=i45");
    assert_eq!(
        (status, text.contains("\"id\":\"i45\"")),
        (200, true),
        "{text}"
    );
    assert!(!text.contains("\"name\""), "{text}");
    let (status, text) = server.get("/v1/items/search");
    assert_eq!(status, 400, "{text}");
    // The CLI's list names the items too, and says when it is shorter than asked.
    let o = bin()
        .args(["recommend", "--model", model().to_str().unwrap()])
        .args(["--preset", "smoke", "--history", "i1,i4,i7", "--top", "60"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(" \"Item ") && l.contains(", named\" (c")),
        "{text}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("note: ") && err.contains("of the k = 60 items asked for"),
        "{err}"
    );
}

#[test]
fn bad_requests_name_their_field_and_limits_hold() {
    let server = Server::start(&["serve.max_k=20", "serve.max_body_bytes=2048"]);
    let cases = [
        (json!({"history": ["i1", "zzz"]}), "history[1]"),
        (
            json!({"history": ["i1"], "options": {"k": 21}}),
            "options.k",
        ),
        (json!({"history": ["i1"], "options": {"k": 0}}), "k"),
        (
            json!({"history": ["i1"], "options": {"allowed_categories": ["c9"]}}),
            "allowed_categories[0]",
        ),
        (
            json!({"history": ["i1"], "options": {"exclude_items": ["i999"]}}),
            "exclude_items[0]",
        ),
        (
            json!({"history": ["i1"], "options": {"beam": 100000}}),
            "options.beam",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = server.post("/v1/recommend", &body);
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    let (status, v) = server.post("/v1/recommend", &json!({"history": ["i1"], "extra": 1}));
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `extra`"),
        "{v}"
    );
    let big: Vec<String> = (0..400).map(|i| format!("i{}", i % 60)).collect();
    let (status, _) = server.post("/v1/recommend", &json!({"history": big}));
    assert_eq!(status, 413);
    // Every category allowed but blocked: no item may be returned, and none is.
    let (status, v) = server.post(
        "/v1/recommend",
        &json!({"history": ["i1"], "options": {"blocked_categories": ["c0", "c1", "c2"]}}),
    );
    assert_eq!(status, 200);
    assert!(items(&v).is_empty());
    // The catalog API is off by default.
    let (status, v) = server.post("/v1/items", &json!({"items": []}));
    assert_eq!(status, 403, "{v}");
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.get("/ready").0, 200);
    let (_, info) = server.get("/v1/info");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["model"]["n_items"], 60);
    assert_eq!(info["model"]["verified"], true);
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("reg4rec_failures_total{cause=\"bad_request\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("reg4rec_failures_total{cause=\"payload_too_large\"} 1"));

    // In a batch, an entry over a limit gets its own error, as an unknown id does; the others are answered, and
    // each failed entry counts as a failure.
    let (status, v) = server.post(
        "/v1/recommend/batch",
        &json!({"queries": [{"history": ["i1"], "options": {"k": 21}}, {"history": ["i1"]},
                            {"history": ["zzz"]}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["error"]["field"], "queries[0].options.k");
    assert_eq!(v["results"][0]["error"]["status"], 400);
    assert!(!items(&v["results"][1]["ok"]).is_empty(), "{v}");
    assert_eq!(v["results"][2]["error"]["field"], "history[0]");
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("reg4rec_failures_total{cause=\"bad_request\"} 9"),
        "{metrics}"
    );
    // Unknown routes and methods answer JSON that lists the routes.
    let (status, text) = server.get("/v1/nothing");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 404);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no route `GET /v1/nothing`"),
        "{v}"
    );
    let r = server
        .http
        .put(format!("{}/v1/recommend", server.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: Value = r.json().unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`/v1/recommend` does not take PUT"),
        "{v}"
    );
}

#[test]
fn a_half_sent_request_neither_hangs_its_handler_nor_holds_the_drain() {
    use std::io::Write;
    let server = Server::start(&["serve.body_timeout_s=1", "serve.drain_timeout_s=2"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    // Headers with a body that never comes: answered once the body timeout passes.
    let mut partial = std::net::TcpStream::connect(&addr).unwrap();
    partial
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    partial
        .write_all(
            b"POST /v1/recommend HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"history\"",
        )
        .unwrap();
    let mut head = String::new();
    BufReader::new(&partial).read_line(&mut head).unwrap();
    let code: u16 = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    assert_eq!(code, 408, "a stalled body got `{head}`");
    // Headers without their blank line: the connection stays open, and SIGTERM still ends the server within
    // the drain deadline.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the drain took {:?} with a 2 s deadline",
        t.elapsed()
    );
    drop(stalled);
}

#[test]
fn sixty_four_clients_get_valid_items_or_429_while_the_catalog_changes() {
    // A tiny queue so that 64 clients overflow it; one query per batch.
    let server = Arc::new(Server::start(&[
        "serve.queue=2",
        "serve.max_batch=1",
        "serve.items_api=true",
    ]));
    let start = Arc::new(Barrier::new(65));
    let mut threads = Vec::new();
    for c in 0..64 {
        let (server, start) = (server.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            start.wait();
            let (mut ok, mut rejected) = (0, 0);
            for r in 0..8 {
                let h = [
                    format!("i{}", (c + r) % 60),
                    format!("i{}", (c * 7 + r) % 60),
                ];
                let (status, v) = server.post(
                    "/v1/recommend",
                    &json!({"history": h, "options": {"k": 10, "beam": 60}}),
                );
                match status {
                    200 => {
                        assert!(items(&v).len() <= 10);
                        ok += 1;
                    }
                    429 => {
                        assert!(v["error"].as_str().unwrap().contains("queue is full"));
                        rejected += 1;
                    }
                    s => panic!("status {s}: {v}"),
                }
            }
            (ok, rejected)
        }));
    }
    start.wait();
    // The catalog changes under load: two items become unavailable (the change queues like any request, so
    // it is retried while the queue is full, at most 500 times).
    let (status, v) = (0..500)
        .map(|_| server.delete("/v1/items", &json!({"ids": ["i5", "i6"]})))
        .find(|(status, _)| {
            let full = *status == 429;
            if full {
                std::thread::sleep(Duration::from_millis(5));
            }
            !full
        })
        .expect("the catalog change was refused 500 times");
    assert_eq!((status, v["removed"].as_u64()), (200, Some(2)), "{v}");
    let (mut ok, mut rejected) = (0, 0);
    for t in threads {
        let (o, r) = t.join().unwrap();
        ok += o;
        rejected += r;
    }
    assert_eq!(ok + rejected, 64 * 8);
    assert!(ok > 0 && rejected > 0, "ok {ok}, rejected {rejected}");
    // Removed items are never recommended afterwards.
    for h in 0..20 {
        let (status, v) = server.post(
            "/v1/recommend",
            &json!({"history": [format!("i{h}")], "options": {"k": 58, "beam": 100}}),
        );
        assert_eq!(status, 200);
        let got = items(&v);
        assert!(!got.contains(&"i5".to_string()) && !got.contains(&"i6".to_string()));
        assert_eq!(v["catalog_version"], 2);
    }
    assert_eq!(server.metric("reg4rec_invalid_items_total"), 0.0);
    assert_eq!(server.metric("reg4rec_available_items"), 58.0);
}

#[test]
fn sigterm_answers_every_request_in_flight_before_exiting() {
    // The batcher holds the first request up to 1.5 s for others, so every request is in flight at SIGTERM.
    let server = Server::start(&["serve.batch_wait_ms=1500", "serve.max_batch=64"]);
    let url = server.url.clone();
    let start = Arc::new(Barrier::new(33));
    let mut threads = Vec::new();
    for c in 0..32 {
        let (url, start) = (url.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            start.wait();
            let r = http
                .post(format!("{url}/v1/recommend"))
                .json(&json!({"history": [format!("i{c}")], "options": {"k": 5}}))
                .send()
                .unwrap();
            (r.status().as_u16(), Instant::now())
        }));
    }
    start.wait();
    std::thread::sleep(Duration::from_millis(400));
    let term = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    for t in threads {
        let (s, done) = t.join().unwrap();
        assert_eq!(s, 200);
        assert!(
            done > term,
            "a request was answered before SIGTERM; the test needs a longer wait"
        );
    }
    assert!(
        reqwest::blocking::get(format!("{url}/health")).is_err(),
        "still accepting"
    );
}

#[test]
fn an_item_added_through_the_api_is_recommended_and_explained() {
    let server = Server::start(&["serve.items_api=true", "infer.beam=200"]);
    // A new item made like the top item for a history: that item's features (rows in catalog order).
    let history = json!(["i1", "i4", "i7"]);
    let (_, v) = server.post(
        "/v1/recommend",
        &json!({"history": history, "options": {"k": 10}}),
    );
    let top = items(&v)[0].clone();
    let run = model().parent().unwrap().parent().unwrap();
    let features = reg4rec_data::features::ItemFeatures::load_user(
        &run.join("stages/features/features.safetensors"),
        60,
    )
    .unwrap();
    let catalog: Value =
        serde_json::from_str(&std::fs::read_to_string(model().join("catalog.json")).unwrap())
            .unwrap();
    let row = catalog["item_ids"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i == &json!(top))
        .unwrap();
    let category =
        catalog["category_names"][catalog["item_category"][row].as_u64().unwrap() as usize].clone();
    let (status, added) = server.post(
        "/v1/items",
        &json!({"items": [{"id": "new-1", "category": category, "features": features.row(row)}]}),
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["catalog_version"], 2);
    let tokens: Vec<String> = added["added"][0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    // Its tuple is unlike every other item's.
    let codes: Value =
        serde_json::from_str(&std::fs::read_to_string(model().join("codes.json")).unwrap())
            .unwrap();
    let m = codes["m"].as_u64().unwrap() as usize;
    let tuples: Vec<u64> = codes["tuples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    for item in tuples.chunks(m) {
        let other: Vec<String> = item
            .iter()
            .enumerate()
            .map(|(r, c)| format!("<t{r}_{c}>"))
            .collect();
        assert_ne!(other, tokens);
    }
    // Some history leads to it: it is in the top 10 of one of the one-item histories, explained by its path.
    let new = (0..60)
        .find_map(|h| {
            let (_, v) = server.post(
                "/v1/recommend",
                &json!({"history": [format!("i{h}")], "options": {"k": 10, "explain": true}}),
            );
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["item_id"] == "new-1")
                .cloned()
        })
        .expect("the new item is in no top 10");
    assert_eq!(new["added"], true);
    let mut path: Vec<String> = new["explanation"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["token"].as_str().unwrap().to_string())
        .collect();
    path.sort();
    let mut want = tokens.clone();
    want.sort();
    assert_eq!(path, want);
    // Adding it twice, or with features of the wrong size, names the field.
    let (status, v) = server.post(
        "/v1/items",
        &json!({"items": [{"id": "new-1", "category": category, "features": features.row(row)}]}),
    );
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("items[0].id")),
        "{v}"
    );
    let (status, v) = server.post(
        "/v1/items",
        &json!({"items": [{"id": "new-2", "category": category, "features": [1.0]}]}),
    );
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("items[0].features")),
        "{v}"
    );
    let (_, list) = server.get("/v1/items?offset=60&limit=5");
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["total"], 61);
    assert_eq!(list["items"][0]["id"], "new-1");
}

/// `reg4rec loadtest` reports every request it sent, and ends quietly when its stdout is already closed.
#[test]
fn the_load_generator_reports_and_ends_quietly_on_a_closed_stdout() {
    let server = Server::start(&[]);
    let args = |c: &mut Command| {
        c.args(["loadtest", "--url", &server.url, "--model"])
            .arg(model())
            .args(["--clients", "2", "--requests", "8", "--beam", "10"]);
    };
    let mut c = bin();
    args(&mut c);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["sent"].as_u64(), v["ok"].as_u64(), v["failed"].as_u64()),
        (Some(8), Some(8), Some(0)),
        "{v}"
    );
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = bin();
    args(&mut c);
    let o = c.stdout(writer).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("panicked"),
        "{:?} {err}",
        o.status
    );
}

#[test]
fn the_page_renders_recommendations_in_headless_chromium() {
    let chromium = std::env::var("REG4REC_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let server = Server::start(&[]);
    let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromium-profile");
    let mut b = cdp::Browser::launch(&chromium, &profile);
    // A link with a history of ids asks at once.
    b.navigate(&format!("{}/?history=i1,i4,i7", server.url));
    b.wait(
        "ten recommendations",
        "document.querySelectorAll('li.rec').length === 10",
    );
    // Each item shows its reasoning path's tokens, and its name where the catalogue has one (items below 30).
    let shown = b.eval(
        "[...document.querySelectorAll('li.rec')].map(e => [e.dataset.item, \
         e.querySelector('.name').textContent, e.querySelector('.tok').textContent])",
    );
    for row in shown.as_array().unwrap() {
        let (id, name, token) = (
            row[0].as_str().unwrap(),
            row[1].as_str().unwrap(),
            row[2].as_str().unwrap(),
        );
        assert!(token.starts_with("<t"), "no reasoning path shown: {row}");
        let n: usize = id[1..].parse().unwrap();
        let want = if n < 30 {
            format!("Item {n}, named")
        } else {
            id.to_string()
        };
        assert_eq!(name, want, "{row}");
    }
}

/// A REG4Rec model pre-trained (smoke preset) on MovieLens-100k, whose item file gives every film its title;
/// `None`, with a note, when the data cannot be downloaded on this machine.
fn ml100k_model() -> Option<&'static Path> {
    static MODEL: OnceLock<Option<PathBuf>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-ml-100k");
            let _ = std::fs::remove_dir_all(&dir);
            let (tok, model) = (dir.join("tokenizer"), dir.join("model"));
            let o = bin()
                .args([
                    "tokenize",
                    "--dataset",
                    "ml-100k",
                    "--preset",
                    "smoke",
                    "--out",
                ])
                .arg(&tok)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() && err.contains("download of") {
                eprintln!("note: skipped: ml-100k is not available offline ({err})");
                return None;
            }
            assert!(o.status.success(), "{err}");
            let o = bin()
                .args(["pretrain", "--dataset", "ml-100k", "--preset", "smoke"])
                .arg("--tokenizer")
                .arg(&tok)
                .arg("--out")
                .arg(&model)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            Some(model)
        })
        .as_deref()
}

/// The ids of the listed items, once no list rendered before `mark_stale` is left (and at least one item is).
fn fresh_list(b: &mut cdp::Browser, what: &str) -> Vec<String> {
    let v = b.wait(
        what,
        "(() => { const r = [...document.querySelectorAll('li.rec')]; \
         return r.length > 0 && !r.some(e => e.dataset.stale) && r.map(e => e.dataset.item); })()",
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn mark_stale(b: &mut cdp::Browser) {
    b.eval("document.querySelectorAll('li.rec').forEach(e => e.dataset.stale = '1')");
}

#[test]
fn a_user_types_a_history_by_name_reads_the_paths_and_steers_by_a_click_on_ml_100k() {
    // REG4REC_PAGE_MODEL: another ml-100k model directory to drive (the docs' screenshots use a trained one).
    let chosen = std::env::var_os("REG4REC_PAGE_MODEL").map(PathBuf::from);
    let Some(model) = chosen.or_else(|| ml100k_model().map(Path::to_path_buf)) else {
        return;
    };
    let server = Server::start_on(&model, &[]);
    let chromium = std::env::var("REG4REC_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut b = cdp::Browser::launch(&chromium, &tmp.join("chromium-page-profile"));
    b.navigate(&format!("{}/", server.url));
    b.wait(
        "the model information",
        "document.getElementById('meta').textContent.includes('tokens per item')",
    );
    let m = b
        .eval("(async () => (await (await fetch('/v1/info')).json()).model.m)()")
        .as_u64()
        .unwrap();

    // A history typed by name: the suggestions come from the catalogue; Enter takes the first.
    for (typed, title) in [
        ("toy sto", "Toy Story"),
        ("star wa", "Star Wars"),
        ("godfather", "Godfather, The"),
    ] {
        b.type_into("#search", typed);
        b.wait(
            "suggestions",
            "document.querySelectorAll('#suggest li').length > 0",
        );
        b.press("Enter", 13, 0);
        b.wait(
            &format!("`{title}` in the history"),
            &format!(
                "[...document.querySelectorAll('#history .chip')].some(c => c.textContent.startsWith({}))",
                json!(title)
            ),
        );
    }
    let history =
        b.eval("[...document.querySelectorAll('#history .chip')].map(c => c.dataset.item)");
    assert_eq!(history, json!(["1", "50", "127"]));

    // The list: names, and each item's path with one step (and its category bars) per codebook.
    b.click("document.getElementById('go')", 0);
    let first = fresh_list(&mut b, "the first list");
    assert_eq!(first.len(), 10);
    let shown = b.eval(
        "[...document.querySelectorAll('li.rec')].map(e => [e.querySelector('.name').textContent, \
         e.querySelectorAll('.step').length, \
         [...e.querySelectorAll('.step')].every(s => s.querySelectorAll('.bar').length > 0)])",
    );
    for (row, id) in shown.as_array().unwrap().iter().zip(&first) {
        assert_ne!(
            row[0].as_str().unwrap(),
            id,
            "item {id} shown without its title"
        );
        assert_eq!(row[1], json!(m), "item {id}: one step per codebook");
        assert_eq!(
            row[2],
            json!(true),
            "item {id}: a step without its category bars"
        );
    }

    // A click on a category in a step's bars asks again with only that category.
    let category = b
        .eval("document.querySelector('li.rec .step .bar').dataset.category")
        .as_str()
        .unwrap()
        .to_string();
    mark_stale(&mut b);
    b.click("document.querySelector('li.rec .step .bar')", 0);
    let steered = fresh_list(&mut b, "the steered list");
    let cats = b.eval("[...document.querySelectorAll('li.rec')].map(e => e.dataset.category)");
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .all(|c| *c == json!(category)),
        "asked for only {category}, got {cats}"
    );
    assert!(!steered.is_empty());
    assert_eq!(
        b.eval("[...document.querySelectorAll('#steer .chip')].map(c => c.dataset.kind + ':' + c.dataset.category)"),
        json!([format!("allow:{category}")])
    );

    // Removing the chip brings the first list back.
    mark_stale(&mut b);
    b.click("document.querySelector('#steer .chip')", 0);
    assert_eq!(fresh_list(&mut b, "the list without steering"), first);

    // A Shift-click excludes the category instead.
    mark_stale(&mut b);
    b.click("document.querySelector('li.rec .step .bar')", cdp::SHIFT);
    fresh_list(&mut b, "the list without the category");
    let cats = b.eval("[...document.querySelectorAll('li.rec')].map(e => e.dataset.category)");
    assert!(
        !cats
            .as_array()
            .unwrap()
            .iter()
            .any(|c| *c == json!(category)),
        "excluded {category}, got {cats}"
    );
    mark_stale(&mut b);
    b.click("document.querySelector('#steer .chip')", 0);
    assert_eq!(fresh_list(&mut b, "the first list again"), first);

    // Both orders side by side, drawn at a laptop's and a phone's width.
    mark_stale(&mut b);
    b.click("document.getElementById('both')", 0);
    b.wait(
        "two lists",
        "document.querySelectorAll('section.list').length === 2 && \
         document.querySelectorAll('li.rec:not([data-stale])').length === 20",
    );
    let shots = std::env::var("REG4REC_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();
    for (width, max_height) in [(1280, 2400), (400, 1500)] {
        b.screenshot(width, max_height, &shots.join(format!("page-{width}.png")));
    }

    // Unknown items get a clear message, never a blank page.
    b.type_into("#search", "no such film zzz");
    b.press("Enter", 13, 0);
    b.wait(
        "the message for an unknown name",
        "document.getElementById('error').textContent.includes('no item matches \"no such film zzz\"')",
    );
    b.navigate(&format!("{}/?history=1,nosuch", server.url));
    b.wait(
        "the server's message for an unknown id",
        "document.getElementById('error').textContent.includes('unknown item id `nosuch`')",
    );
}
