//! Item features for the tokenizers (spec §1): per item, a content part and a collaborative part, each
//! L2-normalised, weighted, concatenated and L2-normalised again.
//!
//! - **Content (TF-IDF)**: the item's attribute tokens (`Dataset::item_attributes`: brand and category path for
//!   Amazon; title words, release year and genres for MovieLens). The vocabulary is reduced to a fixed size by
//!   keeping the `tfidf_max_tokens` tokens found in the most items (ties: token order); tokens in fewer than
//!   `tfidf_min_df` items are dropped. tf = count / item's token count, idf = ln((1 + n) / (1 + df)) + 1.
//! - **Collaborative**: from TRAINING interactions only (`LeaveOneOut::train`, never the validation or test
//!   targets): co-occurrence counts of distinct items at most `window` positions apart in a user's training
//!   sequence, positive PMI with context-distribution smoothing (`ppmi_alpha`), then a rank-`cf_dim` truncated
//!   SVD by randomized subspace iteration (Halko, Martinsson & Tropp 2011: `svd_oversample` extra columns,
//!   `svd_power_iters` power iterations, seeded; the linear algebra is `faer`'s), item embedding =
//!   U * S^`singular_power`, each column of U signed so its largest entry is positive.
//!
//! Width: `min(tfidf_max_tokens, vocabulary) + min(cf_dim, n_items)`. An item with neither attribute tokens nor
//! training co-occurrences (a cold item) would have a zero row; it gets a seeded random unit vector instead, so
//! every row has norm 1 and cold items stay distinct.
//!
//! Stored as safetensors: one `f32` tensor `features` of shape `[n_items, dim]` with metadata `format` =
//! `reg4rec-item-features` and `version` = `1`. A user-supplied matrix is accepted with
//! [`ItemFeatures::load_user`].

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::split::LeaveOneOut;
use faer::sparse::linalg::matmul::{sparse_dense_matmul, SparseDenseMatMul};
use faer::sparse::{SparseRowMat, SymbolicSparseRowMat};
use faer::{Accum, Mat, MatRef, Par, RowRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Name of the tensor in the safetensors file.
pub const TENSOR_NAME: &str = "features";
/// `format` metadata value of the files [`ItemFeatures::save`] writes.
pub const FORMAT: &str = "reg4rec-item-features";
/// Current file format version.
pub const VERSION: u32 = 1;
/// Revision of how features are computed: it changes whenever the same data and [`FeatureConfig`] give
/// different features, so caches keyed on it (the pipeline's stages) recompute them. 2: the SVD by faer, with
/// each singular vector's sign fixed.
pub const REVISION: u32 = 2;

/// How item features are built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    /// Size of the TF-IDF vocabulary (the most frequent tokens). Default 512; 0 disables the content part.
    pub tfidf_max_tokens: usize,
    /// Tokens found in fewer items are dropped. Default 1.
    pub tfidf_min_df: usize,
    /// Rank of the collaborative embedding. Default 64; 0 disables the collaborative part.
    pub cf_dim: usize,
    /// Co-occurrence window: items at most this many positions apart co-occur. Default 5.
    pub window: usize,
    /// Context-distribution smoothing exponent of PPMI (Levy et al. 2015), in (0, 1]. Default 0.75.
    pub ppmi_alpha: f64,
    /// Extra columns of the randomized range finder. Default 10.
    pub svd_oversample: usize,
    /// Power (subspace) iterations of the randomized SVD. Default 4.
    pub svd_power_iters: usize,
    /// Item embedding = U * S^singular_power. Default 0.5.
    pub singular_power: f64,
    /// Weight of the (normalised) TF-IDF part before the final normalisation. Default 1.0.
    pub tfidf_weight: f32,
    /// Weight of the (normalised) collaborative part before the final normalisation. Default 1.0.
    pub cf_weight: f32,
    /// Seed of the randomized SVD and of cold items' vectors. Default 42.
    pub seed: u64,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            tfidf_max_tokens: 512,
            tfidf_min_df: 1,
            cf_dim: 64,
            window: 5,
            ppmi_alpha: 0.75,
            svd_oversample: 10,
            svd_power_iters: 4,
            singular_power: 0.5,
            tfidf_weight: 1.0,
            cf_weight: 1.0,
            seed: 42,
        }
    }
}

