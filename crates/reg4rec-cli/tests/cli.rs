//! End-to-end tests of the `reg4rec` binary on small data written by the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary with `args`, run in `cwd`, without progress bars and with warnings-only logs.
fn command(args: &[String], cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reg4rec"));
    c.args(args)
        .current_dir(cwd)
        .env("REG4REC_NO_PROGRESS", "1")
        .env("REG4REC_LOG", "warn");
    c
}

fn reg4rec(args: &[&str], cwd: &Path) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    command(&args, cwd)
        .output()
        .expect("the reg4rec binary runs")
}

/// `pipeline --data CSV --preset smoke --out OUT` plus `--set` overrides.
fn smoke_pipeline(csv: &Path, out: &Path, sets: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["pipeline", "--data", csv.to_str().unwrap()]
        .iter()
        .chain(&["--preset", "smoke", "--out", out.to_str().unwrap()])
        .map(|s| s.to_string())
        .collect();
    for s in sets {
        a.push("--set".into());
        a.push(s.to_string());
    }
    a
}

/// A CSV log of `users` users with cyclic, partly shared sequences over `items` items with 3 categories.
fn write_csv(dir: &Path, users: usize, items: usize) -> PathBuf {
    let mut s = String::from("user,item,timestamp,category\n");
    for u in 0..users {
        let len = 6 + u % 5;
        for t in 0..len {
            let item = (u * 3 + t * (1 + u % 2)) % items;
            s.push_str(&format!("u{u},i{item},{t},c{}\n", item % 3));
        }
    }
    let p = dir.join("toy.csv");
    std::fs::write(&p, s).unwrap();
    p
}

/// Test Recall@10 and NDCG@10 of the popularity ranking on [`write_csv`]'s log, from first principles.
fn toy_popularity_test_metrics(users: usize, items: usize) -> (f64, f64) {
    let seqs: Vec<Vec<usize>> = (0..users)
        .map(|u| {
            (0..6 + u % 5)
                .map(|t| (u * 3 + t * (1 + u % 2)) % items)
                .collect()
        })
        .collect();
    let seen: std::collections::BTreeSet<usize> = seqs.iter().flatten().copied().collect();
    let mut count = vec![0usize; items];
    for s in &seqs {
        for &i in &s[..s.len() - 2] {
            count[i] += 1;
        }
    }
    let (mut recall, mut ndcg) = (0.0, 0.0);
    for s in &seqs {
        let target = s[s.len() - 1];
        // 0-based rank: every other item of the catalog scored at least as high.
        let rank = seen
            .iter()
            .filter(|&&i| i != target && count[i] >= count[target])
            .count();
        if rank < 10 {
            recall += 1.0;
            ndcg += 1.0 / (rank as f64 + 2.0).log2();
        }
    }
    (recall / users as f64, ndcg / users as f64)
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "reg4rec failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Output into a pipe nobody reads any more (`reg4rec ... | head`) ends the command quietly, by SIGPIPE as other
/// Unix tools do, instead of a panic in `println!`.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), 4, 10);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // every write into the pipe now fails
    let o = Command::new(env!("CARGO_BIN_EXE_reg4rec"))
        .args(["data", "stats", "--data", csv.to_str().unwrap(), "--json"])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        o.status
    );
}

#[test]
fn data_stats_of_a_csv_log() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), 30, 40);
    let o = reg4rec(
        &["data", "stats", "--data", csv.to_str().unwrap(), "--json"],
        dir.path(),
    );
    let v = json(&o);
    assert_eq!(v["users"], 30);
    assert_eq!(v["categories"], 3);
    // Items i0..i39 in categories c(item % 3): 14 of 40 in c0.
    assert!((v["largest_category_share"].as_f64().unwrap() - 14.0 / 40.0).abs() < 1e-9);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("fewer than two"));
    // A log without categories: one `unknown` category, and a warning saying what that switches off.
    let plain = dir.path().join("plain.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect();
    std::fs::write(
        &plain,
        format!("user,item,timestamp\n{}\n", rows.join("\n")),
    )
    .unwrap();
    let o = reg4rec(
        &["data", "stats", "--data", plain.to_str().unwrap(), "--json"],
        dir.path(),
    );
    let v = json(&o);
    assert_eq!(
        (
            v["categories"].as_u64(),
            v["largest_category_share"].as_f64()
        ),
        (Some(1), Some(1.0))
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fewer than two item categories") && err.contains("CORP"),
        "{err}"
    );
}

