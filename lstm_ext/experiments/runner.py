"""Run table rows: trials in parallel worker processes (or side by side on a GPU), a checkpoint line after
every finished trial, then the records, the report beside the paper's tables, and the learning curves.

On a GPU (``device="cuda"``) every trial is a thread of this process with its own CUDA stream: its chunks train
in the op's CUDA kernel (one CTA per net), so as many trials train at once as there are threads, each on an SM.

The checkpoint is ``<out>/trials.jsonl``: one JSON line per finished trial, appended and fsync'ed.
A run that is interrupted (even by ``kill -9``) and started again with the same ``--out`` reads it,
skips the finished trials and runs the rest; a torn last line is ignored.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import signal
import time
from functools import partial
from pathlib import Path

import torch

from .protocol import protocol_version, run_trial
from .rows import Row

QUICK_BUDGET = 10_000  # training sequences per trial in --quick smoke runs
QUICK_TEST = 256


def hardware(device: str = "cpu") -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.device(device).type == "cuda":
        text += f", trained on {torch.cuda.get_device_name(torch.device(device))}"
    return text


class CheckpointError(ValueError):
    """A checkpoint line that is whole JSON but no trial record: not a file this package wrote."""


# What every trial record has (run_trial's record; older ones lack update and protocol, which _key defaults).
_RECORD_KEYS = frozenset({"row", "trial", "seed", "budget", "success", "sequences"})


def load_checkpoint(path: Path) -> dict:
    """{(row, trial, seed, budget, update, protocol): record} of the finished trials in ``path``. Lines that are not
    JSON (torn by an interruption) are skipped; a JSON line that is not a trial record is a CheckpointError."""
    done = {}
    if not path.exists():
        return done
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by an interruption
            if not isinstance(rec, dict) or not _RECORD_KEYS <= rec.keys():
                raise CheckpointError(
                    f"{path}, line {lineno}: not a trial record of lstm-ext reproduce (a record has the keys "
                    f"{', '.join(sorted(_RECORD_KEYS))}); move the file away or give another --out"
                )
            done[_key(rec)] = rec
    return done


def _key(rec: dict) -> tuple:
    return rec["row"], rec["trial"], rec["seed"], rec["budget"], rec.get("update", "sequence"), rec.get("protocol", 1)


def _task_key(task) -> tuple:
    row, trial, seed, budget = task
    return row.key, trial, seed, budget, row.update, protocol_version(row)


def _append(path: Path, record: dict) -> None:
    line = json.dumps(record) + "\n"
    with open(path, "a+b") as f:  # writes go to the end whatever the position
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a line torn by an interruption: end it, or this record would join it
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def _expected_cost(row: Row, budget: int) -> float:
    """Sequence steps a trial is expected to take (for the progress bar's ETA)."""
    sequences = min(row.paper_sequences or budget, budget)
    return max(sequences * row.mean_length, 1.0)


def _worker(task, prefetch: bool = False):
    """One trial on one core; ``prefetch``: generate its chunks on another, idle one (run_trial)."""
    row, trial, seed, budget = task
    torch.set_num_threads(1)
    return run_trial(row, trial, seed=seed, budget=budget, prefetch=prefetch)


def _cuda_worker(task, device: torch.device):
    """One trial on the GPU, on a stream of its own (trials in other threads run beside it)."""
    row, trial, seed, budget = task
    with torch.cuda.stream(torch.cuda.Stream(device=device)):
        return run_trial(row, trial, seed=seed, budget=budget, prefetch=False, device=device)


def cuda_jobs(device) -> int:
    """Trials side by side on a GPU by default: one per SM (each trains in one CTA)."""
    return torch.cuda.get_device_properties(torch.device(device)).multi_processor_count


def run_rows(
    rows: list[Row],
    out: Path,
    trials: int | None = None,
    seed: int = 0,
    jobs: int | None = None,
    budget: int | None = None,
    quick: bool = False,
    progress: bool = True,
    device: str = "cpu",
) -> list[dict]:
    """Run every trial of ``rows`` that ``out`` has not finished yet; return all their records.

    ``device="cpu"``: ``jobs`` worker processes (default: one per core). A CUDA device: ``jobs`` trials side by
    side, threads of this process with a stream each (default: one per SM)."""
    device = torch.device(device)
    if device.type == "cuda" and any(r.gradient == "full" for r in rows):
        raise ValueError("the full gradient trains on the CPU only: run --gradient full with --device cpu")
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "trials.jsonl"
    if quick:
        rows = [r.with_(final_test=min(r.final_test, QUICK_TEST), rule=_quick_rule(r)) for r in rows]
        budget = QUICK_BUDGET if budget is None else budget
    plan = []
    for row in rows:
        b = row.budget if budget is None else budget
        for t in range(trials if trials is not None else (1 if quick else row.trials)):
            plan.append((row, t, seed, b))
    done = load_checkpoint(ckpt)
    todo = [task for task in plan if _task_key(task) not in done]
    cost = {id(task): _expected_cost(task[0], task[3]) for task in todo}
    default_jobs = cuda_jobs(device) if device.type == "cuda" else os.cpu_count() or 1
    jobs = max(1, min(jobs or default_jobs, len(todo) or 1))
    if len(todo) < len(plan):
        print(f"resuming: {len(plan) - len(todo)} of {len(plan)} trials already finished in {ckpt}", flush=True)
    bar = _progress_bar(sum(cost.values()), len(todo), progress)
    # longest first, so the tail of the run is not one long trial on one core
    todo.sort(key=lambda task: -cost[id(task)])
    def finished(task, rec):
        _append(ckpt, rec)
        done[_key(rec)] = rec
        bar.update(cost[id(task)], rec)

    try:  # an interruption (Ctrl-C) leaves the finished trials in the checkpoint, the rest to a resumed run
        if device.type == "cuda":
            for task, rec in _side_by_side(todo, jobs, partial(_cuda_worker, device=device)):
                finished(task, rec)
        elif jobs == 1:  # in this process; a second core, if any, generates the sequences ahead
            for task in todo:
                finished(task, _worker(task, prefetch=(os.cpu_count() or 1) > 1))
        elif todo:
            with mp.get_context("spawn").Pool(jobs, initializer=_ignore_interrupts) as pool:
                for task, rec in _unordered(pool, todo):
                    finished(task, rec)
    finally:
        bar.close()
    return [done[_task_key(t)] for t in plan]


def _side_by_side(todo, jobs: int, worker):
    """(task, record) as trials finish, each ``worker(task)`` in one of ``jobs`` threads of this process."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(jobs, thread_name_prefix="lstm_ext-trial") as pool:
        futures = {pool.submit(worker, task): task for task in todo}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:  # interrupted (or a trial failed): start no more trials; those under way end with their trial
            pool.shutdown(wait=False, cancel_futures=True)


def _unordered(pool, todo):
    """(task, record) as trials finish, in any order."""
    results = pool.imap_unordered(_indexed_worker, list(enumerate(todo)))
    for i, rec in results:
        yield todo[i], rec


def _ignore_interrupts() -> None:
    """In a worker process: Ctrl-C reaches the whole process group, but only the parent acts on it (it ends the
    pool), so that the workers do not each print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _indexed_worker(item):
    i, task = item
    return i, _worker(task)


def _quick_rule(row: Row):
    from dataclasses import replace

    r = row.rule
    return replace(r, test_size=min(r.test_size, QUICK_TEST))


class _progress_bar:
    """A tqdm bar over expected sequence steps (so its ETA weighs long trials right)."""

    def __init__(self, total_cost: float, n_trials: int, enabled: bool):
        self.n = 0
        self.n_trials = n_trials
        self.bar = None
        if enabled and n_trials:
            from tqdm import tqdm

            self.bar = tqdm(total=total_cost, unit="step", unit_scale=True, desc=f"trials 0/{n_trials}",
                            bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")  # fmt: skip

    def update(self, cost: float, rec: dict):
        self.n += 1
        if self.bar is not None:
            self.bar.set_description(f"trials {self.n}/{self.n_trials} (last: {rec['row']} #{rec['trial']})")
            self.bar.update(cost)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def summary_record(rows: list[Row], records: list[dict], *, command: str, wall_s: float, quick: bool,
                   device: str = "cpu") -> dict:  # fmt: skip
    """The run as one JSON document: per row, our figures beside the paper's."""
    from .report import summarize_row

    return {
        "command": command,
        "hardware": hardware(device),
        "device": torch.device(device).type,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": wall_s,
        "trial_s": float(sum(r["wall_s"] for r in records)),
        "quick": quick,
        "rows": [summarize_row(row, [r for r in records if r["row"] == row.key]) for row in rows],
    }