impl FeatureConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.tfidf_max_tokens == 0 && self.cf_dim == 0 {
            return Err(DataError::config(
                "cf_dim",
                "tfidf_max_tokens and cf_dim are both 0: no features",
            ));
        }
        if self.tfidf_min_df == 0 {
            return Err(DataError::config("tfidf_min_df", "must be at least 1"));
        }
        if self.window == 0 {
            return Err(DataError::config("window", "must be at least 1"));
        }
        if !(self.ppmi_alpha > 0.0 && self.ppmi_alpha <= 1.0) {
            return Err(DataError::config("ppmi_alpha", "must be in (0, 1]"));
        }
        if !(self.singular_power.is_finite() && self.singular_power >= 0.0) {
            return Err(DataError::config(
                "singular_power",
                "must be finite and >= 0",
            ));
        }
        for (field, w) in [
            ("tfidf_weight", self.tfidf_weight),
            ("cf_weight", self.cf_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(DataError::config(field, "must be finite and >= 0"));
            }
        }
        if self.tfidf_weight == 0.0 && self.cf_weight == 0.0 {
            return Err(DataError::config(
                "cf_weight",
                "tfidf_weight and cf_weight are both 0",
            ));
        }
        Ok(())
    }
}

/// A feature matrix: row-major `n_items x dim`, rows L2-normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFeatures {
    pub n_items: usize,
    pub dim: usize,
    pub values: Vec<f32>,
}

impl ItemFeatures {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Writes the matrix as safetensors (atomically, with its checksum: [`crate::tensors`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensor = crate::tensors::NamedTensor {
            name: TENSOR_NAME.into(),
            shape: vec![self.n_items, self.dim],
            values: self.values.clone(),
        };
        crate::tensors::write(
            path,
            &[tensor],
            &[("format", FORMAT), ("version", &VERSION.to_string())],
        )
    }

    /// Reads a file written by [`Self::save`], checking format, version, checksum, shape and norms.
    pub fn load(path: &Path) -> Result<Self> {
        let file = crate::tensors::read(path)?;
        if file.metadata("format") != Some(FORMAT) {
            return Err(DataError::invalid(
                path,
                format!(
                    "not an item-feature file (metadata format = {:?})",
                    file.metadata("format")
                ),
            ));
        }
        if file.metadata("version") != Some(&VERSION.to_string()) {
            return Err(DataError::invalid(
                path,
                format!(
                    "unsupported version {:?} (expected {VERSION})",
                    file.metadata("version")
                ),
            ));
        }
        let f = read_matrix(path, file, Some(TENSOR_NAME))?;
        for i in 0..f.n_items {
            let n = norm(f.row(i));
            if (n - 1.0).abs() > 1e-3 {
                return Err(DataError::invalid(
                    path,
                    format!("row {i} has norm {n}, expected 1 (corrupt file?)"),
                ));
            }
        }
        Ok(f)
    }

    /// Reads a user-supplied feature matrix with `n_items` rows in dense item order: a NumPy `.npy` file (a 2-D
    /// `float32` or `float64` array, C or Fortran order, as `numpy.save` writes it) or a safetensors file holding
    /// one 2-D `f32` tensor (any name). Rows are L2-normalised; all-zero rows are refused.
    pub fn load_user(path: &Path, n_items: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let mut f = if npy {
            read_npy(path, &bytes)?
        } else {
            read_matrix(path, crate::tensors::read_bytes(path, &bytes)?, None)?
        };
        if f.n_items != n_items {
            return Err(DataError::invalid(
                path,
                format!("has {} rows, the dataset has {n_items} items", f.n_items),
            ));
        }
        let dim = f.dim;
        for (i, row) in f.values.chunks_mut(dim).enumerate() {
            let n = norm(row);
            if n == 0.0 {
                return Err(DataError::invalid(path, format!("row {i} is all zeros")));
            }
            row.iter_mut().for_each(|v| *v /= n);
        }
        Ok(f)
    }
}

/// A 2-D float array of a `.npy` buffer, in row-major order, with finite values.
fn read_npy(path: &Path, bytes: &[u8]) -> Result<ItemFeatures> {
    let bad = |m: String| DataError::invalid(path, m);
    let open =
        || npyz::NpyFile::new(bytes).map_err(|e| bad(format!("not a readable .npy file: {e}")));
    let file = open()?;
    let shape = file.shape().to_vec();
    let fortran = file.order() == npyz::Order::Fortran;
    let [rows, cols] = shape[..] else {
        return Err(bad(format!(
            "array shape is {shape:?}, expected (n_items, dim)"
        )));
    };
    let (n_items, dim) = (rows as usize, cols as usize);
    if dim == 0 {
        return Err(bad("dim is 0".into()));
    }
    let values: Vec<f32> = match file.into_vec::<f32>() {
        Ok(v) => v,
        Err(_) => open()?
            .into_vec::<f64>()
            .map_err(|e| bad(format!("expected a float32 or float64 array: {e}")))?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
    };
    let values = if fortran {
        // Column-major: element (i, j) is at j * n_items + i.
        (0..n_items * dim)
            .map(|k| values[(k % dim) * n_items + k / dim])
            .collect()
    } else {
        values
    };
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "value at row {}, column {} is not finite",
            k / dim,
            k % dim
        )));
    }
    Ok(ItemFeatures {
        n_items,
        dim,
        values,
    })
}

