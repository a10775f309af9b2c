"""One trial of one table row: on-line training on the fused op until the row's stopping rule holds,
then the paper's test. Python only generates chunks of sequences and checks the rule between chunks;
every sequence is trained inside ``torch.ops.lstm_ext.paper_train``.

When a rule first holds in the middle of a chunk, the chunk is replayed from its start up to that
sequence (training is deterministic), so the tested net is exactly the net at the stopping point.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .. import tasks
from ..paper import PaperNet
from .rows import Row

CHUNK = 256  # training sequences per op call (between rule checks)
CURVE_POINTS = 200
# Bumped for a rule kind whenever its checks change what a trial reports, so that checkpoints written
# under the old protocol are not reused (reber and testset: 2 = checks spread to 1 % of a long trial).
PROTOCOL_VERSION = {"reber": 2, "testset": 2}


def protocol_version(row: Row) -> int:
    return PROTOCOL_VERSION.get(row.rule.kind, 1)


def _rngs(seed: int, row: Row, trial: int):
    ss = np.random.SeedSequence([seed, trial, *map(ord, row.seeds_from)])
    data_seed, init_seed, set_seed = ss.spawn(3)
    init_gen = torch.Generator().manual_seed(int(init_seed.generate_state(1, dtype=np.uint64)[0] >> 1))
    return np.random.default_rng(data_seed), init_gen, set_seed


def _errors(stats, batch, on: str) -> np.ndarray:
    """Per-sequence error the rule looks at."""
    if on == "all":
        return stats.err_max.double().numpy()
    if on == "last":
        return stats.err_last.double().numpy()
    if on == "clean":  # Exp 3c: |output - noise-free target| at the end
        return np.abs(stats.y_last[:, 0].double().numpy() - batch.extra["clean_target"].reshape(-1))
    raise ValueError(on)


def _last_target_step(batch) -> np.ndarray:
    """(n,) the last step of each sequence that carries a target."""
    T = batch.target_mask.shape[1]
    return T - 1 - np.argmax(batch.target_mask[:, ::-1] > 0, axis=1)


def _squared_error(stats, batch) -> np.ndarray:
    """Per-sequence mean (over outputs) squared error at the last target step, from err_last's step.

    Tasks whose error comes at the end only read y_last; Exps 2a/2b (targets at every step but the
    last) use err_last, the max |error| over outputs at the last target step, squared."""
    last = _last_target_step(batch)
    if np.all(last == batch.lengths - 1):
        t = batch.targets[np.arange(batch.n), last].astype(np.float64)
        return ((t - stats.y_last.double().numpy()) ** 2).mean(axis=1)
    return stats.err_last.double().numpy() ** 2


class _Curve:
    """Learning curve: (training sequences, mean squared error, fraction correct) per chunk, thinned."""

    def __init__(self):
        self.points: list[tuple[int, float, float]] = []

    def add(self, seen: int, sq: np.ndarray, ok: np.ndarray):
        self.points.append((int(seen), float(sq.mean()), float(ok.mean())))

    def thinned(self):
        p = self.points
        if len(p) <= CURVE_POINTS:
            return p
        idx = np.unique(np.linspace(0, len(p) - 1, CURVE_POINTS).round().astype(int))
        return [p[i] for i in idx]


def final_test(net: PaperNet, row: Row, rng: np.random.Generator, size: int) -> dict:
    """The paper's test on ``size`` fresh sequences: # wrong, MSE and mean absolute error at the end."""
    wrong, sq, ab, n = 0, 0.0, 0.0, 0
    for start in range(0, size, 1024):
        batch = row.generate(min(1024, size - start), rng)
        stats = net.evaluate(batch)
        err = _errors(stats, batch, row.rule.on)
        wrong += int((err >= row.rule.threshold).sum() if row.rule.on != "clean" else (err > row.rule.threshold).sum())
        if row.rule.on == "clean":
            d = err
        else:
            d = np.sqrt(_squared_error(stats, batch))
        sq += float((d**2).sum())
        ab += float(d.sum())
        n += batch.n
    return {"test_size": size, "test_wrong": wrong, "test_mse": sq / n, "test_mae": ab / n}


