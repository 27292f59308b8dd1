//! The report contract: `report.json` (machine-readable) and `report.md` (the table people read).
//!
//! `{"dataset", "preset", "users", "items", "protocol": {"split", "ranking", "filter_history", "tie_breaking"},
//! "methods": [{"name", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "train_seconds", "eval_seconds", ...}]}`

use super::figures::Figure;
use super::stage::StageTime;
use anyhow::Result;
use reg4rec_data::io::{write_atomic, write_json_atomic};
use reg4rec_data::metrics::UserRanks;
use reg4rec_data::Metrics;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Protocol {
    pub split: String,
    pub ranking: String,
    pub filter_history: bool,
    pub tie_breaking: String,
    /// What the learned repeat bias does and how often targets repeat a history item in this dataset (the
    /// difference between the two protocols), from the data.
    #[serde(default)]
    pub history: String,
}

impl Protocol {
    /// The protocol of a pipeline run: what each kind of row ranks and how it breaks ties. The generative rows
    /// rank only the items their beam search produces (`beam` paths kept per step, up to `top_n` items), so a
    /// target it never reaches counts as a miss; popularity and SASRec score every item.
    pub fn new(
        filter_history: bool,
        beam: usize,
        top_n: usize,
        repeats: &reg4rec_data::RepeatStats,
        users: usize,
    ) -> Self {
        let share = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        Protocol {
            split: "leave-one-out (last item test, second-to-last validation)".into(),
            ranking: format!(
                "popularity and sasrec-ce rank every item (full ranking); the generative rows (reg4rec*, tiger) \
                 rank the items their beam search produces (beam {beam}, up to {top_n} items), and a target \
                 outside that list counts as a miss"
            ),
            filter_history,
            tie_breaking: "pessimistic for every row (the target ranks after every item with an equal score: \
                           in the full ranking of popularity, sasrec-ce and item-head, in the generated list of \
                           the generative rows)"
                .into(),
            history: format!(
                "{} of {users} test targets ({:.2}%) and {} validation targets ({:.2}%) repeat an item of \
                 their user's history, as do {} of {} training positions ({:.2}%); the models with a learned \
                 repeat bias (reg4rec's item head, sasrec-ce) add one learned score to every history item, so \
                 where repeats are rare it learns to push history items down: a learned history filter. Both \
                 protocols are reported: every item ranked, and the history-filtered one",
                repeats.test_targets,
                share(repeats.test_targets, users),
                repeats.valid_targets,
                share(repeats.valid_targets, users),
                repeats.train_positions,
                repeats.train_positions_total,
                share(repeats.train_positions, repeats.train_positions_total),
            ),
        }
    }
}

/// One method's test metrics (and validation metrics, for model selection transparency).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodRow {
    pub name: String,
    /// Test metrics: `recall@5`, `ndcg@10`, ... and `users`, flattened into the row.
    #[serde(flatten)]
    pub test: Metrics,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    /// Validation metrics of the same model, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<Metrics>,
    /// Test metrics under the history-filtered protocol: the items of each user's whole history removed before
    /// the cut-offs (from the full ranking, or from the generated list), a target that repeats one a miss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<Metrics>,
    /// This row's filtered test metrics minus `sasrec-ce`'s on the same users, with paired bootstrap 95%
    /// intervals (the history-filtered protocol: both lists without the user's history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_sasrec_ce: Option<PairedDiff>,
    /// Paired bootstrap 95% intervals of this row's test metrics minus the full model's, over the same users
    /// (the generative rows, whose per-user ranks the pipeline keeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_reg4rec: Option<PairedDiff>,
    /// For a path-ranked row (`*-paths`), its test metrics minus `reg4rec-paths`'s on the same users, with
    /// paired bootstrap 95% intervals: each mechanism against the full model in the mode where it acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_reg4rec_paths: Option<PairedDiff>,
    /// How a baseline's training ended (the SASRec rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
    /// The mean share of long-tail items in each user's top 10 (a goal beyond accuracy: items outside the most
    /// popular `align.rewards.head_share` of the catalogue by training interactions), when the lists were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_tail_10: Option<TailShare>,
}

