//! Named `f32` tensors in safetensors files: the one reader and writer of the workspace (item features,
//! tokenizer weights, model and SASRec checkpoints, optimizer moments).
//!
//! - Files are written atomically ([`crate::io::write_atomic`]) with the caller's metadata plus `sha256`, a
//!   digest of every tensor's name, shape and data (in name order); reading verifies it when present, so a
//!   flipped byte is an error naming the file, never silently different weights.
//! - Every tensor is stored as little-endian `f32`; reading refuses other dtypes, naming the tensor.
//! - With the `tch` feature, `save_tch` and `load_into_tch` move libtorch tensors (any float kind, stored as
//!   `f32`) in and out, checking that the file holds exactly the expected names and shapes.
//!
//! ```
//! use reg4rec_data::tensors::{read, write, NamedTensor};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("w.safetensors");
//! let w = NamedTensor { name: "w".into(), shape: vec![2, 2], values: vec![1.0, 2.0, 3.0, 4.0] };
//! write(&path, &[w.clone()], &[("epoch", "3")])?;
//! let mut file = read(&path)?;
//! assert_eq!(file.metadata("epoch"), Some("3"));
//! assert_eq!(file.take("w")?, w);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::{DataError, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Metadata key of the digest over a file's tensors.
pub const SHA256_KEY: &str = "sha256";

/// One `f32` tensor: its name, shape and values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The contents of a safetensors file read by [`read()`]: its metadata and its tensors by name.
#[derive(Debug, Clone)]
pub struct TensorFile {
    pub path: PathBuf,
    metadata: HashMap<String, String>,
    tensors: BTreeMap<String, NamedTensor>,
}

impl TensorFile {
    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The tensor names left in the file, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Removes and returns tensor `name`; its absence is an error naming the file.
    pub fn take(&mut self, name: &str) -> Result<NamedTensor> {
        self.tensors
            .remove(name)
            .ok_or_else(|| DataError::invalid(&self.path, format!("missing tensor `{name}`")))
    }

    /// Every tensor, in name order.
    pub fn into_tensors(self) -> Vec<NamedTensor> {
        self.tensors.into_values().collect()
    }

    /// An error naming the file when tensors are left after the expected ones were taken.
    pub fn expect_empty(&self) -> Result<()> {
        match self.tensors.keys().next() {
            Some(extra) => Err(DataError::invalid(
                &self.path,
                format!("unexpected tensor `{extra}`"),
            )),
            None => Ok(()),
        }
    }
}

/// The sha256 (hex) of tensors given as (name, shape, little-endian bytes), in name order.
fn digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, shape, bytes) in sorted {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("{:x}", h.finalize())
}

