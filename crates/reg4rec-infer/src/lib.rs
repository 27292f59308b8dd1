//! Inference for REG4Rec: beam search over (codebook, code) pairs constrained to existing items, with CRSS step
//! selection and CORP category-consistency pruning, full-ranking evaluation and explanations. Spec section 5.
