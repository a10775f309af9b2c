"""The custom ops against the oracle (lstm_ext.reference) and the reliability checks of a custom op.

What is held here (design.md §7, build-and-api-notes.md §5):

- ``ops.recurrence`` (C++ autograd) and ``recurrence_forward`` (its own C++ autograd) give the
  reference's outputs (y, r_T, s_T) and EVERY gradient (A, U, r0, s0) under random upstream gradients on all
  three outputs, over every configuration, with and without per-row lengths, in float64 and float32;
- hypothesis property test over random shapes / configs / lengths;
- ``gradcheck`` on the real float64 kernel; ``opcheck`` on all three ops; ``torch.compile(fullgraph=True)``;
- non-contiguous inputs, bitwise determinism, NaN confined to its batch row, error messages on bad input;
- the 1997 learning rule (truncate=True): no gradient reaches r0, the gradient on s0 is the CEC path.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_ext import functional, ops
from lstm_ext.config import FEEDBACKS, SQUASHES, CellConfig
from lstm_ext.reference import cell_step_ref, recurrence_ref

from cases import all_configs, cfg_id, make_inputs, tolerances

OPS = torch.ops.lstm_ext
NAMES = ("y", "r_T", "s_T", "dA", "dU", "dr0", "ds0")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tests run tiny ops thousands of times; on a loaded 2-core machine torch's intra-op thread pool
    spends 10x the op's own time waiting for the other core. One thread keeps the file fast (and the kernels
    are single-threaded anyway; BLAS runs single-threaded here, the determinism test also runs it threaded)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- helpers ---------------------------------------------------------------------------------------------









def make_upstream(cfg, T, B, C, seed=1):
    """Random float64 upstream gradients on y, r_T, s_T."""
    g = torch.Generator().manual_seed(seed)
    R = cfg.recurrent_size(C)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((T, B, C), (B, R), (B, C))]


def varied_lengths(B, T):
    """(B,) int64 lengths that include T, 0 and values in between (cycled over the batch)."""
    pattern = [T, 0, T // 2, 1, max(T - 1, 0)]
    return torch.tensor([min(pattern[b % len(pattern)], T) for b in range(B)], dtype=torch.int64)


def outputs_and_grads(fn, inputs, cfg, lengths, upstream, **kw):
    """(y, r_T, s_T, dA, dU, dr0, ds0) of fn(A, U, r0, s0, cfg, lengths) under the upstream gradients.
    Gradients that do not exist (an input unused in the graph, e.g. r0 under truncate) count as zeros."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outs = fn(*leaves, cfg, lengths=lengths, **kw)
    # (the reference's empty y for T = 0 is a constant: it takes no part in the graph)
    pairs = [(o, u.to(o.dtype)) for o, u in zip(outs, upstream) if o.requires_grad]
    grads = torch.autograd.grad(
        [o for o, _ in pairs], leaves, [u for _, u in pairs], allow_unused=True, materialize_grads=True
    )
    return [o.detach() for o in outs] + list(grads)


def run_reference(inputs, cfg, lengths, upstream):
    return outputs_and_grads(recurrence_ref, [t.to(torch.float64) for t in inputs], cfg, lengths, upstream)


def assert_parity(got, want, dtype, T, B, what="", same_dtype=None):
    """Every one of (y, r_T, s_T, dA, dU, dr0, ds0) within tolerances(dtype, n).

    ``same_dtype``: the reference's own results in ``dtype``. Each result may then also be as far from the
    float64 oracle as twice the reference's largest error in that dtype (the yardstick the CUDA issue sets for
    half precision). Long sequences of the 1997 cell need it: without a forget gate the states, and the
    gradients through them, grow with T, and float32 errors grow faster than the random walk of tolerances()
    (B=32, T=70: the reference's own dU is 2.4e-4 off, more than 8 sqrt(T B) eps)."""
    for i, (name, a, b) in enumerate(zip(NAMES, got, want)):
        assert a.dtype == dtype, (name, a.dtype)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        n = T * B if name == "dU" else T
        tol = tolerances(dtype, n)
        if same_dtype is not None:
            floor = 2 * (same_dtype[i].to(torch.float64) - b).abs().max().item()
            tol = dict(rtol=tol["rtol"], atol=max(tol["atol"], floor))
        torch.testing.assert_close(a.to(torch.float64), b, **tol, msg=lambda m: f"{what} {name}: {m}")


def check_against_reference(fn, cfg, T, B, C, dtype, lengths, seed=0, yardstick=False):
    """``yardstick``: also allow twice the reference's own error in ``dtype`` (see assert_parity)."""
    inputs = make_inputs(cfg, T, B, C, dtype, seed)
    upstream = make_upstream(cfg, T, B, C, seed + 1)
    got = outputs_and_grads(fn, inputs, cfg, lengths, upstream)
    want = run_reference(inputs, cfg, lengths, upstream)
    same = None
    if yardstick and dtype != torch.float64:
        same = outputs_and_grads(recurrence_ref, inputs, cfg, lengths, upstream)
    assert_parity(got, want, dtype, T, B, what=f"{cfg_id(cfg)} T={T} B={B} C={C} {dtype} lengths={lengths}",
                  same_dtype=same)  # fmt: skip
    return got, want


def forward_op_recurrence(A, U, r0, s0, cfg, lengths=None):
    """recurrence_forward through its own autograd (RecurrenceBackward on y, r_T, s_T), as a (y, r_T, s_T) function."""
    y, r_T, s_T, act, s_all = OPS.recurrence_forward(A, U, r0, s0, lengths, *cfg.op_args())
    assert not act.requires_grad and not s_all.requires_grad  # marked non-differentiable
    return y, r_T, s_T


DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
LENGTHS = [pytest.param(False, id="full"), pytest.param(True, id="varlen")]


# ---- 1. ops.recurrence against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", all_configs(), ids=cfg_id)
def test_recurrence_matches_reference(cfg, varlen, dtype):
    T, B, C = 6, 5, 6  # C = 6: blocks of 1, 2 and 3 cells
    check_against_reference(ops.recurrence, cfg, T, B, C, dtype, varied_lengths(B, T) if varlen else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize(
    "cfg", [CellConfig(), CellConfig(False, 2, "all", "paper", True), CellConfig(True, 3, "all", "sigmoid_identity")],
    ids=cfg_id,
)
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)], ids=["T0", "B0", "T0B0"])
def test_recurrence_empty(T, B, cfg, varlen, dtype):
    """T = 0: y is (0, B, C), r_T = r0, s_T = s0, and the gradients on r_T/s_T pass straight to r0/s0.
    B = 0: every output is empty and dU is zero."""
    C = 6
    lengths = torch.zeros(B, dtype=torch.int64) if varlen else None
    inputs = make_inputs(cfg, T, B, C, dtype)
    upstream = make_upstream(cfg, T, B, C)
    got = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    y, r_T, s_T, dA, dU, dr0, ds0 = got
    A, U, r0, s0 = inputs
    assert y.shape == (T, B, C) and r_T.shape == r0.shape and s_T.shape == s0.shape
    assert dA.shape == A.shape and dU.shape == U.shape
    assert torch.equal(r_T, r0) if T == 0 else r_T.numel() == 0
    assert torch.equal(s_T, s0) if T == 0 else s_T.numel() == 0
    assert torch.equal(dr0, upstream[1].to(dtype)) and torch.equal(ds0, upstream[2].to(dtype))
    assert torch.equal(dU, torch.zeros_like(U))
    assert_parity(got, run_reference(inputs, cfg, lengths, upstream), dtype, T, B)


