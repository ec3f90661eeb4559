#!/usr/bin/env bash
# One-shot GPU check (issue 15): run it on a machine with a CUDA GPU, from anywhere; the step limits add
# up to 8 minutes (plus up to 2 for an optional SPARKSERVE_WHEELS install, 2 for FlashInfer's, 5-9 for its
# JIT build when it is installed, 2 for TP on a 2-GPU machine).
#
#   bash bench/device_check.sh [OUT_DIR] [--dry-run]        (OUT_DIR default: $SPARKSERVE_DEVICE_CHECK_OUT,
#                                                             else /tmp/sparkserve-device-check)
#
# Steps, each under its own time limit, all output appended to OUT_DIR/device_check.log and one
# line per step to OUT_DIR/summary.txt:
#   1. environment: torch, CUDA device, triton, flashinfer (absent is fine);
#   2. the GPU-marked tests (every test file with a `gpu` marker);
#   3. every Triton kernel against its torch reference, natively (tests/triton_kernels: on a GPU the
#      tests run on CUDA tensors, not in the interpreter);
#   4. SPS(B) step time, B = 1..4096, on random-weight Qwen3-0.6B- and Qwen3-8B-shaped targets in
#      bf16, eager vs CUDA graphs (decode steps and the c=1 1+7 verify step replay; backends that
#      cannot be graphed get a "skipped" row), per attention backend (torch, triton, and flashinfer
#      when installed) -> OUT_DIR/profile.json, OUT_DIR/profile.md (bench/gpu_step_profile.py).
# --dry-run: the same steps on the CPU with tiny shapes (Triton in its interpreter), so the script
# cannot rot between GPU runs; tests/triton_kernels/test_device_check_script.py runs it in CI.
#
# Offline machines: the package is used from this checkout (PYTHONPATH), nothing is pip-installed
# unless SPARKSERVE_WHEELS names a folder of wheels/sdists to install from (--no-index), e.g. pytest
# and flashinfer-python brought along. The exit status is the number of failed steps.
#
# FlashInfer: only the version pinned in pyproject's gpu extra (FI_VERSION) is installed from that folder,
# alone, --no-deps, into a scratch --target dir: its wheel (5.7 MB, pure Python, built on any machine with
# `pip wheel --no-deps flashinfer-python==0.3.1.post1`) or its 3.8 MB sdist (building that needs setuptools
# >= 77 there). Its first use JIT-builds its kernels with nvcc: step flashinfer-jit (up to 5 min, plus 4 for
# a retry with the fa2 prefill if the default, fa3 on Hopper, fails) builds them and runs the flashinfer GPU
# tests; if neither build passes, the summary quotes the error and the later steps run without flashinfer.
set -u
cd "$(dirname "$0")/.."
DRY=0
OUT="${SPARKSERVE_DEVICE_CHECK_OUT:-/tmp/sparkserve-device-check}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) OUT="$arg" ;;
  esac
done
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
export PYTHONPATH="$PWD:$PWD/triton_kernels${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
FAILED=0
FI_VERSION=0.3.1.post1  # pyproject.toml's gpu extra; attention/flashinfer_backend.py is written against it
FI_SITE="${TMPDIR:-/tmp}/sparkserve-flashinfer-site"

step() {  # step NAME SECONDS CMD...: run CMD under a time limit, log it, record rc and seconds
  local name="$1" limit="$2"
  shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*" >>"$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
  printf '%-22s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$SUMMARY"
  return "$rc"
}

if [ -n "${SPARKSERVE_WHEELS:-}" ]; then
  OTHERS=$(ls "$SPARKSERVE_WHEELS" | grep -v '^flashinfer' | sed -E 's/^([A-Za-z0-9_.]+)-[0-9].*/\1/' | sort -u)
  [ -z "$OTHERS" ] || step wheels 120 "$PY" -m pip install --no-index --find-links "$SPARKSERVE_WHEELS" -q $OTHERS
  FI_DIST=$(ls "$SPARKSERVE_WHEELS"/flashinfer_python-"$FI_VERSION"-py3-none-any.whl \
    "$SPARKSERVE_WHEELS"/flashinfer_python-"$FI_VERSION".tar.gz 2>/dev/null | head -1)
  if [ -n "$FI_DIST" ]; then
    rm -rf "$FI_SITE"
    step flashinfer-install 120 "$PY" -m pip install --no-index --no-deps --no-build-isolation -q \
      --target "$FI_SITE" "$FI_DIST" && export PYTHONPATH="$FI_SITE:$PYTHONPATH"
  elif ls "$SPARKSERVE_WHEELS" | grep -q '^flashinfer'; then
    echo "flashinfer-install: skipped, $SPARKSERVE_WHEELS has no flashinfer_python-$FI_VERSION" | tee -a "$SUMMARY"
  fi