/// The long tail's share of the top 10 under both protocols.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TailShare {
    pub all: f64,
    pub filtered: f64,
}

/// The end of a training run: epochs trained, the epoch whose checkpoint was restored, and why it stopped
/// (`early_stopping`, `max_epochs` or `time_budget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub epochs: usize,
    pub best_epoch: usize,
    pub reason: String,
}

/// Resampled users for [`PairedDiff`].
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// A row's difference to the full model on the same users, with paired bootstrap 95% intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDiff {
    pub recall_10: f64,
    pub recall_10_ci95: [f64; 2],
    pub ndcg_10: f64,
    pub ndcg_10_ci95: [f64; 2],
    pub resamples: usize,
}

impl PairedDiff {
    /// `ranks` and `reference` are 0-based target ranks of the same users in the same order (`None`: not
    /// ranked); `None` when they are not comparable.
    pub fn new(ranks: &[Option<u32>], reference: &[Option<u32>], seed: u64) -> Option<Self> {
        use reg4rec_data::metrics::{paired_bootstrap_95, per_user_at};
        let (ra, na) = per_user_at(ranks, 10);
        let (rb, nb) = per_user_at(reference, 10);
        let mean_diff = |a: &[f64], b: &[f64]| {
            a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>() / a.len().max(1) as f64
        };
        Some(PairedDiff {
            recall_10: mean_diff(&ra, &rb),
            recall_10_ci95: paired_bootstrap_95(&ra, &rb, BOOTSTRAP_RESAMPLES, seed)?,
            ndcg_10: mean_diff(&na, &nb),
            ndcg_10_ci95: paired_bootstrap_95(&na, &nb, BOOTSTRAP_RESAMPLES, seed)?,
            resamples: BOOTSTRAP_RESAMPLES,
        })
    }
}

impl MethodRow {
    pub fn new(name: &str, test: &Metrics, train_seconds: f64, eval_seconds: f64) -> Self {
        MethodRow {
            name: name.to_string(),
            test: *test,
            train_seconds,
            eval_seconds,
            valid: None,
            filtered: None,
            vs_sasrec_ce: None,
            vs_reg4rec: None,
            vs_reg4rec_paths: None,
            stopped: None,
            long_tail_10: None,
        }
    }

    pub fn with_valid(mut self, valid: Metrics) -> Self {
        self.valid = Some(valid);
        self
    }

    /// The row of test `ranks` under both protocols (metrics of `ranks.all`, and `filtered`).
    pub fn ranked(
        name: &str,
        ranks: UserRanks,
        train_seconds: f64,
        eval_seconds: f64,
    ) -> RankedRow {
        let mut row = MethodRow::new(name, &ranks.metrics(), train_seconds, eval_seconds);
        row.filtered = Some(ranks.filtered_metrics());
        RankedRow { row, ranks }
    }
}

/// A report row with its per-user test ranks under both protocols (kept for paired intervals).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankedRow {
    pub row: MethodRow,
    pub ranks: UserRanks,
}