BLAS_CONFIGS = [
    CellConfig(),
    CellConfig(False, 1, "all", "paper"),
    CellConfig(True, 4, "all", "sigmoid_identity", True),
]


@pytest.mark.parametrize("T", [pytest.param(20, id="T20"), pytest.param(70, id="T70")])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", BLAS_CONFIGS, ids=cfg_id)
def test_recurrence_matches_reference_blas_path(cfg, varlen, dtype, T):
    """B*G*R far above the hand loops' threshold (65536 multiply-adds): the forward splits the batch into per-thread
    row chunks, and the products run through the AVX2 panel kernel in float32 (csrc/cpu/panel_gemm.h, where the
    build has AVX2+FMA; else sgemm) and through dgemm in float64."""
    assert OPS.have_blas(), "the extension found no BLAS: this test then only repeats the hand-loop path"
    B, C = 32, 128
    lengths = None
    if varlen:
        lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(3))
        lengths[:3] = torch.tensor([0, T, 1])
    check_against_reference(ops.recurrence, cfg, T, B, C, dtype, lengths, yardstick=T > 20)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", BLAS_CONFIGS, ids=cfg_id)
def test_recurrence_matches_reference_on_two_threads(cfg, dtype):
    """The other tests run on one thread; with two, the forward and the backward split the batch into row
    chunks (here of unequal size, B = 33), each chunk on its own thread with single-threaded BLAS."""
    T, B, C = 12, 33, 128
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        check_against_reference(ops.recurrence, cfg, T, B, C, dtype, varied_lengths(B, T))
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B,C", [(64, 16), (63, 16), (65, 16), (33, 128)], ids=["at-threshold", "below", "above", "uneven-row-chunks"]
)
def test_recurrence_around_blas_threshold(B, C, dtype):
    """B*G*R = 64*64*16 = 65536 is exactly the switch from the hand loops to BLAS; both sides of it. B=33, C=128
    splits the forward into two row chunks of unequal size."""
    T = 5
    check_against_reference(ops.recurrence, CellConfig(), T, B, C, dtype, varied_lengths(B, T))


@pytest.mark.parametrize("dtype", DTYPES)
def test_recurrence_one_wide_row_on_two_threads(dtype):
    """One batch row with products of at least 2^21 multiply-adds (G*R = 2896*724) on two threads: in float32 the
    forward splits the cells over the threads (see test_wide_layer_forward_splits_the_cells); in float64, and in the
    backward, a single row chunk, so the products stay with BLAS, which splits each over the threads."""
    T, B, C = 70, 1, 724
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        check_against_reference(ops.recurrence, CellConfig(), T, B, C, dtype, None, yardstick=True)
    finally:
        torch.set_num_threads(n)


def same_bits_on_one_and_two_threads(inputs, cfg, lengths, upstream):
    """ops.recurrence's outputs and gradients on two threads, after asserting they are the bits of one thread, and
    those of the forward without a gradient (which keeps no workspace) on both."""
    n = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                inference = ops.recurrence(*inputs, cfg, lengths)
            results[threads] = (inference, outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream))
    finally:
        torch.set_num_threads(n)
    (inference_1, got_1), (inference_2, got_2) = results[1], results[2]
    for name, a, b in zip(NAMES, got_2, got_1):
        assert torch.equal(a, b), f"{name} differs between two threads and one"
    for a, b, c in zip(inference_2, inference_1, got_2):
        assert torch.equal(a, b) and torch.equal(a, c)
    return got_2


WIDE_CONFIGS = [CellConfig(), CellConfig(False), CellConfig(False, 1, "cells", "paper", True)]


@pytest.mark.parametrize("cfg", WIDE_CONFIGS, ids=cfg_id)
@pytest.mark.parametrize("B,C", [(4, 512), (33, 520), (2, 1030)], ids=["H512", "B33", "ragged-H1030"])
def test_wide_layer_forward_splits_the_cells(cfg, B, C):
    """float32 layers whose U has 2^20 elements or more (H >= 512), cells of their own fed back, no lengths: on two
    threads the forward splits the cells, not the batch, over the threads, with a barrier after each step
    (csrc/cpu/recurrence_cpu.cpp, forward_cell_split; the last thread's cells end in a part-filled panel at
    H = 1030; T = 16, as calls of fewer row-steps split no cells, few_row_steps). The same bits as on one thread
    (each output the same multiply-adds in the same order), with and without a gradient, and the reference's outputs
    and gradients."""
    T = 16
    inputs = make_inputs(cfg, T, B, C, torch.float32)
    upstream = make_upstream(cfg, T, B, C)
    got_2 = same_bits_on_one_and_two_threads(inputs, cfg, None, upstream)
    # Outputs and gradients against the reference. At this width the step products sum over K = R (forward) and
    # K = G (backward) up to 4120 terms: the panel kernel's blocks of k (panel_gemm.h, kBlockK) keep them within
    # tolerance (one chain over all K left dA and dU of the 1997 cell at H=1030 1.2-1.3x over it). dU sums T * B
    # outer products on top (at H=1030, T=16 3 of its 3.2 million elements were 1.25x over tolerances(); within
    # twice the float32 reference's own error).
    want = run_reference(inputs, cfg, None, upstream)
    same = outputs_and_grads(recurrence_ref, inputs, cfg, None, upstream)
    assert_parity(got_2, want, torch.float32, T, B, same_dtype=same)


