"""Two runs of ``lstm-ext reproduce`` side by side: whether their trials came out the same, and their times.

    python scripts/compare_runs.py results/reproduction-all /tmp/other-run [--out FILE]

Each run is an ``--out`` directory (``trials.jsonl``, the checkpoint, and ``results.json``, written at the end).
Trials are matched by their checkpoint key (row, trial, seed, budget, update, protocol); a trial is the same in both
when every field of its record but the times (``wall_s``, ``ns_per_step``) is equal: success, sequences, test
figures and the whole learning curve. Prints (or writes to FILE) Markdown: each run's command, hardware and wall
time, the count of trials that match, the first differences, and each row's time in both runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TIME_FIELDS = ("wall_s", "ns_per_step")


def _summary(run: Path) -> dict:
    path = run / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _trials(run: Path) -> dict:
    from lstm_ext.experiments.runner import load_checkpoint  # keyed as a resumed run matches them

    return load_checkpoint(run / "trials.jsonl")


def _outcome(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIME_FIELDS}


def compare(run_a: Path, run_b: Path, show: int = 10) -> str:
    a, b = _trials(run_a), _trials(run_b)
    common = sorted(set(a) & set(b), key=str)
    differ = [k for k in common if _outcome(a[k]) != _outcome(b[k])]
    lines = [f"# {run_a} (A) and {run_b} (B) side by side", "",
             f"`python scripts/compare_runs.py {run_a} {run_b}`", "", "| | run A | run B |", "|---|---|---|"]
    summaries = (_summary(run_a), _summary(run_b))
    for name, field in (("command", "command"), ("hardware", "hardware"),
                        ("wall s of the last invocation", "wall_s"), ("s of trials (sum over trials)", "trial_s")):
        cells = []
        for summary in summaries:
            value = summary.get(field, "–")
            if isinstance(value, float):
                value = f"{value:.0f}"
            elif field == "command" and value != "–":
                value = f"`{value}`"
            cells.append(value)
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    same = len(common) - len(differ)
    lines += ["", f"Trials in both: {len(common)} (only in A: {len(set(a) - set(b))}, only in B: "
              f"{len(set(b) - set(a))}). The same in both (every field but {', '.join(TIME_FIELDS)}): {same} of "
              f"{len(common)}."]  # fmt: skip
    for k in differ[:show]:
        fields = sorted(f for f in _outcome(a[k]) | _outcome(b[k]) if a[k].get(f) != b[k].get(f))
        lines.append(f"- differs: row {k[0]} trial {k[1]}: {', '.join(fields)}")
    if len(differ) > show:
        lines.append(f"- and {len(differ) - show} more")
    rows = sorted({k[0] for k in common})
    lines += ["", "| row | trials | wall s, A (sum over trials) | wall s, B | B / A |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        keys = [k for k in common if k[0] == row]
        ta, tb = sum(a[k]["wall_s"] for k in keys), sum(b[k]["wall_s"] for k in keys)
        ratio = f"{tb / ta:.2f}" if ta > 0 else "–"
        lines.append(f"| {row} | {len(keys)} | {ta:.1f} | {tb:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: print it)")
    args = p.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not (run / "trials.jsonl").is_file():
            p.error(f"{run}: no trials.jsonl there (not an --out directory of lstm-ext reproduce)")
    from lstm_ext.experiments.runner import CheckpointError

    try:
        text = compare(args.run_a, args.run_b)
    except CheckpointError as e:
        p.error(str(e))
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
