//! Inference settings: beam width, list length, the CORP threshold and evaluation options.

use crate::error::{InferError, Result};
use serde::{Deserialize, Serialize};

/// What orders the items a search generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// The path score plus `dense_weight` times the model's dense item score, with the dense lookahead when
    /// `dense_lookahead` is on (models with an item head; best quality at moderate catalogue sizes, cost
    /// linear in the catalogue per user).
    Hybrid,
    /// The reasoning path alone (the method as published): the beam keeps and the list orders items by their
    /// path score; no item-level score is read (`dense_weight` and `dense_lookahead` are ignored), so the cost
    /// of a search does not grow with the catalogue and CRSS, PARS and CORP decide the list.
    Paths,
}

impl std::str::FromStr for Rank {
    type Err = InferError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hybrid" => Ok(Rank::Hybrid),
            "paths" | "path" => Ok(Rank::Paths),
            _ => Err(InferError::config(
                "rank",
                format!("`{s}`: expected `paths` or `hybrid`"),
            )),
        }
    }
}

/// How to search and evaluate. Every field has a documented default; `theta: null` in JSON turns CORP off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferConfig {
    /// Beam width: partial paths kept per user after every step. Default 20.
    pub beam: usize,
    /// Items returned per user, best first. The last step keeps every completion of the final beam, so this may
    /// exceed `beam`. Default 20 (covers the @20 metrics).
    pub top_n: usize,
    /// CORP threshold on the Jensen-Shannon divergence (natural log, so in `[0, ln 2]`) between a path's
    /// category distributions at consecutive steps; a path above it is pruned and rolled back. `None` turns
    /// CORP off. Default `Some(0.06)` (the paper's sweep is 0.04..0.08 with a peak near 0.06). In a config
    /// file or `--set`, `"off"` (or JSON `null`) turns CORP off.
    #[serde(deserialize_with = "theta_or_off", serialize_with = "theta_out")]
    pub theta: Option<f32>,
    /// First step (1-based) whose category distribution CORP compares with the previous step's. Step k's
    /// distribution is the one the decoder predicts where it emits token k, so step 1's comes from the history
    /// alone (before any token) and is naturally broad, while step 2's already knows one token of the item.
    /// Default 3: CORP compares consecutive *generated* steps (2 vs 3, 3 vs 4, ...); 2 also compares the
    /// history-only prediction with step 2, which on a trained model prunes most paths (ml-100k, 300 users,
    /// theta 0.06: Recall@20 0.147 without CORP, 0.030 from step 2, 0.140 from step 3).
    pub corp_from_step: usize,
    /// Rollback rounds per step: after a round of pruning, the pruned slots are refilled from the next-best
    /// candidates of the expansion that produced them, and the refills are checked in turn. Slots still pruned
    /// after this many rounds stay empty for the rest of the search. Default 4.
    pub max_rollback_rounds: usize,
    /// Users searched together in one batch by [`crate::evaluate`]. Default 256.
    pub batch_users: usize,
    /// Never generate the user's own history items (a decoding constraint: the search only reaches items
    /// outside the history, so the list still fills up). Default false (the spec's
    /// protocol: history items are not filtered; every report says which). The pipeline evaluates every row
    /// under one protocol: it requires `sasrec.exclude_history` to agree.
    pub exclude_history: bool,
    /// Categories listed per step in explanations. Default 3.
    pub explain_categories: usize,
    /// Weight of the model's dense item score (the item head's logit: its log-probability up to a constant per
    /// user, so the same order) added to each generated item's path score when ranking the beam's items (models
    /// with an item head; 0 ranks by path score alone). Default 100: the item head
    /// orders the generated items and the path score breaks near-ties (amazon-beauty validation, beam 40, CORP
    /// off: R@10 / N@10 .0684 / .0359 at 3, .0722 / .0383 at 10, .0732 / .0389 at 100).
    pub dense_weight: f32,
    /// Rank partial paths by what their best completion could score: `path score + dense_weight * the
    /// highest dense item score among the items the path can still reach`, instead of the path score alone
    /// (needs a scorer with dense scores of every item, [`crate::StepScorer::all_item_scores`], and
    /// `dense_weight > 0`). The beam then keeps the prefixes that lead to the items the final ranking prefers;
    /// at the last step the two rankings are the same. The search reads each user's dense score of every item
    /// once, so its cost grows with the catalog (a pass over the items per user). Default true: on
    /// amazon-beauty (cpu preset, beam 40, CORP off, 2,000 validation users) it lifted the generated list's
    /// validation R@10 / N@10 from .0805 / .0424 to .0870 / .0443, the exact ranking's .0865 / .0442
    /// (docs/lab/2026-12-02-dense-lookahead.md).
    pub dense_lookahead: bool,
    /// What orders the generated items ([`Rank`]): `hybrid` (path score, item head and lookahead as
    /// `dense_weight` and `dense_lookahead` say) or `paths` (the path score alone). Default `hybrid`.
    pub rank: Rank,
    /// Decode the codebooks in their fixed order 0, 1, ..., M - 1 instead of letting every open codebook compete
    /// at each step (CRSS's step selection): the `no-crss` ablation of a model with unordered codes. Models
    /// with ordered codes (TIGER) always decode in order. Default false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fixed_order: bool,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            beam: 20,
            top_n: 20,
            theta: Some(0.06),
            corp_from_step: 3,
            max_rollback_rounds: 4,
            batch_users: 256,
            exclude_history: false,
            explain_categories: 3,
            dense_weight: 100.0,
            dense_lookahead: true,
            rank: Rank::Hybrid,
            fixed_order: false,
        }
    }
}

