//! Explanations: a recommended item's reasoning path with human-readable names, for `reg4rec recommend
//! --explain`. Each step shows the token chosen (`<t{r}_{j}>`), its log-probability, the categories the model
//! predicted at that step with their probabilities, and the JS divergence CORP checked.

use crate::beam::Recommendation;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// One recommended item, explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub item: u32,
    /// The item's original id, when known.
    pub item_id: Option<String>,
    /// The ranking score: `path_score + dense_weight * item_score` (the path score without an item head).
    pub score: f32,
    /// Sum of the path's log-probabilities.
    pub path_score: f32,
    /// The item head's score of the item (its logit: the log-probability up to a constant per user), when the
    /// model has one.
    pub item_score: Option<f32>,
    /// The CORP threshold the divergences were checked against (`null`: CORP off).
    pub theta: Option<f32>,
    pub steps: Vec<ExplainStep>,
}

/// One step of an explained path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainStep {
    pub codebook: u16,
    pub code: u16,
    /// `<t{codebook}_{code}>`.
    pub token: String,
    pub logp: f32,
    /// Most likely categories at this step, most likely first.
    pub categories: Vec<CategoryProb>,
    /// JS divergence to the previous step's category distribution (`null` at the first step).
    pub js: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryProb {
    pub category: String,
    pub prob: f32,
}

impl Explanation {
    /// Names the tokens and categories of `rec` (category indices outside `category_names` are shown as
    /// `#index`).
    pub fn new(
        rec: &Recommendation,
        category_names: &[String],
        item_ids: Option<&[String]>,
        theta: Option<f32>,
    ) -> Self {
        Explanation {
            item: rec.item,
            item_id: item_ids.and_then(|ids| ids.get(rec.item as usize).cloned()),
            score: rec.score,
            path_score: rec.path_score,
            item_score: rec.item_score,
            theta,
            steps: rec
                .path
                .iter()
                .map(|s| ExplainStep {
                    codebook: s.token.codebook,
                    code: s.token.code,
                    token: s.token.to_string(),
                    logp: s.logp,
                    categories: s
                        .categories
                        .iter()
                        .map(|&(c, p)| CategoryProb {
                            category: category_names
                                .get(c as usize)
                                .cloned()
                                .unwrap_or_else(|| format!("#{c}")),
                            prob: p,
                        })
                        .collect(),
                    js: s.js,
                })
                .collect(),
        }
    }

    /// The tokens of the path in generation order.
    pub fn tokens(&self) -> Vec<(u16, u16)> {
        self.steps.iter().map(|s| (s.codebook, s.code)).collect()
    }

    /// A compact one-line rendering: `<t2_5> (Lipstick 0.61, Makeup 0.20) -> <t0_17> [js 0.012] (...) ...`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, s) in self.steps.iter().enumerate() {
            if k > 0 {
                out.push_str(" -> ");
            }
            out.push_str(&s.token);
            if let Some(js) = s.js {
                let _ = write!(out, " [js {js:.3}]");
            }
            if !s.categories.is_empty() {
                let cats: Vec<String> = s
                    .categories
                    .iter()
                    .map(|c| format!("{} {:.2}", c.category, c.prob))
                    .collect();
                let _ = write!(out, " ({})", cats.join(", "));
            }
        }
        out
    }
}
