//! Item tokenizers: MPQ (M parallel MoE autoencoder experts with their own codebooks, giving every item M
//! unordered semantic tokens) and the RQ-VAE baseline (M ordered residual tokens). Spec section 2.
