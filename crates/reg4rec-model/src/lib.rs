//! The REG4Rec generative model: an encoder-decoder transformer over MPQ semantic tokens with a per-step
//! category head, trained with CRSS (confidence-based reasoning step selection). Spec section 3.