/// Writes `tensors` as one safetensors file, atomically, with `metadata` and the [`SHA256_KEY`] digest.
pub fn write(path: &Path, tensors: &[NamedTensor], metadata: &[(&str, &str)]) -> Result<()> {
    let mut raw: Vec<(&str, &[usize], Vec<u8>)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(DataError::invalid(
                path,
                format!(
                    "tensor `{}`: {} values for shape {:?}",
                    t.name,
                    t.values.len(),
                    t.shape
                ),
            ));
        }
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((t.name.as_str(), t.shape.as_slice(), bytes));
    }
    let views = raw
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.to_vec(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| DataError::invalid(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    meta.insert(
        SHA256_KEY.into(),
        digest(raw.iter().map(|(n, s, b)| (*n, *s, b.as_slice()))),
    );
    let bytes = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| DataError::invalid(path, format!("cannot serialise: {e}")))?;
    crate::io::write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file, verifying the [`SHA256_KEY`] digest when the file records one.
pub fn read(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    read_bytes(path, &bytes)
}

/// [`read()`] from bytes already in memory (`path` names them in errors).
pub fn read_bytes(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
    let not_st = |e: safetensors::SafeTensorError| {
        DataError::invalid(
            path,
            format!("not a readable safetensors file (truncated or corrupt?): {e}"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_st)?;
    let st = SafeTensors::deserialize(bytes).map_err(not_st)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let views = st.tensors();
    if let Some(want) = metadata.get(SHA256_KEY) {
        let got = digest(views.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())));
        if &got != want {
            return Err(DataError::Checksum {
                path: path.to_path_buf(),
                expected: want.clone(),
                found: format!("{got} (the file is corrupt)"),
            });
        }
    }
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        if view.dtype() != Dtype::F32 {
            return Err(DataError::invalid(
                path,
                format!("tensor `{name}` has dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let shape = view.shape().to_vec();
        tensors.insert(
            name.clone(),
            NamedTensor {
                name,
                shape,
                values,
            },
        );
    }
    Ok(TensorFile {
        path: path.to_path_buf(),
        metadata,
        tensors,
    })
}

/// Writes libtorch tensors (any float kind, on any device; stored as `f32`) with `metadata`, as [`write()`].
#[cfg(feature = "tch")]
pub fn save_tch(
    path: &Path,
    tensors: &[(String, tch::Tensor)],
    metadata: &[(&str, &str)],
) -> Result<()> {
    let mut named = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let flat = t
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Float)
            .contiguous()
            .view([-1]);
        let values = Vec::<f32>::try_from(&flat)
            .map_err(|e| DataError::invalid(path, format!("reading tensor `{name}`: {e}")))?;
        named.push(NamedTensor {
            name: name.clone(),
            shape: t.size().iter().map(|&d| d as usize).collect(),
            values,
        });
    }
    write(path, &named, metadata)
}

/// A file tensor as a libtorch tensor on the CPU.
#[cfg(feature = "tch")]
pub fn to_tch(t: &NamedTensor) -> tch::Tensor {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(&t.values).view(shape.as_slice())
}

/// Copies the tensors of a file into `targets` (each copied in place, on its own device and kind): the file
/// must hold exactly these names, each with the target's shape. Returns the file with its metadata (and no
/// tensors left).
#[cfg(feature = "tch")]
pub fn load_into_tch(path: &Path, targets: &[(String, tch::Tensor)]) -> Result<TensorFile> {
    let mut file = read(path)?;
    for (name, dst) in targets {
        let src = file.take(name)?;
        let found: Vec<i64> = src.shape.iter().map(|&d| d as i64).collect();
        if found != dst.size() {
            return Err(DataError::invalid(
                path,
                format!(
                    "tensor `{name}` has shape {found:?}, expected {:?}",
                    dst.size()
                ),
            ));
        }
        let mut dst = dst.shallow_clone();
        tch::no_grad(|| dst.f_copy_(&to_tch(&src)))
            .map_err(|e| DataError::invalid(path, format!("loading tensor `{name}`: {e}")))?;
    }
    file.expect_empty()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: Vec<usize>) -> NamedTensor {
        let n = shape.iter().product::<usize>();
        NamedTensor {
            name: name.into(),
            shape,
            values: (0..n).map(|i| i as f32 * 0.5 - 1.0).collect(),
        }
    }

    #[test]
    fn round_trip_keeps_names_shapes_values_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        let (a, b) = (t("b.weight", vec![2, 3]), t("a.bias", vec![3]));
        write(&p, &[a.clone(), b.clone()], &[("format_version", "3")]).unwrap();
        let mut f = read(&p).unwrap();
        assert_eq!(f.metadata("format_version"), Some("3"));
        assert!(f.metadata(SHA256_KEY).is_some());
        assert_eq!(f.names().collect::<Vec<_>>(), ["a.bias", "b.weight"]);
        assert_eq!(f.take("b.weight").unwrap(), a);
        assert!(f
            .expect_empty()
            .unwrap_err()
            .to_string()
            .contains("`a.bias`"));
        assert_eq!(f.take("a.bias").unwrap(), b);
        let e = f.take("a.bias").unwrap_err().to_string();
        assert!(
            e.contains("a.safetensors") && e.contains("missing tensor `a.bias`"),
            "{e}"
        );
    }

    #[test]
    fn a_flipped_byte_a_bad_shape_and_garbage_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        write(&p, &[t("w", vec![4, 4])], &[]).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("corrupt"), "{e}");

        let bad = NamedTensor {
            values: vec![0.0; 3],
            ..t("w", vec![2, 2])
        };
        let e = write(&p, &[bad], &[]).unwrap_err().to_string();
        assert!(e.contains("3 values for shape [2, 2]"), "{e}");

        std::fs::write(&p, b"garbage").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("w.safetensors") && e.contains("safetensors"),
            "{e}"
        );
        let e = read(&dir.path().join("none")).unwrap_err().to_string();
        assert!(e.contains("none"), "{e}");
    }

    #[test]
    fn other_dtypes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.safetensors");
        let data = vec![0u8; 8];
        let v = TensorView::new(Dtype::I32, vec![2], &data).unwrap();
        std::fs::write(&p, safetensors::serialize([("ids", v)], &None).unwrap()).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("tensor `ids` has dtype I32"), "{e}");
    }

    #[cfg(feature = "tch")]
    #[test]
    fn libtorch_tensors_load_into_targets_of_the_same_names_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
        save_tch(&p, &[("a".into(), a.shallow_clone())], &[("epoch", "7")]).unwrap();
        let b = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let f = load_into_tch(&p, &[("a".into(), b.shallow_clone())]).unwrap();
        assert_eq!(f.metadata("epoch"), Some("7"));
        assert!(b.equal(&a));
        let wrong = tch::Tensor::zeros([3, 2], (tch::Kind::Float, tch::Device::Cpu));
        let e = load_into_tch(&p, &[("a".into(), wrong)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("[2, 3], expected [3, 2]"),
            "{e}"
        );
        let e = load_into_tch(&p, &[("b".into(), b)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing tensor `b`"), "{e}");
        let e = load_into_tch(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("unexpected tensor `a`"), "{e}");
    }
}