/// How a dataset's items fall into categories.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CategorySplit {
    pub count: usize,
    pub largest_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub dataset: String,
    pub preset: String,
    pub users: usize,
    pub items: usize,
    pub interactions: usize,
    /// Item categories and the largest one's share of the items (the category head, rewards and CORP need two
    /// or more; absent in reports written before they were recorded).
    #[serde(default)]
    pub categories: Option<CategorySplit>,
    pub protocol: Protocol,
    pub methods: Vec<MethodRow>,
    /// Validation metrics of the full model for each CORP threshold (`null`: CORP off).
    #[serde(default)]
    pub theta_sweep: Vec<SweepPoint>,
    /// The CORP threshold of the CORP rows (absent in reports written before it was chosen on validation).
    #[serde(default)]
    pub theta: Option<ThetaChoice>,
    /// Validation metrics of the path-aligned model, path-ranked, for each CORP threshold (absent in reports
    /// written before the path-ranked rows had their own sweep).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_theta_sweep: Vec<SweepPoint>,
    /// The CORP threshold of the path-ranked rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_theta: Option<ThetaChoice>,
    /// Pre-training of the REG4Rec model under each compute precision (empty unless
    /// `pipeline.precisions` asks for it).
    #[serde(default)]
    pub precision: Vec<PrecisionPoint>,
    /// The popular head's share of the catalogue behind every row's `long_tail_10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_share: Option<f64>,
    /// The path-ranked model's alignment repeated with seeds on the same pre-trained weights
    /// (`pipeline.align_seeds`; empty with one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_align_seeds: Vec<AlignSeed>,
    /// Headline rows repeated with other seeds (`reg4rec pipeline --seeds N`; empty with one seed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<SeedRow>,
    /// Throughput of every generative training stage.
    #[serde(default)]
    pub training: Vec<TrainingPoint>,
    /// What each alignment stage's validation kept (absent in reports written before it was recorded).
    #[serde(default)]
    pub alignment: Vec<AlignPoint>,
    /// Every stage's wall time (cached stages: the time they took when they ran).
    #[serde(default)]
    pub stages: Vec<StageTime>,
    /// Figures under the run directory, each as SVG and PNG (training curves, the CORP sweep, codebook utilisation).
    #[serde(default)]
    pub figures: Vec<Figure>,
}

/// A row's test metrics under one extra seed (`--seeds`).
pub struct SeedResult {
    /// The report row it repeats.
    pub row: String,
    /// Added to the row's own seeds (0 is the report's row).
    pub seed: u64,
    pub metrics: Headline,
}

/// PARS on the path-ranked model under one alignment seed (`pipeline.align_seeds`): its test metrics and its
/// paired difference to `reg4rec-no-pars-paths` (the same pre-trained weights, not aligned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignSeed {
    /// Added to `align_paths.seed` (0 is the `reg4rec-paths` row).
    pub seed: u64,
    /// The alignment step validation kept (0: the pre-trained weights).
    pub kept_step: u64,
    pub metrics: Headline,
    pub vs_no_pars: Option<PairedDiff>,
}

/// R@10 and N@10 under both protocols.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub recall_10: f64,
    pub ndcg_10: f64,
    pub filtered_recall_10: f64,
    pub filtered_ndcg_10: f64,
}

impl Headline {
    pub fn of(ranks: &UserRanks) -> Self {
        let (all, filtered) = (ranks.metrics(), ranks.filtered_metrics());
        Headline {
            recall_10: all.recall_10,
            ndcg_10: all.ndcg_10,
            filtered_recall_10: filtered.recall_10,
            filtered_ndcg_10: filtered.ndcg_10,
        }
    }

    fn fields(&self) -> [f64; 4] {
        [
            self.recall_10,
            self.ndcg_10,
            self.filtered_recall_10,
            self.filtered_ndcg_10,
        ]
    }

    fn from_fields(f: [f64; 4]) -> Self {
        Headline {
            recall_10: f[0],
            ndcg_10: f[1],
            filtered_recall_10: f[2],
            filtered_ndcg_10: f[3],
        }
    }
}

/// One row's test metrics over repeated seeds: every run, the mean and the sample standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRow {
    pub name: String,
    /// Offsets added to the row's seeds (`pretrain.seed` and `align.seed`, or `sasrec.seed`), in run order;
    /// 0 is the report's own row.
    pub seeds: Vec<u64>,
    pub runs: Vec<Headline>,
    pub mean: Headline,
    /// Sample standard deviation (n - 1) over the runs.
    pub std: Headline,
}

