//! Trains SASRec-CE on a dataset and prints the test metrics, the time and the settings.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example sasrec_measure -- \
//!     [--dataset amazon-beauty | --s3rec-txt PATH/Beauty.txt] [--preset cpu] [--run-dir DIR] [--resume] \
//!     [--set field=value ...]
//! ```
//! `--set` overrides any `SasRecConfig` field (`--set dropout=0.3 --set n_heads=2`; the published recipe:
//! `--set samples=prefixes --set batch_size=256 --set lr=0.0005 --set lr_schedule=constant --set dropout=0.5`;
//! the item features of the preset's `[features]` section: `--set item_features=true`). It prints the test
//! metrics under both protocols (every item ranked, and the user's history filtered). `--s3rec-txt` reads an
//! S3-Rec `user item item ...` file directly instead of the registry.

use reg4rec_baselines::{evaluate_popularity, train_sasrec, SasRecConfig};
use reg4rec_data::split::Stage;
use reg4rec_data::{Dataset, LeaveOneOut, Metrics};
use std::path::PathBuf;
use std::time::Instant;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// An S3-Rec `<Name>.txt` file: one user a line, `user_id item_id ...` in time order.
fn read_s3rec_txt(path: &PathBuf) -> BoxResult<Dataset> {
    let text = std::fs::read_to_string(path)?;
    let mut item_index = std::collections::HashMap::new();
    let mut item_ids = Vec::new();
    let (mut user_ids, mut sequences) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(user) = fields.next() else { continue };
        let mut seq = Vec::new();
        for raw in fields {
            raw.parse::<u64>()
                .map_err(|e| format!("{}:{}: item `{raw}`: {e}", path.display(), n + 1))?;
            let next = item_ids.len() as u32;
            let idx = *item_index.entry(raw.to_string()).or_insert_with(|| {
                item_ids.push(raw.to_string());
                next
            });
            seq.push(idx);
        }
        user_ids.push(user.to_string());
        sequences.push(seq);
    }
    let n = item_ids.len();
    Ok(Dataset {
        name: path.display().to_string(),
        sequences,
        user_ids,
        item_ids,
        item_category: vec![0; n],
        category_names: vec!["all".into()],
        item_attributes: vec![vec![]; n],
        item_names: Vec::new(),
    })
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 100 ticks a second), a measure of
/// the work done that does not grow when other processes compete for the cores.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn line(name: &str, m: &Metrics) -> String {
    format!(
        "{name:<12} R@5 {:.4}  N@5 {:.4}  R@10 {:.4}  N@10 {:.4}  R@20 {:.4}  N@20 {:.4}  ({} users)",
        m.recall_5, m.ndcg_5, m.recall_10, m.ndcg_10, m.recall_20, m.ndcg_20, m.users
    )
}

fn main() -> BoxResult<()> {
    let mut dataset = "amazon-beauty".to_string();
    let mut txt: Option<PathBuf> = None;
    let mut preset = "cpu".to_string();
    let mut run_dir: Option<PathBuf> = None;
    let mut resume = false;
    let mut sets: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dataset" => dataset = value()?,
            "--s3rec-txt" => txt = Some(PathBuf::from(value()?)),
            "--preset" => preset = value()?,
            "--run-dir" => run_dir = Some(PathBuf::from(value()?)),
            "--set" => sets.push(value()?),
            "--resume" => resume = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let mut cfg = serde_json::to_value(SasRecConfig::preset(&preset)?)?;
    for s in &sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set {s}: expected field=value"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        cfg[k] = v;
    }
    let cfg: SasRecConfig = serde_json::from_value(cfg)?;
    cfg.validate()?;

    let ds = match &txt {
        Some(p) => read_s3rec_txt(p)?,
        None => reg4rec_data::registry::load(&dataset, &Default::default())?,
    };
    let split = LeaveOneOut::new(&ds);
    let n_items = ds.n_items();
    eprintln!(
        "{}: {} users ({} kept), {} items, {} interactions; torch threads {}",
        ds.name,
        ds.n_users(),
        split.n_users(),
        n_items,
        ds.n_interactions(),
        tch::get_num_threads()
    );
    let t = Instant::now();
    let pop = evaluate_popularity(&split, n_items, Stage::Test, cfg.exclude_history);
    println!(
        "{}  [{:.2}s]",
        line("popularity", &pop),
        t.elapsed().as_secs_f64()
    );

    let run_dir = run_dir.unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/sasrec-{}-{preset}",
            ds.name.replace('/', "_")
        ))
    });
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    // `--set item_features=true`: the item features of the preset's `[features]` section (the generative model's).
    let features = if cfg.item_features {
        let fcfg: reg4rec_data::FeatureConfig =
            reg4rec_data::presets::section(&preset, "features")?;
        Some(reg4rec_data::build_item_features(&ds, &split, &fcfg)?)
    } else {
        None
    };
    let r = train_sasrec(&split, n_items, &cfg, features.as_ref(), &run_dir, resume)?;
    let cpu_used = cpu_seconds()
        .zip(cpu)
        .map(|(b, a)| b - a)
        .unwrap_or(f64::NAN);
    println!("{}", line("sasrec-ce", &r.test));
    println!("{}", line("(filtered)", &r.test_filtered));
    println!("{}", line("(valid)", &r.valid));
    println!(
        "train {:.1}s, eval {:.1}s, {} epochs, best epoch {}, stopped by {}",
        r.train_seconds, r.eval_seconds, r.epochs, r.best_epoch, r.stop_reason
    );
    println!(
        "this process: {:.1}s wall, {cpu_used:.1}s CPU (user+sys) for training and evaluation; load average now {}",
        wall.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("settings {}", serde_json::to_string(&r.config)?);
    println!("run dir {}", run_dir.display());
    Ok(())
}
