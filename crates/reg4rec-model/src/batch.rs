//! Turning (history, target item) examples into model inputs. Pure Rust up to the final `Tensor::from_slice`,
//! so batches can be built on a background thread while the previous step computes.

use crate::error::{ModelError, Result};
use crate::vocab::{Vocab, PAD, SEP};
use reg4rec_tokenizer::index::Codes;
use tch::{Device, Tensor};

/// Checks that `codes` match the vocabulary.
pub fn check_codes(vocab: &Vocab, codes: &Codes) -> Result<()> {
    if codes.m != vocab.m || codes.d != vocab.d {
        return Err(ModelError::Input(format!(
            "codes have m = {}, d = {} but the model's vocabulary has m = {}, d = {}",
            codes.m, codes.d, vocab.m, vocab.d
        )));
    }
    if codes.tuples.len() != codes.n_items() * codes.m {
        return Err(ModelError::Input(format!(
            "codes: {} entries is not a multiple of m = {}",
            codes.tuples.len(),
            codes.m
        )));
    }
    Ok(())
}

fn item_codes(codes: &Codes, item: u32) -> Result<&[u16]> {
    let i = item as usize;
    if i >= codes.n_items() {
        return Err(ModelError::Input(format!(
            "item {item} has no token tuple (the codes cover {} items)",
            codes.n_items()
        )));
    }
    Ok(codes.tuple(i))
}

/// Row-major `[B, L * (M + 1)]` encoder input ids: per history item (last `history_len`, oldest first) `<SEP>`
/// and its M tokens in codebook order, left-padded with `<PAD>`.
pub fn history_token_ids(
    vocab: &Vocab,
    history_len: usize,
    items: &[&[u32]],
    codes: &Codes,
) -> Result<Vec<i64>> {
    check_codes(vocab, codes)?;
    let w = vocab.m + 1;
    let s = history_len * w;
    let mut ids = vec![PAD; items.len() * s];
    for (row, hist) in ids.chunks_mut(s).zip(items) {
        let hist = &hist[hist.len().saturating_sub(history_len)..];
        let start = s - hist.len() * w;
        for (slot, &item) in row[start..].chunks_mut(w).zip(hist) {
            slot[0] = SEP;
            for (r, &j) in item_codes(codes, item)?.iter().enumerate() {
                slot[1 + r] = vocab.token(r, j as usize);
            }
        }
    }
    Ok(ids)
}

/// One batch of (history, target) examples as tensors.
#[derive(Debug)]
pub struct Batch {
    /// `[B, L * (M + 1)]` i64 encoder input.
    pub history: Tensor,
    /// `[B, M]` i64: the target item's tokens in codebook order (column r holds codebook r's token).
    pub targets: Tensor,
    /// `[B]` i64: the target item's category.
    pub categories: Tensor,
    /// Number of examples B.
    pub len: usize,
}

impl Batch {
    pub fn to_device(&self, device: Device) -> Batch {
        Batch {
            history: self.history.to_device(device),
            targets: self.targets.to_device(device),
            categories: self.categories.to_device(device),
            len: self.len,
        }
    }
}

/// Builds [`Batch`]es from histories and target items.
#[derive(Debug, Clone, Copy)]
pub struct BatchBuilder<'a> {
    pub vocab: Vocab,
    pub history_len: usize,
    pub codes: &'a Codes,
    pub item_category: &'a [u32],
}

impl BatchBuilder<'_> {
    /// `examples`: (history oldest first, target item). Tensors are on the CPU.
    pub fn build(&self, examples: &[(&[u32], u32)]) -> Result<Batch> {
        let b = examples.len();
        let hist: Vec<&[u32]> = examples.iter().map(|e| e.0).collect();
        let ids = history_token_ids(&self.vocab, self.history_len, &hist, self.codes)?;
        let mut targets = Vec::with_capacity(b * self.vocab.m);
        let mut categories = Vec::with_capacity(b);
        for &(_, item) in examples {
            targets.extend(self.vocab.item_tokens(item_codes(self.codes, item)?));
            let c = self.item_category.get(item as usize).ok_or_else(|| {
                ModelError::Input(format!(
                    "item {item} has no category ({} known)",
                    self.item_category.len()
                ))
            })?;
            categories.push(*c as i64);
        }
        let s = (self.history_len * (self.vocab.m + 1)) as i64;
        Ok(Batch {
            history: Tensor::from_slice(&ids).view([b as i64, s]),
            targets: Tensor::from_slice(&targets).view([b as i64, self.vocab.m as i64]),
            categories: Tensor::from_slice(&categories),
            len: b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_left_padded_sep_then_codebook_order_and_truncated() {
        let codes = Codes::new(2, 3, false, vec![0, 1, 2, 2, 1, 0]).unwrap();
        let v = Vocab::new(2, 3);
        let ids = history_token_ids(&v, 2, &[&[0, 1, 2], &[1]], &codes).unwrap();
        let t = |r, j| v.token(r, j);
        assert_eq!(ids[..6], [SEP, t(0, 2), t(1, 2), SEP, t(0, 1), t(1, 0)]);
        assert_eq!(ids[6..], [PAD, PAD, PAD, SEP, t(0, 2), t(1, 2)]);
        let e = history_token_ids(&v, 2, &[&[7]], &codes).unwrap_err();
        assert!(e.to_string().contains("item 7"), "{e}");
    }
}
