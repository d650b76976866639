#!/usr/bin/env bash
# The granularity experiment of docs/results.md (issue 10), as run on the shared 2-core CPU:
# one torch thread, one candidate at a time, seed-major (every g of seed 0, then seed 1, ...)
# so a run cut short still has every granularity paired on the seeds it finished.
#   bash docs/experiments/granularity.sh            # surfaces, then brick
#   DATASETS=surfaces bash docs/experiments/granularity.sh
# Then the attribution test on the trained candidates:
#   python benchmarks/attribution.py --sweep runs/exp/g-surfaces --data runs/exp/surfaces-data
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/exp}
DATASETS=${DATASETS:-surfaces,brick}
BRICK_G=${BRICK_G:-1,2,5,10}   # e.g. 1,5 to halve the brick time
PARAMS=docs/experiments/granularity-cpu.yaml

gv() {   # the granvae CLI through $PY (any venv with the requirements, this checkout first)
  PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} "$PY" -c \
    'import sys; from granvae.cli import app; sys.argv[0] = "granvae"; app()' "$@"
}

make_data() {
  local name=$1 dir=$OUT/$1-data
  [ -f "$dir/manifest.json" ] && return
  if [ "$name" = surfaces ]; then
    gv data make surfaces --out "$dir" --n 1024 --n-val 256 --n-test 384
  else
    PYTHONPATH=. $PY -c "import sys; from granvae.data import write_dataset; \
from granvae.data.textures import make_texture; \
s, m = make_texture(sys.argv[1], 1024, 256, 384, seed=0); write_dataset(sys.argv[2], s, m)" \
      "$name" "$dir"
  fi
}

for name in ${DATASETS//,/ }; do
  make_data "$name"
  grid=1,2,5,10
  [ "$name" = brick ] && grid=$BRICK_G
  for seed in 0 1 2; do   # resumable: finished candidates are read back, not retrained
    gv sweep --data "$OUT/$name-data" --out "$OUT/g-$name" --params $PARAMS \
      --granularities "$grid" --seeds "$seed" --workers 1
  done
  gv sweep --data "$OUT/$name-data" --out "$OUT/g-$name" --params $PARAMS \
    --granularities "$grid" --seeds 0,1,2 --workers 1   # all seeds: results_by_config
done
