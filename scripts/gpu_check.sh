#!/usr/bin/env bash
# The GPU check of lstm_ext (issue 5), for a GPU machine without network where torch (CUDA build), nvcc, cmake,
# ninja, scikit-build-core, pytest and pytest-benchmark are installed. Run from anywhere:
#
#   OUT=/some/dir scripts/gpu_check.sh                 # every stage
#   OUT=/some/dir scripts/gpu_check.sh build test      # some stages: build test sanitize bench
#
# Stages (each writes its logs under $OUT, default ./out):
#   build     pip install --no-build-isolation . with the CUDA kernels required (LSTM_EXT_CUDA=ON),
#             TORCH_CUDA_ARCH_LIST=9.0 unless set                               -> build.log, env.txt
#   test      pytest tests/ (the whole suite; LSTM_EXT_REQUIRE_CUDA=1 makes a CPU-only build a failure)
#                                                                                -> tests.log, tests.xml
#   sanitize  compute-sanitizer memcheck and racecheck (failing stages), synccheck and initcheck (logged) on a
#             small script running every kernel instantiation and launch path   -> sanitize_*.log
#             (LSTM_EXT_SANITIZE_TOOLS="memcheck" etc. picks tools, e.g. one per call under a time limit)
#   bench     pytest bench/ --benchmark-only --benchmark-json=$OUT/gpu.json (override the selection with
#             LSTM_EXT_BENCH_ARGS), then the Markdown table                      -> bench.log, gpu.json, gpu.md
# Exits non-zero when any failing stage failed (the later stages still run, except after a failed build).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test sanitize bench)
PY="${PYTHON:-python}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export LSTM_EXT_REQUIRE_CUDA=1

SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }
want() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
# run NAME LOGFILE CMD...: runs CMD with its output in LOGFILE (and on the terminal), records pass/fail
run() {
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  echo "+ $*" >"$log"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    note "PASS  $name ($((SECONDS - t0)) s)  log: $log"
  else
    note "FAIL  $name (exit $rc, $((SECONDS - t0)) s)  log: $log"
    FAILED=1
  fi
  return "$rc"
}

SANITIZER="$(command -v compute-sanitizer || true)"
[ -z "$SANITIZER" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SANITIZER=/usr/local/cuda/bin/compute-sanitizer

# ---- environment ---------------------------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null) $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed files"
  echo "stages: ${STAGES[*]}"
  nvidia-smi 2>&1 || true
  nvcc --version 2>&1 || true
  echo "compute-sanitizer: ${SANITIZER:-not found}"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" 2>&1
  "$PY" -m pip list 2>/dev/null | grep -iE "torch|scikit-build|pytest|numpy|cmake|ninja|hypothesis" || true
} >"$OUT/env.txt" 2>&1

