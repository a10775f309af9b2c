"""Every LSTM row of HS97's Tables 1-9: the net, its initialisation and learning rate, the task, the
stopping rule, the published trial count and the paper's figures.

All facts come from ``../shared/paper-experiments.md`` (HS97 Sec. 5, Tables 1-11). Where the paper is
silent or ambiguous, the choice made is written on the row (``choices``) and is switchable from the
command line (``--update``, ``--gradient``, ``--budget``, ``--budget-factor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Sequence

from .. import tasks
from ..tasks.adding import MIN_T as MIN_MARKED_T
from ..paper import PaperNetSpec


@dataclass(frozen=True)
class Rule:
    """How a trial stops and what success means.

    kind:
      "reber"   Exp 1: every symbol of the training and the test set predicted correctly (checked after
                every ``check_interval`` training sequences).
      "streak"  ABS(threshold) on ``window`` consecutive training sequences (Exp 2), or HS97's ST3
                (``mean_error``: also the mean training error over the window below it; Exps 4, 6).
      "nseq"    Exp 5: fewer than ``n_seq`` of the last ``window`` training sequences have an error
                above ``threshold``; every value of ``n_seq`` (descending) is a checkpoint of one run.
      "testset" Exp 3: ST1/ST2 on a fresh random test set of ``test_size`` sequences, checked after every
                ``check_interval`` training sequences.
    on:        which error: "all" (max over outputs and target steps), "last" (last target step),
               "clean" (|output - noise-free target| at the end; Exp 3c).
    """

    kind: str
    threshold: float = 0.0
    window: int = 0
    mean_error: float | None = None
    on: str = "last"
    n_seq: tuple[int, ...] = ()
    max_wrong: int = 0  # testset: ST1 allows this many misclassified sequences
    mean_abs: float | None = None  # testset: ST2's bound on the mean absolute test error
    test_size: int = 256
    check_every: int = 100
    check_fraction: float = 0.01  # reber/testset: checks at least this fraction of the sequences seen apart
    count_from_streak_start: bool = False

    def check_interval(self, seen: int) -> int:
        """Training sequences until the next check: ``check_every``, or ``check_fraction`` of the ``seen``
        so far (rounded down to a multiple of ``check_every``) when that is more. A check costs about as
        much as training on its test sequences, so on long trials (T = 1000: 2.5x the training) it is
        spread out; the sequences-to-success it reports are then exact to 1 %."""
        return max(self.check_every, int(seen * self.check_fraction) // self.check_every * self.check_every)


@dataclass(frozen=True)
class Row:
    key: str  # e.g. "4-T100"
    experiment: str  # CLI name: reber, 2a, 2b, 2c, 3a, 3b, 3c, adding, multiplication, 6a, 6b
    table: str
    label: str  # the row as the paper's table names it
    spec: PaperNetSpec
    lr: float
    init_range: float
    generate: Callable  # (n, rng) -> tasks.Batch
    rule: Rule
    trials: int  # published
    paper: dict  # the paper's figures for this row
    input_gate_bias: object = "r"
    output_gate_bias: object = "r"
    update: str = "sequence"  # weight changes once per sequence, or after every step with error
    gradient: str = "truncated"  # the 1997 learning rule, or "full" (BPTT; HS97 Sec. 6)
    grow_cell: bool = False  # Exps 2a/2b: the cells join the net only when the error stops falling
    grow_cell_after: int | None = None  # with grow_cell: they join after this many sequences instead (a probe)
    budget: int = 5_000_000  # training sequences before a trial counts as failed
    final_test: int = 2560  # fresh sequences tested after success (0: none)
    mean_length: float = 100.0  # for the ETA
    choices: tuple[str, ...] = field(default_factory=tuple)
    reber_sets: bool = False  # Exp 1: fixed training and test sets per (trial // 10)
    reber_targets: str = "next"  # Exp 1: train towards the next symbol (one-hot) or every "possible" next symbol
    seed_key: str = ""  # the key the trials' seeds derive from (default: key); variants of a row share it

    @property
    def seeds_from(self) -> str:
        return self.seed_key or self.key

    def with_(self, **kw) -> "Row":
        return replace(self, **kw)

    def variant(self, suffix: str, choice: str, **kw) -> "Row":
        """This row changed by ``kw``, under its own key (``key + suffix``: the checkpoints of both can share an
        --out) and with the same seeds (trial k meets the same initial weights and sequences); ``choice`` is
        added to the notes its report prints."""
        return replace(self, key=self.key + suffix, seed_key=self.seeds_from, choices=(*self.choices, choice), **kw)

    @property
    def paper_sequences(self) -> int | None:
        """The paper's mean training sequences for a whole trial of this row (Exp 5: to its last n_seq)."""
        if self.rule.kind == "nseq" and "n_seq" in self.paper:
            return self.paper["n_seq"][min(self.rule.n_seq)]["mean_sequences"]
        return self.paper.get("mean_sequences")

    def with_budget_factor(self, factor: float) -> "Row":
        """This row with its budget cut to ``factor`` x the paper's mean sequences (unchanged without one)."""
        if factor <= 0:
            raise ValueError(f"budget factor must be > 0, got {factor}")
        if self.paper_sequences is None:
            return self
        return self.with_(budget=min(self.budget, math.ceil(factor * self.paper_sequences)))


