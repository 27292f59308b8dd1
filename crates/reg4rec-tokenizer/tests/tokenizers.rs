//! Training behaviour of both tokenizers on synthetic items from well-separated clusters, save/load, and every
//! bad-file case. Tiny, seeded, CPU.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reg4rec_tokenizer::store::{CODES_FILE, MANIFEST_FILE, WEIGHTS_FILE};
use reg4rec_tokenizer::{
    load, train, FeatureMatrix, ItemIndex, ItemTokenizer, MpqConfig, RqVaeConfig, TokenizerConfig,
    TokenizerKind, TokenizerTrainConfig,
};
use std::path::Path;
use tch::Tensor;

const CLUSTERS: usize = 4;
const PER_CLUSTER: usize = 60;
const DIM: usize = 16;

/// `CLUSTERS` clusters of `PER_CLUSTER` unit rows around orthogonal centres (noise 0.05 per coordinate).
fn clustered_items() -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for i in 0..CLUSTERS * PER_CLUSTER {
        let c = i % CLUSTERS;
        let mut row: Vec<f32> = (0..DIM)
            .map(|k| {
                let centre = if k == c * (DIM / CLUSTERS) { 1.0 } else { 0.0 };
                centre + rng.gen_range(-0.05..0.05)
            })
            .collect();
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
        values.extend(row);
        labels.push(c);
    }
    (values, labels)
}

fn small_train() -> TokenizerTrainConfig {
    TokenizerTrainConfig {
        epochs: 30,
        batch_size: 64,
        lr: 3e-3,
        warmup_epochs: 3,
        ..TokenizerTrainConfig::default()
    }
}

fn small_mpq() -> MpqConfig {
    MpqConfig {
        m: 3,
        d: 8,
        d_z: 8,
        encoder_hidden: 32,
        decoder_hidden: 32,
        train: small_train(),
        ..MpqConfig::default()
    }
}

fn small_rqvae() -> RqVaeConfig {
    RqVaeConfig {
        m: 3,
        d: 8,
        d_z: 8,
        encoder_hidden: 32,
        decoder_hidden: 32,
        train: small_train(),
        ..RqVaeConfig::default()
    }
}

/// Per codebook `r`: (mean share of an item's cluster-mates with its code, mean share of other-cluster items
/// with its code).
fn sharing(codes: &[i64], m: usize, labels: &[usize], r: usize) -> (f64, f64) {
    let n = labels.len();
    let (mut same, mut other) = (0.0, 0.0);
    for i in 0..n {
        let (mut s, mut o) = (0usize, 0usize);
        for j in 0..n {
            if i != j && codes[i * m + r] == codes[j * m + r] {
                if labels[i] == labels[j] {
                    s += 1
                } else {
                    o += 1
                }
            }
        }
        same += s as f64 / (PER_CLUSTER - 1) as f64;
        other += o as f64 / (n - PER_CLUSTER) as f64;
    }
    (same / n as f64, other / n as f64)
}

fn nearest_codes(tok: &dyn ItemTokenizer, values: &[f32]) -> Vec<i64> {
    let x = Tensor::from_slice(values).view([-1, DIM as i64]);
    Vec::<i64>::try_from(&tok.encode(&x).unwrap().flatten(0, -1)).unwrap()
}

