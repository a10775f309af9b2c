"""nn.LSTM drop-ins: ``LSTM2000`` (the forget-gate cell, nn.LSTM's) and ``LSTM1997`` (the original cell).

Both are plain ``nn.Module``s (not ``nn.LSTM`` subclasses, on which Dynamo graph-breaks) that mirror
``torch.nn.LSTM``: the same constructor arguments and validation messages, parameter names and registration
order (``weight_ih_l{k}{_reverse}``, ``weight_hh_…``, ``bias_ih_…``, ``bias_hh_…``, ``weight_hr_…``), init
``U(-1/sqrt(H), 1/sqrt(H))``, ``_flat_weights_names``, ``all_weights``, a no-op ``flatten_parameters()``, and the
same ``forward(input, hx=None) -> (output, (h_n, c_n))`` contract:

- ``input``: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``, unbatched ``(L, H_in)`` (with 2-D ``h0/c0``),
  or a ``PackedSequence`` (the output is then a ``PackedSequence``; ``h_n/c_n`` hold each sequence's last valid
  step, in the caller's batch order);
- ``hx = (h_0, c_0)`` of shapes ``(D*num_layers, N, H_out)`` and ``(D*num_layers, N, hidden_size)``
  (``batch_first`` does not apply to them); ``None`` means zeros;
- ``output``: ``(L, N, D*H_out)`` (forward and reverse halves concatenated), ``h_n/c_n`` indexed
  ``layer*D + direction``; ``dropout`` after every layer but the last, in training mode only.

``LSTM2000`` loads an ``nn.LSTM`` state_dict and gives the same outputs and gradients. ``LSTM1997`` has 3 gates
``(i, g, o)``, so its weights have ``3*hidden_size`` rows and it does *not* load an nn.LSTM checkpoint;
:func:`lstm1997_state_dict_from_nn_lstm` converts one explicitly (dropping the forget gate).

Edge cases (as nn.LSTM): a batch of size 0 is allowed and gives empty outputs of the right shapes (and an empty
backward); a sequence length of 0 raises ``RuntimeError("Expected sequence length to be larger than 0 in RNN")``.
(The functional API, :func:`lstm_ext.functional.lstm_layer`, accepts T = 0 and returns the initial state.)

``backend``: ``"fused"`` (the custom op), ``"reference"`` (the plain-PyTorch loop; slow, exportable), or
``"auto"``: fused where the op has a kernel for the input's device and dtype (CPU: float32/float64; CUDA when
built: also float16/bfloat16), else reference; also reference under forward-mode AD (``torch.func.jvp``,
``jacfwd``, ``hessian``, ``torch.autograd.forward_ad``), which the fused op cannot differentiate, and inside
nested reverse-mode transforms (``grad(grad(...))``, ``jacrev(jacrev(...))``), where its second-order node cannot
run. On the CPU, a float16/bfloat16 module and CPU autocast run the float32 kernels and return the half dtype
(both fused choices). The backward works in eval mode too. Second derivatives (``create_graph=True``) work but
under CUDA autocast: the fused layer's second-order node differentiates the reference (README, "Use").
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from . import functional, ops
from .config import CellConfig

__all__ = ["LSTM1997", "LSTM2000", "convert_nn_lstm", "lstm1997_state_dict_from_nn_lstm"]

_BACKENDS = ("auto", "fused", "reference")


class _LSTMBase(nn.Module):
    """Shared body of LSTM2000 and LSTM1997 (nn.LSTM's RNNBase, for one cell config)."""

    _config: CellConfig
    _gates: int  # gate rows per hidden unit

    __constants__ = [
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "backend",
    ]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        # Validation and messages as torch.nn.RNNBase.
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        # nn.LSTM only checks num_layers > 0 (a float then fails in range()); we name the problem.
        if not isinstance(num_layers, int) or isinstance(num_layers, bool):
            raise TypeError(f"num_layers should be of type int, got: {type(num_layers).__name__}")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend

        num_directions = 2 if bidirectional else 1
        gate_size = self._gates * hidden_size
        real_hidden_size = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input_size = input_size if layer == 0 else real_hidden_size * num_directions
                suffix = "_reverse" if direction == 1 else ""
                params = [
                    ("weight_ih_l{}{}", (gate_size, layer_input_size)),
                    ("weight_hh_l{}{}", (gate_size, real_hidden_size)),
                ]
                if bias:
                    params += [("bias_ih_l{}{}", (gate_size,)), ("bias_hh_l{}{}", (gate_size,))]
                if proj_size > 0:
                    params += [("weight_hr_l{}{}", (proj_size, hidden_size))]
                names = []
                for fmt, shape in params:
                    name = fmt.format(layer, suffix)
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory_kwargs)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        # Per (layer, direction): the names of (w_ih, w_hh, b_ih, b_hh, w_hr), None where absent.
        self._layer_param_names = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                self._layer_param_names.append(
                    (
                        "weight_ih" + sfx,
                        "weight_hh" + sfx,
                        "bias_ih" + sfx if bias else None,
                        "bias_hh" + sfx if bias else None,
                        "weight_hr" + sfx if proj_size > 0 else None,
                    )
                )
        self.reset_parameters()

    # ---- nn.LSTM's parameter API -------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as nn.LSTM."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list:
        return [getattr(self, wn) if hasattr(self, wn) else None for wn in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, weight) for weight in weights] for weights in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op (nn.LSTM uses it to re-pack weights for cuDNN); kept so that existing code runs unchanged."""

    def __prepare_scriptable__(self):
        """torch.jit.script calls this on every module it scripts: the modules are Python, not TorchScript."""
        raise RuntimeError(
            f"{type(self).__name__} cannot be compiled with torch.jit.script; use torch.export.export (dynamic "
            "sequence length and batch size work), torch.compile, or torch.jit.trace"
        )

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        if self.backend != "auto":
            s += ", backend={backend!r}"
        return s.format(**self.__dict__)

    # ---- forward -----------------------------------------------------------------------------------------

    def _check_input(self, input: Tensor, batch_sizes: Tensor | None) -> None:
        w = self._parameters.get("weight_ih_l0")
        if w is None:
            w = self.weight_ih_l0
        if not input.is_floating_point():
            raise ValueError(
                f"{type(self).__name__}: input must be a floating-point tensor, got dtype {input.dtype}"
            )
        if input.dtype != w.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({w.dtype}). "
                f"Convert input: input.to({w.dtype}), or convert model: model.to({input.dtype})"
            )
        if not (input.is_cpu and w.is_cpu) and input.device != w.device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found input tensor at "
                f"{input.device} and parameter tensor at {w.device}"
            )
        expected_input_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_input_dim:
            raise RuntimeError(f"input must have {expected_input_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.size(-1)}"
            )

    def _check_hidden(self, input: Tensor, h0: Tensor, c0: Tensor, mini_batch: int) -> None:
        n = self.num_layers * (2 if self.bidirectional else 1)
        expected_h = (n, mini_batch, self.proj_size if self.proj_size > 0 else self.hidden_size)
        expected_c = (n, mini_batch, self.hidden_size)
        for i, t, expected in ((0, h0, expected_h), (1, c0, expected_c)):
            if t.shape != expected:
                raise RuntimeError(f"Expected hidden[{i}] size {expected}, got {list(t.size())}")
            if not (t.is_cpu and input.is_cpu) and t.device != input.device:
                raise RuntimeError(
                    "Input and hidden tensors are not at the same device, found input tensor at "
                    f"{input.device} and hidden tensor at {t.device}"
                )
            if t.dtype != input.dtype and not torch._C._is_any_autocast_enabled():
                raise ValueError(f"hidden[{i}] dtype ({t.dtype}) does not match input dtype ({input.dtype})")

    @staticmethod
    def _unpack_hx(hx) -> tuple[Tensor, Tensor]:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h_0, c_0) of two tensors")
        return hx[0], hx[1]

    @staticmethod
    def _check_hx_dims(h0: Tensor, c0: Tensor, batched: bool) -> None:
        dim, kind = (3, "batched 3-D") if batched else (2, "unbatched 2-D")
        if h0.dim() != dim or c0.dim() != dim:
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {dim}-D but got ({h0.dim()}-D, {c0.dim()}-D) tensors"
            )

    def forward(self, input, hx=None):
        if (
            type(input) is Tensor
            and self.num_layers == 1
            and not self.bidirectional
            and self.proj_size == 0
            and self.backend != "reference"
            and input.dim() == 3
            and not torch._C._is_any_autocast_enabled()
            # else the general path: its checks, or a half dtype
            and functional._auto_backend(input, self._config.truncate) == "fused"
        ):
            return self._forward_one_fused_layer(input, hx)
        return self._forward(input, hx)

    def _forward_one_fused_layer(self, input: Tensor, hx):
        """forward() of the usual small case in the fewest Python steps: a batched tensor, one layer in one direction
        without a projection, on the fused op, from a zero state or hx (B=1 H=8 T=100: the general path's Python was
        40 % of the module's forward; a decoding step, T=1 with hx, 19.8 us there against 15.4 here). The same
        checks, messages and results as the general path."""
        h0 = c0 = None  # None: a zero initial state
        if hx is not None:
            h0, c0 = self._unpack_hx(hx)
            self._check_hx_dims(h0, c0, batched=True)
        self._check_input(input, None)
        x = input.transpose(0, 1) if self.batch_first else input
        if hx is not None:
            self._check_hidden(x, h0, c0, x.size(1))
            h0, c0 = h0[0], c0[0]
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        params, names = self._parameters, self._layer_param_names[0]
        try:  # the four parameters as registered (0.1 us; the general lookup below takes 0.6)
            w_ih, w_hh, b_ih, b_hh = params[names[0]], params[names[1]], params[names[2]], params[names[3]]
        except KeyError:  # no biases (bias=False), or weights that are not parameters (torch.nn.utils.parametrize)
            w_ih, w_hh, b_ih, b_hh = (
                None if name is None else (params[name] if name in params else getattr(self, name))
                for name in names[:4]
            )
        y, h_n, c_n = ops.layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, self._config)
        return (y.transpose(0, 1) if self.batch_first else y), (h_n[None], c_n[None])

    def _forward(self, input, hx):
        num_directions = 2 if self.bidirectional else 1
        is_packed = isinstance(input, PackedSequence)
        lengths = None
        if is_packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self._check_input(data, batch_sizes)
            # (T, B, H_in) zero-padded, in the packed (sorted, longest first) batch order; lengths: int64 on CPU.
            x, lengths = torch._pad_packed_sequence(data, batch_sizes, False, 0.0, batch_sizes.size(0))
            is_batched = True
            if hx is not None:
                h0, c0 = self._unpack_hx(hx)
                if h0.dim() != 3 or c0.dim() != 3:
                    raise RuntimeError(
                        "For PackedSequence input, hx and cx should be 3-D but got "
                        f"({h0.dim()}-D, {c0.dim()}-D) tensors"
                    )
                self._check_hidden(x, h0, c0, x.size(1))
                if sorted_indices is not None:
                    h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        else:
            if not isinstance(input, Tensor):
                raise TypeError(
                    f"{type(self).__name__}: input must be a Tensor or a PackedSequence, got {type(input).__name__}"
                )
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            if hx is not None:
                h0, c0 = self._unpack_hx(hx)
                self._check_hx_dims(h0, c0, is_batched)
                if not is_batched:
                    h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            self._check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            if hx is not None:
                self._check_hidden(x, h0, c0, x.size(1))
            sorted_indices = unsorted_indices = None

        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        n = self.num_layers * num_directions
        if hx is None:  # a zero initial state, which functional.lstm_layer (or the layer op) makes where needed
            h0s = c0s = (None,) * n
        elif n == 1:
            h0s, c0s = (h0[0],), (c0[0],)
        else:
            h0s, c0s = h0.unbind(0), c0.unbind(0)

        backend = self.backend  # "auto" is resolved per layer by functional.lstm_layer (from A's device/dtype)
        config = self._config
        dropout = self.dropout if self.training else 0.0
        # Parameters straight from _parameters (nn.Module.__getattr__ is slow on the hot path); getattr as the
        # fallback keeps plain-tensor attributes and parametrizations working.
        params = self._parameters
        hs, cs = [], []
        layer_input = x
        idx = 0
        for layer in range(self.num_layers):
            outs = []
            for direction in range(num_directions):
                w = [
                    None if name is None else (params.get(name) if name in params else getattr(self, name))
                    for name in self._layer_param_names[idx]
                ]
                y, h_n, c_n = functional.lstm_layer(
                    layer_input,
                    w[0],
                    w[1],
                    w[2],
                    w[3],
                    h0s[idx],
                    c0s[idx],
                    config,
                    w_hr=w[4],
                    lengths=lengths,
                    reverse=direction == 1,
                    backend=backend,
                )
                outs.append(y)
                hs.append(h_n)
                cs.append(c_n)
                idx += 1
            layer_input = outs[0] if num_directions == 1 else torch.cat(outs, -1)
            if dropout > 0 and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, dropout, True)
        output = layer_input
        if len(hs) == 1:
            h_n, c_n = hs[0].unsqueeze(0), cs[0].unsqueeze(0)
        else:
            h_n, c_n = torch.stack(hs), torch.stack(cs)

        if is_packed:
            out_data, _ = torch._pack_padded_sequence(output, lengths, False)
            if unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
            return PackedSequence(out_data, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)


class LSTM2000(_LSTMBase):
    r"""The LSTM with forget gates (Gers, Schmidhuber & Cummins, 2000): a drop-in for ``torch.nn.LSTM``.

    Same arguments, parameters (gate rows ``(i, f, g, o)``, ``4*hidden_size`` each), state_dict and forward
    contract as ``nn.LSTM``; it loads an ``nn.LSTM`` state_dict and gives the same outputs and gradients.
    Keyword-only ``backend``: ``"auto"`` | ``"fused"`` | ``"reference"``.
    """

    _config = functional.CONFIG_2000
    _gates = 4

    @classmethod
    def from_nn_lstm(cls, lstm: nn.LSTM, *, backend: str = "auto") -> LSTM2000:
        """An ``LSTM2000`` with ``lstm``'s configuration and train/eval mode that holds ``lstm``'s own parameters
        (the same ``nn.Parameter`` objects: an optimizer built on them keeps training the new module). Hooks
        registered on ``lstm`` are not carried over."""
        if not _is_nn_lstm(lstm):
            raise TypeError(f"from_nn_lstm expects a torch.nn.LSTM, got {type(lstm).__name__}")
        if parametrize.is_parametrized(lstm):
            raise ValueError(
                "from_nn_lstm: the nn.LSTM has parametrized weights (torch.nn.utils.parametrize); build an LSTM2000, "
                "load the nn.LSTM's state_dict into it and parametrize that"
            )
        with warnings.catch_warnings():  # nn.LSTM has already warned about its arguments (dropout with one layer)
            warnings.simplefilter("ignore")
            new = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first,
                      float(lstm.dropout), lstm.bidirectional, lstm.proj_size, device="meta", backend=backend)  # fmt: skip
        for name in new._flat_weights_names:  # nn.LSTM's names, in nn.LSTM's order
            setattr(new, name, lstm._parameters[name])
        return new.train(lstm.training)

    def to_nn_lstm(self) -> nn.LSTM:
        """The inverse of :meth:`from_nn_lstm`: a ``torch.nn.LSTM`` with this module's configuration, train/eval mode
        and parameters (the same objects), for tools that need ``nn.LSTM`` itself (ONNX export, which has no
        translation of the fused ops; code that checks ``isinstance(m, nn.LSTM)``)."""
        if parametrize.is_parametrized(self):
            raise ValueError("to_nn_lstm: the parameters are parametrized (torch.nn.utils.parametrize); remove the "
                             "parametrizations first")  # fmt: skip
        with warnings.catch_warnings():  # this module's constructor has already warned about its arguments
            warnings.simplefilter("ignore")
            lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers, self.bias, self.batch_first,
                           self.dropout, self.bidirectional, self.proj_size, device="meta")  # fmt: skip
        for name in self._flat_weights_names:  # nn.LSTM's __setattr__ keeps its _flat_weights in step
            setattr(lstm, name, self._parameters[name])
        lstm.flatten_parameters()  # cuDNN's single weight buffer (the same Parameter objects); a no-op on the CPU
        return lstm.train(self.training)


def _is_nn_lstm(module: nn.Module) -> bool:
    """Whether module is a torch.nn.LSTM: the class itself, or the one torch.nn.utils.parametrize makes of it."""
    return type(module) is nn.LSTM or (parametrize.is_parametrized(module) and type(module).__bases__ == (nn.LSTM,))


def convert_nn_lstm(module: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Replace every ``torch.nn.LSTM`` in ``module`` (``module`` itself included) by ``LSTM2000.from_nn_lstm`` of it,
    in place: the same parameters, outputs and gradients, on the fused kernels. Returns ``module``, or the
    ``LSTM2000`` that replaces it when it is an ``nn.LSTM``. Subclasses of ``nn.LSTM`` are left as they are.

        model = lstm_ext.convert_nn_lstm(model)  # then train or run model as before
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert_nn_lstm expects a torch.nn.Module, got {type(module).__name__}")
    if backend not in _BACKENDS:  # also where the model holds no nn.LSTM
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if _is_nn_lstm(module):
        return LSTM2000.from_nn_lstm(module, backend=backend)
    for name, child in module.named_children():
        new = convert_nn_lstm(child, backend=backend)
        if new is not child:
            setattr(module, name, new)
    return module


class LSTM1997(_LSTMBase):
    r"""The original LSTM (Hochreiter & Schmidhuber, 1997), without forget gates: ``c_t = c_{t-1} + i_t * g_t``.

    The same arguments and forward contract as ``nn.LSTM``, but 3 gates ``(i, g, o)``, so ``weight_ih_l{k}``,
    ``weight_hh_l{k}`` and the biases have ``3*hidden_size`` rows. An ``nn.LSTM`` state_dict does not load as
    is; :func:`lstm1997_state_dict_from_nn_lstm` converts one explicitly.
    Keyword-only ``backend``: ``"auto"`` | ``"fused"`` | ``"reference"``.
    """

    _config = functional.CONFIG_1997
    _gates = 3


def lstm1997_state_dict_from_nn_lstm(state_dict) -> OrderedDict:
    """Convert an ``nn.LSTM`` (or ``LSTM2000``) state_dict for ``LSTM1997`` by dropping the forget-gate rows.

    ``weight_ih_*``, ``weight_hh_*``, ``bias_ih_*`` and ``bias_hh_*`` keep their ``(i, g, o)`` row blocks (rows
    ``[0:H]``, ``[2H:3H]``, ``[3H:4H]``) and lose ``f`` (rows ``[H:2H]``); ``weight_hr_*`` and any other entry
    are copied unchanged. This is a *conversion*, not an equivalence: the 1997 cell has no forget gate
    (it behaves as if ``f = 1``), so the converted model computes a different function unless the original
    forget gate was saturated at 1. It is a starting point for fine-tuning, not a lossless load.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf.startswith(("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l")):
            rows = value.shape[0]
            if rows % 4:
                raise ValueError(
                    f"{key}: expected 4*hidden_size rows (i, f, g, o) as in nn.LSTM, got {rows} rows"
                )
            H = rows // 4
            value = torch.cat((value[:H], value[2 * H :]), 0)
        out[key] = value
    if hasattr(state_dict, "_metadata"):
        out._metadata = state_dict._metadata  # type: ignore[attr-defined]
    return out
