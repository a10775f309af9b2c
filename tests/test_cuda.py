"""The CUDA kernels of the recurrence ops on a GPU (issue 5). Skipped without a GPU or without a CUDA build of
lstm_ext; with ``LSTM_EXT_REQUIRE_CUDA=1`` (scripts/gpu_check.sh) a missing GPU or CUDA kernel is a failure.

- every configuration against the float64 reference (outputs and all gradients), float64 and float32;
- each launch path of the kernels (one CTA per batch tile; CTA groups with the flag barrier; groups looping over
  batch tiles; U in global memory), found through ``lstm_ext::cuda_launch_plan``;
- LSTM2000 against cuDNN ``nn.LSTM`` (layers, directions, batch_first, proj_size, PackedSequence), LSTM1997
  against its reference backend;
- float16 / bfloat16: the error against float64 at most 2x that of the same-dtype PyTorch implementation;
- CPU vs CUDA parity; NaN confined to its batch row; bitwise determinism; empty and odd inputs; gradcheck,
  opcheck, torch.compile and autocast on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_ext
from lstm_ext import LSTM1997, LSTM2000, ops
from lstm_ext.config import CellConfig
from lstm_ext.reference import cell_step_ref, recurrence_ref

import cases
from cases import all_configs, cfg_id, tolerances

OPS = torch.ops.lstm_ext
HAS_GPU = torch.cuda.is_available()
HAS_KERNEL = torch._C._dispatch_has_kernel_for_dispatch_key("lstm_ext::recurrence_forward", "CUDA")
REQUIRE = os.environ.get("LSTM_EXT_REQUIRE_CUDA") == "1"
requires_cuda = pytest.mark.skipif(
    not (HAS_GPU and HAS_KERNEL),
    reason="no GPU" if not HAS_GPU else "lstm_ext was built without its CUDA kernels",
)

DEV = "cuda"
NAMES = ("y", "r_T", "s_T", "dA", "dU", "dr0", "ds0")


def test_cuda_build_present():
    """On a GPU machine that asks for it, the build must carry its CUDA kernels (not silently CPU-only)."""
    if not REQUIRE:
        pytest.skip("set LSTM_EXT_REQUIRE_CUDA=1 to require a GPU and the CUDA kernels")
    assert HAS_GPU, "LSTM_EXT_REQUIRE_CUDA=1 but torch sees no GPU"
    assert lstm_ext._build.build_info.WITH_CUDA, "lstm_ext was built without CUDA (see _build_info.py)"
    assert HAS_KERNEL, "no CUDA kernel is registered for lstm_ext::recurrence_forward"


# ---- helpers ---------------------------------------------------------------------------------------------


def make_inputs(cfg, T, B, C, dtype=torch.float64, seed=0, device=DEV):
    """cases.make_inputs, on the GPU unless told otherwise."""
    return cases.make_inputs(cfg, T, B, C, dtype, seed, device)








def make_upstream(cfg, T, B, C, seed=1):
    g = torch.Generator().manual_seed(seed)
    R = cfg.recurrent_size(C)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((T, B, C), (B, R), (B, C))]


def varied_lengths(B, T, device="cpu"):
    pattern = [T, 0, T // 2, 1, max(T - 1, 0)]
    return torch.tensor([min(pattern[b % len(pattern)], T) for b in range(B)], dtype=torch.int64, device=device)


def outputs_and_grads(fn, inputs, cfg, lengths, upstream):
    """(y, r_T, s_T, dA, dU, dr0, ds0); gradients that do not exist count as zeros."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outs = fn(*leaves, cfg, lengths=lengths)
    pairs = [(o, u.to(device=o.device, dtype=o.dtype)) for o, u in zip(outs, upstream) if o.requires_grad]
    grads = torch.autograd.grad(
        [o for o, _ in pairs], leaves, [u for _, u in pairs], allow_unused=True, materialize_grads=True
    )
    return [o.detach() for o in outs] + list(grads)


def reference(inputs, cfg, lengths, upstream):
    """The oracle in float64 on the CPU."""
    cpu = [t.detach().to("cpu", torch.float64) for t in inputs]
    return outputs_and_grads(recurrence_ref, cpu, cfg, None if lengths is None else lengths.cpu(), upstream)



def assert_parity(got, want, dtype, T, B, what="", scale=1.0):
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == dtype, (name, a.dtype)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        tol = {k: v * scale for k, v in tolerances(dtype, T * B if name == "dU" else T).items()}
        torch.testing.assert_close(a.cpu().double(), b.cpu().double(), **tol, msg=lambda m: f"{what} {name}: {m}")


