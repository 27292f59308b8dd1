//! Baselines every REG4Rec number is reported next to: item popularity and SASRec trained with
//! full-softmax cross-entropy, both scored by full ranking with the metrics of `reg4rec-data`.
