"""The paper nets and their fused on-line training op (lstm_ext.paper, torch.ops.lstm_ext.paper_train).

Oracle: ``lstm_ext.paper.forward_ref`` (plain PyTorch, autograd; the truncated gradient by detach).
One weight change per sequence with the truncated RTRL of the op must equal plain gradient descent on
the reference's 1/2 squared error with r_{t-1} detached.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lstm_ext.paper import PaperNet, PaperNetSpec, forward_fused, forward_ref

SPECS = {
    "adding": PaperNetSpec(2, 1, 2, 2, bias="all"),
    "reber3x2": PaperNetSpec(7, 7, 3, 2, bias="ga"),
    "exp2a": PaperNetSpec(5, 5, 1, 1, connectivity="B", bias="none", output_gate=False, squash="sigmoid_identity"),
    "exp2c": PaperNetSpec(9, 2, 2, 1, bias="none"),
    "exp3": PaperNetSpec(1, 1, 3, 1, bias="b1"),
    "cerg_forget": PaperNetSpec(7, 7, 4, 2, connectivity="cells", bias="go", forget_gate=True, output_shortcut=True),
    "tanh_forget": PaperNetSpec(3, 2, 2, 1, bias="all", forget_gate=True, squash="tanh"),
    # linear output units (an option; the paper's are logistic)
    "adding_linear": PaperNetSpec(2, 1, 2, 2, bias="all", output="linear"),
    "reber3x2_linear": PaperNetSpec(7, 7, 3, 2, bias="ga", output="linear"),
}
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def make_batch(spec, n, T, *, onehot, final_only, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, T // 2), T + 1, size=n)
    lengths[0] = T
    valid = np.arange(T)[None, :] < lengths[:, None]
    if onehot:
        x = None
        x_index = np.where(valid, rng.integers(0, spec.inputs, size=(n, T)), -1)
        x_index[0, 1] = -1  # a step without input inside the length
    else:
        x = rng.uniform(-1, 1, size=(n, T, spec.inputs)) * valid[..., None]
        x_index = None
    mask = np.zeros((n, T))
    if final_only:
        mask[np.arange(n), lengths - 1] = 1.0
    else:
        mask[valid] = 1.0
    targets = rng.uniform(0, 1, size=(n, T, spec.outputs)) * mask[..., None]
    return SimpleNamespace(x=x, x_index=x_index, lengths=lengths, targets=targets, target_mask=mask)


def take(batch, i):
    return SimpleNamespace(**{k: None if v is None else v[i : i + 1] for k, v in vars(batch).items()})


def ref_sgd_step(spec, Wh, Wo, Mh, Mo, batch, lr, truncate=True):
    """One gradient step of the reference on 1/2 the summed squared error of one sequence."""
    Wh = Wh.clone().requires_grad_(True)
    Wo = Wo.clone().requires_grad_(True)
    y = forward_ref(spec, Wh, Wo, batch, truncate=truncate)
    t = torch.as_tensor(batch.targets, dtype=Wh.dtype)
    m = torch.as_tensor(batch.target_mask, dtype=Wh.dtype)
    loss = 0.5 * (m[..., None] * (t - y) ** 2).sum()
    loss.backward()
    return (Wh - lr * Wh.grad * Mh).detach(), (Wo - lr * Wo.grad * Mo).detach(), loss.detach(), y.detach()


def new_net(spec, dtype=torch.float64, seed=1, init_range=0.5):
    return PaperNet(spec, dtype=dtype).init_(torch.Generator().manual_seed(seed), init_range)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("onehot", [False, True])
@pytest.mark.parametrize("final_only", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gradient", ["truncated", "full"])
def test_train_matches_reference_gradient_descent(name, onehot, final_only, dtype, gradient):
    """truncated: the op's RTRL against autograd with r_{t-1} detached; full: its BPTT against autograd."""
    spec = SPECS[name]
    net = new_net(spec, dtype)
    batch = make_batch(spec, 3, 7, onehot=onehot, final_only=final_only)
    Wh, Wo = net.Wh.double(), net.Wo.double()
    Mh, Mo = net.Mh.double(), net.Mo.double()
    lr = 0.7
    losses = []
    for i in range(3):  # sequence after sequence, each on the weights the previous one left
        Wh, Wo, loss, _ = ref_sgd_step(spec, Wh, Wo, Mh, Mo, take(batch, i), lr, truncate=gradient == "truncated")
        losses.append(loss)
    stats = net.train(batch, lr, gradient=gradient)
    tol = TOL[dtype]
    torch.testing.assert_close(net.Wh.double(), Wh, rtol=tol, atol=tol)
    torch.testing.assert_close(net.Wo.double(), Wo, rtol=tol, atol=tol)
    torch.testing.assert_close(stats.loss.double(), torch.stack(losses), rtol=tol * 10, atol=tol * 10)
    # masked weights never change
    assert (net.Wh[net.Mh == 0] == 0).all() and (net.Wo[net.Mo == 0] == 0).all()


