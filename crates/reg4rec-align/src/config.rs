//! [`AlignConfig`]: every PARS / GRPO / MSRA hyper-parameter, each a documented default (spec section 4 names
//! most of them \[default\]; the values the paper does not give are ours and say so).

use crate::error::{AlignError, Result};
use reg4rec_infer::InferConfig;
use reg4rec_model::{LadqConfig, PrecisionMode};
use serde::{Deserialize, Serialize};

/// How the step-consistency reward decides that two adjacent steps agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Jensen-Shannon divergence (natural log) of the two category distributions at most `consistency_theta`.
    Js,
    /// The two distributions have the same most likely category.
    Argmax,
}

/// Where a GRPO group's paths come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rollout {
    /// `group_size` paths sampled from the policy (with replacement), [`crate::grpo::sample_paths`].
    Sample,
    /// The `group_size` most likely distinct items of a constrained beam search over the token policy: the
    /// group is the model's own top of the list, so the target ranks inside it far more often than among
    /// samples ([`crate::grpo::beam_paths`]).
    Beam,
}

/// Weights of the four rewards in the path reward (a weighted sum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardWeights {
    /// Step-hit (generated tokens in the target's token set, 0..=M). Default 1.0.
    pub step_hit: f64,
    /// Global path (1 when the generated set is the target's set). Default 2.0 (ours: the outcome that counts
    /// in Recall).
    pub global_path: f64,
    /// Category-hit (steps whose predicted category is the target's, 0..=M). Default 0.5.
    pub category_hit: f64,
    /// Step-consistency (agreeing adjacent step pairs, 0..=M-1). Default 0.5.
    pub step_consistency: f64,
    /// Long-tail exposure (1 when the path's item is outside the most popular `head_share` of the catalogue by
    /// training interactions): a goal beyond next-item accuracy. Default 0 (plain PARS).
    #[serde(skip_serializing_if = "is_zero")]
    pub long_tail: f64,
    /// The item head as a teacher (models with an item head): each path is rewarded with its item's share of
    /// the group under the frozen pre-trained model's item head (the softmax of its item-level scores over the
    /// group's items), so the update ranks the group's paths as the item head ranks their items. The item
    /// head is trained on the same interactions and ranks every item; the path-ranked list learns its order
    /// where it matters, among the policy's own best items. Ours, not the spec's. Default 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub item_head: f64,
    /// The popular head's share of the catalogue for `long_tail`. Default 0.2 (the most popular 20%).
    #[serde(skip_serializing_if = "is_default_head_share")]
    pub head_share: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_default_head_share(v: &f64) -> bool {
    *v == DEFAULT_HEAD_SHARE
}

const DEFAULT_HEAD_SHARE: f64 = 0.2;

impl Default for RewardWeights {
    fn default() -> Self {
        RewardWeights {
            step_hit: 1.0,
            global_path: 2.0,
            category_hit: 0.5,
            step_consistency: 0.5,
            long_tail: 0.0,
            item_head: 0.0,
            head_share: DEFAULT_HEAD_SHARE,
        }
    }
}

