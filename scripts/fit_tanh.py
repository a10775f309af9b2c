"""Fit the float32 tanh of csrc/cell.h (``tanh_rational``) and print its coefficients and error.

    python scripts/fit_tanh.py

tanh(x) ~ x * P(x^2) / Q(x^2) with P and Q of degree 4 in x^2 (Q(0) = 1), for |x| <= 9 (beyond it
tanh rounds to +-1 in float32). The fit is a linearised least-squares fit of the relative error, reweighted
(Lawson) toward the minimax fit. The coefficients are printed rounded to float32, then the float32 error
of the evaluation as cell.h writes it (Horner with fused multiply-adds, emulated in float64) is measured
on random points: cell.h's comment quotes these figures.
"""

import numpy as np

CLAMP = 9.0
DEGREE = 5  # coefficients in P and in Q


def fit(n=DEGREE, c=CLAMP, iterations=300):
    x = np.concatenate([np.geomspace(1e-4, 0.3, 20_000), np.linspace(0.3, c, 200_000)])
    t, z = np.tanh(x), x * x
    # x P(z) - t Q(z) = 0 with Q(0) = 1, divided by t: the relative error, linearised.
    A = np.stack([x * z**i for i in range(n)] + [-t * z**i for i in range(1, n)], 1) / t[:, None]
    w = np.ones_like(x)
    for _ in range(iterations):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(A * sw[:, None], sw, rcond=None)
        p, q = coef[:n], np.concatenate([[1.0], coef[n:]])
        err = np.abs(x * np.polyval(p[::-1], z) / np.polyval(q[::-1], z) - t) / t
        w = w * np.maximum(err / err.max(), 1e-8) ** 0.7
        w /= w.mean()
    return p.astype(np.float32), q.astype(np.float32)


def tanh_f32(x, p, q, c=CLAMP):
    """cell.h's evaluation in float32; a*b+c in float64 then rounded stands in for the fused multiply-add."""
    f32 = np.float32

    def fma(a, b, k):
        return (a.astype(np.float64) * b + np.float64(k)).astype(f32)

    x = np.clip(x, -c, c).astype(f32)
    z = (x * x).astype(f32)
    P = np.full_like(x, p[-1])
    for k in p[-2::-1]:
        P = fma(P, z, k)
    Q = np.full_like(x, q[-1])
    for k in q[-2::-1]:
        Q = fma(Q, z, k)
    return np.clip((x * P).astype(f32) / Q, -1, 1)


def main():
    p, q = fit()
    print("P:", ", ".join(f"{v:.9e}f" for v in p))
    print("Q:", ", ".join(f"{v:.9e}f" for v in q))
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 12, 4_000_000), np.geomspace(1e-8, 1, 400_000)]).astype(np.float32)
    want = np.tanh(x.astype(np.float64))
    got = tanh_f32(x, p, q).astype(np.float64)
    ulp = np.abs(got - want) / np.abs(np.spacing(want.astype(np.float32))).astype(np.float64)
    print(f"float32 error: max {ulp.max():.2f} ulp (at x = {x[ulp.argmax()]:.4g}), "
          f"max absolute {np.abs(got - want).max():.2e}")


if __name__ == "__main__":
    main()
