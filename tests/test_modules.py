"""LSTM2000 / LSTM1997 against nn.LSTM, and the functional layer API.

LSTM2000 must load an nn.LSTM state_dict and reproduce outputs, h_n, c_n and every gradient (input, h0, c0,
all parameters); LSTM1997 has no nn.LSTM twin, so its fused backend is held to its reference backend (and, with
a saturated forget gate, to nn.LSTM). Constructor and input errors must match nn.LSTM's where nn.LSTM has a
clear one, and name the problem where it has not.
"""

from __future__ import annotations

import copy
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from lstm_ext import LSTM1997, LSTM2000, functional, lstm1997_state_dict_from_nn_lstm

from cases import tolerances

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

F64 = dict(rtol=1e-10, atol=1e-12)
D_IN, HIDDEN, T_LEN, BATCH = 4, 5, 7, 4

INPUT_KINDS = ["padded", "packed_sorted", "packed_unsorted", "unbatched"]


# ---- helpers ---------------------------------------------------------------------------------------------


def make_models(cls=LSTM2000, *, dtype=torch.float64, backend="auto", seed=0, **kw):
    """An nn.LSTM and a `cls` with the nn.LSTM's state_dict (LSTM2000), both in `dtype`."""
    torch.manual_seed(seed)
    ref = nn.LSTM(D_IN, HIDDEN, **kw).to(dtype)
    ours = cls(D_IN, HIDDEN, backend=backend, **kw).to(dtype)
    if cls is LSTM2000:
        ours.load_state_dict(ref.state_dict())
    return ref, ours


def make_inputs(kind, *, batch_first, num_layers, bidirectional, proj_size, dtype, seed=1, with_hx=True):
    """Leaf tensors (x, h0, c0) and a builder of the module input from them."""
    g = torch.Generator().manual_seed(seed)
    D = 2 if bidirectional else 1
    H_out = proj_size or HIDDEN
    unbatched = kind == "unbatched"
    B = 1 if unbatched else BATCH
    if unbatched:
        x = torch.randn(T_LEN, D_IN, generator=g, dtype=dtype)
        h0 = torch.randn(num_layers * D, H_out, generator=g, dtype=dtype)
        c0 = torch.randn(num_layers * D, HIDDEN, generator=g, dtype=dtype)
    else:
        shape = (B, T_LEN, D_IN) if batch_first else (T_LEN, B, D_IN)
        x = torch.randn(*shape, generator=g, dtype=dtype)
        h0 = torch.randn(num_layers * D, B, H_out, generator=g, dtype=dtype)
        c0 = torch.randn(num_layers * D, B, HIDDEN, generator=g, dtype=dtype)
    leaves = [t.requires_grad_() for t in (x, h0, c0)]
    if kind == "packed_sorted":
        lengths = torch.tensor([T_LEN, T_LEN - 1, 3, 1])
        build_x = lambda: pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=True)  # noqa: E731
    elif kind == "packed_unsorted":
        lengths = torch.tensor([2, T_LEN, 1, 5])
        build_x = lambda: pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)  # noqa: E731
    else:
        build_x = lambda: x  # noqa: E731
    hx = (h0, c0) if with_hx else None
    return leaves, build_x, hx


def weighted_loss(out, h_n, c_n, seed=2):
    """A loss that gives every output element its own gradient."""
    data = out.data if isinstance(out, PackedSequence) else out
    g = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in (data, h_n, c_n))


def assert_same_results(got, want, inputs, got_wrt, want_wrt):
    """got(*inputs) and want(*inputs) agree (F64) on out, h_n, c_n and on the gradients of weighted_loss with
    respect to got_wrt and want_wrt."""
    results = []
    for model, wrt in ((got, got_wrt), (want, want_wrt)):
        out, (h_n, c_n) = model(*inputs)
        results.append([out, h_n, c_n, *torch.autograd.grad(weighted_loss(out, h_n, c_n), wrt)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **F64)


def run_and_grad(model, leaves, build_x, hx):
    out, (h_n, c_n) = model(build_x(), hx)
    params = [p for _, p in model.named_parameters()]
    wrt = [t for t in leaves if t.requires_grad] + params
    grads = torch.autograd.grad(weighted_loss(out, h_n, c_n), wrt, allow_unused=False)
    return out, h_n, c_n, grads


def assert_same(a, b, **tol):
    if isinstance(a, PackedSequence):
        assert isinstance(b, PackedSequence)
        torch.testing.assert_close(a.data, b.data, **tol)
        assert torch.equal(a.batch_sizes, b.batch_sizes)
        for ia, ib in ((a.sorted_indices, b.sorted_indices), (a.unsorted_indices, b.unsorted_indices)):
            assert (ia is None and ib is None) or torch.equal(ia, ib)
    else:
        torch.testing.assert_close(a, b, **tol)


def compare(ref, ours, kind, *, batch_first, num_layers, bidirectional, proj_size, dtype, tol, with_hx=True):
    kw = dict(batch_first=batch_first, num_layers=num_layers, bidirectional=bidirectional, proj_size=proj_size)
    leaves_r, build_r, hx_r = make_inputs(kind, dtype=dtype, with_hx=with_hx, **kw)
    leaves_o, build_o, hx_o = make_inputs(kind, dtype=dtype, with_hx=with_hx, **kw)
    if not with_hx:
        leaves_r, leaves_o = leaves_r[:1], leaves_o[:1]
    out_r, h_r, c_r, g_r = run_and_grad(ref, leaves_r, build_r, hx_r)
    out_o, h_o, c_o, g_o = run_and_grad(ours, leaves_o, build_o, hx_o)
    assert type(out_r) is type(out_o)
    assert_same(out_r, out_o, **tol)
    assert h_r.shape == h_o.shape and c_r.shape == c_o.shape
    torch.testing.assert_close(h_o, h_r, **tol)
    torch.testing.assert_close(c_o, c_r, **tol)
    names = ["input", "h0", "c0"][: len(leaves_r)] + [n for n, _ in ours.named_parameters()]
    assert len(g_r) == len(g_o) == len(names)
    for name, gr, go in zip(names, g_r, g_o):
        torch.testing.assert_close(go, gr, **tol, msg=lambda m, name=name: f"gradient of {name}: {m}")


# ---- LSTM2000 == nn.LSTM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm2000_matches_nn_lstm_float64(num_layers, bidirectional, batch_first, proj_size, kind, backend):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, proj_size=proj_size)
    ref, ours = make_models(dtype=torch.float64, backend=backend, **kw)
    compare(ref, ours, kind, dtype=torch.float64, tol=F64, **kw)


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm2000_matches_nn_lstm_float32(bidirectional, proj_size, kind):
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=False, proj_size=proj_size)
    ref, ours = make_models(dtype=torch.float32, **kw)
    compare(ref, ours, kind, dtype=torch.float32, tol={}, **kw)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("proj_size", [0, 3])