# ---- build -----------------------------------------------------------------------------------------------------
if want build; then
  if ! run build "$OUT/build.log" env LSTM_EXT_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps --no-index \
      --force-reinstall -v "$ROOT"; then
    note "the build failed: nothing else can run"
    exit 1
  fi
  (cd "$OUT" && "$PY" -c "import lstm_ext, lstm_ext._build_info as b; print('lstm_ext', lstm_ext.__file__, 'WITH_CUDA', b.WITH_CUDA, 'archs', b.CUDA_ARCHS)") \
    >>"$OUT/build.log" 2>&1
  # FlashRNN, the benchmark peer, and einops, which it needs: carried as wheels (no network there)
  "$PY" -m pip install --no-deps --no-index "$ROOT"/bench/wheels/*.whl >>"$OUT/build.log" 2>&1 ||
    note "WARN  the FlashRNN wheels did not install: its benchmark cases will skip (see build.log)"
  tail -n 1 "$OUT/build.log" | tee -a "$SUMMARY"
fi

# ---- tests -----------------------------------------------------------------------------------------------------
if want test; then
  # plain pytest from the repository root: tests/ goes first on sys.path, the installed lstm_ext is imported
  (cd "$ROOT" && run tests "$OUT/tests.log" pytest tests/ -ra -q -p no:cacheprovider --junitxml="$OUT/tests.xml")
  [ $? -ne 0 ] && FAILED=1
fi

# ---- compute-sanitizer -----------------------------------------------------------------------------------------
if want sanitize; then
  CASES="$OUT/sanitize_cases.py"
  cat >"$CASES" <<'PYEOF'
"""Every CUDA kernel instantiation of lstm_ext (forward and backward; float32/float16/bfloat16 with batch tiles
1, 2, 4, 8, float64 with 1, 2, 4) plus each launch path (one CTA per tile, CTA groups, groups looping over tiles,
U in global memory, truncate), small, for compute-sanitizer."""
import sys
import torch
import lstm_ext  # noqa: F401
from lstm_ext import ops
from lstm_ext.config import CellConfig

OPS = torch.ops.lstm_ext
dev = torch.cuda.current_device()


def plan(cfg, C, B, dtype, backward=False):
    return OPS.cuda_launch_plan(C, B, dtype, cfg.forget_gate, cfg.block_size, cfg.feedback, cfg.squash,
                                cfg.truncate, backward, dev)


def run(cfg, T, B, C, dtype, varlen=True):
    g = torch.Generator().manual_seed(0)
    G, R = cfg.gate_rows(C), cfg.recurrent_size(C)
    A = torch.randn(T, B, G, generator=g).to("cuda", dtype).requires_grad_()
    U = (torch.randn(G, R, generator=g) / max(R, 1) ** 0.5).to("cuda", dtype).requires_grad_()
    r0 = (0.5 * torch.randn(B, R, generator=g)).to("cuda", dtype).requires_grad_()
    s0 = torch.randn(B, C, generator=g).to("cuda", dtype).requires_grad_()
    lengths = torch.tensor([[T, 0, T // 2, 1][b % 4] for b in range(B)]) if varlen else None
    y, r_T, s_T = ops.recurrence(A, U, r0, s0, cfg, lengths)
    (y.float().sum() + r_T.float().sum() + s_T.float().sum()).backward()
    with torch.no_grad():  # the inference forward: no act/s_all
        ops.recurrence(A, U, r0, s0, cfg, lengths)
    torch.cuda.synchronize()
    f, b = plan(cfg, C, B, dtype), plan(cfg, C, B, dtype, True)
    print(f"ok {dtype} T={T} B={B} C={C} {cfg} fwd plan {f} bwd plan {b}", flush=True)


cfgs = [CellConfig(), CellConfig(False, 2, "all", "paper", True), CellConfig(True, 3, "all", "sigmoid_identity")]
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for B in (1, 2, 3, 9):  # batch tiles 1, 2, 4, 8 (float64: 4), padded tiles
        run(cfgs[B % 3], 3, B, 6, dtype)
# a group of CTAs (flag barrier + exchange), and groups looping over tiles
for cfg in cfgs[:2]:
    for C in (128, 192, 256, 384, 512):
        if plan(cfg, C, 5, torch.float32)[1] > 1:
            run(cfg, 3, 5, C, torch.float32)
            big = plan(cfg, C, 1 << 16, torch.float32)
            run(cfg, 2, big[0] * (big[2] + 1) + 1, C, torch.float32)
            break
# U in global memory
if "--no-global" not in sys.argv:
    for C in (1024, 1536, 2048, 3072):
        if plan(CellConfig(), C, 1, torch.float32)[6] == 0:
            run(CellConfig(), 2, 1, C, torch.float32, varlen=False)
            break
print("all cases ran")
PYEOF
  if [ -z "$SANITIZER" ]; then
    note "FAIL  sanitize: compute-sanitizer not found"
    FAILED=1
  else
    export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # exact allocation bounds for memcheck
    TOOLS="${LSTM_EXT_SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}"
    for tool in memcheck racecheck; do
      case " $TOOLS " in *" $tool "*) ;; *) continue ;; esac
      extra=()
      [ "$tool" = racecheck ] && extra=(--racecheck-report all)
      (cd "$OUT" && run "sanitize-$tool" "$OUT/sanitize_$tool.log" timeout 1200 "$SANITIZER" --tool "$tool" \
        ${extra[@]+"${extra[@]}"} --error-exitcode 1 --report-api-errors no --print-limit 200 "$PY" "$CASES")
      [ $? -ne 0 ] && FAILED=1
    done
    for tool in synccheck initcheck; do  # informational: torch's own kernels may trip initcheck
      case " $TOOLS " in *" $tool "*) ;; *) continue ;; esac
      (cd "$OUT" && timeout 1200 "$SANITIZER" --tool "$tool" --error-exitcode 1 --report-api-errors no \
        --print-limit 200 "$PY" "$CASES" --no-global >"$OUT/sanitize_$tool.log" 2>&1)
      note "INFO  sanitize-$tool exit $? (not a failing stage)  log: $OUT/sanitize_$tool.log"
    done
    unset PYTORCH_NO_CUDA_MEMORY_CACHING
  fi
fi

# ---- benchmarks ------------------------------------------------------------------------------------------------
if want bench; then
  # shellcheck disable=SC2206
  BENCH_ARGS=(${LSTM_EXT_BENCH_ARGS:-bench/})
  (cd "$ROOT" && run bench "$OUT/bench.log" pytest "${BENCH_ARGS[@]}" --benchmark-only \
    --benchmark-json="$OUT/gpu.json" -p no:cacheprovider)
  [ $? -ne 0 ] && FAILED=1
  if [ -s "$OUT/gpu.json" ]; then
    (cd "$ROOT" && "$PY" -m bench.report "$OUT/gpu.json" --out "$OUT" --name gpu >>"$OUT/bench.log" 2>&1) ||
      note "WARN  bench report failed (see bench.log)"
    note "bench results: $OUT/gpu.json $(ls "$OUT"/gpu*.md 2>/dev/null | tr '\n' ' ')"
  fi
fi

note "stages: ${STAGES[*]}; $([ $FAILED -eq 0 ] && echo 'all passed' || echo 'SOME FAILED')"
exit $FAILED
