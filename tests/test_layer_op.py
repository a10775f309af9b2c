"""``lstm_ext::layer`` (ops.layer): the input projection and the recurrence as one op, against the oracle.

Its oracle is the composition it replaces, in float64: ``A = x w_ih^T + b_ih + b_hh`` (``A[0] += a0`` where a0
is given) then ``lstm_ext.reference.recurrence_ref``. Held here: outputs and EVERY gradient (x, w_ih, w_hh, b_ih,
b_hh, h0, c0, a0) over every configuration, with and without biases and per-row lengths, in float64 and float32; gradients
on a subset of the inputs; gradcheck on the real kernel; opcheck; bits without autograd; the two bias
gradients are separate tensors; error messages that name the argument.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from lstm_ext import ops
from lstm_ext.config import CellConfig
from lstm_ext.reference import recurrence_ref

from cases import all_configs, cfg_id, make_inputs, tolerances

OPS = torch.ops.lstm_ext
NAMES = ("y", "h_n", "c_n", "dx", "dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0", "da0")
BIASES = ["both", "ih", "hh", "none"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def layer_inputs(cfg, T, B, C, D, dtype=torch.float64, biases="both", seed=0, device="cpu"):
    """[x (T,B,D), w_ih (G,D), w_hh (G,R), b_ih (G,) or None, b_hh (G,) or None, h0 (B,R), c0 (B,C)], drawn in
    float64 on the CPU, then cast and moved."""
    g = torch.Generator().manual_seed(seed)
    G = cfg.gate_rows(C)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    w_ih = torch.randn(G, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    b_ih = 0.5 * torch.randn(G, generator=g, dtype=torch.float64) if biases in ("both", "ih") else None
    b_hh = 0.5 * torch.randn(G, generator=g, dtype=torch.float64) if biases in ("both", "hh") else None
    _, w_hh, h0, c0 = make_inputs(cfg, T, B, C, seed=seed + 1)
    return [None if t is None else t.to(device=device, dtype=dtype) for t in (x, w_ih, w_hh, b_ih, b_hh, h0, c0)]


def layer_ref(x, w_ih, w_hh, b_ih, b_hh, h0, c0, cfg, lengths=None, a0=None):
    bias = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
    A = F.linear(x, w_ih, bias)
    if a0 is not None and A.shape[0] > 0:
        A = torch.cat([A[:1] + a0, A[1:]])
    return recurrence_ref(A, w_hh, h0, c0, cfg, lengths)


def outputs_and_grads(fn, inputs, cfg, lengths, seed=1, requires_grad=None):
    """(y, h_n, c_n) and the gradients on every input (None for an absent bias or one not requiring grad)
    under random upstream gradients on all three outputs."""
    requires_grad = requires_grad or [True] * len(inputs)
    leaves = [None if t is None else t.detach().clone().requires_grad_(r) for t, r in zip(inputs, requires_grad)]
    outs = fn(*leaves, cfg, lengths=lengths)
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype) for o in outs]
    # (the reference's empty y for T = 0 is a constant: it takes no part in the graph)
    pairs = [(o, u) for o, u in zip(outs, upstream) if o.requires_grad]
    wrt = [t for t in leaves if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [u for _, u in pairs], allow_unused=True,
                                     materialize_grads=True))  # fmt: skip
    return [o.detach() for o in outs] + [next(grads) if t is not None and t.requires_grad else None for t in leaves]


def assert_parity(got, want, dtype, T, B, what=""):
    for name, a, b in zip(NAMES, got, want):
        assert (a is None) == (b is None), name
        if a is None:
            continue
        assert a.dtype == dtype and a.shape == b.shape, (name, a.dtype, a.shape, b.shape)
        n = T * B if name in ("dw_ih", "dw_hh", "db_ih", "db_hh") else T  # sums over all steps and rows
        torch.testing.assert_close(a.to(torch.float64), b.to(a.device), **tolerances(dtype, n),
                                   msg=lambda m: f"{what} {name}: {m}")  # fmt: skip


def check_layer(cfg, T, B, C, D, dtype, biases, lengths, requires_grad=None, device="cpu"):
    """ops.layer on ``device`` against the float64 reference composition on the CPU."""
    inputs = layer_inputs(cfg, T, B, C, D, dtype, biases, device=device)
    got = outputs_and_grads(ops.layer, inputs, cfg, lengths, requires_grad=requires_grad)
    inputs64 = [None if t is None else t.to("cpu", torch.float64) for t in inputs]
    lengths64 = None if lengths is None else lengths.cpu()
    want = outputs_and_grads(layer_ref, inputs64, cfg, lengths64, requires_grad=requires_grad)
    assert_parity(got, want, dtype, T, B, what=f"{cfg_id(cfg)} {dtype} biases={biases} lengths={lengths}")


DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", [False, True], ids=["full", "varlen"])
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 2)), ids=cfg_id)
def test_layer_matches_reference(cfg, varlen, dtype):
    T, B = 6, 5
    lengths = torch.tensor([6, 0, 3, 1, 5]) if varlen else None
    check_layer(cfg, T, B, 2 * cfg.block_size, 3, dtype, "both", lengths)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("biases", BIASES)
def test_layer_biases(biases, dtype):
    check_layer(CellConfig(), 7, 4, 3, 2, dtype, biases, None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_blas_sizes(dtype):
    """Sizes where the kernel's products go through BLAS, and the projection is a real matmul."""
    check_layer(CellConfig(), 12, 32, 128, 32, dtype, "both", None)
    check_layer(CellConfig(forget_gate=False), 12, 32, 128, 32, dtype, "both", torch.arange(32) % 13)


