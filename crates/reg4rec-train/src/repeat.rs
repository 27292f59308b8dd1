//! The repeat bias shared by the models that score every item after a history (the generative model's item
//! head, SASRec-CE): one learned scalar added to the logit of every item already in the history the score was
//! computed from. Trained on the training positions like every other weight, it learns how likely a user is to
//! pick an item again: negative on data whose users rarely repeat an item, positive where they often do. Nothing
//! is removed from a ranking: a strong enough next-item score still ranks a history item first.

use tch::Tensor;

/// The (row, item) pairs of the items in each row's history, each pair once, rows numbered from 0 in order:
/// `[K]` i64 row indices and `[K]` i64 items.
pub fn seen_pairs<H: IntoIterator<Item = i64>>(
    histories: impl IntoIterator<Item = H>,
) -> (Vec<i64>, Vec<i64>) {
    let (mut rows, mut items) = (Vec::new(), Vec::new());
    let mut h = Vec::new();
    for (r, history) in histories.into_iter().enumerate() {
        h.clear();
        h.extend(history);
        h.sort_unstable();
        h.dedup();
        rows.extend(std::iter::repeat_n(r as i64, h.len()));
        items.extend_from_slice(&h);
    }
    (rows, items)
}

/// `logits` `[N, n_items]` with `bias` (a one-element tensor; differentiable) added at the `seen` (row, item)
/// pairs (`[K]` i64 each, on the logits' device, every pair at most once). Takes `logits` by value and adds in
/// place: K scattered additions instead of another `[N, n_items]` pass (autograd allows it: a product's
/// backward does not read its output).
pub fn add_repeat_bias(mut logits: Tensor, seen: &(Tensor, Tensor), bias: &Tensor) -> Tensor {
    let k = seen.0.size()[0];
    if k == 0 {
        return logits;
    }
    let values = bias.to_kind(logits.kind()).reshape([1]).expand([k], false);
    let _ = logits.index_put_(&[Some(&seen.0), Some(&seen.1)], &values, true);
    logits
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn pairs_are_unique_per_row_and_the_bias_lands_on_them_only() {
        let (rows, items) = seen_pairs([vec![3, 1, 3], vec![], vec![0]]);
        assert_eq!(rows, vec![0, 0, 2]);
        assert_eq!(items, vec![1, 3, 0]);
        // A product's output, as in the models (a leaf tensor cannot be changed in place).
        let w = Tensor::ones([3, 4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let logits = &w * 1.0;
        let b = Tensor::from_slice(&[-2.0f32]).set_requires_grad(true);
        let seen = (Tensor::from_slice(&rows), Tensor::from_slice(&items));
        let out = add_repeat_bias(logits, &seen, &b);
        let got: Vec<Vec<f32>> = Vec::try_from(&out).unwrap();
        assert_eq!(
            got,
            vec![
                vec![1.0, -1.0, 1.0, -1.0],
                vec![1.0; 4],
                vec![-1.0, 1.0, 1.0, 1.0]
            ]
        );
        // The gradient of the sum is the number of pairs for the bias, and passes through to the logits.
        out.sum(Kind::Float).backward();
        assert_eq!(b.grad().double_value(&[0]), 3.0);
        assert_eq!(w.grad().sum(Kind::Float).double_value(&[]), 12.0);
    }
}
