//! Criterion benches of reg4rec live in `benches/benches/`; run them with `cargo xtask bench`.