UPDATE_CHOICE = (
    "Error at every step: HS97 does not say when weights change. Exp 1 changes them after every step "
    "(real-time RTRL); --update sequence changes them once per sequence."
)
UPDATE_CHOICE_2 = (
    "Error at every step: HS97 does not say when weights change. Exps 2a/2b change them once per "
    "sequence: in a paired run (2 trials, same seeds) 2a needed 35,662 sequences that way and 229,761 "
    "(1 of 2 trials) with changes after every step. --update step switches."
)


def _reber_rows() -> list[Row]:
    rows = []
    for blocks, size, lr, success, after in [
        (4, 1, 0.1, 100, 39_740),
        (3, 2, 0.1, 100, 21_730),
        (3, 2, 0.2, 97, 14_060),
        (4, 1, 0.5, 97, 9_500),
        (3, 2, 0.5, 100, 8_440),
    ]:
        spec = PaperNetSpec(7, 7, blocks, size, connectivity="F", bias="ga")
        rows.append(
            Row(
                key=f"1-{blocks}x{size}-lr{lr}",
                experiment="reber",
                table="Table 1",
                label=f"LSTM {blocks} blocks x {size}, lr {lr}",
                spec=spec,
                lr=lr,
                init_range=0.2,
                generate=None,
                rule=Rule("reber", check_every=100),
                trials=30,
                paper={"weights": spec.num_weights, "success_pct": success, "mean_sequences": after}
                | ({"min_sequences": 3_800, "max_sequences": 24_100} if (blocks, lr) == (3, 0.5) else {}),
                output_gate_bias=[-1.0, -2.0, -3.0, -4.0][:blocks],
                update="step",
                budget=100_000,
                final_test=0,
                mean_length=11.5,
                reber_sets=True,
                choices=(
                    UPDATE_CHOICE,
                    "Train and test sets are checked every 100 training sequences (every 1 % of those seen so far "
                    "once that is more); by default a trial fails after "
                    "100,000 (the paper gives no limit; --budget changes it).",
                    "3 random train/test pairs x 10 initialisations: trial k uses pair k // 10.",
                    "Targets: HS97 does not say what the output units are trained towards; each step's target is "
                    "the symbol that follows (one-hot), while a prediction counts as right when the units of all "
                    "possible next symbols are the most active. Targets of 1 on every possible next symbol "
                    "(reber_targets='possible') did worse on 1-3x2-lr0.5 (10 trials, cap 40,000): 1/10 against "
                    "2/10, and 3/10 against 7/10 with the full gradient.",
                ),
            )
        )
    return rows


