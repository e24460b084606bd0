#!/usr/bin/env bash
# The GPU checks of docs/gpu.md in one call, for a machine with one CUDA GPU (e.g. a lent H200).
#
#   bash benchmarks/gpu_check.sh [tests|bench|all]      # default: all
#
# Writes under $OUT (default ./gpu-check-out): env.json, gpu_tests.log (pytest -m gpu), suite.log (the whole
# suite with CUDA visible), bench_janus.json, bench_janus_grpo.json, janus_memory.json; at most 8 files, so
# that a device runner that returns $OUT gets all of them. Each stage has its own time limit (seconds, in
# the variables below) so that one slow stage cannot take the others' time; a stage that fails or times
# out is recorded in its file and the script goes on.
#
# Python packages the GPU image may lack or hold at another version (transformers 5.23.0, open-clip-torch
# 3.3.0, ftfy, wcwidth) are installed from ./.whl when that folder exists (download them on a machine with
# internet: pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
# -d .whl transformers==5.23.0 open-clip-torch==3.3.0 ftfy wcwidth).
set -u
cd "$(dirname "$0")/.."
STAGE="${1:-all}"
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-python3}"
T_GPU_TESTS="${T_GPU_TESTS:-240}"
T_SUITE="${T_SUITE:-420}"
T_BENCH_LOOP="${T_BENCH_LOOP:-300}"
T_BENCH_GRPO="${T_BENCH_GRPO:-300}"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

"$PY" - >"$OUT/env.json" 2>&1 <<'EOF'
import json, torch, transformers
from irisbench.core.devices import cpu_has_native_bf16
info = {"torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_native_bf16": cpu_has_native_bf16()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 1e9, 1), capability=f"{p.major}.{p.minor}",
                gpus=torch.cuda.device_count())
print(json.dumps(info, indent=2))
EOF
cat "$OUT/env.json"

if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  # the gpu tests, then the whole suite with CUDA visible (the suite itself runs on the CPU: conftest sets
  # IRISBENCH_DEVICE=cpu; torchrun tests use gloo)
  timeout "$T_GPU_TESTS" "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider >"$OUT/gpu_tests.log" 2>&1
  echo "exit $?" >>"$OUT/gpu_tests.log"
  tail -n 5 "$OUT/gpu_tests.log"
  XDIST=""
  "$PY" -c "import xdist" 2>/dev/null && XDIST="-n 12"
  timeout "$T_SUITE" "$PY" -m pytest -q $XDIST -p no:cacheprovider tests >"$OUT/suite.log" 2>&1
  echo "exit $?" >>"$OUT/suite.log"
  tail -n 15 "$OUT/suite.log"
fi

if [ "$STAGE" = bench ] || [ "$STAGE" = all ]; then
  # 64 images x 576 tokens, CFG 5 (128 rows), bf16: eager, static, compiled and HF generate in one run
  timeout "$T_BENCH_LOOP" "$PY" benchmarks/bench_janus.py --device cuda --full --batch 64 --repeat 1 \
    >"$OUT/bench_janus.json" 2>"$OUT/bench_janus.err"
  echo "bench_janus exit $?"
  tail -n 3 "$OUT/bench_janus.err"
  # a GRPO step of the 1B recipe (64 rollouts), chunked statistics + checkpointing and the compiled loop;
  # the whole-logits baseline in the same run
  timeout "$T_BENCH_GRPO" "$PY" benchmarks/bench_janus_grpo.py --device cuda --checkpointing --decode static \
    --steps 1 >"$OUT/bench_janus_grpo.json" 2>>"$OUT/bench_janus.err"
  echo "bench_janus_grpo exit $?"
  "$PY" benchmarks/janus_memory.py --checkpointing --sample-batch 64 --measured "$OUT/bench_janus_grpo.json" \
    >"$OUT/janus_memory.json" 2>>"$OUT/bench_janus.err" \
    || "$PY" benchmarks/janus_memory.py --checkpointing --sample-batch 64 >"$OUT/janus_memory.json"
  echo "janus_memory exit $?"
  tail -n 5 "$OUT/bench_janus.err"
fi
ls -la "$OUT"
