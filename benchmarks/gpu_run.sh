#!/usr/bin/env bash
# One GPU lease in one command: the GPU check (benchmarks/gpu_check.py, on real bottle), then Patch SVDD's full-length
# bottle run (benchmarks/svdd_full_run.py) for the time that is left, resumed from the last lease's checkpoint if given.
#   bash benchmarks/gpu_run.sh OUT NAME SECONDS COMMIT [RESUME]
# data/mvtec256 must hold bottle as glancesvdd.data.export_resized writes it (256 px, the loader's own resize).
set -u
OUT=$1; NAME=$2; TOTAL=$3; COMMIT=$4; RESUME=${5:-}
START=$(date +%s)
export PYTHONUNBUFFERED=1 GLANCESVDD_PROGRESS=log
# 420 s: on the H200 (2026-12-04) the parts before precision.svdd took about 160 s, and it needs about 120 s (three 1000-step
# runs and their inference); at 270 it would be cut short, as it was at 190 in gpu_h200_c
python3 benchmarks/gpu_check.py --out "$OUT" --name "$NAME" --data data/mvtec256 --deadline "${CHECK_DEADLINE:-420}" --commit "$COMMIT" \
    > "$OUT/$NAME.log" 2>&1
echo "gpu check: rc $?, $(( $(date +%s) - START )) s"
grep -E "^\[|correctness part|svdd step|stage B|: loss" "$OUT/$NAME.log" | cut -c1-230
LEFT=$(( TOTAL - ($(date +%s) - START) - 30 ))
if [ "$LEFT" -gt 30 ]; then
  python3 benchmarks/svdd_full_run.py --data data/mvtec256 --runs /tmp/runs --out "$OUT/bottle" --until "$LEFT" \
      --precision-from "$OUT/$NAME.json" --commit "$COMMIT" ${RESUME:+--resume "$RESUME"} > "$OUT/bottle.log" 2>&1
  echo "full run: rc $?"; tail -c 2500 "$OUT/bottle.log"
fi
