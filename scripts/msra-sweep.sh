#!/usr/bin/env bash
# MSRA's window h and decay w, and the KL weight beta, on validation: aligns a pipeline run's pre-trained reg4rec
# model once per (h, w, beta) point and prints validation Recall@10 / NDCG@10 at every validation step (step 0 is
# the pre-trained model). Choose on this table only; evaluate the chosen point on test afterwards
# (`reg4rec eval --model OUT_DIR/hH-wW-bB --split test`).
#
#   scripts/msra-sweep.sh RUN_DIR OUT_DIR [--set KEY=VALUE ...]
#
# RUN_DIR is a finished `reg4rec pipeline` run (its stages/pretrain-reg4rec is aligned). Extra arguments go to
# every `reg4rec align` after the defaults here (300 steps, validation every 150). POINTS overrides the grid
# ("h w beta" triples separated by commas). Needs the environment of `eval "$(cargo xtask env)"` and a release
# build (`cargo build --release -p reg4rec-cli`).
set -euo pipefail
usage="usage: msra-sweep.sh RUN_DIR OUT_DIR [--set KEY=VALUE ...]"
run=${1:?$usage}
out=${2:?$usage}
shift 2
bin=${REG4REC_BIN:-./target/release/reg4rec}
pre="$run/stages/pretrain-reg4rec"
[ -d "$pre" ] || { echo "no $pre: run the pipeline first" >&2; exit 1; }
mkdir -p "$out"
IFS=, read -r -a points <<< "${POINTS:-1 0.8 0.04,3 0.5 0.04,3 0.8 0.04,5 0.5 0.04,5 0.8 0.04,3 0.8 0.001}"

echo "| h | w | beta | validation R@10 / N@10 by step |"
echo "|---|---|---|---|"
for p in "${points[@]}"; do
  read -r h w beta <<< "$p"
  dir="$out/h$h-w$w-b$beta"
  rm -rf "$dir"
  "$bin" align --model "$pre" --out "$dir" --set align.steps=300 --set align.valid_every=150 \
    --set "align.msra_h=$h" --set "align.msra_w=$w" --set "align.beta=$beta" "$@" > "$dir.log" 2>&1 \
    || { echo "align failed for h=$h w=$w beta=$beta: see $dir.log" >&2; exit 1; }
  curve=$(python3 - "$dir/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"valid"' in l]
print(", ".join(f"{r['step']}: {r['metrics']['recall@10']:.4f} / {r['metrics']['ndcg@10']:.4f}" for r in rows))
PY
)
  echo "| $h | $w | $beta | $curve |"
done
