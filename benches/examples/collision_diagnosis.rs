//! Why do items collide? Trains one tokenizer (default config, or `TOKENIZER_CONFIG='{...}'`) on a dataset's
//! default item features and prints, for the nearest-code tuples before resolution: how many items have
//! identical or near-identical feature vectors (whole vector, content block, collaborative block), how many
//! codebooks agree between every item and its nearest neighbour in feature space, the normalised mutual
//! information between every pair of codebooks (1 = the experts learned the same partition), and what the
//! colliding pairs look like.
//!
//! ```text
//! FEATURES_CACHE=/tmp/f.safetensors cargo run --release -p reg4rec-benches --example collision_diagnosis -- \
//!     [DATASET] [mpq|rqvae]
//! ```

use reg4rec_data::{build_item_features, FeatureConfig, ItemFeatures, LeaveOneOut, LoadOptions};
use reg4rec_tokenizer::{train, FeatureMatrix, TokenizerConfig, TokenizerKind};
use std::collections::HashMap;
use tch::{Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dataset = args.next().unwrap_or_else(|| "amazon-beauty".to_string());
    let kind: TokenizerKind = args.next().unwrap_or_else(|| "mpq".into()).parse()?;
    let feature_cfg = FeatureConfig::default();
    let features = match std::env::var_os("FEATURES_CACHE").map(std::path::PathBuf::from) {
        Some(p) if p.exists() => ItemFeatures::load(&p)?,
        cache => {
            let ds = reg4rec_data::load(&dataset, &LoadOptions::default())?;
            let split = LeaveOneOut::new(&ds);
            let f = build_item_features(&ds, &split, &feature_cfg)?;
            if let Some(p) = cache {
                f.save(&p)?;
            }
            f
        }
    };
    let (n, dim) = (features.n_items, features.dim);
    let cf = feature_cfg.cf_dim.min(dim);
    let content = dim - cf;
    println!("{n} items, dim {dim} (content {content}, collaborative {cf})");

    // Exact duplicates, whole vector and per block.
    for (name, lo, hi) in [
        ("whole", 0, dim),
        ("content", 0, content),
        ("collab", content, dim),
    ] {
        let mut groups: HashMap<Vec<u32>, usize> = HashMap::new();
        for i in 0..n {
            let key: Vec<u32> = features.row(i)[lo..hi]
                .iter()
                .map(|v| v.to_bits())
                .collect();
            *groups.entry(key).or_default() += 1;
        }
        let dup: usize = groups.values().filter(|&&c| c > 1).map(|c| c - 1).sum();
        println!(
            "exact duplicates ({name}): {dup} items ({:.4}) beyond the first of their group",
            dup as f64 / n as f64
        );
    }

    // Nearest neighbour of every item in feature space (squared Euclidean; rows are unit vectors).
    let x = Tensor::from_slice(&features.values).view([n as i64, dim as i64]);
    let (nn_dist, nn_idx) = nearest_neighbours(&x);
    let mut sorted = nn_dist.clone();
    sorted.sort_by(f32::total_cmp);
    let q = |p: f64| sorted[((n - 1) as f64 * p) as usize];
    println!(
        "nearest-neighbour squared distance: min {:.2e} p1 {:.2e} p5 {:.2e} p10 {:.2e} median {:.3} p90 {:.3}",
        q(0.0), q(0.01), q(0.05), q(0.10), q(0.5), q(0.9)
    );
    for eps in [1e-6f32, 1e-3, 1e-2, 5e-2, 0.1] {
        let c = nn_dist.iter().filter(|&&d| d < eps).count();
        println!(
            "  items with a neighbour closer than {eps:e}: {c} ({:.4})",
            c as f64 / n as f64
        );
    }

    let cfg = match std::env::var("TOKENIZER_CONFIG") {
        Ok(json) => TokenizerConfig::from_json(kind, &json)?,
        Err(_) => TokenizerConfig::default_for(kind),
    };
    let (tok, report) = train(FeatureMatrix::of(&features)?, &cfg)?;
    println!("{kind} {}", serde_json::to_string(&report)?);
    let codes: Vec<i64> = Vec::try_from(&tok.encode(&x)?.flatten(0, -1))?;
    let m = codes.len() / n;
    let tuple = |i: usize| &codes[i * m..(i + 1) * m];

    // Codebooks agreeing between each item and its feature-space nearest neighbour.
    let mut agree = vec![0usize; m + 1];
    for i in 0..n {
        let j = nn_idx[i] as usize;
        agree[tuple(i)
            .iter()
            .zip(tuple(j))
            .filter(|(a, b)| a == b)
            .count()] += 1;
    }
    println!("codebooks agreeing with the nearest neighbour (0..={m}): {agree:?}");

    // Colliding groups.
    let mut groups: HashMap<&[i64], Vec<usize>> = HashMap::new();
    for i in 0..n {
        groups.entry(tuple(i)).or_default().push(i);
    }
    let colliding: Vec<&Vec<usize>> = groups.values().filter(|g| g.len() > 1).collect();
    let mut sizes: Vec<usize> = colliding.iter().map(|g| g.len()).collect();
    sizes.sort_unstable();
    println!(
        "colliding groups: {} (items beyond the first: {}), largest {:?}",
        colliding.len(),
        colliding.iter().map(|g| g.len() - 1).sum::<usize>(),
        &sizes[sizes.len().saturating_sub(5)..]
    );
    let dist = |i: usize, j: usize, lo: usize, hi: usize| -> f32 {
        features.row(i)[lo..hi]
            .iter()
            .zip(&features.row(j)[lo..hi])
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let (mut pairs, mut same_content, mut same_collab, mut nn_pairs) =
        (0usize, 0usize, 0usize, 0usize);
    let mut pair_dist = Vec::new();
    for g in &colliding {
        for w in g.windows(2) {
            let (i, j) = (w[0], w[1]);
            pairs += 1;
            same_content += (dist(i, j, 0, content) < 1e-8) as usize;
            same_collab += (dist(i, j, content, dim) < 1e-8) as usize;
            nn_pairs += (nn_idx[i] as usize == j || nn_idx[j] as usize == i) as usize;
            pair_dist.push(dist(i, j, 0, dim));
        }
    }
    pair_dist.sort_by(f32::total_cmp);
    if !pair_dist.is_empty() {
        let pq = |p: f64| pair_dist[((pair_dist.len() - 1) as f64 * p) as usize];
        println!(
            "colliding pairs: {pairs}; identical content block {same_content}, identical collaborative block \
             {same_collab}, feature nearest neighbours {nn_pairs}; squared distance p10 {:.3} median {:.3} p90 {:.3}",
            pq(0.1), pq(0.5), pq(0.9)
        );
    }

    // Normalised mutual information between codebooks' partitions of the items.
    let d = codes.iter().copied().max().unwrap_or(0) as usize + 1;
    let entropy = |counts: &[f64]| -> f64 {
        counts
            .iter()
            .filter(|&&c| c > 0.0)
            .map(|&c| {
                let p = c / n as f64;
                -p * p.ln()
            })
            .sum()
    };
    for r in 0..m {
        for s in r + 1..m {
            let mut joint: HashMap<(i64, i64), f64> = HashMap::new();
            let (mut a, mut b) = (vec![0.0; d], vec![0.0; d]);
            for i in 0..n {
                let t = tuple(i);
                *joint.entry((t[r], t[s])).or_default() += 1.0;
                a[t[r] as usize] += 1.0;
                b[t[s] as usize] += 1.0;
            }
            let j: Vec<f64> = joint.into_values().collect();
            let (ha, hb, hj) = (entropy(&a), entropy(&b), entropy(&j));
            let mi = ha + hb - hj;
            println!(
                "codebooks {r},{s}: mutual information {mi:.3} nats, NMI {:.3}",
                mi / (ha * hb).sqrt()
            );
        }
    }
    Ok(())
}

/// Squared distance to, and index of, every row's nearest other row. Chunked matmul.
fn nearest_neighbours(x: &Tensor) -> (Vec<f32>, Vec<i64>) {
    let n = x.size()[0];
    let sq = x
        .pow_tensor_scalar(2)
        .sum_dim_intlist(-1, false, Kind::Float);
    let (mut dist, mut idx) = (Vec::new(), Vec::new());
    let chunk = 1024;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let xb = x.narrow(0, start, len);
        let mut dd = (sq.narrow(0, start, len).unsqueeze(1) - xb.matmul(&x.tr()) * 2.0
            + sq.unsqueeze(0))
        .clamp_min(0.0);
        let rows = Tensor::arange(len, (Kind::Int64, x.device()));
        let _ = dd.index_put_(
            &[Some(rows.shallow_clone()), Some(rows + start)],
            &Tensor::from(f32::INFINITY),
            false,
        );
        let (v, i) = dd.min_dim(-1, false);
        dist.extend(Vec::<f32>::try_from(&v).unwrap_or_default());
        idx.extend(Vec::<i64>::try_from(&i).unwrap_or_default());
        start += len;
    }
    (dist, idx)
}