def test_lstm2000_matches_nn_lstm_without_autograd(proj_size, kind, mode):
    """Inference (the op's forward that keeps no workspace) through every module path: layers, directions,
    projection, packed and unbatched input."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=False, proj_size=proj_size)
    ref, ours = make_models(dtype=torch.float64, **kw)
    _, build, hx = make_inputs(kind, dtype=torch.float64, **kw)
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        out_r, (h_r, c_r) = ref(build(), hx)
        out_o, (h_o, c_o) = ours(build(), hx)
    assert_same(out_r, out_o, **F64)
    torch.testing.assert_close(h_o, h_r, **F64)
    torch.testing.assert_close(c_o, c_r, **F64)


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("proj_size", [0, 3])
def test_hx_none_is_zeros(kind, proj_size):
    kw = dict(num_layers=2, bidirectional=True, batch_first=False, proj_size=proj_size)
    ref, ours = make_models(**kw)
    compare(ref, ours, kind, dtype=torch.float64, tol=F64, with_hx=False, **kw)
    # and None gives what explicit zeros give: exactly, where both run the layer op as one call; with proj_size, a
    # given h0 runs step 0 as a call of its own (functional._projected_layer), another rounding of the same sums
    (x, h0, c0), build_x, _ = make_inputs(kind, dtype=torch.float64, **kw)
    zeros = (torch.zeros_like(h0), torch.zeros_like(c0))
    out_none, (h_none, c_none) = ours(build_x(), None)
    out_zero, (h_zero, c_zero) = ours(build_x(), zeros)
    tol = F64 if proj_size else dict(rtol=0, atol=0)
    assert_same(out_none, out_zero, **tol)
    torch.testing.assert_close(h_none, h_zero, **tol)
    torch.testing.assert_close(c_none, c_zero, **tol)


def test_default_init_matches_nn_lstm():
    for kw in [dict(), dict(num_layers=2, bidirectional=True, proj_size=2, bias=False)]:
        torch.manual_seed(123)
        ref = nn.LSTM(D_IN, HIDDEN, **kw)
        torch.manual_seed(123)
        ours = LSTM2000(D_IN, HIDDEN, **kw)
        for (n_r, p_r), (n_o, p_o) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
            assert n_r == n_o and torch.equal(p_r, p_o)
    bound = 1 / HIDDEN**0.5
    for p in LSTM1997(D_IN, HIDDEN, num_layers=2, proj_size=2).parameters():
        assert p.abs().max() <= bound and p.abs().max() > bound / 2


def test_nn_lstm_state_dict_roundtrip():
    ref, ours = make_models(num_layers=2, bidirectional=True, proj_size=3)
    ref2 = nn.LSTM(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=3).double()
    ref2.load_state_dict(ours.state_dict())
    for (n_a, a), (n_b, b) in zip(ref.state_dict().items(), ref2.state_dict().items(), strict=True):
        assert n_a == n_b and torch.equal(a, b)


# ---- dropout, train/eval, backward in eval ---------------------------------------------------------------


def test_dropout_zero_equals_no_dropout_in_training():
    kw = dict(num_layers=3, bidirectional=True, batch_first=False, proj_size=0)
    ref, ours = make_models(dropout=0.0, **kw)
    ref.train(), ours.train()
    compare(ref, ours, "padded", dtype=torch.float64, tol=F64, **kw)


@pytest.mark.parametrize("kind", ["padded", "packed_unsorted"])
def test_eval_mode_ignores_dropout(kind):
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=0)
    ref, ours = make_models(dropout=0.7, **kw)
    ref.eval(), ours.eval()
    compare(ref, ours, kind, dtype=torch.float64, tol=F64, **kw)  # backward in eval mode, too


def test_dropout_acts_in_training_mode_only():
    _, ours = make_models(num_layers=2, dropout=0.5)
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64)
    ours.eval()
    a, _ = ours(x)
    b, _ = ours(x)
    assert torch.equal(a, b)
    ours.train()
    torch.manual_seed(0)
    c, _ = ours(x)
    torch.manual_seed(1)
    d, _ = ours(x)
    assert not torch.allclose(c, a) and not torch.allclose(c, d)
    # the last layer's output is not dropped: with dropout=1 layer 2 sees zeros, so its output is the same
    # for every input
    _, ours1 = make_models(num_layers=2, dropout=1.0)
    ours1.train()
    e, _ = ours1(x)
    f, _ = ours1(torch.randn_like(x))
    torch.testing.assert_close(e, f, rtol=0, atol=0)
    # a single layer never drops anything (and warns at construction, like nn.LSTM)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        one = LSTM2000(D_IN, HIDDEN, dropout=0.5).double()
    one.train()
    g, _ = one(x)
    one.eval()
    h, _ = one(x)
    assert torch.equal(g, h)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_backward_in_eval_mode(cls):
    _, ours = make_models(cls, num_layers=2, bidirectional=True, proj_size=2, backend="fused")
    ours.eval()
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64, requires_grad=True)
    out, (h, c) = ours(x)
    (out.sum() + h.sum() + c.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---- parameters, repr, attributes ------------------------------------------------------------------------

CONFIGS = [
    dict(),
    dict(num_layers=3),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=2),
    dict(num_layers=2, bias=False, proj_size=3),
    dict(batch_first=True, dropout=0.25, num_layers=2),
]


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_parameter_names_shapes_and_api(kw):
    ref = nn.LSTM(D_IN, HIDDEN, **kw)
    ours = LSTM2000(D_IN, HIDDEN, **kw)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert ours._flat_weights_names == ref._flat_weights_names
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters(), strict=True))
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.extra_repr() == ref.extra_repr()
    assert repr(ours) == repr(ref).replace("LSTM(", "LSTM2000(", 1)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size"):
        assert getattr(ours, attr) == getattr(ref, attr)
    assert ours.flatten_parameters() is None
    assert not isinstance(ours, nn.LSTM) and not isinstance(ours, nn.RNNBase)


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_lstm1997_parameters_have_three_gates(kw):
    ref = nn.LSTM(D_IN, HIDDEN, **kw)
    ours = LSTM1997(D_IN, HIDDEN, **kw)
    expected = []
    for n, p in ref.named_parameters():
        shape = list(p.shape)
        if not n.startswith("weight_hr"):
            shape[0] = 3 * HIDDEN
        expected.append((n, torch.Size(shape)))
    assert [(n, p.shape) for n, p in ours.named_parameters()] == expected
    assert ours._flat_weights_names == ref._flat_weights_names
    with pytest.raises(RuntimeError, match="size mismatch"):
        ours.load_state_dict(ref.state_dict())


def test_repr_shows_non_default_backend():
    assert repr(LSTM2000(3, 4, backend="reference")) == "LSTM2000(3, 4, backend='reference')"
    assert repr(LSTM1997(3, 4, num_layers=2)) == "LSTM1997(3, 4, num_layers=2)"


def test_module_utilities():
    _, ours = make_models(num_layers=2, bidirectional=True, proj_size=2)
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64)
    out, _ = ours(x)
    # deepcopy, dtype conversion
    out_copy, _ = copy.deepcopy(ours)(x)
    assert torch.equal(out, out_copy)
    out32, _ = copy.deepcopy(ours).float()(x.float())
    torch.testing.assert_close(out32, out.float())
    # torch.func.functional_call sees swapped parameters
    params = {n: torch.zeros_like(p) for n, p in ours.named_parameters()}
    out_zero, (h, c) = torch.func.functional_call(ours, params, (x,))
    assert out_zero.abs().max() == 0 and h.abs().max() == 0 and c.abs().max() == 0
    # assigning a parameter (as nn.LSTM users do) is picked up by all_weights and forward
    with torch.no_grad():
        ours.weight_ih_l0 = nn.Parameter(torch.zeros_like(ours.weight_ih_l0))
    assert ours.all_weights[0][0] is ours.weight_ih_l0
    assert not torch.equal(ours(x)[0], out)


# ---- constructor validation ------------------------------------------------------------------------------

BAD_CONSTRUCTOR_ARGS = [
    dict(dropout=-0.1),
    dict(dropout=1.5),
    dict(dropout=True),
    dict(dropout="0.5"),
    dict(bias=1),
    dict(batch_first=1),
    dict(input_size=2.0),
    dict(input_size=0),
    dict(hidden_size=5.0),
    dict(hidden_size=0),
    dict(hidden_size=-3),
    dict(num_layers=0),
    dict(proj_size=-1),
    dict(proj_size=5),
    dict(proj_size=7),
]


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("bad", BAD_CONSTRUCTOR_ARGS, ids=str)
def test_constructor_validation_matches_nn_lstm(cls, bad):
    kw = dict(input_size=D_IN, hidden_size=HIDDEN)
    kw.update(bad)
    with pytest.raises(Exception) as ref_err:
        nn.LSTM(**kw)
    with pytest.raises(ref_err.type, match=re.escape(str(ref_err.value))):
        cls(**kw)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_constructor_validation_extra(cls):
    with pytest.raises(TypeError, match="num_layers should be of type int, got: float"):
        cls(D_IN, HIDDEN, num_layers=1.5)
    with pytest.raises(ValueError, match="backend must be one of"):
        cls(D_IN, HIDDEN, backend="cudnn")
    with pytest.warns(UserWarning, match=re.escape("got dropout=0.3 and num_layers=1")):
        cls(D_IN, HIDDEN, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(D_IN, HIDDEN, dropout=0.3, num_layers=2)
        cls(D_IN, HIDDEN, dropout=0, num_layers=1)


def test_constructor_device_dtype():
    m = LSTM1997(D_IN, HIDDEN, proj_size=2, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in m.parameters())
    m = LSTM2000(D_IN, HIDDEN, device="meta")
    assert all(p.is_meta for p in m.parameters())


# ---- bad inputs ------------------------------------------------------------------------------------------


def _bad_input_cases():
    x = torch.randn(T_LEN, BATCH, D_IN)
    h = torch.zeros(1, BATCH, HIDDEN)
    c = torch.zeros(1, BATCH, HIDDEN)
    packed = pack_padded_sequence(x, torch.tensor([7, 5, 5, 2]))
    return [
        ("rank4", (torch.randn(2, 3, 4, D_IN), None), ValueError, "LSTM: Expected input to be 2D or 3D, got 4D instead"),
        ("rank1", (torch.randn(D_IN), None), ValueError, "LSTM: Expected input to be 2D or 3D, got 1D instead"),
        ("features", (torch.randn(T_LEN, BATCH, D_IN + 1), None), RuntimeError,
         "input.size(-1) must be equal to input_size. Expected 4, got 5"),
        ("h0 shape", (x, (torch.zeros(1, BATCH + 1, HIDDEN), c)), RuntimeError,
         "Expected hidden[0] size (1, 4, 5), got [1, 5, 5]"),
        ("c0 shape", (x, (h, torch.zeros(2, BATCH, HIDDEN))), RuntimeError,
         "Expected hidden[1] size (1, 4, 5), got [2, 4, 5]"),
        ("hx 2-D for batched", (x, (h[0], c[0])), RuntimeError,
         "For batched 3-D input, hx and cx should also be 3-D but got (2-D, 2-D) tensors"),
        ("hx 3-D for unbatched", (x[:, 0], (h[:, :1], c[:, :1])), RuntimeError,
         "For unbatched 2-D input, hx and cx should also be 2-D but got (3-D, 3-D) tensors"),
        ("dtype", (x.double(), None), ValueError,
         "RNN input dtype (torch.float64) does not match weight dtype (torch.float32). Convert input: "
         "input.to(torch.float32), or convert model: model.to(torch.float64)"),
        ("integer input", (x.long(), None), ValueError, "input must be a floating-point tensor, got dtype torch.int64"),
        ("input device", (x.to("meta"), None), RuntimeError,
         "Input and parameter tensors are not at the same device, found input tensor at meta and parameter "
         "tensor at cpu"),
        ("hidden device", (x, (h.to("meta"), c)), RuntimeError,
         "Input and hidden tensors are not at the same device, found input tensor at cpu and hidden tensor at meta"),
        ("hidden dtype", (x, (h, c.double())), ValueError,
         "hidden[1] dtype (torch.float64) does not match input dtype (torch.float32)"),
        ("hx not a pair", (x, h), TypeError, "hx must be a tuple (h_0, c_0)"),
        ("input type", (x.numpy(), None), TypeError, "input must be a Tensor or a PackedSequence, got ndarray"),
        ("packed h0 batch", (packed, (torch.zeros(1, BATCH - 1, HIDDEN), c)), RuntimeError,
         "Expected hidden[0] size (1, 4, 5), got [1, 3, 5]"),
        ("packed hx 2-D", (packed, (h[0], c[0])), RuntimeError,
         "For PackedSequence input, hx and cx should be 3-D but got (2-D, 2-D) tensors"),
        ("packed features", (pack_padded_sequence(torch.randn(T_LEN, BATCH, 2), torch.tensor([7, 5, 5, 2])), None),
         RuntimeError, "input.size(-1) must be equal to input_size. Expected 4, got 2"),
        ("sequence length 0", (torch.randn(0, BATCH, D_IN), None), RuntimeError,
         "Expected sequence length to be larger than 0 in RNN"),
        ("unbatched sequence length 0", (torch.randn(0, D_IN), None), RuntimeError,
         "Expected sequence length to be larger than 0 in RNN"),
    ]


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("case", _bad_input_cases(), ids=lambda c: c[0])
def test_bad_input_raises(cls, case):
    _, (inp, hx), exc, msg = case
    model = cls(D_IN, HIDDEN)
    with pytest.raises(exc, match=re.escape(msg)):
        model(inp, hx)


@pytest.mark.parametrize(
    "name", ["rank4", "rank1", "features", "h0 shape", "c0 shape", "hx 2-D for batched", "hx 3-D for unbatched",
             "dtype", "input device", "hidden device", "sequence length 0", "unbatched sequence length 0"]
)
def test_bad_input_messages_are_nn_lstms(name):
    """Where nn.LSTM has a clear message, ours is the same."""
    (_, (inp, hx), exc, msg), = [c for c in _bad_input_cases() if c[0] == name]
    with pytest.raises(exc, match=re.escape(msg)):
        nn.LSTM(D_IN, HIDDEN)(inp, hx)


# ---- edge sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_batch_size_zero(batch_first, backend):
    """Batch 0 works as in nn.LSTM: empty outputs of the right shapes and an empty backward."""
    kw = dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=batch_first)
    ref, ours = make_models(backend=backend, **kw)
    shape = (0, T_LEN, D_IN) if batch_first else (T_LEN, 0, D_IN)
    for hx in (None, (torch.zeros(4, 0, 3, dtype=torch.float64), torch.zeros(4, 0, HIDDEN, dtype=torch.float64))):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        out_r, (h_r, c_r) = ref(x, hx)
        out_o, (h_o, c_o) = ours(x, hx)
        assert out_o.shape == out_r.shape and h_o.shape == h_r.shape and c_o.shape == c_r.shape
        (out_o.sum() + h_o.sum() + c_o.sum()).backward()
        assert x.grad.shape == x.shape


# ---- LSTM1997 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm1997_fused_matches_reference(num_layers, bidirectional, proj_size, kind):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=True, proj_size=proj_size)
    torch.manual_seed(0)
    fused = LSTM1997(D_IN, HIDDEN, backend="fused", **kw).double()
    ref = LSTM1997(D_IN, HIDDEN, backend="reference", **kw).double()
    ref.load_state_dict(fused.state_dict())
    compare(ref, fused, kind, dtype=torch.float64, tol=F64, **kw)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("kind", ["padded", "packed_unsorted"])
def test_lstm1997_equals_nn_lstm_with_saturated_forget_gate(kind, backend):
    """With f = sigmoid(1000) = 1 exactly, nn.LSTM computes the 1997 cell: a check independent of our kernels."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=False, proj_size=3)
    ref, ours = make_models(LSTM1997, backend=backend, **kw)
    H = HIDDEN
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("weight_ih") or name.startswith("weight_hh"):
                p[H : 2 * H] = 0
            elif name.startswith("bias_ih"):
                p[H : 2 * H] = 1000.0
            elif name.startswith("bias_hh"):
                p[H : 2 * H] = 0
    ours.load_state_dict(lstm1997_state_dict_from_nn_lstm(ref.state_dict()))
    leaves_r, build_r, hx_r = make_inputs(kind, dtype=torch.float64, **kw)
    leaves_o, build_o, hx_o = make_inputs(kind, dtype=torch.float64, **kw)
    out_r, h_r, c_r, g_r = run_and_grad(ref, leaves_r, build_r, hx_r)
    out_o, h_o, c_o, g_o = run_and_grad(ours, leaves_o, build_o, hx_o)
    assert_same(out_r, out_o, **F64)
    torch.testing.assert_close(h_o, h_r, **F64)
    torch.testing.assert_close(c_o, c_r, **F64)
    for a, b in zip(g_o[:3], g_r[:3]):  # input, h0, c0
        torch.testing.assert_close(a, b, **F64)
    names = [n for n, _ in ours.named_parameters()]
    converted = lstm1997_state_dict_from_nn_lstm(dict(zip(names, g_r[3:])))  # nn.LSTM's grads without f rows
    for name, a in zip(names, g_o[3:]):
        torch.testing.assert_close(a, converted[name], **F64, msg=lambda m, name=name: f"{name}: {m}")