/// PARS alignment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignConfig {
    /// Seed of context shuffling (seed + epoch) and path sampling (seed + step). Default 42.
    pub seed: u64,
    /// Optimizer steps (each: one batch of contexts, G paths each). Default 1000.
    pub steps: u64,
    /// Training contexts (history, target) per step. Default 32.
    pub batch_contexts: usize,
    /// Group size G: paths per context (sampled, or the beam's best, as `rollout` says). Default 8.
    pub group_size: usize,
    /// Where the group's paths come from: `sample` or `beam`. Default `sample`.
    pub rollout: Rollout,
    /// Guided groups: a group whose rollouts miss the context's true target gets the target's own path in place
    /// of its last one (its tokens in the policy's order: at each step the target's unused token the policy
    /// finds most likely), so every group holds one path that completes the target. The update then raises the
    /// target's path against the policy's own competitors (the beam's best, or samples), a sequence-level
    /// ranking signal that plain rollouts give only when the policy already finds the target. The target's path
    /// is off-policy (a guide, not a sample), so the clipped surrogate is no longer an unbiased policy gradient;
    /// ours, not the spec's. Default false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub guided: bool,
    /// Sampling temperature (logits are divided by it; the policy log-probabilities use the same). Default 1.0.
    pub temperature: f64,
    /// Clip range epsilon of the policy ratio. Default 0.2.
    pub epsilon: f64,
    /// Gradient updates per sampled batch (1: the ratio is 1 and the objective is the plain policy gradient).
    /// Default 1.
    pub ppo_epochs: usize,
    /// Weight beta of the KL penalty (k3 estimator) to the frozen pre-trained reference. Default 0.04.
    pub beta: f64,
    /// Weight of the CRSS pre-training loss on the same contexts as an auxiliary term (0 = off). Default 0.0.
    pub aux_weight: f64,
    /// Treat the item head as the policy's last step (models with an item head): a sampled path's completed
    /// item adds its item-head log-probability (log-softmax over every item, divided by `temperature`) as one
    /// more step of the path, so the clipped surrogate and the KL move the item head too. The search ranks
    /// the list by the item head (`infer.dense_weight`, the dense lookahead), so without this term alignment
    /// only reaches the path score, which breaks near-ties. Default false.
    pub item_head: bool,
    /// Learning rate (constant after `warmup_steps`). Default 1e-5.
    pub lr: f64,
    /// Linear warmup steps from 0 to `lr`. Default 10.
    pub warmup_steps: u64,
    /// AdamW decoupled weight decay. Default 0.0.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 = off). Default 1.0.
    pub grad_clip: f64,
    /// Added to the group standard deviation when normalising rewards to advantages. Default 1e-4.
    pub adv_eps: f64,
    /// Reward weights.
    pub rewards: RewardWeights,
    /// Step-consistency rule. Default `js`.
    pub consistency: Consistency,
    /// JS threshold theta of the `js` consistency rule (nats). Default 0.06 (the CORP default).
    pub consistency_theta: f64,
    /// MSRA window h: the target and the next h - 1 items of the user's TRAINING sequence are rewarded
    /// (h = 1 turns MSRA off). Default 3.
    pub msra_h: usize,
    /// MSRA time decay w: the n-th item of the window (n = 1 is the target) weighs w^(n-1). Default 0.8.
    pub msra_w: f64,
    /// Validate (Recall@10 on the validation split) every this many steps; the pre-trained model is step 0 and
    /// the last step is always validated. Default 100.
    pub valid_every: u64,
    /// Validate on this many users only (0 = all): a subset seeded by `seed`
    /// ([`reg4rec_data::split::LeaveOneOut::subset`]), the same at every validation. Default 0.
    pub valid_users: usize,
    /// Search used for validation (beam, CORP theta, ...). Default: [`InferConfig::default`].
    pub valid: InferConfig,
    /// Also checkpoint every this many steps (0 = only at validations and the end). Default 0.
    pub checkpoint_every: u64,
    /// Device: `cpu`, `cuda`, `cuda:N` or `auto`. Default `cpu`.
    pub device: String,
    /// Compute precision of the policy's transformer projections during alignment (`reg4rec align
    /// --precision`), as in pre-training: `fp32`, `bf16` (every linear layer and attention in bf16) or `ladq`
    /// (per-layer fp32 / bf16 / fp8 from K-FAC traces sampled every `ladq.sample_every` GRPO steps on the
    /// policy-gradient update, history in the run directory). Sampling, the update and validation all run at the
    /// policy's current precisions; the frozen KL reference stays f32, and so do master weights, optimizer
    /// state and losses. Independent of the precision the model was pre-trained with. Default `fp32`.
    pub precision: PrecisionMode,
    /// LADQ settings, used when `precision` is `ladq`. Default: `LadqConfig::default()` (sample every 100
    /// steps, 25% of layers fp32, 25% fp8, history in `ladq.jsonl` of the alignment run directory).
    pub ladq: LadqConfig,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            seed: 42,
            steps: 1000,
            batch_contexts: 32,
            group_size: 8,
            rollout: Rollout::Sample,
            guided: false,
            temperature: 1.0,
            epsilon: 0.2,
            ppo_epochs: 1,
            beta: 0.04,
            aux_weight: 0.0,
            item_head: false,
            lr: 1e-5,
            warmup_steps: 10,
            weight_decay: 0.0,
            grad_clip: 1.0,
            adv_eps: 1e-4,
            rewards: RewardWeights::default(),
            consistency: Consistency::Js,
            consistency_theta: 0.06,
            msra_h: 3,
            msra_w: 0.8,
            valid_every: 100,
            valid_users: 0,
            valid: InferConfig::default(),
            checkpoint_every: 0,
            device: "cpu".into(),
            precision: PrecisionMode::Fp32,
            ladq: LadqConfig::default(),
        }
    }
}