#[cfg(test)]
fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn norm(row: &[f32]) -> f32 {
    row.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// The single 2-D f32 tensor of a safetensors file (or the one named `name`), with finite values.
fn read_matrix(
    path: &Path,
    mut file: crate::tensors::TensorFile,
    name: Option<&str>,
) -> Result<ItemFeatures> {
    let tensor = match name {
        Some(n) => file.take(n)?,
        None => {
            if file.len() != 1 {
                return Err(DataError::invalid(
                    path,
                    format!("expected exactly one tensor, found {}", file.len()),
                ));
            }
            file.into_tensors().remove(0)
        }
    };
    let shape = tensor.shape;
    let [n_items, dim] = shape[..] else {
        return Err(DataError::invalid(
            path,
            format!("tensor shape is {shape:?}, expected [n_items, dim]"),
        ));
    };
    if dim == 0 {
        return Err(DataError::invalid(path, "tensor has 0 columns"));
    }
    let values = tensor.values;
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(DataError::invalid(
            path,
            format!("non-finite value at row {}, column {}", k / dim, k % dim),
        ));
    }
    Ok(ItemFeatures {
        n_items,
        dim,
        values,
    })
}

/// Builds the item features of `ds` from its attributes and the TRAINING part of `split` (see the module doc).
pub fn build_item_features(
    ds: &Dataset,
    split: &LeaveOneOut,
    cfg: &FeatureConfig,
) -> Result<ItemFeatures> {
    cfg.validate()?;
    let n = ds.n_items();
    if n == 0 {
        return Err(DataError::Other(format!(
            "dataset `{}` has no items",
            ds.name
        )));
    }
    let pb = crate::progress::bar(3, "features");
    let tfidf = tfidf(&ds.item_attributes, cfg);
    pb.inc(1);
    let cf = if cfg.cf_dim > 0 {
        let ppmi = ppmi(&split.train, n, cfg)?;
        pb.inc(1);
        randomized_svd_embedding(&ppmi, cfg)?
    } else {
        pb.inc(1);
        Mat::zeros(n, 0)
    };
    pb.inc(1);
    pb.finish_and_clear();
    let dim = tfidf.ncols() + cf.ncols();
    let mut values = vec![0f32; n * dim];
    values.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
        let (a, b) = row.split_at_mut(tfidf.ncols());
        fill_normalised(a, tfidf.row(i), cfg.tfidf_weight);
        fill_normalised(b, cf.row(i), cfg.cf_weight);
        let nrm = norm(row);
        if nrm > 0.0 {
            row.iter_mut().for_each(|v| *v /= nrm);
        } else {
            // Cold item: a seeded random unit vector.
            let mut rng = ChaCha8Rng::seed_from_u64(
                cfg.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407),
            );
            row.iter_mut()
                .for_each(|v| *v = rng.gen_range(-1.0f32..1.0));
            let nrm = norm(row).max(f32::MIN_POSITIVE);
            row.iter_mut().for_each(|v| *v /= nrm);
        }
    });
    Ok(ItemFeatures {
        n_items: n,
        dim,
        values,
    })
}