def check(cfg, T, B, C, dtype, lengths, seed=0, scale=1.0):
    inputs = make_inputs(cfg, T, B, C, dtype, seed)
    upstream = make_upstream(cfg, T, B, C, seed + 1)
    got = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    assert all(t.is_cuda for t in got)
    want = reference(inputs, cfg, lengths, upstream)
    assert_parity(got, want, dtype, T, B, f"{cfg_id(cfg)} T={T} B={B} C={C} {dtype}", scale)
    return got


def launch_plan(cfg, C, B, dtype, backward=False):
    """(bt, group, n_groups, n_tiles, threads, ksplit, u_in_smem, smem_bytes, workspace_bytes, mma, tiles, cluster,
    dsmem)."""
    return OPS.cuda_launch_plan(
        C, B, dtype, cfg.forget_gate, cfg.block_size, cfg.feedback, cfg.squash, cfg.truncate, backward,
        torch.cuda.current_device(),
    )


DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
LENGTHS = [pytest.param(False, id="full"), pytest.param(True, id="varlen")]


# ---- 1. every configuration against the reference ------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", all_configs(), ids=cfg_id)
def test_matches_reference(cfg, varlen, dtype):
    T, B, C = 6, 5, 6  # B = 5: a tile of 8 rows with 3 padding rows
    check(cfg, T, B, C, dtype, varied_lengths(B, T, DEV) if varlen else None)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 2, 3, 4, 8, 9, 17])
def test_every_batch_tile(B, dtype):
    """B picks the kernel's batch tile (1, 2, 4, 8; float64 1, 2) and the padding of the last tile."""
    cfg = CellConfig(True, 2, "all", "paper")
    T, C = 5, 8
    check(cfg, T, B, C, dtype, varied_lengths(B, T))


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "cfg", [CellConfig(), CellConfig(False, 2, "all", "paper", True), CellConfig(True, 3, "all", "sigmoid_identity")],
    ids=cfg_id,
)
@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)], ids=["T0", "B0", "T0B0"])
def test_empty(T, B, cfg, dtype):
    C = 6
    inputs = make_inputs(cfg, T, B, C, dtype)
    upstream = make_upstream(cfg, T, B, C)
    got = outputs_and_grads(ops.recurrence, inputs, cfg, None, upstream)
    assert_parity(got, reference(inputs, cfg, None, upstream), dtype, T, B)


@requires_cuda
def test_all_rows_frozen():
    cfg = CellConfig(True, 1, "all", "tanh")
    T, B, C = 4, 3, 4
    lengths = torch.zeros(B, dtype=torch.int64, device=DEV)
    got = check(cfg, T, B, C, torch.float64, lengths)
    A, U, r0, s0 = make_inputs(cfg, T, B, C)
    assert torch.equal(got[1], r0) and torch.equal(got[2], s0)
    assert torch.equal(got[0], torch.zeros_like(got[0])) and torch.equal(got[3], torch.zeros_like(got[3]))


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 2)), ids=cfg_id)
def test_without_autograd_same_bits_and_no_workspace(cfg, dtype):
    """Without a gradient to record, the op runs the forward that keeps no act/s_all (the CUDA kernel of
    lstm_ext::recurrence): the same bits as the forward autograd runs, and no (T, B, G) workspace allocated."""
    T, B, C = 40, 5, 8
    inputs = make_inputs(cfg, T, B, C, dtype)
    lengths = varied_lengths(B, T, DEV)
    with_grad = ops.recurrence(*[t.clone().requires_grad_() for t in inputs], cfg, lengths)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        without = ops.recurrence(*inputs, cfg, lengths)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    for a, b in zip(with_grad, without):
        assert torch.equal(a.detach(), b)
    workspace = T * B * inputs[0].shape[-1] * inputs[0].element_size()  # act alone
    assert peak < workspace, (peak, workspace)


# ---- 2. the launch paths ---------------------------------------------------------------------------------------

PATH_CFGS = [CellConfig(), CellConfig(False, 2, "all", "paper"), CellConfig(True, 1, "cells", "tanh", True)]


def find_cells(cfg, B, dtype, want, candidates, backward=False):
    for C in candidates:
        if C % cfg.block_size:
            continue
        try:
            p = launch_plan(cfg, C, B, dtype, backward)
        except RuntimeError:
            continue
        if want(p):
            return C, p
    pytest.skip(f"no size in {candidates} gives this launch path on this GPU")


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", PATH_CFGS, ids=cfg_id)
def test_path_group_of_ctas(cfg, dtype):
    """U split over a group of CTAs that synchronise every step (the cluster barrier on sm_90, else the flag barrier;
    exchange through global memory)."""
    B, T = 5, 4
    C, p = find_cells(cfg, B, dtype, lambda p: p[1] > 1 and p[6] == 1, [64, 96, 128, 192, 256, 384, 512])
    check(cfg, T, B, C, dtype, varied_lengths(B, T), scale=2.0)