FEW_ROW_STEPS_CASES = [  # (cfg, T, B, C): fewer than 32 rows x steps and 16 steps, products of 2^18 multiply-adds or more
    (CellConfig(), 1, 16, 300),  # G=1200 (4 blocks of 256 columns and one of 176), R=300 (256 + 44)
    (CellConfig(False), 2, 8, 520),  # the 1997 cell, two steps
    (CellConfig(False, 1, "all", "paper", True), 1, 4, 400),  # gate activations fed back (R = G = 1200), truncated
    (CellConfig(), 1, 1, 256),  # one row (decoding): G=1024, R=256, 2^18 multiply-adds
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg,T,B,C", FEW_ROW_STEPS_CASES, ids=lambda v: cfg_id(v) if isinstance(v, CellConfig) else str(v))
def test_few_row_steps_with_large_products(cfg, T, B, C, dtype):
    """A call of few rows x steps (decoding a batch a step at a time) whose products are worth two threads packs no
    panels: one chunk of rows, each product in column blocks shared by the threads (csrc/cpu/recurrence_cpu.cpp,
    few_row_steps, StepProduct's BlasColumns). The reference's outputs and gradients, with per-row lengths; and the
    same bits on one thread and two (the blocks do not depend on the number of threads; BLAS's own threads would
    split the few rows' products along K)."""
    assert T * B < 32 and T < 16 and B * cfg.gate_rows(C) * (cfg.gate_rows(C) if cfg.feedback == "all" else C) >= 2**18
    lengths = varied_lengths(B, T)
    inputs = make_inputs(cfg, T, B, C, dtype)
    upstream = make_upstream(cfg, T, B, C)
    got_2 = same_bits_on_one_and_two_threads(inputs, cfg, lengths, upstream)
    want = run_reference(inputs, cfg, lengths, upstream)
    same = outputs_and_grads(recurrence_ref, inputs, cfg, lengths, upstream) if dtype != torch.float64 else None
    assert_parity(got_2, want, dtype, T, B, same_dtype=same)


PANEL_CASES = [  # (cfg, B, C): G and R not multiples of 16; B splits into row tiles (AVX2: 1 to 6, AVX-512: 1 to 12)
    (CellConfig(), 1, 150),  # G=600, R=150: one row (AVX-512: 4 panels per tile); W of 365 KB
    (CellConfig(), 3, 130),  # G=520, R=130: three rows (AVX2 tiles also on an AVX-512 CPU)
    (CellConfig(), 7, 90),  # G=360, R=90: AVX2 tiles of 4 + 3
    (CellConfig(), 13, 77),  # G=308, R=77: AVX2 5 + 4 + 4, AVX-512 7 + 6; two threads: row chunks of 7 and 6
    (CellConfig(), 25, 64),  # G=256, R=64: AVX-512 9 + 8 + 8
    (CellConfig(False, 1, "all", "paper"), 9, 50),  # G=R=150, gate activations fed back
    (CellConfig(True, 3, "cells", "tanh"), 11, 69),  # blocks of 3: G=138, R=69
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cfg,B,C", PANEL_CASES, ids=lambda v: cfg_id(v) if isinstance(v, CellConfig) else str(v))
def test_recurrence_panel_kernel_edges(cfg, B, C, threads):
    """float32 step products of at least 65536 multiply-adds run the panel kernel (csrc/cpu/panel_gemm.h; AVX-512
    where the CPU has it, else AVX2) where the build has it: balanced row tiles, groups of 4, 2 and 1 panels, and a
    last panel of fewer than 16 columns (through a scratch tile), in the forward (r U^T, N = G) and the backward
    (da U, N = R), with per-row lengths."""
    T = 9
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        check_against_reference(ops.recurrence, cfg, T, B, C, torch.float32, varied_lengths(B, T), yardstick=True)
    finally:
        torch.set_num_threads(n)



def panel_case_results() -> list:
    """Outputs and gradients of ops.recurrence in float32 over PANEL_CASES (T = 9, per-row lengths), one thread."""
    torch.set_num_threads(1)
    results = []
    for cfg, B, C in PANEL_CASES:
        inputs = make_inputs(cfg, 9, B, C, torch.float32)
        upstream = make_upstream(cfg, 9, B, C)
        results.append(outputs_and_grads(ops.recurrence, inputs, cfg, varied_lengths(B, 9), upstream))
    return results


def panel_case_results_in_process(tmp_path, env: dict, check: str = "True") -> list:
    """panel_case_results() in a new Python process with `env` added to the environment (the kernels read their
    switches once); `check`, an expression over torch, must hold there."""
    out = tmp_path / "results.pt"
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import test_ops; "
        f"assert {check}, torch.ops.lstm_ext.cpu_panel_kernel(); "
        "torch.save(test_ops.panel_case_results(), sys.argv[2])"
    )
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(out)],
                          env=dict(os.environ, **env), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out)


def assert_panel_results_equal(got: list, want: list, what: str):
    for (cfg, B, C), g_case, w_case in zip(PANEL_CASES, got, want, strict=True):
        for name, g, w in zip(NAMES, g_case, w_case):
            assert torch.equal(g, w), f"{cfg_id(cfg)} B={B} C={C}: {name} differs between {what}"


@pytest.mark.skipif(OPS.cpu_panel_kernel() != "avx512", reason="this CPU or build has no AVX-512 panel kernel")
def test_panel_kernel_avx512_matches_avx2_bitwise(tmp_path):
    """The AVX-512 and the AVX2 panel kernels compute each output by the same FMAs in the same order (blocks of
    kBlockK k), so they give the same bits: the results of PANEL_CASES here (AVX-512) against a process with
    LSTM_EXT_CPU_AVX512=0."""
    check = "torch.ops.lstm_ext.cpu_panel_kernel() == 'avx2'"
    avx2 = panel_case_results_in_process(tmp_path, {"LSTM_EXT_CPU_AVX512": "0"}, check)
    assert_panel_results_equal(panel_case_results(), avx2, "AVX-512 and AVX2")


@pytest.mark.skipif(OPS.cpu_panel_kernel() == "blas", reason="this build has no panel kernel")
def test_panel_kernel_loop_orders_match_bitwise(tmp_path):
    """Row tiles outside the panels (W within half the L2 cache) or inside them (larger W): each output is the
    same FMAs either way, so the same bits. PANEL_CASES with each order forced (LSTM_EXT_ROWS_OUTER_MAX_KB: 0,
    every W panels-outer; a million, every W rows-outer)."""
    panels_outer = panel_case_results_in_process(tmp_path, {"LSTM_EXT_ROWS_OUTER_MAX_KB": "0"})
    rows_outer = panel_case_results_in_process(tmp_path, {"LSTM_EXT_ROWS_OUTER_MAX_KB": "1000000"})
    assert_panel_results_equal(rows_outer, panels_outer, "the two loop orders")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [30.0, 1e4])
@pytest.mark.parametrize(
    "cfg", [CellConfig(), CellConfig(False, 2, "all", "paper"), CellConfig(True, 1, "all", "sigmoid_identity", True)],
    ids=cfg_id,
)
def test_recurrence_saturated(cfg, scale, dtype):
    """Net inputs far in the flat tails of sigmoid/tanh (the float32 kernel's polynomial exp clamps its argument)."""
    T, B, C = 6, 5, 4
    lengths = varied_lengths(B, T)
    inputs = make_inputs(cfg, T, B, C, dtype)
    inputs[0] = inputs[0] * scale
    upstream = make_upstream(cfg, T, B, C)
    got = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    assert all(torch.isfinite(g).all() for g in got)
    assert_parity(got, run_reference(inputs, cfg, lengths, upstream), dtype, T, B)