SMALL_PROJECTION = 1 << 14  # csrc/cpu/projection_cpu.h, kSmallProjection: N*G*D up to this run as plain loops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [8, 9], ids=["loops", "aten"])
def test_layer_around_the_small_projection_threshold(B, dtype):
    """The input projection's two CPU paths (plain loops up to kSmallProjection multiply-adds, ATen above), each
    against the reference, with every gradient (dx too)."""
    cfg, T, C, D = CellConfig(), 8, 8, 8  # G = 32: N*G*D = 64*32*8 = 2^14 at B=8, above it at B=9
    assert (T * B * cfg.gate_rows(C) * D <= SMALL_PROJECTION) == (B == 8)
    check_layer(cfg, T, B, C, D, dtype, "both", torch.arange(B) % (T + 1))
    check_layer(cfg, T, B, C, D, dtype, "hh", None)


@pytest.mark.parametrize(
    "requires_grad",
    [
        [False, True, True, True, True, False, False],  # parameters only (a first layer, hx=None)
        [True, False, False, False, False, False, False],  # the input only (frozen layer)
        [False, False, False, False, True, False, True],  # one bias and c0
    ],
    ids=["params", "input", "b_hh+c0"],
)
def test_layer_gradient_on_some_inputs(requires_grad):
    check_layer(CellConfig(), 5, 3, 4, 2, torch.float64, "both", torch.tensor([5, 2, 0]), requires_grad)


def test_layer_non_contiguous_input():
    """x as batch_first input transposed to time-major (the modules' case)."""
    cfg = CellConfig()
    for dtype in (torch.float64, torch.float32):
        x, *rest = layer_inputs(cfg, 6, 4, 3, 5, dtype)
        x_nc = x.transpose(0, 1).contiguous().transpose(0, 1)
        assert not x_nc.is_contiguous()
        got = outputs_and_grads(ops.layer, [x_nc, *rest], cfg, None)
        want = outputs_and_grads(layer_ref, [t.to(torch.float64) for t in (x, *rest)], cfg, None)
        assert_parity(got, want, dtype, 6, 4, what="non-contiguous x")


@pytest.mark.parametrize("varlen", [False, True], ids=["full", "varlen"])
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 2), truncate=(False,))[::3], ids=cfg_id)
def test_layer_gradcheck(cfg, varlen):
    inputs = layer_inputs(cfg, 3, 3, 2 * cfg.block_size, 2)
    lengths = torch.tensor([3, 0, 2]) if varlen else None
    leaves = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *a: ops.layer(*a, cfg, lengths), leaves)


