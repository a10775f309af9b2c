"""Why rows of the reproduction miss the paper: what we measured, per experiment.

The report prints an experiment's note under its table when one of its rows misses the fidelity target (and
the run was not a --quick smoke run, nor stopped below twice the paper's mean). Each note states measured
figures and the command or report that gives them; the README's section "What the runs say, and what is
open" has the details, and ``lstm-ext diagnose`` the probes. These are notes on our runs of 2026-11 with
the paper's settings, not a model of the paper: a run with other settings (``--gradient full``,
``--output linear``) may meet where a note says the paper's setting misses.
"""

from __future__ import annotations

__all__ = ["MISS_IN_SHORT", "MISS_NOTES"]

_LATE_TRIALS = (
    "Our trials that learn do so at about the paper's pace or faster; the row misses because a few trials learn "
    "late or not within the cap. "
)

MISS_NOTES: dict[str, str] = {
    "reber": (
        "With HS97's net and truncated gradient our nets stay near chance at the recall step (the T or P after the "
        "inner string) for tens of thousands of strings, or learn it and then miss one local step wherever it comes "
        "(of 1-3x2-lr0.5's 16 trials that have not learned by 200,000 strings, 6 and 10; e.g. every P after V, whose "
        "successor the net must tell from that of the inner BP's P: `lstm-ext diagnose --probe reber-failures`). "
        "The same rule learns where the outputs also see the inputs (GSC00's shortcut connections, 49 weights "
        "beyond the paper's counts, which rule them out): within 100,000 strings 27 of 30 trials of 4 blocks x 1, "
        "lr 0.1 (mean 36,215; the paper 39,740; its net on our seeds 3) and 22 of 30 of 3 blocks x 2, lr 0.5 "
        "(14,482; the paper's net 9), and GSC00's standard LSTM for this grammar 26 of 30 (6,004; GSC00 reports 74 % "
        "on its own test) (`lstm-ext diagnose --probe reber-topology`). What let HS97's nets, whose outputs see the "
        "cells only, learn is not in the paper. On the paper's net the full gradient does better: over the 30 "
        "trials of 1-3x2-lr0.5 within 40,000 strings it solves 18 (mean 15,522; the paper 8,440 in all 30), the "
        "truncated rule 3, and 2 with one weight change per string (`scripts/try_row_variant.py 1-3x2-lr0.5 "
        "--trials 30 --budget 40000 --set gradient=full`); HS97 reports no difference between the two rules. "
        "Within 1,000,000 strings the truncated rule learns in 16 of 30 trials (mean 122,019), the full gradient "
        "in 22 (35,895). A second implementation of the truncated rule, App. A.1 written out in NumPy "
        "(`scripts/reber_numpy_rtrl.py`), solves 1 of 10, and 7 of 30 within 40,000 (`--trials 30`). With the "
        "squashes as Table 10's caption has them (g in [-1, 1], h in [-2, 2]; the text and App. A.1 give the "
        "reverse) it solves 12 of 30 (mean 20,467; `--trials 30 --caption-squashes`): not the explanation either. "
        "Other learning rates, initial ranges, gate-bias schedules, no gate feedback and targets on every possible "
        "next symbol (`scripts/try_row_variant.py`) gave 0-3 of 10."
    ),
    "2a": (
        "The local transitions are right within about 2,560 sequences, but the chunks' error keeps falling by "
        "more than 1 % until about 9,000, so the cell joins (HS97's sequential construction) after the paper's "
        "whole mean. Its state never falls within a sequence (g in [0, 1], h the identity) and is about 25 at "
        "the last step; in the first chunk after it joins its weights to the outputs go to about -60, the cell "
        "acts as a bias (HS97's abuse problem) and the local predictions break before the long-lag one is "
        "learned (`lstm-ext diagnose`). With a cap of 400,000, 2a learned in 35,662 sequences (7x the paper's "
        "5,040); 2b did not learn. Joining earlier does not help: with the cell joining after a fixed 2,560 or "
        "5,120 sequences, 7 and 8 of 2a's 18 trials learn within 60,000 (mean 43,278 and 37,458), against 8 "
        "(33,674) with the rule, and 2b none of 8 either way (`scripts/try_row_variant.py 2a-p100 --budget 60000 "
        "--set grow_cell_after=2560`); after 256 or 1,024, none of 4."
    ),
    "2c": (
        "With connectivity F and no biases the gates' activations (about 0.5) enter every cell's net input like "
        "a bias, so the untrained cell states drift to |s| of 5-6 by the end of a q = 100 sequence, where h' "
        "lets a few per cent of the error into the cells (`lstm-ext diagnose`). With a cap of 10x the paper's "
        "mean, q = 50 learns in 17 of 20 trials (4.6x the paper's mean) and q = 100, 200, 500 in none. The "
        "q = 100 row without the gates' feedback (24 weights fewer than the paper's count) learns in all 20 "
        "trials within 10x, at 5.0x the paper's mean (`scripts/try_row_variant.py 2c-q100-p100 --set "
        "spec.connectivity=cells`). Without that drift our learning time still grows with the lag, where the "
        "paper's barely does: the same variant with initial weights in [-0.1, 0.1] needs 58,687, 86,901 and "
        "159,340 sequences (10, 10 and 4 of 10 trials within 330,000) at q = 50, 100 and 200, the paper 30,000, "
        "31,000 and 33,000. The drift grows with the lag: before any training, at least half of each q = 1000 "
        "row's 20 initial nets pass less than a thousandth of h'(0) into their cells (`lstm-ext diagnose --probe "
        "2c-drift`), yet the paper's nets learned every q = 1000 row in all 20 trials; so they cannot have "
        "started as drifted as ours, and what in HS97's 2c nets kept the states near 0 is not in the paper. Drift "
        "is not all, though: in the whole run (cap 3x) none of the trials whose initial nets drift little (h'(s)/h'(0) "
        "> 0.1 at the end, 2-11 of 20 per row at q >= 100) learned either. Smaller initial weights than the paper's "
        "[-0.2, 0.2] make the short lags meet: with [-0.02, 0.02] and the paper's net, q = 50 and q = 100 learn in all "
        "20 trials (mean 26,577 and 34,129; the paper 30,000 and 31,000), q = 200 in 7 of 20 (79,064) and no row with "
        "q >= 500 in any, cap 3x (`lstm-ext reproduce 2c --init-range 0.02 --budget-factor 3`, "
        "`results/reproduction-2c-init`). At q = 100, [-0.01, 0.01] learns 10 of 10 (38,963), [-0.03, 0.03] 6 of 10, "
        "[-0.05, 0.05] and [-0.1, 0.1] none of 20 (`scripts/try_row_variant.py 2c-q100-p100 --budget 93000 --set "
        "init_range=0.05`); a range shrunk with the lag does not carry it further (q = 200 with [-0.01, 0.01]: 1 of "
        "10; q = 500 with [-0.004, 0.004] and q = 1000 with [-0.002, 0.002]: none); with [-0.02, 0.02] and a cap of "
        "10x, q = 200 learns in 17 of 20 trials (91,396) and q = 500 in none. In a probed trial at q = 500 the states "
        "drift again while the largest weight is still a few hundredths, and the classes stay as close in s as at "
        "the start (`lstm-ext diagnose --probe 2c-init`). So our learning time grows with the lag even from a start "
        "without drift, where the paper's barely does."
    ),
    "3a": _LATE_TRIALS + "With a cap of 8,600,000 every trial of T = 100, N = 3 learns (mean 2.8x the paper's; "
    "one trial needs 818,100); with a cap of 5x the paper's mean, T = 1000 meets the paper. With seeds 1, 2 and 3 "
    "(`lstm-ext reproduce 3a --seed 1 --budget-factor 3`) both N = 3 rows meet the paper, 10 of 10 trials each "
    "(T = 100: means 20,390, 19,360 and 17,640; T = 1000: 350,090, 413,680 and 436,550): over 40 trials, 39 of "
    "each row learn within the cap (against the paper's 10 of 10: p = 0.8, no sign of a gap).",
    "3b": "At T = 1000, with a cap of 5x the paper's mean, 7 of 10 trials learn, at 4.0x the paper's mean "
    "(`lstm-ext reproduce 3b --T 1000 --budget-factor 5`); the others had not by 2,425,400. It is not the noise "
    "on the informative element: with 3a's sequences (that element noise-free) under this row's rule and seeds, "
    "7 of 10 learn as well (mean 1,998,200 against 1,931,114; the 6 trials that learn in both within 1.01-1.07x "
    "of their counts here; `scripts/try_row_variant.py 3b-T1000-N1 --set generate.variant=a --budget 2425400`). "
    "It is the one informative element among 1000 steps: with three (3a, N = 3) our nets learn T = 1000 in "
    "339,322 (0.75x the paper's mean), while the paper's nets took about as long with one (3b: 485,080) as with "
    "three (3a: 452,460). At T = 100 one informative element costs our nets little more than three (3a: 38,830 "
    "against 33,800). The larger initial range that shortens the adding task's plateau does not help here: "
    "with weights in [-0.5, 0.5] none of 10 trials learns within 2x the paper's mean "
    "(`scripts/try_row_variant.py 3b-T1000-N1 --set init_range=0.5 --budget 970160`).",
    "adding": (
        "With a cap of 15x the paper's mean every trial learns, at 8.3x (T = 100), 4.3x (500) and 4.0x (1000) "
        "the paper's mean sequences. At T = 100 the net is right on about 96 % of the sequences after 80,000, "
        "but keeps about 0.4 % errors, all on targets near 0 or 1, which the logistic output unit reaches only "
        "by saturating, so ST3's 2000 right in a row comes late (`lstm-ext diagnose`). With linear output units "
        "(`--output linear`, not the paper's) T = 100 meets the paper (1.16x); T = 500 and 1000 do not. There "
        "the time is spent at chance: in the 15x run each trial's training error stays above half the "
        "constant predictor's (MSE 1/24) until 634,368-851,456 sequences at T = 500 (the paper's whole mean is 209,000) "
        "and 1,889,280-4,651,776 at T = 1000 (the paper's 853,000), then the trial succeeds within a further "
        "75,565-399,393 and 48,983-389,537 (the learning curves of `results/reproduction-adding`; at T = 100 "
        "the plateau ends at 28,160-52,736). In a probed trial of T = 500 the cells do not drift on the plateau "
        "(h'(s)/h'(0) at least 0.98 at the sequence end); what grows slowly are the weights that make a block "
        "store the marked values: its input gate's weight from the marker, which opens the gate there, and its "
        "cells' weights from the value and to the output. The cells' weights to the output shrink from about "
        "0.1 to 0.02 or less within the first 100,000 sequences at T = 500, and not at T = 100 "
        "(`lstm-ext diagnose --probe adding-plateau`). Twice the learning "
        "rate, input-gate biases -1 and -2, and the full gradient leave all 10 trials of T = 500 at chance "
        "for 600,000 sequences (`scripts/try_row_variant.py 4-T500 --budget 600000 --set lr=1.0`). What "
        "shortens the plateau is a larger initial range than the paper's [-0.1, 0.1]: within 600,000 sequences "
        "(20 trials of T = 500) [-0.4, 0.4] learns 11, [-0.5, 0.5] 13 (mean 470,586), [-0.7, 0.7] 7 and "
        "[-1, 1] 2, the paper's range none (`--trials 20 --set init_range=0.5`); [-0.5, 0.5] with linear "
        "output units 16 of 20 (mean 345,568, 1.65x the paper's), linear units alone none. At T = 1000 "
        "[-0.5, 0.5] learns 5 of 10 within 2x the paper's mean (mean 967,798, 1.13x; with linear units "
        "808,918), the paper's range none. In the rows' own runs with a cap of 3x (`lstm-ext reproduce adding "
        "--init-range 0.5 --budget-factor 3`) [-0.5, 0.5] learns 8 of 10 trials of T = 500 (mean 493,278, 2.4x) "
        "and 9 of 10 of T = 1000 (1,475,320, 1.73x), none of T = 100, whose miss is the output unit; with linear "
        "output units as well (`--output linear`) T = 100 meets the paper (59,881) and T = 500 and 1000 learn 9 of "
        "10 each, at 1.60x and 1.64x the paper's mean. The paper states [-0.1, 0.1] for this experiment."
    ),
    "multiplication": "With a cap of 15,000,000 every trial reaches n_seq = 13, at 3.6x the paper's mean "
    "(n_seq = 140: 1.9x): the miss is speed alone. With seeds 1, 2 and 3 (cap 3x; `lstm-ext reproduce "
    "multiplication --seed 1 --budget-factor 3`) 7 of 10 trials reach n_seq = 13 each (27 of 40 with seed 0's 6; "
    "against the paper's 10 of 10, p = 0.034), and n_seq = 140 comes at 2.4x, 2.6x and 1.6x the paper's mean "
    "(seed 0: 1.9x), so that row meets the paper with two of the four seeds. The larger initial range that "
    "shortens the adding task's plateau does not help here: with weights in [-0.5, 0.5] 4 of 10 trials reach "
    "n_seq = 13 within 2x the paper's mean, with the paper's range 5 (`scripts/try_row_variant.py 5-T100 "
    "--budget 2546000 --set init_range=0.5`); with linear output units as well 8 of 10 (mean 989,590; linear "
    "units alone 7, mean 1,428,687).",
    "6a": _LATE_TRIALS + "With a cap of 5x the paper's mean all 20 trials learn (mean 29,091; the paper 31,390).",
    "6b": "7 of 10 trials learn in 177,740-351,456 sequences, below the paper's mean of 571,100; the other three have "
    "not learned by 8,600,000 (`lstm-ext reproduce 6b --budget 8600000`). Those three never get 2000 training "
    "sequences right in a row (ST3's window; their longest runs within 400,000: 27, 45 and 1,900), and they are "
    "not at chance: they answer whole classes as one other class. Trial 8 had 98 % of a fresh test set right at "
    "200,000 and then lost three classes (`lstm-ext diagnose --probe 6b`). Where a failing trial loses what it "
    "had learned, a block of cells it was using runs away: the block's mean |s| at the sequence end jumps (trial "
    "8: from 15 to 165, as its test right falls from 0.98 to 0.63; trial 0: from 65 to 178), where h' lets almost "
    "no error in, and stays there (the same probe). The row's own seeds are not unlucky: over 40 trials (seeds "
    "0-3, cap 3x) 22 learn (`lstm-ext reproduce 6b --seed 1 --budget-factor 3`: 6 of 10; seed 2: 6; seed 3: 3; "
    "against the paper's 10 of 10, p = 0.006). With the learning rate doubled the same three trials fail; halved, "
    "9 of 10 do (`scripts/try_row_variant.py 6b --set lr=0.2`, `lr=0.05`). Within 600,000 sequences the full "
    "gradient learns 4 of 10 (the truncated rule 7), and none of these changes reaches 20 of 20 (20 trials; the "
    "row as it is: 14): no feedback of the gates (connectivity 'cells') 16, initial weights in [-0.2, 0.2] 12, "
    "input-gate biases -1, -2, -3: 6, -3, -6, -9: 10, output-gate biases -2, -4, -6: 14, six blocks of one cell "
    "12, weight changes after every step 10 (`scripts/try_row_variant.py 6b --trials 20 --budget 600000 --set "
    "spec.connectivity=cells`).",
}
MISS_NOTES["2b"] = MISS_NOTES["2a"]

