//! A trained reg4rec model directory as a library: [`Recommender::load`] reads what a model directory is (the
//! model, the item codes and index, the catalog of ids and categories, the configuration, and a manifest whose
//! sha256 of every file is verified at load), ties it to the data it was trained on (a fingerprint, so
//! evaluating against other data is a clear error), applies the model kind's rules once, and answers
//! `recommend(history, options)` with explanations. Category steering, excluded items and the catalog's
//! availability are constraints of the beam search itself, so `k` items come back whenever `k` allowed items
//! are reachable.
//!
//! ```no_run
//! use reg4rec_recommender::{RecommendOptions, Recommender};
//! let rec = Recommender::load("runs/ml-100k/stages/align-reg4rec")?;
//! let opts = RecommendOptions { k: 5, explain: true, ..Default::default() };
//! for r in rec.recommend(&["50".into(), "172".into()], &opts)?.items {
//!     println!("{} {} ({}): {}", r.rank, r.item_id, r.category, r.explanation.render());
//! }
//! # Ok::<(), reg4rec_recommender::RecommenderError>(())
//! ```

pub mod catalog;
pub mod error;
pub mod export;
pub mod model_dir;
pub mod recommender;
pub mod source;

pub use catalog::Catalog;
pub use error::{RecommenderError, Result};
pub use model_dir::{seal, verify, write_extras, ChosenSearch, Manifest};
pub use recommender::{
    AddedItem, Info, NewItem, Query, RecommendOptions, Recommendations, Recommended, Recommender,
};
/// What orders a list (`RecommendOptions::rank`, `infer.rank`): the reasoning path alone or with the item head.
pub use reg4rec_infer::Rank;
pub use source::DataSource;
/// The device type [`Recommender::load_with`] takes (re-exported so servers need not depend on tch).
pub use tch::Device as TchDevice;
