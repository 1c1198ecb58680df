"""Loss weightings as functions of λ, and the Haar sub-bands of the power loss.

Every diffusion loss in pixdiff is SiD2's weighted loss (Hoogeboom et al. 2025, eq. 2), in the
ε-form of VDM++ (Kingma & Gao 2023) that SiD2 §2.1 uses:

    L(x) = ½ E_{t~U(0,1)} [ −dλ/dt · w̃(λ_t) · ‖ε − ε̂‖² ]

and the three views of the same error are exact identities (derived in docs/losses.md):

    ‖ε − ε̂‖² = e^λ ‖x − x̂‖²                      (SiD2 §2.1)
    ‖v − v̂‖² = ‖x − x̂‖² / σ² = (1 + e^λ) ‖x − x̂‖² = ‖ε − ε̂‖² / α²

so an ε-space weight w̃ is the x-space weight w = e^λ w̃ and the v-space weight w̃ · sigmoid(λ).

Each weighting here returns log w̃(λ) in float64 (logs keep e^{±λ} finite at |λ| = 15 and beyond).
The DDPM-style weightings (ε-, x-, v-mse) mean "this mse at t drawn uniformly from the training
schedule", i.e. w̃ = 2 p(λ)·(conversion) with p(λ) = 1/|dλ/dt| the schedule's density of λ
(Kingma & Gao 2023's table; the 2 undoes the ½ so that ε-mse is exactly DDPM's L_simple,
Ho et al. 2020, Alg. 1).
``log_p`` passes that density in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pixdiff.errors import PixdiffError

__all__ = [
    "WEIGHTINGS",
    "log_weight_eps",
    "eps_to_x",
    "eps_to_v",
    "sigmoid_bias",
    "time_shifted_bias",
    "haar2d",
    "ihaar2d",
    "haar_subbands",
]

_LOG2 = math.log(2.0)


def _eps_mse(lam, log_p, **_):
    # ½ · 2 p(λ) · (−dλ/dt) ‖ε − ε̂‖² = ‖ε − ε̂‖²: DDPM's L_simple (Ho et al. 2020, Alg. 1).
    return _LOG2 + log_p


def _x_mse(lam, log_p, **_):
    # ‖x − x̂‖² = e^{−λ} ‖ε − ε̂‖².
    return _LOG2 + log_p - lam


def _v_mse(lam, log_p, **_):
    # ‖v − v̂‖² = (1 + e^{−λ}) ‖ε − ε̂‖²  (from v − v̂ = (x̂ − x)/σ and ε − ε̂ = (α/σ)(x̂ − x)).
    return _LOG2 + log_p + F.softplus(-lam)


def _elbo(lam, log_p, **_):
    # w̃ = 1: the continuous-time diffusion loss of VDM, the ELBO's λ-integral in nats.
    return torch.zeros_like(lam)


def _sigmoid(lam, log_p, bias: float = 0.0, **_):
    # w̃(λ) = sigmoid(b − λ) (Hoogeboom et al. 2025, §2.1; Kingma & Gao 2023's sigmoid loss).
    return F.logsigmoid(bias - lam)


def _edm(lam, log_p, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2, **_):
    # EDM (Karras et al. 2022, Table 1): ln s ~ N(P_mean, P_std²) with weight
    # λ(s) = (s² + σ_d²)/(s σ_d)² on ‖x − x̂‖². With s² = e^{−λ}: λ(s) = e^λ + σ_d^{−2}, and λ = −2 ln s ~ N(−2 P_mean, 4 P_std²),
    # so w̃ = 2 N(λ; −2P_mean, 4P_std²) · e^{−λ} λ(s) = 2 N(·) (1 + e^{−λ}/σ_d²). Trained with the
    # schedule ``edm_lognormal`` (same P_mean, P_std) the loss is EDM's exactly.
    var = 4.0 * p_std**2
    log_n = -0.5 * (lam + 2.0 * p_mean) ** 2 / var - 0.5 * math.log(2.0 * math.pi * var)
    return _LOG2 + log_n + F.softplus(-lam - 2.0 * math.log(sigma_data))


WEIGHTINGS: dict[str, Callable[..., torch.Tensor]] = {
    "eps_mse": _eps_mse,
    "x_mse": _x_mse,
    "v_mse": _v_mse,
    "elbo": _elbo,
    "sigmoid": _sigmoid,
    "edm": _edm,
}


def log_weight_eps(name: str, logsnr: torch.Tensor, log_p: torch.Tensor | None = None, **options) -> torch.Tensor:
    """log w̃(λ), the ε-space weight of weighting ``name`` (float64, shape of ``logsnr``).

    ``log_p`` is log p(λ) of the training schedule (only the mse weightings read it);
    ``options``: ``bias`` (sigmoid), ``sigma_data``, ``p_mean``, ``p_std`` (edm)."""
    if name not in WEIGHTINGS:
        raise PixdiffError(f"unknown weighting {name!r}; choose from {', '.join(WEIGHTINGS)}")
    lam = torch.as_tensor(logsnr, dtype=torch.float64)
    log_p = torch.zeros_like(lam) if log_p is None else torch.as_tensor(log_p, dtype=torch.float64)
    return WEIGHTINGS[name](lam, log_p, **options)


def eps_to_x(log_w_eps: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """log w(λ) = log w̃(λ) + λ: the same weight applied to ‖x − x̂‖² (SiD2 §2.1).
    For the sigmoid this is log(e^{b} sigmoid(λ − b)) — some transcriptions of Hoogeboom et al.
    2025, eq. 4, print e^{−b}, a dropped sign: at λ = b, sigmoid(0) e^{b} = e^{b}/2 on both sides
    only with +b."""
    return log_w_eps + logsnr


def eps_to_v(log_w_eps: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """log of the weight on ‖v − v̂‖²: w̃ α² (‖ε − ε̂‖² = α² ‖v − v̂‖², α² = sigmoid(λ))."""
    return log_w_eps + F.logsigmoid(logsnr)


# --- SiD2's bias choices (Hoogeboom et al. 2025, §2.1 "Loss shifting", App. A.4, App. B.1) ------

_SID2_BIAS = {128: 0.0, 256: -1.0, 512: -3.0}  # SiD2 App. A.4: loss_type = sigmoid:b


def sigmoid_bias(resolution: int) -> float:
    """SiD2's bias b for an image side of ``resolution`` pixels: 0 at 128, −1 at 256, −3 at 512
    (Hoogeboom et al. 2025, App. A.4). Elsewhere the rule behind them (§2.1): each 2× in
    resolution raises the effective logSNR of a low-passed image by 2 log 2, so b = −2 log(resolution / 128)."""
    if not (isinstance(resolution, int) and resolution > 0):
        raise PixdiffError(f"resolution must be a positive integer number of pixels (got {resolution!r})")
    return _SID2_BIAS.get(resolution, -2.0 * math.log(resolution / 128.0))


def time_shifted_bias(step: int, bias_start: float, bias_end: float, warmup_steps: int) -> float:
    """b_step = b_start + (b_end − b_start) · min(step / t_b, 1) (Hoogeboom et al. 2025,
    App. B.1)."""
    if warmup_steps <= 0:
        return float(bias_end)
    return float(bias_start + (bias_end - bias_start) * min(max(step, 0) / warmup_steps, 1.0))


# --- Haar wavelets for the power loss (Hoogeboom et al. 2025, App. A.1) --------------------------


def _split(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    # s_k = (i_{2k} + i_{2k+1})/√2, d_k = (i_{2k} − i_{2k+1})/√2: orthonormal, so ‖s‖² + ‖d‖² = ‖i‖².
    even, odd = x.unfold(dim, 2, 2).unbind(-1)
    return (even + odd) / math.sqrt(2.0), (even - odd) / math.sqrt(2.0)


def haar2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One level of the 2-D Haar transform of x [..., H, W]: rows first, W_r(I) = (L, H), then the
    columns of each half, W_c(L) = (LL, LH), W_c(H) = (HL, HH) (SiD2 App. A.1)."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise PixdiffError(f"the Haar transform needs even height and width (got {tuple(x.shape[-2:])}); "
                         "use fewer haar_levels or pad the images")
    lo, hi = _split(x, -1)  # along each row (the width axis)
    ll, lh = _split(lo, -2)
    hl, hh = _split(hi, -2)
    return ll, lh, hl, hh


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    d = dim % even.dim()
    return torch.stack([even, odd], dim=d + 1).flatten(d, d + 1)  # [..., n, 2, ...] -> [..., 2n, ...]


def ihaar2d(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """Inverse of ``haar2d``."""
    lo = _interleave((ll + lh) / math.sqrt(2.0), (ll - lh) / math.sqrt(2.0), -2)
    hi = _interleave((hl + hh) / math.sqrt(2.0), (hl - hh) / math.sqrt(2.0), -2)
    return _interleave((lo + hi) / math.sqrt(2.0), (lo - hi) / math.sqrt(2.0), -1)


def haar_subbands(x: torch.Tensor, levels: int) -> list[tuple[str, torch.Tensor, int]]:
    """The sub-bands S of ``levels`` Haar transforms applied iteratively to the low band, as
    (name, band, l(s)) with l(s) the number of low passes (the L's in the name). For levels = 2 on
    a 512² input: LLLL, LLLH, LLHL, LLHH at 128², then LH, HL, HH at 256² (SiD2 App. A.1).
    levels = 0 gives the input itself as the one band ''."""
    if not (isinstance(levels, int) and levels >= 0):
        raise PixdiffError(f"haar levels must be a non-negative integer (got {levels!r})")
    details: list[list[tuple[str, torch.Tensor, int]]] = []
    low, prefix = x, ""
    for _ in range(levels):
        ll, lh, hl, hh = haar2d(low)
        details.append([(prefix + n, b, (prefix + n).count("L")) for n, b in (("LH", lh), ("HL", hl), ("HH", hh))])
        low, prefix = ll, prefix + "LL"
    # coarsest first, in SiD2 App. A.1's order: LLLL, LLLH, LLHL, LLHH, LH, HL, HH
    return [(prefix, low, prefix.count("L"))] + [band for level in details[::-1] for band in level]
