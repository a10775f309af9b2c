"""The autograd nodes of the two differentiable ops, ``lstm_ext::recurrence`` (RecurrenceBackward) and
``lstm_ext::layer`` (LayerBackward): hand-written C++ nodes (csrc/autograd.h, OpBackward), so what torch's
autograd gives a ``torch::autograd::Function`` for free is held here: the graph is freed after a backward, a saved
tensor changed in place is caught, saved-tensor hooks see the saved tensors, compiled autograd runs the node,
``torch.autograd.grad`` computes only what it is asked for, and forward-mode AD raises instead of dropping the
tangent. Parity of the gradients themselves: test_ops.py and test_layer_op.py.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import lstm_ext
from lstm_ext import ops
from lstm_ext.config import CellConfig

from cases import make_inputs

CFG = CellConfig()
T, B, C, D = 5, 3, 4, 2


def recurrence_inputs():
    """A, U, r0, s0 (float64, requiring grad)."""
    return [t.requires_grad_() for t in make_inputs(CFG, T, B, C)]


def layer_inputs():
    """x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0 (float64, requiring grad)."""
    g = torch.Generator().manual_seed(0)
    G = CFG.gate_rows(C)
    shapes = [(T, B, D), (G, D), (G, C), (G,), (G,), (B, C), (B, C), (B, G)]
    return [torch.randn(*s, generator=g, dtype=torch.float64).mul_(0.5).requires_grad_() for s in shapes]


def run_recurrence(inputs):
    return ops.recurrence(*inputs, CFG)


def run_layer(inputs):
    return ops.layer(*inputs[:7], CFG, None, *inputs[7:])


OPS = {"recurrence": (recurrence_inputs, run_recurrence, "RecurrenceBackward"),
       "layer": (layer_inputs, run_layer, "LayerBackward")}  # fmt: skip
W_HH = {"recurrence": 1, "layer": 2}  # the index of the recurrent weights among the inputs


@pytest.fixture(params=sorted(OPS))
def op(request):
    return request.param


def loss_of(outs):
    """A scalar that reaches every output (y, and both final states) through nodes that save no tensors (sum,
    add): what a test sees of saved tensors is the op's node."""
    return sum(o.sum() for o in outs)


def test_node_name_and_edges(op):
    make, run, name = OPS[op]
    inputs = make()
    outs = run(inputs)
    assert all(o.grad_fn is outs[0].grad_fn for o in outs), "one node for the three outputs"
    node = outs[0].grad_fn
    assert node.name() == name
    assert [fn.variable for fn, _ in node.next_functions] == inputs  # one edge per differentiable input, in order


def test_second_backward_without_retain_graph_raises(op):
    make, run, _ = OPS[op]
    inputs = make()
    loss = loss_of(run(inputs))
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


def test_backward_twice_with_retain_graph_same_grads(op):
    make, run, _ = OPS[op]
    inputs = make()
    loss = loss_of(run(inputs))
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    second = torch.autograd.grad(loss, inputs)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_saved_tensor_changed_in_place_raises(op):
    """The node saves the recurrent weights; changing them in place before the backward is caught (the gradient
    would otherwise use the new values)."""
    make, run, _ = OPS[op]
    inputs = make()
    loss = loss_of(run(inputs))
    with torch.no_grad():
        inputs[W_HH[op]].mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_saved_tensor_hooks_see_the_saved_tensors(op):
    """torch.autograd.graph.saved_tensors_hooks: every saved tensor goes through pack and unpack, and the gradients
    are those without hooks."""
    make, run, _ = OPS[op]
    inputs = make()
    want = torch.autograd.grad(loss_of(run(inputs)), inputs)
    packed, unpacked = [], []

    def pack(t):
        packed.append(t.shape)
        return t.clone()

    def unpack(t):
        unpacked.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss = loss_of(run(inputs))
    got = torch.autograd.grad(loss, inputs)
    assert packed and sorted(map(tuple, packed)) == sorted(map(tuple, unpacked))
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_graph_is_freed_with_its_outputs(op):
    """Dropping the outputs frees the node and what it saved (no reference cycle through the saved output y): each
    saved tensor, packed into a box by a saved-tensor hook, is gone once the outputs are."""

    class Box:
        def __init__(self, t):
            self.t = t

    make, run, _ = OPS[op]
    inputs = make()
    boxes = []

    def pack(t):
        box = Box(t.detach())  # not t: the saved output y itself would hold its node (a cycle of the test's own)
        boxes.append(weakref.ref(box))
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.t):
        outs = run(inputs)
    assert boxes and all(r() is not None for r in boxes)
    del outs
    gc.collect()
    assert all(r() is None for r in boxes)


def test_grad_of_some_inputs_only(op):
    """torch.autograd.grad with a subset of the inputs: those gradients, equal to the full backward's."""
    make, run, _ = OPS[op]
    inputs = make()
    full = torch.autograd.grad(loss_of(run(inputs)), inputs)
    some = torch.autograd.grad(loss_of(run(inputs)), [inputs[0], inputs[W_HH[op]]])
    assert torch.equal(some[0], full[0]) and torch.equal(some[1], full[W_HH[op]])


def test_forward_ad_raises(op):
    """No jvp: a dual input raises, naming the op, instead of giving outputs without a tangent."""
    make, run, _ = OPS[op]
    inputs = [t.detach() for t in make()]
    with fwAD.dual_level():
        dual = [fwAD.make_dual(inputs[0], torch.randn_like(inputs[0]))] + inputs[1:]
        with pytest.raises(RuntimeError, match=f"lstm_ext.{op}: forward-mode AD"):
            run(dual)


def test_forward_ad_raises_in_module():
    m = lstm_ext.LSTM2000(D, C, backend="fused").double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="forward-mode AD"):
        m(fwAD.make_dual(x, torch.randn_like(x)))


def test_compiled_autograd_matches_eager():
    """An eager forward, its backward under compiled autograd (the node's compiled_args and apply_with_saved):
    the eager gradients."""
    from torch._dynamo import compiled_autograd

    torch._dynamo.reset()
    m = lstm_ext.LSTM2000(D, C, backend="fused").double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    y, _ = m(x)
    y.sum().backward()
    want = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    y, _ = m(x)
    with compiled_autograd._enable(torch.compile(backend="eager")):
        y.sum().backward()
    for p, g in zip(m.parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-12)