def _long_lag_rows() -> list[Row]:
    rows = []
    spec2 = PaperNetSpec(101, 101, 1, 1, connectivity="B", bias="none", output_gate=False, squash="sigmoid_identity")
    sequential = (
        "Sequential construction (HS97's remedy for the abuse problem): the net starts without the cell's "
        "connections to the outputs; they are added (uniform in [-0.2, 0.2]) after the first chunk of 256 "
        "training sequences whose mean error is not 1 % below the previous chunk's."
    )
    for exp, gen, on, after in [
        ("2a", tasks.two_sequence_local, "all", 5_040),
        ("2b", tasks.two_sequence_random, "last", 5_680),
    ]:
        rows.append(
            Row(
                key=f"{exp}-p100",
                experiment=exp,
                table="Table 2" if exp == "2a" else "Sec. 5.2 (2b)",
                label="LSTM, p = 100, lr 1.0",
                spec=spec2,
                lr=1.0,
                init_range=0.2,
                generate=partial(gen, p=100),
                rule=Rule("streak", threshold=0.25, window=10_000, on=on, count_from_streak_start=True),
                trials=18,
                paper={"weights": 10_504, "success_pct": 100, "mean_sequences": after},
                update="sequence",
                grow_cell=True,
                final_test=0,
                mean_length=101,
                choices=(
                    UPDATE_CHOICE_2,
                    "Success: 10,000 consecutive training sequences with max |error| < 0.25 "
                    + ("at every step" if exp == "2a" else "at the sequence end")
                    + "; 'success after' counts the sequences before that streak began.",
                    sequential,
                ),
            )
        )
    for q, p, after in [
        (50, 50, 30_000),
        (100, 100, 31_000),
        (200, 200, 33_000),
        (500, 500, 38_000),
        (1000, 1000, 49_000),
        (1000, 500, 49_000),
        (1000, 200, 75_000),
        (1000, 100, 135_000),
        (1000, 50, 203_000),
    ]:
        spec = PaperNetSpec(p + 4, 2, 2, 1, connectivity="F", bias="none")
        rows.append(
            Row(
                key=f"2c-q{q}-p{p}",
                experiment="2c",
                table="Table 3",
                label=f"q = {q}, p = {p}",
                spec=spec,
                lr=0.01,
                init_range=0.2,
                generate=partial(tasks.very_long_lag, p=p, q=q),
                rule=Rule("streak", threshold=0.2, window=10_000, on="last", count_from_streak_start=True),
                trials=20,
                paper={"weights": 6 * p + 64, "success_pct": 100, "mean_sequences": after},
                final_test=0,
                mean_length=q + 13,
                choices=(
                    "Success: 10,000 consecutive training sequences with |error| < 0.2 on both outputs at the "
                    "end; 'success after' counts the sequences before that streak began.",
                    "Table 3 gives no success rate: we compare with 100 %.",
                ),
            )
        )
    return rows