def cell_state_of_one_step(a_z, squash):
    """s_T of one step of the 2000 cell with one cell from s0 = 0, the input gate saturated open (its sigmoid is
    exactly 1 in float32): the cell-input squash g(a_z) as the float32 CPU kernel computes it. a_z: (N,)."""
    N = a_z.shape[0]
    A = torch.zeros(1, N, 4)  # gate rows (iota, phi, z, omega)
    A[0, :, 0] = 100.0
    A[0, :, 2] = a_z
    U, r0, s0 = torch.zeros(4, 1), torch.zeros(N, 1), torch.zeros(N, 1)
    _, _, s_T = ops.recurrence(A, U, r0, s0, CellConfig(True, 1, "cells", squash))
    return s_T[:, 0]


def ulps(got, want):
    """|got - want| in units of the float32 spacing at want (float64 in, float64 out)."""
    spacing = np.abs(np.spacing(want.numpy().astype(np.float32))).astype(np.float64)
    return (got.double() - want).abs().numpy() / spacing


@pytest.mark.parametrize(
    "squash,want_fn,bound_ulp",
    [("tanh", torch.tanh, 5.4), ("sigmoid_identity", torch.sigmoid, 2.5)],
    ids=["tanh", "sigmoid"],
)
def test_float32_activation_error(squash, want_fn, bound_ulp):
    """The float32 CPU activations stay within the error csrc/cell.h states for them (tanh: a rational
    function; sigmoid: 1 / (1 + exp) with a polynomial exp; scripts/fit_activations.py), and tanh within [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([(torch.rand(2_000_000, generator=g) - 0.5) * 40, torch.logspace(-30, 1, 20_000)])
    x = torch.cat([x, -x]).float()
    got = cell_state_of_one_step(x, squash)
    err = ulps(got, want_fn(x.double()))
    assert err.max() <= bound_ulp, f"{squash}: {err.max():.2f} ulp at x = {x[int(err.argmax())].item():.6g}"
    if squash == "tanh":
        assert got.abs().max() <= 1.0
        assert torch.equal(cell_state_of_one_step(torch.tensor([float("inf"), -float("inf")]), squash),
                           torch.tensor([1.0, -1.0]))  # fmt: skip


WITHOUT_GRAD = ["no_grad", "inference_mode", "no_input_requires_grad"]


def run_without_grad(mode, inputs, cfg, lengths):
    if mode == "no_input_requires_grad":
        return ops.recurrence(*inputs, cfg, lengths)
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        return ops.recurrence(*inputs, cfg, lengths)


@pytest.mark.parametrize("mode", WITHOUT_GRAD)
@pytest.mark.parametrize(
    "cfg,T,B,C",
    [(cfg, 5, 3, 4) for cfg in all_configs(block_sizes=(1, 2))] + [(cfg, 6, 32, 128) for cfg in BLAS_CONFIGS],
    ids=lambda v: cfg_id(v) if isinstance(v, CellConfig) else str(v),
)
def test_recurrence_without_autograd(cfg, T, B, C, mode):
    """Without a gradient to record, the op runs the forward that keeps no workspace (the CPU kernel of
    lstm_ext::recurrence): the same bits as the forward autograd runs, in every configuration, with per-row
    lengths, on the hand loops and on the BLAS path with its threaded row chunks."""
    inputs = make_inputs(cfg, T, B, C, torch.float32)
    lengths = varied_lengths(B, T)
    with_grad = ops.recurrence(*[t.clone().requires_grad_() for t in inputs], cfg, lengths)
    without = run_without_grad(mode, inputs, cfg, lengths)
    for a, b in zip(with_grad, without):
        assert not b.requires_grad and b.grad_fn is None
        assert torch.equal(a.detach(), b)


def recurrence_allocated_bytes(inputs, cfg, requires_grad):
    """Bytes the CPU allocator handed out, and did not take back, during one call of ops.recurrence."""
    inputs = [t.clone().requires_grad_(requires_grad) for t in inputs]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        outs = ops.recurrence(*inputs, cfg)
    del outs
    return sum(e.cpu_memory_usage for e in prof.events() if e.name == "lstm_ext::recurrence")


def test_recurrence_without_autograd_keeps_no_workspace():
    """Inference holds y and the final state only, as nn.LSTM's does: not the (T, B, G) activations and
    (T, B, C) states that the backward needs (5x y's size for the 2000 cell)."""
    cfg = CellConfig()
    T, B, C = 50, 4, 16
    inputs = make_inputs(cfg, T, B, C, torch.float32)
    outputs = (T * B * C + 2 * B * C) * 4  # y, r_T, s_T in float32
    workspace = (T * B * 4 * C + T * B * C) * 4  # act, s_all
    assert recurrence_allocated_bytes(inputs, cfg, requires_grad=False) == outputs
    assert recurrence_allocated_bytes(inputs, cfg, requires_grad=True) >= outputs + workspace


# ---- 2. recurrence_forward through its own autograd --------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(2,)), ids=cfg_id)
def test_recurrence_forward_op_matches_reference(cfg, varlen, dtype):
    T, B, C = 5, 4, 4
    check_against_reference(forward_op_recurrence, cfg, T, B, C, dtype, varied_lengths(B, T) if varlen else None)


@pytest.mark.parametrize("fn", [ops.recurrence, forward_op_recurrence], ids=["recurrence", "recurrence_forward"])
@pytest.mark.parametrize("which", [0, 1, 2], ids=["y", "r_T", "s_T"])
def test_gradient_on_one_output_only(fn, which):
    """Outputs that get no gradient count as zero gradients (nn.LSTM's #11872)."""
    cfg = CellConfig(True, 1, "all", "tanh")
    T, B, C = 4, 3, 3
    inputs = make_inputs(cfg, T, B, C)
    upstream = make_upstream(cfg, T, B, C)
    upstream = [u if i == which else torch.zeros_like(u) for i, u in enumerate(upstream)]
    want = run_reference(inputs, cfg, None, upstream)
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves, cfg)
    grads = torch.autograd.grad((out[which] * upstream[which]).sum(), leaves, allow_unused=True, materialize_grads=True)
    for name, a, b in zip(NAMES[3:], grads, want[3:]):
        torch.testing.assert_close(a, b, **tolerances(torch.float64, T), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "layout",
    [
        lambda u: u[:1, :1, :1].expand(u.shape),  # y.sum()'s gradient: one value, strides (0, 0, 0)
        lambda u: u.permute(2, 1, 0).contiguous().permute(2, 1, 0),  # C outermost: strides (1, T, T*B)
        lambda u: torch.cat([u, u], 0)[::2],  # every other step of a longer tensor
    ],
    ids=["expanded", "permuted", "sliced"],
)
def test_backward_op_reads_strided_dy(layout, dtype):
    """The CPU backward reads dy through its strides, not a contiguous copy: the same bits as with dy contiguous."""
    cfg = CellConfig(True, 1, "all", "tanh")
    T, B, C = 5, 3, 4
    A, U, r0, s0 = (t.to(dtype) for t in make_inputs(cfg, T, B, C, seed=3))
    y, r_T, s_T, act, s_all = OPS.recurrence_forward(A, U, r0, s0, None, *cfg.op_args())
    dy, dr_T, ds_T = (u.to(dtype) for u in make_upstream(cfg, T, B, C, seed=4))
    strided = layout(dy)
    assert not strided.is_contiguous()
    got = OPS.recurrence_backward(strided, dr_T, ds_T, U, r0, s0, y, act, s_all, None, *cfg.op_args())
    want = OPS.recurrence_backward(strided.contiguous(), dr_T, ds_T, U, r0, s0, y, act, s_all, None, *cfg.op_args())
    for name, a, b in zip(NAMES[3:], got, want):
        assert torch.equal(a, b), name


