//! PARS alignment of a pre-trained REG4Rec model: GRPO with the four path rewards (step-hit, global path,
//! category-hit, step-consistency) plus MSRA multi-step reward augmentation. Spec section 4.