impl SeedRow {
    /// `runs`: (seed offset, metrics); at least one.
    pub fn new(name: &str, runs: Vec<(u64, Headline)>) -> Self {
        let n = runs.len() as f64;
        let mut mean = [0.0; 4];
        for (_, h) in &runs {
            for (m, v) in mean.iter_mut().zip(h.fields()) {
                *m += v / n;
            }
        }
        let mut var = [0.0; 4];
        for (_, h) in &runs {
            for ((s, v), m) in var.iter_mut().zip(h.fields()).zip(mean) {
                *s += (v - m).powi(2) / (n - 1.0).max(1.0);
            }
        }
        SeedRow {
            name: name.to_string(),
            seeds: runs.iter().map(|(k, _)| *k).collect(),
            runs: runs.iter().map(|(_, h)| *h).collect(),
            mean: Headline::from_fields(mean),
            std: Headline::from_fields(var.map(f64::sqrt)),
        }
    }
}

/// One pre-training precision: its speed and the quality of its model (pre-trained, CORP on, test split).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrecisionPoint {
    pub precision: String,
    pub targets_per_s: f64,
    pub best_valid_loss: Option<f64>,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    pub train_seconds: f64,
}

/// How fast one generative training stage trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingPoint {
    pub stage: String,
    /// Pre-training: target items (non-padding positions) per second; alignment: training contexts (one
    /// target item, `group_size` sampled paths each) per second.
    pub per_second: f64,
    /// `targets` or `contexts`.
    pub unit: String,
    /// Epochs (pre-training) or GRPO steps (alignment).
    pub iterations: u64,
    pub train_seconds: f64,
    pub valid_seconds: f64,
}

/// One alignment stage's model selection on validation: the pre-trained model (step 0), the kept (best) step
/// and the last step, so the report shows the aligned model's own numbers even when selection keeps step 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignPoint {
    pub stage: String,
    /// GRPO steps run.
    pub steps: u64,
    /// The step whose weights the stage keeps (0: the pre-trained model).
    pub kept_step: u64,
    /// Validation Recall@10 / NDCG@10 at step 0 and at the last step, and Recall@10 of the kept step.
    pub step0: [f64; 2],
    pub last: [f64; 2],
    pub kept_recall_10: f64,
}

/// The CORP threshold of the rows that use CORP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThetaChoice {
    /// `null`: CORP off.
    pub theta: Option<f32>,
    /// Chosen on the validation split from the sweep (else the config's `infer.theta`).
    pub on_validation: bool,
}

/// One point of the CORP threshold sweep on the validation split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub theta: Option<f32>,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    pub pruned_paths: u64,
}

