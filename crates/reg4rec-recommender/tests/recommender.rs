//! A model directory built here (CSV log -> MPQ tokenizer -> pre-training -> extras, tokenizer copy, manifest),
//! then loaded as users load it: lists that respect their constraints, clear errors for bad requests and changed
//! files, items added and removed without retraining, and a saved catalog that loads again.

use reg4rec_data::features::ItemFeatures;
use reg4rec_data::registry::{self, LoadOptions};
use reg4rec_data::{Dataset, LeaveOneOut};
use reg4rec_infer::{InferConfig, Rank};
use reg4rec_model::{ModelConfig, TrainConfig};
use reg4rec_recommender::{model_dir, Catalog, DataSource, NewItem, RecommendOptions, Recommender};
use reg4rec_tokenizer::{FeatureMatrix, MpqConfig, TokenizerConfig};
use std::path::{Path, PathBuf};

struct Fixture {
    _tmp: tempfile::TempDir,
    csv: PathBuf,
    model: PathBuf,
    features: ItemFeatures,
    ds: Dataset,
}

/// 120 users over 40 items in 3 categories; random 16-dim item features. Seeded and built under the torch RNG
/// lock, so the tests of this file (which run in parallel) always get the same codes and model.
fn fixture() -> Fixture {
    let _rng = reg4rec_model::torch_rng_lock();
    tch::manual_seed(1);
    let tmp = tempfile::tempdir().unwrap();
    let mut s = String::from("user,item,timestamp,category\n");
    for u in 0..120 {
        for t in 0..6 + u % 4 {
            let item = (u * 3 + t * (1 + u % 2)) % 40;
            s.push_str(&format!("u{u},i{item},{t},c{}\n", item % 3));
        }
    }
    let csv = tmp.path().join("log.csv");
    std::fs::write(&csv, s).unwrap();
    let ds = registry::load_path(&csv, &LoadOptions::default()).unwrap();
    let split = LeaveOneOut::new(&ds);
    let dim = 16;
    let mut state = 7u64;
    let values: Vec<f32> = (0..ds.n_items() * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let features = ItemFeatures {
        n_items: ds.n_items(),
        dim,
        values,
    };
    let mpq = MpqConfig {
        m: 3,
        d: 16,
        d_z: 8,
        encoder_hidden: 32,
        decoder_hidden: 32,
        train: reg4rec_tokenizer::TokenizerTrainConfig {
            epochs: 4,
            warmup_epochs: 1,
            batch_size: 64,
            kmeans_iters: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let (tok, _) = reg4rec_tokenizer::train(
        FeatureMatrix::of(&features).unwrap(),
        &TokenizerConfig::Mpq(mpq),
    )
    .unwrap();
    let tok_dir = tmp.path().join("tokenizer");
    tok.save(&tok_dir).unwrap();
    let codes = reg4rec_tokenizer::Codes {
        ordered: false,
        ..tok.codes().clone()
    };
    let model = tmp.path().join("model");
    tch::manual_seed(0);
    reg4rec_model::pretrain(
        &ds,
        &split,
        &codes,
        &ModelConfig::preset("smoke").unwrap(),
        &TrainConfig::preset("smoke").unwrap(),
        &model,
        false,
        Default::default(),
    )
    .unwrap();
    let source = DataSource::new("toy", Some(&csv), None, &ds).unwrap();
    model_dir::write_extras(&model, &source, &codes, &Catalog::of(&ds)).unwrap();
    model_dir::copy_tokenizer(&tok_dir, &model).unwrap();
    model_dir::seal(&model).unwrap();
    Fixture {
        _tmp: tmp,
        csv,
        model,
        features,
        ds,
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_model_directory_recommends_within_its_constraints_and_grows_its_catalog() {
    let f = fixture();
    let mut rec = Recommender::load(&f.model).unwrap();
    assert!(rec.info().verified);
    assert_eq!(rec.info().n_items, 40);
    let history = ids(&["i1", "i4", "i7"]);

    // Plain, constrained and excluding lists.
    let all = rec
        .recommend(&history, &RecommendOptions::default())
        .unwrap();
    assert_eq!(all.items.len(), 10);
    let opts = RecommendOptions {
        k: 8,
        allowed_categories: ids(&["c1"]),
        exclude_items: ids(&["i4"]),
        exclude_history: true,
        explain: true,
        ..Default::default()
    };
    let steered = rec.recommend(&history, &opts).unwrap();
    assert_eq!(
        steered.items.len(),
        8,
        "13 items of c1 exist, 8 were asked for"
    );
    assert_eq!(steered.notice, None);
    for r in &steered.items {
        assert_eq!(r.category, "c1");
        assert!(!history.contains(&r.item_id));
        assert_eq!(r.explanation.steps.len(), 3);
        assert!(!r.explanation.steps[0].categories.is_empty());
    }
    // The same query in a batch with others gets the same list.
    let q = |h: &[&str], o: &RecommendOptions| reg4rec_recommender::Query {
        history: ids(h),
        options: o.clone(),
    };
    let (batch, _) = rec
        .recommend_batch(&[
            q(&["i2"], &RecommendOptions::default()),
            q(&["i1", "i4", "i7"], &opts),
            q(&["nope"], &opts),
        ])
        .unwrap();
    // Same items in the same order; scores agree up to the rounding of batched matrix products.
    let b = batch[1].as_ref().unwrap();
    let names = |r: &reg4rec_recommender::Recommendations| -> Vec<String> {
        r.items.iter().map(|i| i.item_id.clone()).collect()
    };
    assert_eq!(names(b), names(&steered));
    for (x, y) in b.items.iter().zip(&steered.items) {
        let (x, y) = (x.explanation.score, y.explanation.score);
        assert!((x - y).abs() <= 1e-4 * y.abs(), "{x} vs {y}");
    }
    let e = batch[2].as_ref().unwrap_err();
    assert!(
        e.is_request() && e.to_string().contains("`history[0]`"),
        "{e}"
    );

    // Bad options name their field.
    for (o, field) in [
        (
            RecommendOptions {
                k: 0,
                ..Default::default()
            },
            "`k`",
        ),
        (
            RecommendOptions {
                blocked_categories: ids(&["c1", "zz"]),
                ..Default::default()
            },
            "`blocked_categories[1]`",
        ),
    ] {
        let e = rec.recommend(&history, &o).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }

    // A new item made from an existing item's features gets a tuple of its own.
    let like = rec.item("i3").unwrap() as usize;
    let added = rec
        .add_items(&[NewItem {
            id: "new-1".into(),
            category: "c0".into(),
            name: Some("The new one".into()),
            features: f.features.row(like).to_vec(),
        }])
        .unwrap();
    assert_eq!(added[0].item, 40);
    let tuple = rec.codes().tuple(40).to_vec();
    assert!((0..40).all(|i| rec.codes().tuple(i) != tuple.as_slice()));
    assert_eq!(rec.catalog().version, 2);
    // It can be recommended: steered to it, a narrow beam still finds it.
    let only_new = RecommendOptions {
        k: 3,
        beam: Some(1),
        exclude_items: (0..40).map(|i| f.ds.item_ids[i].clone()).collect(),
        ..Default::default()
    };
    let got = rec.recommend(&history, &only_new).unwrap();
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.items[0].item_id, "new-1");
    assert_eq!(got.items[0].name.as_deref(), Some("The new one"));
    let notice = got
        .notice
        .as_deref()
        .expect("a list shorter than k says so");
    assert!(notice.starts_with("1 of the k = 3 items"), "{notice}");
    assert!(got.items[0].added);
    // The log gives no names: the trained items have none, in lists and in the catalog.
    assert!(rec.catalog().name(0).is_none());
    assert_eq!(rec.catalog().search("new one", 5), vec![40]);
    let e = rec
        .add_items(&[NewItem {
            id: "new-2".into(),
            category: "c9".into(),
            name: None,
            features: vec![0.0; 16],
        }])
        .unwrap_err();
    assert!(e.to_string().contains("`items[0].category`"), "{e}");

    // Removed items are never recommended; the catalog saves and loads again with its changes.
    assert_eq!(rec.remove_items(&ids(&["i5", "i6"])).unwrap(), 2);
    for h in 0..40 {
        let out = rec
            .recommend(
                &[format!("i{h}")],
                &RecommendOptions {
                    k: 30,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(out
            .items
            .iter()
            .all(|r| r.item_id != "i5" && r.item_id != "i6"));
    }
    // Exported semantic IDs read back into the same codes (the added item included).
    let ids: std::collections::HashMap<String, Vec<String>> =
        reg4rec_recommender::export::semantic_ids(&rec)
            .into_iter()
            .collect();
    let json = serde_json::to_string(&ids).unwrap();
    let back: std::collections::HashMap<String, Vec<String>> = serde_json::from_str(&json).unwrap();
    let codes = rec.codes();
    let again = reg4rec_recommender::export::codes_from_semantic_ids(
        &back,
        &rec.catalog().item_ids,
        codes.m,
        codes.d,
        codes.ordered,
    )
    .unwrap();
    assert_eq!(&again, codes);
    let lines = reg4rec_recommender::export::catalog_lines(&rec);
    assert_eq!(lines.len(), 41);
    assert!(lines[40].added && lines[40].available && lines[40].item_id == "new-1");
    assert!(!lines[rec.item("i5").unwrap() as usize].available);
    rec.save_catalog().unwrap();
    let again = Recommender::load(&f.model).unwrap();
    assert_eq!(again.catalog(), rec.catalog());
    assert_eq!(again.codes(), rec.codes());
    assert_eq!(
        again.recommend(&history, &opts).unwrap(),
        rec.recommend(&history, &opts).unwrap()
    );
}

#[test]
fn changed_files_and_changed_data_are_errors_naming_the_file() {
    let f = fixture();
    // The training data loads again while it is unchanged.
    let rec = Recommender::load(&f.model).unwrap();
    assert_eq!(
        rec.training_data().unwrap().fingerprint(),
        f.ds.fingerprint()
    );
    for file in [
        "codes.json",
        "catalog.json",
        "source.json",
        "config.json",
        "tokenizer/codes.json",
    ] {
        let copy = f.model.parent().unwrap().join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&f.model, &copy);
        let p = copy.join(file);
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
        let e = Recommender::load(&copy).unwrap_err().to_string();
        assert!(
            e.contains(p.to_str().unwrap()) && e.contains("sha256"),
            "{file}: {e}"
        );
    }
    // The search a pipeline recorded (sealed with the rest) is the one `load` applies.
    let chosen = f.model.parent().unwrap().join("chosen");
    copy_dir(&f.model, &chosen);
    let default_theta = Recommender::load(&chosen).unwrap().infer().theta;
    model_dir::write_search(
        &chosen,
        &reg4rec_recommender::ChosenSearch {
            theta: Some(0.031),
            how: "a test".into(),
        },
    )
    .unwrap();
    assert_ne!(default_theta, Some(0.031));
    assert_eq!(
        Recommender::load(&chosen).unwrap().infer().theta,
        Some(0.031)
    );
    // A directory without a manifest still loads (written by an older version), unverified.
    let copy = f.model.parent().unwrap().join("unsealed");
    copy_dir(&f.model, &copy);
    std::fs::remove_file(copy.join("manifest.json")).unwrap();
    assert!(!Recommender::load(&copy).unwrap().info().verified);
    // Changed data: evaluation's loader refuses it, naming the record.
    let text = std::fs::read_to_string(&f.csv).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(",i7,")).collect();
    std::fs::write(&f.csv, kept.join("\n") + "\n").unwrap();
    let e = rec.training_data().unwrap_err().to_string();
    assert!(
        e.contains("source.json") && e.contains("changed since training"),
        "{e}"
    );
    // Not a model directory at all.
    let e = Recommender::load(f.csv.parent().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a model directory"), "{e}");
}

/// One model directory ranks in both modes, chosen per request or for the recommender: path-ranked lists are
/// ordered by the path score alone and never read the item head; hybrid lists carry the item head's score.
#[test]
fn a_model_directory_ranks_by_its_paths_or_with_its_item_head() {
    let f = fixture();
    let mut rec = Recommender::load(&f.model).unwrap();
    let history = ids(&["i1", "i4", "i7"]);
    let ask = |rec: &Recommender, rank: Option<Rank>| {
        let opts = RecommendOptions {
            k: 8,
            rank,
            ..Default::default()
        };
        rec.recommend(&history, &opts).unwrap()
    };
    let hybrid = ask(&rec, Some(Rank::Hybrid));
    assert!(hybrid
        .items
        .iter()
        .all(|r| r.explanation.item_score.is_some()));
    let paths = ask(&rec, Some(Rank::Paths));
    assert_eq!(paths.items.len(), 8);
    for r in &paths.items {
        assert!(r.explanation.item_score.is_none(), "{:?}", r.explanation);
        assert_eq!(r.explanation.score, r.explanation.path_score);
        assert!(f.ds.item_index(&r.item_id).is_some(), "a catalogue item");
    }
    for w in paths.items.windows(2) {
        assert!(w[0].explanation.path_score >= w[1].explanation.path_score);
    }
    // The recommender's own setting is the default of its requests.
    rec.set_infer(&InferConfig {
        rank: Rank::Paths,
        ..rec.infer().clone()
    })
    .unwrap();
    assert_eq!(ask(&rec, None), paths);
}
