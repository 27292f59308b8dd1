//! Compiles `cpp/shim.cpp` against the libtorch headers torch-sys links (its `DEP_TCH_LIBTORCH_LIB`, or
//! `LIBTORCH`), with Gloo's headers from the system (`libgloo-dev`, installed by `cargo xtask setup`).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=REG4REC_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let lib = match std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        Some(l) => PathBuf::from(l),
        None => match std::env::var_os("LIBTORCH") {
            Some(t) => PathBuf::from(t).join("lib"),
            None => panic!(
                "reg4rec-dist: libtorch not found (set LIBTORCH: `eval \"$(cargo xtask env)\"`)"
            ),
        },
    };
    let root = lib.parent().unwrap_or(&lib).to_path_buf();
    let include = root.join("include");
    let gloo = std::env::var_os("GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/config.h").exists() {
        panic!(
            "reg4rec-dist: Gloo headers not found in {} (run `cargo xtask setup`, or `apt-get install libgloo-dev`, \
             or set GLOO_INCLUDE)",
            gloo.display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .file("cpp/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DUSE_C10D_GLOO")
        .flag("-DGLOG_USE_GLOG_EXPORT");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        build
            .flag("-DUSE_C10D_NCCL")
            .flag("-DREG4REC_NCCL")
            .flag("-DUSE_CUDA");
        for dir in cuda_includes(&root) {
            build.include(dir);
        }
        // ProcessGroupNCCL lives in libtorch_cuda (CUDA streams in libc10_cuda).
        println!("cargo:rustc-link-lib=torch_cuda");
        println!("cargo:rustc-link-lib=c10_cuda");
    }
    build.compile("reg4rec_dist_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
}

/// CUDA runtime and NCCL headers: `REG4REC_CUDA_INCLUDE` (colon-separated), `CUDA_HOME/include`, and every
/// `include/` of the NVIDIA wheels beside torch (`site-packages/nvidia/*/include`).
fn cuda_includes(torch: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("REG4REC_CUDA_INCLUDE")
        .map(|s| {
            s.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(home).join("include"));
    }
    if let Some(site) = torch.parent() {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path().join("include")))
                .filter(|p| p.is_dir())
                .collect();
            found.sort();
            dirs.extend(found);
        }
    }
    dirs
}