@pytest.mark.parametrize("varlen", [False, True], ids=["full", "varlen"])
@pytest.mark.parametrize("which", [(0,), (1,), (2,), (1, 2)], ids=["y", "h_n", "c_n", "h_n+c_n"])
@pytest.mark.parametrize("cfg", [CellConfig(), CellConfig(False, 2, "all", "paper")], ids=cfg_id)
def test_layer_gradient_on_some_outputs_only(cfg, which, varlen):
    """Outputs that take no part in the loss get no gradient (autograd hands the op undefined ones, which the CPU
    kernel reads as zeros); every input's gradient is still the reference's. The loss is a plain sum, so the
    gradient on an output is an expanded, non-contiguous tensor."""
    T, B, C, D = 5, 3, 2 * cfg.block_size, 2
    lengths = torch.tensor([5, 0, 3]) if varlen else None
    inputs = layer_inputs(cfg, T, B, C, D)
    grads = []
    for fn in (ops.layer, layer_ref):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        outs = fn(*leaves, cfg, lengths=lengths)
        sum(outs[i].sum() for i in which).backward()
        grads.append([t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves])
    for name, a, b in zip(NAMES[3:], *grads):
        torch.testing.assert_close(a, b, **tolerances(torch.float64, T * B), msg=lambda m: f"{name}: {m}")


def test_layer_bias_gradients_are_separate_tensors():
    """Both biases get dA summed over steps and rows; they must not share one tensor (an in-place change of
    one gradient, e.g. by clip_grad_norm_, would otherwise change the other)."""
    cfg = CellConfig()
    leaves = [t.requires_grad_() for t in layer_inputs(cfg, 4, 2, 3, 2)]
    y, h_n, c_n = ops.layer(*leaves, cfg)
    (y.sum() + c_n.sum()).backward()
    b_ih, b_hh = leaves[3], leaves[4]
    torch.testing.assert_close(b_ih.grad, b_hh.grad, rtol=0, atol=0)
    assert b_ih.grad.data_ptr() != b_hh.grad.data_ptr()
    b_ih.grad.mul_(2)
    assert not torch.equal(b_ih.grad, b_hh.grad)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "no_input_requires_grad"])
def test_layer_without_autograd_same_bits(mode):
    cfg = CellConfig(False, 2, "all", "paper")
    inputs = layer_inputs(cfg, 6, 3, 4, 3, torch.float32)
    lengths = torch.tensor([6, 0, 4])
    want = ops.layer(*[t.clone().requires_grad_() for t in inputs], cfg, lengths)
    if mode == "no_grad":
        with torch.no_grad():
            got = ops.layer(*inputs, cfg, lengths)
    elif mode == "inference_mode":
        with torch.inference_mode():
            got = ops.layer(*inputs, cfg, lengths)
    else:
        got = ops.layer(*inputs, cfg, lengths)
    for a, b in zip(got, want):
        assert not a.requires_grad
        assert torch.equal(a, b.detach())



class _PassThroughMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


# (B, C, D): both projections above the small-projection loops' size, so that both runs project with ATen; the
# recurrence's products in hand loops, then in the panel kernel
@pytest.mark.parametrize("B,C,D", [(3, 4, 200), (13, 77, 5)], ids=["hand_loops", "panel_kernel"])
def test_layer_activations_over_its_projection(B, C, D):
    """On the CPU the layer's forward writes the activations over its own projection A (csrc/layer.cpp); under a
    Python dispatch mode it calls recurrence_forward through the dispatcher, with a separate act. Both give the
    same bits, outputs and gradients, and a second backward through the retained graph gives them again."""
    cfg = CellConfig()
    inputs = layer_inputs(cfg, 7, B, C, D, torch.float32)
    lengths = torch.tensor([[7, 0, 3, 1, 6][b % 5] for b in range(B)])

    def run():
        leaves = [t.clone().requires_grad_() for t in inputs]
        outs = ops.layer(*leaves, cfg, lengths)
        ups = [torch.ones_like(o) for o in outs]
        first = torch.autograd.grad(outs, leaves, ups, retain_graph=True)
        second = torch.autograd.grad(outs, leaves, ups)
        return [o.detach() for o in outs] + list(first) + list(second)

    over_a = run()
    with _PassThroughMode():
        separate = run()
    for name, a, b in zip(NAMES[:3] + NAMES[3:] + NAMES[3:], over_a, separate):
        assert torch.equal(a, b), name
    for a, b in zip(over_a[3:10], over_a[10:]):
        assert torch.equal(a, b)

def test_layer_projection_ignores_autocast():
    """The layer op computes in its inputs' dtype: under autocast its projection stays float32, also where it takes
    ATen's functional products (here under a Python dispatch mode; on a GPU, and under torch.func, always)."""
    cfg = CellConfig()
    inputs = layer_inputs(cfg, 5, 3, 4, 200, torch.float32)
    want = ops.layer(*inputs, cfg)
    with _PassThroughMode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.layer(*inputs, cfg)
    for name, a, b in zip(NAMES[:3], got, want):
        assert a.dtype == torch.float32 and torch.equal(a, b), name


