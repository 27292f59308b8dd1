//! Data-parallel pre-training through `reg4rec_model::pretrain` in 2 CPU processes (this test binary
//! re-executed as the ranks): an interrupted and resumed run ends with the same weights, bit for bit, as an
//! uninterrupted one, the replicas are checked after every step, and only rank 0 writes.

use reg4rec_data::split::LeaveOneOut;
use reg4rec_data::Dataset;
use reg4rec_dist::{Backend, DistConfig, ProcessGroup};
use reg4rec_model::{load_model, pretrain, ModelConfig, PretrainOptions, TrainConfig, Which};
use reg4rec_tokenizer::Codes;
use reg4rec_train::DataParallel;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 12 items with distinct 3-token tuples (D = 4), 3 categories, and 8 users walking the items with user-specific
/// strides.
fn toy() -> (Dataset, Codes) {
    let n_items = 12usize;
    let tuples: Vec<u16> = (0..n_items)
        .flat_map(|i| {
            let k = (i * 5 + 1) % 64;
            [(k % 4) as u16, ((k / 4) % 4) as u16, (k / 16) as u16]
        })
        .collect();
    let ds = Dataset {
        name: "toy".into(),
        user_ids: (0..8).map(|u| format!("u{u}")).collect(),
        sequences: (0..8u32)
            .map(|u| (0..9).map(|t| (u * 3 + t * (1 + u % 3)) % 12).collect())
            .collect(),
        item_ids: (0..n_items).map(|i| format!("i{i}")).collect(),
        item_category: (0..n_items as u32).map(|i| i % 3).collect(),
        category_names: ["x", "y", "z"].map(String::from).to_vec(),
        item_attributes: vec![vec![]; n_items],
        item_names: Vec::new(),
    };
    (ds, Codes::new(3, 4, false, tuples).unwrap())
}

fn configs() -> (ModelConfig, TrainConfig) {
    let t = TrainConfig {
        epochs: 3,
        batch_size: 1,
        log_every: 1,
        ..TrainConfig::preset("smoke").unwrap()
    };
    (ModelConfig::preset("smoke").unwrap(), t)
}

/// One rank: the uninterrupted run in `dir/full`, the interrupted and resumed one in `dir/killed`.
fn rank_main(dir: &Path) {
    tch::set_num_threads(1);
    let cfg = DistConfig::from_env(Backend::Gloo).unwrap().unwrap();
    let pg = ProcessGroup::init(&cfg).unwrap();
    let dp = DataParallel {
        group: &pg,
        check_replicas_every: 1,
    };
    let (ds, codes) = toy();
    let split = LeaveOneOut::new(&ds);
    let (m, t) = configs();
    let run = |out: &str, resume: bool, stop: Option<u64>| {
        let opts = PretrainOptions {
            stop_after_steps: stop,
            data_parallel: Some(dp),
            ..Default::default()
        };
        pretrain(&ds, &split, &codes, &m, &t, &dir.join(out), resume, opts).unwrap()
    };
    let full = run("full", false, None);
    // Global batch: 1 user per rank.
    let spe = split.n_users().div_ceil(2) as u64;
    assert_eq!(full.steps, 3 * spe);
    assert!(run("killed", false, Some(spe + 1)).interrupted);
    let resumed = run("killed", true, None);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(resumed.last_valid_loss, full.last_valid_loss);
}

#[test]
fn an_interrupted_two_rank_run_resumes_to_the_same_weights() {
    if let Ok(dir) = std::env::var("R4D_DIR") {
        return rank_main(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "an_interrupted_two_rank_run_resumes_to_the_same_weights",
                    "--exact",
                    "--nocapture",
                ])
                .env("R4D_DIR", dir.path())
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("REG4REC_DIST_TIMEOUT_S", "60")
                .env("REG4REC_NO_PROGRESS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect::<Vec<_>>();
    for (r, o) in ranks.iter().enumerate() {
        assert!(
            o.status.success(),
            "rank {r}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let weights = |run: &str| -> PathBuf { dir.path().join(run) };
    let (a, _) = load_model(&weights("full"), Which::Latest, &toy().1, tch::Device::Cpu).unwrap();
    let (b, _) = load_model(
        &weights("killed"),
        Which::Latest,
        &toy().1,
        tch::Device::Cpu,
    )
    .unwrap();
    let va = a.var_store().variables();
    for (name, tb) in b.var_store().variables() {
        assert!(va[&name].equal(&tb), "weight {name} differs after resume");
    }
    // One writer: each step logged once.
    let log = std::fs::read_to_string(weights("killed").join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=steps.len() as u64).collect();
    assert_eq!(steps, expected);
}
