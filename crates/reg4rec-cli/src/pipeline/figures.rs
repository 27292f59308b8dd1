//! The report's figures, drawn from what the stages left in the run directory: training curves (pre-training
//! loss, validation Recall@10 per epoch, GRPO reward and validation Recall@10 per step), the CORP threshold sweep
//! and the tokenizers' codebook utilisation. Each figure is an SVG and a PNG of the same drawing under
//! `<run>/plots/`; a stage that did not run (e.g. `pipeline.generative = false`) just leaves its curve out.

use super::plot::{BarChart, Chart, LineChart, Rendered, Series};
use super::report::Report;
use super::stage;
use anyhow::{Context, Result};
use reg4rec_data::io::write_atomic;
use reg4rec_tokenizer::TokenizerKind;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Pre-training stages drawn in the curves, with their legend names.
const PRETRAIN: [(&str, &str); 3] = [
    (stage::PRETRAIN_REG4REC, "reg4rec"),
    (stage::PRETRAIN_NO_MPQ, "reg4rec-no-mpq"),
    (stage::PRETRAIN_TIGER, "tiger"),
];
/// Alignment stages drawn in the curves.
const ALIGN: [(&str, &str); 3] = [
    (stage::ALIGN_REG4REC, "reg4rec (PARS + MSRA)"),
    (stage::ALIGN_NO_MSRA, "reg4rec-no-msra"),
    (stage::ALIGN_NO_MPQ, "reg4rec-no-mpq"),
];

/// One figure: its SVG and PNG files (relative to the run directory) and a caption for `report.md`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    /// `plots/<name>.svg`.
    pub file: String,
    /// `plots/<name>.png`, the same drawing as a bitmap.
    #[serde(default)]
    pub png: String,
    pub caption: String,
}

/// One value of a log record: a number, or anything else (a kind, a flag, a list), which no curve reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Field {
    Number(f64),
    Other(serde::de::IgnoredAny),
}

/// One JSON line of a stage's `metrics.jsonl`: its numbers by name, and its `kind`.
#[derive(Debug, Clone, Default, Deserialize)]
struct Record {
    #[serde(default)]
    kind: Option<String>,
    #[serde(flatten)]
    fields: HashMap<String, Field>,
}

impl Record {
    fn number(&self, name: &str) -> Option<f64> {
        match self.fields.get(name) {
            Some(Field::Number(x)) => Some(*x),
            _ => None,
        }
    }
}

/// Every JSON line of a stage's `metrics.jsonl`, read once (missing file: none).
fn records(stage: &Path) -> Result<Vec<Record>> {
    let path = stage.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        out.push(
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a JSON record", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// The records of one `kind` (`{"kind": "step", ...}`).
fn of_kind<'a>(recs: &'a [Record], kind: &'a str) -> impl Iterator<Item = &'a Record> {
    recs.iter().filter(move |r| r.kind.as_deref() == Some(kind))
}

/// A series of `(x(r), y(r))` over the records where both are numbers.
fn curve<'a>(
    name: &str,
    recs: impl IntoIterator<Item = &'a Record>,
    x: impl Fn(&Record) -> Option<f64>,
    y: impl Fn(&Record) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_string(),
        points: recs
            .into_iter()
            .filter_map(|r| Some((x(r)?, y(r)?)))
            .collect(),
    }
}

fn field(name: &'static str) -> impl Fn(&Record) -> Option<f64> {
    move |r| r.number(name)
}

/// One axis of a curve: a number read from a record.
type Axis<'a> = &'a dyn Fn(&Record) -> Option<f64>;

/// For each `(kind, x, y)` of `specs`, one series per stage of `list` (`(stage, legend)`), each stage's log
/// read once.
fn stage_curves<const N: usize>(
    stages: &Path,
    list: &[(&str, &str)],
    specs: [(&str, Axis<'_>, Axis<'_>); N],
) -> Result<[Vec<Series>; N]> {
    let mut out: [Vec<Series>; N] = std::array::from_fn(|_| Vec::new());
    for (stage, name) in list {
        let recs = records(&stages.join(stage))?;
        for ((kind, x, y), series) in specs.iter().zip(out.iter_mut()) {
            series.push(curve(name, of_kind(&recs, kind), x, y));
        }
    }
    Ok(out)
}

/// A tokenizer stage's `result.json`, as far as the codebook figure reads it.
#[derive(Debug, Deserialize)]
struct TokenizerResult {
    result: TokenizerTrained,
}

#[derive(Debug, Deserialize)]
struct TokenizerTrained {
    report: reg4rec_tokenizer::TokenizerReport,
}

/// The figures drawn so far, each written as SVG and PNG under `<run>/plots/` (atomically).
struct Figures<'a> {
    run: &'a Path,
    list: Vec<Figure>,
}

