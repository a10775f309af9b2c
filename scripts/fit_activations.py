"""Fit the float32 exp and tanh of csrc/cell.h (``exp_poly``, ``tanh_rational``): print their coefficients
and their float32 error.

    python scripts/fit_activations.py

- exp: e^r = 1 + r + c2 r^2 + ... + c6 r^6 on |r| <= ln(2)/2 (the range left after taking out 2^n).
- tanh: x P(x^2) / Q(x^2), P and Q of degree 4 in x^2 with Q(0) = 1, for |x| <= 9 (beyond it tanh rounds to
  +-1 in float32).

Both are linearised least-squares fits of the relative error, reweighted (Lawson) toward the minimax fit. The
coefficients are printed rounded to float32; then the error of the evaluation as cell.h writes it (Horner with
fused multiply-adds, emulated in float64) is measured on random points.
"""

import numpy as np

F32 = np.float32
TANH_CLAMP = 9.0


def lawson(A, b, error, iterations=300):
    """Least squares of A c = b, reweighted toward the points where error(c) is largest (toward minimax)."""
    w = np.ones(A.shape[0])
    for _ in range(iterations):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        err = error(c)
        w = w * np.maximum(err / err.max(), 1e-8) ** 0.7
        w /= w.mean()
    return c


def fit_exp():
    """c6 .. c2 (Horner order) of e^r ~ 1 + r + sum c_k r^k."""
    h = np.log(2) / 2 * 1.001
    r = np.linspace(-h, h, 200_001)
    t = np.exp(r)
    A, b = np.stack([r**k for k in range(2, 7)], 1) / t[:, None], (t - 1 - r) / t
    c = lawson(A, b, lambda c: np.abs(A @ c - b))
    return c[::-1].astype(F32)


def fit_tanh(n=5):
    """P and Q (low order first) of tanh(x) ~ x P(x^2) / Q(x^2)."""
    x = np.concatenate([np.geomspace(1e-4, 0.3, 20_000), np.linspace(0.3, TANH_CLAMP, 200_000)])
    t, z = np.tanh(x), x * x
    # x P(z) - t Q(z) = 0 with Q(0) = 1, divided by t: the relative error, linearised.
    A = np.stack([x * z**i for i in range(n)] + [-t * z**i for i in range(1, n)], 1) / t[:, None]

    def relative_error(c):
        return np.abs(x * np.polyval(c[:n][::-1], z) / np.polyval(np.concatenate([[1.0], c[n:]])[::-1], z) - t) / t

    c = lawson(A, np.ones_like(x), relative_error)
    return c[:n].astype(F32), np.concatenate([[1.0], c[n:]]).astype(F32)


def fma(a, b, k):
    """float32 fused multiply-add, emulated: a*b+k in float64, rounded once."""
    return (a.astype(np.float64) * b + np.float64(k)).astype(F32)


def horner(coefs, v):
    acc = np.full_like(v, coefs[0])
    for k in coefs[1:]:
        acc = fma(acc, v, k)
    return acc


def exp_f32(x, c):
    """cell.h's exp_poly in float32."""
    x = np.clip(x, F32(-87.3365), F32(88.0)).astype(F32)
    n = np.round(x.astype(np.float64) * 1.44269504088896341).astype(F32)
    r = fma(-n, F32(0.693359375), x)
    r = fma(n, F32(2.12194440e-4), r)
    p = horner(list(c) + [F32(1.0), F32(1.0)], r)
    return p * np.ldexp(F32(1.0), n.astype(np.int32)).astype(F32)


def tanh_f32(x, p, q):
    """cell.h's tanh_rational in float32."""
    x = np.clip(x, -TANH_CLAMP, TANH_CLAMP).astype(F32)
    z = (x * x).astype(F32)
    return np.clip((x * horner(p[::-1], z)).astype(F32) / horner(q[::-1], z), -1, 1)


def report(name, got, want, x):
    """The largest error in units in the last place (float32 spacing at the true value)."""
    ulp = np.abs(got.astype(np.float64) - want) / np.abs(np.spacing(want.astype(F32))).astype(np.float64)
    print(f"{name} float32 error: max {ulp.max():.2f} ulp (at x = {x[ulp.argmax()]:.4g})")


def main():
    rng = np.random.default_rng(0)
    c = fit_exp()
    print("exp c6..c2:", ", ".join(f"{v:.9e}f" for v in c))
    x = rng.uniform(-87, 88, 4_000_000).astype(F32)
    report("exp", exp_f32(x, c), np.exp(x.astype(np.float64)), x)
    p, q = fit_tanh()
    print("tanh P:", ", ".join(f"{v:.9e}f" for v in p))
    print("tanh Q:", ", ".join(f"{v:.9e}f" for v in q))
    x = np.concatenate([rng.uniform(0, 12, 4_000_000), np.geomspace(1e-8, 1, 400_000)]).astype(F32)
    want = np.tanh(x.astype(np.float64))
    got = tanh_f32(x, p, q)
    report("tanh", got, want, x)
    print(f"tanh float32 error: max absolute {np.abs(got - want).max():.2e}")


if __name__ == "__main__":
    main()