@requires_cuda
@pytest.mark.parametrize("cfg", PATH_CFGS[:2], ids=cfg_id)
def test_path_groups_looping_over_tiles(cfg):
    """More batch tiles than groups fit the GPU at once: a group runs its tiles side by side (one group barrier per
    step for all of them), forward and backward."""
    dtype = torch.float32
    C, p = find_cells(cfg, 8, dtype, lambda p: p[1] > 1 and p[6] == 1, [256, 384, 512, 768])
    big = launch_plan(cfg, C, 1 << 16, dtype)
    # from one tile more than groups fit (the last one padded) up, the first batch whose plan has fewer groups than
    # tiles (the planner widens a group whose tiles do not all fit side by side, which can change the group count)
    def fewer_groups_than_tiles(B):
        q = launch_plan(cfg, C, B, dtype)
        return q[2] < q[3]

    B = next(B for B in range(big[0] * (big[2] + 1) + 3, 1 << 16, big[0]) if fewer_groups_than_tiles(B))
    p = launch_plan(cfg, C, B, dtype)
    assert p[10] > 1 and p[10] * p[2] >= p[3], p  # the forward: every tile of a group side by side
    pb = launch_plan(cfg, C, B, dtype, True)  # its own plan; side by side where it too has fewer groups than tiles
    assert pb[2] == pb[3] or cfg.truncate or pb[10] > 1, pb
    check(cfg, 2, B, C, dtype, varied_lengths(B, 2), scale=2.0)


@requires_cuda
@pytest.mark.parametrize("cfg", PATH_CFGS[:2], ids=cfg_id)
def test_path_u_in_global_memory(cfg):
    """U larger than the on-chip memory of the whole GPU: slices in a global workspace."""
    dtype = torch.float32
    C, p = find_cells(cfg, 2, dtype, lambda p: p[6] == 0, [1024, 1536, 2048, 3072])
    check(cfg, 3, 2, C, dtype, None, scale=2.0)


@requires_cuda
def test_no_plan_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no launch configuration|CUDA error|out of memory"):
        launch_plan(CellConfig(), 1 << 16, 8, torch.float64)


@requires_cuda
def test_tensor_core_product_and_its_switch():
    """On sm_80+ (built for the device's own arch) the per-step products of a 16-bit tile of 8 rows run on the
    tensor cores, forward and backward; test_low_precision_op_error checks their error. LSTM_EXT_CUDA_MMA=0 turns
    them off; it is read once per process, so that test runs again in a process of its own with it set."""
    switched_off = os.environ.get("LSTM_EXT_CUDA_MMA") == "0"
    major, minor = torch.cuda.get_device_capability()
    own_arch = f"{major}.{minor}" in lstm_ext._build.build_info.CUDA_ARCHS.replace(" ", ";").split(";")
    for dtype in (torch.float16, torch.bfloat16):
        for backward in (False, True):
            mma = launch_plan(CellConfig(), 64, 8, dtype, backward)[9]
            if switched_off or major < 8:
                assert mma == 0
            elif own_arch:
                assert mma == 1, (dtype, backward)
        assert launch_plan(CellConfig(), 64, 4, dtype)[9] == 0  # a tile of 4 rows: the SIMT product
    assert launch_plan(CellConfig(), 64, 8, torch.float32)[9] == 0
    if switched_off:
        return
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "test_low_precision_op_error or test_tensor_core_product_and_its_switch"],
        env={**os.environ, "LSTM_EXT_CUDA_MMA": "0"}, cwd=os.path.dirname(__file__), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


