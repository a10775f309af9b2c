"""torch.func's transforms on the fused ops, as nn.LSTM users run them: ``grad``, ``vjp``, ``jacrev`` and
per-sample gradients (``vmap`` over ``grad``) give the float64 reference's results, through the modules and the
ops. Second and third derivatives by torch.autograd (a gradient penalty, the reverse-mode Hessian) give nn.LSTM's,
through the layer op's second-order node. Inside torch.func (``grad(grad)``, ``jacrev(jacrev)``) that node cannot
run: with ``backend="fused"`` they raise, with ``backend="auto"`` (the default) the modules take the reference there.
The fused ops have no jvp: with ``backend="fused"`` the forward-mode transforms (``jvp``, ``jacfwd``, ``hessian``)
raise, naming the op, instead of returning zeros; with ``backend="auto"`` the modules take the reference under
forward-mode AD and give nn.LSTM's results.

Under a transform the ops see wrapped tensors (grad's TensorWrapper, vmap's BatchedTensor) that hold no storage of
their own: the CPU fast paths must leave them to the dispatcher (``plain_cpu`` in csrc/ops.h), and every autograd
node must be one that torch.func accepts (no C++ ``torch::autograd::Function``, csrc/autograd.cpp).
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import lstm_ext
from lstm_ext import ops
from lstm_ext.config import CellConfig
from lstm_ext.reference import recurrence_ref

from cases import cfg_id, make_inputs, tolerances

# vmap has no batching rule for the ops: torch's fallback runs them row by row, and says so
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

T, B, D, H = 6, 3, 2, 4
TOL = tolerances(torch.float64, T * B)

HAS_CUDA_KERNEL = torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key(
    "lstm_ext::recurrence_forward", "CUDA"
)
# The CUDA kernels under the transforms too (float64: their correctness path); skipped without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA_KERNEL, reason="no GPU"))]

MODULES = {
    "2000": (lstm_ext.LSTM2000, {}),
    "1997": (lstm_ext.LSTM1997, {}),
    "2000-2layers-bidirectional": (lstm_ext.LSTM2000, dict(num_layers=2, bidirectional=True)),
    "2000-proj": (lstm_ext.LSTM2000, dict(proj_size=2)),
    "1997-batch_first": (lstm_ext.LSTM1997, dict(batch_first=True)),
}


def fused_and_reference(name, device="cpu"):
    """The module with backend="fused" and the same weights with backend="reference" (float64)."""
    cls, kw = MODULES[name]
    torch.manual_seed(0)
    fused = cls(D, H, backend="fused", **kw).to(device, torch.float64)
    ref = cls(D, H, backend="reference", **kw).to(device, torch.float64)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def params_of(module):
    return {k: v.detach() for k, v in module.named_parameters()}


def loss(module, params, x):
    """A scalar that reaches y and both final states."""
    y, (h_n, c_n) = functional_call(module, params, (x,))
    return y.pow(2).sum() + h_n.sum() + c_n.pow(2).sum()


def input_for(module):
    x = torch.randn(T, B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = x.to(module.weight_hh_l0.device)
    return x.transpose(0, 1) if module.batch_first else x


def assert_all_close(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], **TOL, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_func_grad_matches_reference(name, device):
    """torch.func.grad over the parameters and the input: torch.autograd.grad of the reference backend."""
    fused, ref = fused_and_reference(name, device)
    params, x = params_of(fused), input_for(fused)
    got_params, got_x = grad(lambda p, xx: loss(fused, p, xx), argnums=(0, 1))(params, x)
    ref_params = {k: v.clone().requires_grad_() for k, v in params.items()}
    x_ref = x.clone().requires_grad_()
    want = torch.autograd.grad(loss(ref, ref_params, x_ref), [*ref_params.values(), x_ref])
    assert_all_close(got_params, dict(zip(ref_params, want[:-1])))
    torch.testing.assert_close(got_x, want[-1], **TOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_per_sample_gradients(name, device):
    """vmap over grad, one gradient per batch row (DP-SGD's per-sample gradients): each row's own gradient, from
    the reference backend run on that row alone."""
    fused, ref = fused_and_reference(name, device)
    params, x = params_of(fused), input_for(fused)
    batch_dim = 0 if fused.batch_first else 1

    def row_loss(module, p, row):  # row: one batch row without its batch dimension
        return loss(module, p, row.unsqueeze(batch_dim))

    got = vmap(grad(lambda p, row: row_loss(fused, p, row)), in_dims=(None, batch_dim))(params, x)
    for b in range(B):
        ref_params = {k: v.clone().requires_grad_() for k, v in params.items()}
        want = torch.autograd.grad(row_loss(ref, ref_params, x.select(batch_dim, b)), list(ref_params.values()))
        assert_all_close({k: v[b] for k, v in got.items()}, dict(zip(ref_params, want)))


def test_vjp_and_jacrev_match_reference():
    fused, ref = fused_and_reference("2000")
    x = input_for(fused)
    out, pullback = vjp(lambda xx: fused(xx)[0], x)
    torch.testing.assert_close(out, ref(x)[0], **TOL)
    cotangent = torch.randn_like(out)
    torch.testing.assert_close(pullback(cotangent)[0], vjp(lambda xx: ref(xx)[0], x)[1](cotangent)[0], **TOL)
    torch.testing.assert_close(jacrev(lambda xx: fused(xx)[0])(x), jacrev(lambda xx: ref(xx)[0])(x), **TOL)


OP_CONFIGS = [
    CellConfig(),
    CellConfig(False, 2, "all", "paper", True),
    CellConfig(True, 1, "cells", "sigmoid_identity"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("varlen", [False, True], ids=["fixed", "varlen"])
@pytest.mark.parametrize("cfg", OP_CONFIGS, ids=cfg_id)
@pytest.mark.parametrize("op", ["recurrence", "recurrence_forward"])
def test_func_grad_of_the_op_matches_reference(op, cfg, varlen, device):
    """The recurrence op and its forward op (each with its own C++ autograd) under torch.func.grad, every
    input's gradient against the float64 reference's."""
    inputs = make_inputs(cfg, T, B, H, device=device)
    lengths = torch.tensor([T, 2, 0][:B], device=device) if varlen else None

    def fused(*ins):
        if op == "recurrence":
            return ops.recurrence(*ins, cfg, lengths)
        return torch.ops.lstm_ext.recurrence_forward(*ins, lengths, *cfg.op_args())[:3]

    def total(fn, *ins):
        y, r_T, s_T = fn(*ins)
        return y.pow(2).sum() + r_T.sum() + s_T.pow(2).sum()

    got = grad(lambda *ins: total(fused, *ins), argnums=(0, 1, 2, 3))(*inputs)
    want_inputs = [t.clone().requires_grad_() for t in inputs]
    want = torch.autograd.grad(total(lambda *ins: recurrence_ref(*ins, cfg, lengths), *want_inputs), want_inputs,
                               allow_unused=True, materialize_grads=True)  # truncate: r0 reaches only detached paths
    for name, a, b in zip(["A", "U", "r0", "s0"], got, want):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"d{name}: {m}")


FORWARD_MODE = {
    "jvp": lambda f, x: jvp(f, (x,), (torch.ones_like(x),)),
    "jacfwd": lambda f, x: jacfwd(f)(x),
    "hessian": lambda f, x: hessian(f)(x),
}


@pytest.mark.parametrize("transform", sorted(FORWARD_MODE))
@pytest.mark.parametrize("name", ["2000", "1997"])
def test_forward_mode_transforms_raise(name, transform):
    """No jvp in the fused ops: forward-mode transforms raise instead of propagating zero tangents (hessian, which
    runs jacrev under jacfwd, returned zeros before the ops checked for tangents at every level)."""
    fused, _ = fused_and_reference(name)
    x = input_for(fused)
    with pytest.raises(RuntimeError, match=r"lstm_ext\.\w+: forward-mode AD"):
        FORWARD_MODE[transform](lambda xx: fused(xx)[0].pow(2).sum(), x)


def test_reference_backend_runs_forward_mode_transforms():
    """What the message recommends works."""
    _, ref = fused_and_reference("2000")
    x = input_for(ref)
    assert hessian(lambda xx: ref(xx)[0].pow(2).sum())(x).abs().sum() > 0


def forward_ad_tangent(f, x):
    with fwAD.dual_level():
        return fwAD.unpack_dual(f(fwAD.make_dual(x, torch.ones_like(x)))).tangent


@pytest.mark.parametrize("transform", [*sorted(FORWARD_MODE), "forward_ad"])
@pytest.mark.parametrize("name", ["2000", "2000-2layers-bidirectional", "1997"])
def test_auto_backend_runs_forward_mode_transforms(name, transform):
    """backend="auto" (the default) takes the reference under forward-mode AD, so the modules run jvp, jacfwd,
    hessian and forward_ad as nn.LSTM does: the 2000 cell gives nn.LSTM's results (same weights), the 1997 cell
    the reference backend's."""
    fused, ref = fused_and_reference(name)
    auto = MODULES[name][0](D, H, **MODULES[name][1]).double()
    auto.load_state_dict(fused.state_dict())
    if isinstance(fused, lstm_ext.LSTM2000):
        ref = torch.nn.LSTM(D, H, **MODULES[name][1]).double()
        ref.load_state_dict(fused.state_dict())
    x = input_for(fused)
    if transform == "forward_ad":
        got, want = (forward_ad_tangent(lambda xx: m(xx)[0], x) for m in (auto, ref))
    else:
        got, want = (FORWARD_MODE[transform](lambda xx: m(xx)[0].pow(2).sum(), x) for m in (auto, ref))
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, **TOL)
    assert any(t.abs().sum() > 0 for t in torch.utils._pytree.tree_leaves(got))


