#!/usr/bin/env bash
# The number of reasoning steps (codebooks M) against quality, path-ranked: for each M, an MPQ tokenizer with M
# codebooks (D codes each), a parallel-path model pre-trained on its codes (model.path = parallel, the
# item-level path loss), checkpoints chosen by path-ranked validation, then the test split ranked by the path
# alone. Prints one Markdown table: test R@10 / N@10, each M's paired bootstrap 95% interval against the first
# M, tokenizer and pre-training seconds, and the search's users per second.
#
#   scripts/m-curve.sh DATASET OUT_DIR [M ...]            (default M: 4 8 16 32)
#
# Extra settings for every stage go in SETS (for instance SETS="--set pretrain.epochs=8"). Needs the
# environment of `eval "$(cargo xtask env)"`, a release build (`cargo build --release -p reg4rec-cli`) and, for
# the Amazon data sets, REG4REC_DATA_DIR. Finished stages are kept: a re-run only does what is missing.
set -euo pipefail
dataset=${1:?usage: m-curve.sh DATASET OUT_DIR [M ...]}
out=${2:?usage: m-curve.sh DATASET OUT_DIR [M ...]}
shift 2
ms=("$@")
[ ${#ms[@]} -gt 0 ] || ms=(4 8 16 32)
bin=${REG4REC_BIN:-./target/release/reg4rec}
preset=${PRESET:-cpu}
read -r -a sets <<< "${SETS:-}"
path_sets=(--set model.path=parallel --set pretrain.lambda_path=1 --set infer.rank=paths)
mkdir -p "$out"
for m in "${ms[@]}"; do
  tok="$out/tok-m$m" pre="$out/pre-m$m"
  if [ ! -f "$tok/report.json" ]; then
    "$bin" tokenize --dataset "$dataset" --preset "$preset" --tokenizer mpq --out "$tok" --json \
      --set mpq.m="$m" "${sets[@]}" > "$out/tokenize-m$m.json"
  fi
  if [ ! -f "$out/pretrain-m$m.json" ]; then
    "$bin" pretrain --dataset "$dataset" --preset "$preset" --tokenizer "$tok" --out "$pre" \
      "${path_sets[@]}" "${sets[@]}" > "$out/pretrain-m$m.json"
  fi
  if [ ! -f "$out/test-m$m.json" ] || [ ! -f "$out/ranks-m$m.json" ]; then
    "$bin" eval --model "$pre" --split test --preset "$preset" --rank paths --json --ranks "$out/ranks-m$m.json" \
      "${path_sets[@]}" "${sets[@]}" > "$out/test-m$m.json"
  fi
done
python3 - "$out" "${ms[@]}" <<'PY'
import json, math, random, sys
out, ms = sys.argv[1], sys.argv[2:]
def load(name):
    with open(f"{out}/{name}") as f:
        return json.load(f)
def per_user(ranks):
    hit = [1.0 if r is not None and r < 10 else 0.0 for r in ranks]
    ndcg = [1.0 / math.log2(r + 2) if r is not None and r < 10 else 0.0 for r in ranks]
    return hit, ndcg
def paired(a, b, seed=42, resamples=1000):
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return sum(d) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
base = None
print("| M | test R@10 | test N@10 | R@10 vs M=%s [95%%] | N@10 vs M=%s [95%%] | tokenizer s | pre-training s | epochs | search users/s |" % (ms[0], ms[0]))
print("|---|---|---|---|---|---|---|---|---|")
for m in ms:
    test, pre, tok = load(f"test-m{m}.json"), load(f"pretrain-m{m}.json"), load(f"tokenize-m{m}.json")
    ranks = load(f"ranks-m{m}.json")
    hit, ndcg = per_user(ranks["all"] if isinstance(ranks, dict) else ranks)
    if base is None:
        base = (hit, ndcg)
        cmp = ("", "")
    else:
        r = paired(hit, base[0]); n = paired(ndcg, base[1])
        cmp = ("%+.4f [%+.4f, %+.4f]" % r, "%+.4f [%+.4f, %+.4f]" % n)
    met, st = test["metrics"], test["stats"]
    users_per_s = st["users"] / max(st["model_secs"] + st["search_secs"], 1e-9)
    print("| %s | %.4f | %.4f | %s | %s | %.0f | %.0f | %s | %.0f |" % (
        m, met["recall@10"], met["ndcg@10"], cmp[0], cmp[1], tok["seconds"],
        pre["train_seconds"], pre["epochs"], users_per_s))
PY