/// Writes `weight * src / |src|` into `dst` (zeros when `src` is zero).
fn fill_normalised(dst: &mut [f32], src: RowRef<'_, f64>, weight: f32) {
    let n = src.norm_l2();
    if n > 0.0 {
        for (d, s) in dst.iter_mut().zip(src.iter()) {
            *d = (s / n) as f32 * weight;
        }
    }
}

/// TF-IDF rows (not normalised) over the reduced vocabulary.
fn tfidf(attributes: &[Vec<String>], cfg: &FeatureConfig) -> Mat<f64> {
    let n = attributes.len();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for toks in attributes {
        let mut uniq: Vec<&str> = toks.iter().map(String::as_str).collect();
        uniq.sort_unstable();
        uniq.dedup();
        for t in uniq {
            *df.entry(t).or_default() += 1;
        }
    }
    let mut vocab: Vec<(&str, usize)> = df
        .into_iter()
        .filter(|&(_, d)| d >= cfg.tfidf_min_df)
        .collect();
    vocab.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    vocab.truncate(cfg.tfidf_max_tokens);
    let col: HashMap<&str, usize> = vocab
        .iter()
        .enumerate()
        .map(|(j, (t, _))| (*t, j))
        .collect();
    let mut out = Mat::zeros(n, vocab.len());
    for (i, toks) in attributes.iter().enumerate() {
        if toks.is_empty() {
            continue;
        }
        let tf = 1.0 / toks.len() as f64;
        for t in toks {
            if let Some(&j) = col.get(t.as_str()) {
                let idf = ((1 + n) as f64 / (1 + vocab[j].1) as f64).ln() + 1.0;
                out[(i, j)] += tf * idf;
            }
        }
    }
    out
}

/// Positive PMI of windowed co-occurrences in the training sequences (`n x n`, not symmetric when
/// `ppmi_alpha < 1`: rows are items, columns contexts).
fn ppmi(train: &[Vec<u32>], n: usize, cfg: &FeatureConfig) -> Result<SparseRowMat<usize, f64>> {
    let mut pairs: Vec<u64> = Vec::new();
    for seq in train {
        for (p, &a) in seq.iter().enumerate() {
            for &b in seq.iter().skip(p + 1).take(cfg.window) {
                if a != b {
                    if a as usize >= n || b as usize >= n {
                        return Err(DataError::Other(format!(
                            "training item index {} out of range (n_items = {n})",
                            a.max(b)
                        )));
                    }
                    pairs.push(((a as u64) << 32) | b as u64);
                    pairs.push(((b as u64) << 32) | a as u64);
                }
            }
        }
    }
    pairs.par_sort_unstable();
    let mut indptr = vec![0usize; n + 1];
    let mut indices = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    let mut k = 0;
    while k < pairs.len() {
        let key = pairs[k];
        let mut m = k;
        while m < pairs.len() && pairs[m] == key {
            m += 1;
        }
        indptr[(key >> 32) as usize + 1] += 1;
        indices.push((key & 0xFFFF_FFFF) as usize);
        counts.push((m - k) as f64);
        k = m;
    }
    for i in 0..n {
        indptr[i + 1] += indptr[i];
    }
    let mut row_sum = vec![0f64; n];
    let mut col_sum = vec![0f64; n];
    for r in 0..n {
        for k in indptr[r]..indptr[r + 1] {
            row_sum[r] += counts[k];
            col_sum[indices[k]] += counts[k];
        }
    }
    let total: f64 = row_sum.iter().sum();
    let ctx_total: f64 = col_sum.iter().map(|c| c.powf(cfg.ppmi_alpha)).sum();
    let mut values = counts;
    for r in 0..n {
        for k in indptr[r]..indptr[r + 1] {
            let c = indices[k];
            let p_rc = values[k] / total;
            let p_r = row_sum[r] / total;
            let p_c = col_sum[c].powf(cfg.ppmi_alpha) / ctx_total;
            values[k] = (p_rc / (p_r * p_c)).ln().max(0.0);
        }
    }
    Ok(SparseRowMat::new(
        SymbolicSparseRowMat::new_checked(n, n, indptr, None, indices),
        values,
    ))
}

