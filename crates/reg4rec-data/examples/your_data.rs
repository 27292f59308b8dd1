//! Plug in your own interaction log: load it, see what the loader made of it, split it the way every reg4rec
//! number is measured, and build the item features the tokenizer starts from.
//!
//! ```text
//! cargo run --release -p reg4rec-data --example your_data -- [LOG]
//! ```
//! `LOG` is a CSV (`user,item,timestamp[,category]`, header optional, columns in any order), a Parquet file, a
//! RecBole `.inter` file or an S3-Rec `.txt` (docs/data.md). Without it the example writes a small CSV of the
//! kind exports produce (a byte-order mark, columns in another order, quoted ids with commas) and loads that.
//! It needs no libtorch.

use reg4rec_data::{build_item_features, FeatureConfig, LeaveOneOut, LoadOptions};
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        // Every loader error names the file and, for a bad row, its line.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let demo = tempfile::tempdir()?;
    let path = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let path = demo.path().join("clicks.csv");
            let mut csv = String::from("\u{feff}timestamp,category,user,item\n");
            for (u, items) in [
                (
                    "alice",
                    ["lipstick", "\"brush, large\"", "mascara", "lipstick"],
                ),
                (
                    "bob",
                    ["shampoo", "conditioner", "\"brush, large\"", "mascara"],
                ),
                ("carol", ["mascara", "lipstick", "shampoo", "conditioner"]),
            ] {
                for (t, item) in items.iter().enumerate() {
                    let category = if item.contains("brush") || *item == "mascara" {
                        "tools"
                    } else if *item == "lipstick" {
                        "makeup"
                    } else {
                        "hair"
                    };
                    csv.push_str(&format!("{},{category},{u},{item}\n", 1_700_000_000 + t));
                }
            }
            std::fs::write(&path, csv)?;
            println!("wrote a demo log to {}", path.display());
            path
        }
    };

    // 1. Load: ids are opaque strings mapped to dense indices; each user's items are ordered by time (ties keep
    //    the file's order). `k_core` would keep only users and items with at least k interactions.
    let ds = reg4rec_data::load_path(&path, &LoadOptions::default())?;
    let stats = ds.stats();
    println!(
        "{}: {} users, {} items, {} interactions, {} categories",
        ds.name,
        ds.n_users(),
        ds.n_items(),
        ds.n_interactions(),
        ds.n_categories()
    );
    println!("stats: {}", serde_json::to_string(&stats)?);

    // 2. Leave-one-out: per user the last item is the test target, the one before it the validation target,
    //    the rest is training. Features, popularity and rewards only ever see the training part.
    let split = LeaveOneOut::new(&ds);
    println!(
        "split: {} users kept, {} dropped (fewer than 3 items)",
        split.users.len(),
        split.dropped_users
    );
    let name = |i: u32| ds.item_ids[i as usize].as_str();
    if let Some(k) = (0..split.users.len()).next() {
        let u = split.users[k] as usize;
        let train: Vec<&str> = split.train[k].iter().map(|&i| name(i)).collect();
        println!(
            "user {}: train {:?}, valid {}, test {}",
            ds.user_ids[u],
            train,
            name(split.valid[k]),
            name(split.test[k])
        );
    }

    // 3. Item features: TF-IDF of the item attributes next to a PPMI/SVD embedding of the training
    //    co-occurrences, each row of unit length. The tokenizer turns these rows into semantic tokens.
    let features = build_item_features(&ds, &split, &FeatureConfig::default())?;
    println!(
        "features: {} items x {} dimensions",
        features.n_items, features.dim
    );

    // 4. Bad input is an error naming the file and the line, never a panic or a silently skipped row.
    let bad = demo.path().join("bad.csv");
    std::fs::write(
        &bad,
        "user,item,timestamp\nalice,lipstick,1\nbob,shampoo,yesterday\n",
    )?;
    match reg4rec_data::load_path(&bad, &LoadOptions::default()) {
        Ok(_) => println!("unexpected: the malformed log loaded"),
        Err(e) => println!("a malformed log: {e}"),
    }
    Ok(())
}
