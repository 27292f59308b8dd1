#!/usr/bin/env bash
# c10d/NCCL on a CUDA machine: all-reduce throughput (NCCL on cuda:0 and Gloo on CPU, world size 1) and a
# pre-training run that goes through the data-parallel rank path with NCCL (WORLD_SIZE=1, replicas checked every
# step) next to the same run as a plain single process; both reports are printed so their losses can be compared.
#
# Two halves, because the GPU machine has no Rust:
#   crates/reg4rec-dist/scripts/gpu-dist.sh build   # HERE: builds reg4rec and the allreduce example with the `nccl`
#                                                   # feature and libtorch_cuda linked, copies them to gpu-bin/
#   crates/reg4rec-dist/scripts/gpu-dist.sh run     # THERE (carry gpu-bin/): runs them against that machine's
#                                                   # PyTorch 2.11 libraries
#
# `build` needs the CUDA runtime and NCCL headers (ProcessGroupNCCL.hpp includes <nccl.h> and the CUDA runtime
# headers): the CUDA build of torch with its NVIDIA wheels (`cargo xtask setup --cuda`) provides them under
# site-packages/nvidia/*/include; REG4REC_CUDA_INCLUDE (colon-separated) or CUDA_HOME add other folders. The final
# links get `--no-as-needed -ltorch_cuda` (`cargo rustc`), so no dependency is rebuilt with other flags.
set -euo pipefail
cd "$(dirname "$0")/../../.."

case "${1:-}" in
build)
    : "${LIBTORCH:=$PWD/.venv/lib/python3.11/site-packages/torch}"
    export LIBTORCH
    SITE=$(dirname "$LIBTORCH")
    found=""
    INC="${REG4REC_CUDA_INCLUDE:-}"
    for d in ${INC//:/ } ${CUDA_HOME:+$CUDA_HOME/include} "$SITE"/nvidia/*/include; do
        [ -f "$d/nccl.h" ] && found="$d"
    done
    if [ -z "$found" ]; then
        echo "no nccl.h under $SITE/nvidia/*/include, REG4REC_CUDA_INCLUDE or CUDA_HOME:" >&2
        echo "install the CUDA build of torch (cargo xtask setup --cuda) or point REG4REC_CUDA_INCLUDE at NCCL's headers" >&2
        exit 1
    fi
    LIBS="$LIBTORCH/lib"
    for d in "$SITE"/nvidia/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
    export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    LINK=(-C link-arg=-Wl,--no-as-needed -C link-arg=-ltorch_cuda)
    cargo rustc --release -p reg4rec-cli --features nccl --bin reg4rec -- "${LINK[@]}"
    cargo rustc --release -p reg4rec-dist --features nccl --example allreduce -- "${LINK[@]}"
    mkdir -p gpu-bin
    # Without debug info (the release profile keeps line tables): the carried tree must stay under 64 MiB.
    strip --strip-debug -o gpu-bin/reg4rec-nccl target/release/reg4rec
    strip --strip-debug -o gpu-bin/allreduce-nccl target/release/examples/allreduce
    grep -qx '/gpu-bin/' .git/info/exclude 2>/dev/null || echo '/gpu-bin/' >>.git/info/exclude
    echo "built gpu-bin/{reg4rec-nccl,allreduce-nccl}; carry gpu-bin and run: crates/reg4rec-dist/scripts/gpu-dist.sh run"
    ;;
run)
    for b in gpu-bin/reg4rec-nccl gpu-bin/allreduce-nccl; do
        [ -x "$b" ] || { echo "no $b: run 'crates/reg4rec-dist/scripts/gpu-dist.sh build' first and carry gpu-bin" >&2; exit 1; }
    done
    TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
    SITE=$(dirname "$TORCH_DIR")
    LIBS="$TORCH_DIR/lib"
    for d in "$SITE"/nvidia/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
    export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export REG4REC_NO_PROGRESS=1 REG4REC_LOG=warn
    python3 -c 'import torch; print("python torch", torch.__version__, torch.cuda.get_device_name(0), "nccl", torch.cuda.nccl.version())' || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

    echo "== all-reduce, NCCL on cuda:0, world size 1"
    gpu-bin/allreduce-nccl --world 1 --cuda --mb 1,16,64,256 --iters 50
    echo "== all-reduce, Gloo on CPU, world size 1"
    gpu-bin/allreduce-nccl --world 1 --mb 1,16,64 --iters 20

    WORK=$(mktemp -d)
    python3 - "$WORK/log.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("user,item,timestamp,category\n")
    for u in range(400):
        for t in range(6 + u % 7):
            item = (u * 7 + t * (2 + u % 5)) % 300
            f.write(f"u{u},i{item},{t},c{item % 6}\n")
PY
    gpu-bin/reg4rec-nccl tokenize --data "$WORK/log.csv" --preset smoke --out "$WORK/tok" --json >/dev/null
    PRE=(pretrain --data "$WORK/log.csv" --tokenizer "$WORK/tok" --preset smoke --set pretrain.device=cuda
         --set model.dropout=0 --set pretrain.epochs=3 --set pipeline.valid_recall=false)
    echo "== pre-training as rank 0 of 1 through NCCL (replicas checked every step)"
    WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29581 REG4REC_DIST_TIMEOUT_S=120 \
        gpu-bin/reg4rec-nccl "${PRE[@]}" --out "$WORK/nccl" --check-replicas-every 1
    echo "== the same pre-training as a plain single process"
    gpu-bin/reg4rec-nccl "${PRE[@]}" --out "$WORK/single"
    rm -rf "$WORK"
    ;;
*)
    echo "usage: crates/reg4rec-dist/scripts/gpu-dist.sh build | run" >&2
    exit 2
    ;;
esac
