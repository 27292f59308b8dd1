//! Growth curve of loading interaction logs: rows/s and peak memory for CSV and Parquet logs of 10^6 to 10^8
//! rows, against the log's compact in-memory form (user and item as `u32`, timestamp as 8 bytes: 16 bytes a row).
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example logs -- --out runs/logs
//! ```
//!
//! The synthetic logs (seeded, so every run writes the same files): N rows in random order over N/20 users
//! (uniform) and max(1,000, N/100) items, skewed toward low ids (item = floor(items * u^3) for uniform u), with
//! timestamps uniform over 10^8 seconds from 1.5e9. Ids are integers. The CSV has a `user_id,item_id,timestamp`
//! header; the Parquet file has the same three Int64 columns, Snappy-compressed, in row groups of 2^20 rows. Files
//! are written once to `--work` and reused.
//!
//! Each (format, size) is loaded by `reg4rec_data::load_path` (what `--data FILE` does) in a fresh process,
//! which reports the load time, its resident set before loading, its peak (`VmHWM`) and its resident set after
//! loading with the dataset held. Results go to `<out>/logs.json`, the figure `<out>/logs.svg` (peak memory
//! against rows) and a Markdown table on stdout.

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use clap::Parser;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reg4rec_benches::report::{log_log_figure, measure_in_child, print_record, rss_mib};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;
const BATCH: usize = 1 << 20;

#[derive(Parser)]
#[command(about = "Rows/s and peak memory of loading CSV and Parquet interaction logs")]
struct Args {
    /// Folder for logs.json and logs.svg.
    #[arg(long, default_value = "runs/logs")]
    out: PathBuf,
    /// Folder for the synthetic log files (written once, reused).
    #[arg(long, default_value = "runs/logs-data")]
    work: PathBuf,
    /// Log sizes (rows).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000usize, 10_000_000, 100_000_000])]
    rows: Vec<usize>,
    /// Formats to load.
    #[arg(long, value_delimiter = ',', default_values_t = ["csv".to_string(), "parquet".to_string()])]
    formats: Vec<String>,
    /// Load the single (rows, format) given and print its record as JSON.
    #[arg(long, hide = true)]
    child: bool,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: String,
    rows: usize,
    users: usize,
    items: usize,
    file_mib: f64,
    load_s: f64,
    rows_per_s: f64,
    /// The compact form: 16 bytes a row.
    compact_mib: f64,
    /// Resident set before loading, its peak while loading, and after loading with the dataset held.
    base_rss_mib: f64,
    peak_rss_mib: f64,
    held_rss_mib: f64,
    /// (peak - base) / compact: the loader's peak memory in units of the compact form.
    peak_over_compact: f64,
}

/// The synthetic rows in batches of `BATCH`: `(users, items, timestamps)`.
fn synthetic(rows: usize) -> impl Iterator<Item = [Vec<i64>; 3]> {
    let mut rng = ChaCha8Rng::seed_from_u64(rows as u64);
    let (users, items) = ((rows / 20).max(1) as f64, (rows / 100).max(1000) as f64);
    let mut done = 0;
    std::iter::from_fn(move || {
        let n = BATCH.min(rows - done);
        if n == 0 {
            return None;
        }
        done += n;
        let u = (0..n).map(|_| (rng.gen::<f64>() * users) as i64).collect();
        let i = (0..n)
            .map(|_| (rng.gen::<f64>().powi(3) * items) as i64)
            .collect();
        let t = (0..n)
            .map(|_| 1_500_000_000 + rng.gen_range(0..100_000_000))
            .collect();
        Some([u, i, t])
    })
}