@requires_cuda
def test_thread_block_clusters_and_their_switch():
    """On sm_90 (built for the device's own arch) a group of 2 to 16 CTAs with a per-step barrier is launched as a
    thread-block cluster and synchronises with the cluster's barrier (where the GPU holds all its groups' clusters
    at once), and its CTAs write r_t (forward) or da_t (backward) into each other's shared memory (where that
    fits); the launch-path tests above then run that path. LSTM_EXT_CUDA_CLUSTER=0 turns it off (the flag
    barrier); it is read once per process, so the launch-path tests run again in a process of their own with it set."""
    switched_off = os.environ.get("LSTM_EXT_CUDA_CLUSTER") == "0"
    major, minor = torch.cuda.get_device_capability()
    own_arch = f"{major}.{minor}" in lstm_ext._build.build_info.CUDA_ARCHS.replace(" ", ";").split(";")
    cfg, dtype = CellConfig(), torch.float32
    C, p = find_cells(cfg, 1, dtype, lambda p: 1 < p[1] <= 8 and p[2] == 1, [64, 96, 128, 192, 256, 384])
    for backward in (False, True):
        q = launch_plan(cfg, C, 1, dtype, backward)
        if switched_off or major < 9 or q[1] == 1:
            assert q[11] == 0 and q[12] == 0, q
        elif own_arch:
            assert q[11] == 1, (backward, q)
            assert q[12] == 1, (backward, q)  # r_t (da_t) through distributed shared memory
    one = launch_plan(cfg, 8, 1, dtype)
    assert one[1] == 1 and one[11] == 0, one  # a group of one CTA: no barrier, no cluster
    truncated = CellConfig(True, 1, "cells", "tanh", True)
    qt = launch_plan(truncated, C, 1, dtype, True)
    assert qt[11] == 0, qt  # the truncated backward has no per-step barrier
    if switched_off:
        return
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "test_path_group_of_ctas or test_path_groups_looping_over_tiles or test_thread_block_clusters"],
        env={**os.environ, "LSTM_EXT_CUDA_CLUSTER": "0"}, cwd=os.path.dirname(__file__), capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout, proc.stdout[-2000:]


# ---- 3. LSTM2000 against cuDNN nn.LSTM, LSTM1997 against its reference ------------------------------------------

D_IN, HIDDEN, T_LEN, BATCH = 5, 16, 9, 4