# T*B*G above two chunks of the projection (2^21 elements, csrc/layer.cpp): the layer projects 256 steps at a time
# (256 + 344 here), or 4 at a time for a wide batch (B*G = 2^18); without a gradient the recurrence runs chunk by
# chunk, the state carried across.
LONG_2000 = (CellConfig(), 600, 8, 128)
LONG_1997 = (CellConfig(False, 2, "all", "paper"), 600, 16, 128)
WIDE_BATCH = (CellConfig(), 13, 256, 256)  # chunks of 4, 4 and 5 steps
LONG_LENGTHS = [600, 0, 255, 256, 257, 300, 1, 599]  # rows ending on both sides of a chunk boundary
WIDE_BATCH_LENGTHS = [13, 0, 3, 4, 5, 8, 9, 12]


def long_lengths(T, B):
    return torch.tensor(((LONG_LENGTHS if T == 600 else WIDE_BATCH_LENGTHS) * (B // 8 + 1))[:B])


def long_id(v):
    return cfg_id(v) if isinstance(v, CellConfig) else str(v)


@pytest.mark.parametrize(
    "cfg,T,B,C,dtype",
    [(*LONG_2000, torch.float64), (*LONG_2000, torch.float32), (*LONG_1997, torch.float64),
     (*WIDE_BATCH, torch.float64)],
    ids=long_id,
)
def test_layer_long_sequence_matches_reference(cfg, T, B, C, dtype):
    """A long sequence (its projection in chunks) against the reference: outputs and every gradient. The 1997 cell
    only in float64: without a forget gate its states reach ~650 in 600 steps, and there the float32 reference
    itself is further from float64 than tolerances() allows (dw_hh 8e-3). The wide batch (chunks of 4 steps) in
    float64: its dx sums G = 1024 products per element, which tolerances(float32, T) does not model."""
    check_layer(cfg, T, B, C, 4, dtype, "both", long_lengths(T, B))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg,T,B,C", [LONG_2000, LONG_1997, WIDE_BATCH], ids=long_id)
def test_layer_long_sequence_without_autograd_same_bits(cfg, T, B, C, dtype):
    """Without autograd a long sequence runs chunk by chunk: the same bits as the one recurrence with autograd."""
    lengths = long_lengths(T, B)
    inputs = layer_inputs(cfg, T, B, C, 4, dtype)
    want = ops.layer(*[t.clone().requires_grad_() for t in inputs], cfg, lengths)
    with torch.no_grad():
        got = ops.layer(*inputs, cfg, lengths)
    for a, b in zip(got, want):
        assert torch.equal(a, b.detach())


def test_layer_long_sequence_non_contiguous_input():
    """x as a batch-first tensor's transpose (what the modules pass with batch_first=True): the chunks read it as is."""
    cfg, T, B, C = WIDE_BATCH
    inputs = layer_inputs(cfg, T, B, C, 4, torch.float32)
    x_t = inputs[0].transpose(0, 1).contiguous().transpose(0, 1)  # same values, (T, B, D) with strides of (B, T, D)
    assert not x_t.is_contiguous()
    lengths = long_lengths(T, B)
    with torch.no_grad():
        want = ops.layer(*inputs, cfg, lengths)
        got = ops.layer(x_t, *inputs[1:], cfg, lengths)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


# Short calls (csrc/cpu/recurrence_cpu.cpp, short_call: fewer than 32 rows x steps and fewer than 16 steps, as in
# decoding, and products below 2^18 multiply-adds; larger ones: test_ops.py, test_few_row_steps_with_large_products)
# pack no panels: one chunk of rows, BLAS on the calling thread, or the hand loops where U is small; and with
# T*B <= D + 1 (csrc/layer.cpp, projection_weights) the projection is addmm, not the product with a bias column.
SHORT_CALLS = [  # (cfg, T, B, C, D)
    (CellConfig(), 1, 1, 130, 130),  # U 520 x 130: BLAS, where longer calls pack it for the panel kernel
    (CellConfig(False), 1, 1, 128, 64),  # the 1997 cell, U 384 x 128: BLAS, where longer calls run the hand loops
    (CellConfig(), 4, 4, 90, 200),  # 16 row-steps, addmm
    (CellConfig(), 1, 16, 60, 64),  # a batch of 16, one step (B*G*R below 2^18: still short)
    (CellConfig(), 2, 3, 8, 40),  # U 32 x 8: the hand loops
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg,T,B,C,D", SHORT_CALLS, ids=long_id)
def test_layer_short_calls(cfg, T, B, C, D, dtype):
    """Short calls against the reference, outputs and every gradient; and their recurrence the same bits on one
    thread and two (the projection's ATen products need not be)."""
    check_layer(cfg, T, B, C, D, dtype, "both", None)
    A, U, r0, s0 = make_inputs(cfg, T, B, C, dtype)
    n = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_() for t in (A, U, r0, s0)]
            outs = ops.recurrence(*leaves, cfg)
            grads = torch.autograd.grad(outs, leaves, [torch.ones_like(o) for o in outs])
            results.append([o.detach() for o in outs] + list(grads))
    finally:
        torch.set_num_threads(n)
    for name, a, b in zip(("y", "r_T", "s_T", "dA", "dU", "dr0", "ds0"), *results):
        assert torch.equal(a, b), f"{name} differs between two threads and one"


def test_layer_long_sequence_checks_lengths_before_the_chunks():
    """Chunks see their rows' lengths clamped to them: a length beyond T must fail first, with the op's message."""
    inputs = layer_inputs(CellConfig(), 600, 8, 128, 4, torch.float32)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"lengths must lie in \[0, T\] = \[0, 600\]"):
        ops.layer(*inputs, CellConfig(), torch.tensor([601] + [1] * 7))


OPCHECK_CASES = [  # (cfg, T, B, C, D, biases, lengths, requires_grad)
    (CellConfig(), 3, 2, 3, 2, "both", None, True),
    (CellConfig(), 3, 2, 3, 2, "ih", None, False),
    (CellConfig(False, 2, "all", "paper", True), 5, 3, 4, 1, "none", [5, 0, 2], True),
    (CellConfig(True, 1, "cells", "paper"), 7, 5, 1, 3, "hh", [7, 3, 0, 1, 6], True),
]


@pytest.mark.parametrize("case", range(len(OPCHECK_CASES)))
def test_layer_opcheck(case):
    cfg, T, B, C, D, biases, lengths, requires_grad = OPCHECK_CASES[case]
    dtype = torch.float64 if case % 2 == 0 else torch.float32
    inputs = layer_inputs(cfg, T, B, C, D, dtype, biases)
    inputs = [None if t is None else t.requires_grad_(requires_grad) for t in inputs]
    lengths = None if lengths is None else torch.tensor(lengths)
    torch.library.opcheck(OPS.layer, (*inputs, lengths, *cfg.op_args()))


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("absent", ["h0", "c0", "both"])
@pytest.mark.parametrize("cfg", [CellConfig(), CellConfig(False, 2, "all", "paper", True)], ids=cfg_id)
def test_layer_absent_state_is_zeros(cfg, absent, requires_grad):
    """h0 or c0 None (the modules' call without hx): the bits of explicit zeros, outputs and every other gradient;
    opcheck with them absent."""
    inputs = layer_inputs(cfg, 6, 3, 4, 2, torch.float32)
    zeros = {5: torch.zeros_like(inputs[5]), 6: torch.zeros_like(inputs[6])}
    drop = {"h0": [5], "c0": [6], "both": [5, 6]}[absent]
    lengths = torch.tensor([6, 0, 3])

    def run(states):
        leaves = [t.clone().requires_grad_(requires_grad) for t in inputs[:5]]
        outs = ops.layer(*leaves, *states, cfg, lengths)
        grads = torch.autograd.grad(sum(o.sum() for o in outs), leaves) if requires_grad else []
        return [o.detach() for o in outs] + list(grads)

    given = [None if i in drop else zeros[i] for i in (5, 6)]
    for a, b in zip(run(given), run([zeros[5], zeros[6]])):
        assert torch.equal(a, b)
    torch.library.opcheck(
        OPS.layer, (*[t.requires_grad_(requires_grad) for t in inputs[:5]], *given, lengths, *cfg.op_args())
    )


def _bad_layer_cases():
    cfg = CellConfig()  # C = 3 cells, G = 12, D = 2, B = 2
    ok = layer_inputs(cfg, 4, 2, 3, 2, torch.float32)

    def with_(i, t):
        args = list(ok)
        args[i] = t
        return args

    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = ok
    return [
        (with_(0, x[0]), r"x must be 3-D \(T, B, D\), got 2-D"),
        (with_(0, x.long()), r"x must be a floating-point tensor, got Long"),
        (with_(1, w_ih[:, :1]), r"w_ih must have shape \(12, 2\), got \(12, 1\)"),
        (with_(1, w_ih.double()), r"w_ih must have x's dtype Float, got Double"),
        (with_(1, w_ih[:11]), r"w_ih has 11 gate rows, not a multiple of block_size \+ gates per block \(4\)"),
        (with_(2, w_hh[:, :2]), r"w_hh must have shape \(12, 3\), got \(12, 2\)"),
        (with_(3, b_ih[:4]), r"b_ih must have shape \(12,\), got \(4,\)"),
        (with_(4, b_hh.double()), r"b_hh must have x's dtype Float, got Double"),
        (with_(5, h0[:1]), r"h0 must have shape \(2, 3\), got \(1, 3\)"),
        (with_(6, c0[:, :2]), r"c0 must have shape \(2, 3\), got \(2, 2\)"),
        (with_(2, w_hh.to("meta")), r"w_hh must be on x's device cpu, got meta"),
    ]


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("case", range(len(_bad_layer_cases())))
def test_layer_bad_input_raises(case, requires_grad):
    args, message = _bad_layer_cases()[case]
    if requires_grad:
        args[1] = args[1].clone().requires_grad_() if args[1].is_floating_point() else args[1]
    with pytest.raises(RuntimeError, match=message):
        OPS.layer(*args, None, *CellConfig().op_args())


DOUBLE_BACKWARD_CASES = {  # config, lengths, biases; each run at B=2 (the projection loops) and B=64 (ATen's)
    "2000": (CellConfig(), False, "both"),
    "1997-S2-all-paper-varlen": (CellConfig(False, 2, "all", "paper"), True, "ih"),
    "2000-sigmoid_identity-no_bias-varlen": (CellConfig(True, 1, "cells", "sigmoid_identity"), True, "none"),
}


@pytest.mark.parametrize("B", [2, 64], ids=["loops", "aten"])
@pytest.mark.parametrize("case", sorted(DOUBLE_BACKWARD_CASES))
def test_layer_double_backward(case, B):
    """Differentiable twice (LayerDoubleBackward, on the reference): gradgradcheck in float64 on every input, with
    and without biases and lengths; the first-order gradients under create_graph are the kernel's, bit for bit."""
    cfg, varlen, biases = DOUBLE_BACKWARD_CASES[case]
    T, C, D = 4, 4, 3
    inputs = layer_inputs(cfg, T, B, C, D, biases=biases)
    lengths = torch.tensor([[T, 1, 0, 3][b % 4] for b in range(B)]) if varlen else None
    present = [i for i, t in enumerate(inputs) if t is not None]
    leaves = [t.clone().requires_grad_() if t is not None else None for t in inputs]

    def run(*ts):
        full = list(leaves)
        for i, t in zip(present, ts):
            full[i] = t
        return ops.layer(*full, cfg, lengths)

    def run_ref(*ts):
        full = list(leaves)
        for i, t in zip(present, ts):
            full[i] = t
        return layer_ref(*full, cfg, lengths)

    args = [leaves[i] for i in present]
    ups = [torch.randn_like(o) for o in run(*args)]
    plain = torch.autograd.grad(run(*args), args, ups)
    graph = torch.autograd.grad(run(*args), args, ups, create_graph=True)
    assert all(g.requires_grad and torch.equal(g.detach(), p) for g, p in zip(graph, plain))
    # a Hessian-vector product against the reference's own double backward
    vs = [torch.randn_like(a) for a in args]
    got = torch.autograd.grad(graph, args, vs)
    ref_graph = torch.autograd.grad(run_ref(*args), args, ups, create_graph=True)
    want = torch.autograd.grad(ref_graph, args, vs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tolerances(torch.float64, T * B))
    if B == 2:  # finite differences of every input at the small size (the node is the same at both)
        assert torch.autograd.gradgradcheck(run, args)


@pytest.mark.parametrize("T,B", [(0, 2), (4, 0)], ids=["T0", "B0"])
def test_layer_double_backward_empty(T, B):
    """An empty sequence or batch: the reference's second derivatives (zeros where nothing flows), no error."""
    cfg = CellConfig()
    results = []
    for run in (lambda *ts: ops.layer(*ts, cfg), lambda *ts: layer_ref(*ts, cfg)):
        leaves = [t.requires_grad_() for t in layer_inputs(cfg, T, B, 3, 2)]
        y, h_n, c_n = run(*leaves)
        first = torch.autograd.grad(y.pow(2).sum() + h_n.sum() + c_n.pow(2).sum(), leaves, create_graph=True,
                                    allow_unused=True, materialize_grads=True)  # fmt: skip
        penalty = sum(g.pow(2).sum() for g in first if g.requires_grad)
        results.append(torch.autograd.grad(penalty, leaves, allow_unused=True, materialize_grads=True))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **tolerances(torch.float64, max(T * B, 1)))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "differentiable"])
