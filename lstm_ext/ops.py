"""The custom ops as Python sees them: typed wrappers and fake (meta) kernels. Their autograd is C++
(csrc/autograd.cpp, csrc/layer.cpp).

    recurrence(A, U, r0, s0, config, lengths=None) -> y (T, B, C), r_T (B, R), s_T (B, C)

runs all T steps of one layer and direction in one call of ``torch.ops.lstm_ext.recurrence_forward``;
its gradient is ``torch.ops.lstm_ext.recurrence_backward``.

    layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, config, lengths=None, a0=None) -> y (T, B, C), h_n (B, R), c_n (B, C)

is the same with the input projection inside the op (one autograd node per layer; what the modules call).
Shapes and the config are described in ``lstm_ext.config``; the math is ``lstm_ext.reference.recurrence_ref``.
"""

from __future__ import annotations

import torch

from . import _build  # noqa: F401  (loads the extension)
from .config import CellConfig
from .reference import recurrence_ref

_ops = torch.ops.lstm_ext


@torch.library.register_fake("lstm_ext::recurrence_forward")
def _recurrence_forward_fake(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate):
    T, B, _ = A.shape
    C = s0.shape[-1]
    return (A.new_empty(T, B, C), torch.empty_like(r0), torch.empty_like(s0), torch.empty_like(A), A.new_empty(T, B, C))


@torch.library.register_fake("lstm_ext::recurrence_backward")
def _recurrence_backward_fake(dy, dr_T, ds_T, U, r0, s0, y, act, s_all, lengths, *config):
    return torch.empty_like(act), torch.empty_like(U), torch.empty_like(r0), torch.empty_like(s0)


@torch.library.register_fake("lstm_ext::recurrence")
def _recurrence_fake(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate):
    T, B, _ = A.shape
    return A.new_empty(T, B, s0.shape[-1]), torch.empty_like(r0), torch.empty_like(s0)


def _check_call(op: str, config, **tensors) -> None:
    """What the op's schema cannot say clearly: a config that is not a CellConfig, a required tensor given as None
    (the dispatcher's "tensor does not have a device")."""
    if not isinstance(config, CellConfig):
        raise TypeError(f"lstm_ext.ops.{op}: config must be a lstm_ext.CellConfig, got {type(config).__name__}")
    for name, t in tensors.items():
        if t is None:
            raise TypeError(f"lstm_ext.ops.{op}: {name} must be a tensor, got None")


def recurrence(A, U, r0, s0, config: CellConfig, lengths=None):
    """All T steps of one layer and direction: A (T,B,G), U (G,R), r0 (B,R), s0 (B,C) -> y, r_T, s_T.

    Differentiable in A, U, r0 and s0 (autograd is registered in C++, csrc/autograd.cpp).
    """
    _check_call("recurrence", config, A=A, U=U, r0=r0, s0=s0)
    return _ops.recurrence.default(A, U, r0, s0, lengths, *config.op_args())


@torch.library.register_fake("lstm_ext::layer")
def _layer_fake(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, forget_gate, block_size, feedback, squash, truncate,
                a0=None):
    T, B, _ = x.shape
    C = w_ih.shape[0] // (block_size + (3 if forget_gate else 2)) * block_size
    return x.new_empty(T, B, C), x.new_empty(B, w_hh.shape[1]), x.new_empty(B, C)


def layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, config: CellConfig, lengths=None, a0=None):
    """One layer and direction in one op: the input projection ``A = x w_ih^T + b_ih + b_hh`` and the recurrence.

    x (T,B,D), w_ih (G,D), w_hh (G,R), b_ih/b_hh (G,) or None, h0 (B,R) or None, c0 (B,C) or None (None: zeros),
    a0 (B,G) or None: added to step 0's net input, ``A[0] += a0`` (a projected layer's initial state,
    ``functional._projected_layer``) -> y (T,B,C), h_n, c_n. Differentiable in x, the weights, the biases, h0, c0
    and a0 (csrc/layer.cpp): the layer is one autograd node.
    """
    _check_call("layer", config, x=x, w_ih=w_ih, w_hh=w_hh)
    return _ops.layer.default(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, *config.op_args(), a0)


