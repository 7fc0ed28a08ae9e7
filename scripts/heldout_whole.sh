#!/usr/bin/env bash
# The held-out check used to choose checkpoints (never a benchmark): the standard click protocol (20 clicks, full
# inference engine, one thread) on the pixel-accurate whole objects of the held-out split of ECSSD, Weizmann Horse,
# MSRA10K and CCP-person (96 objects of the first 200 drawn). These images are never drawn for training.
# Needs the object bank that `finecut train` builds on first use (runs/object-bank-512-v3.npz, about a minute).
# Results go to runs/simpleclick-xtiny-v4/validation/<checkpoint>-<options>-<sources>/.
#   usage: scripts/heldout_whole.sh CHECKPOINT[:KEY=VALUE,...] [more finecut train --validate options]
#   e.g.:  scripts/heldout_whole.sh runs/simpleclick-xtiny-v8-mixed/last:first_target_size=224,target_size=320
set -euo pipefail
if [[ $# -lt 1 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
spec="$1"
shift
OMP_NUM_THREADS=1 exec finecut train configs/simpleclick-xtiny-v4.toml --validate "$spec" --val-count 200 \
  --val-sources ECSSD WeizmannHorse MSRA10K CCP-person --threads 1 --no-progress "$@"