# ---- 3. property test ----------------------------------------------------------------------------------------


@st.composite
def recurrence_cases(draw):
    cfg = CellConfig(
        forget_gate=draw(st.booleans()),
        block_size=draw(st.integers(1, 3)),
        feedback=draw(st.sampled_from(FEEDBACKS)),
        squash=draw(st.sampled_from(SQUASHES)),
        truncate=draw(st.booleans()),
    )
    T = draw(st.integers(0, 7))
    B = draw(st.integers(0, 5))
    C = cfg.block_size * draw(st.integers(1, 3))
    lengths = None
    if draw(st.booleans()):
        lengths = torch.tensor(draw(st.lists(st.integers(0, T), min_size=B, max_size=B)), dtype=torch.int64)
    return cfg, T, B, C, lengths, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(recurrence_cases())
def test_recurrence_property(case):
    cfg, T, B, C, lengths, seed = case
    check_against_reference(ops.recurrence, cfg, T, B, C, torch.float64, lengths, seed=seed)


# ---- 4. gradcheck on the real float64 kernel -----------------------------------------------------------------


def tiny_case(cfg, varlen, dtype=torch.float64, seed=0):
    C = 2 * cfg.block_size  # C = 2 (one-cell blocks) or 4 (two blocks of two)
    T, B = 3, (3 if varlen else 2)
    lengths = torch.tensor([3, 0, 2]) if varlen else None
    return make_inputs(cfg, T, B, C, dtype, seed), lengths


@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 2), truncate=(False,)), ids=cfg_id)
def test_gradcheck(cfg, varlen):
    # Only truncate=False: with truncate=True the op's gradient is by design NOT the derivative of its
    # forward (the 1997 rule drops the path through r_{t-1}), so gradcheck would rightly fail. Those configs
    # are checked against the reference (which implements the rule as r.detach()) in test_truncated_gradient.
    inputs, lengths = tiny_case(cfg, varlen)
    leaves = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *x: ops.recurrence(*x, cfg, lengths), leaves)


@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 2), truncate=(True,)), ids=cfg_id)
def test_truncated_gradient(cfg, varlen):
    """truncate=True at the gradcheck sizes: the gradient is the reference's (r_{t-1} detached)."""
    inputs, lengths = tiny_case(cfg, varlen)
    T, B = inputs[0].shape[:2]
    C = inputs[3].shape[1]
    upstream = make_upstream(cfg, T, B, C)
    got = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    assert_parity(got, run_reference(inputs, cfg, lengths, upstream), torch.float64, T, B)


# ---- 5. opcheck ------------------------------------------------------------------------------------------------

OPCHECK_CASES = [  # (cfg, T, B, C, requires_grad, lengths)
    (CellConfig(), 3, 2, 3, True, None),
    (CellConfig(), 3, 2, 3, False, None),
    (CellConfig(False, 2, "all", "paper", True), 5, 3, 4, True, [5, 0, 2]),
    (CellConfig(True, 3, "all", "sigmoid_identity"), 1, 1, 3, False, [1]),
    (CellConfig(True, 1, "cells", "paper"), 7, 5, 1, True, [7, 3, 0, 1, 6]),
]


def opcheck_samples(cfg, T, B, C, requires_grad, lengths, dtype):
    A, U, r0, s0 = make_inputs(cfg, T, B, C, dtype)
    lengths = None if lengths is None else torch.tensor(lengths)
    ins = [t.requires_grad_(requires_grad) for t in (A, U, r0, s0)]
    return ins, lengths


# each sample once, float64 and float32 alternating (opcheck costs ~0.5 s a call)
OPCHECK_PARAMS = [(i, torch.float64 if i % 2 == 0 else torch.float32) for i in range(len(OPCHECK_CASES))]
OPCHECK_IDS = [f"{i}-{'f64' if d == torch.float64 else 'f32'}" for i, d in OPCHECK_PARAMS]


@pytest.mark.parametrize("case,dtype", OPCHECK_PARAMS, ids=OPCHECK_IDS)
@pytest.mark.parametrize("op", ["recurrence", "recurrence_forward"])
def test_opcheck(op, case, dtype):
    cfg, *rest = OPCHECK_CASES[case]
    ins, lengths = opcheck_samples(cfg, *rest, dtype)
    torch.library.opcheck(getattr(OPS, op), (*ins, lengths, *cfg.op_args()))


@pytest.mark.parametrize("case,dtype", OPCHECK_PARAMS, ids=OPCHECK_IDS)
def test_opcheck_backward(case, dtype):
    # recurrence_backward is differentiable once (its outputs' node raises), so its inputs do not require grad.
    cfg, T, B, C, _, lengths = OPCHECK_CASES[case]
    ins, lengths = opcheck_samples(cfg, T, B, C, False, lengths, dtype)
    U, r0, s0 = ins[1:]
    y, r_T, s_T, act, s_all = OPS.recurrence_forward(*ins, lengths, *cfg.op_args())
    dy, dr_T, ds_T = (u.to(dtype) for u in make_upstream(cfg, T, B, C))
    args = (dy, dr_T, ds_T, U, r0, s0, y, act, s_all, lengths, *cfg.op_args())
    torch.library.opcheck(OPS.recurrence_backward, args)


# ---- 6. torch.compile -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend,varlen",
    [("aot_eager", False), ("aot_eager", True), ("inductor", True)],
    ids=["aot_eager", "aot_eager-varlen", "inductor-varlen"],
)
def test_torch_compile_fullgraph(backend, varlen):
    cfg = CellConfig(True, 1, "all", "paper")
    T, B, C, D = 5, 3, 3, 4
    G = cfg.gate_rows(C)
    lengths = torch.tensor([5, 0, 2]) if varlen else None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    W = torch.randn(G, D, generator=g, dtype=torch.float64) / 2
    _, U, r0, s0 = make_inputs(cfg, T, B, C)

    def f(x, W, U, r0, s0):  # kept free of pointwise ops: inductor then has no C++ kernel to compile (~10 s)
        return ops.recurrence(x @ W.t(), U, r0, s0, cfg, lengths)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (x, W, U, r0, s0)]
        out = fn(*leaves)
        loss = sum(((i + 1) * torch.tanh(o)).sum() for i, o in enumerate(out))
        return [o.detach() for o in out] + list(torch.autograd.grad(loss, leaves))

    torch._dynamo.reset()
    compiled = run(torch.compile(f, fullgraph=True, backend=backend))
    eager = run(f)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- 7. non-contiguous inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["small", "blas"])