def peer_of(name, fused):
    """nn.LSTM with the fused module's weights for the 2000 cell on the CPU; else the reference backend (cuDNN's
    LSTM has no double backward)."""
    cls, kw = MODULES[name]
    device = fused.weight_hh_l0.device
    nn_lstm = cls is lstm_ext.LSTM2000 and device.type == "cpu"
    peer = torch.nn.LSTM(D, H, **kw) if nn_lstm else cls(D, H, backend="reference", **kw)
    peer = peer.to(device, torch.float64)
    peer.load_state_dict(fused.state_dict())
    return peer


SECOND_ORDER = ["2000", "1997", "2000-2layers-bidirectional", "2000-proj", "1997-batch_first"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("initial_state", ["none", "given"])
@pytest.mark.parametrize("name", SECOND_ORDER)
def test_gradient_penalty_like_nn_lstm(name, initial_state, device):
    """A gradient of a gradient (create_graph; WGAN-GP's penalty, MAML): the layer op's second derivative (on the
    reference, csrc/layer.cpp LayerDoubleBackward) gives nn.LSTM's, from a zero state (hx=None) and from a given
    one that requires a gradient (with proj_size: step 0 as an op of its own, functional._projected_layer)."""
    fused, _ = fused_and_reference(name, device)
    peer = peer_of(name, fused)
    x = input_for(fused)
    hx = ()
    if initial_state == "given":
        n = fused.num_layers * (2 if fused.bidirectional else 1)
        gen = torch.Generator().manual_seed(2)
        hx = tuple(torch.randn(n, B, size, dtype=x.dtype, generator=gen).to(x.device)
                   for size in (fused.proj_size or H, H))  # fmt: skip
    results = []
    for m in (fused, peer):
        xx = x.clone().requires_grad_()
        state = tuple(t.clone().requires_grad_() for t in hx)
        params = [xx, *state, *m.parameters()]
        y, (h_n, c_n) = m(xx, state or None)
        first = torch.autograd.grad(y.pow(2).sum() + h_n.sum() + c_n.pow(2).sum(), params, create_graph=True)
        penalty = sum(g.pow(2).sum() for g in first)
        results.append(torch.autograd.grad(penalty, params))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)
    assert all(g.abs().sum() > 0 for g in results[0])


