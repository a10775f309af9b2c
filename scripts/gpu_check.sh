#!/usr/bin/env bash
# The GPU check of lstm_ext (issue 5), for a GPU machine without network where torch (CUDA build), nvcc, cmake,
# ninja, scikit-build-core, pytest and pytest-benchmark are installed. Run from anywhere:
#
#   OUT=/some/dir scripts/gpu_check.sh                 # every stage
#   OUT=/some/dir scripts/gpu_check.sh build test      # some stages: build test sanitize bench profile micro repro
#   OUT=$OUT DEADLINE_S=560 scripts/gpu_check.sh ...   # stop starting work after 560 s (see below)
#
# Stages (logs under $WORK, default /tmp/lstm_ext_gpu_check; see "What comes back" below):
#   build     pip install --no-build-isolation . with the CUDA kernels required (LSTM_EXT_CUDA=ON),
#             TORCH_CUDA_ARCH_LIST=9.0 unless set; incremental on a machine that built before (build/)
#                                                                                -> build.log, env.txt
#   test      pytest tests/test_cuda.py tests/test_paper_cuda.py (the CUDA tests) first, then the rest of tests/ (on pytest-xdist
#             workers when it is installed: LSTM_EXT_TEST_WORKERS, default 8; 0 = none);
#             LSTM_EXT_TEST_K="cuda" runs only the rest's tests whose ids match (-k: those the CPU CI cannot run);
#             LSTM_EXT_REQUIRE_CUDA=1 makes a CPU-only build a failure; when the CUDA tests fail, test_cuda.py
#             again with LSTM_EXT_CUDA_CLUSTER=0 (were the clusters the cause?); then scripts/float32_error.py --device cuda
#             (the CUDA kernel's float32 error by width; its table goes into the summary)
#                                                                                -> tests_*.log, tests_*.xml, float32_error.log
#   sanitize  compute-sanitizer memcheck and racecheck (failing stages), synccheck and initcheck (logged) on a
#             small script running every kernel instantiation and launch path, the paper nets' training
#             kernel included (state in shared memory and in the global workspace); the groups of CTAs a second
#             time with LSTM_EXT_CUDA_CLUSTER=0 (sm_90 runs them as thread-block clusters)  -> sanitize_*.log
#             (LSTM_EXT_SANITIZE_TOOLS="memcheck" etc. picks tools, e.g. one per call under a time limit)
#   bench     pytest bench/test_bench_cuda.py --benchmark-only in groups, most important first: the fused
#             ops and cuDNN, then the per-step loops, then FlashRNN, its kernels built in parallel first
#             (bench/flashrnn_prebuild.py) (LSTM_EXT_BENCH_ARGS: one group of your
#             own instead); each group's results are rewritten after every benchmark, so a group cut off by a
#             time limit keeps what it measured; then the Markdown table   -> bench_*.log, gpu.json, gpu.md
#   profile   scripts/gpu_profile.py: the ops alone, cost per step and fixed cost per call beside cuDNN's, with
#             the launch plans (its table goes into the summary), and the grouped cases again without thread-block
#             clusters (LSTM_EXT_CUDA_CLUSTER=0); then Nsight Compute (`ncu --clock-control none
#             --set full`) on one op call of each of LSTM_EXT_NCU_CASES (default: the forward at fp32 B=1 H=32,
#             B=64 H=128 and B=256 H=1024, and the backward at B=256 H=1024), each with its SASS and stall
#             samples per instruction, and the
#             kernels' SASS            -> profile_timing.log, ncu_*.log, ncu_*_sass.csv, sass.txt
#   micro     bench/gpu_step_costs.cu (nvcc alone, no build of the package): what a step's building blocks cost
#             on this GPU: __syncthreads, an L2 / DRAM round trip, a cell's activations, the group barrier with
#             and without back-off, a cluster barrier, the exchange of r through L2 or distributed shared memory
#             (about 20 s; its table goes into the summary)               -> step_costs.md
#   repro     lstm-ext reproduce on the GPU (--device cuda: trials side by side) and on the CPU (a process per
#             core), the same rows and seeds (LSTM_EXT_REPRO_ARGS, default: the adding problem at T = 100, 10
#             trials, budget 2x the paper's), wall times and both reports side by side  -> repro_*.log, repro.md
#
# Time limits. The lent GPU machine runs a command for at most 10 minutes. DEADLINE_S=N (seconds from the
# start) runs every command under `timeout` of the time left, skips what cannot start in time, and leaves
# DEADLINE_RESERVE_S (default 20) for packing the results.
#
# What comes back. The device tool returns at most 8 files from $OUT, so $OUT holds only: summary.txt,
# env.txt, gpu.json and gpu.md (the benchmarks, when run), repro.md (the reproduction, when run), tests.txt
# (the tests' failures and summary lines) and logs.tar.gz (everything under $WORK: every log, the JUnit XML, the plots). They are refreshed after
# every stage, so a run killed at its limit still returns what the finished stages wrote.
#
# Exits non-zero when any failing stage failed (the later stages still run, except after a failed build).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="${WORK:-/tmp/lstm_ext_gpu_check}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test sanitize bench profile micro repro)
PY="${PYTHON:-python}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export LSTM_EXT_REQUIRE_CUDA=1
DEADLINE_S="${DEADLINE_S:-0}"
DEADLINE_RESERVE_S="${DEADLINE_RESERVE_S:-20}"