class _CellGrower:
    """HS97's sequential construction (Exp 2): the cells' connections to the outputs start absent and
    are added once the mean error of a chunk is no longer 1 % below the previous chunk's, or, where the row
    sets ``grow_cell_after``, after the chunk that brings the sequences seen to that many."""

    def __init__(self, net: PaperNet, row: Row, generator: torch.Generator):
        self.net, self.row, self.generator = net, row, generator
        self.cells = slice(0, row.spec.n_cells)
        self.mask = net.Mo[:, self.cells].clone()
        net.Mo[:, self.cells] = 0
        net.Wo[:, self.cells] = 0
        self.previous = None
        self.done = False

    def after_chunk(self, mean_loss: float, seen: int) -> bool:
        if self.done:
            return False
        if self.row.grow_cell_after is not None:
            stalled = seen >= self.row.grow_cell_after
        else:
            stalled = self.previous is not None and mean_loss > 0.99 * self.previous
        self.previous = mean_loss
        if not stalled:
            return False
        net = self.net
        w = (torch.rand(self.mask.shape, generator=self.generator, dtype=torch.float64) * 2 - 1) * self.row.init_range
        net.Mo[:, self.cells] = self.mask
        net.Wo[:, self.cells] = (w.to(self.mask.device) * self.mask).to(net.dtype)
        self.done = True
        return True


def _runs(ok: np.ndarray, before: int) -> np.ndarray:
    """Consecutive correct sequences ending at each one (``before``: the run before this chunk)."""
    i = np.arange(len(ok))
    last_bad = np.maximum.accumulate(np.where(ok, -1, i))
    return np.where(last_bad >= 0, i - last_bad, before + i + 1)


def _ok(err: np.ndarray, rule) -> np.ndarray:
    return err < rule.threshold if rule.on != "clean" else err <= rule.threshold


class _Chunks:
    """``row.generate(n, rng)`` for the chunks of a trial, the next one generated in a background thread while
    the current one trains (``paper_train`` releases the GIL; generation is ~15 % of an adding trial). The
    batches are the same, in the same order, as generated in line: the rng is only ever used by one of the two
    threads at a time, and a chunk is generated ahead only when its size cannot depend on the current one's
    outcome (``ahead``: that size, or 0 for none)."""

    def __init__(self, row: Row, prefetch: bool):
        self.row = row
        self.rng: np.random.Generator | None = None  # the trial's data stream, set once its net is built
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lstm_ext-chunks") if prefetch else None
        self.pending: tuple[int, Future] | None = None

    def next(self, n: int, ahead: int = 0):
        if self.pending is not None:
            size, fut = self.pending
            self.pending = None
            if size != n:
                raise AssertionError(f"prefetched a chunk of {size}, the trial needs {n}")
            batch = fut.result()
        else:
            batch = self.row.generate(n, self.rng)
        if self.pool is not None and ahead > 0:
            self.pending = (ahead, self.pool.submit(self.row.generate, ahead, self.rng))
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def trial_net(row: Row, trial: int, seed: int = 0, dtype=torch.float32, device="cpu"):
    """Trial ``trial``'s initial net, and its generators: (net, data rng, init generator, test-set seed)."""
    data_rng, init_gen, set_seed = _rngs(seed, row, trial)
    net = PaperNet(row.spec, dtype=dtype, device=device).init_(
        init_gen, row.init_range, input_gate_bias=row.input_gate_bias, output_gate_bias=row.output_gate_bias
    )
    return net, data_rng, init_gen, set_seed