def test_lstm1997_state_dict_conversion():
    ref = nn.LSTM(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=2)
    sd = lstm1997_state_dict_from_nn_lstm(ref.state_dict())
    H = HIDDEN
    w = ref.weight_ih_l1_reverse.detach()
    assert torch.equal(sd["weight_ih_l1_reverse"], torch.cat([w[:H], w[2 * H : 3 * H], w[3 * H :]]))
    assert torch.equal(sd["weight_hr_l0"], ref.weight_hr_l0.detach())
    m = LSTM1997(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=2)
    m.load_state_dict(sd)  # strict
    # keys with a module prefix (a submodule's state_dict inside a bigger model) are converted too
    sd2 = lstm1997_state_dict_from_nn_lstm({"encoder.rnn." + k: v for k, v in ref.state_dict().items()})
    assert sd2["encoder.rnn.bias_hh_l0"].shape == (3 * H,)
    with pytest.raises(ValueError, match="expected 4\\*hidden_size rows"):
        lstm1997_state_dict_from_nn_lstm({"weight_ih_l0": torch.zeros(3 * H, D_IN)})


def test_lstm1997_is_not_lstm2000():
    """Sanity: the 1997 cell ignores no rows and differs from the 2000 cell on the same (i, g, o) weights."""
    torch.manual_seed(0)
    m2000 = LSTM2000(D_IN, HIDDEN).double()
    m1997 = LSTM1997(D_IN, HIDDEN).double()
    m1997.load_state_dict(lstm1997_state_dict_from_nn_lstm(m2000.state_dict()))
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64)
    assert not torch.allclose(m1997(x)[0], m2000(x)[0])