@pytest.mark.parametrize("name", ["2000", "1997"])
def test_reverse_mode_hessian_and_third_derivative_like_the_peer(name):
    """torch.autograd.functional.hessian (reverse over reverse) gives nn.LSTM's; a third derivative (create_graph
    twice) the peer's too: the second-order node records on the reference when asked to."""
    fused, _ = fused_and_reference(name)
    peer = peer_of(name, fused)
    x = input_for(fused)[:3, :2]
    got, want = (torch.autograd.functional.hessian(lambda xx, m=m: m(xx)[0].pow(2).sum(), x) for m in (fused, peer))
    torch.testing.assert_close(got, want, **TOL)
    results = []
    for m in (fused, peer):
        xx = x.clone().requires_grad_()
        (g1,) = torch.autograd.grad(m(xx)[0].pow(2).sum(), xx, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), xx, create_graph=True)
        results.append(torch.autograd.grad(g2.sum(), xx)[0])
    torch.testing.assert_close(*results, **TOL)
    assert results[0].abs().sum() > 0


NESTED_REVERSE = {
    "grad(grad)": lambda f, x: grad(lambda xx: grad(f)(xx).pow(2).sum())(x),
    "jacrev(jacrev)": lambda f, x: jacrev(jacrev(f))(x),
}


