//! One vector-quantisation codebook shared by MPQ (one per expert) and RQ-VAE (one per residual level):
//! nearest-codeword lookup, codebook and commitment losses with the straight-through estimator (van den Oord et
//! al., 2017), k-means initialisation and dead-code restarts.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Kind, Tensor};

/// `d` codewords of size `d_z`, the variable `p / "codebook"`.
pub(crate) struct Codebook {
    /// [d, d_z]
    pub embed: Tensor,
}

/// A batch quantised by one codebook.
pub(crate) struct Quantised {
    /// Chosen code per row. [batch] (i64)
    pub codes: Tensor,
    /// The chosen codewords, with gradient to the codebook. [batch, d_z]
    pub codewords: Tensor,
    /// `x + sg(codeword - x)`: the codeword forward, the identity backward. [batch, d_z]
    pub straight_through: Tensor,
    /// `||sg(x) - c||^2` summed over d_z, averaged over the batch (moves codewords to their inputs).
    pub codebook_loss: Tensor,
    /// `||x - sg(c)||^2` summed over d_z, averaged over the batch (keeps inputs near their codewords).
    pub commitment_loss: Tensor,
}

impl Codebook {
    pub fn new(p: nn::Path, d: i64, d_z: i64) -> Self {
        let stdev = 1.0 / (d_z as f64).sqrt();
        let embed = p.var("codebook", &[d, d_z], nn::Init::Randn { mean: 0.0, stdev });
        Codebook { embed }
    }

    /// Squared Euclidean distance from every row of `x` to every codeword. [batch, d]
    pub fn distances(&self, x: &Tensor) -> Tensor {
        let x2 = x
            .pow_tensor_scalar(2)
            .sum_dim_intlist(-1, true, Kind::Float); // [batch, 1]
        let c2 = self
            .embed
            .pow_tensor_scalar(2)
            .sum_dim_intlist(-1, false, Kind::Float)
            .unsqueeze(0); // [1, d]
        (x2 - x.matmul(&self.embed.tr()) * 2.0 + c2).clamp_min(0.0)
    }

    /// Soft assignment of every row of `x` [batch, d_z] to the codewords: softmax over codes of
    /// `-distance / (temperature * the row's mean distance to all codes)` (scale-free). The codewords are
    /// detached: the gradient moves only `x`. [batch, d]
    pub fn soft_assign(&self, x: &Tensor, temperature: f64) -> Tensor {
        let c = self.embed.detach();
        let dist = distances_to(x, &c);
        let scale = dist
            .mean_dim(-1, true, Kind::Float)
            .detach()
            .clamp_min(1e-12)
            * temperature;
        (-dist / scale).softmax(-1, Kind::Float)
    }

