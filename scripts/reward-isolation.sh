#!/usr/bin/env bash
# Reward isolation for PARS alignment: aligns a pipeline run's pre-trained reg4rec model with growing reward sets
# (step-hit; + category-hit; + step-consistency; + global path, the full reward), each with MSRA on (h = 3) and
# off (h = 1). Alignment validates on every validation user. It then evaluates each aligned model's own weights
# (the latest checkpoint, whatever the best-checkpoint rule kept) and the pre-trained model on validation and
# test, with CORP off. Prints one Markdown table. All runs use the same seed and preset.
#
#   scripts/reward-isolation.sh RUN_DIR OUT_DIR [--set KEY=VALUE ...]
#
# RUN_DIR is a finished `reg4rec pipeline` run (its stages/pretrain-reg4rec is aligned). Extra arguments go to
# every `reg4rec align` (for instance `--set align.steps=300`). Needs the environment of `eval "$(cargo xtask env)"`
# and a release build (`cargo build --release -p reg4rec-cli`).
set -euo pipefail
run=${1:?usage: reward-isolation.sh RUN_DIR OUT_DIR [--set KEY=VALUE ...]}
out=${2:?usage: reward-isolation.sh RUN_DIR OUT_DIR [--set KEY=VALUE ...]}
shift 2
bin=${REG4REC_BIN:-./target/release/reg4rec}
preset=${PRESET:-cpu}
pre="$run/stages/pretrain-reg4rec"
[ -d "$pre" ] || { echo "no $pre: run the pipeline first" >&2; exit 1; }
mkdir -p "$out"

# name | reward weights (the defaults: step_hit 1, category_hit 0.5, step_consistency 0.5, global_path 2)
sets=(
  "step-hit|align.rewards.step_hit=1 align.rewards.category_hit=0 align.rewards.step_consistency=0 align.rewards.global_path=0"
  "+category-hit|align.rewards.step_hit=1 align.rewards.category_hit=0.5 align.rewards.step_consistency=0 align.rewards.global_path=0"
  "+step-consistency|align.rewards.step_hit=1 align.rewards.category_hit=0.5 align.rewards.step_consistency=0.5 align.rewards.global_path=0"
  "+global-path (full)|align.rewards.step_hit=1 align.rewards.category_hit=0.5 align.rewards.step_consistency=0.5 align.rewards.global_path=2"
)

metrics() { # model dir, checkpoint, split -> "R@10 N@10"
  "$bin" eval --model "$1" --checkpoint "$2" --split "$3" --theta off --preset "$preset" --json |
    python3 -c 'import json,sys; m=json.load(sys.stdin)["metrics"]; print("%.4f %.4f" % (m["recall@10"], m["ndcg@10"]))'
}

row() { # label, model dir, checkpoint
  read -r vr vn <<<"$(metrics "$2" "$3" valid)"
  read -r tr tn <<<"$(metrics "$2" "$3" test)"
  echo "| $1 | $vr | $vn | $tr | $tn |"
}

echo "| rewards | valid R@10 | valid N@10 | test R@10 | test N@10 |"
echo "|---|---|---|---|---|"
row "pre-trained (no alignment)" "$pre" best
for msra in 3 1; do
  for s in "${sets[@]}"; do
    name=${s%%|*}
    sets_=${s#*|}
    dir="$out/$(echo "$name" | tr -cd 'a-z-')-h$msra"
    rm -rf "$dir"
    args=()
    for kv in $sets_; do args+=(--set "$kv"); done
    "$bin" align --model "$pre" --out "$dir" --preset "$preset" "${args[@]}" \
      --set align.msra_h=$msra --set align.valid_users=0 "$@" >"$dir.log" 2>&1 ||
      { echo "align failed: see $dir.log" >&2; exit 1; }
    label="$name, MSRA $([ "$msra" = 1 ] && echo off || echo "on (h = $msra)")"
    row "$label" "$dir" latest
  done
done