# ---- auto backend ----------------------------------------------------------------------------------------


def test_auto_backend_selection():
    assert functional.fused_supports(torch.device("cpu"), torch.float32)
    assert functional.fused_supports(torch.device("cpu"), torch.float64)
    assert not functional.fused_supports(torch.device("cpu"), torch.bfloat16)
    assert not functional.fused_supports(torch.device("meta"), torch.float32)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["auto", "fused"])
@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True, proj_size=3, batch_first=True)])
def test_cpu_half_dtypes_run_the_fused_kernels_in_float32(cls, dtype, backend, kw):
    """A float16/bfloat16 layer on the CPU (no half kernel there) runs the float32 kernels and casts its outputs:
    its outputs are the float32 twin's cast to the half dtype, and its parameters' gradients the twin's cast, bit for
    bit (one layer: between layers the half module rounds its activations, the twin does not)."""
    torch.manual_seed(0)
    half = cls(D_IN, HIDDEN, backend=backend, dtype=dtype, **kw)
    twin = copy.deepcopy(half).float()
    x = torch.randn(BATCH, T_LEN, D_IN) if kw else torch.randn(T_LEN, BATCH, D_IN)
    out_h, (h_h, c_h) = half(x.to(dtype))
    out_f, (h_f, c_f) = twin(x.to(dtype).float())
    for a, b in ((out_h, out_f), (h_h, h_f), (c_h, c_f)):
        assert a.dtype == dtype and torch.equal(a, b.to(dtype))
    # the same upstream gradients: the half outputs' backward casts them to float32 after rounding them to `dtype`
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g).to(dtype).float() for t in (out_h, h_h, c_h)]
    sum(((t.float() * w).sum() for t, w in zip((out_h, h_h, c_h), weights))).backward()
    sum(((t * w).sum() for t, w in zip((out_f, h_f, c_f), weights))).backward()
    for (name, p_h), p_f in zip(half.named_parameters(), twin.parameters()):
        assert p_h.grad.dtype == dtype and torch.equal(p_h.grad, p_f.grad.to(dtype)), name


def test_cpu_half_input_with_float32_weights_raises():
    """The float32 detour of half dtypes is taken only when every tensor has x's dtype; a mismatch is reported."""
    x = torch.randn(5, 2, 3, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="w_ih must have x's dtype BFloat16, got Float"):
        functional.lstm2000(x, torch.randn(20, 3), torch.randn(20, 5), None, None, None, None, backend="fused")


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_half_dtypes_are_more_accurate_than_the_half_reference(cls, dtype):
    """Against float64, a half-precision module on the fused path (float32 inside) errs less than the reference loop
    run in the half dtype (what backend="auto" ran before), over two layers and both directions."""
    torch.manual_seed(0)
    fused = cls(8, 16, num_layers=2, bidirectional=True, dtype=dtype)
    ref = copy.deepcopy(fused)
    ref.backend = "reference"
    exact = copy.deepcopy(ref).double()  # the same (rounded) weights
    x_h = torch.randn(50, 4, 8).to(dtype)
    want = exact(x_h.double())[0]

    def error(model):
        out = model(x_h)[0]
        assert out.dtype == dtype
        return (out.double() - want).abs().max().item()

    assert error(fused) <= error(ref)