impl AlignConfig {
    /// The `[align]` section of preset `name` (`smoke`, `cpu`, `gpu`: [`reg4rec_data::presets`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(reg4rec_data::presets::section(name, "align")?)
    }

    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(AlignError::config(
                    field,
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(AlignError::config(
                    field,
                    format!("must be a finite number >= 0, got {v}"),
                ))
            }
        };
        for (field, v) in [
            ("steps", self.steps as usize),
            ("batch_contexts", self.batch_contexts),
            ("ppo_epochs", self.ppo_epochs),
            ("msra_h", self.msra_h),
            ("valid_every", self.valid_every as usize),
        ] {
            if v == 0 {
                return Err(AlignError::config(field, "must be >= 1"));
            }
        }
        if self.group_size < 2 {
            return Err(AlignError::config(
                "group_size",
                format!(
                    "must be >= 2 (advantages are normalised within the group), got {}",
                    self.group_size
                ),
            ));
        }
        positive("temperature", self.temperature)?;
        positive("lr", self.lr)?;
        positive("adv_eps", self.adv_eps)?;
        if !(self.epsilon.is_finite() && self.epsilon > 0.0 && self.epsilon < 1.0) {
            return Err(AlignError::config(
                "epsilon",
                format!("must be in (0, 1), got {}", self.epsilon),
            ));
        }
        for (field, v) in [
            ("beta", self.beta),
            ("aux_weight", self.aux_weight),
            ("weight_decay", self.weight_decay),
            ("grad_clip", self.grad_clip),
            ("consistency_theta", self.consistency_theta),
            ("rewards.step_hit", self.rewards.step_hit),
            ("rewards.global_path", self.rewards.global_path),
            ("rewards.category_hit", self.rewards.category_hit),
            ("rewards.step_consistency", self.rewards.step_consistency),
            ("rewards.long_tail", self.rewards.long_tail),
            ("rewards.item_head", self.rewards.item_head),
        ] {
            non_negative(field, v)?;
        }
        if !(0.0..=1.0).contains(&self.rewards.head_share) {
            return Err(AlignError::config(
                "rewards.head_share",
                format!("must be in [0, 1], got {}", self.rewards.head_share),
            ));
        }
        if !(self.msra_w.is_finite() && self.msra_w > 0.0 && self.msra_w <= 1.0) {
            return Err(AlignError::config(
                "msra_w",
                format!("must be in (0, 1], got {}", self.msra_w),
            ));
        }
        self.valid
            .validate()
            .map_err(|e| AlignError::config("valid", e.to_string()))?;
        reg4rec_model::config::parse_device(&self.device)
            .map_err(|e| AlignError::config("device", e.to_string()))?;
        reg4rec_model::config::validate_ladq(&self.ladq).map_err(|e| match e {
            reg4rec_model::ModelError::Config { field, message } => {
                AlignError::config(field, message)
            }
            other => other.into(),
        })?;
        Ok(())
    }

    /// The libtorch device named by `device`; an error when it is a GPU this machine does not have.
    pub fn device(&self) -> Result<tch::Device> {
        reg4rec_model::config::require_device(&self.device)
            .map_err(|e| AlignError::config("device", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_bad_fields_are_named() {
        for c in [
            AlignConfig::default(),
            AlignConfig::preset("cpu").unwrap(),
            AlignConfig::preset("smoke").unwrap(),
        ] {
            c.validate().unwrap();
            let back: AlignConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
        let e = AlignConfig {
            group_size: 1,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`group_size`"), "{e}");
        let e = AlignConfig {
            msra_w: 1.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`msra_w`"), "{e}");
        let mut c = AlignConfig::default();
        c.rewards.category_hit = -1.0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("rewards.category_hit"));
        let e = AlignConfig {
            ladq: LadqConfig {
                sample_every: 0,
                ..Default::default()
            },
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("ladq.sample_every"), "{e}");
        let c: AlignConfig = serde_json::from_str(r#"{"precision": "ladq"}"#).unwrap();
        assert_eq!(
            (c.precision, AlignConfig::default().precision),
            (PrecisionMode::Ladq, PrecisionMode::Fp32)
        );
        let e = serde_json::from_str::<AlignConfig>(r#"{"precision": "fp16"}"#).unwrap_err();
        assert!(e.to_string().contains("fp16"), "{e}");
        let e = serde_json::from_str::<AlignConfig>(r#"{"group_sise": 3}"#).unwrap_err();
        assert!(e.to_string().contains("group_sise"), "{e}");
        let c: AlignConfig =
            serde_json::from_str(r#"{"msra_h": 1, "consistency": "argmax", "valid": {"beam": 5}}"#)
                .unwrap();
        assert_eq!(
            (c.msra_h, c.consistency, c.valid.beam, c.group_size),
            (1, Consistency::Argmax, 5, 8)
        );
    }
}