impl InferConfig {
    pub fn validate(&self) -> Result<()> {
        if self.beam == 0 {
            return Err(InferError::config("beam", "must be at least 1"));
        }
        if self.top_n == 0 {
            return Err(InferError::config("top_n", "must be at least 1"));
        }
        if let Some(t) = self.theta {
            if !(t.is_finite() && t >= 0.0) {
                return Err(InferError::config(
                    "theta",
                    format!(
                        "{t} is not a finite non-negative divergence (use null to turn CORP off)"
                    ),
                ));
            }
        }
        if self.corp_from_step < 2 {
            return Err(InferError::config(
                "corp_from_step",
                "must be at least 2 (step 1 has no previous step)",
            ));
        }
        if !(self.dense_weight.is_finite() && self.dense_weight >= 0.0) {
            return Err(InferError::config(
                "dense_weight",
                format!("{} must be a finite number >= 0", self.dense_weight),
            ));
        }
        if self.batch_users == 0 {
            return Err(InferError::config("batch_users", "must be at least 1"));
        }
        Ok(())
    }

    /// The settings the search runs with: under [`Rank::Paths`] no dense score is read (`dense_weight` 0, no
    /// lookahead); otherwise these settings.
    pub fn effective(&self) -> InferConfig {
        let mut c = self.clone();
        if c.rank == Rank::Paths {
            c.dense_weight = 0.0;
            c.dense_lookahead = false;
        }
        c
    }

    /// These settings as a model of `mode` is searched: a TIGER model (ordered codes) without CORP, which
    /// prunes paths over unordered codes. The one place the model kind's rule lives.
    pub fn for_mode(&self, mode: reg4rec_model::config::Mode) -> InferConfig {
        let mut c = self.clone();
        if mode == reg4rec_model::config::Mode::Tiger {
            c.theta = None;
        }
        c
    }

    /// Parses a CLI theta: a number, or `off` / `none` for CORP off.
    pub fn parse_theta(s: &str) -> Result<Option<f32>> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "null" => Ok(None),
            v => v.parse::<f32>().map(Some).map_err(|e| {
                InferError::config("theta", format!("`{s}`: {e} (expected a number or `off`)"))
            }),
        }
    }
}

/// `theta` written as a number, or the word `off` when CORP is off: TOML has no null, and a field left out
/// reads back as the default threshold, so a configuration written to a file (a run's `config.toml`, the
/// ranks' launch configuration) would turn CORP back on.
fn theta_out<S: serde::Serializer>(
    theta: &Option<f32>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match theta {
        Some(t) => s.serialize_f32(*t),
        None => s.serialize_str("off"),
    }
}

/// `theta` as a number, `null`, or the word `off` / `none` (TOML has no null).
fn theta_or_off<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Theta {
        Number(f32),
        Word(String),
    }
    match Option::<Theta>::deserialize(d)? {
        None => Ok(None),
        Some(Theta::Number(t)) => Ok(Some(t)),
        Some(Theta::Word(w)) => InferConfig::parse_theta(&w).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corp_off_survives_a_toml_file() {
        let off = InferConfig {
            theta: None,
            ..InferConfig::default()
        };
        let text = toml::to_string(&off).unwrap();
        assert!(text.contains("theta = \"off\""), "{text}");
        let back: InferConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.theta, None);
        let json: InferConfig =
            serde_json::from_str(&serde_json::to_string(&off).unwrap()).unwrap();
        assert_eq!(json, off);
    }

    #[test]
    fn defaults_round_trip_and_validate() {
        let c = InferConfig::default();
        c.validate().unwrap();
        let back: InferConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let partial: InferConfig = serde_json::from_str(r#"{"beam": 50, "theta": null}"#).unwrap();
        assert_eq!((partial.beam, partial.theta, partial.top_n), (50, None, 20));
        let off: InferConfig =
            serde_json::from_str(r#"{"theta": "off", "rank": "paths"}"#).unwrap();
        assert_eq!((off.theta, off.rank), (None, Rank::Paths));
        let t: InferConfig = serde_json::from_str(r#"{"theta": 0.04}"#).unwrap();
        assert_eq!(t.theta, Some(0.04));
        assert!(serde_json::from_str::<InferConfig>(r#"{"theta": "often"}"#).is_err());
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = InferConfig {
            beam: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`beam`"));
        let e = InferConfig {
            theta: Some(f32::NAN),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`theta`"));
        assert!(serde_json::from_str::<InferConfig>(r#"{"beem": 3}"#).is_err());
        assert_eq!(InferConfig::parse_theta("off").unwrap(), None);
        assert_eq!(InferConfig::parse_theta("0.05").unwrap(), Some(0.05));
        assert!(InferConfig::parse_theta("x")
            .unwrap_err()
            .to_string()
            .contains("`theta`"));
    }
}
