"""Fit the polynomial coefficients of libai_vit/kernels/csrc/vecmath.h (float64 least squares on
Chebyshev nodes, reweighted toward the minimax error) and print them as C++ constants.

    python generators/fit_kernel_polynomials.py

Each fit prints its maximum relative error in float64; the kernels' float32 errors are measured
by tests/kernels/test_gelu.py.
"""

import math

import numpy as np

INV_SQRT2 = 1 / math.sqrt(2)
# Phi(x) = 0.5 erfc(-x/sqrt2): near 0 from an odd polynomial, in the tails from erfc's form
PHI_CENTRE = (-0.5, math.sqrt(2))  # the centre polynomial's interval of x
ERFC_P = 0.5  # s = 1 / (1 + ERFC_P t) maps t = |x|/sqrt2 in [T_LO, T_HI] into (0, 1)
T_LO, T_HI = 0.5 * INV_SQRT2, 9.3  # erfc(9.3) / 2 is below float32's smallest normal


def chebyshev_nodes(lo, hi, n):
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos((2 * k + 1) * np.pi / (2 * n))


def fit(target, lo, hi, degree, variable=lambda v: v, n=3000, rounds=40):
    """Coefficients c (lowest first) of sum c_k variable(v)^k ~ target(v), minimising the
    maximum relative error over [lo, hi]; returns (c, that error)."""
    v = chebyshev_nodes(lo, hi, n)
    y = np.array([target(a) for a in v])
    basis = np.stack([variable(v) ** k for k in range(degree + 1)], axis=1) / np.abs(y)[:, None]
    rhs, weight = np.sign(y), np.ones(n)
    for _ in range(rounds):  # Lawson's reweighting: the error's peaks get more weight
        c, *_ = np.linalg.lstsq(basis * weight[:, None], rhs * weight, rcond=None)
        err = np.abs(basis @ c - rhs)
        weight = weight * np.sqrt(err / err.max()) + 1e-6
        weight /= weight.max()
    return c, err.max()


def centre(x):  # (Phi(x) - 0.5) / x as a function of x^2
    return 0.5 * math.erf(x * INV_SQRT2) / x if x else 0.5 * math.sqrt(2 / math.pi)


def tail(s):  # erfc(t) (1 + p t) exp(t^2) as a function of s = 1 / (1 + p t)
    t = (1 / s - 1) / ERFC_P
    return math.erfc(t) * (1 + ERFC_P * t) * math.exp(t * t)


def expm1_rest(r):  # (e^r - 1 - r) / r^2
    return (math.expm1(r) - r) / (r * r) if abs(r) > 1e-4 else 0.5 + r / 6 + r * r / 24


FITS = {
    "kPhiCentre": (centre, 0.0, max(PHI_CENTRE[0] ** 2, PHI_CENTRE[1] ** 2), 6, math.sqrt),
    "kErfcTail": (tail, 1 / (1 + ERFC_P * T_HI), 1 / (1 + ERFC_P * T_LO), 9, "centred"),
    "kExpRest": (expm1_rest, -math.log(2) / 2, math.log(2) / 2, 5, None),
}


def main():
    for name, (target, lo, hi, degree, inner) in FITS.items():
        if inner == "centred":  # in w = v - (lo + hi) / 2: smaller terms, less rounding
            mid = np.float32((lo + hi) / 2)
            c, err = fit(target, lo, hi, degree, variable=lambda v, m=float(mid): v - m)
            print(f"constexpr float {name}Centre = {mid:.9e}f;")
        elif inner is not None:  # fitted in u = x^2: evaluate the target at x = sqrt(u)
            c, err = fit(lambda u, f=target, g=inner: f(g(u)), lo, hi, degree)
        else:
            c, err = fit(target, lo, hi, degree)
        print(f"// {name}: degree {degree} on [{lo:.6g}, {hi:.6g}], max relative error {err:.2e}")
        body = ", ".join(f"{v:.9e}f" for v in c)
        print(f"constexpr float {name}[{degree + 1}] = {{{body}}};")


if __name__ == "__main__":
    main()
