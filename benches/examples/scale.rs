//! Growth curves of the serving path on synthetic catalogs: how tokenizer encoding, the item index, the model's
//! item tables and the constrained beam search grow from 10^4 to 10^7 items.
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example scale -- --out runs/scale
//! ```
//!
//! The synthetic data (seeded, so every run sees the same): for each catalog size N and codebook count M, N
//! distinct token tuples drawn uniformly over M codebooks of 256 codes (rejection of repeats), 6 categories,
//! and user histories of 20 items drawn uniformly from the catalog. The model is the CPU preset's
//! (the `cpu` preset's `[model]`: d_model 64, two layers, the item head on) with seeded random weights: latency
//! does not depend on what the weights learned, only on their shapes and on how many paths the search keeps.
//! Encoding runs a short-trained MPQ tokenizer of M experts (the default network sizes) over seeded random
//! unit feature vectors of 128 dimensions, in chunks of 65,536 rows.
//!
//! For each (N, M): tokenizer encoding (items/s), item-index build time and resident memory, the time and
//! memory of the serving state (model weights, the encoder's item table, index and codes), and beam-search
//! latency per user at beam 20 and 50 (one user per search call, CORP off, `top_n` 20), split into the
//! model's time and the search's bookkeeping. Memory is what the structures hold (the index's buffers, the
//! model's tensors), with the growth of the process's resident set (VmRSS) across each build beside it and the
//! process's peak resident set; each size runs in a fresh process. Results go to `<out>/scale.json` (one record per
//! size), two figures, `<out>/latency.svg` (milliseconds per user against catalog size) and `<out>/memory.svg`
//! (MiB held against catalog size), and a Markdown table on stdout.

use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reg4rec_benches::report::{log_log_figure, measure_in_child, print_record, rss_mib};
use reg4rec_infer::{BeamSearch, InferConfig, ModelScorer, SearchStats};
use reg4rec_model::{ModelConfig, Reg4RecModel};
use reg4rec_tokenizer::{
    train, Codes, FeatureMatrix, ItemIndex, MpqConfig, TokenizerConfig, TokenizerTrainConfig,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

const D: usize = 256;
const N_CATEGORIES: usize = 6;
const HISTORY: usize = 20;
const FEATURE_DIM: usize = 128;
const CHUNK: usize = 65_536;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "Growth curves of reg4rec's serving path on synthetic catalogs")]
struct Args {
    /// Folder for scale.json.
    #[arg(long, default_value = "runs/scale")]
    out: PathBuf,
    /// Catalog sizes (items).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000, 10_000_000])]
    items: Vec<usize>,
    /// Codebook counts M.
    #[arg(long, value_delimiter = ',', default_values_t = [4usize, 8])]
    m: Vec<usize>,
    /// Users timed per beam width (one search call each, after 3 untimed warm-up calls).
    #[arg(long, default_value_t = 40)]
    users: usize,
    /// Items encoded by the tokenizer per size: min(N, this), to bound the run time at 10^7 (the rate is per
    /// item and does not depend on N).
    #[arg(long, default_value_t = 1_000_000)]
    encode_cap: usize,
    /// Measure the single (items, m) given and print its record as JSON (the parent runs each size in a fresh
    /// process, so one size's freed memory does not hide the next one's growth).
    #[arg(long, hide = true)]
    child: bool,
}

#[derive(Serialize, Deserialize)]
struct Latency {
    beam: usize,
    /// Median and mean milliseconds per user (one user per search call).
    median_ms: f64,
    mean_ms: f64,
    /// Mean milliseconds per user inside the model (encoder, decoder, item scores) and in the search's
    /// bookkeeping (valid tokens, reachable items, selection).
    model_ms: f64,
    bookkeeping_ms: f64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    items: usize,
    m: usize,
    d: usize,
    encoded_items: usize,
    encode_items_per_s: f64,
    index_build_s: f64,
    /// What the index holds ([`ItemIndex::heap_bytes`]), and the growth of the resident set across its build.
    index_mib: f64,
    index_rss_mib: f64,
    /// Model weights and the encoder's item table (`Reg4RecModel::stream_table`): their tensors' bytes, and the
    /// growth of the resident set across their build.
    model_build_s: f64,
    model_mib: f64,
    model_rss_mib: f64,
    /// Index, model weights and item table together (bytes held): what a server holds for this catalog.
    serving_state_mib: f64,
    latency: Vec<Latency>,
    peak_rss_mib: f64,
}

