#!/usr/bin/env bash
# LADQ throughput on a CUDA machine: the LADQ testbed (pre-norm transformer blocks of LADQ layers) trained for a
# few steps under fp32, bf16, ladq and all-fp8, printing examples/s per precision (and whether fp8 ran on the real
# `_scaled_mm` kernel or fell back to emulation).
#
# Two halves, because the GPU machine has no Rust:
#   crates/reg4rec-precision/scripts/gpu-ladq.sh build   # HERE: builds the example with libtorch_cuda linked in, copies it to gpu-bin/
#   crates/reg4rec-precision/scripts/gpu-ladq.sh run     # THERE (carry gpu-bin/): runs it against that machine's PyTorch 2.11 libraries
#
# `build` links the example against the workspace's libtorch (LIBTORCH, PyTorch 2.11 cu13 wheel in .venv) with
# `--no-as-needed -ltorch_cuda` passed to the final link only (`cargo rustc`), so no dependency is rebuilt; the
# binary then needs PyTorch 2.11's lib folder at run time. `run` finds it through `python3 -c 'import torch'`,
# adds the nvidia/*/lib folders of the same site-packages, and if libtorch still reports no CUDA, retries with
# libtorch_cuda.so preloaded. Extra arguments after `run` go to the binary (e.g. --steps 100 --batch 128).
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=gpu-bin/ladq_throughput

case "${1:-}" in
build)
    : "${LIBTORCH:=$PWD/.venv/lib/python3.11/site-packages/torch}"
    export LIBTORCH
    export LD_LIBRARY_PATH="$LIBTORCH/lib:$(dirname "$LIBTORCH")/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    cargo rustc --release -p reg4rec-precision --example ladq_throughput -- \
        -C link-arg=-Wl,--no-as-needed -C link-arg=-ltorch_cuda
    mkdir -p gpu-bin
    # Without debug info (the release profile keeps line tables): the carried tree must stay under 64 MiB.
    strip --strip-debug -o "$BIN" target/release/examples/ladq_throughput
    grep -qx '/gpu-bin/' .git/info/exclude 2>/dev/null || echo '/gpu-bin/' >>.git/info/exclude
    echo "built $BIN; carry gpu-bin to the GPU machine and run: crates/reg4rec-precision/scripts/gpu-ladq.sh run"
    ;;
run)
    shift
    [ -x "$BIN" ] || { echo "no $BIN: run 'crates/reg4rec-precision/scripts/gpu-ladq.sh build' first and carry gpu-bin" >&2; exit 1; }
    TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    SITE=$(dirname "$TORCH_DIR")
    LIBS="$TORCH_DIR/lib"
    for d in "$SITE"/nvidia/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
    export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    python3 -c 'import torch; print("python torch", torch.__version__, torch.cuda.get_device_name(0))' || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    ARGS=(--device cuda --modes fp32,bf16,ladq,fp8 --steps 100 --warmup 10 --batch 128 --positions 128
          --d-model 1024 --d-ff 4096 --heads 16 --blocks 4 --sample-every 10 "$@")
    if ! "$BIN" --device cuda --modes fp32 --steps 1 --warmup 0 --batch 2 --positions 16 --d-model 64 \
        --d-ff 64 --heads 4 --blocks 1 >/dev/null 2>&1; then
        echo "libtorch sees no CUDA as linked; preloading $TORCH_DIR/lib/libtorch_cuda.so"
        export LD_PRELOAD="$TORCH_DIR/lib/libtorch_cuda.so"
    fi
    "$BIN" "${ARGS[@]}"
    # The cpu preset's width too (d_model 64 is a multiple of 16, so _scaled_mm applies).
    "$BIN" "${ARGS[@]}" --d-model 64 --d-ff 256 --heads 4 --batch 256 --positions 105
    ;;
*)
    echo "usage: crates/reg4rec-precision/scripts/gpu-ladq.sh build | run [ladq_throughput flags]" >&2
    exit 2
    ;;
esac