def test_opcheck_layer_backward(requires_grad):
    """lstm_ext::layer_backward, what a backward with create_graph calls: schema, fake tensors, its autograd (the
    second-order node) under AOT dispatch."""
    cfg = CellConfig()
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = layer_inputs(cfg, 4, 2, 3, 2)
    A = F.linear(x, w_ih, b_ih + b_hh)
    y, _, _, act, s_all = OPS.recurrence_forward(A, w_hh, h0, c0, None, *cfg.op_args())
    dy, dh_n, dc_n = torch.randn_like(y), torch.randn_like(h0), torch.randn_like(c0)
    inputs = [x, w_ih, w_hh, b_ih, b_hh, h0, c0]
    grads = [dy, dh_n, dc_n]
    a0 = 0.1 * torch.randn(h0.shape[0], w_ih.shape[0], dtype=x.dtype)
    if requires_grad:
        inputs, grads, a0 = ([t.clone().requires_grad_() for t in ts] for ts in (inputs, grads, [a0]))
        (a0,) = a0
    for a in (None, a0):  # without a0 (the usual layer) and with it (a projected layer from a given h0)
        torch.library.opcheck(OPS.layer_backward, (*inputs, a, y, act, s_all, None, *cfg.op_args(), *grads,
                                                   [True] * 5))  # fmt: skip