def test_meta_device_shapes():
    m = LSTM2000(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=2, device="meta")
    out, (h, c) = m(torch.empty(T_LEN, BATCH, D_IN, device="meta"))
    assert out.shape == (T_LEN, BATCH, 4) and h.shape == (4, BATCH, 2) and c.shape == (4, BATCH, HIDDEN)


# ---- functional ------------------------------------------------------------------------------------------


def _per_row_nn_lstm(x, w, h0, c0, lengths, reverse):
    """Oracle for lstm_layer with lengths: nn.LSTM on each row's valid prefix separately."""
    w_ih, w_hh, b_ih, b_hh, w_hr = w
    T, B, _ = x.shape
    H = w_hh.shape[0] // 4
    P = w_hr.shape[0] if w_hr is not None else 0
    cell = nn.LSTM(x.shape[2], H, proj_size=P).double()
    params = dict(weight_ih_l0=w_ih, weight_hh_l0=w_hh, bias_ih_l0=b_ih, bias_hh_l0=b_hh)
    if w_hr is not None:
        params["weight_hr_l0"] = w_hr
    ys, hs, cs = [], [], []
    for b in range(B):
        L = int(lengths[b])
        y = x.new_zeros(T, P or H)
        if L == 0:
            h, c = h0[b], c0[b]
        else:
            xb = x[:L, b]
            xb = xb.flip(0) if reverse else xb
            yb, (h, c) = torch.func.functional_call(cell, params, (xb, (h0[b : b + 1], c0[b : b + 1])))
            yb = yb.flip(0) if reverse else yb
            y = torch.cat([yb, y[L:]])
            h, c = h[0], c[0]
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)


@pytest.mark.parametrize("backend", ["fused", "reference", "auto"])
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("initial_state", ["given", "none"])
def test_functional_lstm2000_matches_nn_lstm(initial_state, proj_size, reverse, use_lengths, backend):
    """Outputs and every gradient against nn.LSTM run row by row. With proj_size the fused backend runs the layer op
    with U = w_hh w_hr from r0 = 0, a given h0 through step 0 as a call of its own (functional._projected_layer);
    the reference folds h0 into the first step."""
    torch.manual_seed(0)
    T, B, D, H = 6, 5, 3, 4
    P = proj_size
    H_out = P or H
    dt = dict(dtype=torch.float64)
    x = torch.randn(T, B, D, **dt, requires_grad=True)
    w = [torch.randn(4 * H, D, **dt), torch.randn(4 * H, H_out, **dt), torch.randn(4 * H, **dt),
         torch.randn(4 * H, **dt), torch.randn(P, H, **dt) if P else None]
    w = [t.mul_(0.5).requires_grad_() if t is not None else None for t in w]
    given = initial_state == "given"
    h0 = torch.randn(B, H_out, **dt, requires_grad=True) if given else torch.zeros(B, H_out, **dt)
    c0 = torch.randn(B, H, **dt, requires_grad=True) if given else torch.zeros(B, H, **dt)
    lengths = torch.tensor([6, 0, 3, 1, 5]) if use_lengths else torch.full((B,), T)
    got = functional.lstm2000(x, *w[:4], h0 if given else None, c0 if given else None, w_hr=w[4],
                              lengths=lengths if use_lengths else None, reverse=reverse, backend=backend)
    want = _per_row_nn_lstm(x, w, h0, c0, lengths, reverse)
    wrt = [x] + ([h0, c0] if given else []) + [t for t in w if t is not None]
    g = torch.Generator().manual_seed(5)
    coeffs = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in want]
    grads_got = torch.autograd.grad(sum((a * k).sum() for a, k in zip(got, coeffs)), wrt)
    grads_want = torch.autograd.grad(sum((a * k).sum() for a, k in zip(want, coeffs)), wrt)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **F64)
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_functional_sequence_length_zero_returns_initial_state(proj_size, backend):
    T, B, D, H = 0, 3, 2, 4
    H_out = proj_size or H
    x = torch.randn(T, B, D, dtype=torch.float64)
    h0 = torch.randn(B, H_out, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)
    w_hr = torch.randn(proj_size, H, dtype=torch.float64) if proj_size else None
    y, h, c = functional.lstm1997(x, torch.randn(3 * H, D, dtype=torch.float64),
                                  torch.randn(3 * H, H_out, dtype=torch.float64), None, None, h0, c0,
                                  w_hr=w_hr, backend=backend)
    assert y.shape == (0, B, H_out)
    assert torch.equal(h, h0) and torch.equal(c, c0)
    y, h, c = functional.lstm1997(x, torch.randn(3 * H, D, dtype=torch.float64),
                                  torch.randn(3 * H, H_out, dtype=torch.float64), None, None, None, None,
                                  w_hr=w_hr, backend=backend)
    assert y.shape == (0, B, H_out)
    assert torch.equal(h, torch.zeros_like(h0)) and torch.equal(c, torch.zeros_like(c0))


def test_functional_defaults_and_single_bias():
    torch.manual_seed(0)
    T, B, D, H = 5, 2, 3, 4
    x = torch.randn(T, B, D, dtype=torch.float64)
    w_ih, w_hh, b = (torch.randn(4 * H, D, dtype=torch.float64), torch.randn(4 * H, H, dtype=torch.float64),
                     torch.randn(4 * H, dtype=torch.float64))
    zeros_h, zeros_c = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    a = functional.lstm2000(x, w_ih, w_hh, b, None, None, None)
    b2 = functional.lstm2000(x, w_ih, w_hh, None, b, zeros_h, zeros_c)
    c = functional.lstm_layer(x, w_ih, w_hh, b / 2, b / 2, zeros_h, zeros_c, lstm_ext.CellConfig(), backend="reference")
    for t1, t2, t3 in zip(a, b2, c):
        torch.testing.assert_close(t1, t2, rtol=0, atol=0)
        torch.testing.assert_close(t1, t3, **F64)
    with pytest.raises(ValueError, match="backend must be"):
        functional.lstm2000(x, w_ih, w_hh, b, None, None, None, backend="cuda")


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("reverse", [False, True])
def test_functional_takes_lengths_of_any_integer_type(reverse, backend):
    """A sequence of ints or an integer tensor of any integer dtype, as pack_padded_sequence takes them: the same
    outputs as int64 lengths, bit for bit."""
    torch.manual_seed(0)
    T, B, D, H = 5, 3, 2, 4
    x = torch.randn(T, B, D, dtype=torch.float64)
    w = (torch.randn(4 * H, D, dtype=torch.float64), torch.randn(4 * H, H, dtype=torch.float64), None, None)
    want = functional.lstm2000(x, *w, None, None, lengths=torch.tensor([5, 0, 2]), reverse=reverse, backend=backend)
    for lengths in ([5, 0, 2], (5, 0, 2), torch.tensor([5, 0, 2], dtype=torch.int32),
                    torch.tensor([5, 0, 2], dtype=torch.uint8)):  # fmt: skip
        got = functional.lstm2000(x, *w, None, None, lengths=lengths, reverse=reverse, backend=backend)
        for a, b in zip(got, want):
            assert torch.equal(a, b), lengths


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "lengths, message",
    [
        (torch.tensor([5.0, 1.0, 2.0]), r"lengths must hold integers, got torch.float32"),
        (torch.tensor([True, False, True]), r"lengths must hold integers, got torch.bool"),
        ([5, 1.5, 2], r"lengths must hold integers, got torch.float32"),
        (["5", "1", "2"], r"lengths must be an integer tensor or a sequence of ints, got list"),
        (torch.tensor([5, 1]), r"lengths must have shape \(B,\) = \(3,\), got \(2,\)"),
        (torch.tensor([[5, 1, 2]]), r"lengths must have shape \(B,\) = \(3,\), got \(1, 3\)"),
        (torch.tensor(5), r"lengths must have shape \(B,\) = \(3,\), got \(\)"),
        # out of range: the ops' own check, also where reverse reorders x by the lengths before the op runs
        (torch.tensor([6, 1, 2]), r"lengths must lie in \[0, T\] = \[0, 5\], got values in \[1, 6\]"),
        ([-1, 1, 2], r"lengths must lie in \[0, T\] = \[0, 5\], got values in \[-1, 2\]"),
    ],
)
def test_functional_rejects_bad_lengths_by_name(lengths, message, reverse, backend):
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    w = (torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 4, dtype=torch.float64), None, None)
    with pytest.raises((ValueError, RuntimeError), match=message):
        functional.lstm2000(x, *w, None, None, lengths=lengths, reverse=reverse, backend=backend)