def run_module(m, x, h0, c0, lengths=None, batch_first=False):
    """{name: tensor}: outputs y, h_n, c_n and the gradients of a fixed loss on x, h0, c0 and every parameter."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, h0, c0)]
    inp = leaves[0]
    if lengths is not None:
        inp = pack_padded_sequence(inp, lengths, batch_first=batch_first, enforce_sorted=False)
    out, (h_n, c_n) = m(inp, (leaves[1], leaves[2]))
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    weights = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=torch.float64).view_as(out)
    loss = (out * weights.to(out.dtype)).sum() + (h_n * 0.7).sum() + (c_n * -1.3).sum()
    names = [n for n, _ in m.named_parameters()]
    grads = torch.autograd.grad(loss, leaves + [p for _, p in m.named_parameters()])
    result = {"y": out.detach(), "h_n": h_n.detach(), "c_n": c_n.detach()}
    result.update({k: g.detach() for k, g in zip(["dx", "dh0", "dc0"] + ["d" + n for n in names], grads)})
    return result


def assert_same(got: dict, want: dict, **tol):
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    for k in want:
        torch.testing.assert_close(got[k], want[k], **tol, msg=lambda m: f"{k}: {m}")


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "num_layers,bidirectional,batch_first,proj_size,packed",
    [(1, False, False, 0, False), (2, True, False, 0, False), (1, False, True, 0, True), (2, True, True, 3, True),
     (1, True, False, 0, True), (3, False, False, 4, False)],
    ids=["1l", "2l-bi", "bf-packed", "2l-bi-bf-proj-packed", "bi-packed", "3l-proj"],
)
def test_lstm2000_matches_cudnn(num_layers, bidirectional, batch_first, proj_size, packed, dtype):
    torch.manual_seed(0)
    ref = nn.LSTM(D_IN, HIDDEN, num_layers, batch_first=batch_first, bidirectional=bidirectional,
                  proj_size=proj_size).to(DEV, dtype)
    ours = LSTM2000(D_IN, HIDDEN, num_layers, batch_first=batch_first, bidirectional=bidirectional,
                    proj_size=proj_size, backend="fused").to(DEV, dtype)
    ours.load_state_dict(ref.state_dict())
    D = 2 if bidirectional else 1
    g = torch.Generator().manual_seed(1)
    shape = (BATCH, T_LEN, D_IN) if batch_first else (T_LEN, BATCH, D_IN)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).to(DEV, dtype)
    h0 = torch.randn(num_layers * D, BATCH, proj_size or HIDDEN, generator=g, dtype=torch.float64).to(DEV, dtype)
    c0 = torch.randn(num_layers * D, BATCH, HIDDEN, generator=g, dtype=torch.float64).to(DEV, dtype)
    lengths = torch.tensor([T_LEN, 3, 1, T_LEN - 2]) if packed else None
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        want = run_module(ref, x, h0, c0, lengths, batch_first)
    got = run_module(ours, x, h0, c0, lengths, batch_first)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    assert_same(got, want, **tol)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm1997_matches_its_reference(dtype):
    torch.manual_seed(0)
    fused = LSTM1997(D_IN, HIDDEN, 2, bidirectional=True, backend="fused").to(DEV, dtype)
    ref = LSTM1997(D_IN, HIDDEN, 2, bidirectional=True, backend="reference").to(DEV, dtype)
    ref.load_state_dict(fused.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T_LEN, BATCH, D_IN, generator=g, dtype=torch.float64).to(DEV, dtype)
    h0 = torch.randn(4, BATCH, HIDDEN, generator=g, dtype=torch.float64).to(DEV, dtype)
    c0 = torch.randn(4, BATCH, HIDDEN, generator=g, dtype=torch.float64).to(DEV, dtype)
    lengths = torch.tensor([T_LEN, 4, 2, 7])
    want, got = run_module(ref, x, h0, c0, lengths), run_module(fused, x, h0, c0, lengths)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    assert_same(got, want, **tol)


# ---- 4. float16 / bfloat16: at most 2x the error of the same-dtype PyTorch implementation -----------------------

LOW = [pytest.param(torch.float16, id="f16"), pytest.param(torch.bfloat16, id="bf16")]


def rel_error(got, want) -> float:
    """max |got - want| / max |want| (the absolute error when want vanishes)."""
    want = want.cpu().double()
    if want.numel() == 0:
        return 0.0
    err = (got.cpu().double() - want).abs().max().item()
    ref = want.abs().max().item()
    return err / ref if ref > 0 else err


def rel_errors(got, want):
    return [rel_error(a, b) for a, b in zip(got, want)]


def recurrence_loop(A, U, r0, s0, config, lengths=None, *, compute=None, round_r=False):
    """recurrence_ref's per-step loop computed in `compute` (default: A's dtype, so every op and everything
    autograd saves is in that dtype, as a user's own float16/bfloat16 loop would be); round_r: each step's product
    reads r_{t-1} rounded to A's dtype. Outputs in A's dtype."""
    dtype = A.dtype
    compute = compute or dtype
    U, r, s = U.to(compute), r0.to(compute), s0.to(compute)
    ys = []
    for t in range(A.shape[0]):
        r_in = r.detach() if config.truncate else r
        if round_r:
            r_in = r_in.to(dtype).to(compute)
        y_c, s_new, gates = cell_step_ref(A[t].to(compute) + r_in @ U.t(), s, config)
        r_new = y_c if config.feedback == "cells" else torch.cat(gates + [y_c], dim=1)
        if lengths is None:
            r, s = r_new, s_new
            ys.append(y_c)
        else:
            active = (t < lengths).to(A.device).unsqueeze(1)
            r, s = torch.where(active, r_new, r), torch.where(active, s_new, s)
            ys.append(torch.where(active, y_c, torch.zeros_like(y_c)))
    return torch.stack(ys).to(dtype), r.to(dtype), s.to(dtype)


def recurrence_in_dtype(A, U, r0, s0, config, lengths=None):
    """The PyTorch implementation computed in A's dtype."""
    return recurrence_loop(A, U, r0, s0, config, lengths)


def recurrence_rounded_r(A, U, r0, s0, config, lengths=None):
    """The float32 loop whose products read r_{t-1} rounded to A's dtype: the arithmetic of the tensor-core
    product (and of cuDNN, which keeps h in the storage type)."""
    return recurrence_loop(A, U, r0, s0, config, lengths, compute=torch.float32, round_r=True)