def _two_sequence_rows() -> list[Row]:
    rows = []
    spec = PaperNetSpec(1, 1, 3, 1, connectivity="F", bias="b1")
    common = dict(
        spec=spec,
        init_range=0.1,
        input_gate_bias=[-1.0, -3.0, -5.0],
        output_gate_bias=[-2.0, -4.0, -6.0],
        trials=10,
    )
    check = (
        "ST1/ST2 are checked on a fresh random test set of 256 sequences every 100 training sequences (every "
        "1 % of those seen so far once that is more), "
        "when the last 256 training sequences were nearly all right (a cheap gate; the paper does not say "
        "how often it tested)."
    )
    for variant, T, N, st1, st2, frac in [
        ("a", 100, 3, 27_380, 39_850, 0.000195),
        ("a", 100, 1, 58_370, 64_330, 0.000117),
        ("a", 1000, 3, 446_850, 452_460, 0.000078),
        ("b", 100, 3, 41_740, 43_250, 0.00828),
        ("b", 100, 1, 74_950, 78_430, 0.01500),
        ("b", 1000, 1, 481_060, 485_080, 0.01207),
    ]:
        max_wrong, mean_abs = (0, 0.01) if variant == "a" else (5, 0.04)
        rows.append(
            Row(
                key=f"3{variant}-T{T}-N{N}",
                experiment=f"3{variant}",
                table="Table 4" if variant == "a" else "Table 5",
                label=f"T = {T}, N = {N}",
                lr=1.0,
                generate=partial(tasks.noisy_two_sequence, T=T, N=N, variant=variant),
                rule=Rule("testset", threshold=0.2, on="last", max_wrong=max_wrong, mean_abs=mean_abs),
                paper={"weights": 102, "st1_sequences": st1, "mean_sequences": st2, "fraction_wrong": frac,
                       "success_pct": 100},
                budget=3_000_000,
                mean_length=T * 1.05,
                choices=(check, "By default a trial fails after 3,000,000 training sequences (the paper gives no limit)."),
                **common,
            )
        )
    for T, N, after, frac, mad in [(100, 3, 269_650, 0.00558, 0.014), (100, 1, 565_640, 0.00441, 0.012)]:
        rows.append(
            Row(
                key=f"3c-T{T}-N{N}",
                experiment="3c",
                table="Table 6",
                label=f"T = {T}, N = {N}",
                lr=0.1,
                generate=partial(tasks.noisy_two_sequence, T=T, N=N, variant="c"),
                rule=Rule("testset", threshold=0.1, on="clean", max_wrong=0, mean_abs=0.015),
                paper={"weights": 102, "mean_sequences": after, "fraction_wrong": frac, "mean_abs_error": mad,
                       "success_pct": 100},
                budget=3_000_000,
                mean_length=T * 1.05,
                choices=(check, "By default a trial fails after 3,000,000 training sequences (the paper gives no limit)."),
                **common,
            )
        )
    return rows


def _check_marked_T(T: int) -> None:  # noqa: N802 (the paper's T)
    """A length the adding and multiplication generators can make (both marks in the first half)."""
    if T < MIN_MARKED_T:
        raise ValueError(f"T must be >= {MIN_MARKED_T} for the adding and multiplication tasks, got {T}")


def adding_row(T: int, paper: dict | None = None) -> Row:
    _check_marked_T(T)
    spec = PaperNetSpec(2, 1, 2, 2, connectivity="F", bias="all")
    return Row(
        key=f"4-T{T}",
        experiment="adding",
        table="Table 7",
        label=f"T = {T}",
        spec=spec,
        lr=0.5,
        init_range=0.1,
        generate=partial(tasks.adding, T=T),
        rule=Rule("streak", threshold=0.04, window=2000, mean_error=0.01, on="last"),
        trials=10,
        paper=paper or {},
        input_gate_bias=[-3.0, -6.0],
        budget=5_000_000,
        mean_length=T * 1.05,
        choices=(
            "ST3: the mean squared training error over the last 2000 sequences < 0.01 and all of them "
            "correct (|error| < 0.04); 'success after' is the sequence at which both first hold.",
            "By default a trial fails after 5,000,000 training sequences (the paper gives no limit).",
        ),
    )


def _adding_rows() -> list[Row]:
    return [
        adding_row(T, {"weights": 93, "success_pct": 100, "mean_sequences": after, "test_wrong": wrong}
                   | ({"min_sequences": 370_000, "max_sequences": 2_020_000} if T == 1000 else {}))
        for T, wrong, after in [(100, 1, 74_000), (500, 0, 209_000), (1000, 1, 853_000)]
    ]  # fmt: skip


def multiplication_row(T: int = 100, paper: dict | None = None) -> Row:
    _check_marked_T(T)
    spec = PaperNetSpec(2, 1, 2, 2, connectivity="F", bias="all")
    return Row(
        key=f"5-T{T}",
        experiment="multiplication",
        table="Table 8",
        label=f"T = {T}, n_seq = 140 then 13",
        spec=spec,
        lr=0.1,
        init_range=0.1,
        generate=partial(tasks.multiplication, T=T),
        rule=Rule("nseq", threshold=0.04, window=2000, n_seq=(140, 13), on="last"),
        trials=10,
        paper=paper or {},
        budget=5_000_000,
        mean_length=T * 1.05,
        choices=(
            "Both thresholds come from one run per trial: the net is tested when fewer than 140 of the last "
            "2000 sequences have |error| > 0.04, then trained on until fewer than 13 do, and tested again.",
            "The paper's 'MSE' column is probably the mean absolute error (see the notes); we report both.",
        ),
    )