def _layer_ref(x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, config: CellConfig, lengths):
    """lstm_ext::layer on the reference: the projection (a0 added to step 0), then ``recurrence_ref``."""
    A = x @ w_ih.t()
    for b in (b_ih, b_hh):
        if b is not None:
            A = A + b
    if a0 is not None and A.shape[0] > 0:
        A = torch.cat([A[:1] + a0, A[1:]])
    return recurrence_ref(A, w_hh, h0, c0, config, lengths)


def _layer_double_backward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, lengths, forget_gate, block_size, feedback, squash,
                           truncate, dy, dh_n, dc_n, *gg):
    """lstm_ext::layer_double_backward (schema and meaning: csrc/layer.cpp): the layer's gradients as a function of
    its inputs and output gradients, differentiated once more, on the reference (its autograd, twice). A
    CompositeImplicitAutograd kernel of ATen ops: with grad mode on (a third derivative) the outer graph records it,
    through the inputs' aliases."""
    if torch._C._functorch.maybe_current_level() is not None:
        raise RuntimeError(
            "lstm_ext: a second derivative of the fused layer inside a torch.func transform (grad of grad, jacrev of "
            "grad, vmap of a double backward) is not supported; take it with torch.autograd.grad(..., "
            'create_graph=True), or use backend="auto" (the default: it runs the reference inside nested grad, vjp '
            'or jacrev) or backend="reference"'
        )
    config = CellConfig(forget_gate, block_size, feedback, squash, truncate)
    third_order = torch.is_grad_enabled()  # the caller records this computation (create_graph): keep its graph
    with torch.enable_grad():

        def alias(t):  # differentiable w.r.t. t, and, for a third derivative, connected to t's own graph
            return t.view_as(t) if third_order and t.requires_grad else t.detach().requires_grad_()

        inputs = [None if t is None else alias(t) for t in (x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0)]
        outs_grads = [alias(g) for g in (dy, dh_n, dc_n)]
        present = [i for i, t in enumerate(inputs) if t is not None]
        wrt = [inputs[i] for i in present] + outs_grads
        # only what depends on something: with T = 0, y is a constant (empty) tensor
        outs = [(o, g) for o, g in zip(_layer_ref(*inputs, config, lengths), outs_grads) if o.requires_grad]
        first = torch.autograd.grad([o for o, _ in outs], [inputs[i] for i in present], [g for _, g in outs],
                                    create_graph=True, allow_unused=True, materialize_grads=True)  # fmt: skip
        pairs = [(f, gg[i]) for f, i in zip(first, present) if gg[i] is not None and f.requires_grad]
        second = [torch.zeros_like(t) for t in wrt]
        if pairs:
            second = torch.autograd.grad([f for f, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True,
                                         create_graph=third_order, materialize_grads=True)  # fmt: skip
    result = [x.new_empty(0)] * 8 + list(second[len(present) :])
    for i, t in zip(present, second):
        result[i] = t
    return result


_lib = torch.library.Library("lstm_ext", "IMPL")
_lib.impl("layer_double_backward", _layer_double_backward, "CompositeImplicitAutograd")


@torch.library.register_fake("lstm_ext::paper_train")
def _paper_train_fake(Wh, Wo, Mh, Mo, x, x_index, lengths, targets, target_mask, n_blocks, block_size, forget_gate,
                     output_gate, squash, lr, learn, update_each_step, return_outputs, truncate=True,
                     output="logistic"):
    n, T, O = targets.shape
    y_all = Wh.new_empty(n, T, O) if return_outputs else Wh.new_empty(0)
    return Wh.new_empty(n), Wh.new_empty(n), Wh.new_empty(n), Wh.new_empty(n, O), y_all