def test_functional_rejects_x_that_is_not_3d():
    w = (torch.randn(16, 2), torch.randn(16, 4), None, None)
    with pytest.raises(ValueError, match=r"x must be 3-D \(T, B, D\), got 2-D"):
        functional.lstm2000(torch.randn(5, 2), *w, None, None)


def test_reverse_padded_is_an_involution():
    x = torch.arange(12.0).view(4, 3, 1)
    lengths = torch.tensor([4, 2, 0])
    r = functional.reverse_padded(x, lengths)
    assert r[:, 0, 0].tolist() == [9.0, 6.0, 3.0, 0.0]
    assert r[:, 1, 0].tolist() == [4.0, 1.0, 7.0, 10.0]
    assert r[:, 2, 0].tolist() == [2.0, 5.0, 8.0, 11.0]
    assert torch.equal(functional.reverse_padded(r, lengths), x)
    assert torch.equal(functional.reverse_padded(x, None), x.flip(0))
    assert torch.equal(functional.reverse_padded(x, [4, 2, 0]), r)


# ---- interoperability ------------------------------------------------------------------------------------


def test_parametrization_is_respected():
    """Parameters are read through the module (torch.nn.utils.parametrize, weight swaps), as nn.LSTM does."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    _, ours = make_models(num_layers=2, bidirectional=True)
    plain = copy.deepcopy(ours)
    with torch.no_grad():
        plain.weight_hh_l1_reverse.mul_(2)
    parametrize.register_parametrization(ours, "weight_hh_l1_reverse", Double())
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], plain(x)[0], **F64)


@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"])
def test_parametrization_is_respected_on_one_layer(name):
    """The one-layer call without hx (the modules' short path, which looks the parameters up directly) reads a
    parametrized weight or bias through the module too: outputs and the gradient of the original."""
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    ref, ours = make_models()
    with torch.no_grad():
        getattr(ref, name).mul_(2)
    parametrize.register_parametrization(ours, name, Double())
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64)
    y_ref, (h_ref, c_ref) = ref(x)
    y, (h, c) = ours(x)
    for got, want in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(got, want, **F64)
    y.sum().backward()
    y_ref.sum().backward()
    original = getattr(ours.parametrizations, name).original
    torch.testing.assert_close(original.grad, 2 * getattr(ref, name).grad, **F64)


def test_one_layer_without_bias_matches_nn_lstm():
    """bias=False on the modules' short path (one layer, no hx): nn.LSTM's outputs and gradients."""
    ref, ours = make_models(bias=False)
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64, requires_grad=True)
    y_ref, (h_ref, c_ref) = ref(x)
    y, (h, c) = ours(x)
    for got, want in ((y, y_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(got, want, **F64)
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(y_ref.sum(), x)[0], **F64)


@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu(proj_size, dtype):
    """Under CPU autocast each layer runs the float32 kernels (there is no half CPU kernel) and returns the autocast
    dtype, as nn.LSTM does: the float32 results, cast (each layer's: the next one reads the rounded output)."""
    _, ours = make_models(dtype=torch.float32, num_layers=1, bidirectional=True, proj_size=proj_size)
    x = torch.randn(T_LEN, BATCH, D_IN, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        out, (h, c) = ours(x)
    out32, (h32, c32) = ours(x)
    for a, b in ((out, out32), (h, h32), (c, c32)):
        assert a.dtype == dtype and torch.equal(a, b.to(dtype))
    (g,) = torch.autograd.grad(out.float().sum(), x)
    (g32,) = torch.autograd.grad(out32.sum(), x)
    assert g.dtype == torch.float32 and torch.equal(g, g32)
    deep = make_models(dtype=torch.float32, num_layers=2, proj_size=proj_size)[1]
    with torch.autocast("cpu", dtype=dtype):
        out2 = deep(x)[0]
    assert out2.dtype == dtype
    torch.testing.assert_close(out2.float(), deep(x)[0], rtol=0.05, atol=0.03)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_decoding_step_by_step_matches_the_whole_sequence(cls, dtype):
    """A step a call, the state carried (autoregressive decoding), gives the whole sequence's outputs and final state:
    the calls of one step are short calls (csrc/cpu/recurrence_cpu.cpp: BLAS, no panels; addmm for the projection),
    the whole sequence packs the panels, so float32 agrees to rounding (T stages), float64 to 1e-10."""
    torch.manual_seed(0)
    T, B, H = 20, 2, 130  # a U of 520 (or 390) x 130: the panel kernel for the whole sequence in float32
    m = cls(H, H, dtype=dtype)
    x = torch.randn(T, B, H, dtype=dtype)
    with torch.no_grad():
        whole, (h_whole, c_whole) = m(x)
        hx, steps = None, []
        for t in range(T):
            y, hx = m(x[t : t + 1], hx)
            steps.append(y)
    tol = tolerances(dtype, T) if dtype == torch.float32 else F64
    torch.testing.assert_close(torch.cat(steps), whole, **tol)
    torch.testing.assert_close(hx[0], h_whole, **tol)
    torch.testing.assert_close(hx[1], c_whole, **tol)


def test_concurrent_calls_from_threads_match_serial_ones():
    """Modules called from several Python threads at once (an inference server, a thread pool): the ops keep no
    shared mutable state, so every call gives the bits that it gives alone, forward and every gradient. Sizes that
    take the hand loops, the panel kernel and split batch rows."""
    torch.manual_seed(0)
    work = []
    for B, H, D in [(1, 8, 2), (3, 16, 3), (32, 96, 16)]:
        for cls in (LSTM2000, LSTM1997):
            work.append((cls(D, H), torch.randn(30, B, D)))

    def run(i):
        m, x = work[i]
        x = x.clone().requires_grad_()
        y, (h_n, c_n) = m(x)
        return [y.detach(), *torch.autograd.grad(y.pow(2).sum() + c_n.sum(), [x, *m.parameters()])]

    serial = [run(i) for i in range(len(work))]
    order = list(range(len(work))) * 8
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(run, order))
    for i, got in zip(order, concurrent):
        for a, b in zip(got, serial[i], strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_one_autograd_node_per_layer(cls):
    """The fused path runs each layer and direction as the one op lstm_ext::layer (projection inside): the output's
    grad_fn is its node and its inputs are the parameters themselves (no bias add or addmm node between)."""
    m = cls(3, 8, num_layers=2, bidirectional=True)
    y, (h, c) = m(torch.randn(5, 2, 3))
    layer_nodes = []
    stack = [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if node.name() == "LayerBackward":
            layer_nodes.append(node)
        stack += [n for n, _ in node.next_functions]
    assert len({id(n) for n in layer_nodes}) == 4  # 2 layers x 2 directions
    first = [n for n in layer_nodes if all(f is None or "AccumulateGrad" in f.name() for f, _ in n.next_functions)]
    assert first, "a first-layer node should take the parameters directly"
    params = {id(n.variable) for node in first for n, _ in node.next_functions if n is not None}
    assert {id(p) for name, p in m.named_parameters() if name.endswith("_l0")} <= params


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_torch_compile_fullgraph(cls):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=3, batch_first=True).double()
    x = torch.randn(BATCH, T_LEN, D_IN, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out_c, (h_c, c_c) = compiled(x)
    out_e, (h_e, c_e) = model(x)
    for a, b in ((out_c, out_e), (h_c, h_e), (c_c, c_e)):
        torch.testing.assert_close(a, b, **F64)
    g_c = torch.autograd.grad(weighted_loss(out_c, h_c, c_c), x)
    g_e = torch.autograd.grad(weighted_loss(out_e, h_e, c_e), x)
    torch.testing.assert_close(g_c, g_e, **F64)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_torch_compile_fullgraph_inference(cls):
    """Compiled under no_grad, the op's autograd kernel hands the call below autograd (the forward that keeps no
    workspace): the same outputs as eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(D_IN, HIDDEN, num_layers=2, batch_first=True).double().eval()
    x = torch.randn(BATCH, T_LEN, D_IN, dtype=torch.float64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        out_c, (h_c, c_c) = compiled(x)
        out_e, (h_e, c_e) = model(x)
    for a, b in ((out_c, out_e), (h_c, h_e), (c_c, c_e)):
        assert not a.requires_grad
        torch.testing.assert_close(a, b, **F64)


HAS_CUDA_KERNEL = torch.cuda.is_available() and functional._HAS_CUDA_KERNEL
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA_KERNEL, reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True)])
def test_torch_compile_dynamic_shapes(cls, kw, device):
    """One compiled graph serves every sequence length and batch size: the ops' C++ autograd and checks keep T and B
    symbolic (reading a size as a number would specialise it, and each new T would recompile)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(D_IN, HIDDEN, **kw, device=device, dtype=torch.float64)
    bf, states, R = kw.get("batch_first", False), kw.get("num_layers", 1) * 2 ** kw.get("bidirectional", 0), kw.get(
        "proj_size", 0) or HIDDEN
    f64 = dict(device=device, dtype=torch.float64)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=counter)
    compiles = []
    for T, B in [(7, 2), (9, 3), (12, 5)]:
        x = torch.randn(B, T, D_IN, **f64, requires_grad=True)
        if not bf:
            x = x.detach().transpose(0, 1).requires_grad_()
        hx = (torch.randn(states, B, R, **f64), torch.randn(states, B, HIDDEN, **f64))
        hx = None if not kw else hx  # the single layer: hx None, the module's shortest path
        wrt = [x, *model.parameters()]
        assert_same_results(compiled, model, (x, hx), wrt, wrt)
        compiles.append(counter.frame_count)
    assert compiles[0] > 0 and compiles[1:] == compiles[:1] * 2  # no recompile after the first call


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True)])
def test_torch_export_dynamic_shapes(cls, kw, device, tmp_path):
    """torch.export with a dynamic sequence length and batch size: the program keeps the fused op, runs at other
    sizes, survives torch.export.save/load, and its outputs match the module's, gradients included."""
    from torch.export import Dim

    torch.manual_seed(0)
    f64 = dict(device=device, dtype=torch.float64)
    model = cls(D_IN, HIDDEN, **kw, **f64)
    bf = kw.get("batch_first", False)
    T, B = Dim("T", min=2), Dim("B", min=2)
    example = torch.randn(2, 7, D_IN, **f64) if bf else torch.randn(7, 2, D_IN, **f64)
    program = torch.export.export(model, (example,), dynamic_shapes=({1: T, 0: B} if bf else {0: T, 1: B},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "lstm_ext.layer.default" in targets  # the fused op
    torch.export.save(program, tmp_path / "lstm.pt2")
    loaded = torch.export.load(tmp_path / "lstm.pt2").module()
    x = torch.randn(5, 13, D_IN, **f64) if bf else torch.randn(13, 5, D_IN, **f64)
    assert_same_results(loaded, model, (x,), list(loaded.parameters()), list(model.parameters()))


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_torch_export_proj_size_with_hx(cls):
    """proj_size with a given hx (the state carried between calls) under torch.export, T and B dynamic from 2: one
    layer op per layer and direction (the initial state enters step 0 as the op's a0, no slice of the sequence to
    specialise T), outputs and gradients (hx's too) as the module's."""
    from torch.export import Dim

    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)
    model = cls(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=3, **f64)

    def inputs(T, B):
        return torch.randn(T, B, D_IN, **f64), (torch.randn(4, B, 3, **f64), torch.randn(4, B, HIDDEN, **f64))

    T, B = Dim("T", min=2), Dim("B", min=2)
    x, hx = inputs(7, 2)
    program = torch.export.export(model, (x, hx), dynamic_shapes=({0: T, 1: B}, ({1: B}, {1: B})))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("lstm_ext.layer.default") == 4 and "lstm_ext.recurrence.default" not in targets
    exported = program.module()
    for T_, B_ in [(2, 5), (13, 3)]:
        x, hx = inputs(T_, B_)
        hx_got, hx_want = ([t.clone().requires_grad_() for t in hx] for _ in range(2))
        got_wrt, want_wrt = [*hx_got, *exported.parameters()], [*hx_want, *model.parameters()]
        results = []
        for m, h, wrt in ((exported, hx_got, got_wrt), (model, hx_want, want_wrt)):
            out, (h_n, c_n) = m(x, tuple(h))
            results.append([out, h_n, c_n, *torch.autograd.grad(weighted_loss(out, h_n, c_n), wrt)])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_torch_jit_trace_and_script(cls):
    """torch.jit.trace records the fused ops (same outputs and gradients); torch.jit.script, which the Python modules
    cannot go through, says what to use instead."""
    torch.manual_seed(0)
    model = cls(D_IN, HIDDEN, num_layers=2).double()
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    assert_same_results(traced, model, (x,), list(model.parameters()), list(model.parameters()))
    with pytest.raises(RuntimeError, match=f"{cls.__name__} cannot be compiled with torch.jit.script; use torch.export"):
        torch.jit.script(nn.Sequential(model))


def test_functional_torch_compile_dynamic_lengths():
    """Variable-length batches under torch.compile: the functional layer with per-row lengths (and reverse) in one
    graph for every T, B and lengths, outputs and gradients as eager."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    params = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in [(20, 3), (20, 5), (20,)]]

    def loss(x, lengths):
        y, h_n, c_n = functional.lstm2000(x, *params, None, None, None, lengths=lengths, reverse=True)
        return (y**2).sum() + h_n.sin().sum() + (c_n**3).sum()  # every element its own gradient

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss, fullgraph=True, dynamic=True, backend=counter)
    for T, B in [(7, 2), (9, 3), (12, 5)]:
        x = torch.randn(T, B, 3, dtype=torch.float64)
        lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(T))
        got, want = compiled(x, lengths), loss(x, lengths)
        torch.testing.assert_close(got, want, **F64)
        for a, b in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
            torch.testing.assert_close(a, b, **F64)
    assert counter.frame_count == 1


# ---- converting a model's nn.LSTMs ---------------------------------------------------------------------------


class _Tagger(nn.Module):
    """A model with nn.LSTMs in several places: an attribute, a ModuleList, nested; and a GRU (not converted)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(D_IN, 6)
        self.encoder = nn.LSTM(6, HIDDEN, num_layers=2, bidirectional=True, batch_first=True, dropout=0.0)
        self.heads = nn.ModuleList([nn.LSTM(2 * HIDDEN, 4, proj_size=2, batch_first=True), nn.GRU(2, 3)])

    def forward(self, x):
        y, _ = self.encoder(self.embed(x))
        y, (h, c) = self.heads[0](y)
        return y, (h, c)


def test_convert_nn_lstm():
    torch.manual_seed(0)
    model = _Tagger().double()
    original = copy.deepcopy(model)
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert lstm_ext.convert_nn_lstm(model) is model
    assert type(model.encoder) is LSTM2000 and type(model.heads[0]) is LSTM2000 and type(model.heads[1]) is nn.GRU
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p is params[name] for name, p in model.named_parameters())  # the same Parameter objects
    enc = model.encoder
    assert (enc.num_layers, enc.bidirectional, enc.batch_first, model.heads[0].proj_size) == (2, True, True, 2)
    x = torch.randn(BATCH, T_LEN, D_IN, dtype=torch.float64)
    used = [name for name, _ in model.named_parameters() if not name.startswith("heads.1.")]  # not the GRU's
    assert_same_results(model, original, (x,), [params[n] for n in used], [original.get_parameter(n) for n in used])
    # the optimizer built before the conversion trains the converted model
    before = model.encoder.weight_hh_l0.detach().clone()
    model.zero_grad()
    out, (h_n, c_n) = model(x)
    weighted_loss(out, h_n, c_n).backward()
    optimizer.step()
    assert not torch.equal(model.encoder.weight_hh_l0, before)