#[test]
fn mpq_codes_follow_clusters_and_end_distinct() {
    let (values, labels) = clustered_items();
    let features = FeatureMatrix::new(labels.len(), DIM, &values).unwrap();
    let cfg = small_mpq();
    let (tok, report) = train(features, &TokenizerConfig::Mpq(cfg.clone())).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::Mpq);
    assert!(!tok.codes().ordered);
    // Every expert's codes are pure: cluster-mates often share a code, other clusters (almost) never do.
    let codes = nearest_codes(tok.as_ref(), &values);
    for r in 0..cfg.m {
        let (same, other) = sharing(&codes, cfg.m, &labels, r);
        assert!(same >= 0.25, "codebook {r}: same-cluster sharing {same}");
        assert!(other <= 0.02, "codebook {r}: cross-cluster sharing {other}");
    }
    assert_eq!(report.collision_rate_after, 0.0);
    assert_eq!(tok.codes().collision_rate(), 0.0);
    assert!(ItemIndex::new(tok.codes()).is_ok());
    assert_eq!(report.utilisation.len(), cfg.m);
    assert_eq!(report.perplexity.len(), cfg.m);
    assert!(
        report.recon_loss.is_finite() && report.recon_loss < 0.5,
        "{report:?}"
    );
    assert!((0.0..=1.0).contains(&report.orthogonality));
    // The report serialises with exactly the documented fields.
    let json = serde_json::to_value(&report).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|s| s.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "collision_rate_after",
            "collision_rate_before",
            "orthogonality",
            "perplexity",
            "recon_loss",
            "seconds",
            "utilisation"
        ]
    );
}

/// Long parallel codes: 32 codebooks train, every one of them carries information (several codes in use, a
/// perplexity well above one), and every item ends with its own tuple.
#[test]
fn mpq_at_32_codebooks_is_collision_free_and_uses_every_codebook() {
    let (values, labels) = clustered_items();
    let features = FeatureMatrix::new(labels.len(), DIM, &values).unwrap();
    let cfg = MpqConfig {
        m: 32,
        ..small_mpq()
    };
    let (tok, report) = train(features, &TokenizerConfig::Mpq(cfg)).unwrap();
    let codes = tok.codes();
    assert_eq!((codes.m, codes.n_items()), (32, labels.len()));
    assert_eq!(report.collision_rate_after, 0.0);
    assert_eq!(codes.collision_rate(), 0.0);
    let tuples: std::collections::HashSet<&[u16]> =
        (0..codes.n_items()).map(|i| codes.tuple(i)).collect();
    assert_eq!(tuples.len(), labels.len(), "every item has its own tuple");
    assert_eq!(report.utilisation.len(), 32);
    for (r, (&u, &p)) in report
        .utilisation
        .iter()
        .zip(&report.perplexity)
        .enumerate()
    {
        assert!(u >= 0.25, "codebook {r}: {u} of its codes used");
        assert!(p >= 1.5, "codebook {r}: perplexity {p}");
    }
    assert!(ItemIndex::new(codes).is_ok());
}

#[test]
fn rqvae_first_level_follows_clusters_and_codes_are_ordered() {
    let (values, labels) = clustered_items();
    let features = FeatureMatrix::new(labels.len(), DIM, &values).unwrap();
    let cfg = small_rqvae();
    let (tok, report) = train(features, &TokenizerConfig::RqVae(cfg.clone())).unwrap();
    assert_eq!(tok.kind(), TokenizerKind::RqVae);
    assert!(tok.codes().ordered);
    let codes = nearest_codes(tok.as_ref(), &values);
    let (same, other) = sharing(&codes, cfg.m, &labels, 0);
    assert!(same >= 0.25, "level 0: same-cluster sharing {same}");
    assert!(other <= 0.02, "level 0: cross-cluster sharing {other}");
    assert_eq!(report.collision_rate_after, 0.0);
    assert!(report.recon_loss.is_finite());
}

fn trained_mpq() -> (Box<dyn ItemTokenizer>, Vec<f32>) {
    let (values, labels) = clustered_items();
    let features = FeatureMatrix::new(labels.len(), DIM, &values).unwrap();
    let mut cfg = small_mpq();
    cfg.train.epochs = 6;
    let (tok, _) = train(features, &TokenizerConfig::Mpq(cfg)).unwrap();
    (tok, values)
}