impl Report {
    /// Writes `report.json` and `report.md` into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json_atomic(&dir.join("report.json"), self)?;
        write_atomic(&dir.join("report.md"), self.markdown().as_bytes())?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        self.md_header(&mut s);
        self.md_test_table(&mut s);
        self.md_filtered_table(&mut s);
        self.md_long_tail(&mut s);
        self.md_stops(&mut s);
        self.md_seeds(&mut s);
        self.md_align_seeds(&mut s);
        self.md_paired(&mut s);
        self.md_anchors(&mut s);
        self.md_precision(&mut s);
        self.md_theta_sweep(&mut s);
        self.md_training(&mut s);
        self.md_alignment(&mut s);
        self.md_stages(&mut s);
        self.md_figures(&mut s);
        s
    }

    /// The title and the protocol paragraph.
    fn md_header(&self, s: &mut String) {
        s.push_str(&format!(
            "# reg4rec report: {} ({} preset)\n\n{} users, {} items, {} interactions{}. Protocol: {}; {}; \
             history items {}filtered; ties: {}. History: {}.\n\nTest split (the two `vs reg4rec` columns: each row's relative change against the full model):\n\n",
            self.dataset,
            self.preset,
            self.users,
            self.items,
            self.interactions,
            self.categories.map_or(String::new(), |c| format!(
                ", {} categories (the largest holds {:.1}% of the items{})",
                c.count,
                100.0 * c.largest_share,
                if c.count < 2 { "; the category head, rewards and CORP carry no signal" } else { "" }
            )),
            self.protocol.split,
            self.protocol.ranking,
            if self.protocol.filter_history { "" } else { "not " },
            self.protocol.tie_breaking,
            self.protocol.history,
        ));
    }

    /// The test table, every item ranked.
    fn md_test_table(&self, s: &mut String) {
        let full = self.methods.iter().find(|m| m.name == "reg4rec");
        s.push_str(
            "| method | R@5 | N@5 | R@10 | N@10 | R@20 | N@20 | R@10 vs reg4rec | N@10 vs reg4rec | train s | eval s |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for m in &self.methods {
            let (dr, dn) = match full {
                Some(f) if m.name != f.name => (
                    relative_change(m.test.recall_10, f.test.recall_10),
                    relative_change(m.test.ndcg_10, f.test.ndcg_10),
                ),
                _ => ("".to_string(), "".to_string()),
            };
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {dr} | {dn} | {:.1} | {:.1} |\n",
                m.name,
                m.test.recall_5,
                m.test.ndcg_5,
                m.test.recall_10,
                m.test.ndcg_10,
                m.test.recall_20,
                m.test.ndcg_20,
                m.train_seconds,
                m.eval_seconds
            ));
        }
    }

    /// The test table under the history-filtered protocol.
    fn md_filtered_table(&self, s: &mut String) {
        if self.methods.iter().any(|m| m.filtered.is_some()) {
            s.push_str(
                "\nTest split, history-filtered protocol (the same lists and rankings with each user's whole \
                 history removed before the cut-offs, a target that repeats a history item a miss; the protocol \
                 of the published filtered rows; a generative row filters the list its search produced, so it \
                 gains no item beyond that list; the last two columns: minus sasrec-ce on the same users, \
                 paired bootstrap 95% intervals):\n\n\
                 | method | R@5 | N@5 | R@10 | N@10 | R@20 | N@20 | R@10 vs sasrec-ce [95%] | N@10 vs sasrec-ce [95%] |\n\
                 |---|---|---|---|---|---|---|---|---|\n",
            );
            for m in &self.methods {
                let Some(f) = &m.filtered else { continue };
                let (dr, dn) = m.vs_sasrec_ce.map_or((String::new(), String::new()), |d| {
                    (
                        format!(
                            "{:+.4} [{:+.4}, {:+.4}]",
                            d.recall_10, d.recall_10_ci95[0], d.recall_10_ci95[1]
                        ),
                        format!(
                            "{:+.4} [{:+.4}, {:+.4}]",
                            d.ndcg_10, d.ndcg_10_ci95[0], d.ndcg_10_ci95[1]
                        ),
                    )
                });
                s.push_str(&format!(
                    "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {dr} | {dn} |\n",
                    m.name, f.recall_5, f.ndcg_5, f.recall_10, f.ndcg_10, f.recall_20, f.ndcg_20
                ));
            }
        }
    }

    /// The long tail's share of each row's lists.
    fn md_long_tail(&self, s: &mut String) {
        if self.methods.iter().any(|m| m.long_tail_10.is_some()) {
            s.push_str(&format!(
                "\nThe long tail's share of each top 10 (items outside the most popular {:.0}% of the catalogue by \
                 training interactions; mean over users; every item ranked / history filtered):\n\n\
                 | method | tail@10 | tail@10 filtered |\n|---|---|---|\n",
                100.0 * self.head_share.unwrap_or(0.2)
            ));
            for m in &self.methods {
                if let Some(t) = m.long_tail_10 {
                    s.push_str(&format!(
                        "| {} | {:.4} | {:.4} |\n",
                        m.name, t.all, t.filtered
                    ));
                }
            }
        }
    }

    /// Why each baseline's training stopped.
    fn md_stops(&self, s: &mut String) {
        let stops: Vec<String> = self
            .methods
            .iter()
            .filter_map(|m| {
                m.stopped.as_ref().map(|t| {
                    format!(
                        "{} trained {} epochs, restored epoch {}, stopped by {}",
                        m.name, t.epochs, t.best_epoch, t.reason
                    )
                })
            })
            .collect();
        if !stops.is_empty() {
            s.push_str(&format!("\nBaseline training: {}.\n", stops.join("; ")));
        }
    }

    /// The rows trained again with other seeds.
    fn md_seeds(&self, s: &mut String) {
        if !self.seeds.is_empty() {
            s.push_str(
                "\nSeeds (the row trained again with other seeds, everything else kept; mean ± sample standard \
                 deviation over the runs):\n\n\
                 | row | runs | R@10 | N@10 | filtered R@10 | filtered N@10 |\n|---|---|---|---|---|---|\n",
            );
            for r in &self.seeds {
                let cell = |m: f64, sd: f64| format!("{m:.4} ± {sd:.4}");
                s.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.name,
                    r.runs.len(),
                    cell(r.mean.recall_10, r.std.recall_10),
                    cell(r.mean.ndcg_10, r.std.ndcg_10),
                    cell(r.mean.filtered_recall_10, r.std.filtered_recall_10),
                    cell(r.mean.filtered_ndcg_10, r.std.filtered_ndcg_10),
                ));
            }
        }
    }

    /// PARS on the path-ranked model under each alignment seed, against no-pars-paths.
    fn md_align_seeds(&self, s: &mut String) {
        if self.path_align_seeds.len() < 2 {
            return;
        }
        s.push_str(
            "\nPARS on the path-ranked model, aligned again with other seeds on the same pre-trained weights \
             (`pipeline.align_seeds`); each minus reg4rec-no-pars-paths on the same test users, paired bootstrap \
             95% intervals:\n\n\
             | alignment seed | kept step | R@10 | N@10 | R@10 diff [95%] | N@10 diff [95%] |\n\
             |---|---|---|---|---|---|\n",
        );
        for a in &self.path_align_seeds {
            let diff = |d: f64, ci: [f64; 2]| format!("{d:+.4} [{:+.4}, {:+.4}]", ci[0], ci[1]);
            let (dr, dn) = a.vs_no_pars.map_or(("-".into(), "-".into()), |d| {
                (
                    diff(d.recall_10, d.recall_10_ci95),
                    diff(d.ndcg_10, d.ndcg_10_ci95),
                )
            });
            s.push_str(&format!(
                "| {} | {} | {:.4} | {:.4} | {dr} | {dn} |\n",
                a.seed, a.kept_step, a.metrics.recall_10, a.metrics.ndcg_10
            ));
        }
        // The mean over the seeds whose difference could be computed.
        let diffs: Vec<PairedDiff> = self
            .path_align_seeds
            .iter()
            .filter_map(|a| a.vs_no_pars)
            .collect();
        let n = diffs.len().max(1) as f64;
        let r: f64 = diffs.iter().map(|d| d.recall_10).sum::<f64>() / n;
        let nd: f64 = diffs.iter().map(|d| d.ndcg_10).sum::<f64>() / n;
        s.push_str(&format!("| mean | | | | {r:+.4} | {nd:+.4} |\n"));
    }

    /// The paired intervals against reg4rec and reg4rec-paths.
    fn md_paired(&self, s: &mut String) {
        let diffs: Vec<(&str, PairedDiff)> = self
            .methods
            .iter()
            .filter_map(|m| m.vs_reg4rec.map(|d| (m.name.as_str(), d)))
            .collect();
        diff_table(
            s,
            &format!(
                "Each row minus reg4rec on the same test users, with paired bootstrap 95% intervals ({} \
                 resamples of the users; an interval that excludes 0 is a difference the test users support):",
                BOOTSTRAP_RESAMPLES
            ),
            &diffs,
        );
        let path_diffs: Vec<(&str, PairedDiff)> = self
            .methods
            .iter()
            .filter_map(|m| m.vs_reg4rec_paths.map(|d| (m.name.as_str(), d)))
            .collect();
        diff_table(
            s,
            "Path-ranked rows (`*-paths`: the list ordered by the reasoning path's score alone, no item head and \
             no dense lookahead) minus reg4rec-paths on the same test users, paired bootstrap 95% intervals:",
            &path_diffs,
        );
    }

    /// Published numbers on the same dataset.
    fn md_anchors(&self, s: &mut String) {
        if let Some(anchors) = published_anchors(&self.dataset) {
            s.push_str(
                "\nPublished anchors on the same dataset (test; R@5 / N@5 / R@10 / N@10), not from this run and \
                 each under its paper's own protocol (full ranking or not, history filtered or not), so they place \
                 this run's rows only roughly:\n\n| method | R@5 | N@5 | R@10 | N@10 |\n|---|---|---|---|---|\n",
            );
            for (name, m) in anchors {
                s.push_str(&format!(
                    "| {name} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                    m[0], m[1], m[2], m[3]
                ));
            }
        }
    }

    /// The pre-training precision table.
    fn md_precision(&self, s: &mut String) {
        if !self.precision.is_empty() {
            s.push_str(
                "\nPre-training precision (REG4Rec model without alignment, CORP on, test split):\n\n\
                 | precision | targets/s | best valid loss | R@10 | N@10 | train s |\n|---|---|---|---|---|---|\n",
            );
            for p in &self.precision {
                let loss = p.best_valid_loss.map_or("-".into(), |l| format!("{l:.4}"));
                s.push_str(&format!(
                    "| {} | {:.1} | {loss} | {:.4} | {:.4} | {:.1} |\n",
                    p.precision, p.targets_per_s, p.recall_10, p.ndcg_10, p.train_seconds
                ));
            }
        }
    }

    /// The CORP threshold sweeps (hybrid and path-ranked) and the thresholds chosen.
    fn md_theta_sweep(&self, s: &mut String) {
        sweep_table(
            s,
            "full model, hybrid lists",
            "reg4rec, no-mpq, no-pars, no-msra, last-step, path-aligned",
            &self.theta_sweep,
            self.theta.as_ref(),
        );
        sweep_table(
            s,
            "path-aligned model, path-ranked lists",
            "the path-ranked rows but no-corp-paths and tiger-paths",
            &self.path_theta_sweep,
            self.path_theta.as_ref(),
        );
    }

    /// Training throughput.
    fn md_training(&self, s: &mut String) {
        if !self.training.is_empty() {
            s.push_str(
                "\nTraining throughput (per-user layout; alignment in contexts):\n\n\
                 | stage | per second | unit | epochs / steps | train s | valid s |\n|---|---|---|---|---|---|\n",
            );
            for t in &self.training {
                s.push_str(&format!(
                    "| {} | {:.0} | {} | {} | {:.1} | {:.1} |\n",
                    t.stage, t.per_second, t.unit, t.iterations, t.train_seconds, t.valid_seconds
                ));
            }
        }
    }

    /// What each alignment kept on validation.
    fn md_alignment(&self, s: &mut String) {
        if !self.alignment.is_empty() {
            s.push_str(
                "\nAlignment on validation (`align.valid_users` seeded users, the `[align.valid]` search; step 0 is \
                 the pre-trained model, and each stage keeps its best step; R@10 / N@10):\n\n\
                 | stage | steps | step 0 | last step | kept step | kept R@10 |\n|---|---|---|---|---|---|\n",
            );
            for a in &self.alignment {
                s.push_str(&format!(
                    "| {} | {} | {:.4} / {:.4} | {:.4} / {:.4} | {} | {:.4} |\n",
                    a.stage,
                    a.steps,
                    a.step0[0],
                    a.step0[1],
                    a.last[0],
                    a.last[1],
                    a.kept_step,
                    a.kept_recall_10
                ));
            }
        }
    }

    /// Stage wall times.
    fn md_stages(&self, s: &mut String) {
        if !self.stages.is_empty() {
            let total: f64 = self.stages.iter().map(|t| t.seconds).sum();
            s.push_str(&format!(
                "\nStage wall times (seconds when each stage ran; {total:.0} s in all, {:.1} min):\n\n\
                 | stage | seconds |\n|---|---|\n",
                total / 60.0
            ));
            for t in &self.stages {
                s.push_str(&format!("| {} | {:.1} |\n", t.name, t.seconds));
            }
        }
    }

    /// The figures.
    fn md_figures(&self, s: &mut String) {
        if !self.figures.is_empty() {
            s.push_str("\nFigures:\n\n");
            for f in &self.figures {
                s.push_str(&format!(
                    "![{}]({}) ([PNG]({}))\n\n",
                    f.caption, f.file, f.png
                ));
            }
        }
    }
}

