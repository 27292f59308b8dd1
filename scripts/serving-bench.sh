#!/bin/bash
# Serving latency and throughput (docs/serving.md): for each batch cap and beam width a fresh `reg4rec serve`,
# a warm-up, then `reg4rec loadtest` with 64 clients; one JSON line per setting in $OUT.
# MODEL=<model dir> [CAPS="1 8 32"] [BEAMS="10 20 50"] [REQUESTS=4000] [SERVE_ARGS="--set infer.X=Y"] \
#   scripts/serving-bench.sh (release build first)
cd "$(dirname "$0")/.."
eval "$(cargo xtask env 2>/dev/null)"
export REG4REC_LOG=warn REG4REC_NO_PROGRESS=1
M=${MODEL:-runs/amazon-beauty-cpu/stages/align-reg4rec}
OUT=${OUT:-runs/serving/results.jsonl}; mkdir -p "$(dirname "$OUT")"
: > $OUT
for cap in ${CAPS:-1 8 32}; do
  for beam in ${BEAMS:-10 20 50}; do
    ./target/release/reg4rec serve --model $M --set serve.addr=127.0.0.1:0 --set serve.max_batch=$cap $SERVE_ARGS > /tmp/bench-serve.out 2>/tmp/bench-serve.err &
    pid=$!
    for i in $(seq 1 120); do grep -q listening /tmp/bench-serve.out && break; sleep 0.5; done
    URL=$(sed -n 's/listening on //p' /tmp/bench-serve.out)
    # warm-up
    ./target/release/reg4rec loadtest --url $URL --model $M --clients 8 --requests 64 --seconds 30 --beam $beam > /dev/null
    r=$(./target/release/reg4rec loadtest --url $URL --model $M --clients 64 --requests ${REQUESTS:-4000} --seconds 45 --beam $beam --seed 1)
    inv=$(curl -s $URL/metrics | sed -n 's/^reg4rec_invalid_items_total //p')
    is=$(curl -s $URL/metrics | sed -n "s/^reg4rec_inference_seconds_sum //p"); bs=$(curl -s $URL/metrics | sed -n "s/^reg4rec_batch_queries_sum //p"); bc=$(curl -s $URL/metrics | sed -n 's/^reg4rec_batch_queries_count //p')
    echo "{\"max_batch\": $cap, \"beam\": $beam, \"invalid_items\": $inv, \"batch_sum\": $bs, \"batches\": $bc, \"inference_seconds\": $is, \"load\": $(echo $r | tr -d '\n')}" >> $OUT
    kill -TERM $pid; wait $pid
    echo "cap $cap beam $beam done"
  done
done