fn write_csv(path: &Path, rows: usize) -> std::io::Result<()> {
    let tmp = path.with_extension("csv.part");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    writeln!(w, "user_id,item_id,timestamp")?;
    for [u, i, t] in synthetic(rows) {
        for k in 0..u.len() {
            writeln!(w, "{},{},{}", u[k], i[k], t[k])?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(tmp, path)
}

fn write_parquet(path: &Path, rows: usize) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = path.with_extension("parquet.part");
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(BATCH))
        .build();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    for columns in synthetic(rows) {
        let [u, i, t] = columns.map(|c| Arc::new(Int64Array::from(c)) as ArrayRef);
        let batch = RecordBatch::try_from_iter([("user_id", u), ("item_id", i), ("timestamp", t)])?;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(ArrowWriter::try_new(
                std::fs::File::create(&tmp)?,
                batch.schema(),
                Some(props.clone()),
            )?),
        };
        w.write(&batch)?;
    }
    if let Some(w) = writer {
        w.close()?;
    }
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// The log file of `rows` rows in `format`, written when missing.
fn log_file(work: &Path, rows: usize, format: &str) -> PathBuf {
    let path = work.join(format!("log-{rows}.{format}"));
    if !path.exists() {
        std::fs::create_dir_all(work).expect("create the work folder");
        let t = Instant::now();
        match format {
            "csv" => write_csv(&path, rows).expect("write the CSV log"),
            "parquet" => write_parquet(&path, rows).expect("write the Parquet log"),
            other => panic!("unknown format `{other}` (csv or parquet)"),
        }
        eprintln!(
            "[{rows} rows, {format}] wrote {} in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    path
}

fn measure(path: &Path, rows: usize, format: &str) -> Record {
    let base_rss_mib = rss_mib("VmRSS");
    let t = Instant::now();
    let ds = reg4rec_data::load_path(path, &reg4rec_data::LoadOptions::default()).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    assert_eq!(ds.n_interactions(), rows);
    let (peak_rss_mib, held_rss_mib) = (rss_mib("VmHWM"), rss_mib("VmRSS"));
    let compact_mib = rows as f64 * 16.0 / MIB;
    Record {
        format: format.to_string(),
        rows,
        users: ds.n_users(),
        items: ds.n_items(),
        file_mib: std::fs::metadata(path).map_or(f64::NAN, |m| m.len() as f64 / MIB),
        load_s,
        rows_per_s: rows as f64 / load_s,
        compact_mib,
        base_rss_mib,
        peak_rss_mib,
        held_rss_mib,
        peak_over_compact: (peak_rss_mib - base_rss_mib) / compact_mib,
    }
}

fn main() {
    let args = Args::parse();
    if args.child {
        let (rows, format) = (args.rows[0], &args.formats[0]);
        let record = measure(&log_file(&args.work, rows, format), rows, format);
        print_record(&record);
        return;
    }
    std::fs::create_dir_all(&args.out).expect("create the output folder");
    let path = args.out.join("logs.json");
    let mut records: Vec<Record> = Vec::new();
    for format in &args.formats {
        for &rows in &args.rows {
            log_file(&args.work, rows, format);
            let child = [
                "--rows".to_string(),
                rows.to_string(),
                "--formats".to_string(),
                format.clone(),
                "--work".to_string(),
                args.work.display().to_string(),
            ];
            let Some(r) = measure_in_child::<Record>(&child, &format!("{rows} rows, {format}"))
            else {
                break;
            };
            eprintln!(
                "[{rows} rows, {format}] {:.1} s, {:.2} M rows/s, peak {:.0} MiB over a base of {:.0} ({:.2}x compact)",
                r.load_s,
                r.rows_per_s / 1e6,
                r.peak_rss_mib,
                r.base_rss_mib,
                r.peak_over_compact
            );
            records.push(r);
            // Written after every size, so a long run keeps what it measured.
            reg4rec_data::io::write_json_atomic(&path, &records).expect("write logs.json");
        }
    }
    let mut series: Vec<(String, Vec<(f64, f64)>)> = args
        .formats
        .iter()
        .map(|f| {
            let pts = records
                .iter()
                .filter(|r| &r.format == f)
                .map(|r| (r.rows as f64, r.peak_rss_mib - r.base_rss_mib))
                .collect();
            (format!("{f}: peak RSS while loading"), pts)
        })
        .collect();
    let rows_seen = || records.iter().filter(|r| r.format == records[0].format);
    series.push((
        "compact form (16 bytes a row)".to_string(),
        rows_seen()
            .map(|r| (r.rows as f64, r.compact_mib))
            .collect(),
    ));
    series.push((
        "2x the compact form".to_string(),
        rows_seen()
            .map(|r| (r.rows as f64, 2.0 * r.compact_mib))
            .collect(),
    ));
    log_log_figure(
        &args.out.join("logs.svg"),
        "rows in the log",
        "Peak memory of loading a log (above the process's base)",
        "MiB",
        &series,
    )
    .expect("draw the figure");
    println!("| format | rows | users | items | file MiB | load s | rows/s | compact MiB | peak RSS MiB (base) | peak / compact | held RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &records {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.2} M | {:.0} | {:.0} ({:.0}) | {:.2} | {:.0} |",
            r.format,
            r.rows,
            r.users,
            r.items,
            r.file_mib,
            r.load_s,
            r.rows_per_s / 1e6,
            r.compact_mib,
            r.peak_rss_mib,
            r.base_rss_mib,
            r.peak_over_compact,
            r.held_rss_mib
        );
    }
    eprintln!("wrote {}", path.display());
}