SUMMARY="$WORK/summary.txt"
: >"$SUMMARY"
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }
want() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
# seconds left before the deadline (less the reserve); a large number without one
left() {
  if [ "$DEADLINE_S" -gt 0 ]; then echo $((DEADLINE_S - DEADLINE_RESERVE_S - SECONDS)); else echo 999999; fi
}
# run NAME LOGFILE CMD...: runs CMD (under `timeout` of the time left) with its output in LOGFILE (and on the
# terminal), records pass/fail; too little time left: recorded as not run (a failure)
run() {
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS budget
  budget=$(left)
  if [ "$budget" -lt 30 ]; then
    note "SKIP  $name: ${budget} s left before DEADLINE_S=$DEADLINE_S"
    FAILED=1
    return 1
  fi
  echo "+ $*" >"$log"
  timeout --kill-after=10 "$budget" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    note "PASS  $name ($((SECONDS - t0)) s)  log: $(basename "$log")"
  else
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note "TIME  $name: stopped at the deadline (DEADLINE_S=$DEADLINE_S)"
    note "FAIL  $name (exit $rc, $((SECONDS - t0)) s)  log: $(basename "$log")"
    FAILED=1
  fi
  return "$rc"
}
# the few files that come back, refreshed after every stage (see "What comes back")
pack() {
  cp "$SUMMARY" "$OUT/summary.txt"
  [ -f "$WORK/env.txt" ] && cp "$WORK/env.txt" "$OUT/env.txt"
  local f
  for f in gpu.json gpu.md repro.md; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/$f"; done
  : >"$OUT/tests.txt"
  for f in "$WORK"/tests_*.log; do
    [ -f "$f" ] || continue
    { echo "== $(basename "$f")"; grep -E "^(FAILED|ERROR|SKIPPED|XFAIL)|passed|failed|error" "$f" | tail -n 300; } \
      >>"$OUT/tests.txt"
  done
  tar -C "$WORK" -czf "$OUT/logs.tar.gz.tmp" . && mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}
trap pack EXIT

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
} >"$WORK/env.txt" 2>&1
pack