#[test]
fn save_load_round_trip_and_same_seed_same_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (values, labels) = clustered_items();
    for cfg in [
        TokenizerConfig::Mpq(MpqConfig {
            train: TokenizerTrainConfig {
                epochs: 6,
                ..small_train()
            },
            ..small_mpq()
        }),
        TokenizerConfig::RqVae(RqVaeConfig {
            train: TokenizerTrainConfig {
                epochs: 6,
                ..small_train()
            },
            ..small_rqvae()
        }),
    ] {
        let features = FeatureMatrix::new(labels.len(), DIM, &values).unwrap();
        let (tok, _) = train(features, &cfg).unwrap();
        let (again, _) = train(features, &cfg).unwrap();
        assert_eq!(tok.codes(), again.codes(), "same seed, same codes");
        let path = dir.path().join(cfg.kind().as_str());
        tok.save(&path).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.kind(), cfg.kind());
        assert_eq!(back.codes(), tok.codes());
        assert_eq!(back.input_dim(), DIM);
        assert_eq!(
            nearest_codes(back.as_ref(), &values),
            nearest_codes(tok.as_ref(), &values)
        );
    }
}

/// Saves a small tokenizer, lets `damage` modify the directory, and returns the load error text.
fn load_error(damage: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (tok, _) = trained_mpq();
    tok.save(dir.path()).unwrap();
    damage(dir.path());
    match load(dir.path()) {
        Ok(_) => panic!("damaged directory loaded"),
        Err(e) => e.to_string(),
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn missing_files_are_named() {
    let e = load_error(|d| std::fs::remove_file(d.join(MANIFEST_FILE)).unwrap());
    assert!(e.contains(MANIFEST_FILE) && e.contains("missing"), "{e}");
    let e = load_error(|d| std::fs::remove_file(d.join(WEIGHTS_FILE)).unwrap());
    assert!(e.contains(WEIGHTS_FILE) && e.contains("missing"), "{e}");
    let e = load_error(|d| std::fs::remove_file(d.join(CODES_FILE)).unwrap());
    assert!(e.contains(CODES_FILE) && e.contains("missing"), "{e}");
}

#[test]
fn corrupt_manifest_gives_file_and_line() {
    let e = load_error(|d| {
        std::fs::write(d.join(MANIFEST_FILE), b"{\n\"format_version\": 1,\n oops").unwrap()
    });
    assert!(e.contains(MANIFEST_FILE) && e.contains(":3"), "{e}");
}

#[test]
fn other_format_version_is_refused() {
    let e = load_error(|d| edit_manifest(d, |v| v["format_version"] = 99.into()));
    assert!(e.contains("format version 99"), "{e}");
}

#[test]
fn unknown_config_field_is_refused() {
    let e = load_error(|d| edit_manifest(d, |v| v["config"]["experts"] = 3.into()));
    assert!(e.contains("config") && e.contains("experts"), "{e}");
}

#[test]
fn truncated_weights_are_refused() {
    let e = load_error(|d| {
        let p = d.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(e.contains(WEIGHTS_FILE) && e.contains("corrupt"), "{e}");
}

#[test]
fn flipped_weight_byte_is_refused() {
    let e = load_error(|d| {
        let p = d.join(WEIGHTS_FILE);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&p, &bytes).unwrap();
    });
    assert!(e.contains(WEIGHTS_FILE) && e.contains("sha256"), "{e}");
}

#[test]
fn weights_of_another_shape_are_refused() {
    // A tokenizer with a wider decoder, its weights copied into this directory with a consistent checksum.
    let e = load_error(|d| {
        let other = tempfile::tempdir().unwrap();
        let (values, labels) = clustered_items();
        let features = FeatureMatrix::new(labels.len(), DIM, &values).unwrap();
        let mut cfg = small_mpq();
        cfg.decoder_hidden = 48;
        cfg.train.epochs = 4;
        let (tok, _) = train(features, &TokenizerConfig::Mpq(cfg)).unwrap();
        tok.save(other.path()).unwrap();
        std::fs::copy(other.path().join(WEIGHTS_FILE), d.join(WEIGHTS_FILE)).unwrap();
        let sha = reg4rec_data::io::sha256_file(&d.join(WEIGHTS_FILE)).unwrap();
        edit_manifest(d, |v| v["weights_sha256"] = sha.into());
    });
    assert!(
        e.contains("decoder.fc1.") && e.contains("expected [32"),
        "{e}"
    );
}

#[test]
fn codes_that_do_not_match_are_refused() {
    let e = load_error(|d| {
        let p = d.join(CODES_FILE);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, &bytes).unwrap();
    });
    assert!(e.contains(CODES_FILE) && e.contains("sha256"), "{e}");
    // Well-formed codes for the wrong number of codebooks, with a consistent checksum.
    let e = load_error(|d| {
        let p = d.join(CODES_FILE);
        let codes = reg4rec_tokenizer::Codes::new(2, 8, false, vec![0, 1]).unwrap();
        std::fs::write(&p, serde_json::to_vec(&codes).unwrap()).unwrap();
        let sha = reg4rec_data::io::sha256_file(&p).unwrap();
        edit_manifest(d, |v| v["codes_sha256"] = sha.into());
    });
    assert!(e.contains(CODES_FILE) && e.contains("manifest says"), "{e}");
}

#[test]
fn bad_configs_name_their_field() {
    let e = TokenizerConfig::from_json(TokenizerKind::Mpq, r#"{"d": 1}"#).unwrap_err();
    assert!(e.to_string().contains("`d`"), "{e}");
    let e =
        TokenizerConfig::from_json(TokenizerKind::RqVae, r#"{"train": {"lr": 0}}"#).unwrap_err();
    assert!(e.to_string().contains("train.lr"), "{e}");
    let e = TokenizerConfig::from_json(TokenizerKind::Mpq, r#"{"expert": 4}"#).unwrap_err();
    assert!(e.to_string().contains("expert"), "{e}");
    let ok = TokenizerConfig::from_json(TokenizerKind::Mpq, r#"{"m": 3}"#).unwrap();
    assert_eq!(
        ok,
        TokenizerConfig::Mpq(MpqConfig {
            m: 3,
            ..MpqConfig::default()
        })
    );
    for bad in [
        r#"{"collision_weight": -1}"#,
        r#"{"collision_temperature": 0}"#,
    ] {
        let e = TokenizerConfig::from_json(TokenizerKind::Mpq, bad).unwrap_err();
        let field = bad.split('"').nth(1).unwrap();
        assert!(e.to_string().contains(field), "{bad}: {e}");
    }
    assert!("tiger".parse::<TokenizerKind>().is_err());
    // Too many items for the tuple space, and a ragged matrix.
    let values = vec![0.5f32; 10 * 2];
    let features = FeatureMatrix::new(10, 2, &values).unwrap();
    let cfg = MpqConfig {
        m: 1,
        d: 4,
        ..MpqConfig::default()
    };
    assert!(train(features, &TokenizerConfig::Mpq(cfg)).is_err());
    assert!(FeatureMatrix::new(3, 2, &values).is_err());
}

/// One undifferentiated crowd (no cluster structure): two experts left alone tend to cut it the same way, so
/// many items share both codes; the collision regulariser makes the experts' partitions complementary.
#[test]
fn collision_regulariser_spreads_a_crowd_over_distinct_tuples() {
    let n = 300;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let values: Vec<f32> = (0..n * DIM).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let features = FeatureMatrix::new(n, DIM, &values).unwrap();
    let rate = |collision_weight: f64| {
        let cfg = MpqConfig {
            m: 2,
            d: 32,
            collision_weight,
            ..small_mpq()
        };
        let (_, report) = train(features, &TokenizerConfig::Mpq(cfg)).unwrap();
        assert_eq!(report.collision_rate_after, 0.0);
        report.collision_rate_before
    };
    let (without, with) = (rate(0.0), rate(0.3));
    assert!(
        with < 0.6 * without,
        "collision rate before resolution: {without} without the regulariser, {with} with it"
    );
}