def test_layer_double_backward_of_the_truncated_gradient_raises():
    """The 1997 rule's gradient is not a derivative of the forward: a gradient of it raises, never silently
    differs from one."""
    cfg = CellConfig(False, 1, "all", "paper", truncate=True)
    leaves = [t.requires_grad_() for t in layer_inputs(cfg, 5, 2, 4, 3)]
    y, _, _ = ops.layer(*leaves, cfg)
    g = torch.autograd.grad(y.pow(2).sum(), leaves, create_graph=True)
    assert all(t.requires_grad for t in g)
    with pytest.raises(RuntimeError, match="truncated gradient .* double backward"):
        torch.autograd.grad(g[1].sum(), leaves, allow_unused=True)


@pytest.mark.parametrize("T,B,D", [(0, 3, 2), (4, 0, 2), (4, 3, 0), (0, 0, 2)], ids=["T0", "B0", "D0", "T0B0"])
def test_layer_empty(T, B, D):
    """Empty sequences, batches or inputs: the reference's results (y empty or h_n = h0; zero gradients where
    nothing flows), on the loop path (small) like any other size."""
    check_layer(CellConfig(), T, B, 3, D, torch.float64, "both", None)
    check_layer(CellConfig(False, 2, "all", "paper"), T, B, 4, D, torch.float32, "ih", None)


