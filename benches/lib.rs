//! Criterion benches of reg4rec live in `benches/benches/`; run them with `cargo xtask bench`. This library holds
//! what they share: [`per_example`], the replaced per-example layout kept for the layout comparison.

pub mod per_example;