def test_non_contiguous_inputs(size, dtype):
    cfg = CellConfig(True, 2, "all", "paper")
    T, B, C = (4, 3, 4) if size == "small" else (6, 16, 64)
    inputs = make_inputs(cfg, T, B, C, dtype)
    A, U, r0, s0 = inputs
    lengths = varied_lengths(B, T)
    upstream = make_upstream(cfg, T, B, C)

    def noncontig(A, U, r0, s0):
        A_nc = A.transpose(0, 1).contiguous().transpose(0, 1)  # (T, B, G) with batch-major strides
        U_nc = U.t().contiguous().t()  # column-major
        r0_nc = torch.stack([r0, torch.zeros_like(r0)], dim=-1)[..., 0]  # every other element
        s0_wide = torch.cat([torch.zeros_like(s0), s0], dim=1)
        s0_nc = s0_wide[:, C:]  # a slice of a wider tensor
        return A_nc, U_nc, r0_nc, s0_nc

    views = noncontig(*[t.clone().requires_grad_() for t in inputs])
    assert not any(v.is_contiguous() for v in views)
    lengths_nc = torch.stack([lengths, lengths], dim=1)[:, 1]
    assert not lengths_nc.is_contiguous()
    out = ops.recurrence(*views, cfg, lengths_nc)
    grads = torch.autograd.grad(out, views, [u.to(dtype) for u in upstream])
    want = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    for name, a, b in zip(NAMES, list(out) + list(grads), want):
        assert torch.equal(a, b), name  # the kernel makes contiguous copies: bit-for-bit the same work

    # an expanded (stride-0) initial state, as nn.LSTM users pass for a shared h0/c0
    r0_e, s0_e = r0[:1].expand(B, -1), s0[:1].expand(B, -1)
    got = ops.recurrence(A, U, r0_e, s0_e, cfg, lengths)
    want = ops.recurrence(A, U, r0_e.contiguous(), s0_e.contiguous(), cfg, lengths)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


# ---- 8. bitwise determinism ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["small", "blas"])
def test_bitwise_determinism(size, dtype):
    cfg = CellConfig(True, 1, "cells", "tanh")
    T, B, C = (5, 3, 4) if size == "small" else (20, 32, 128)
    inputs = make_inputs(cfg, T, B, C, dtype)
    lengths = varied_lengths(B, T)
    upstream = make_upstream(cfg, T, B, C)
    n = torch.get_num_threads()
    try:
        for threads in (1, 2):  # BLAS may split work over threads; each setting must repeat itself exactly
            torch.set_num_threads(threads)
            first = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
            second = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
            for name, a, b in zip(NAMES, first, second):
                assert torch.equal(a, b), (threads, name)
    finally:
        torch.set_num_threads(n)

    # repeated backward through one graph (retain_graph) gives the same bits too
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = ops.recurrence(*leaves, cfg, lengths)
    ups = [u.to(dtype) for u in upstream]
    g1 = torch.autograd.grad(out, leaves, ups, retain_graph=True)
    g2 = torch.autograd.grad(out, leaves, ups)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