@pytest.mark.parametrize(
    "transform, message",
    [
        ("grad(grad)", "second derivative of the fused layer inside a torch.func transform"),
        # vmap over the second-order node: torch's own error, which names the op
        ("jacrev(jacrev)", "Batching rule not implemented for lstm_ext::layer_double_backward"),
    ],
)
def test_grad_of_grad_inside_torch_func_raises_with_the_fused_backend(transform, message):
    """torch.func's nested transforms cannot run the second-order node (it differentiates the reference with
    torch.autograd inside the transform): with backend="fused" a clear error, never zeros."""
    fused, _ = fused_and_reference("2000")
    x = input_for(fused)[:3, :2]
    with pytest.raises(RuntimeError, match=message):
        NESTED_REVERSE[transform](lambda z: fused(z)[0].pow(2).sum(), x)


@pytest.mark.parametrize("transform", sorted(NESTED_REVERSE))
@pytest.mark.parametrize("name", ["2000", "2000-2layers-bidirectional", "2000-proj", "1997"])
def test_auto_backend_runs_nested_reverse_transforms(name, transform):
    """backend="auto" (the default) takes the reference inside nested grad / jacrev, so a derivative of a
    derivative inside torch.func gives nn.LSTM's (the 2000 cell, same weights) or the reference backend's."""
    fused, _ = fused_and_reference(name)
    auto = MODULES[name][0](D, H, **MODULES[name][1]).double()
    auto.load_state_dict(fused.state_dict())
    peer = peer_of(name, fused)
    x = input_for(fused)[:3, :2]
    got, want = (NESTED_REVERSE[transform](lambda xx, m=m: m(xx)[0].pow(2).sum(), x) for m in (auto, peer))
    torch.testing.assert_close(got, want, **TOL)
    assert got.abs().sum() > 0


def test_auto_backend_keeps_the_fused_op_under_one_reverse_transform():
    """Only nested reverse-mode transforms take the reference: grad, and vmap over grad (per-sample gradients), run
    the fused op; the truncated gradient keeps it even when nested (its second derivative is an error that the
    fused op's node gives, below)."""
    from lstm_ext.functional import _auto_backend

    x = torch.randn(T, B, D, dtype=torch.float64)
    seen = []

    def record(xx, truncate=False):
        seen.append(_auto_backend(xx, truncate))
        return xx.sum()

    record(x)
    grad(record)(x)
    vmap(grad(record))(x)
    grad(lambda xx: grad(record)(xx).sum())(x)
    grad(lambda xx: grad(lambda z: record(z, truncate=True))(xx).sum())(x)
    assert seen == ["fused", "fused", "fused", "reference", "fused"]


def test_nested_reverse_transforms_of_the_truncated_gradient_raise():
    """The 1997 rule's truncated gradient is differentiable once: inside nested torch.func transforms too, under
    backend="auto", the error says so (the reference would differentiate its stop-gradients instead)."""
    from lstm_ext.functional import lstm_layer

    cfg = CellConfig(forget_gate=False, truncate=True)
    gen = torch.Generator().manual_seed(0)
    w_ih, w_hh = (torch.randn(3 * H, n, dtype=torch.float64, generator=gen) for n in (D, H))
    x = torch.randn(3, 2, D, dtype=torch.float64, generator=gen)

    def f(z):
        return lstm_layer(z, w_ih, w_hh, None, None, None, None, cfg, backend="auto")[0].pow(2).sum()

    assert grad(f)(x).abs().sum() > 0  # once: fine
    with pytest.raises(RuntimeError, match=r"truncated gradient \(truncate=True.* is differentiable once"):
        NESTED_REVERSE["grad(grad)"](f, x)


def test_forward_ad_on_the_forward_and_backward_ops_raises():
    """recurrence_forward and recurrence_backward called directly with a dual tensor: an error naming the op, not
    outputs without a tangent."""
    cfg = CellConfig()
    A, U, r0, s0 = make_inputs(cfg, T, B, H)
    y, r_T, s_T, act, s_all = torch.ops.lstm_ext.recurrence_forward(A, U, r0, s0, None, *cfg.op_args())
    with fwAD.dual_level():
        dual_A = fwAD.make_dual(A, torch.randn_like(A))
        with pytest.raises(RuntimeError, match="lstm_ext.recurrence_forward: forward-mode AD"):
            torch.ops.lstm_ext.recurrence_forward(dual_A, U, r0, s0, None, *cfg.op_args())
        dual_dy = fwAD.make_dual(torch.ones_like(y), torch.randn_like(y))
        with pytest.raises(RuntimeError, match="lstm_ext.recurrence_backward: forward-mode AD"):
            torch.ops.lstm_ext.recurrence_backward(dual_dy, r_T, s_T, U, r0, s0, y, act, s_all, None,
                                                   *cfg.op_args())  # fmt: skip
