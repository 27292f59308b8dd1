//! Inference for REG4Rec (spec section 5): the beam search ([`beam`]) over (codebook, code) pairs constrained to
//! existing items, with CRSS step selection (every open codebook competes at every step) and CORP
//! category-consistency pruning ([`corp`]), full-ranking evaluation ([`eval`]) and explanations ([`explain`]).
//!
//! The search talks to the network through the small [`StepScorer`] trait, so it is tested with seeded scorers
//! ([`RandomScorer`], [`FnScorer`]) and runs the real model through [`ModelScorer`].

pub mod beam;
pub mod config;
pub mod corp;
pub mod error;
pub mod eval;
pub mod explain;
pub mod model_scorer;
pub mod scorer;

pub use beam::{BeamSearch, PathStep, Recommendation, SearchOutput, SearchStats};
pub use config::{InferConfig, Rank};
pub use error::{InferError, Result};
pub use eval::{evaluate, evaluate_dense, EvalReport};
pub use explain::Explanation;
pub use model_scorer::ModelScorer;
pub use scorer::{FnScorer, RandomScorer, StepInput, StepOutput, StepScorer};