impl Figures<'_> {
    fn save(&mut self, name: &str, caption: &str, drawn: Result<Rendered>) -> Result<()> {
        let drawn = drawn.with_context(|| format!("figure {name}"))?;
        let (svg, png) = (format!("plots/{name}.svg"), format!("plots/{name}.png"));
        write_atomic(&self.run.join(&svg), drawn.svg.as_bytes())?;
        write_atomic(&self.run.join(&png), &drawn.png)?;
        self.list.push(Figure {
            file: svg,
            png,
            caption: caption.to_string(),
        });
        Ok(())
    }
}

/// Draws every figure into `<run>/plots/` (atomically) and returns them in report order.
pub fn write(run: &Path, report: &Report, codebook_sizes: (usize, usize)) -> Result<Vec<Figure>> {
    let stages = run.join("stages");
    let mut figs = Figures {
        run,
        list: Vec::new(),
    };
    pretraining(&stages, &mut figs)?;
    alignment(&stages, &mut figs)?;
    theta_sweep(report, &mut figs)?;
    long_tail(report, &mut figs)?;
    codebooks(&stages, codebook_sizes, &mut figs)?;
    Ok(figs.list)
}

/// The pre-training loss and the validation Recall@10 per epoch (SASRec-CE's beside).
fn pretraining(stages: &Path, figs: &mut Figures<'_>) -> Result<()> {
    let [loss, mut valid] = stage_curves(
        stages,
        &PRETRAIN,
        [
            ("step", &field("step"), &field("loss")),
            // Epochs are 0-based in the log; drawn as "after epoch 1, 2, ...".
            (
                "epoch",
                &|r| Some(r.number("epoch")? + 1.0),
                &field("valid_metric"),
            ),
        ],
    )?;
    let sasrec_report = Path::new(stage::SASREC).join("report.json");
    if let Ok(report) = std::fs::read(stages.join(&sasrec_report)) {
        let report: reg4rec_baselines::SasRecReport =
            serde_json::from_slice(&report).with_context(|| sasrec_report.display().to_string())?;
        valid.push(Series {
            name: "sasrec-ce".into(),
            points: report
                .history
                .iter()
                .filter_map(|e| Some((e.epoch as f64, e.valid_recall10?)))
                .collect(),
        });
    }
    if loss.iter().any(|s| !s.points.is_empty()) {
        figs.save(
            "pretrain-loss",
            "Pre-training loss per logged step (token loss + lambda_cat * category loss)",
            LineChart {
                title: "Pre-training loss".into(),
                x_label: "optimizer step".into(),
                y_label: "training loss".into(),
                series: loss,
            }
            .render(),
        )?;
    }
    if valid.iter().any(|s| !s.points.is_empty()) {
        figs.save(
            "valid-recall",
            "Validation Recall@10 after each epoch (the pre-training stages search a seeded subset of \
             `pipeline.valid_users` users; SASRec ranks all users)",
            LineChart {
                title: "Validation Recall@10 per epoch".into(),
                x_label: "epoch".into(),
                y_label: "Recall@10 (validation)".into(),
                series: valid,
            }
            .render(),
        )?;
    }

    Ok(())
}

/// GRPO's reward and validation Recall@10 per step.
fn alignment(stages: &Path, figs: &mut Figures<'_>) -> Result<()> {
    let [reward, align_valid] = stage_curves(
        stages,
        &ALIGN,
        [
            ("step", &field("step"), &field("reward")),
            ("valid", &field("step"), &field("recall@10")),
        ],
    )?;
    if reward.iter().any(|s| !s.points.is_empty()) {
        figs.save(
            "align-reward",
            "GRPO: mean total reward of the sampled paths per step (all four rewards, MSRA windows included)",
            LineChart {
                title: "Alignment reward".into(),
                x_label: "GRPO step".into(),
                y_label: "mean reward".into(),
                series: reward,
            }
            .render(),
        )?;
        figs.save(
            "align-valid-recall",
            "GRPO: validation Recall@10 at each validation (step 0 is the pre-trained model; the best is kept)",
            LineChart {
                title: "Validation Recall@10 during alignment".into(),
                x_label: "GRPO step".into(),
                y_label: "Recall@10 (validation)".into(),
                series: align_valid,
            }
            .render(),
        )?;
    }

    Ok(())
}