/// `a * x` (a sparse row-major or column-major matrix times a dense one).
fn sparse_times(a: impl SparseDenseMatMul<f64>, rows: usize, x: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::zeros(rows, x.ncols());
    sparse_dense_matmul(out.as_mut(), Accum::Replace, a, x, 1.0, Par::Seq);
    out
}

/// An orthonormal basis of the column space of `m` (thin Householder QR).
fn orthonormal(m: Mat<f64>) -> Mat<f64> {
    m.qr().compute_thin_Q()
}

/// Rank-`cf_dim` item embedding `U * S^p` of `a` by randomized subspace iteration (rows not normalised). The
/// linear algebra is faer's, sequential (the same numbers on every run of a machine).
fn randomized_svd_embedding(a: &SparseRowMat<usize, f64>, cfg: &FeatureConfig) -> Result<Mat<f64>> {
    let n = a.nrows();
    let k = cfg.cf_dim.min(n);
    let l = (k + cfg.svd_oversample).min(n);
    let at = a.as_ref().transpose();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Column by column, as the seeded stream is drawn.
    let draws: Vec<f64> = (0..n * l).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let omega = Mat::from_fn(n, l, |i, j| draws[j * n + i]);
    let mut q = orthonormal(sparse_times(a.as_ref(), n, omega.as_ref()));
    for _ in 0..cfg.svd_power_iters {
        let z = orthonormal(sparse_times(at, n, q.as_ref()));
        q = orthonormal(sparse_times(a.as_ref(), n, z.as_ref()));
    }
    // B = Q^T A = W^T with W = A^T Q; W = U_w S V_w^T gives A ~ Q B = (Q V_w) S U_w^T.
    let w = sparse_times(at, n, q.as_ref());
    let svd = w.thin_svd().map_err(|e| {
        DataError::Other(format!("the SVD of the co-occurrence sketch failed: {e:?}"))
    })?;
    let u = &q * svd.V();
    let s = svd.S().column_vector();
    // A singular vector's sign is arbitrary; fix it so each column's largest entry (first on ties) is positive,
    // which makes the features independent of the solver's choice.
    let scale: Vec<f64> = (0..k)
        .map(|c| {
            let col = u.col(c);
            let big = (0..n).fold(0, |b, r| if col[r].abs() > col[b].abs() { r } else { b });
            col[big].signum() * s[c].max(0.0).powf(cfg.singular_power)
        })
        .collect();
    Ok(Mat::from_fn(n, k, |r, c| u[(r, c)] * scale[c]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 12 items in 3 attribute groups; sequences that make items 4 and 5 interchangeable.
    fn toy(seqs: Vec<Vec<u32>>) -> Dataset {
        let n_items = 12;
        let attrs = (0..n_items)
            .map(|i| match i {
                4 | 5 => vec!["brand=x".to_string(), "cat=a".to_string()],
                i if i % 3 == 0 => vec!["cat=a".to_string(), format!("w{i}")],
                i if i % 3 == 1 => vec!["cat=b".to_string()],
                _ => vec![],
            })
            .collect();
        Dataset {
            name: "toy".into(),
            user_ids: (0..seqs.len()).map(|u| u.to_string()).collect(),
            sequences: seqs,
            item_ids: (0..n_items).map(|i| i.to_string()).collect(),
            item_category: vec![0; n_items],
            category_names: vec!["all".into()],
            item_attributes: attrs,
            item_names: Vec::new(),
        }
    }

    fn seqs() -> Vec<Vec<u32>> {
        vec![
            vec![0, 4, 1, 7, 8, 2],
            vec![0, 5, 1, 7, 8, 2],
            vec![3, 6, 9, 10, 0, 1],
            vec![2, 9, 3, 6, 11, 4],
            vec![6, 3, 9, 10, 1, 5],
            vec![7, 8, 2, 0, 10, 11],
        ]
    }

    fn small_cfg() -> FeatureConfig {
        FeatureConfig {
            cf_dim: 4,
            window: 2,
            ..FeatureConfig::default()
        }
    }

    #[test]
    fn shapes_and_unit_rows() {
        let ds = toy(seqs());
        let split = LeaveOneOut::new(&ds);
        let f = build_item_features(&ds, &split, &small_cfg()).unwrap();
        // vocabulary: cat=a, cat=b, brand=x, w0, w3, w6, w9 (7 tokens) + 4 collaborative columns.
        assert_eq!((f.n_items, f.dim, f.values.len()), (12, 11, 132));
        for i in 0..f.n_items {
            assert!((norm(f.row(i)) - 1.0).abs() < 1e-5, "row {i}");
        }
        let f2 = build_item_features(
            &ds,
            &split,
            &FeatureConfig {
                tfidf_max_tokens: 2,
                ..small_cfg()
            },
        )
        .unwrap();
        assert_eq!(f2.dim, 6);
        let e = build_item_features(
            &ds,
            &split,
            &FeatureConfig {
                window: 0,
                ..small_cfg()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("window"), "{e}");
    }

    #[test]
    fn held_out_items_do_not_leak_into_features() {
        let ds = toy(seqs());
        let split = LeaveOneOut::new(&ds);
        let f = build_item_features(&ds, &split, &small_cfg()).unwrap();
        let mut changed = seqs();
        // Replace user 0's validation and test items (last two) with others.
        let n = changed[0].len();
        changed[0][n - 2] = 11;
        changed[0][n - 1] = 3;
        let ds2 = toy(changed);
        let split2 = LeaveOneOut::new(&ds2);
        assert_ne!(split.valid, split2.valid);
        let f2 = build_item_features(&ds2, &split2, &small_cfg()).unwrap();
        assert_eq!(f, f2);
        // ...whereas changing a training item does change them.
        let mut t = seqs();
        t[0][1] = 10;
        let ds3 = toy(t);
        let f3 = build_item_features(&ds3, &LeaveOneOut::new(&ds3), &small_cfg()).unwrap();
        assert_ne!(f, f3);
    }

    #[test]
    fn interchangeable_items_get_near_identical_features() {
        let ds = toy(seqs());
        let split = LeaveOneOut::new(&ds);
        // Items 4 and 5 share attributes; in the training parts they sit between 0 and 1 (users 0/1) and
        // appear nowhere else (users 3/4 hold them out as test targets).
        let f = build_item_features(&ds, &split, &small_cfg()).unwrap();
        let cos = |a: usize, b: usize| dot32(f.row(a), f.row(b));
        assert!(cos(4, 5) > 0.999, "cos(4,5) = {}", cos(4, 5));
        assert!(cos(4, 10) < 0.9, "cos(4,10) = {}", cos(4, 10));
    }

    fn dot32(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn randomized_svd_recovers_a_low_rank_matrix() {
        // A = u v^T * 3 + w z^T * 1 (rank 2) as CSR; the top singular values must be found.
        let n = 30;
        let u: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 10.0).collect();
        let w: Vec<f64> = (0..n).map(|i| ((i * 3 % 5) as f64 - 2.0) / 4.0).collect();
        let mut dense = vec![0f64; n * n];
        for r in 0..n {
            for c in 0..n {
                dense[r * n + c] = 3.0 * u[r] * u[c] + w[r] * w[c];
            }
        }
        let mut indptr = vec![0];
        let (mut indices, mut values) = (vec![], vec![]);
        for r in 0..n {
            for c in 0..n {
                if dense[r * n + c] != 0.0 {
                    indices.push(c);
                    values.push(dense[r * n + c]);
                }
            }
            indptr.push(indices.len());
        }
        let a = SparseRowMat::new(
            SymbolicSparseRowMat::new_checked(n, n, indptr, None, indices),
            values,
        );
        let cfg = FeatureConfig {
            cf_dim: 2,
            singular_power: 1.0,
            ..FeatureConfig::default()
        };
        let e = randomized_svd_embedding(&a, &cfg).unwrap();
        // |U[:,c] * s_c| = s_c.
        let norms: Vec<f64> = (0..2).map(|c| e.col(c).norm_l2()).collect();
        let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
        let su = 3.0 * dot(&u, &u);
        let sw = dot(&w, &w);
        // |U[:,c] * s_c| = s_c; the two singular values of A are the eigenvalues of the 2x2 Gram problem.
        let uw = dot(&u, &w);
        let tr = su + sw;
        let det = su * sw - 3.0 * uw * uw;
        let l1 = tr / 2.0 + ((tr * tr / 4.0) - det).sqrt();
        let l2 = tr / 2.0 - ((tr * tr / 4.0) - det).sqrt();
        assert!((norms[0] - l1).abs() < 1e-6 * l1, "{norms:?} vs {l1}");
        assert!((norms[1] - l2).abs() < 1e-6 * l1, "{norms:?} vs {l2}");
        for c in 0..2 {
            let col: Vec<f64> = e.col(c).iter().copied().collect();
            let big = col.iter().map(|v| v.abs()).fold(0.0, f64::max);
            assert!(col.contains(&big), "column {c}'s largest entry is negative");
        }
    }

    #[test]
    fn save_load_roundtrip_and_bad_files() {
        let ds = toy(seqs());
        let f = build_item_features(&ds, &LeaveOneOut::new(&ds), &small_cfg()).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.safetensors");
        f.save(&p).unwrap();
        assert_eq!(ItemFeatures::load(&p).unwrap(), f);
        // A user file: same content, any tensor name, wrong row count refused.
        let u = ItemFeatures::load_user(&p, 12).unwrap();
        assert_eq!((u.n_items, u.dim), (f.n_items, f.dim));
        assert!(u
            .values
            .iter()
            .zip(&f.values)
            .all(|(a, b)| (a - b).abs() < 1e-6));
        let e = ItemFeatures::load_user(&p, 13).unwrap_err().to_string();
        assert!(e.contains("f.safetensors") && e.contains("12 rows"), "{e}");
        // Truncated file.
        let bytes = std::fs::read(&p).unwrap();
        let bad = d.path().join("bad.safetensors");
        std::fs::write(&bad, &bytes[..bytes.len() - 10]).unwrap();
        let e = ItemFeatures::load(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.safetensors"), "{e}");
        std::fs::write(&bad, b"garbage").unwrap();
        let e = ItemFeatures::load(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("safetensors"),
            "{e}"
        );
        // A 3-D user tensor, and a wrong dtype.
        let write = |shape: Vec<usize>, dtype: safetensors::Dtype, data: Vec<u8>| {
            let v = safetensors::tensor::TensorView::new(dtype, shape, &data).unwrap();
            std::fs::write(&bad, safetensors::serialize([("x", v)], &None).unwrap()).unwrap();
        };
        write(
            vec![2, 2, 1],
            safetensors::Dtype::F32,
            to_bytes(&[1.0, 0.0, 0.0, 1.0]),
        );
        let e = ItemFeatures::load_user(&bad, 2).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
        write(vec![2, 1], safetensors::Dtype::I32, vec![0; 8]);
        let e = ItemFeatures::load_user(&bad, 2).unwrap_err().to_string();
        assert!(e.contains("dtype"), "{e}");
        // A user matrix is normalised; zero rows and NaNs are refused; it is not a reg4rec file.
        write(
            vec![2, 2],
            safetensors::Dtype::F32,
            to_bytes(&[3.0, 4.0, 0.0, 2.0]),
        );
        let u = ItemFeatures::load_user(&bad, 2).unwrap();
        assert_eq!(u.values, vec![0.6, 0.8, 0.0, 1.0]);
        let e = ItemFeatures::load(&bad).unwrap_err().to_string();
        assert!(e.contains("not an item-feature file"), "{e}");
        write(
            vec![2, 2],
            safetensors::Dtype::F32,
            to_bytes(&[3.0, 4.0, 0.0, 0.0]),
        );
        let e = ItemFeatures::load_user(&bad, 2).unwrap_err().to_string();
        assert!(e.contains("row 1"), "{e}");
        write(
            vec![2, 2],
            safetensors::Dtype::F32,
            to_bytes(&[3.0, f32::NAN, 0.0, 1.0]),
        );
        let e = ItemFeatures::load_user(&bad, 2).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("row 0"), "{e}");
    }

    /// A `.npy` file as `numpy.save` writes it (format 1.0, little-endian): `descr` `<f4` or `<f8`.
    fn npy(descr: &str, fortran: bool, shape: (usize, usize), data: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {order}, 'shape': ({}, {}), }}",
            shape.0, shape.1
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn numpy_feature_files_load_in_either_order_and_precision() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("emb.npy");
        // Rows (3, 4) and (0, 2), as float32 in C order, float64 in C order, float32 in Fortran order.
        let f64_bytes: Vec<u8> = [3.0f64, 4.0, 0.0, 2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        for bytes in [
            npy("<f4", false, (2, 2), &to_bytes(&[3.0, 4.0, 0.0, 2.0])),
            npy("<f8", false, (2, 2), &f64_bytes),
            npy("<f4", true, (2, 2), &to_bytes(&[3.0, 0.0, 4.0, 2.0])),
        ] {
            std::fs::write(&p, bytes).unwrap();
            let u = ItemFeatures::load_user(&p, 2).unwrap();
            assert_eq!((u.n_items, u.dim), (2, 2));
            assert_eq!(u.values, vec![0.6, 0.8, 0.0, 1.0]);
        }
        for (bytes, want) in [
            (
                npy("<f4", false, (2, 2), &to_bytes(&[1.0, 0.0, 0.0, 1.0])),
                "has 2 rows",
            ),
            (npy("<i4", false, (3, 1), &[0; 12]), "float32 or float64"),
            (
                npy("<f4", false, (3, 1), &to_bytes(&[1.0, f32::NAN, 1.0])),
                "row 1",
            ),
            (b"not numpy".to_vec(), "not a readable .npy"),
        ] {
            std::fs::write(&p, bytes).unwrap();
            let e = ItemFeatures::load_user(&p, 3).unwrap_err().to_string();
            assert!(e.contains("emb.npy") && e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: FeatureConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, FeatureConfig::default());
        c.validate().unwrap();
        let e = serde_json::from_str::<FeatureConfig>(r#"{"cf_dims": 3}"#).unwrap_err();
        assert!(e.to_string().contains("cf_dims"), "{e}");
        let bad = FeatureConfig {
            ppmi_alpha: 0.0,
            ..FeatureConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ppmi_alpha"));
        let bad = FeatureConfig {
            tfidf_weight: 0.0,
            cf_weight: 0.0,
            ..FeatureConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cf_weight"));
    }

    /// Builds features for the real Amazon Beauty mirror and reports the time (release: see the crate docs).
    #[test]
    fn amazon_beauty_features_build() {
        let o = crate::registry::LoadOptions {
            download: false,
            ..Default::default()
        };
        if crate::registry::benchmark_mirror("amazon-beauty")
            .unwrap()
            .is_none()
        {
            eprintln!("note: skipped: no amazon-beauty mirror (set REG4REC_DATA_DIR)");
            return;
        }
        let ds = crate::registry::load("amazon-beauty", &o).unwrap();
        let split = LeaveOneOut::new(&ds);
        let t = std::time::Instant::now();
        let f = build_item_features(&ds, &split, &FeatureConfig::default()).unwrap();
        eprintln!(
            "amazon-beauty features: {} x {} in {:.2?}",
            f.n_items,
            f.dim,
            t.elapsed()
        );
        assert_eq!((f.n_items, f.dim), (12101, 512 + 64));
        assert!((0..f.n_items).all(|i| (norm(f.row(i)) - 1.0).abs() < 1e-4));
    }
}
