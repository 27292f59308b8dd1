//! Named `f32` tensors to and from safetensors files, written atomically through `reg4rec_data::io`, with a
//! format version and the epoch in the file's metadata and a shape check for every tensor on load.

use crate::error::{BaselineError, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// Version of the checkpoint layout (tensor names, metadata keys, JSON state). Bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Writes `tensors` (any float kind, stored as f32) with `format_version` and `epoch` in the metadata.
pub(crate) fn save(path: &Path, tensors: &[(String, Tensor)], epoch: usize) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let flat = t.to_kind(Kind::Float).flatten(0, -1);
        let values = Vec::<f32>::try_from(&flat)
            .map_err(|e| BaselineError::torch(format!("reading tensor `{name}`"), e))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| BaselineError::checkpoint(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("epoch".to_string(), epoch.to_string()),
    ]);
    let bytes = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| BaselineError::checkpoint(path, format!("cannot serialise: {e}")))?;
    reg4rec_data::io::write_atomic(path, &bytes)?;
    Ok(())
}

/// Copies the file's tensors into `targets` (same names, same shapes, nothing missing or extra) and returns the
/// epoch stored in the metadata.
pub(crate) fn load_into(path: &Path, targets: &[(String, Tensor)]) -> Result<usize> {
    let bytes = std::fs::read(path).map_err(|e| reg4rec_data::DataError::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| BaselineError::checkpoint(path, format!("not a safetensors file: {e}")))?;
    let info = meta.metadata().clone().unwrap_or_default();
    let version = info.get("format_version").map(String::as_str);
    if version != Some(FORMAT_VERSION.to_string().as_str()) {
        return Err(BaselineError::checkpoint(
            path,
            format!("format_version {version:?}, expected {FORMAT_VERSION}"),
        ));
    }
    let epoch = info
        .get("epoch")
        .and_then(|e| e.parse::<usize>().ok())
        .ok_or_else(|| BaselineError::checkpoint(path, "metadata has no numeric `epoch`"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| BaselineError::checkpoint(path, format!("not a safetensors file: {e}")))?;
    if st.len() != targets.len() {
        return Err(BaselineError::checkpoint(
            path,
            format!("{} tensors, the model has {}", st.len(), targets.len()),
        ));
    }
    for (name, dst) in targets {
        let view = st
            .tensor(name)
            .map_err(|_| BaselineError::checkpoint(path, format!("missing tensor `{name}`")))?;
        let expected = dst.size();
        let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if found != expected || view.dtype() != Dtype::F32 {
            return Err(BaselineError::Shape {
                path: path.to_path_buf(),
                name: format!("{name} ({:?})", view.dtype()),
                expected,
                found,
            });
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let src = Tensor::from_slice(&values).view(found.as_slice());
        let mut dst = dst.shallow_clone();
        tch::no_grad(|| dst.f_copy_(&src)).map_err(|e| {
            BaselineError::torch(format!("{}: loading `{name}`", path.display()), e)
        })?;
    }
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape_check() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]);
        save(&p, &[("a".into(), a.shallow_clone())], 7).unwrap();
        let b = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        assert_eq!(
            load_into(&p, &[("a".into(), b.shallow_clone())]).unwrap(),
            7
        );
        assert!(b.equal(&a));
        let wrong = Tensor::zeros([3, 2], (Kind::Float, tch::Device::Cpu));
        let e = load_into(&p, &[("a".into(), wrong)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.safetensors") && e.contains("[3, 2]"), "{e}");
        let e = load_into(&p, &[("b".into(), b)]).unwrap_err().to_string();
        assert!(e.contains("missing tensor `b`"), "{e}");
        std::fs::write(&p, b"garbage").unwrap();
        let e = load_into(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }
}