def test_convert_nn_lstm_top_level_and_mode():
    lstm = nn.LSTM(D_IN, HIDDEN).eval()
    new = lstm_ext.convert_nn_lstm(lstm, backend="reference")
    assert type(new) is LSTM2000 and not new.training and new.backend == "reference"
    assert new.weight_ih_l0 is lstm.weight_ih_l0 and new.weight_ih_l0.device.type == "cpu"


def test_to_nn_lstm():
    """LSTM2000 -> nn.LSTM (for tools that need nn.LSTM): the same Parameter objects, mode and results."""
    torch.manual_seed(0)
    ours = LSTM2000(D_IN, HIDDEN, num_layers=2, bidirectional=True, proj_size=3, batch_first=True).double().eval()
    lstm = ours.to_nn_lstm()
    assert type(lstm) is nn.LSTM and not lstm.training and lstm.proj_size == 3 and lstm.batch_first
    assert all(a is b for a, b in zip(lstm.parameters(), ours.parameters()))
    assert all(a is b for a, b in zip(LSTM2000.from_nn_lstm(lstm).parameters(), ours.parameters()))
    x = torch.randn(BATCH, T_LEN, D_IN, dtype=torch.float64)
    assert_same_results(lstm, ours, (x,), list(lstm.parameters()), list(ours.parameters()))