# ---- 9. NaN stays in its batch row ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", ["small", "blas"])
@pytest.mark.parametrize(
    "cfg", [CellConfig(), CellConfig(False, 2, "all", "paper"), CellConfig(True, 1, "cells", "tanh", True)], ids=cfg_id
)
def test_nan_confined_to_its_row(cfg, size, dtype):
    T, B, C = (6, 4, 4) if size == "small" else (8, 32, 64)
    t0, b0 = 2, 1
    A, U, r0, s0 = make_inputs(cfg, T, B, C, dtype)
    z0 = (2 if cfg.forget_gate else 1) * (C // cfg.block_size)  # gate rows [iota, (phi), z, omega]: first z row
    A[t0, b0, z0] = float("nan")  # the net input of cell 0 of an inner batch row
    leaves = [t.clone().requires_grad_() for t in (A, U, r0, s0)]
    y, r_T, s_T = ops.recurrence(*leaves, cfg)
    others = [b for b in range(B) if b != b0]
    assert torch.isfinite(y[:t0]).all(), "NaN before the step it was put in"
    assert torch.isfinite(y[:, others]).all(), "NaN leaked into other batch rows"
    assert torch.isnan(y[t0, b0]).any(), "the NaN vanished"
    assert torch.isnan(y[T - 1, b0]).any()
    assert torch.isnan(y[t0 + 1 :, b0]).all()  # through U, every cell of the row is NaN from the next step on
    assert torch.isfinite(r_T[others]).all() and torch.isfinite(s_T[others]).all()
    assert torch.isnan(s_T[b0]).any()

    dA, dU, dr0, ds0 = torch.autograd.grad((y.sum(), r_T.sum(), s_T.sum()), leaves)
    assert torch.isfinite(dA[:, others]).all(), "NaN leaked into other rows' gradients"
    assert torch.isfinite(dr0[others]).all() and torch.isfinite(ds0[others]).all()
    assert torch.isnan(dA[:, b0]).any() and torch.isnan(ds0[b0]).any()

    # a NaN past a row's length is never read
    lengths = torch.full((B,), T, dtype=torch.int64)
    lengths[b0] = t0
    y, r_T, s_T = ops.recurrence(*leaves, cfg, lengths)
    assert torch.isfinite(y).all() and torch.isfinite(r_T).all() and torch.isfinite(s_T).all()
    assert torch.equal(y[t0:, b0], torch.zeros_like(y[t0:, b0]))
    grads = torch.autograd.grad((y.sum(), r_T.sum(), s_T.sum()), leaves)
    assert all(torch.isfinite(g).all() for g in grads)


# ---- 10. bad input ---------------------------------------------------------------------------------------------

ARGS = (True, 1, "cells", "tanh", False)


def good_inputs(dtype=torch.float64):
    return make_inputs(CellConfig(), 3, 2, 4, dtype)  # G = 16, R = C = 4


def _bad_cases():
    """name -> (op arguments, expected message): each case changes one argument of a good call."""
    good = dict(zip(("A", "U", "r0", "s0"), good_inputs()))
    good.update(lengths=None, forget_gate=True, block_size=1, feedback="cells", squash="tanh", truncate=False)
    A, U, r0, s0 = good["A"], good["U"], good["r0"], good["s0"]

    def call(**changes):
        return tuple({**good, **changes}.values())

    def low(dtype):
        return call(A=A.to(dtype), U=U.to(dtype), r0=r0.to(dtype), s0=s0.to(dtype))

    lengths_range = r"lengths must lie in \[0, T\] = \[0, 3\], got values in "
    return {
        "A-2d": (call(A=A[0]), r"A must be 3-D \(T, B, G\), got 2-D"),
        "A-4d": (call(A=A[None]), r"A must be 3-D \(T, B, G\), got 4-D"),
        "A-wrong-G": (call(A=A[..., :-1]), r"A must have G = 16 gate rows for 4 cells .* got 15"),
        "A-U-of-1997-cell": (call(A=A[..., :12], U=U[:12]), r"A must have G = 16 gate rows .* forget gate, got 12"),
        "U-wrong-cols": (call(U=U[:, :-1]), r"U must have shape \(16, 4\), got \(16, 3\)"),
        "U-wrong-rows": (call(U=U[:-1]), r"U must have shape \(16, 4\), got \(15, 4\)"),
        "U-1d": (call(U=U.flatten()), r"U must have shape \(16, 4\), got \(64,\)"),
        "U-for-feedback-all": (call(feedback="all"), r"U must have shape \(16, 16\), got \(16, 4\)"),
        "r0-wrong-R": (call(r0=r0[:, :-1]), r"r0 must have shape \(2, 4\), got \(2, 3\)"),
        "r0-wrong-B": (call(r0=r0[:1]), r"r0 must have shape \(2, 4\), got \(1, 4\)"),
        "s0-wrong-B": (call(s0=s0[:1]), r"s0 must have shape \(2, 4\), got \(1, 4\)"),
        "s0-1d": (call(s0=s0[0]), r"s0 must be 2-D \(B, C\), got 1-D"),
        "s0-wrong-C": (call(s0=s0[:, :3]), r"A must have G = 12 gate rows for 3 cells .* got 16"),
        "U-float32": (call(U=U.float()), r"U must have A's dtype Double, got Float"),
        "r0-float32": (call(r0=r0.float()), r"r0 must have A's dtype Double, got Float"),
        "s0-float32": (call(s0=s0.float()), r"s0 must have A's dtype Double, got Float"),
        "all-int64": (low(torch.int64), r"A must be a floating-point tensor, got Long"),
        "A-int32-only": (call(A=A.int()), r"A must be a floating-point tensor, got Int"),
        "float16-on-cpu": (low(torch.float16), r"CPU kernel takes float32 or float64, got Half"),
        "bfloat16-on-cpu": (low(torch.bfloat16), r"CPU kernel takes float32 or float64, got BFloat16"),
        "lengths-int32": (call(lengths=torch.tensor([1, 2], dtype=torch.int32)), r"lengths must be int64, got Int"),
        "lengths-float": (call(lengths=torch.tensor([1.0, 2.0])), r"lengths must be int64, got Float"),
        "lengths-wrong-B": (call(lengths=torch.tensor([1, 2, 3])), r"lengths must have shape \(2,\), got \(3,\)"),
        "lengths-2d": (call(lengths=torch.tensor([[1, 2]])), r"lengths must have shape \(2,\), got \(1, 2\)"),
        "lengths-0d": (call(lengths=torch.tensor(1)), r"lengths must have shape \(2,\), got \(\)"),
        "lengths-negative": (call(lengths=torch.tensor([-1, 2])), lengths_range + r"\[-1, 2\]"),
        "lengths-above-T": (call(lengths=torch.tensor([4, 2])), lengths_range + r"\[2, 4\]"),
        "block_size-0": (call(block_size=0), r"block_size must be >= 1, got 0"),
        "block_size-negative": (call(block_size=-2), r"block_size must be >= 1, got -2"),
        "block_size-not-dividing-C": (
            call(block_size=3),
            r"the number of cells \(4\) must be a multiple of block_size \(3\)",
        ),
        "feedback-unknown": (call(feedback="gates"), r'feedback must be "cells" or "all", got "gates"'),
        "squash-unknown": (call(squash="relu"), r'squash must be "tanh", "paper" or "sigmoid_identity", got "relu"'),
    }


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("op", ["recurrence", "recurrence_forward"])
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises(case, op):
    args, message = BAD_CASES[case]
    with pytest.raises(RuntimeError, match=message):
        getattr(OPS, op)(*args)


def test_bad_input_through_python_wrapper():
    A, U, r0, s0 = good_inputs()
    with pytest.raises(RuntimeError, match=r"the number of cells \(4\) must be a multiple of block_size \(3\)"):
        ops.recurrence(A, U, r0, s0, CellConfig(block_size=3))
    with pytest.raises(RuntimeError, match=r"U must have A's dtype Float, got Double"):
        ops.recurrence(A.float(), U, r0.float(), s0.float(), CellConfig())
    with pytest.raises(RuntimeError, match=r"CPU kernel takes float32 or float64, got Half"):
        ops.recurrence(*(t.half() for t in (A, U, r0, s0)), CellConfig())


@pytest.mark.parametrize(
    "which,bad,message",
    [
        ("dy", lambda t: t[:-1], r"dy must have shape \(3, 2, 4\), got \(2, 2, 4\)"),
        ("dr_T", lambda t: t[:, :-1], r"dr_T must have shape \(2, 4\), got \(2, 3\)"),
        ("ds_T", lambda t: t.float(), r"ds_T must have A's dtype Double, got Float"),
        ("y", lambda t: t[:, :1], r"y must have shape \(3, 2, 4\), got \(3, 1, 4\)"),
        ("s_all", lambda t: t[..., :2], r"s_all must have shape \(3, 2, 4\), got \(3, 2, 2\)"),
    ],
)
def test_backward_op_bad_input(which, bad, message):
    A, U, r0, s0 = good_inputs()
    y, r_T, s_T, act, s_all = OPS.recurrence_forward(A, U, r0, s0, None, *ARGS)
    args = dict(dy=torch.ones_like(y), dr_T=torch.ones_like(r_T), ds_T=torch.ones_like(s_T), y=y, s_all=s_all)
    args[which] = bad(args[which])
    with pytest.raises(RuntimeError, match=message):
        OPS.recurrence_backward(
            args["dy"], args["dr_T"], args["ds_T"], U, r0, s0, args["y"], act, args["s_all"], None, *ARGS
        )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(block_size=0), r"block_size must be a positive int, got 0"),
        (dict(block_size=-2), r"block_size must be a positive int, got -2"),
        (dict(block_size=1.5), r"block_size must be a positive int, got 1.5"),
        (dict(block_size=True), r"block_size must be a positive int, got True"),
        (dict(feedback="gates"), r"feedback must be one of \('cells', 'all'\), got 'gates'"),
        (dict(squash="relu"), r"squash must be one of \('tanh', 'paper', 'sigmoid_identity'\), got 'relu'"),
        (dict(truncate="yes"), r"truncate must be a bool, got 'yes'"),
        (dict(forget_gate=1), r"forget_gate must be a bool, got 1"),
    ],
)
def test_cell_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CellConfig(**kwargs)