def reber_sets(seed: int, trial: int):
    """Exp 1's training and test set of trial ``trial``: 3 pairs, trial k uses pair k // 10."""
    return tasks.reber_train_test(np.random.default_rng(np.random.SeedSequence([seed, trial // 10, 1997])))


def run_trial(row: Row, trial: int, seed: int = 0, budget: int | None = None, dtype=torch.float32,
              prefetch: bool = True, device="cpu", return_net: bool = False):  # fmt: skip
    """Train one net of ``row`` (trial number ``trial``) and return its record. ``prefetch``: generate the
    next chunk of sequences while the current one trains (the same record either way, faster). ``device``:
    where the net trains ("cpu", or a CUDA device: the op's kernel on the current stream). ``return_net``:
    return (record, the net as the trial left it) instead, for probes."""
    chunks = _Chunks(row, prefetch)
    try:  # (the worker thread is joined whatever happens)
        record, net = _run_trial(row, trial, seed, budget, dtype, chunks, device)
    finally:
        chunks.close()
    return (record, net) if return_net else record


def _run_trial(row: Row, trial: int, seed: int, budget: int | None, dtype, chunks: _Chunks, device="cpu"):
    torch.set_num_threads(1)
    start = time.perf_counter()
    net, data_rng, init_gen, set_seed = trial_net(row, trial, seed, dtype, device)
    chunks.rng = data_rng
    budget = row.budget if budget is None else budget
    rule = row.rule
    record = {"row": row.key, "trial": trial, "seed": seed, "budget": budget, "weights": net.num_weights,
              "device": net.device.type,
              "update": row.update, "gradient": row.gradient, "protocol": protocol_version(row)}
    curve = _Curve()
    seen = 0
    steps = 0

    def train(batch):
        nonlocal steps
        steps += int(batch.lengths.sum())
        if row.gradient == "full":  # back-propagation through time: one weight change per sequence
            return net.train(batch, row.lr, update="sequence", gradient="full")
        return net.train(batch, row.lr, update=row.update)

    if rule.kind == "reber":
        train_set, test_set = reber_sets(seed, trial)
        if row.reber_targets not in ("next", "possible"):
            raise ValueError(f"reber_targets must be 'next' or 'possible', got {row.reber_targets!r}")
        if row.reber_targets == "possible":
            train_set = tasks.reber_possible_targets(train_set)
        both = [train_set, test_set]
        success = None
        while seen < budget:
            n = min(rule.check_interval(seen), budget - seen)
            batch = train_set.take(data_rng.integers(0, train_set.n, size=n))
            stats = train(batch)
            seen += n
            ok = _errors(stats, batch, "all") < 0.5
            curve.add(seen, stats.loss.double().numpy(), ok)
            if all(tasks.reber_step_correct(net.evaluate(b, return_outputs=True).y_all.numpy(), b).all() for b in both):
                success = seen
                break
        record |= {"success": success is not None, "sequences": success if success is not None else seen}

    elif rule.kind in ("streak", "nseq"):
        grow = _CellGrower(net, row, init_gen) if row.grow_cell else None
        window = rule.window
        tail_ok = np.zeros(0, dtype=bool)
        tail_sq = np.zeros(0)
        streak = 0
        thresholds = list(rule.n_seq)
        checkpoints = {}
        success = None
        while seen < budget and success is None:
            n = min(CHUNK, budget - seen)
            # the next chunk is CHUNK whatever this one's outcome when even the most seen after it leaves that much
            batch = chunks.next(n, ahead=CHUNK if budget - seen - n >= CHUNK else 0)
            snapshot = net.state_dict()
            stats = train(batch)
            err = _errors(stats, batch, rule.on)
            ok = _ok(err, rule)
            sq = _squared_error(stats, batch)
            curve.add(seen + n, sq, ok)
            hit = None
            if rule.kind == "streak":
                run = _runs(ok, streak)
                all_sq = np.concatenate([tail_sq, sq])[-(n + window) :]
                csum = np.concatenate([[0.0], np.cumsum(all_sq)])
                offset = len(all_sq) - n
                for i in np.flatnonzero(run >= window):
                    j = offset + i + 1  # mean over the window ending at sequence i
                    if rule.mean_error is None or (csum[j] - csum[j - window]) / window < rule.mean_error:
                        hit = int(i)
                        break
                streak = int(run[-1])
            else:  # nseq: fewer than n_seq of the last `window` sequences wrong
                all_bad = np.concatenate([~tail_ok, ~ok])[-(n + window) :]
                offset = len(all_bad) - n
                csum = np.concatenate([[0], np.cumsum(all_bad)])
                i = np.arange(n)
                j = np.maximum(offset + i + 1 - window, 0)
                bad = csum[offset + i + 1] - csum[j]
                met = np.flatnonzero((seen + i + 1 >= window) & (bad < thresholds[0]))
                hit = int(met[0]) if len(met) else None
            if hit is None:
                seen += n
                if grow is not None and grow.after_chunk(float(stats.loss.double().mean()), seen):
                    record["cells_added_after"] = seen
                tail_ok = np.concatenate([tail_ok, ok])[-window:]
                tail_sq = np.concatenate([tail_sq, sq])[-window:]
                continue
            # replay the chunk up to the stopping sequence, so the net is the one at that point
            net.load_state_dict(snapshot)
            steps -= int(batch.lengths.sum())
            part = batch.take(np.arange(hit + 1))
            train(part)
            seen += hit + 1
            if rule.kind == "streak":
                success = seen - window if rule.count_from_streak_start else seen
            else:
                test_rng = np.random.default_rng(set_seed.spawn(1)[0])
                checkpoints[thresholds[0]] = {"sequences": seen} | final_test(net, row, test_rng, row.final_test)
                thresholds.pop(0)
                if not thresholds:
                    success = seen
                tail_ok = np.concatenate([tail_ok, ok[: hit + 1]])[-window:]
                streak = 0
        record |= {"success": success is not None, "sequences": success if success is not None else seen}
        if checkpoints:
            record["n_seq"] = {str(k): v for k, v in checkpoints.items()}
        if rule.kind == "streak" and success is not None and row.final_test:
            record |= final_test(net, row, np.random.default_rng(set_seed.spawn(1)[0]), row.final_test)

    elif rule.kind == "testset":
        test_rng = np.random.default_rng(set_seed.spawn(1)[0])
        recent_bad = np.zeros(0, dtype=bool)
        st1 = None
        success = None
        while seen < budget and success is None:
            n = min(rule.check_interval(seen), budget - seen)
            batch = chunks.next(n, ahead=min(rule.check_interval(seen + n), budget - seen - n))
            stats = train(batch)
            seen += n
            err = _errors(stats, batch, rule.on)
            ok = _ok(err, rule)
            curve.add(seen, _squared_error(stats, batch), ok)
            recent_bad = np.concatenate([recent_bad, ~ok])[-rule.test_size :]
            if len(recent_bad) < rule.test_size or recent_bad.sum() > 2 * rule.max_wrong + 2:
                continue  # the gate: the training stream says the test cannot pass yet
            test = row.generate(rule.test_size, test_rng)
            stats = net.evaluate(test)
            terr = _errors(stats, test, rule.on)
            wrong = int((~_ok(terr, rule)).sum())
            if rule.on == "clean":
                mean_abs = float(terr.mean())
            else:
                mean_abs = float(np.abs(stats.y_last[:, 0].double().numpy() - test.targets[np.arange(test.n), test.lengths - 1, 0]).mean())
            if wrong <= rule.max_wrong:
                if st1 is None and rule.on != "clean":
                    st1 = seen
                if rule.mean_abs is None or mean_abs < rule.mean_abs:
                    success = seen
        record |= {"success": success is not None, "sequences": success if success is not None else seen}
        if st1 is not None:
            record["st1_sequences"] = st1
        if success is not None and row.final_test:
            fin = final_test(net, row, test_rng, row.final_test)
            fin["fraction_wrong"] = fin["test_wrong"] / fin["test_size"]
            record |= fin
    else:
        raise ValueError(f"unknown rule kind {rule.kind!r}")

    wall = time.perf_counter() - start
    record |= {"wall_s": wall, "steps": steps, "ns_per_step": wall / max(steps, 1) * 1e9, "curve": curve.thinned()}
    return record, net
