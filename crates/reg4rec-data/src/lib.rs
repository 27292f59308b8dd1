//! Data for reg4rec: a registry of named datasets (MovieLens-100k, the Amazon 2014 S3-Rec sets, and your own
//! RecBole, CSV or Parquet logs, read as streams) with checksummed sources, the leave-one-out protocol, item
//! features for the tokenizers (computed from training interactions only), batching, and full-ranking
//! Recall@K / NDCG@K. Two pieces every other crate shares live here too: [`tensors`], the one reader and writer
//! of safetensors files (with checksums), and [`presets`], the `configs/*.toml` files every config reads its
//! preset from.
//!
//! Everything here is pure Rust; the optional `tch` feature moves libtorch tensors in and out of safetensors
//! files.

pub mod batch;
pub mod dataset;
pub mod error;
pub mod features;
pub mod formats;
pub mod interactions;
pub mod io;
pub mod metrics;
pub mod presets;
pub mod progress;
#[cfg(feature = "tch")]
pub mod ranking;
pub mod registry;
pub mod split;
pub mod tensors;

pub use dataset::{Dataset, DatasetStats, KCoreReport, RepeatStats};
pub use error::{DataError, Result};
pub use features::{build_item_features, FeatureConfig, ItemFeatures};
pub use interactions::InteractionLog;
pub use metrics::{MetricAccumulator, Metrics};
pub use registry::{load, load_path, LoadOptions};
pub use split::LeaveOneOut;