def test_cell_config_sizes():
    assert CellConfig().gate_rows(5) == 20 and CellConfig().recurrent_size(5) == 5
    assert CellConfig(forget_gate=False, block_size=2, feedback="all").gate_rows(4) == 8
    assert CellConfig(forget_gate=False, block_size=2, feedback="all").recurrent_size(4) == 8
    assert CellConfig(block_size=3, feedback="all").recurrent_size(6) == 12
    with pytest.raises(ValueError, match=r"the number of cells \(4\) must be a multiple of block_size \(3\)"):
        CellConfig(block_size=3).gate_rows(4)


# ---- 11. the 1997 learning rule ---------------------------------------------------------------------------------


def cec_gradient_on_s0(A, U, r0, s0, cfg, upstream):
    """d loss / d s0 under the truncated rule, written out: with r_{t-1} treated as a constant, s0 reaches the
    loss only along the cell state, s_t = y_phi,t * s_{t-1} + ..., so
        ds0 = sum_t (prod_{k<=t} y_phi,k) * dL/ds_t|local,   dL/ds_t|local = (dy_t + dr_T[t=T]) * y_omega,t * h'(s_t)
    plus ds_T carried back through all the forget gates (y_phi = 1 for the 1997 cell: the CEC)."""
    dy, dr_T, ds_T = upstream
    T, C, S = A.shape[0], s0.shape[1], cfg.block_size
    r, s = r0, s0
    carry = torch.ones_like(s0)  # prod of forget gates so far
    ds0 = torch.zeros_like(s0)
    for t in range(T):
        a = A[t] + r @ U.t()
        y_c, s_new, gates = cell_step_ref(a, s, cfg)
        y_omega = gates[-1].repeat_interleave(S, dim=1)
        if cfg.forget_gate:
            carry = carry * gates[1].repeat_interleave(S, dim=1)
        dh = {
            "tanh": lambda s: 1 - torch.tanh(s) ** 2,
            "paper": lambda s: 0.5 * (1 - torch.tanh(0.5 * s) ** 2),
            "sigmoid_identity": torch.ones_like,
        }[cfg.squash](s_new)  # h'(s_t)
        dyt = dy[t] + (dr_T[:, -C:] if t == T - 1 else 0)  # r_T ends in y_c for both feedbacks
        ds0 = ds0 + carry * dyt * y_omega * dh
        r = y_c if cfg.feedback == "cells" else torch.cat(gates + [y_c], dim=1)
        s = s_new
    return ds0 + carry * ds_T


@pytest.mark.parametrize("squash", SQUASHES)
@pytest.mark.parametrize("feedback", FEEDBACKS)
@pytest.mark.parametrize("block_size", [1, 2])
@pytest.mark.parametrize("forget_gate", [False, True], ids=["1997", "2000"])
def test_truncated_rule_gradients_on_initial_state(forget_gate, block_size, feedback, squash):
    cfg = CellConfig(forget_gate, block_size, feedback, squash, truncate=True)
    T, B, C = 5, 4, 4
    inputs = make_inputs(cfg, T, B, C)
    upstream = make_upstream(cfg, T, B, C)
    got = outputs_and_grads(ops.recurrence, inputs, cfg, None, upstream)
    dr0, ds0 = got[5], got[6]
    assert torch.equal(dr0, torch.zeros_like(dr0)), "a gradient reached r0 through the truncated recurrent input"
    want = run_reference(inputs, cfg, None, upstream)
    assert_parity(got, want, torch.float64, T, B)
    cec = cec_gradient_on_s0(*inputs, cfg, upstream)
    torch.testing.assert_close(ds0, cec, **tolerances(torch.float64, T))

    # with lengths: rows of length 0 pass dr_T straight to r0, every other row's dr0 stays exactly 0
    lengths = torch.tensor([T, 0, 2, 1])
    got = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    assert torch.equal(got[5][lengths > 0], torch.zeros_like(got[5][lengths > 0]))
    assert torch.equal(got[5][1], upstream[1][1])
    assert_parity(got, run_reference(inputs, cfg, lengths, upstream), torch.float64, T, B)


# ---- beyond the brief: second-order gradients ----------------------------------------------------------------


def test_double_backward_raises_clearly():
    """The fused op is differentiable once; a second derivative must raise, never silently be zero."""
    cfg = CellConfig()
    leaves = [t.clone().requires_grad_() for t in make_inputs(cfg, 3, 2, 2)]
    y, _, _ = ops.recurrence(*leaves, cfg)
    g = torch.autograd.grad(y.pow(2).sum(), leaves, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(g[1].sum(), leaves, allow_unused=True)


def test_ops_name_a_config_or_tensor_of_the_wrong_kind():
    A, U, r0, s0 = good_inputs()
    for config in ({"forget_gate": True}, None):
        with pytest.raises(TypeError, match="lstm_ext.ops.recurrence: config must be a lstm_ext.CellConfig, got"):
            ops.recurrence(A, U, r0, s0, config)
        with pytest.raises(TypeError, match="lstm_ext.ops.layer: config must be a lstm_ext.CellConfig, got"):
            ops.layer(A, U, U, None, None, None, None, config)
        with pytest.raises(TypeError, match="config must be a lstm_ext.CellConfig, got"):
            functional.lstm_layer(A, U, U, None, None, None, None, config)
    with pytest.raises(TypeError, match="lstm_ext.ops.recurrence: r0 must be a tensor, got None"):
        ops.recurrence(A, U, None, s0, CellConfig())
    with pytest.raises(TypeError, match="lstm_ext.ops.layer: w_hh must be a tensor, got None"):
        ops.layer(A, U, None, None, None, None, None, CellConfig())


@pytest.mark.parametrize(
    "lengths, message",
    [
        (torch.tensor([4, 1]), r"lengths must lie in \[0, T\] = \[0, 3\], got values in \[1, 4\]"),
        (torch.tensor([-1, 1]), r"lengths must lie in \[0, T\] = \[0, 3\], got values in \[-1, 1\]"),
        (torch.tensor([1, 2], dtype=torch.int32), r"lengths must be an int64 tensor of shape \(2,\)"),
        (torch.tensor([1, 2, 3]), r"lengths must be an int64 tensor of shape \(2,\)"),
    ],
)
def test_reference_checks_lengths_as_the_op_does(lengths, message):
    # a length past T would otherwise count as T in the oracle and hide a caller's bug
    A, U, r0, s0 = good_inputs()
    with pytest.raises(ValueError, match=message):
        recurrence_ref(A, U, r0, s0, CellConfig(), lengths)