def _temporal_order_rows() -> list[Row]:
    rows = []
    for variant, spec, lr, igb, trials, wrong, after in [
        ("a", PaperNetSpec(8, 4, 2, 2, bias="all"), 0.5, [-2.0, -4.0], 20, 1, 31_390),
        ("b", PaperNetSpec(8, 8, 3, 2, bias="all"), 0.1, [-2.0, -4.0, -6.0], 10, 2, 571_100),
    ]:
        rows.append(
            Row(
                key=f"6{variant}",
                experiment=f"6{variant}",
                table="Table 9",
                label=f"6{variant}",
                spec=spec,
                lr=lr,
                init_range=0.1,
                generate=partial(tasks.temporal_order, variant=variant),
                rule=Rule("streak", threshold=0.3, window=2000, mean_error=0.1, on="last"),
                trials=trials,
                paper={"weights": spec.num_weights, "success_pct": 100, "mean_sequences": after, "test_wrong": wrong},
                input_gate_bias=igb,
                budget=5_000_000,
                mean_length=105,
                choices=(
                    "ST3: mean squared training error over the last 2000 sequences < 0.1 and all of them "
                    "correct (every output's |error| < 0.3).",
                ),
            )
        )
    return rows


def all_rows() -> list[Row]:
    return [
        *_reber_rows(),
        *_long_lag_rows(),
        *_two_sequence_rows(),
        *_adding_rows(),
        multiplication_row(
            100, {"weights": 93, "success_pct": 100, "mean_sequences": 482_000, "test_wrong": 139, "mse": 0.0223,
                  "n_seq": {140: {"mean_sequences": 482_000, "test_wrong": 139, "mse": 0.0223},
                            13: {"mean_sequences": 1_273_000, "test_wrong": 14, "mse": 0.0139}}}
        ),  # fmt: skip
        *_temporal_order_rows(),
    ]


EXPERIMENTS = ("reber", "2a", "2b", "2c", "3a", "3b", "3c", "adding", "multiplication", "6a", "6b")
ALIASES = {"1": "reber", "4": "adding", "5": "multiplication", "exp1": "reber", "exp4": "adding",
           "exp5": "multiplication"}  # fmt: skip


def select_rows(experiment: str, T: int | Sequence[int] | None = None) -> list[Row]:
    """The rows of one experiment, of several separated by commas (``"6a,6b"``), or of ``"all"``; a row's own key
    (``"2c-q50-p50"``, as the reports name it) selects that row alone. ``T`` (one sequence length or several)
    keeps the rows of those lengths, or makes a row for a length the paper did not run (adding and
    multiplication only)."""
    names = [name.strip() for name in experiment.split(",")]
    lengths = [None] if T is None else [T] if isinstance(T, int) else list(T)
    if len(names) > 1 or len(lengths) > 1:
        rows = [row for name in names for t in lengths for row in select_rows(name, t)]
        keys = [row.key for row in rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{experiment!r} (T: {T}) names a row twice")
        return rows
    T = lengths[0]
    name = ALIASES.get(names[0], names[0])
    by_key = [r for r in all_rows() if r.key == name and name not in EXPERIMENTS]
    if by_key:
        if T is not None and f"-T{T}-" not in name + "-":
            raise ValueError(f"--T {T}: row {name!r} is not of length {T}")
        return by_key
    if name != "all" and name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {('all',) + EXPERIMENTS}")
    rows = [r for r in all_rows() if name == "all" or r.experiment == name]
    if T is None:
        return rows
    kept = [r for r in rows if f"-T{T}-" in r.key + "-"]
    if kept:
        return kept
    if name == "adding":
        return [adding_row(T)]
    if name == "multiplication":
        return [multiplication_row(T)]
    raise ValueError(f"--T {T}: experiment {experiment!r} has no row with T = {T}")