# ---- a0: an addend to step 0's net input --------------------------------------------------------------------------
# A projected layer (nn.LSTM's proj_size) runs on its unprojected cell outputs, and its given initial state h0 reaches
# step 0 as a0 = h0 w_hh^T (lstm_ext/functional.py, _projected_layer).


def layer_a0(x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, cfg, lengths=None):
    return ops.layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, cfg, lengths, a0)


def layer_ref_a0(x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, cfg, lengths=None):
    return layer_ref(x, w_ih, w_hh, b_ih, b_hh, h0, c0, cfg, lengths, a0=a0)


def inputs_with_a0(cfg, T, B, C, D, dtype=torch.float64, biases="both", seed=0):
    inputs = layer_inputs(cfg, T, B, C, D, dtype, biases, seed)
    a0 = torch.randn(B, cfg.gate_rows(C), generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
    return inputs + [a0.to(dtype)]


A0_CASES = [  # (cfg, T, B, C, D, biases, lengths)
    (CellConfig(), 6, 5, 4, 3, "both", [6, 0, 3, 1, 5]),
    (CellConfig(False, 2, "all", "paper"), 5, 3, 4, 2, "none", None),
    (CellConfig(False, 1, "all", "paper", True), 5, 3, 2, 2, "ih", [5, 1, 0]),  # the 1997 rule (truncated)
    (CellConfig(), 4, 64, 8, 3, "both", None),  # ATen's projection, not the loops
    (CellConfig(), 1, 2, 3, 2, "hh", None),  # one step (decoding)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(A0_CASES)))
def test_layer_a0_matches_reference(case, dtype):
    """a0 added to step 0's net input: outputs and every gradient, da0 included, against the reference."""
    cfg, T, B, C, D, biases, lengths = A0_CASES[case]
    lengths = None if lengths is None else torch.tensor(lengths)
    inputs = inputs_with_a0(cfg, T, B, C, D, dtype, biases)
    got = outputs_and_grads(layer_a0, inputs, cfg, lengths)
    want = outputs_and_grads(layer_ref_a0, [None if t is None else t.double() for t in inputs], cfg, lengths)
    assert_parity(got, want, dtype, T, B, what=f"a0 {cfg_id(cfg)}")
    assert got[-1] is not None and got[-1].abs().sum() > 0  # da0
    # a0 changes the result (a test that a0 reaches step 0)
    assert not torch.equal(got[0], outputs_and_grads(ops.layer, inputs[:7], cfg, lengths)[0])


def test_layer_a0_gradcheck_and_gradgradcheck():
    """The real kernel's gradient in a0 by finite differences; and the second derivative (LayerDoubleBackward)."""
    cfg = CellConfig()
    lengths = torch.tensor([3, 0, 2])
    leaves = [t.requires_grad_() for t in inputs_with_a0(cfg, 3, 3, 2, 2)]
    assert torch.autograd.gradcheck(lambda *a: layer_a0(*a, cfg, lengths), leaves)
    assert torch.autograd.gradgradcheck(lambda *a: layer_a0(*a, cfg, lengths), leaves)


@pytest.mark.parametrize("T", [0, 4])
def test_layer_a0_empty_sequence(T):
    """Without a step 0, a0 takes no part: the result of no a0, and a zero gradient."""
    cfg = CellConfig()
    inputs = inputs_with_a0(cfg, T, 3, 2, 2)
    got = outputs_and_grads(layer_a0, inputs, cfg, None)
    want = outputs_and_grads(layer_ref_a0, inputs, cfg, None)
    assert_parity(got, want, torch.float64, T, 3, what=f"a0 T={T}")
    if T == 0:
        assert torch.equal(got[-1], torch.zeros_like(inputs[-1]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_a0_long_sequence_without_autograd_same_bits(dtype):
    """Without autograd a long sequence runs chunk by chunk and a0 goes into the first chunk: the bits of the one
    recurrence with autograd, which matches the reference."""
    cfg, T, B, C = LONG_2000
    lengths = long_lengths(T, B)
    inputs = inputs_with_a0(cfg, T, B, C, 4, dtype)
    want = layer_a0(*[t.clone().requires_grad_() for t in inputs], cfg, lengths)
    with torch.no_grad():
        got = layer_a0(*inputs, cfg, lengths)
    for a, b in zip(got, want):
        assert torch.equal(a, b.detach())
    ref = layer_ref_a0(*[t.double() for t in inputs], cfg, lengths)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, **tolerances(dtype, T))


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "no_grad"])
def test_layer_a0_opcheck(requires_grad):
    cfg = CellConfig(False, 2, "all", "paper")
    inputs = [t.requires_grad_(requires_grad) for t in inputs_with_a0(cfg, 4, 3, 4, 2)]
    torch.library.opcheck(OPS.layer, (*inputs[:7], torch.tensor([4, 0, 2]), *cfg.op_args(), inputs[7]))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("bad,message", [
    (lambda a0: a0[:1], r"a0 must have shape \(2, 12\), got \(1, 12\)"),
    (lambda a0: a0.double(), r"a0 must have x's dtype Float, got Double"),
], ids=["shape", "dtype"])  # fmt: skip
def test_layer_a0_bad_input_raises(bad, message, requires_grad):
    cfg = CellConfig()  # C = 3 cells, G = 12, B = 2
    *inputs, a0 = inputs_with_a0(cfg, 4, 2, 3, 2, torch.float32)
    inputs[1].requires_grad_(requires_grad)
    with pytest.raises(RuntimeError, match=message):
        OPS.layer(*inputs, None, *cfg.op_args(), bad(a0))
