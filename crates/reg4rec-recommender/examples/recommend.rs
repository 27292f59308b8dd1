//! Recommendations from a trained model directory, with the reasoning behind each item and the constraints a
//! product asks for (only some categories, never some items, not what the user already has).
//!
//! ```text
//! cargo run --release -p reg4rec-recommender --example recommend -- MODEL_DIR [ITEM_ID ...]
//! ```
//! `MODEL_DIR` is what the quickstart example leaves in `OUT/model`, or a pipeline run's
//! `stages/align-reg4rec` (or `stages/pretrain-reg4rec`). The history is the given item ids, oldest first;
//! without them, the first user's whole history in the model's training data.

use reg4rec_recommender::{RecommendOptions, Recommender};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: recommend MODEL_DIR [ITEM_ID ...]")?;
    // Load checks every file against the directory's manifest (sha256) and refuses a model whose data
    // fingerprint does not match the data it names.
    let rec = Recommender::load(&dir)?;
    let info = rec.info();
    println!(
        "{:?} model, {} items in {} categories",
        info.mode,
        info.n_items,
        info.categories.len()
    );

    let mut history: Vec<String> = args.collect();
    if history.is_empty() {
        let ds = rec.training_data()?;
        let first = ds
            .sequences
            .iter()
            .position(|s| !s.is_empty())
            .ok_or("the training data has no user with a history")?;
        history = ds.sequences[first]
            .iter()
            .map(|&i| ds.item_ids[i as usize].clone())
            .collect();
        println!("history: user {}", ds.user_ids[first]);
    }
    println!(
        "history ({} items, latest last): ...{:?}",
        history.len(),
        &history[history.len().saturating_sub(5)..]
    );

    // 1. The top 10. Each item comes with its reasoning path: the tokens in the order the model generated
    //    them (CRSS picks the order), their log-probabilities and, with `explain`, the category the model
    //    expected at each step.
    let opts = RecommendOptions {
        k: 10,
        explain: true,
        ..Default::default()
    };
    let top = rec.recommend(&history, &opts)?;
    print("top 10", &top.items);

    // 2. Steering: only the category of the best item, never the best item itself, nothing already in the
    //    history. These constrain the beam search itself, so k items come back whenever k valid ones exist.
    let Some(best) = top.items.first() else {
        return Ok(());
    };
    let steered = RecommendOptions {
        k: 5,
        allowed_categories: vec![best.category.clone()],
        exclude_items: vec![best.item_id.clone()],
        exclude_history: true,
        explain: true,
        ..Default::default()
    };
    let more = rec.recommend(&history, &steered)?;
    print(
        &format!(
            "5 more of category {}, without {} or the history",
            best.category, best.item_id
        ),
        &more.items,
    );

    // 3. A bad request is an error naming what is wrong (here an id the catalog does not hold).
    let unknown = vec!["no-such-item".to_string()];
    if let Err(e) = rec.recommend(&unknown, &opts) {
        println!("an unknown item: {e}");
    }
    Ok(())
}

fn print(title: &str, items: &[reg4rec_recommender::Recommended]) {
    println!("{title}:");
    for r in items {
        println!(
            "  {:>2}. {} ({}): {}",
            r.rank,
            r.item_id,
            r.category,
            r.explanation.render()
        );
    }
}