@requires_cuda
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "cfg", [CellConfig(), CellConfig(False, 1, "cells", "tanh"), CellConfig(False, 2, "all", "paper", True),
            CellConfig(True, 4, "all", "sigmoid_identity")],
    ids=cfg_id,
)
@pytest.mark.parametrize("C", [32, 256])
def test_low_precision_op_error(cfg, C, dtype):
    """Errors against float64 on the unrounded inputs, each at most 2x the PyTorch implementation's in dtype:
    outputs y, r_T, s_T against recurrence_ref run in dtype (it computes in float32 inside and rounds at the
    end), or, where the plan runs the product on the tensor cores (which read r_{t-1} in dtype), against the same
    loop with r_{t-1} rounded for the product (recurrence_rounded_r); gradients against the loop computed in
    dtype (recurrence_in_dtype). The kernel computes in float32 too, but its backward reads act and s_all as the
    forward returned them, in dtype (the op's contract), so its gradients are compared with an implementation
    that saves its activations in dtype as well; their ratio to recurrence_ref's is reported in the message."""
    T, B = 20, 6
    inputs64 = make_inputs(cfg, T, B, C, torch.float64)
    lengths = varied_lengths(B, T)
    upstream = make_upstream(cfg, T, B, C)
    truth = outputs_and_grads(recurrence_ref, inputs64, cfg, lengths.to(DEV), upstream)
    low = [t.to(dtype) for t in inputs64]
    ours = outputs_and_grads(ops.recurrence, low, cfg, lengths, upstream)
    ref_f32_inside = outputs_and_grads(recurrence_ref, low, cfg, lengths.to(DEV), upstream)
    ref_in_dtype = outputs_and_grads(recurrence_in_dtype, low, cfg, lengths.to(DEV), upstream)
    assert all(t.dtype == dtype for t in ours)
    e_ours, e_f32, e_low = (rel_errors(x, truth) for x in (ours, ref_f32_inside, ref_in_dtype))
    if launch_plan(cfg, C, B, dtype)[9]:  # the tensor-core product
        ref_rounded_r = outputs_and_grads(recurrence_rounded_r, low, cfg, lengths.to(DEV), upstream)
        e_f32 = rel_errors(ref_rounded_r, truth)
    report = ", ".join(
        f"{n}: {a:.2e} (ref {b:.2e}, ref in {dtype} {c:.2e})" for n, a, b, c in zip(NAMES, e_ours, e_f32, e_low)
    )
    for i, name in enumerate(NAMES):
        peer = e_f32[i] if i < 3 else e_low[i]
        assert e_ours[i] <= 2 * peer + 1e-6, f"{name}: kernel error {e_ours[i]:.3e} > 2 x {peer:.3e} ({report})"


@requires_cuda
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("H", [32, 128])
def test_low_precision_lstm2000_error(H, dtype):
    """LSTM2000 in dtype vs cuDNN nn.LSTM in dtype, both against nn.LSTM in float64 with the same weights."""
    torch.manual_seed(0)
    D, T, B = 16, 30, 8
    ref64 = nn.LSTM(D, H).to(DEV, torch.float64)
    peer = nn.LSTM(D, H).to(DEV, dtype)
    peer.load_state_dict(ref64.state_dict())
    ours = LSTM2000(D, H, backend="fused").to(DEV, dtype)
    ours.load_state_dict(ref64.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64).to(DEV)
    h0 = torch.randn(1, B, H, generator=g, dtype=torch.float64).to(DEV)
    c0 = torch.randn(1, B, H, generator=g, dtype=torch.float64).to(DEV)
    want = run_module(ref64, x, h0, c0)
    low = [t.to(dtype) for t in (x, h0, c0)]
    got_peer, got_ours = run_module(peer, *low), run_module(ours, *low)
    assert got_ours.keys() == want.keys()
    errors = {k: (rel_error(got_ours[k], want[k]), rel_error(got_peer[k], want[k])) for k in want}
    report = ", ".join(f"{k}: {a:.2e} vs {b:.2e}" for k, (a, b) in errors.items())
    for k, (a, b) in errors.items():
        assert a <= 2 * b + 1e-6, f"{k}: LSTM2000 error {a:.3e} > 2 x nn.LSTM {dtype} error {b:.3e} ({report})"


@requires_cuda
@pytest.mark.parametrize("dtype", LOW)
def test_autocast(dtype):
    torch.manual_seed(0)
    m = LSTM2000(8, 32, 2, backend="fused").to(DEV)
    x = torch.randn(12, 4, 8, device=DEV)
    y32, (h32, c32) = m(x)
    with torch.autocast("cuda", dtype=dtype):
        y, (h, c) = m(x)
    assert y.dtype == dtype and h.dtype == dtype
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), y32, rtol=0.05, atol=0.05)
    y.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


# ---- 5. CPU vs CUDA ---------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("varlen", LENGTHS)
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 3), truncate=(False, True))[::3], ids=cfg_id)
def test_cpu_cuda_parity(cfg, varlen, dtype):
    T, B, C = 7, 6, 6
    lengths = varied_lengths(B, T) if varlen else None
    inputs = make_inputs(cfg, T, B, C, dtype, device="cpu")
    upstream = make_upstream(cfg, T, B, C)
    cpu = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    gpu = outputs_and_grads(ops.recurrence, [t.to(DEV) for t in inputs], cfg,
                            None if lengths is None else lengths.to(DEV), upstream)
    assert_parity(gpu, cpu, dtype, T, B, f"{cfg_id(cfg)} CPU vs CUDA", scale=2.0)