@pytest.mark.parametrize("name", list(SPECS))
def test_evaluate_outputs_and_errors_match_reference(name):
    spec = SPECS[name]
    net = new_net(spec)
    batch = make_batch(spec, 4, 6, onehot=spec.inputs > 3, final_only=False)
    Wh0, Wo0 = net.Wh.clone(), net.Wo.clone()
    stats = net.evaluate(batch, return_outputs=True)
    assert torch.equal(net.Wh, Wh0) and torch.equal(net.Wo, Wo0)
    y = forward_ref(spec, net.Wh, net.Wo, batch)
    torch.testing.assert_close(stats.y_all, y, rtol=1e-12, atol=1e-12)
    lengths = torch.as_tensor(batch.lengths)
    torch.testing.assert_close(stats.y_last, y[torch.arange(4), lengths - 1])
    err = (torch.as_tensor(batch.targets) - y).abs() * torch.as_tensor(batch.target_mask)[..., None]
    torch.testing.assert_close(stats.err_max, err.amax(dim=(1, 2)))
    torch.testing.assert_close(stats.err_last, err[torch.arange(4), lengths - 1].amax(dim=1))


@pytest.mark.parametrize("name", ["adding", "exp2c", "cerg_forget"])
def test_update_each_step_equals_per_sequence_when_error_is_at_the_end(name):
    spec = SPECS[name]
    batch = make_batch(spec, 5, 9, onehot=False, final_only=True)
    a, b = new_net(spec), new_net(spec)
    a.train(batch, 0.5, update="sequence")
    b.train(batch, 0.5, update="step")
    torch.testing.assert_close(a.Wh, b.Wh, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(a.Wo, b.Wo, rtol=1e-13, atol=1e-13)


def rtrl_numpy(spec, Wh, Wo, Mh, Mo, x, target, mask, lr):
    """HS97 App. A.1 literally, for one sequence with weight changes after every step (float64).

    Forward sensitivities ds_c/dw for the weights into cells and input gates, one-step backprop for
    the output gates and the output units. Only the 1997 cell with its output gate, S = 1.
    """
    Wh, Wo = Wh.copy(), Wo.copy()
    nb, C = spec.n_blocks, spec.n_cells
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    r = np.zeros(spec.rec_size)
    s = np.zeros(C)
    Sz = np.zeros((C, spec.cols))
    Si = np.zeros((C, spec.cols))
    linear = spec.output == "linear"
    for t in range(x.shape[0]):
        src = np.concatenate([x[t], r, [1.0]])
        a = Wh @ src
        yi, z, yo = sig(a[:nb]), a[nb : nb + C], sig(a[nb + C :])
        g = 2 * np.tanh(z / 2)
        s = s + yi * g
        h = np.tanh(s / 2)
        yc = yo * h
        Sz = Sz + np.outer(yi * (1 - g * g / 4), src)
        Si = Si + np.outer(g * yi * (1 - yi), src)
        osrc = np.concatenate([yc, x[t], [1.0]])
        y = Wo @ osrc if linear else sig(Wo @ osrc)
        if mask[t]:
            e = (target[t] - y) * (1 if linear else y * (1 - y))
            dyc = Wo[:, :C].T @ e
            ds = dyc * yo * 0.5 * (1 - h * h)
            dWo = np.outer(e, osrc)
            dWh = np.zeros_like(Wh)
            dWh[nb : nb + C] = ds[:, None] * Sz
            dWh[:nb] = ds[:, None] * Si
            dWh[nb + C :] = np.outer(dyc * h * yo * (1 - yo), src)
            Wo += lr * dWo * Mo
            Wh += lr * dWh * Mh
        r = np.concatenate([yi, yo, yc])
    return Wh, Wo


@pytest.mark.parametrize("output", ["logistic", "linear"])
def test_update_each_step_matches_the_papers_rtrl(output):
    spec = PaperNetSpec(3, 2, 3, 1, bias="all", output=output)
    net = new_net(spec)
    batch = make_batch(spec, 1, 12, onehot=False, final_only=False)
    Wh, Wo = rtrl_numpy(spec, net.Wh.numpy(), net.Wo.numpy(), net.Mh.numpy(), net.Mo.numpy(),
                        batch.x[0], batch.targets[0], batch.target_mask[0], 0.9)  # fmt: skip
    net.train(batch, 0.9, update="step")
    np.testing.assert_allclose(net.Wh.numpy(), Wh, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.Wo.numpy(), Wo, rtol=1e-12, atol=1e-12)
    # and it differs from one change per sequence (the choice matters for Exps 1, 2a, 2b)
    other = new_net(spec)
    other.train(batch, 0.9, update="sequence")
    assert not torch.allclose(other.Wh, net.Wh)


@pytest.mark.parametrize("name", ["reber3x2", "reber3x2_linear"])
def test_full_and_truncated_gradients_differ_and_fused_forward_matches(name):
    """The two rules give different weights on a net with recurrent weights; forward_fused (the fused
    recurrence op) is the same net as forward_ref, outputs and full gradients."""
    spec = SPECS[name]
    batch = make_batch(spec, 2, 6, onehot=True, final_only=False)
    full, truncated = new_net(spec), new_net(spec)
    full.train(batch, 0.3, gradient="full")
    truncated.train(batch, 0.3)
    assert not torch.allclose(truncated.Wh, full.Wh)
    for trunc in (True, False):
        grads = []
        for forward in (forward_fused, forward_ref):
            Wh = full.Wh.clone().requires_grad_(True)
            y = forward(spec, Wh, full.Wo, batch, truncate=trunc)
            (y**2).sum().backward()
            grads.append((y.detach(), Wh.grad))
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", ["1-4x1-lr0.5", "1-3x2-lr0.5", "2a-p100", "2c-q100-p100", "3a-T100-N3", "4-T100", "6a", "6b"])
def test_unrolled_step_gives_the_general_steps_bits_on_every_paper_shape(key, monkeypatch):
    """float32 nets of the paper's shapes train with an unrolled step (csrc/cpu/paper_train.cpp, Shape); the
    committed reproductions were made with the general step, so the two must agree bit for bit. Each row's net
    (its own task, its own update rule) trained and evaluated with the unrolled step and with the general step
    (LSTM_EXT_PAPER_GENERAL_STEP=1). Covers one-hot and dense inputs, error at every step with a weight change
    after each (Exp 1), and per-sequence changes."""
    from lstm_ext import tasks
    from lstm_ext.experiments.protocol import trial_net
    from lstm_ext.experiments.rows import all_rows

    row = next(r for r in all_rows() if r.key == key)
    if row.generate is None:  # Exp 1: strings from a fixed training set
        train_set, _ = tasks.reber_train_test(np.random.default_rng(0))
        generate = lambda n, rng: train_set.take(rng.integers(0, train_set.n, size=n))  # noqa: E731
    else:
        generate = row.generate
    runs = []
    for general in ("0", "1"):
        monkeypatch.setenv("LSTM_EXT_PAPER_GENERAL_STEP", general)
        net, rng, _, _ = trial_net(row, 0, dtype=torch.float32)
        stats = [net.train(generate(64, rng), row.lr, update=row.update) for _ in range(3)]
        stats.append(net.evaluate(generate(16, rng), return_outputs=True))
        runs.append((net, stats))
    (net_u, stats_u), (net_g, stats_g) = runs
    assert torch.equal(net_u.Wh, net_g.Wh) and torch.equal(net_u.Wo, net_g.Wo)
    assert not torch.equal(net_u.Wh, trial_net(row, 0, dtype=torch.float32)[0].Wh)  # it did learn
    for su, sg in zip(stats_u, stats_g):
        for a, b in zip(su, sg):
            assert (a is None and b is None) or torch.equal(a, b)


def test_full_gradient_needs_per_sequence_updates():
    spec = SPECS["adding"]
    with pytest.raises(ValueError, match="once per sequence"):
        new_net(spec).train(make_batch(spec, 1, 3, onehot=False, final_only=True), 0.1, update="step", gradient="full")


def test_zero_length_sequences_change_nothing():
    spec = SPECS["adding"]
    net = new_net(spec)
    batch = make_batch(spec, 2, 5, onehot=False, final_only=True)
    batch.lengths = np.array([0, 0])
    batch.target_mask[:] = 0
    W0 = net.Wh.clone()
    stats = net.train(batch, 0.5, return_outputs=True)
    assert torch.equal(net.Wh, W0)
    assert (stats.loss == 0).all() and (stats.y_last == 0).all() and (stats.y_all == 0).all()


@pytest.mark.parametrize(
    "spec, count",
    [
        (PaperNetSpec(7, 7, 4, 1, bias="ga"), 264),
        (PaperNetSpec(7, 7, 3, 2, bias="ga"), 276),
        (PaperNetSpec(101, 101, 1, 1, connectivity="B", bias="none", output_gate=False, squash="sigmoid_identity"), 10504),
        *[(PaperNetSpec(p + 4, 2, 2, 1, bias="none"), 6 * p + 64) for p in (50, 100, 200, 500, 1000)],
        (PaperNetSpec(1, 1, 3, 1, bias="b1"), 102),
        (PaperNetSpec(2, 1, 2, 2, bias="all"), 93),
        (PaperNetSpec(8, 4, 2, 2, bias="all"), 156),
        (PaperNetSpec(8, 8, 3, 2, bias="all"), 308),
        (PaperNetSpec(7, 7, 4, 2, connectivity="cells", bias="go", forget_gate=True, output_shortcut=True), 424),
    ],
)
def test_weight_counts_of_the_papers(spec, count):
    assert spec.num_weights == count
    assert PaperNet(spec).num_weights == count


def test_init_sets_gate_bias_schedules():
    spec = PaperNetSpec(2, 1, 2, 2, bias="all")
    net = PaperNet(spec).init_(torch.Generator().manual_seed(0), 0.1, input_gate_bias=[-3.0, -6.0])
    assert net.Wh[spec.iota_rows, -1].tolist() == [-3.0, -6.0]
    assert net.Wh.abs().max() <= 6.0 and net.Wo.abs().max() <= 0.1
    assert (net.Wh[spec.omega_rows, -1].abs() <= 0.1).all()
    with pytest.raises(ValueError, match="input_gate_bias"):
        PaperNet(spec).init_(torch.Generator(), 0.1, input_gate_bias=[1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.update(Wh=a["Wh"][:, :-1].contiguous()), "Wh must have I"),
        (lambda a: a.update(Wo=a["Wo"][:, :-1].contiguous()), "Wo must have shape"),
        (lambda a: a.update(Wh=a["Wh"].float()), "Wo must have Wh's dtype"),
        (lambda a: a.update(x=a["x"][:, :, :1]), "columns for x's I = 1"),
        (lambda a: a.update(x=a["x"][:1]), "x must have shape"),
        (lambda a: a.update(x_index=torch.zeros(2, 5, dtype=torch.long)), "exactly one of x"),
        (lambda a: a.update(lengths=torch.tensor([9, 1])), "lengths must be in"),
        (lambda a: a.update(lengths=torch.tensor([1.0, 1.0])), "lengths must be a 1-D int64"),
        (lambda a: a.update(targets=a["targets"][:, :, :0]), "targets must have shape"),
        (lambda a: a.update(Wh=a["Wh"].t()), "contiguous"),
        (lambda a: a.update(squash="relu"), "squash must be"),
        (lambda a: a.update(output="softmax"), "output must be \"logistic\" or \"linear\""),
    ],
)
def test_bad_input_is_rejected_with_a_message(mutate, message):
    spec = SPECS["adding"]
    net = new_net(spec)
    b = make_batch(spec, 2, 5, onehot=False, final_only=True)
    args = dict(Wh=net.Wh.clone(), Wo=net.Wo.clone(), Mh=net.Mh, Mo=net.Mo, x=torch.as_tensor(b.x), x_index=None,
                lengths=torch.as_tensor(b.lengths), targets=torch.as_tensor(b.targets),
                target_mask=torch.as_tensor(b.target_mask), squash="paper", output="logistic")  # fmt: skip
    mutate(args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.lstm_ext.paper_train(
            args["Wh"], args["Wo"], args["Mh"], args["Mo"], args["x"], args["x_index"], args["lengths"],
            args["targets"], args["target_mask"], 2, 2, False, True, args["squash"], 0.5, True, False, False,
            True, args["output"],
        )  # fmt: skip


@pytest.mark.parametrize("lr", [-0.1, float("nan"), float("inf")])
def test_bad_learning_rate_is_rejected_and_leaves_the_weights(lr):
    spec = SPECS["adding"]
    net = new_net(spec)
    before = net.state_dict()
    b = make_batch(spec, 2, 5, onehot=False, final_only=True)
    with pytest.raises(RuntimeError, match="lr must be a finite number >= 0"):
        net.train(b, lr)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    net.evaluate(b)  # no learning: lr is not used (evaluate passes 0)


@pytest.mark.parametrize("kw", [{"init_range": -0.1}, {"init_range": float("nan")}, {"random_bias_range": "x"}])
def test_bad_init_range_is_rejected(kw):
    args = {"init_range": 0.1} | kw
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        PaperNet(SPECS["adding"]).init_(torch.Generator().manual_seed(0), **args)


def test_load_state_dict_names_what_is_wrong():
    net = new_net(SPECS["adding"])
    with pytest.raises(ValueError, match="the state has no Wo"):
        net.load_state_dict({"Wh": net.Wh})
    with pytest.raises(ValueError, match=r"Wh must have shape \(8, 11\), got \(3, 3\)"):
        net.load_state_dict({"Wh": torch.zeros(3, 3), "Wo": net.Wo})


def test_one_hot_index_out_of_range_is_rejected():
    spec = SPECS["exp2c"]
    net = new_net(spec)
    b = make_batch(spec, 2, 5, onehot=True, final_only=True)
    b.x_index[0, 0] = spec.inputs
    with pytest.raises(RuntimeError, match="x_index values must be in"):
        net.train(b, 0.1)


def test_spec_validation():
    with pytest.raises(ValueError, match="connectivity"):
        PaperNetSpec(2, 1, 2, connectivity="X")
    with pytest.raises(ValueError, match="bias"):
        PaperNetSpec(2, 1, 2, bias="some")
    with pytest.raises(ValueError, match="n_blocks"):
        PaperNetSpec(2, 1, 0)
    with pytest.raises(ValueError, match=r"PaperNetSpec.output must be one of \('logistic', 'linear'\), got 'relu'"):
        PaperNetSpec(2, 1, 2, output="relu")
    with pytest.raises(ValueError, match="update"):
        new_net(SPECS["adding"]).train(make_batch(SPECS["adding"], 1, 3, onehot=False, final_only=True), 0.1, update="x")