/// A NumPy `.npy` file (format 1.0) of little-endian f32 `rows x cols`, as `numpy.save` writes it.
fn write_npy(path: &Path, rows: usize, cols: usize, values: &[f32]) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// Item features from a `.npy` file drive the codes: two clusters of items (by dense item index) share more
/// tokens within a cluster than across; a file with the wrong row count is an error naming it.
#[test]
fn numpy_features_feed_the_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let (n, dim) = (40usize, 8usize);
    let csv = write_csv(dir.path(), 30, n);
    let mut values = vec![0f32; n * dim];
    for k in 0..n {
        values[k * dim + usize::from(k >= n / 2)] = 1.0;
        values[k * dim + 2 + k % 6] = 0.05 * (1 + k % 4) as f32;
    }
    let npy = dir.path().join("emb.npy");
    write_npy(&npy, n, dim, &values);
    let tok = dir.path().join("tok");
    let o = reg4rec(
        &[
            "tokenize",
            "--data",
            csv.to_str().unwrap(),
            "--features",
            npy.to_str().unwrap(),
            "--preset",
            "smoke",
            "--out",
            tok.to_str().unwrap(),
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(json(&o)["collision_rate_after"], 0.0);
    let codes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tok.join("codes.json")).unwrap()).unwrap();
    let m = codes["m"].as_u64().unwrap() as usize;
    let tuples: Vec<u64> = serde_json::from_value(codes["tuples"].clone()).unwrap();
    assert_eq!(tuples.len(), n * m);
    let shared = |a: usize, b: usize| {
        (0..m)
            .filter(|r| tuples[a * m + r] == tuples[b * m + r])
            .count()
    };
    let (mut within, mut across) = ((0.0, 0), (0.0, 0));
    for a in 0..n {
        for b in a + 1..n {
            let acc = if (a < n / 2) == (b < n / 2) {
                &mut within
            } else {
                &mut across
            };
            *acc = (acc.0 + shared(a, b) as f64, acc.1 + 1);
        }
    }
    let (within, across) = (within.0 / within.1 as f64, across.0 / across.1 as f64);
    assert!(
        within > across + 0.2,
        "tokens shared within clusters {within:.2}, across {across:.2}"
    );

    let short = dir.path().join("short.npy");
    write_npy(&short, n - 1, dim, &values[..(n - 1) * dim]);
    let o = reg4rec(
        &[
            "tokenize",
            "--data",
            csv.to_str().unwrap(),
            "--features",
            short.to_str().unwrap(),
            "--preset",
            "smoke",
            "--out",
            dir.path().join("tok2").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("short.npy") && err.contains("39 rows") && err.contains("40 items"),
        "{err}"
    );
}