@requires_cuda
def test_lengths_on_cpu_or_gpu_and_noncontiguous_inputs():
    cfg = CellConfig(True, 2, "all", "paper")
    T, B, C = 5, 6, 8
    inputs = make_inputs(cfg, T, B, C, torch.float32)
    lengths = varied_lengths(B, T)
    a = ops.recurrence(*inputs, cfg, lengths)
    b = ops.recurrence(*inputs, cfg, lengths.to(DEV))
    A, U, r0, s0 = inputs
    c = ops.recurrence(A.transpose(0, 1).contiguous().transpose(0, 1), U.t().contiguous().t(),
                       torch.stack([r0, r0], -1)[..., 0], torch.cat([s0, s0], 1)[:, C:], cfg, lengths)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)


# ---- 6. NaN confinement, determinism --------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("size", ["small", "group"])
@pytest.mark.parametrize(
    "cfg", [CellConfig(), CellConfig(False, 2, "all", "paper"), CellConfig(True, 1, "cells", "tanh", True)], ids=cfg_id
)
def test_nan_confined_to_its_row(cfg, size):
    dtype = torch.float32
    T, B = 6, 11
    C = 4 if size == "small" else find_cells(cfg, B, dtype, lambda p: p[1] > 1, [128, 192, 256, 384, 512])[0]
    t0, b0 = 2, 1
    A, U, r0, s0 = make_inputs(cfg, T, B, C, dtype)
    z0 = (2 if cfg.forget_gate else 1) * (C // cfg.block_size)
    A[t0, b0, z0] = float("nan")
    leaves = [t.clone().requires_grad_() for t in (A, U, r0, s0)]
    y, r_T, s_T = ops.recurrence(*leaves, cfg)
    others = [b for b in range(B) if b != b0]
    assert torch.isfinite(y[:t0]).all()
    assert torch.isfinite(y[:, others]).all(), "NaN leaked into other batch rows"
    assert torch.isnan(y[t0 + 1:, b0]).all()
    assert torch.isfinite(r_T[others]).all() and torch.isfinite(s_T[others]).all()
    dA, dU, dr0, ds0 = torch.autograd.grad((y.sum(), r_T.sum(), s_T.sum()), leaves)
    assert torch.isfinite(dA[:, others]).all(), "NaN leaked into other rows' gradients"
    assert torch.isfinite(dr0[others]).all() and torch.isfinite(ds0[others]).all()
    assert torch.isnan(dA[:, b0]).any()

    lengths = torch.full((B,), T, dtype=torch.int64)
    lengths[b0] = t0  # the NaN lies past the row's length: never read
    y, r_T, s_T = ops.recurrence(*leaves, cfg, lengths)
    assert torch.isfinite(y).all() and torch.isfinite(r_T).all() and torch.isfinite(s_T).all()
    grads = torch.autograd.grad((y.sum(), r_T.sum(), s_T.sum()), leaves)
    assert all(torch.isfinite(g).all() for g in grads)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", ["small", "group"])
def test_bitwise_determinism(size, dtype):
    cfg = CellConfig()
    T, B = 12, 11
    C = 8 if size == "small" else find_cells(cfg, B, dtype, lambda p: p[1] > 1, [128, 192, 256, 384, 512])[0]
    inputs = make_inputs(cfg, T, B, C, dtype)
    lengths = varied_lengths(B, T)
    upstream = make_upstream(cfg, T, B, C)
    first = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
    for _ in range(3):
        again = outputs_and_grads(ops.recurrence, inputs, cfg, lengths, upstream)
        for name, a, b in zip(NAMES, first, again):
            assert torch.equal(a, b), name


# ---- 7. gradcheck, opcheck, compile, bad input ---------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("cfg", [CellConfig(), CellConfig(False, 2, "all", "paper"),
                                 CellConfig(True, 1, "all", "sigmoid_identity")], ids=cfg_id)