def test_convert_nn_lstm_refuses():
    ours = LSTM2000(D_IN, HIDDEN)
    torch.nn.utils.parametrizations.weight_norm(ours, "weight_hh_l0")
    with pytest.raises(ValueError, match="to_nn_lstm: the parameters are parametrized"):
        ours.to_nn_lstm()
    with pytest.raises(TypeError, match="from_nn_lstm expects a torch.nn.LSTM, got GRU"):
        LSTM2000.from_nn_lstm(nn.GRU(2, 3))
    lstm = nn.LSTM(D_IN, HIDDEN)
    torch.nn.utils.parametrizations.weight_norm(lstm, "weight_hh_l0")
    with pytest.raises(ValueError, match="parametrized weights"):
        lstm_ext.convert_nn_lstm(nn.Sequential(lstm))
    with pytest.raises(TypeError, match="convert_nn_lstm expects a torch.nn.Module, got dict"):
        lstm_ext.convert_nn_lstm({"encoder": nn.LSTM(2, 3)})
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'fused', 'reference'\), got 'cuda'"):
        lstm_ext.convert_nn_lstm(nn.Sequential(nn.Linear(2, 3)), backend="cuda")  # no nn.LSTM in it


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_activation_checkpointing_and_saved_tensor_hooks(cls):
    """The layer's node keeps its tensors as torch's own nodes do (SavedVariable): saved-tensor hooks see them
    (what torch.utils.checkpoint and torch.autograd.graph.save_on_cpu build on), and a checkpointed model recomputes
    the forward in the backward to the same gradients, bit for bit."""
    torch.manual_seed(0)
    model = cls(D_IN, HIDDEN, num_layers=2, bidirectional=True).double()
    x = torch.randn(T_LEN, BATCH, D_IN, dtype=torch.float64, requires_grad=True)
    wrt = [x, *model.parameters()]
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t.clone()  # what an offloading hook does: the node must use the unpacked copy

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, (h_n, c_n) = model(x)
    assert (T_LEN, BATCH, model._gates * HIDDEN) in packed  # the fused node's gate activations went through them
    with_hooks = torch.autograd.grad(weighted_loss(out, h_n, c_n), wrt)
    checkpointed = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=False)
    recomputed = torch.autograd.grad(weighted_loss(checkpointed[0], *checkpointed[1]), wrt)
    out, (h_n, c_n) = model(x)
    plain = torch.autograd.grad(weighted_loss(out, h_n, c_n), wrt)
    for a, b, c in zip(with_hooks, recomputed, plain):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("cls", [LSTM2000, LSTM1997])
def test_torch_compile_inductor(cls):
    """The default backend (inductor, which generates and compiles C++ for the ops around ours) with dynamic shapes:
    outputs and every gradient as eager, at two sizes."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(D_IN, HIDDEN, num_layers=2, bidirectional=True, batch_first=True).double()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for T, B in [(7, 2), (11, 3)]:
        x = torch.randn(B, T, D_IN, dtype=torch.float64, requires_grad=True)
        wrt = [x, *model.parameters()]
        assert_same_results(compiled, model, (x,), wrt, wrt)