# One sentence per experiment: the gist of its note, for the report's "At a glance" (the note under the
# experiment's table has the figures behind it and the commands that give them).
MISS_IN_SHORT: dict[str, str] = {
    "reber": "Our nets, whose outputs see the cells only (HS97's topology), seldom learn to recall the T or P "
    "after the inner string within 3x the paper's mean; the same rule learns once the outputs also see the inputs "
    "(27 of 30 trials of 4 blocks x 1, lr 0.1), and the full gradient does better on the paper's net (18 of 30 "
    "within 40,000 strings on 3 blocks x 2, lr 0.5, against 3).",
    "2a": "The cell joins (HS97's sequential construction) only after about 9,000 sequences, the paper's whole "
    "mean, and is then abused as a bias; 2a learns in 35,662 sequences with a cap of 400,000 (7x), 2b not at all.",
    "2c": "The gates' activations (about 0.5) act as a bias on the cells' input, so the untrained states drift to "
    "where h' lets almost no error in; from initial weights in [-0.02, 0.02] q = 50 and 100 meet the paper, but "
    "q >= 200 stays slow or fails: our learning time grows with the lag, the paper's barely does.",
    "3a": "A few trials learn late; with seeds 1, 2 and 3 both N = 3 rows meet the paper (39 of 40 trials over "
    "four seeds, p = 0.8).",
    "3b": "At T = 1000 the single informative element among 1000 steps: 7 of 10 trials learn within 5x, at 4.0x "
    "the paper's mean.",
    "adding": "T = 100: the logistic output unit reaches targets near 0 or 1 late (linear output units meet the "
    "paper); T = 500 and 1000: a long plateau at chance, which initial weights in [-0.5, 0.5] shorten (with linear "
    "output units as well, 9 of 10 trials each at 1.6x the paper's mean).",
    "multiplication": "Speed alone: every trial reaches n_seq = 13 within 15,000,000 sequences, at 3.6x the "
    "paper's mean.",
    "6a": "A few trials learn late; with a cap of 5x the paper's mean all 20 learn (mean 29,091; the paper 31,390).",
    "6b": "3 of 10 trials lose classes they had learned as a block's state runs away (22 of 40 learn over four "
    "seeds, p = 0.006); with half the learning rate 9 of 10 learn.",
}
MISS_IN_SHORT["2b"] = MISS_IN_SHORT["2a"]