def test_gradcheck(cfg):
    C = 2 * cfg.block_size
    inputs = make_inputs(cfg, 3, 3, C)
    lengths = torch.tensor([3, 0, 2], device=DEV)
    leaves = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *x: ops.recurrence(*x, cfg, lengths), leaves)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_opcheck(dtype):
    cfg = CellConfig(False, 2, "all", "paper", True)
    T, B, C = 5, 3, 4
    A, U, r0, s0 = make_inputs(cfg, T, B, C, dtype)
    lengths = torch.tensor([5, 0, 2], device=DEV)
    ins = [t.requires_grad_(dtype != torch.float16) for t in (A, U, r0, s0)]
    for op in (OPS.recurrence, OPS.recurrence_forward):
        torch.library.opcheck(op, (*ins, lengths, *cfg.op_args()))
    y, r_T, s_T, act, s_all = OPS.recurrence_forward(*[t.detach() for t in ins], lengths, *cfg.op_args())
    dy, dr_T, ds_T = (u.to(DEV, dtype) for u in make_upstream(cfg, T, B, C))
    torch.library.opcheck(OPS.recurrence_backward,
                          (dy, dr_T, ds_T, U.detach(), r0.detach(), s0.detach(), y, act, s_all, lengths,
                           *cfg.op_args()))


@requires_cuda
def test_torch_compile_fullgraph():
    cfg = CellConfig(True, 1, "all", "paper")
    T, B, C, D = 5, 3, 3, 4
    G = cfg.gate_rows(C)
    x = torch.randn(T, B, D, device=DEV, dtype=torch.float64)
    W = torch.randn(G, D, device=DEV, dtype=torch.float64) / 2
    _, U, r0, s0 = make_inputs(cfg, T, B, C)
    lengths = torch.tensor([5, 0, 2], device=DEV)

    def f(x, W, U, r0, s0):
        return ops.recurrence(x @ W.t(), U, r0, s0, cfg, lengths)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (x, W, U, r0, s0)]
        out = fn(*leaves)
        loss = sum(((i + 1) * torch.tanh(o)).sum() for i, o in enumerate(out))
        return [o.detach() for o in out] + list(torch.autograd.grad(loss, leaves))

    torch._dynamo.reset()
    for a, b in zip(run(torch.compile(f, fullgraph=True, backend="aot_eager")), run(f)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- lstm_ext::layer (the projection and the recurrence in one op; what the modules call) -----------------


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", all_configs(block_sizes=(1, 2))[::2], ids=cfg_id)
def test_layer_op_matches_reference(cfg, dtype):
    from test_layer_op import check_layer

    lengths = torch.tensor([6, 0, 3, 1, 5], device=DEV)
    check_layer(cfg, 6, 5, 2 * cfg.block_size, 3, dtype, "both", lengths, device=DEV)
    check_layer(cfg, 6, 5, 2 * cfg.block_size, 3, dtype, "ih", None, device=DEV)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_layer_op_opcheck_and_no_grad_bits(dtype):
    from test_layer_op import layer_inputs

    cfg = CellConfig(False, 2, "all", "paper", True)
    inputs = layer_inputs(cfg, 5, 3, 4, 2, dtype, device=DEV)
    lengths = torch.tensor([5, 0, 2], device=DEV)
    leaves = [t.requires_grad_(dtype != torch.bfloat16) for t in inputs]
    torch.library.opcheck(OPS.layer, (*leaves, lengths, *cfg.op_args()))
    with_grad = ops.layer(*[t.detach().clone().requires_grad_() for t in inputs], cfg, lengths)
    with torch.no_grad():
        without = ops.layer(*[t.detach() for t in inputs], cfg, lengths)
    for a, b in zip(without, with_grad):
        assert torch.equal(a, b.detach())


@requires_cuda
def test_bad_input():
    A, U, r0, s0 = make_inputs(CellConfig(), 3, 2, 4, torch.float32)
    args = (True, 1, "cells", "tanh", False)
    with pytest.raises(RuntimeError, match=r"U must be on A's device"):
        OPS.recurrence_forward(A, U.cpu(), r0, s0, None, *args)
    with pytest.raises(RuntimeError, match=r"A must be a floating-point tensor, got Int"):
        OPS.recurrence_forward(A.int(), U, r0, s0, None, *args)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[0, T\]"):
        OPS.recurrence_forward(A, U, r0, s0, torch.tensor([1, 4], device=DEV), *args)


@requires_cuda
def test_other_device_and_stream():
    """The kernel runs on the tensors' device and the current stream."""
    cfg = CellConfig()
    inputs = make_inputs(cfg, 6, 3, 8, torch.float32)
    want = ops.recurrence(*inputs, cfg)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = ops.recurrence(*inputs, cfg)
    torch.cuda.current_stream().wait_stream(s)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    if torch.cuda.device_count() > 1:
        other = [t.to("cuda:1") for t in inputs]
        for a, b in zip(ops.recurrence(*other, cfg), want):
            assert a.device.index == 1 and torch.equal(a.cpu(), b.cpu())
