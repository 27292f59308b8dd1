//! CORP (category-consistency pruning): at every checked step k (k >= `corp_from_step`, see
//! [`crate::InferConfig`]) a path's category distribution is compared with the one it predicted at step k - 1;
//! when the Jensen-Shannon divergence exceeds theta the path is pruned and its beam slot rolls back to the
//! next-best candidate of the expansion that produced it (see [`crate::beam`]).

/// Jensen-Shannon divergence between two distributions over the same categories, in nats (`0..=ln 2`).
/// Zero-probability entries contribute nothing; accumulation is in f64.
pub fn js_divergence(p: &[f32], q: &[f32]) -> f32 {
    let mut s = 0.0f64;
    for (&a, &b) in p.iter().zip(q) {
        let (a, b) = (a as f64, b as f64);
        let m = a + b;
        if a > 0.0 {
            s += a * (2.0 * a / m).ln();
        }
        if b > 0.0 {
            s += b * (2.0 * b / m).ln();
        }
    }
    (0.5 * s).max(0.0) as f32
}

/// Whether a step with divergence `js` is pruned under threshold `theta` (`None`: CORP off, never pruned).
/// A NaN divergence (a broken distribution) is pruned.
pub fn prunes(theta: Option<f32>, js: f32) -> bool {
    match theta {
        None => false,
        Some(t) => js.is_nan() || js > t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_divergences() {
        assert_eq!(js_divergence(&[0.2, 0.8], &[0.2, 0.8]), 0.0);
        // disjoint supports reach ln 2
        let d = js_divergence(&[1.0, 0.0], &[0.0, 1.0]);
        assert!((d - std::f32::consts::LN_2).abs() < 1e-6);
        // p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4);
        // KL(p||m) = 1/2 ln(2/3) + 1/2 ln 2, KL(q||m) = ln(4/3); JS = (KL(p||m) + KL(q||m)) / 2
        let expected = 0.5 * (0.5 * (2.0f64 / 3.0).ln() + 0.5 * 2f64.ln() + (4.0f64 / 3.0).ln());
        assert!((js_divergence(&[0.5, 0.5], &[1.0, 0.0]) as f64 - expected).abs() < 1e-6);
        // symmetric
        let (p, q) = ([0.1, 0.3, 0.6], [0.5, 0.25, 0.25]);
        assert_eq!(js_divergence(&p, &q), js_divergence(&q, &p));
    }

    #[test]
    fn pruning_rule() {
        assert!(!prunes(None, 0.6));
        assert!(!prunes(Some(0.06), 0.06));
        assert!(prunes(Some(0.06), 0.0601));
        assert!(prunes(Some(0.06), f32::NAN));
    }
}
