//! Model inputs in the per-user layout. Pure Rust up to the final `Tensor::from_slice`, so batches are built on a
//! background thread while the previous step computes.
//!
//! A *stream* is what the encoder reads: item indices `0..n_items`, `START = n_items` before a history shorter
//! than the window, `PAD = n_items + 1` after the real positions. The window of a history is its most recent
//! `L` items, preceded by `START` when it has fewer than `L` (so the empty history is `[START]`).
//!
//! A [`SeqBatch`] holds streams and the positions that carry a target:
//! - [`SeqBatchBuilder::sequences`] (pre-training): a training sequence `s` of n items becomes the stream
//!   `[START, s_0, ..., s_{n-2}]` whose position t predicts `s_t`, all of it at once; only the most recent `L`
//!   positions are kept, so a long sequence contributes its last `L` targets (and its window has no `START`).
//! - [`SeqBatchBuilder::last`] (validation, alignment): one (history, target) pair per row, the target at the
//!   window's last position.

use crate::decoding::Vocab;
use crate::error::{ModelError, Result};
use reg4rec_tokenizer::Codes;
use tch::{Device, Tensor};

/// The special stream ids of a catalogue of `n_items` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIds {
    pub n_items: usize,
    /// `n_items`: the entry before a history shorter than the window.
    pub start: i64,
    /// `n_items + 1`: right padding.
    pub pad: i64,
}

impl StreamIds {
    pub fn new(n_items: usize) -> Self {
        StreamIds {
            n_items,
            start: n_items as i64,
            pad: n_items as i64 + 1,
        }
    }
}

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

fn check_item(item: u32, ids: StreamIds) -> Result<i64> {
    if item as usize >= ids.n_items {
        return Err(ModelError::Input(format!(
            "item {item} is outside the model's {} items",
            ids.n_items
        )));
    }
    Ok(item as i64)
}

/// The encoder window of `history` (oldest first): its most recent `l` items, preceded by `START` when it has
/// fewer than `l`.
pub fn stream_window(history: &[u32], l: usize, ids: StreamIds) -> Result<Vec<i64>> {
    let recent = &history[history.len().saturating_sub(l)..];
    let mut out = Vec::with_capacity(l);
    if recent.len() < l {
        out.push(ids.start);
    }
    for &i in recent {
        out.push(check_item(i, ids)?);
    }
    Ok(out)
}

/// No (target, item) history pairs ([`SeqBatch::seen`]): item logits without the repeat bias.
pub fn no_seen_items() -> (Tensor, Tensor) {
    let empty = || Tensor::zeros([0], (tch::Kind::Int64, Device::Cpu));
    (empty(), empty())
}

/// A batch of streams with the positions that carry a target.
#[derive(Debug)]
pub struct SeqBatch {
    /// `[B, T]` i64 streams, right-padded with `PAD`.
    pub stream: Tensor,
    /// `[N]` i64: flat indices `b * T + t` of the positions with a target, row by row.
    pub positions: Tensor,
    /// `[N]` i64: the target item at each of them.
    pub items: Tensor,
    /// `[N, M]` i64: the target item's tokens in codebook order (column r holds codebook r's token).
    pub targets: Tensor,
    /// `[N]` i64: the target item's category.
    pub categories: Tensor,
    /// `[K]` i64 and `[K]` i64: the (target, item) pairs of the items already in each target's history as the
    /// encoder reads it (the stream up to the target's position), each pair once: where the item head's
    /// `repeat_bias` applies.
    pub seen: (Tensor, Tensor),
    /// Rows B.
    pub rows: usize,
    /// Targets N (non-padding positions that are trained).
    pub n_targets: usize,
}

impl SeqBatch {
    pub fn to_device(&self, device: Device) -> SeqBatch {
        SeqBatch {
            stream: self.stream.to_device(device),
            positions: self.positions.to_device(device),
            items: self.items.to_device(device),
            targets: self.targets.to_device(device),
            categories: self.categories.to_device(device),
            seen: (self.seen.0.to_device(device), self.seen.1.to_device(device)),
            rows: self.rows,
            n_targets: self.n_targets,
        }
    }