/// `n` distinct tuples over `m` codebooks of `D` codes, uniform, seeded.
fn synthetic_codes(n: usize, m: usize, seed: u64) -> Codes {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    reg4rec_benches::distinct_codes(n, m, D, || rng.gen_range(0..D as u16))
}

/// Seeded random unit rows `[n, FEATURE_DIM]`.
fn unit_rows(n: usize, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let x = Tensor::randn(
        [n as i64, FEATURE_DIM as i64],
        (Kind::Float, tch::Device::Cpu),
    );
    let norm = x.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    x / norm
}

/// Tokenizer encoding rate: an MPQ tokenizer of `m` experts trained briefly on 4,096 rows, then timed over
/// `n` rows in chunks.
fn encode_rate(m: usize, n: usize) -> f64 {
    let train_rows = unit_rows(4096, 1);
    let values = Vec::<f32>::try_from(train_rows.view([-1])).expect("rows");
    let features = FeatureMatrix::new(4096, FEATURE_DIM, &values).expect("features");
    let cfg = TokenizerConfig::Mpq(MpqConfig {
        m,
        d: D,
        train: TokenizerTrainConfig {
            epochs: 1,
            warmup_epochs: 0,
            kmeans_iters: 2,
            ..TokenizerTrainConfig::default()
        },
        ..MpqConfig::default()
    });
    let (tok, _) = train(features, &cfg).expect("train the tokenizer");
    let mut secs = 0.0;
    let mut done = 0;
    let mut chunk = 0;
    while done < n {
        let rows = CHUNK.min(n - done);
        let x = unit_rows(rows, 100 + chunk);
        let t = Instant::now();
        let codes = tok.encode(&x).expect("encode");
        assert_eq!(codes.size(), [rows as i64, m as i64]);
        secs += t.elapsed().as_secs_f64();
        done += rows;
        chunk += 1;
    }
    n as f64 / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(n: usize, m: usize, args: &Args) -> Record {
    let encoded_items = n.min(args.encode_cap);
    let encode_items_per_s = encode_rate(m, encoded_items);
    eprintln!(
        "[{n} items, M = {m}] encoding: {encode_items_per_s:.0} items/s over {encoded_items} items"
    );

    let codes = synthetic_codes(n, m, 7 + m as u64);
    let t = Instant::now();
    let before = rss_mib("VmRSS");
    let index = ItemIndex::new(&codes).expect("index");
    let index_build_s = t.elapsed().as_secs_f64();
    let index_rss_mib = rss_mib("VmRSS") - before;
    let index_mib = index.heap_bytes() as f64 / MIB;
    eprintln!(
        "[{n} items, M = {m}] index: {index_build_s:.2} s, {index_mib:.0} MiB held ({index_rss_mib:.0} MiB RSS growth)"
    );

    let before = rss_mib("VmRSS");
    let t = Instant::now();
    tch::manual_seed(0);
    let model = Reg4RecModel::new(
        &ModelConfig::preset("cpu").expect("the cpu preset"),
        &codes,
        N_CATEGORIES,
        tch::Device::Cpu,
    )
    .expect("model");
    let mut scorer = ModelScorer::new(&model, &codes).expect("scorer");
    let model_build_s = t.elapsed().as_secs_f64();
    let model_rss_mib = rss_mib("VmRSS") - before;
    let tensor_bytes = |t: &Tensor| t.numel() as f64 * t.kind().elt_size_in_bytes() as f64;
    let model_mib = (model
        .var_store()
        .variables()
        .values()
        .map(tensor_bytes)
        .sum::<f64>()
        + tensor_bytes(&model.stream_table()))
        / MIB;
    let serving_state_mib = index_mib + model_mib;
    eprintln!(
        "[{n} items, M = {m}] model and item table: {model_build_s:.2} s, {model_mib:.0} MiB held \
         ({model_rss_mib:.0} MiB RSS growth)"
    );

    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let histories: Vec<Vec<u32>> = (0..args.users + 3)
        .map(|_| (0..HISTORY).map(|_| rng.gen_range(0..n as u32)).collect())
        .collect();
    let mut latency = Vec::new();
    for beam in [20usize, 50] {
        let cfg = InferConfig {
            beam,
            top_n: 20,
            theta: None,
            // The dense lookahead reads every item per user: linear in the catalog by design (docs/scale.md).
            dense_lookahead: false,
            ..InferConfig::default()
        };
        let search = BeamSearch::new(&index, &cfg).expect("search");
        let mut times = Vec::with_capacity(args.users);
        let mut stats = SearchStats::default();
        for (i, h) in histories.iter().enumerate() {
            let t = Instant::now();
            let out = search
                .run(&mut scorer, &[h.as_slice()], false)
                .expect("search");
            let el = t.elapsed().as_secs_f64();
            assert!(!out.lists[0].is_empty(), "the search returned no items");
            if i >= 3 {
                times.push(1e3 * el);
                stats.merge(&out.stats);
            }
        }
        let users = times.len() as f64;
        let l = Latency {
            beam,
            mean_ms: times.iter().sum::<f64>() / users,
            median_ms: median(&mut times),
            model_ms: 1e3 * stats.model_secs / users,
            bookkeeping_ms: 1e3 * stats.search_secs / users,
        };
        eprintln!(
            "[{n} items, M = {m}] beam {beam}: median {:.2} ms/user (mean {:.2}: model {:.2} + bookkeeping {:.2})",
            l.median_ms, l.mean_ms, l.model_ms, l.bookkeeping_ms
        );
        latency.push(l);
    }
    Record {
        items: n,
        m,
        d: D,
        encoded_items,
        encode_items_per_s,
        index_build_s,
        index_mib,
        index_rss_mib,
        model_build_s,
        model_mib,
        model_rss_mib,
        serving_state_mib,
        latency,
        peak_rss_mib: rss_mib("VmHWM"),
    }
}

fn main() {
    let args = Args::parse();
    if args.child {
        let record = measure(args.items[0], args.m[0], &args);
        print_record(&record);
        return;
    }
    std::fs::create_dir_all(&args.out).expect("create the output folder");
    let path = args.out.join("scale.json");
    let mut records: Vec<Record> = Vec::new();
    for &m in &args.m {
        for &n in &args.items {
            let child = [
                "--items".to_string(),
                n.to_string(),
                "--m".to_string(),
                m.to_string(),
                "--users".to_string(),
                args.users.to_string(),
                "--encode-cap".to_string(),
                args.encode_cap.to_string(),
            ];
            let Some(r) = measure_in_child(&child, &format!("{n} items, M = {m}")) else {
                break;
            };
            records.push(r);
            // Written after every size, so a long run keeps what it measured.
            reg4rec_data::io::write_json_atomic(&path, &records).expect("write scale.json");
        }
    }
    draw(&args.out, &records).expect("draw the figures");
    println!(
        "| items | M | encode items/s | index build s | index MiB | model+table MiB | serving state MiB | \
         beam 20 ms/user (model + search) | beam 50 ms/user (model + search) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &records {
        let lat = |l: &Latency| {
            format!(
                "{:.2} ({:.2} + {:.2})",
                l.median_ms, l.model_ms, l.bookkeeping_ms
            )
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {} | {} |",
            r.items,
            r.m,
            r.encode_items_per_s,
            r.index_build_s,
            r.index_mib,
            r.model_mib,
            r.serving_state_mib,
            lat(&r.latency[0]),
            lat(&r.latency[1])
        );
    }
    eprintln!("wrote {}", path.display());
}

/// `latency.svg` and `memory.svg` from the records.
fn draw(out: &std::path::Path, records: &[Record]) -> Result<(), Box<dyn std::error::Error>> {
    let mut ms: Vec<usize> = records.iter().map(|r| r.m).collect();
    ms.dedup();
    let mut latency = Vec::new();
    let mut memory = Vec::new();
    for &m in &ms {
        let of_m = || records.iter().filter(move |r| r.m == m);
        for (k, beam) in [20usize, 50].into_iter().enumerate() {
            latency.push((
                format!("M = {m}, beam {beam}"),
                of_m()
                    .map(|r| (r.items as f64, r.latency[k].median_ms))
                    .collect(),
            ));
        }
        memory.push((
            format!("M = {m}: item index"),
            of_m().map(|r| (r.items as f64, r.index_mib)).collect(),
        ));
        memory.push((
            format!("M = {m}: model and item table"),
            of_m().map(|r| (r.items as f64, r.model_mib)).collect(),
        ));
    }
    log_log_figure(
        &out.join("latency.svg"),
        "items in the catalog",
        "Beam-search latency per user (median, one user per call, CORP off)",
        "ms per user",
        &latency,
    )?;
    log_log_figure(
        &out.join("memory.svg"),
        "items in the catalog",
        "Serving state held",
        "MiB",
        &memory,
    )?;
    Ok(())
}