    /// Nearest codeword of every row of `x` [batch, d_z], with the VQ losses.
    pub fn quantise(&self, x: &Tensor) -> Quantised {
        let codes = tch::no_grad(|| self.distances(x).argmin(-1, false)); // [batch]
        let codewords = self.embed.index_select(0, &codes); // [batch, d_z]
        let straight_through = x + (&codewords - x).detach();
        let per_row = |t: Tensor| {
            t.pow_tensor_scalar(2)
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float)
        };
        let codebook_loss = per_row(&codewords - x.detach());
        let commitment_loss = per_row(x - codewords.detach());
        Quantised {
            codes,
            codewords,
            straight_through,
            codebook_loss,
            commitment_loss,
        }
    }

    /// Sets the codewords to a k-means clustering of `data` [n, d_z]: seeded distinct-row initialisation,
    /// `iters` Lloyd steps, empty clusters re-seeded at the rows farthest from their centroid.
    pub fn kmeans_init(&self, data: &Tensor, iters: usize, rng: &mut ChaCha8Rng) {
        tch::no_grad(|| {
            let data = data.detach().to_kind(Kind::Float);
            let n = data.size()[0];
            let (d, d_z) = (self.embed.size()[0], self.embed.size()[1]);
            let mut rows: Vec<i64> = (0..n).collect();
            rows.shuffle(rng);
            let picks: Vec<i64> = (0..d).map(|j| rows[(j % n.max(1)) as usize]).collect();
            let mut centroids = data.index_select(0, &Tensor::from_slice(&picks));
            if n < d {
                // Fewer rows than codes: duplicates get a little noise so they can separate (drawn from `rng`, not
                // libtorch's process-global generator, so concurrent trainings stay reproducible).
                let noise: Vec<f32> = (0..d * d_z).map(|_| rng.gen_range(-1e-3..1e-3)).collect();
                centroids += Tensor::from_slice(&noise)
                    .view([d, d_z])
                    .to_device(data.device());
            }
            for _ in 0..iters {
                let dist = distances_to(&data, &centroids); // [n, d]
                let (min_dist, assign) = dist.min_dim(-1, false);
                let sums = Tensor::zeros([d, d_z], (Kind::Float, data.device()))
                    .index_add(0, &assign, &data);
                let counts = Tensor::zeros([d], (Kind::Float, data.device())).index_add(
                    0,
                    &assign,
                    &Tensor::ones([n], (Kind::Float, data.device())),
                );
                let counts_v: Vec<f32> = Vec::try_from(&counts).unwrap_or_default();
                centroids = &sums / counts.clamp_min(1.0).unsqueeze(-1);
                let empty: Vec<i64> = counts_v
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c == 0.0)
                    .map(|(j, _)| j as i64)
                    .collect();
                if !empty.is_empty() {
                    let far = min_dist
                        .argsort(0, true)
                        .narrow(0, 0, (empty.len() as i64).min(n));
                    let k = far.size()[0];
                    let idx = Tensor::from_slice(&empty[..k as usize]);
                    centroids = centroids.index_copy(0, &idx, &data.index_select(0, &far));
                }
            }
            let mut embed = self.embed.shallow_clone();
            embed.copy_(&centroids);
        });
    }

    /// Moves each code in `dead` onto a row of `data` [n, d_z] drawn with probability proportional to the row's
    /// squared distance to its nearest codeword (so restarts land where the codebook fits worst), without
    /// replacement.
    pub fn restart(&self, dead: &[i64], data: &Tensor, rng: &mut ChaCha8Rng) {
        if dead.is_empty() {
            return;
        }
        tch::no_grad(|| {
            let min_dist = self.distances(data).min_dim(-1, false).0;
            let mut w: Vec<f64> = Vec::<f32>::try_from(&min_dist)
                .unwrap_or_default()
                .into_iter()
                .map(|x| x.max(0.0) as f64)
                .collect();
            let mut picks = Vec::with_capacity(dead.len());
            for _ in dead {
                let total: f64 = w.iter().sum();
                let pick = if total > 0.0 {
                    let mut u = rng.gen::<f64>() * total;
                    let mut k = w.len() - 1;
                    for (i, &wi) in w.iter().enumerate() {
                        if u < wi {
                            k = i;
                            break;
                        }
                        u -= wi;
                    }
                    k
                } else {
                    rng.gen_range(0..w.len())
                };
                w[pick] = 0.0;
                picks.push(pick as i64);
            }
            let rows = data.index_select(0, &Tensor::from_slice(&picks));
            let mut embed = self.embed.shallow_clone();
            let _ = embed.index_copy_(0, &Tensor::from_slice(dead), &rows);
        });
    }
}

/// Squared distances between rows of `a` [n, k] and `b` [d, k]. [n, d]
fn distances_to(a: &Tensor, b: &Tensor) -> Tensor {
    let a2 = a
        .pow_tensor_scalar(2)
        .sum_dim_intlist(-1, true, Kind::Float);
    let b2 = b
        .pow_tensor_scalar(2)
        .sum_dim_intlist(-1, false, Kind::Float)
        .unsqueeze(0);
    (a2 - a.matmul(&b.tr()) * 2.0 + b2).clamp_min(0.0)
}
