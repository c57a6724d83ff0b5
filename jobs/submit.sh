#!/usr/bin/env bash
# Submit an ncl-ray command to a Ray cluster and follow its logs.
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit.sh train conf/msrvtt.yaml data.root=/mnt/shared/msrvtt \
#       data.cache_dir=/mnt/shared/msrvtt/cache run.storage_path=/mnt/shared/runs
#   jobs/submit.sh tune conf/msrvtt.yaml tune.space=conf/tune/ncl.yaml data.root=... data.cache_dir=... run.storage_path=...
#   jobs/submit.sh eval /mnt/shared/runs/NAME/checkpoint_... 
# Options of `python -m ncl_ray.runtime.jobs submit` (--no-wait, --gpus, --address, ...) go after the config.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
[ -x "$py" ] || py=python3
cd "$here"
exec "$py" -m ncl_ray.runtime.jobs submit "$@"