# ---- build -----------------------------------------------------------------------------------------------------
if want build; then
  if ! run build "$WORK/build.log" env LSTM_EXT_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps --no-index \
      --force-reinstall -v "$ROOT"; then
    note "the build failed: nothing else can run"
    pack
    exit 1
  fi
  (cd "$WORK" && "$PY" -c "import lstm_ext, lstm_ext._build_info as b; print('lstm_ext', lstm_ext.__file__, 'WITH_CUDA', b.WITH_CUDA, 'archs', b.CUDA_ARCHS)") \
    >>"$WORK/build.log" 2>&1
  # FlashRNN, the benchmark peer, and einops, which it needs: carried as wheels (no network there)
  "$PY" -m pip install --no-deps --no-index "$ROOT"/bench/wheels/*.whl >>"$WORK/build.log" 2>&1 ||
    note "WARN  the FlashRNN wheels did not install: its benchmark cases will skip (see build.log)"
  tail -n 1 "$WORK/build.log" | tee -a "$SUMMARY"
  pack
fi

# ---- tests -----------------------------------------------------------------------------------------------------
if want test; then
  # plain pytest from the repository root: tests/ goes first on sys.path, the installed lstm_ext is imported.
  # The CUDA tests first, on their own (the GPU's verdict even if the rest runs out of time); then the rest,
  # on pytest-xdist workers when it is installed.
  (cd "$ROOT" && run tests-cuda "$WORK/tests_cuda.log" pytest tests/test_cuda.py tests/test_paper_cuda.py -ra -q \
    -p no:cacheprovider --junitxml="$WORK/tests_cuda.xml")
  if [ $? -ne 0 ]; then
    FAILED=1
    # a diagnosis in the same call: do the CUDA tests pass without thread-block clusters (sm_90)?
    if [ "${LSTM_EXT_CUDA_CLUSTER:-1}" != 0 ]; then
      (cd "$ROOT" && run tests-cuda-noclusters "$WORK/tests_cuda_noclusters.log" env LSTM_EXT_CUDA_CLUSTER=0 \
        pytest tests/test_cuda.py -ra -q -p no:cacheprovider)
    fi
  fi
  pack
  WORKERS="${LSTM_EXT_TEST_WORKERS:-8}"
  XDIST=()
  if [ "$WORKERS" -gt 0 ] && "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n "$WORKERS"); fi
  (cd "$ROOT" && run tests-rest "$WORK/tests_rest.log" pytest tests/ --ignore=tests/test_cuda.py \
    --ignore=tests/test_paper_cuda.py \
    ${XDIST[@]+"${XDIST[@]}"} ${LSTM_EXT_TEST_K:+-k "$LSTM_EXT_TEST_K"} -ra -q -p no:cacheprovider \
    --junitxml="$WORK/tests_rest.xml")
  [ $? -ne 0 ] && FAILED=1
  # the CUDA kernel's float32 error against float64 by width, beside cuBLAS's (a measurement, into the summary)
  (cd "$ROOT" && run float32-error "$WORK/float32_error.log" "$PY" scripts/float32_error.py --device cuda \
    --widths 64 256 1024 3072) && grep "^|" "$WORK/float32_error.log" >>"$SUMMARY"
  pack
fi

# ---- compute-sanitizer -----------------------------------------------------------------------------------------
if want sanitize; then
  CASES="$WORK/sanitize_cases.py"
  cat >"$CASES" <<'PYEOF'
"""Every CUDA kernel instantiation of lstm_ext (forward and backward; float32/float16/bfloat16 with batch tiles
1, 2, 4, 8, float64 with 1, 2) plus each launch path (one CTA per tile, CTA groups (thread-block clusters on sm_90),
groups with tiles side by side,
U in global memory, truncate, the tensor-core product alone and in a group), and the paper nets' training kernel (float32/float64, state in shared memory and
in the global workspace), small, for compute-sanitizer."""
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


# --groups-only: just the cases with groups of CTAs (run again with LSTM_EXT_CUDA_CLUSTER=0 on sm_90, where they
# are thread-block clusters by default: the flag barrier and the exchange through L2)
groups_only = "--groups-only" in sys.argv
cfgs = [CellConfig(), CellConfig(False, 2, "all", "paper", True), CellConfig(True, 3, "all", "sigmoid_identity")]
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for B in (1, 2, 3, 9):  # batch tiles 1, 2, 4, 8 (float64: 2), padded tiles
        if not groups_only:
            run(cfgs[B % 3], 3, B, 6, dtype)
# a group of CTAs (flag barrier + exchange), and more tiles than groups (side by side, forward and backward):
# from one tile more than the groups that fit, the first batch whose plan has fewer groups than tiles (the planner
# widens groups, which can change their count)
for cfg in cfgs[:2]:
    for C in (128, 192, 256, 384, 512):
        if plan(cfg, C, 5, torch.float32)[1] > 1:
            run(cfg, 3, 5, C, torch.float32)
            big = plan(cfg, C, 1 << 16, torch.float32)
            B = next((B for B in range(big[0] * (big[2] + 1) + 1, 1 << 16, big[0])
                      if (lambda q: q[2] < q[3])(plan(cfg, C, B, torch.float32))), None)
            if B is None:
                sys.exit(f"no batch gives more tiles than groups for {cfg} C={C}")
            run(cfg, 2, B, C, torch.float32)
            break
# the tensor-core product (16-bit tiles of 8 rows, sm_80+) in a group of CTAs
for C in (128, 192, 256, 384, 512):
    if plan(cfgs[0], C, 9, torch.bfloat16)[1] > 1:
        run(cfgs[0], 3, 9, C, torch.bfloat16)
        break
# U in global memory
if "--no-global" not in sys.argv and not groups_only:
    for C in (1024, 1536, 2048, 3072):
        if plan(CellConfig(), C, 1, torch.float32)[6] == 0:
            run(CellConfig(), 2, 1, C, torch.float32, varlen=False)
            break
# the paper nets' training kernel: dense and one-hot inputs, per-sequence and per-step changes, a forget gate,
# evaluation with every output; a net too big for shared memory (its state in the global workspace)
from types import SimpleNamespace
import numpy as np
from lstm_ext.paper import PaperNet, PaperNetSpec


def paper_batch(spec, n, T, onehot):
    rng = np.random.default_rng(0)
    lengths = np.array([T, 0, max(T // 2, 1)] * n)[:n]
    mask = np.zeros((n, T))
    mask[np.arange(n)[lengths > 0], lengths[lengths > 0] - 1] = 1
    return SimpleNamespace(
        x=None if onehot else rng.uniform(-1, 1, (n, T, spec.inputs)),
        x_index=np.where(rng.random((n, T)) < 0.8, rng.integers(0, spec.inputs, (n, T)), -1) if onehot else None,
        lengths=lengths, targets=rng.uniform(0, 1, (n, T, spec.outputs)), target_mask=mask)


for spec, onehot in () if groups_only else (
        (PaperNetSpec(2, 1, 2, 2, bias="all"), False), (PaperNetSpec(7, 7, 3, 2, bias="ga"), True),
        (PaperNetSpec(3, 2, 2, 1, bias="all", forget_gate=True, squash="tanh"), False),
        (PaperNetSpec(30000, 2, 1, 1, bias="none"), True)):
    for dtype in (torch.float32, torch.float64):
        net = PaperNet(spec, dtype=dtype, device="cuda").init_(torch.Generator().manual_seed(0), 0.2)
        b = paper_batch(spec, 4, 6, onehot)
        net.train(b, 0.5, update="sequence")
        net.train(b, 0.5, update="step")
        net.evaluate(b, return_outputs=True)
        torch.cuda.synchronize()
        print(f"ok paper_train {dtype} inputs={spec.inputs} blocks={spec.n_blocks}x{spec.block_size}", flush=True)
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
      (cd "$WORK" && run "sanitize-$tool" "$WORK/sanitize_$tool.log" "$SANITIZER" --tool "$tool" \
        ${extra[@]+"${extra[@]}"} --error-exitcode 1 --report-api-errors no --print-limit 200 "$PY" "$CASES")
      [ $? -ne 0 ] && FAILED=1
      # the groups again without thread-block clusters (sm_90 makes them clusters): the flag barrier
      (cd "$WORK" && run "sanitize-$tool-flag-barrier" "$WORK/sanitize_${tool}_flag_barrier.log" \
        env LSTM_EXT_CUDA_CLUSTER=0 "$SANITIZER" --tool "$tool" ${extra[@]+"${extra[@]}"} --error-exitcode 1 \
        --report-api-errors no --print-limit 200 "$PY" "$CASES" --groups-only)
      [ $? -ne 0 ] && FAILED=1
      pack
    done
    for tool in synccheck initcheck; do  # informational: torch's own kernels may trip initcheck
      case " $TOOLS " in *" $tool "*) ;; *) continue ;; esac
      budget=$(left)
      if [ "$budget" -lt 30 ]; then note "SKIP  sanitize-$tool (informational): ${budget} s left"; continue; fi
      (cd "$WORK" && timeout --kill-after=10 "$budget" "$SANITIZER" --tool "$tool" --error-exitcode 1 \
        --report-api-errors no --print-limit 200 "$PY" "$CASES" --no-global >"$WORK/sanitize_$tool.log" 2>&1)
      note "INFO  sanitize-$tool exit $? (not a failing stage)  log: sanitize_$tool.log"
      pack
    done
    unset PYTORCH_NO_CUDA_MEMORY_CACHING
  fi
fi

# ---- benchmarks ------------------------------------------------------------------------------------------------
if want bench; then
  # groups, most important first (the issue's targets are the fused ops against cuDNN); each group's results are
  # rewritten after every benchmark (bench/conftest.py, LSTM_EXT_BENCH_PARTIAL_JSON)
  if [ -n "${LSTM_EXT_BENCH_ARGS:-}" ]; then
    GROUPS_=("custom")
  else
    GROUPS_=("fused" "loops" "flashrnn")  # FlashRNN last: its builds took over 400 s for its cases on an H100
  fi
  for group in "${GROUPS_[@]}"; do
    case "$group" in
      custom) read -r -a ARGS <<<"$LSTM_EXT_BENCH_ARGS" ;;
      fused) ARGS=(bench/test_bench_cuda.py -k "nn.LSTM or LSTM2000 or LSTM1997") ;;
      flashrnn) ARGS=(bench/test_bench_cuda.py -k flashrnn) ;;
      loops) ARGS=(bench/test_bench_cuda.py -k "ref2000 or jit2000 or ref1997 or jit1997") ;;
    esac
    if [ "$group" = flashrnn ]; then  # its kernels, one build per case, in parallel first (one by one: over 400 s)
      (cd "$ROOT" && run bench-flashrnn-build "$WORK/bench_flashrnn_build.log" "$PY" bench/flashrnn_prebuild.py)
      [ $? -ne 0 ] && FAILED=1
      grep -E "cases built in|: refused" "$WORK/bench_flashrnn_build.log" >>"$SUMMARY"
    fi
    (cd "$ROOT" && run "bench-$group" "$WORK/bench_$group.log" env LSTM_EXT_BENCH_PARTIAL_JSON="$WORK/bench_$group.json" \
      pytest "${ARGS[@]}" --benchmark-only -p no:cacheprovider)
    [ $? -ne 0 ] && FAILED=1
    # every group's results so far in one file, and its table
    JSONS=("$WORK"/bench_*.json)
    if [ -s "${JSONS[0]}" ]; then
      "$PY" - "$WORK/gpu.json" "${JSONS[@]}" <<'PYEOF' >>"$WORK/bench_$group.log" 2>&1
import json, sys
out, parts = sys.argv[1], sys.argv[2:]
merged = None
for path in parts:
    with open(path) as f:
        d = json.load(f)
    if merged is None:
        merged = d
    else:
        merged["benchmarks"] += d["benchmarks"]
with open(out, "w") as f:
    json.dump(merged, f, indent=1)
print(f"merged {len(merged['benchmarks'])} benchmarks from {len(parts)} files into {out}")
PYEOF
      (cd "$ROOT" && "$PY" -m bench.report "$WORK/gpu.json" --out "$WORK" --name gpu >>"$WORK/bench_$group.log" 2>&1) ||
        note "WARN  bench report failed (see bench_$group.log)"
    fi
    pack
  done
  [ -s "$WORK/gpu.json" ] && note "bench results: gpu.json gpu.md (plots in logs.tar.gz)"
fi

# ---- where the time goes: the ops alone, and Nsight Compute ----------------------------------------------------
if want profile; then
  (cd "$ROOT" && run profile-timing "$WORK/profile_timing.log" "$PY" scripts/gpu_profile.py) &&
    grep "^|" "$WORK/profile_timing.log" >>"$SUMMARY"
  [ $? -ne 0 ] && FAILED=1
  # the groups of CTAs again with the flag barrier and the exchange through L2 (sm_90 runs them as thread-block
  # clusters): what the clusters change, in the same run
  note "the same, groups without thread-block clusters (LSTM_EXT_CUDA_CLUSTER=0):"
  (cd "$ROOT" && run profile-timing-flag-barrier "$WORK/profile_timing_flag_barrier.log" env LSTM_EXT_CUDA_CLUSTER=0 \
    "$PY" scripts/gpu_profile.py --cases float32:1:128 float32:64:128 float32:64:256 bfloat16:16:256 bfloat16:64:512) &&
    grep "^|" "$WORK/profile_timing_flag_barrier.log" >>"$SUMMARY"
  [ $? -ne 0 ] && FAILED=1
  pack
  NCU="$(command -v ncu || true)"
  [ -z "$NCU" ] && [ -x /usr/local/cuda/bin/ncu ] && NCU=/usr/local/cuda/bin/ncu
  if [ -z "$NCU" ]; then
    note "FAIL  profile-ncu: ncu not found"
    FAILED=1
  else
    read -r -a NCU_CASES <<<"${LSTM_EXT_NCU_CASES:-float32:1:32:1000:fwd float32:64:128:1000:fwd float32:256:1024:100:fwd float32:256:1024:100:bwd}"
    for c in "${NCU_CASES[@]}"; do
      kernel=forward_kernel
      [ "${c##*:}" = bwd ] && kernel=backward_kernel
      name="ncu_${c//:/_}"
      # the report (with the source: the build has -lineinfo), then its details page (ncu_*.log) and its source
      # page, every SASS instruction with its warp-stall samples and source line (ncu_*_sass.csv): where a step's
      # time goes, readable without ncu. The report itself is not kept (it would outgrow what comes back).
      (cd "$ROOT" && run "ncu-$c" "$WORK/$name.log" "$NCU" --clock-control none --set full --import-source yes \
        -k "regex:$kernel" --launch-skip 1 --launch-count 1 -f -o "$WORK/$name" "$PY" scripts/gpu_profile.py --ncu "$c")
      [ $? -ne 0 ] && FAILED=1
      if [ -f "$WORK/$name.ncu-rep" ]; then
        "$NCU" --import "$WORK/$name.ncu-rep" --page details >>"$WORK/$name.log" 2>&1 ||
          note "WARN  ncu-$c: the details page could not be printed (see $name.log)"
        "$NCU" --import "$WORK/$name.ncu-rep" --page source --csv --print-source sass >"$WORK/${name}_sass.csv" \
          2>>"$WORK/$name.log" || note "WARN  ncu-$c: the source page could not be printed (see $name.log)"
        rm -f "$WORK/$name.ncu-rep"
      fi
      pack
    done
  fi
  # the kernels' machine code (SASS, with the source lines), to read the per-step loop's instructions offline
  SO="$(cd "$WORK" && "$PY" -c "import lstm_ext._C as c; print(c.__file__)" 2>/dev/null)"
  CUOBJDUMP="$(command -v cuobjdump || true)"
  [ -z "$CUOBJDUMP" ] && [ -x /usr/local/cuda/bin/cuobjdump ] && CUOBJDUMP=/usr/local/cuda/bin/cuobjdump
  if [ -n "$SO" ] && [ -n "$CUOBJDUMP" ]; then
    "$CUOBJDUMP" -sass "$SO" >"$WORK/sass.txt" 2>&1 || note "WARN  cuobjdump -sass failed (see sass.txt)"
  else
    note "WARN  no SASS dump (cuobjdump or the built extension not found)"
  fi
  pack
fi

# ---- what a step's building blocks cost (torch-free; needs only nvcc) ------------------------------------------
if want micro; then
  (cd "$ROOT" && run micro-build "$WORK/step_costs_build.log" nvcc -std=c++20 --expt-relaxed-constexpr -O3 -I csrc \
    -arch=native bench/gpu_step_costs.cu -o "$WORK/step_costs") &&
    (cd "$ROOT" && run micro "$WORK/step_costs.md" "$WORK/step_costs") &&
    grep -E "^(#|\|)" "$WORK/step_costs.md" >>"$SUMMARY"
  [ $? -ne 0 ] && FAILED=1
  pack
fi

# ---- the reproduction on the GPU and on the CPU --------------------------------------------------------------
if want repro; then
  read -r -a REPRO <<<"${LSTM_EXT_REPRO_ARGS:-adding --T 100 --trials 10 --seed 0 --budget-factor 2}"
  : >"$WORK/repro.md"
  for device in cuda cpu; do
    rm -rf "$WORK/repro_$device"  # a fresh run: its wall time is the measurement
    (cd "$WORK" && run "repro-$device" "$WORK/repro_$device.log" lstm-ext reproduce "${REPRO[@]}" --device "$device" \
      --out "$WORK/repro_$device" --no-progress)
    [ $? -ne 0 ] && FAILED=1
    {
      echo "## --device $device"
      echo
      echo "\`lstm-ext reproduce ${REPRO[*]} --device $device\`: $(grep -E '^wall' "$WORK/repro_$device.log" || echo 'no wall time (see the log)')"
      echo
      [ -f "$WORK/repro_$device/report.md" ] && cat "$WORK/repro_$device/report.md"
      echo
    } >>"$WORK/repro.md"
    pack
  done
fi

note "stages: ${STAGES[*]}; $([ $FAILED -eq 0 ] && echo 'all passed' || echo 'SOME FAILED')"
pack
exit $FAILED
