"""Train a reproduction row with some of its settings changed: a quick test of why a row misses the paper.

Each trial has the seeds of the unchanged row (same initial weights where the shapes agree, same sequences), so
the variant and the row compare trial by trial. Nothing is written; one line per variant is printed.

    python scripts/try_row_variant.py 1-3x2-lr0.5 --trials 10 --budget 40000            # the row as it is
    python scripts/try_row_variant.py 1-3x2-lr0.5 --set lr=1.0 --set init_range=0.1
    python scripts/try_row_variant.py 1-3x2-lr0.5 --set "input_gate_bias=[-1.0, -2.0, -3.0]"
    python scripts/try_row_variant.py 2c-q100-p100 --set spec.connectivity=cells --budget 62000

``--set FIELD=VALUE``: a field of the row (``lstm_ext.experiments.rows.Row``: lr, init_range, input_gate_bias,
output_gate_bias, update, gradient, ...), of its net (``spec.FIELD``: connectivity, bias, squash, output, ...) or a
keyword of its sequence generator (``generate.KW``: e.g. ``generate.variant=a`` gives 3b's row 3a's sequences);
VALUE is a Python literal (a bare word is a string).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import time
from multiprocessing import get_context

import numpy as np

from lstm_ext.cli import _int_at_least
from lstm_ext.experiments import rows as rows_mod
from lstm_ext.experiments import runner


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _value(item: str, current, text: str):
    """``text`` as a Python literal, of a number's type where the setting is a number now."""
    value = _literal(text)
    if _is_number(current) and not _is_number(value):
        raise SystemExit(f"--set {item!r}: expected a number, as the row's {current!r}")
    return value


def variant(row: rows_mod.Row, settings: list[str]) -> rows_mod.Row:
    """``row`` with each ``FIELD=VALUE`` of ``settings`` applied (``spec.FIELD`` for the net's topology,
    ``generate.KW`` for a keyword of its sequence generator)."""
    row_kw, spec_kw = {}, {}
    fields = {f.name for f in dataclasses.fields(row)}
    spec_fields = {f.name for f in dataclasses.fields(row.spec)}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        if name.startswith("spec."):
            if name[5:] not in spec_fields:
                raise SystemExit(f"--set {item!r}: the net spec has no field {name[5:]!r} ({sorted(spec_fields)})")
            spec_kw[name[5:]] = _value(item, getattr(row.spec, name[5:]), value)
        elif name.startswith("generate."):
            gen = row_kw.get("generate", row.generate)
            keywords = gen.keywords if isinstance(gen, functools.partial) else {}
            if name[9:] not in keywords:
                raise SystemExit(f"--set {item!r}: the row's generator has no keyword {name[9:]!r} ({sorted(keywords)})")
            kw = {**keywords, name[9:]: _value(item, keywords[name[9:]], value)}
            row_kw["generate"] = functools.partial(gen.func, *gen.args, **kw)
        elif name in fields:
            row_kw[name] = _value(item, getattr(row, name), value)
        else:
            raise SystemExit(f"--set {item!r}: a row has no field {name!r} ({sorted(fields)})")
    if spec_kw:
        row_kw["spec"] = dataclasses.replace(row.spec, **spec_kw)
    return row.with_(**row_kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("row", help="a row key of the reports, e.g. 1-3x2-lr0.5, 2c-q100-p100, 4-T100")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a changed setting (repeatable)")
    p.add_argument("--trials", type=_int_at_least(1), default=10)
    p.add_argument("--budget", type=_int_at_least(1), default=None, help="training sequences per trial (default: the row's)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--jobs", type=_int_at_least(1), default=2, help="worker processes")
    args = p.parse_args()
    row = next((r for r in rows_mod.all_rows() if r.key == args.row), None)
    if row is None:
        raise SystemExit(f"no row {args.row!r}")
    row = variant(row, args.set)
    budget = row.budget if args.budget is None else args.budget
    start = time.perf_counter()
    with get_context("spawn").Pool(args.jobs) as pool:
        records = pool.map(runner._worker, [(row, t, args.seed, budget) for t in range(args.trials)])
    ok = [r["sequences"] for r in records if r["success"]]
    mean = f"{np.mean(ok):,.0f}" if ok else "-"
    per_trial = ", ".join(f"{r['sequences']:,}" if r["success"] else "-" for r in records)
    paper = row.paper_sequences
    print(f"{args.row} {' '.join(args.set) or '(as is)'}: {len(ok)}/{args.trials} within {budget:,} sequences, "
          f"mean {mean} (paper: {row.paper.get('success_pct', '-')} %, {paper if paper is None else f'{paper:,}'}); "
          f"per trial: {per_trial} ({time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
