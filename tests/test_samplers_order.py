"""Order of accuracy: for fixed initial noise, the error against a tight-tolerance solution of the
probability-flow ODE (scipy DOP853, rtol 1e-11, ``pf_ode_reference``) shrinks as steps^−p.

Setup: the 2-D mixture, 128 fixed starting points at s = 80, EDM's ρ = 7 grid ending at s = 0.02
(no final step to data, so every step is the method's own), float64. The error is the RMS over the
samples of |x_N − x_ref| in sigma-space; p is the least-squares slope of log error against log steps.
Measured slopes (steps 16–128; 8–64 for DPM-Solver-3): Euler 0.94, DDIM η = 0 0.94 (the same
numbers: it is Euler in sigma-space), Heun 2.13, DPM-Solver-2 1.96, DPM-Solver++(2M) 1.95,
DPM-Solver-3 2.83; the accepted ranges are in CASES.
"""

from __future__ import annotations

import pytest
import torch
from test_samplers_support import fitted_slope, pf_ode_reference

from pixdiff import samplers as S
from pixdiff.analytic import GaussianMixture

S_MAX, S_END = 80.0, 0.02
STEPS = [16, 32, 64, 128]
_REF = {}



def reference():
    if not _REF:
        gm = GaussianMixture.toy_2d()
        noise = torch.randn(128, 2, generator=torch.Generator().manual_seed(2024), dtype=torch.float64)
        _REF["gm"], _REF["noise"] = gm, noise
        _REF["x"] = pf_ode_reference(gm, noise * S_MAX, S_MAX, S_END)
    return _REF["gm"], _REF["noise"], _REF["x"]


def errors(name, steps, **opts):
    gm, noise, x_ref = reference()
    den = gm.denoise
    out = []
    for n in steps:
        grid = S.grids.edm(n, sigma_min=S_END, sigma_max=S_MAX, to_data=False)
        x = S.sample(den, noise.shape, name, grid=grid, noise=noise, **opts)
        out.append(float((x - x_ref).pow(2).sum(1).mean().sqrt()))
    return out


CASES = [  # (sampler, options, steps, accepted slope range)
    ("euler", {}, STEPS, (0.85, 1.3)),
    ("ddim", {"eta": 0.0}, STEPS, (0.85, 1.3)),
    ("heun", {}, STEPS, (1.8, 2.5)),
    ("dpm_solver", {"order": 2}, STEPS, (1.8, 2.5)),
    ("dpmpp_2m", {}, STEPS, (1.8, 2.5)),
    ("dpm_solver", {"order": 3}, [8, 16, 32, 64], (2.5, 4.0)),
]


@pytest.mark.parametrize("name,opts,steps,bounds", CASES, ids=[f"{c[0]}{c[1].get('order', '')}" for c in CASES])
def test_order_of_accuracy(name, opts, steps, bounds):
    err = errors(name, steps, **opts)
    p = fitted_slope(steps, err)
    assert all(e2 < e1 for e1, e2 in zip(err, err[1:])), err
    assert bounds[0] <= p <= bounds[1], f"{name} {opts}: slope {p:.2f}, errors {err}"