#[test]
fn malformed_input_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.csv");
    std::fs::write(&p, "user,item,timestamp\nu1,i1,1\nu1,i2,notatime\n").unwrap();
    let o = reg4rec(
        &["data", "stats", "--data", p.to_str().unwrap(), "--json"],
        dir.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv") && err.contains(":3"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn inputs_that_cannot_work_fail_before_anything_is_written_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |args: &[&str]| {
        let o = reg4rec(args, dir.path());
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    // A k-core that empties the data.
    let csv = write_csv(dir.path(), 30, 40);
    let err = fails(&[
        "data",
        "stats",
        "--data",
        csv.to_str().unwrap(),
        "--k-core",
        "500",
    ]);
    assert!(
        err.contains("`k_core`") && err.contains("500-core"),
        "{err}"
    );
    // A log where no user has the 3 items leave-one-out needs: the pipeline stops before any stage.
    let tiny = dir.path().join("tiny.csv");
    std::fs::write(&tiny, "user,item,timestamp\nu1,a,1\nu1,b,2\nu2,a,1\n").unwrap();
    let out = dir.path().join("tiny-run");
    let err = fails(
        &smoke_pipeline(&tiny, &out, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("no user has the 3 items"), "{err}");
    assert!(!out.join("stages").exists(), "a stage ran before the error");
    // A directory that is not a model directory, named for what it is, each cause said once.
    let tok = dir.path().join("tok");
    let o = reg4rec(
        &[
            "tokenize",
            "--data",
            csv.to_str().unwrap(),
            "--preset",
            "smoke",
            "--out",
            tok.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = fails(&[
        "recommend",
        "--model",
        tok.to_str().unwrap(),
        "--history",
        "i1",
    ]);
    assert!(
        err.contains("a tokenizer directory") && !err.contains("manifest"),
        "{err}"
    );
    let missing = dir.path().join("nothing");
    let err = fails(&[
        "recommend",
        "--model",
        missing.to_str().unwrap(),
        "--history",
        "i1",
    ]);
    assert_eq!(
        err.matches("No such file").count() + err.matches("no such directory").count(),
        1,
        "{err}"
    );
}

#[test]
fn amazon_beauty_statistics_match_the_published_ones() {
    let Some(beauty) = reg4rec_data::registry::benchmark_mirror("amazon-beauty").unwrap() else {
        eprintln!("note: skipped: no amazon-beauty mirror (set REG4REC_DATA_DIR)");
        return;
    };
    let data = beauty.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_reg4rec"))
        .args(["data", "stats", "--dataset", "amazon-beauty", "--json"])
        .env("REG4REC_DATA_DIR", data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(
        (
            &v["users"],
            &v["items"],
            &v["interactions"],
            &v["categories"]
        ),
        (
            &serde_json::json!(22363),
            &serde_json::json!(12101),
            &serde_json::json!(198502),
            &serde_json::json!(6)
        )
    );
}

#[test]
fn smoke_pipeline_writes_a_complete_report_and_reuses_finished_stages() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), 60, 50);
    let out = dir.path().join("run");
    // A path relative to the working folder: model directories record it absolute.
    let rel = Path::new("toy.csv");
    assert_eq!(dir.path().join(rel), csv);
    let args = smoke_pipeline(rel, &out, &["pipeline.long_tail_weights=[2.0]"]);
    let o = command(&args, dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["dataset"], "toy");
    assert_eq!(report["preset"], "smoke");
    assert_eq!(report["users"], 60);
    assert_eq!(report["categories"]["count"], 3);
    assert_eq!(report["protocol"]["filter_history"], false);
    // The protocol says what each kind of row ranks and how it breaks ties.
    let ranking = report["protocol"]["ranking"].as_str().unwrap();
    assert!(
        ranking.contains("rank the items their beam search produces"),
        "{ranking}"
    );
    let ties = report["protocol"]["tie_breaking"].as_str().unwrap();
    assert!(
        ties.contains("pessimistic for every row") && ties.contains("generated list"),
        "{ties}"
    );
    let methods = report["methods"].as_array().unwrap();
    // A known answer: the popularity row, computed here from the log itself (counts over each user's training
    // part, the sequence without its last two items; pessimistic ties; no history filtering).
    let popularity = methods.iter().find(|m| m["name"] == "popularity").unwrap();
    let (recall, ndcg) = toy_popularity_test_metrics(60, 50);
    assert!(
        (popularity["recall@10"].as_f64().unwrap() - recall).abs() < 1e-9,
        "{popularity}"
    );
    assert!(
        (popularity["ndcg@10"].as_f64().unwrap() - ndcg).abs() < 1e-9,
        "{popularity}"
    );
    assert!(recall > 0.0, "the toy log must exercise the check");
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for expected in [
        "popularity",
        "sasrec-ce",
        "tiger",
        "reg4rec",
        "reg4rec-no-mpq",
        "reg4rec-no-pars",
        "reg4rec-no-msra",
        "reg4rec-no-corp",
        "tiger-paths",
        "reg4rec-paths",
        "reg4rec-no-mpq-paths",
        "reg4rec-no-pars-paths",
        "reg4rec-no-msra-paths",
        "reg4rec-no-corp-paths",
        "reg4rec-no-crss-paths",
        "reg4rec-path-aligned",
        "item-head",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    // What each alignment's validation kept is in the report; when the full model's alignment kept an earlier
    // step than its last, the aligned model's own last weights are a row too (checked like every other row).
    let alignment = report["alignment"].as_array().unwrap();
    let stages: Vec<&str> = alignment
        .iter()
        .map(|a| a["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "align-reg4rec",
            "align-reg4rec-no-msra",
            "align-reg4rec-no-mpq",
            "align-reg4rec-paths",
            "align-reg4rec-no-msra-paths",
            "align-reg4rec-no-mpq-paths"
        ]
    );
    for a in alignment {
        assert!(
            a["kept_step"].as_u64().unwrap() <= a["steps"].as_u64().unwrap(),
            "{a}"
        );
    }
    // The same for the path-ranked model's own alignment (`align_paths`).
    for (a, row) in [
        (&alignment[0], "reg4rec-last-step"),
        (&alignment[3], "reg4rec-last-step-paths"),
    ] {
        let kept_earlier = a["kept_step"].as_u64() < a["steps"].as_u64();
        assert_eq!(names.contains(&row), kept_earlier, "{a}");
    }
    // Both CORP sweeps, each with CORP off among its points, and the threshold each applied.
    for (sweep, theta) in [("theta_sweep", "theta"), ("path_theta_sweep", "path_theta")] {
        let points = report[sweep].as_array().unwrap();
        assert!(points.iter().any(|p| p["theta"].is_null()), "{sweep}");
        assert!(report[theta].get("theta").is_some(), "{theta}");
    }
    for m in methods {
        for k in ["recall@5", "recall@10", "ndcg@5", "ndcg@10"] {
            let v = m[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{} {k} = {v}", m["name"]);
        }
        assert!(m["train_seconds"].as_f64().unwrap() >= 0.0);
        assert!(m["eval_seconds"].as_f64().unwrap() >= 0.0);
        // Every generative row but the full model carries its paired difference to it, inside its interval,
        // and the difference is the difference of the rows' metrics.
        let name = m["name"].as_str().unwrap();
        let generative =
            name.starts_with("reg4rec-") || name.starts_with("tiger") || name == "item-head";
        assert_eq!(m.get("vs_reg4rec").is_some(), generative, "{name}");
        // A path-ranked row also carries its difference to the full model ranked by its paths.
        let against_paths = name.ends_with("-paths") && name != "reg4rec-paths";
        assert_eq!(m.get("vs_reg4rec_paths").is_some(), against_paths, "{name}");
        // Every row has its metrics under the history-filtered protocol, and every row but the baseline its
        // paired difference to sasrec-ce under that protocol.
        for k in ["recall@5", "recall@10", "ndcg@10", "ndcg@20"] {
            let v = m["filtered"][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{name} filtered {k} = {v}");
        }
        assert_eq!(
            m.get("vs_sasrec_ce").is_some(),
            name != "sasrec-ce",
            "{name}"
        );
        // Every row's long-tail share of its top 10; popularity's top 10 is the popular head itself.
        for k in ["all", "filtered"] {
            let v = m["long_tail_10"][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{name} long_tail_10.{k} = {v}");
            if name == "popularity" && k == "all" {
                assert_eq!(v, 0.0, "the most popular items are the head");
            }
        }
        let mut checks = Vec::new();
        if generative {
            checks.push(("reg4rec", "vs_reg4rec", false));
        }
        if against_paths {
            checks.push(("reg4rec-paths", "vs_reg4rec_paths", false));
        }
        if name != "sasrec-ce" {
            checks.push(("sasrec-ce", "vs_sasrec_ce", true));
        }
        for (reference, field, filtered) in checks {
            let full = methods.iter().find(|f| f["name"] == reference).unwrap();
            let d = &m[field];
            let (row, full) = match filtered {
                true => (&m["filtered"], &full["filtered"]),
                false => (m, full),
            };
            for (k, field) in [("recall@10", "recall_10"), ("ndcg@10", "ndcg_10")] {
                let diff = d[field].as_f64().unwrap();
                let want = row[k].as_f64().unwrap() - full[k].as_f64().unwrap();
                assert!(
                    (diff - want).abs() < 1e-9,
                    "{} {k}: {diff} vs {want}",
                    m["name"]
                );
                let ci = d[format!("{field}_ci95")].as_array().unwrap();
                let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
                assert!(
                    lo <= diff + 1e-9 && diff <= hi + 1e-9,
                    "{} {k}: {diff} not in [{lo}, {hi}]",
                    m["name"]
                );
            }
        }
    }
    let precision: Vec<&str> = report["precision"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precision, ["fp32", "bf16", "ladq"]);
    let sweep = report["theta_sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 2, "the smoke sweep is 0.06 and off");
    assert!(sweep.iter().any(|p| p["theta"].is_null()));
    // The CORP rows ran with the sweep's best validation point, and the report says so.
    let best = sweep
        .iter()
        .fold(None::<&serde_json::Value>, |b, p| match b {
            Some(b)
                if (p["recall@10"].as_f64(), p["ndcg@10"].as_f64())
                    <= (b["recall@10"].as_f64(), b["ndcg@10"].as_f64()) =>
            {
                Some(b)
            }
            _ => Some(p),
        })
        .unwrap();
    assert_eq!(report["theta"]["on_validation"], true);
    assert_eq!(report["theta"]["theta"], best["theta"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| sasrec-ce |"));
    assert!(md.contains("applied to the test split"), "{md}");
    assert!(md.contains("history-filtered protocol"), "{md}");
    assert!(
        md.contains("| method | tail@10 | tail@10 filtered |"),
        "{md}"
    );
    // The model aligned with the long-tail reward at the asked weight, ranked both ways.
    for name in ["reg4rec-tail2", "reg4rec-tail2-paths"] {
        assert!(md.contains(&format!("| {name} |")), "{name}: {md}");
    }
    // The protocol counts the targets that repeat a history item (a known answer: the toy log has none).
    let history = report["protocol"]["history"].as_str().unwrap();
    assert!(history.starts_with("0 of 60 test targets"), "{history}");
    // Every figure is drawn as SVG and PNG, has data in it (the first series' colour marks its legend entry and
    // at least one curve or bar), and both files are linked from report.md.
    let figures: Vec<(&str, &str)> = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["file"].as_str().unwrap(), f["png"].as_str().unwrap()))
        .collect();
    let names = [
        "pretrain-loss",
        "valid-recall",
        "align-reward",
        "align-valid-recall",
        "theta-sweep",
        // The long-tail trade-off: the run asked for `pipeline.long_tail_weights`.
        "long-tail",
        "codebooks",
    ];
    let expected: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("plots/{n}.svg"), format!("plots/{n}.png")))
        .collect();
    assert_eq!(
        figures
            .iter()
            .map(|(s, p)| (s.to_string(), p.to_string()))
            .collect::<Vec<_>>(),
        expected
    );
    for (f, png) in figures {
        let svg = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{f}"
        );
        assert!(svg.matches("#0072B2").count() >= 2, "{f} draws nothing");
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a PNG"
        );
        assert!(
            md.contains(&format!("]({png})")),
            "report.md does not link {png}"
        );
        assert!(
            md.contains(&format!("]({f})")),
            "report.md does not link {f}"
        );
    }
    // The trained model answers recommendation requests with explained paths.
    let model = out.join("stages/align-reg4rec");
    let o = reg4rec(
        &[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--history",
            "i1,i4,i7",
            "--top",
            "5",
            "--explain",
            "--json",
        ],
        &out, // another folder than the one the pipeline ran in
    );
    let recs = json(&o);
    assert_eq!(recs["catalog_version"], 1);
    let recs = recs["items"].as_array().unwrap();
    assert_eq!(recs.len(), 5);
    for (rank, r) in recs.iter().enumerate() {
        assert_eq!(r["rank"], rank + 1);
        assert!(r["item_id"].as_str().unwrap().starts_with('i'));
        assert!(r["category"].as_str().unwrap().starts_with('c'), "{r}");
        let r = &r["explanation"];
        // The ranking score is the path's log-probability plus dense_weight times the item head's.
        let (score, path, item) = (
            r["score"].as_f64().unwrap(),
            r["path_score"].as_f64().unwrap(),
            r["item_score"].as_f64().unwrap(),
        );
        assert!(
            (score - (path + 100.0 * item)).abs() < 1e-2 * score.abs().max(1.0),
            "{r}"
        );
        assert_eq!(
            r["steps"].as_array().unwrap().len(),
            3,
            "one step per codebook"
        );
    }
    // --exclude-history leaves the history's own items out.
    let history = ["i1", "i4", "i7"];
    let o = reg4rec(
        &[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--history",
            &history.join(","),
            "--top",
            "20",
            "--beam",
            "40",
            "--exclude-history",
            "--json",
        ],
        dir.path(),
    );
    let recs = json(&o);
    let recs = recs["items"].as_array().unwrap();
    assert!(!recs.is_empty());
    for r in recs {
        assert!(!history.contains(&r["item_id"].as_str().unwrap()), "{r}");
    }
    // A flipped byte in any file of the model directory is an error naming that file.
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("best.json")).unwrap()).unwrap();
    for file in [
        "codes.json",
        "catalog.json",
        best["weights"].as_str().unwrap(),
    ] {
        let copy = dir.path().join("flipped");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&model, &copy);
        let target = copy.join(file);
        let mut bytes = std::fs::read(&target).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&target, bytes).unwrap();
        let o = reg4rec(
            &[
                "recommend",
                "--model",
                copy.to_str().unwrap(),
                "--history",
                "i1",
            ],
            dir.path(),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{file}: a flipped byte was accepted");
        assert!(
            err.contains(target.to_str().unwrap()) && err.contains("sha256"),
            "{file}: {err}"
        );
    }
    let o = reg4rec(
        &[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--history",
            "nope",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown item id `nope`"));
    // An empty history is named as such, not as an unknown id.
    let o = reg4rec(
        &[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--history",
            "",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--history is empty") && !err.contains("unknown"),
        "{err}"
    );
    // A second run reuses every finished stage and reproduces the report exactly.
    let first = std::fs::read_to_string(out.join("report.json")).unwrap();
    let o = command(&args, dir.path()).output().unwrap();
    assert!(o.status.success());
    let second = std::fs::read_to_string(out.join("report.json")).unwrap();
    assert!(first == second, "the cached re-run changed the report");
    // `reg4rec report` redraws report.md and the figures of a finished run without recomputing anything.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    std::fs::remove_file(out.join("report.md")).unwrap();
    std::fs::remove_dir_all(out.join("plots")).unwrap();
    let o = reg4rec(&["report", "--run", out.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), md);
    assert!(out.join("plots/codebooks.svg").exists());
    let o = reg4rec(
        &["report", "--run", dir.path().to_str().unwrap()],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("report.json"));
    // A renamed run directory keeps its cache: a new sweep point evaluates the cached aligned model where it
    // now is, and nothing is trained again.
    let moved = dir.path().join("moved");
    std::fs::rename(&out, &moved).unwrap();
    let o = command(
        &smoke_pipeline(rel, &moved, &["pipeline.theta_sweep=[0.05]"]),
        dir.path(),
    )
    .env("REG4REC_LOG", "info")
    .output()
    .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("running stage=\"eval-sweep-0.05\""), "{log}");
    assert!(!log.contains("running stage=\"pretrain") && !log.contains("running stage=\"align"));
    // The aligned model's own weights (the latest checkpoint) evaluate too, whatever selection kept; `best`
    // gives the row the report shows.
    let aligned = moved.join("stages/align-reg4rec");
    let eval = |checkpoint: &str| {
        let o = reg4rec(
            &[
                "eval",
                "--model",
                aligned.to_str().unwrap(),
                "--split",
                "valid",
                "--checkpoint",
                checkpoint,
                "--theta",
                "off",
                "--preset",
                "smoke",
                "--json",
            ],
            dir.path(),
        );
        json(&o)
    };
    let (best, latest) = (eval("best"), eval("latest"));
    assert_eq!(best["metrics"]["users"], 60);
    assert_eq!(latest["metrics"]["users"], 60);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(moved.join("report.json")).unwrap()).unwrap();
    // The sweep's CORP-off point is the same model, split and search.
    let off = report["theta_sweep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["theta"].is_null())
        .unwrap();
    assert_eq!(
        best["metrics"]["recall@10"], off["recall@10"],
        "{best} vs {off}"
    );
    assert_eq!(
        best["metrics"]["ndcg@10"], off["ndcg@10"],
        "{best} vs {off}"
    );
    // CORP on a TIGER model (ordered codes) is refused, naming the option.
    let tiger = moved.join("stages/pretrain-tiger");
    let o = reg4rec(
        &[
            "eval",
            "--model",
            tiger.to_str().unwrap(),
            "--theta",
            "0.06",
            "--preset",
            "smoke",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--theta") && err.contains("TIGER"),
        "{err}"
    );
    // Data changed after training: evaluating the model on it is an error naming its record, while
    // recommending needs only the model directory's own catalog and still answers (the removed item included).
    let text = std::fs::read_to_string(&csv).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(",i7,")).collect();
    std::fs::write(&csv, kept.join("\n") + "\n").unwrap();
    let model = moved.join("stages/align-reg4rec");
    let o = reg4rec(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--preset",
            "smoke",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "eval accepted changed data");
    assert!(
        err.contains("source.json") && err.contains("changed since training"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let o = reg4rec(
        &[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--history",
            "i1,i7",
            "--json",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["items"].as_array().unwrap().len(), 10);
}

/// Copies a directory tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), p).unwrap();
        }
    }
}

#[test]
fn a_pipeline_killed_during_pretraining_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), 200, 60);
    let out = dir.path().join("run");
    let args = smoke_pipeline(
        &csv,
        &out,
        &["pretrain.epochs=6", "pretrain.checkpoint_every=1"],
    );
    let mut child = command(&args, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stage = out.join("stages/pretrain-reg4rec");
    let started = std::time::Instant::now();
    loop {
        if stage.join("latest.json").exists() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pipeline ended before pre-training wrote a checkpoint"
        );
        assert!(
            started.elapsed().as_secs() < 300,
            "no checkpoint after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !stage.join("result.json").exists(),
        "pre-training finished before the kill; the test needs a longer stage"
    );
    let o = command(&args, dir.path())
        .env("REG4REC_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("pretrain-reg4rec\"") && l.contains("resume=true")),
        "the re-run did not resume pre-training:\n{log}"
    );
    assert!(out.join("report.json").exists());
}