/// `value` relative to `reference` as a signed percentage (`+5.0%`), or `n/a` when the reference is 0.
fn relative_change(value: f64, reference: f64) -> String {
    if reference > 0.0 {
        format!("{:+.1}%", (value / reference - 1.0) * 100.0)
    } else {
        "n/a".to_string()
    }
}

/// Published numbers on the Amazon 2014 5-core data with leave-one-out and full ranking (the spec's section 7).
fn published_anchors(dataset: &str) -> Option<&'static [(&'static str, [f64; 4])]> {
    match dataset {
        "amazon-beauty" => Some(&[
            (
                "SASRec (BCE, TIGER's table)",
                [0.0387, 0.0249, 0.0605, 0.0318],
            ),
            ("S3-Rec", [0.0387, 0.0244, 0.0647, 0.0327]),
            ("TIGER", [0.0454, 0.0321, 0.0648, 0.0384]),
            (
                "SASRec, full cross-entropy (public re-runs)",
                [0.0601, 0.0420, 0.0859, 0.0503],
            ),
        ]),
        _ => None,
    }
}

/// A markdown table of paired differences under `header`, when there are any.
fn diff_table(s: &mut String, header: &str, diffs: &[(&str, PairedDiff)]) {
    if diffs.is_empty() {
        return;
    }
    s.push_str(&format!(
        "\n{header}\n\n| method | R@10 diff | 95% interval | N@10 diff | 95% interval |\n|---|---|---|---|---|\n"
    ));
    for (name, d) in diffs {
        s.push_str(&format!(
            "| {name} | {:+.4} | [{:+.4}, {:+.4}] | {:+.4} | [{:+.4}, {:+.4}] |\n",
            d.recall_10,
            d.recall_10_ci95[0],
            d.recall_10_ci95[1],
            d.ndcg_10,
            d.ndcg_10_ci95[0],
            d.ndcg_10_ci95[1]
        ));
    }
}

