//! PARS alignment of a pre-trained REG4Rec model: GRPO with the four path rewards (step-hit, global path,
//! category-hit, step-consistency) plus MSRA multi-step reward augmentation. Spec section 4.
//!
//! - [`rewards`]: the four rewards as pure functions (the figure's worked examples are their tests), and two of
//!   ours: the long tail (a goal beyond accuracy) and the item head as a teacher (each rollout's share of its
//!   group under the frozen pre-trained item head; what made alignment measurable on path-ranked lists).
//! - [`msra`]: the reward window over the user's TRAINING sequence, decayed by `w^(n-1)`.
//! - [`grpo`]: constrained rollouts (sampled, a beam, or guided: the target's path in every group),
//!   group-normalised advantages, the clipped objective with the k3 KL penalty to the frozen pre-trained model:
//!   a step's sampling and the loss of each of its updates.
//! - [`train`]: [`align`], GRPO through the training engine (`reg4rec-train`): validation Recall@10 (step 0 =
//!   the pre-trained model), the best weights kept, `metrics.jsonl`, checkpoints and exact resume.

pub mod config;
pub mod error;
pub mod grpo;
pub mod msra;
pub mod rewards;
pub mod train;

pub use config::{AlignConfig, Consistency, RewardWeights, Rollout};
pub use error::{AlignError, Result};
pub use rewards::RewardBreakdown;
pub use train::{align, AlignOptions, AlignReport, AlignRun, CurvePoint};