fi

step environment 30 "$PY" -c '
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
for m in ("triton", "flashinfer", "pytest"):
    spec = importlib.util.find_spec(m)
    print(m, __import__(m).__version__ if spec else "absent")
'

GPU_TESTS=$(grep -rl "pytest.mark.gpu" tests --include='test_*.py' | sort)
PROFILE_BACKENDS="torch triton"
if [ "$DRY" -eq 1 ]; then
  echo "flashinfer-jit: skipped, dry run (FlashInfer's kernels need nvcc and a GPU)" | tee -a "$SUMMARY"
elif ! "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("flashinfer") is None)' 2>/dev/null; then
  echo "flashinfer-jit: skipped, flashinfer is not installed" | tee -a "$SUMMARY"
else
  FI_HAVE=$("$PY" -c 'import flashinfer; print(flashinfer.__version__)' 2>&1 | tail -n 1)
  [ "$FI_HAVE" = "$FI_VERSION" ] || echo "flashinfer: $FI_HAVE imports, not the pinned $FI_VERSION" | tee -a "$SUMMARY"
  FI_OK=0
  FI_LOG_FROM=$(($(wc -l <"$LOG") + 1))
  for prefill in auto fa2; do  # auto: fa3 on Hopper; the JIT cache (~/.cache/flashinfer) serves later steps
    if step "flashinfer-jit-$prefill" "$([ $prefill = auto ] && echo 300 || echo 240)" \
        env SPARKSERVE_FLASHINFER_PREFILL=$prefill "$PY" -m pytest -q -p no:cacheprovider \
        tests/triton_kernels/test_gpu_backends.py -k flashinfer; then
      export SPARKSERVE_FLASHINFER_PREFILL=$prefill
      PROFILE_BACKENDS="torch triton flashinfer"
      FI_OK=1
      break
    fi
  done
  if [ "$FI_OK" -eq 0 ]; then
    { echo "flashinfer: JIT build or check FAILED ($FI_HAVE); the later steps run without it. Errors:"
      tail -n "+$FI_LOG_FROM" "$LOG" | grep -E "error|Error|FAILED" | grep -v "^=== " | tail -n 8 | sed 's/^/  /'
    } | tee -a "$SUMMARY"
    rm -rf "$FI_SITE"  # only the copy installed above; a flashinfer already in the image stays
  fi
fi
if [ "$DRY" -eq 1 ]; then
  export TRITON_INTERPRET=1
  # one pytest run: the GPU tests (they skip here) and one interpreted kernel test per kind
  # (generous limits: the dry run is CI's check that the script works, on a loaded 2-core machine)
  step tests 500 "$PY" -m pytest -q -p no:cacheprovider $GPU_TESTS tests/triton_kernels/test_paged_attention.py \
    -k "gpu or cuda or mixed_rows_match_torch_backend and dtype0"
  step sps-profile 500 "$PY" bench/gpu_step_profile.py --shapes tiny --device cpu --dtype float32 \
    --backends torch triton --modes eager graphs --budgets 1 3 --repeats 1 --max-num-seqs 4 --context 16 \
    --out "$OUT"
else
  # flashinfer's GPU tests ran in flashinfer-jit
  step gpu-tests 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu $GPU_TESTS -k "not flashinfer"
  step triton-kernels 120 "$PY" -m pytest -q -p no:cacheprovider tests/triton_kernels -m "not gpu" \
    --ignore=tests/triton_kernels/test_device_check_script.py
  step sps-profile 240 "$PY" bench/gpu_step_profile.py --shapes qwen3-0.6b qwen3-8b \
    --backends $PROFILE_BACKENDS --modes eager graphs --repeats 5 --out "$OUT"
  # tensor parallelism over NCCL needs two GPUs: TP=2 vs TP=1 greedy on the demo model, or say why not
  NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
  if [ "${NGPU:-0}" -ge 2 ]; then
    step tp-nccl 120 "$PY" bench/tp_decode.py --concurrency 1 8 --rounds 1
  else
    echo "tp-nccl: skipped, this machine has ${NGPU:-0} GPU(s) and TP=2 needs 2" | tee -a "$SUMMARY"
  fi
fi
echo "failed steps: $FAILED (log: $LOG)" | tee -a "$SUMMARY"
exit "$FAILED"
