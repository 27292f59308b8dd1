//! The category head along the way to the target. For a spread sample of users
//! of a split, the target item's tokens are fed in the order CRSS picks (at each step the target's open token the
//! model finds most likely) and at every step the category distribution the model predicts there is compared
//! with the target's category: accuracy of its top category, the probability it gives the target's category, and
//! the Jensen-Shannon divergence to the previous step (what CORP thresholds). The same numbers are split by
//! whether the beam search (CORP off) reaches the target at all, and set beside the accuracy of always answering
//! the most frequent target category. Last, for CORP thresholds 0.02..0.10: the share of users whose target path
//! itself has a divergence above the threshold at a step CORP checks (the target CORP would prune).
//!
//! ```text
//! cargo run --release -p reg4rec-benches --example category_steps -- MODEL_DIR valid|test [--users 2000] [--beam 40]
//! ```
//! Prints one JSON object.

use anyhow::{bail, Result};
use reg4rec_data::split::{LeaveOneOut, Stage};
use reg4rec_infer::corp::js_divergence;
use reg4rec_infer::{BeamSearch, InferConfig, ModelScorer, StepInput, StepScorer};
use reg4rec_recommender::Recommender;
use reg4rec_tokenizer::ItemIndex;
use serde_json::json;

/// Per-step sums over users.
#[derive(Default, Clone)]
struct Steps {
    users: usize,
    correct: Vec<usize>,
    p_target: Vec<f64>,
    js: Vec<f64>,
}

impl Steps {
    fn add(&mut self, correct: &[bool], p: &[f64], js: &[f64]) {
        if self.correct.is_empty() {
            self.correct = vec![0; correct.len()];
            self.p_target = vec![0.0; p.len()];
            self.js = vec![0.0; js.len()];
        }
        self.users += 1;
        for (k, &c) in correct.iter().enumerate() {
            self.correct[k] += c as usize;
            self.p_target[k] += p[k];
        }
        for (k, &j) in js.iter().enumerate() {
            self.js[k] += j;
        }
    }

    fn report(&self) -> serde_json::Value {
        let n = self.users.max(1) as f64;
        json!({
            "users": self.users,
            "top_category_accuracy": self.correct.iter().map(|&c| c as f64 / n).collect::<Vec<_>>(),
            "p_target_category": self.p_target.iter().map(|&p| p / n).collect::<Vec<_>>(),
            "js_to_previous_step": self.js.iter().map(|&j| j / n).collect::<Vec<_>>(),
        })
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: category_steps MODEL_DIR valid|test [--users N] [--beam B]");
    }
    let stage: Stage = args[1].parse().map_err(anyhow::Error::msg)?;
    let (mut users, mut beam) = (2000usize, 40usize);
    let mut i = 2;
    while i + 1 < args.len() {
        match args[i].as_str() {
            "--users" => users = args[i + 1].parse()?,
            "--beam" => beam = args[i + 1].parse()?,
            other => bail!("unknown option {other}"),
        }
        i += 2;
    }
    let rec = Recommender::load(&args[0])?;
    let ds = rec.training_data()?;
    let split = LeaveOneOut::new(&ds);
    let stride = (split.n_users() / users.max(1)).max(1);
    let sample: Vec<usize> = (0..split.n_users()).step_by(stride).take(users).collect();
    let (model, codes) = (rec.model(), rec.codes());
    let (m, d) = (codes.m, codes.d);
    let index = ItemIndex::new(codes)?;
    let cfg = InferConfig {
        beam,
        top_n: 20,
        theta: None,
        ..rec.infer().clone()
    };
    let search = BeamSearch::new(&index, &cfg)?;
    let mut scorer = ModelScorer::new(model, codes)?;
    let l = model.config().history_len;
    let (mut all, mut reached, mut missed) = (Steps::default(), Steps::default(), Steps::default());
    let mut target_cats = vec![0usize; ds.n_categories()];
    let mut checked: Vec<f64> = Vec::with_capacity(sample.len());
    let _guard = tch::no_grad_guard();
    for &u in &sample {
        let history = split.history(u, stage, l);
        let target = split.target(u, stage);
        let cat = ds.item_category[target as usize] as usize;
        target_cats[cat] += 1;
        let found = search.run(&mut scorer, &[history.as_slice()], false)?.lists[0]
            .iter()
            .any(|r| r.item == target);
        // Teacher-forced along the target's tokens in the order CRSS picks.
        scorer.begin(&[history.as_slice()])?;
        let mut open: Vec<u32> = codes
            .tuple(target as usize)
            .iter()
            .enumerate()
            .map(|(r, &c)| (r * d) as u32 + c as u32)
            .collect();
        let mut prefix: Vec<u32> = Vec::with_capacity(m);
        let (mut correct, mut p, mut js) = (Vec::new(), Vec::new(), Vec::new());
        let mut prev: Option<Vec<f32>> = None;
        for _ in 0..m {
            let out = scorer.step(StepInput {
                rows: &[0],
                len: prefix.len(),
                prefixes: &prefix,
            })?;
            let dist = out.category;
            let top = (0..dist.len())
                .max_by(|&a, &b| dist[a].total_cmp(&dist[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            correct.push(top == cat);
            p.push(dist[cat] as f64);
            if let Some(q) = &prev {
                js.push(js_divergence(&dist, q) as f64);
            }
            let (j, &next) = open
                .iter()
                .enumerate()
                .max_by(|a, b| out.logp[*a.1 as usize].total_cmp(&out.logp[*b.1 as usize]))
                .expect("an open token");
            prefix.push(next);
            open.remove(j);
            prev = Some(dist);
        }
        // js[k] is the divergence at step k + 2 (1-based); CORP checks steps >= corp_from_step.
        let from = rec.infer().corp_from_step;
        checked.push(
            js.iter()
                .enumerate()
                .filter(|(k, _)| k + 2 >= from)
                .map(|(_, &j)| j)
                .fold(0.0, f64::max),
        );
        all.add(&correct, &p, &js);
        if found {
            reached.add(&correct, &p, &js);
        } else {
            missed.add(&correct, &p, &js);
        }
    }
    // CORP's check on the target's own path: the share of users whose target path has a divergence above theta
    // at a checked step (from `infer.corp_from_step`), i.e. whose target CORP would prune there.
    let from = rec.infer().corp_from_step;
    let thetas = [0.02f64, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10];
    let pruned: Vec<serde_json::Value> = thetas
        .iter()
        .map(|&t| {
            let n = checked.iter().filter(|&&mx| mx > t).count();
            json!({"theta": t, "target_paths_pruned": n as f64 / checked.len().max(1) as f64})
        })
        .collect();
    let majority = *target_cats.iter().max().unwrap_or(&0) as f64 / sample.len().max(1) as f64;
    let out = json!({
        "model": args[0],
        "split": args[1],
        "beam": beam,
        "categories": ds.n_categories(),
        "majority_category_accuracy": majority,
        "corp_from_step": from,
        "corp_on_the_target_path": pruned,
        "all": all.report(),
        "target_reached_by_beam": reached.report(),
        "target_missed_by_beam": missed.report(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