    /// The same streams with only targets `start..start + len` (their history pairs renumbered from 0).
    pub fn targets_slice(&self, start: usize, len: usize) -> SeqBatch {
        let (s, l) = (start as i64, len as i64);
        let (rows, items) = &self.seen;
        let keep = rows.ge(s).logical_and(&rows.lt(s + l));
        SeqBatch {
            stream: self.stream.shallow_clone(),
            positions: self.positions.narrow(0, s, l),
            items: self.items.narrow(0, s, l),
            targets: self.targets.narrow(0, s, l),
            categories: self.categories.narrow(0, s, l),
            seen: (rows.masked_select(&keep) - s, items.masked_select(&keep)),
            rows: self.rows,
            n_targets: len,
        }
    }
}

/// One row before padding: its stream, and its targets as (position in the stream, target item).
type Row = (Vec<i64>, Vec<(usize, u32)>);

/// Builds [`SeqBatch`]es from sequences or (history, target) pairs.
#[derive(Debug, Clone, Copy)]
pub struct SeqBatchBuilder<'a> {
    pub vocab: Vocab,
    /// The window L (`ModelConfig::history_len`).
    pub history_len: usize,
    pub codes: &'a Codes,
    pub item_category: &'a [u32],
}

impl SeqBatchBuilder<'_> {
    fn ids(&self) -> StreamIds {
        StreamIds::new(self.codes.n_items())
    }

    /// Pre-training rows: every position of each sequence predicts the next item (see the module doc).
    /// Sequences must not be empty.
    pub fn sequences(&self, seqs: &[&[u32]]) -> Result<SeqBatch> {
        let ids = self.ids();
        let l = self.history_len;
        let mut rows: Vec<Row> = Vec::with_capacity(seqs.len());
        for s in seqs {
            if s.is_empty() {
                return Err(ModelError::Input(
                    "a training sequence is empty: it has no item to predict".into(),
                ));
            }
            // The full stream is [START, s_0, ..., s_{n-2}], position j predicting s_j; keep the last L.
            let n = s.len();
            let first = n.saturating_sub(l);
            let stream = (first..n)
                .map(|j| match j {
                    0 => Ok(ids.start),
                    _ => check_item(s[j - 1], ids),
                })
                .collect::<Result<Vec<i64>>>()?;
            let targets: Vec<(usize, u32)> = s[first..].iter().copied().enumerate().collect();
            debug_assert_eq!(stream.len(), targets.len());
            rows.push((stream, targets));
        }
        self.assemble(rows)
    }

    /// One (history, target) pair per row, the target at the last position of the history's window.
    pub fn last(&self, pairs: &[(&[u32], u32)]) -> Result<SeqBatch> {
        let ids = self.ids();
        let mut rows = Vec::with_capacity(pairs.len());
        for &(h, target) in pairs {
            let stream = stream_window(h, self.history_len, ids)?;
            let at = stream.len() - 1;
            rows.push((stream, vec![(at, target)]));
        }
        self.assemble(rows)
    }

    /// Pads the rows' streams and gathers their targets' tokens and categories.
    fn assemble(&self, rows: Vec<Row>) -> Result<SeqBatch> {
        let ids = self.ids();
        let m = self.vocab.m;
        let t = rows.iter().map(|r| r.0.len()).max().unwrap_or(1).max(1);
        let b = rows.len();
        let mut stream = vec![ids.pad; b * t];
        let (mut positions, mut items, mut targets, mut categories) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // What each target's position reads: the stream up to it, without `START` (unpadded rows).
        let mut histories: Vec<&[i64]> = Vec::new();
        for (r, (s, tg)) in rows.iter().enumerate() {
            stream[r * t..r * t + s.len()].copy_from_slice(s);
            let first = usize::from(s.first() == Some(&ids.start));
            for &(at, item) in tg {
                histories.push(&s[first..=at]);
                check_item(item, ids)?;
                let c = self.item_category.get(item as usize).ok_or_else(|| {
                    ModelError::Input(format!(
                        "item {item} has no category ({} known)",
                        self.item_category.len()
                    ))
                })?;
                positions.push((r * t + at) as i64);
                items.push(item as i64);
                targets.extend(self.vocab.item_tokens(self.codes.tuple(item as usize)));
                categories.push(*c as i64);
            }
        }
        let n = items.len();
        let (seen_rows, seen_items) =
            reg4rec_train::repeat::seen_pairs(histories.iter().map(|h| h.iter().copied()));
        Ok(SeqBatch {
            stream: Tensor::from_slice(&stream).view([b as i64, t as i64]),
            positions: Tensor::from_slice(&positions),
            items: Tensor::from_slice(&items),
            targets: Tensor::from_slice(&targets).view([n as i64, m as i64]),
            categories: Tensor::from_slice(&categories),
            seen: (
                Tensor::from_slice(&seen_rows),
                Tensor::from_slice(&seen_items),
            ),
            rows: b,
            n_targets: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> Codes {
        // 6 items, m = 2, d = 3
        Codes::new(2, 3, false, vec![0, 0, 0, 1, 0, 2, 1, 0, 1, 1, 1, 2]).unwrap()
    }

    #[test]
    fn windows_take_the_recent_items_and_start_short_histories() {
        let ids = StreamIds::new(6);
        assert_eq!(stream_window(&[], 3, ids).unwrap(), vec![6]);
        assert_eq!(stream_window(&[4, 5], 3, ids).unwrap(), vec![6, 4, 5]);
        assert_eq!(stream_window(&[1, 2, 3], 3, ids).unwrap(), vec![1, 2, 3]);
        assert_eq!(stream_window(&[0, 1, 2, 3], 3, ids).unwrap(), vec![1, 2, 3]);
        let e = stream_window(&[9], 3, ids).unwrap_err();
        assert!(e.to_string().contains("item 9"), "{e}");
    }

    #[test]
    fn sequences_predict_every_next_item_and_keep_the_last_window() {
        let c = codes();
        let cats = [0u32, 1, 2, 0, 1, 2];
        let b = SeqBatchBuilder {
            vocab: Vocab::new(2, 3),
            history_len: 3,
            codes: &c,
            item_category: &cats,
        };
        let batch = b.sequences(&[&[1, 2], &[0, 1, 2, 3, 4], &[5]]).unwrap();
        let stream: Vec<Vec<i64>> = Vec::try_from(&batch.stream).unwrap();
        // [START, 1] | last window [1, 2, 3] predicting 2, 3, 4 | [START]
        assert_eq!(stream, vec![vec![6, 1, 7], vec![1, 2, 3], vec![6, 7, 7]]);
        let items: Vec<i64> = Vec::try_from(&batch.items).unwrap();
        assert_eq!(items, vec![1, 2, 2, 3, 4, 5]);
        let pos: Vec<i64> = Vec::try_from(&batch.positions).unwrap();
        assert_eq!(pos, vec![0, 1, 3, 4, 5, 6]);
        assert_eq!(batch.n_targets, 6);
        let cat: Vec<i64> = Vec::try_from(&batch.categories).unwrap();
        assert_eq!(cat, vec![1, 2, 2, 0, 1, 2]);
        // Each target's history as its position reads it (START and padding are not items).
        let seen_rows: Vec<i64> = Vec::try_from(&batch.seen.0).unwrap();
        let seen_items: Vec<i64> = Vec::try_from(&batch.seen.1).unwrap();
        assert_eq!(seen_rows, vec![1, 2, 3, 3, 4, 4, 4]);
        assert_eq!(seen_items, vec![1, 1, 1, 2, 1, 2, 3]);
        let t: Vec<Vec<i64>> = Vec::try_from(&batch.targets).unwrap();
        let v = Vocab::new(2, 3);
        assert_eq!(t[0], vec![v.token(0, 0), v.token(1, 1)]);
        // A window position holds the stream of the same history evaluated alone.
        let last = b.last(&[(&[0, 1], 2), (&[], 1)]).unwrap();
        let s: Vec<Vec<i64>> = Vec::try_from(&last.stream).unwrap();
        assert_eq!(s, vec![vec![6, 0, 1], vec![6, 7, 7]]);
        let pos: Vec<i64> = Vec::try_from(&last.positions).unwrap();
        assert_eq!(pos, vec![2, 3]);
        assert!(b.sequences(&[&[]]).is_err());
        assert!(b.sequences(&[&[1, 8]]).is_err());
    }
}
