//! Data-parallel pre-training through the `reg4rec` launcher: 2 CPU ranks over loopback (Gloo).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn reg4rec(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reg4rec"));
    c.args(args)
        .env("REG4REC_NO_PROGRESS", "1")
        .env("REG4REC_LOG", "warn")
        .env_remove("WORLD_SIZE");
    c
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "reg4rec failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A small interaction log and an MPQ tokenizer trained on it (smoke preset).
fn data_and_tokenizer(dir: &Path) -> (PathBuf, PathBuf) {
    let mut s = String::from("user,item,timestamp,category\n");
    for u in 0..48 {
        for t in 0..(5 + u % 4) {
            let item = (u * 5 + t * (2 + u % 3)) % 36;
            s.push_str(&format!("u{u},i{item},{t},c{}\n", item % 4));
        }
    }
    let csv = dir.join("log.csv");
    std::fs::write(&csv, s).unwrap();
    let tok = dir.join("tok");
    ok(reg4rec(&[
        "tokenize",
        "--data",
        csv.to_str().unwrap(),
        "--preset",
        "smoke",
        "--out",
        tok.to_str().unwrap(),
    ])
    .output()
    .unwrap());
    (csv, tok)
}

fn pretrain_args<'a>(csv: &'a Path, tok: &'a Path, out: &'a Path, batch: &'a str) -> Vec<String> {
    [
        "pretrain",
        "--data",
        csv.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--preset",
        "smoke",
        "--set",
        "model.dropout=0",
        // Adam with eps 1e-8 turns float rounding in near-zero gradients into sign-sized updates (the runs then
        // differ by ~1e-3 after 20 steps); eps 1e-3 keeps the update Lipschitz in the gradient, so the
        // comparison sees only rounding (~1e-7).
        "--set",
        "pretrain.eps=1e-3",
        "--set",
        "pipeline.valid_recall=false",
        "--set",
        "pretrain.epochs=2",
        "--set",
        &format!("pretrain.batch_size={batch}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The weights of a run's latest checkpoint, by name.
fn final_weights(run: &Path) -> Vec<(String, tch::Tensor)> {
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("latest.json")).unwrap()).unwrap();
    let dir = run.join(latest["checkpoint"].as_str().unwrap());
    // In name order.
    reg4rec_data::tensors::read(&dir.join("model.safetensors"))
        .unwrap()
        .into_tensors()
        .iter()
        .map(|t| (t.name.clone(), reg4rec_data::tensors::to_tch(t)))
        .collect()
}

fn max_abs_diff(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

#[test]
fn two_ranks_with_batch_b_match_one_process_with_batch_2b() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, tok) = data_and_tokenizer(dir.path());
    let port = free_port().to_string();

    // 2 ranks x 8, checking after every step that the replicas are bit-identical.
    let dp_run = dir.path().join("dp");
    let mut args = pretrain_args(&csv, &tok, &dp_run, "8");
    args.extend(
        [
            "--nproc",
            "2",
            "--master-port",
            &port,
            "--check-replicas-every",
            "1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dp = ok(reg4rec(&args).output().unwrap());
    // Only rank 0 prints its report.
    let dp_report: serde_json::Value = serde_json::from_slice(&dp.stdout).unwrap();

    let single_run = dir.path().join("single");
    let args = pretrain_args(&csv, &tok, &single_run, "16");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let single = ok(reg4rec(&args).output().unwrap());
    let single_report: serde_json::Value = serde_json::from_slice(&single.stdout).unwrap();

    assert_eq!(dp_report["steps"], single_report["steps"]);
    assert!(dp_report["steps"].as_u64().unwrap() >= 4);
    let diff = max_abs_diff(&final_weights(&dp_run), &final_weights(&single_run));
    assert!(diff < 1e-5, "2x8 and 1x16 weights differ by {diff}");
    let (a, b) = (
        dp_report["last_valid_loss"].as_f64().unwrap(),
        single_report["last_valid_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");

    // The comparison can fail: one process with batch 8 ends elsewhere.
    let other_run = dir.path().join("other");
    let args = pretrain_args(&csv, &tok, &other_run, "8");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(reg4rec(&args).output().unwrap());
    let diff = max_abs_diff(&final_weights(&dp_run), &final_weights(&other_run));
    assert!(diff > 1e-3, "{diff}");
}

#[test]
fn killing_one_node_makes_the_other_fail_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, tok) = data_and_tokenizer(dir.path());
    let port = free_port().to_string();
    let run = dir.path().join("run");
    let node = |rank: &str| {
        let mut args = pretrain_args(&csv, &tok, &run, "4");
        args.extend(
            [
                "--set",
                "pretrain.epochs=1000",
                "--nnodes",
                "2",
                "--node-rank",
                rank,
                "--master-port",
                &port,
                "--dist-timeout",
                "5",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        reg4rec(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut n0 = node("0");
    let mut n1 = node("1");
    // Wait until training is under way (rank 0 logs every step), then kill node 1's launcher: its rank
    // dies with it.
    let metrics = run.join("metrics.jsonl");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|s| s.lines().count() >= 3) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        assert!(n0.try_wait().unwrap().is_none(), "node 0 ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    n1.kill().unwrap();
    n1.wait().unwrap();
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = n0.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(60) {
            n0.kill().unwrap();
            panic!("node 0 still running 60 s after node 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = t1.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut n0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("rank 0 failed"), "{err}");
    assert!(elapsed < Duration::from_secs(5 + 10), "took {elapsed:?}");
}

#[test]
fn two_rank_alignment_keeps_replicas_identical_and_only_rank_0_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, tok) = data_and_tokenizer(dir.path());
    let pre = dir.path().join("pre");
    let args = pretrain_args(&csv, &tok, &pre, "16");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(reg4rec(&args).output().unwrap());

    let port = free_port().to_string();
    let out = dir.path().join("aligned");
    let o = ok(reg4rec(&[
        "align",
        "--model",
        pre.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--preset",
        "smoke",
        "--set",
        "align.batch_contexts=2",
        "--nproc",
        "2",
        "--master-port",
        &port,
        "--check-replicas-every",
        "1",
    ])
    .output()
    .unwrap());
    // One report (rank 0's), and the run directory it describes.
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["steps"], 4);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved, report);
    // One step record per step: a second writer would have added more.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps = metrics
        .lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .count();
    assert_eq!(steps, 4, "{metrics}");
}

#[test]
fn the_pipeline_trains_its_stages_with_nproc_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = data_and_tokenizer(dir.path());
    let out = dir.path().join("run");
    let port = free_port().to_string();
    let o = reg4rec(&[
        "pipeline",
        "--data",
        csv.to_str().unwrap(),
        "--preset",
        "smoke",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "pipeline.precisions=[]",
        "--nproc",
        "2",
        "--master-port",
        &port,
    ])
    .output()
    .unwrap();
    ok(o);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> = report["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"reg4rec") && names.contains(&"tiger"),
        "{names:?}"
    );
    // The training stages ran through the launcher (their config beside the run) and finished.
    for stage in ["pretrain-reg4rec", "pretrain-tiger", "align-reg4rec"] {
        let d = out.join("stages").join(stage);
        assert!(d.join("launch-config.toml").exists(), "{stage}");
        assert!(d.join("latest.json").exists(), "{stage}");
    }
}