/// The CORP threshold sweep on validation.
fn theta_sweep(report: &Report, figs: &mut Figures<'_>) -> Result<()> {
    if !report.theta_sweep.is_empty() {
        let labels = report
            .theta_sweep
            .iter()
            .map(|p| p.theta.map_or("off".to_string(), |t| format!("{t:.2}")))
            .collect();
        figs.save(
            "theta-sweep",
            "CORP threshold sweep on the validation split (full model)",
            BarChart {
                title: "CORP threshold theta".into(),
                y_label: "validation metric".into(),
                categories: labels,
                groups: vec![
                    (
                        "Recall@10".into(),
                        report.theta_sweep.iter().map(|p| p.recall_10).collect(),
                    ),
                    (
                        "NDCG@10".into(),
                        report.theta_sweep.iter().map(|p| p.ndcg_10).collect(),
                    ),
                ],
            }
            .render(),
        )?;
    }

    Ok(())
}

/// The long-tail trade-off (`pipeline.long_tail_weights`): test R@10 against the long tail's share of the top
/// 10, one line for the hybrid rows and one for the path-ranked rows, from the plain model to the largest weight.
fn long_tail(report: &Report, figs: &mut Figures<'_>) -> Result<()> {
    let point = |name: &str| {
        report
            .methods
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.long_tail_10.map(|t| (t.all, m.test.recall_10)))
    };
    let mut weights: Vec<(f64, &str)> = report
        .methods
        .iter()
        .filter_map(|m| {
            let w = m.name.strip_prefix("reg4rec-tail")?;
            (!w.ends_with(super::generative::PATHS_SUFFIX))
                .then(|| w.parse().ok().map(|x: f64| (x, w)))
                .flatten()
        })
        .collect();
    if weights.is_empty() {
        return Ok(());
    }
    weights.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line = |name: &str, base: &str, suffix: &str| Series {
        name: name.into(),
        points: std::iter::once(point(base))
            .chain(
                weights
                    .iter()
                    .map(|(_, w)| point(&format!("reg4rec-tail{w}{suffix}"))),
            )
            .flatten()
            .collect(),
    };
    let paths = super::generative::PATHS_SUFFIX;
    figs.save(
        "long-tail",
        "The long-tail reward's trade-off: test R@10 against the long tail's share of the top 10, from the plain \
         model (leftmost point) through each weight of `pipeline.long_tail_weights`",
        LineChart {
            title: "Long tail against accuracy".into(),
            x_label: "tail@10 (share of the top 10 outside the popular head)".into(),
            y_label: "R@10 (test)".into(),
            series: vec![
                line("hybrid (reg4rec)", "reg4rec", ""),
                line("path-ranked (reg4rec-paths)", super::generative::REG4REC_PATHS_ROW, paths),
            ],
        }
        .render(),
    )
}

/// Codebook utilisation and perplexity of both tokenizers.
fn codebooks(stages: &Path, codebook_sizes: (usize, usize), figs: &mut Figures<'_>) -> Result<()> {
    let mut groups = Vec::new();
    let mut m = 0;
    for (kind, d) in [
        (TokenizerKind::Mpq, codebook_sizes.0),
        (TokenizerKind::RqVae, codebook_sizes.1),
    ] {
        let result = Path::new(&stage::tokenizer(kind)).join("result.json");
        let Ok(bytes) = std::fs::read(stages.join(&result)) else {
            continue;
        };
        let v: TokenizerResult =
            serde_json::from_slice(&bytes).with_context(|| result.display().to_string())?;
        let r = v.result.report;
        let util = r.utilisation;
        let perp: Vec<f64> = r.perplexity.iter().map(|p| p / d.max(1) as f64).collect();
        m = m.max(util.len());
        groups.push((format!("{kind} utilisation"), util));
        groups.push((format!("{kind} perplexity / D"), perp));
    }
    if !groups.is_empty() {
        figs.save(
            "codebooks",
            "Codebook utilisation (fraction of the D codes used by some item) and perplexity / D per codebook",
            BarChart {
                title: "Codebook utilisation".into(),
                y_label: "fraction of D".into(),
                categories: (1..=m).map(|i| format!("codebook {i}")).collect(),
                groups,
            }
            .render(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_metrics_log_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"kind\":\"step\",\"step\":1,\"loss\":2.0}\n{oops\n",
        )
        .unwrap();
        let err = records(dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("metrics.jsonl:2"), "{msg}");
    }

    #[test]
    fn curves_take_only_records_of_the_kind_with_both_fields() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"kind\":\"step\",\"step\":1,\"loss\":2.0}\n\
             {\"kind\":\"epoch\",\"epoch\":0,\"valid_metric\":0.1}\n\
             {\"kind\":\"step\",\"step\":2}\n\
             {\"kind\":\"step\",\"step\":3,\"loss\":1.5}\n",
        )
        .unwrap();
        let recs = records(dir.path()).unwrap();
        let s = curve("x", of_kind(&recs, "step"), field("step"), field("loss"));
        assert_eq!(s.points, vec![(1.0, 2.0), (3.0, 1.5)]);
        assert!(records(&dir.path().join("missing")).unwrap().is_empty());
    }
}