/// One CORP sweep's table: `what` was swept; `rows` use the chosen threshold.
fn sweep_table(
    s: &mut String,
    what: &str,
    rows: &str,
    sweep: &[SweepPoint],
    chosen: Option<&ThetaChoice>,
) {
    if sweep.is_empty() {
        return;
    }
    s.push_str(&format!(
        "\nCORP threshold sweep ({what}, validation split):\n\n"
    ));
    if let Some(c) = chosen {
        let t = c.theta.map_or("off".to_string(), |t| format!("{t:.2}"));
        s.push_str(&match c.on_validation {
            true => format!(
                "The rows that use it ({rows}) ran with theta = {t}: the point below with the highest \
                 Recall@10 (CORP off included), applied to the test split.\n\n"
            ),
            false => format!("The rows that use CORP ran with the configured theta = {t}.\n\n"),
        });
    }
    s.push_str("| theta | R@10 | N@10 | pruned paths |\n|---|---|---|---|\n");
    for p in sweep {
        let theta = p.theta.map_or("off".to_string(), |t| format!("{t:.2}"));
        s.push_str(&format!(
            "| {theta} | {:.4} | {:.4} | {} |\n",
            p.recall_10, p.ndcg_10, p.pruned_paths
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::relative_change;

    #[test]
    fn relative_change_is_a_signed_percentage_of_the_reference() {
        assert_eq!(relative_change(0.0475, 0.05), "-5.0%");
        assert_eq!(relative_change(0.0583, 0.05), "+16.6%");
        assert_eq!(relative_change(0.05, 0.05), "+0.0%");
        assert_eq!(relative_change(0.01, 0.0), "n/a");
    }
}
