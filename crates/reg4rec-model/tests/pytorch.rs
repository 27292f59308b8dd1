//! Checkpoints are safetensors files that PyTorch reads, and files PyTorch writes load back: a model's weights
//! go through Python's torch and the `safetensors` package (`tests/support/pytorch_roundtrip.py`), which report
//! every tensor's name, dtype, shape and values and save every tensor doubled.
//!
//! The Python comes from `$REG4REC_TORCH_PYTHON`: `cargo xtask test` installs torch 2.11.0, safetensors and numpy
//! into `target/torch-python` and sets it (the lean libtorch in `.venv` cannot `import torch`).

use reg4rec_model::checkpoint::{load_weights, save_weights};
use reg4rec_model::{ModelConfig, Reg4RecModel};
use reg4rec_tokenizer::Codes;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tch::{Device, Tensor};

fn python() -> String {
    std::env::var("REG4REC_TORCH_PYTHON").unwrap_or_else(|_| {
        panic!(
            "REG4REC_TORCH_PYTHON is not set: run the tests with `cargo xtask test`, which installs PyTorch \
             for this test, or point it at a Python that can `import numpy, torch, safetensors`"
        )
    })
}

fn model(seed: i64) -> Reg4RecModel {
    let (m, d, n) = (3usize, 4usize, 20usize);
    let tuples = (0..n)
        .flat_map(|i| [(i % d) as u16, ((i / d) % d) as u16, (i / (d * d)) as u16])
        .collect();
    let codes = Codes::new(m, d, false, tuples).unwrap();
    let _guard = reg4rec_model::torch_rng_lock();
    tch::manual_seed(seed);
    Reg4RecModel::new(
        &ModelConfig::preset("smoke").unwrap(),
        &codes,
        3,
        Device::Cpu,
    )
    .unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    let t = t.flatten(0, -1);
    let mut v = vec![0f32; t.numel()];
    t.copy_data(&mut v, t.numel());
    v
}

#[test]
fn pytorch_reads_checkpoints_and_its_files_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, seen, doubled) = (
        dir.path().join("model.safetensors"),
        dir.path().join("seen.json"),
        dir.path().join("doubled.safetensors"),
    );
    let original = model(5);
    save_weights(&original, &ckpt).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pytorch_roundtrip.py");
    // The test binary's library path names the lean libtorch; Python's torch finds its own libraries.
    let out = Command::new(python())
        .env_remove("LD_LIBRARY_PATH")
        .arg(&script)
        .args([&ckpt, &seen, &doubled])
        .output()
        .expect("run Python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let seen: Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert!(
        seen["torch"].as_str().unwrap().starts_with("2.11.0"),
        "{}",
        seen["torch"]
    );
    assert!(
        seen["metadata"]["sha256"].is_string(),
        "{}",
        seen["metadata"]
    );
    let tensors = seen["tensors"].as_object().unwrap();
    let vars = original.var_store().variables();
    let mut want: Vec<&String> = vars.keys().collect();
    let mut got: Vec<&String> = tensors.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "names");
    for (name, var) in &vars {
        let t = &tensors[name];
        assert_eq!(t["dtype"], "torch.float32", "{name}");
        let shape: Vec<i64> = serde_json::from_value(t["shape"].clone()).unwrap();
        assert_eq!(shape, var.size(), "{name}");
        let v: Vec<f64> = serde_json::from_value(t["values"].clone()).unwrap();
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        assert_eq!(v, values(var), "{name}: values");
    }

    // What PyTorch saved (no metadata, so no recorded checksum) loads into a model of the same shape.
    let mut loaded = model(6);
    load_weights(&mut loaded, &doubled).unwrap();
    let loaded_vars = loaded.var_store().variables();
    for (name, var) in &vars {
        let twice: Vec<f32> = values(var).iter().map(|x| x * 2.0).collect();
        assert_eq!(
            values(&loaded_vars[name]),
            twice,
            "{name}: PyTorch's doubled values"
        );
    }
}
