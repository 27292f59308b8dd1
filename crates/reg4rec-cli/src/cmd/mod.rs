//! One module per subcommand.

pub mod align;
pub mod data;
pub mod eval;
pub mod export;
pub mod pretrain;
pub mod recommend;
pub mod serve;
pub mod tokenize;
