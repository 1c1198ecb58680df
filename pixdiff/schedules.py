"""Noise schedules, all spoken in one language: the log signal-to-noise ratio λ(t), t ∈ [0, 1].

Every schedule answers three questions in float64 (Hoogeboom et al. 2025 (SiD2), §1.1;
Kingma et al. 2021 (VDM)):

    logsnr(t)      λ(t), monotonically decreasing: t = 0 is (nearly) clean data, t = 1 noise
    t(logsnr)      its inverse
    dlogsnr_dt(t)  dλ/dt (< 0), the factor that makes the SiD2 loss (SiD2 eq. 2)
                   invariant to the schedule

The VP coefficients follow from λ alone: α² = sigmoid(λ), σ² = sigmoid(−λ) (see
``pixdiff.process``). Variance-exploding and EDM schedules are the same family seen in
sigma-space, s = σ/α = exp(−λ/2) (Karras et al. 2022), so they are written here as λ(t) too.

Discrete-time models (DDPM, T = 1000) are ``DiscreteSchedule`` objects: a table of ᾱ at integer
steps, answering at any t by piecewise-linear interpolation of λ between the steps. The DDPM
index convention is 1-based: discrete step i ∈ {1..T} sits at t = i / T (diffusers' 0-based
timestep k is step i = k + 1).

Public access: ``get(name, **options)`` and ``available()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pixdiff import process as _process
from pixdiff.errors import PixdiffError

__all__ = [
    "Schedule",
    "CosineSchedule",
    "ShiftedCosineSchedule",
    "InterpolatedCosineSchedule",
    "IDDPMCosineSchedule",
    "VPSchedule",
    "VESchedule",
    "EDMSchedule",
    "EDMLogNormalSchedule",
    "DiscreteSchedule",
    "linear_beta_table",
    "cosine_beta_table",
    "respace",
    "ddim_timesteps",
    "respaced_timesteps",
    "SPACINGS",
    "edm_sigma_grid",
    "logsnr_from_sigma",
    "sigma_from_logsnr",
    "get",
    "available",
]

_F64 = torch.float64


def _as_f64(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=_F64) if not torch.is_tensor(x) else x.to(_F64)
    if torch.isnan(t).any():
        raise PixdiffError(f"{name} contains NaN")
    return t


def _check_t(t) -> torch.Tensor:
    t = _as_f64(t, "t")
    if (t < 0).any() or (t > 1).any():
        bad = t[(t < 0) | (t > 1)].flatten()[0].item()
        raise PixdiffError(f"t must lie in [0, 1] (got {bad}); schedules are defined on continuous time t ∈ [0, 1]")
    return t


def _check_logsnr(logsnr) -> torch.Tensor:
    return _as_f64(logsnr, "logsnr")


def logsnr_from_sigma(sigma) -> torch.Tensor:
    """λ = −2 log s for a sigma-space (VE / EDM) noise level s = σ/α (Karras et al. 2022);
    ``pixdiff.process.logsnr_from_sigma``."""
    return _process.logsnr_from_sigma(sigma)


def sigma_from_logsnr(logsnr) -> torch.Tensor:
    """s = exp(−λ/2), the sigma-space noise level of a VP state at logSNR λ;
    ``pixdiff.process.sigma_from_logsnr``."""
    return _process.sigma_from_logsnr(_check_logsnr(logsnr))


class Schedule:
    """A logSNR schedule λ(t) on t ∈ [0, 1]. Subclasses give ``_logsnr`` and ``_dlogsnr_dt``;
    ``_t`` defaults to a bisection of the (monotone) ``_logsnr``, exact to float64."""

    name: str = "schedule"

    def logsnr(self, t) -> torch.Tensor:
        return self._logsnr(_check_t(t))

    def t(self, logsnr) -> torch.Tensor:
        lam = _check_logsnr(logsnr)
        return self._t(lam).clamp(0.0, 1.0)

    def dlogsnr_dt(self, t) -> torch.Tensor:
        return self._dlogsnr_dt(_check_t(t))

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """VP coefficients at t: α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)) (``process.alpha_sigma``)."""
        return _process.alpha_sigma(self.logsnr(t))

    @property
    def logsnr_max(self) -> float:
        return float(self.logsnr(0.0))

    @property
    def logsnr_min(self) -> float:
        return float(self.logsnr(1.0))

    # --- subclass hooks -------------------------------------------------------------------
    def _logsnr(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _dlogsnr_dt(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _t(self, lam: torch.Tensor) -> torch.Tensor:
        # λ is decreasing in t: bisection on [0, 1] halves the bracket 60 times (2^-60 < 1e-18).
        lo = torch.zeros_like(lam)
        hi = torch.ones_like(lam)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._logsnr(mid) > lam
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


# --- cosine family (VDM / simple diffusion, Hoogeboom et al. 2023 / SiD2) ----------------------


@dataclass(repr=False)
class CosineSchedule(Schedule):
    """λ(t) = −2 log tan(a + t (b − a)), the cosine schedule α = cos(πt/2) written in logSNR and
    truncated to [logsnr_min, logsnr_max] by choosing a, b (Hoogeboom et al. 2023; SiD2's
    `cosine`, Hoogeboom et al. 2025, §4.1).
    ``shift`` adds a constant to λ (the shifted cosine)."""

    logsnr_lo: float = -15.0
    logsnr_hi: float = 15.0
    shift: float = 0.0
    name: str = field(default="cosine", init=False)

    def __post_init__(self):
        if not self.logsnr_lo < self.logsnr_hi:
            raise PixdiffError(f"logsnr_lo ({self.logsnr_lo}) must be below logsnr_hi ({self.logsnr_hi})")
        self._a = math.atan(math.exp(-0.5 * self.logsnr_hi))
        self._b = math.atan(math.exp(-0.5 * self.logsnr_lo))

    def _logsnr(self, t):
        return -2.0 * torch.log(torch.tan(self._a + t * (self._b - self._a))) + self.shift

    def _dlogsnr_dt(self, t):
        # d/du log tan u = 1 / (sin u cos u) = 2 / sin 2u
        u = self._a + t * (self._b - self._a)
        return -4.0 * (self._b - self._a) / torch.sin(2.0 * u)

    def _t(self, lam):
        return (torch.atan(torch.exp(-0.5 * (lam - self.shift))) - self._a) / (self._b - self._a)


def ShiftedCosineSchedule(resolution: int = 64, base_resolution: int = 64, logsnr_lo: float = -15.0,
                          logsnr_hi: float = 15.0) -> CosineSchedule:
    """Shifted cosine: λ(t) + 2 log(base_resolution / resolution) (Hoogeboom et al. 2023;
    Hoogeboom et al. 2025, §2.1 "Loss shifting": a 2× larger image averaged by a 2×2 low-pass
    sees 1/4 of the noise, so its effective λ is 2 log 2 higher)."""
    _check_res(resolution, "resolution")
    _check_res(base_resolution, "base_resolution")
    s = CosineSchedule(logsnr_lo, logsnr_hi, shift=2.0 * math.log(base_resolution / resolution))
    s.name = "shifted_cosine"
    return s


def _check_res(r, name):
    if not (isinstance(r, (int, float)) and r > 0):
        raise PixdiffError(f"{name} must be a positive number of pixels (got {r!r})")


@dataclass(repr=False)
class InterpolatedCosineSchedule(Schedule):
    """SiD2's `cosine_interpolated_low_L_high_H` (Hoogeboom et al. 2025, App. A.4; the
    interpolated schedule of Hoogeboom et al. 2023):
    λ(t) = t · λ_shift(L)(t) + (1 − t) · λ_shift(H)(t), i.e. the cosine shifted for base resolution
    `low` near noise (t → 1) and for base resolution `high` near data (t → 0)."""

    resolution: int = 512
    low: int = 32
    high: int = 512
    logsnr_lo: float = -15.0
    logsnr_hi: float = 15.0
    name: str = field(default="cosine_interpolated", init=False)

    def __post_init__(self):
        for n in ("resolution", "low", "high"):
            _check_res(getattr(self, n), n)
        if not self.low < self.high:
            raise PixdiffError(f"low ({self.low}) must be below high ({self.high})")
        self._cos = CosineSchedule(self.logsnr_lo, self.logsnr_hi)
        self._shift_low = 2.0 * math.log(self.low / self.resolution)
        self._shift_high = 2.0 * math.log(self.high / self.resolution)

    def _logsnr(self, t):
        return self._cos._logsnr(t) + t * self._shift_low + (1.0 - t) * self._shift_high

    def _dlogsnr_dt(self, t):
        return self._cos._dlogsnr_dt(t) + (self._shift_low - self._shift_high)


@dataclass(repr=False)
class IDDPMCosineSchedule(Schedule):
    """IDDPM cosine (Nichol & Dhariwal 2021, §3.2): ᾱ(t) = f(t)/f(0),
    f(t) = cos²(π/2 · (t + s)/(1 + s)), s = 0.008. λ = log ᾱ − log(1 − ᾱ): +∞ at t = 0, −∞ at t = 1.
    ``betas(T)`` gives the discrete table with β clipped at ``max_beta`` = 0.999."""

    s: float = 0.008
    max_beta: float = 0.999
    name: str = field(default="iddpm_cosine", init=False)

    def _u(self, t):
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def _log_alpha_bar(self, t):
        return 2.0 * (torch.log(torch.cos(self._u(t))) - math.log(math.cos(0.5 * math.pi * self.s / (1 + self.s))))

    def _logsnr(self, t):
        la = self._log_alpha_bar(t).clamp(max=0.0)
        return la - torch.log(-torch.expm1(la))

    def _dlogsnr_dt(self, t):
        # dλ/dt = (d log ᾱ/dt) / (1 − ᾱ),  d log ᾱ/dt = −π tan(u) / (1 + s)
        la = self._log_alpha_bar(t).clamp(max=0.0)
        return -math.pi * torch.tan(self._u(t)) / (1.0 + self.s) / (-torch.expm1(la))

    def _t(self, lam):
        f0 = math.cos(0.5 * math.pi * self.s / (1 + self.s)) ** 2
        f = torch.sigmoid(lam) * f0
        return torch.acos(f.sqrt()) * 2.0 / math.pi * (1.0 + self.s) - self.s

    def betas(self, T: int = 1000) -> torch.Tensor:
        return cosine_beta_table(T, self.s, self.max_beta)


# --- SDE schedules (Song et al. 2021b (score SDE), §3.4) ----------------------------------------


@dataclass(repr=False)
class VPSchedule(Schedule):
    """VP SDE with linear β(t) = β_min + t (β_max − β_min) (Song et al. 2021b):
    ᾱ(t) = exp(−u), u = β_min t + (β_max − β_min) t²/2, so λ = −log(expm1(u)).
    It is also the continuous form of DDPM's linear β table with β_min = T β_1, β_max = T β_T."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    name: str = field(default="vp", init=False)

    def __post_init__(self):
        if not (0 < self.beta_min < self.beta_max):
            raise PixdiffError(f"need 0 < beta_min < beta_max (got {self.beta_min}, {self.beta_max})")

    def _u(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _logsnr(self, t):
        return -torch.log(torch.expm1(self._u(t)))

    def _dlogsnr_dt(self, t):
        # dλ/dt = −u'(t) eᵘ/(eᵘ − 1) = −u'(t) / (1 − e⁻ᵘ)
        du = self.beta_min + (self.beta_max - self.beta_min) * t
        return -du / (-torch.expm1(-self._u(t)))

    def _t(self, lam):
        u = torch.log1p(torch.exp(-lam))  # inverse of λ = −log expm1(u)
        d = self.beta_max - self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * u)) / d

    def betas(self, T: int = 1000) -> torch.Tensor:
        """DDPM's linear table whose continuous limit this is: β from β_min/T to β_max/T."""
        return linear_beta_table(T, self.beta_min / T, self.beta_max / T)


@dataclass(repr=False)
class VESchedule(Schedule):
    """VE SDE (Song & Ermon 2019, NCSN; Song et al. 2021b, score SDE): s(t) = σ_min (σ_max/σ_min)^t,
    geometric, so λ is linear."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    name: str = field(default="ve", init=False)

    def __post_init__(self):
        if not (0 < self.sigma_min < self.sigma_max):
            raise PixdiffError(f"need 0 < sigma_min < sigma_max (got {self.sigma_min}, {self.sigma_max})")
        self._l0 = math.log(self.sigma_min)
        self._dl = math.log(self.sigma_max / self.sigma_min)

    def _logsnr(self, t):
        return -2.0 * (self._l0 + t * self._dl)

    def _dlogsnr_dt(self, t):
        return torch.full_like(t, -2.0 * self._dl)

    def _t(self, lam):
        return (-0.5 * lam - self._l0) / self._dl


@dataclass(repr=False)
class EDMSchedule(Schedule):
    """EDM's ρ-schedule as continuous time (Karras et al. 2022, eq. 5):
    s(t) = (σ_min^{1/ρ} + t (σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ; ``edm_sigma_grid`` samples it."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    name: str = field(default="edm", init=False)

    def __post_init__(self):
        if not (0 < self.sigma_min < self.sigma_max):
            raise PixdiffError(f"need 0 < sigma_min < sigma_max (got {self.sigma_min}, {self.sigma_max})")
        if self.rho <= 0:
            raise PixdiffError(f"rho must be positive (got {self.rho})")
        self._a = self.sigma_min ** (1.0 / self.rho)
        self._b = self.sigma_max ** (1.0 / self.rho)

    def _logsnr(self, t):
        return -2.0 * self.rho * torch.log(self._a + t * (self._b - self._a))

    def _dlogsnr_dt(self, t):
        return -2.0 * self.rho * (self._b - self._a) / (self._a + t * (self._b - self._a))

    def _t(self, lam):
        return (torch.exp(-lam / (2.0 * self.rho)) - self._a) / (self._b - self._a)


@dataclass(repr=False)
class EDMLogNormalSchedule(Schedule):
    """EDM's training distribution ln s ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1) as a
    schedule whose uniform t gives that distribution: s(t) = exp(P_mean + P_std Φ⁻¹(t)). λ is ±∞ at t = 0, 1."""

    p_mean: float = -1.2
    p_std: float = 1.2
    name: str = field(default="edm_lognormal", init=False)

    def __post_init__(self):
        if self.p_std <= 0:
            raise PixdiffError(f"p_std must be positive (got {self.p_std})")

    def _logsnr(self, t):
        return -2.0 * (self.p_mean + self.p_std * math.sqrt(2.0) * torch.erfinv(2.0 * t - 1.0))

    def _dlogsnr_dt(self, t):
        # dΦ⁻¹/dt = 1 / φ(Φ⁻¹(t)) = sqrt(2π) exp(Φ⁻¹(t)² / 2)
        q = math.sqrt(2.0) * torch.erfinv(2.0 * t - 1.0)
        return -2.0 * self.p_std * math.sqrt(2.0 * math.pi) * torch.exp(0.5 * q * q)

    def _t(self, lam):
        q = (-0.5 * lam - self.p_mean) / self.p_std
        return 0.5 * (1.0 + torch.erf(q / math.sqrt(2.0)))


# --- discrete tables (DDPM, IDDPM respacing, DDIM sub-sequences) -------------------------------


def linear_beta_table(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear β_1..β_T (Ho et al. 2020, §4)."""
    _check_T(T)
    return torch.linspace(beta_start, beta_end, T, dtype=_F64)


def cosine_beta_table(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """IDDPM's cosine β_i = min(1 − ᾱ(i/T)/ᾱ((i−1)/T), max_beta) (Nichol & Dhariwal 2021, §3.2: the
    clip avoids the singularity at t = 1)."""
    _check_T(T)
    i = torch.arange(T + 1, dtype=_F64) / T
    f = torch.cos(0.5 * math.pi * (i + s) / (1 + s)) ** 2
    return (1.0 - f[1:] / f[:-1]).clamp(max=max_beta)


def _check_T(T):
    if not (isinstance(T, int) and T >= 2):
        raise PixdiffError(f"the number of discrete steps T must be an integer >= 2 (got {T!r})")


class DiscreteSchedule(Schedule):
    """A discrete-time schedule: ᾱ at steps ``timesteps`` (1-based, of an original chain of
    ``num_train_timesteps`` steps), answering at any t by piecewise-linear λ between steps i/T.

    ``betas`` are the per-step β of *this* chain: after respacing to S = (S_1 < … < S_K),
    β_k = 1 − ᾱ_{S_k} / ᾱ_{S_{k−1}} (Nichol & Dhariwal 2021, §4)."""

    name = "discrete"

    def __init__(self, alphas_cumprod, timesteps=None, num_train_timesteps: int | None = None):
        ab = _as_f64(alphas_cumprod, "alphas_cumprod").flatten()
        if ab.numel() < 2:
            raise PixdiffError("a discrete schedule needs at least 2 steps")
        if (ab <= 0).any() or (ab >= 1).any() or (ab[1:] >= ab[:-1]).any():
            raise PixdiffError("alphas_cumprod must be strictly decreasing inside (0, 1)")
        self.alphas_cumprod = ab
        K = ab.numel()
        self.num_train_timesteps = int(num_train_timesteps or K)
        ts = torch.arange(1, K + 1) if timesteps is None else torch.as_tensor(timesteps).flatten().long()
        if ts.numel() != K or (ts[1:] <= ts[:-1]).any() or ts[0] < 1 or ts[-1] > self.num_train_timesteps:
            raise PixdiffError("timesteps must be K increasing integers in [1, num_train_timesteps]")
        self.timesteps = ts
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        self.betas = 1.0 - ab / prev
        self.logsnr_table = torch.log(ab) - torch.log1p(-ab)  # λ_k, decreasing
        # Knots of the piecewise-linear λ(t): the steps at t = i/T, plus t = 0 extrapolated
        # linearly from the first two steps so that λ stays finite, monotone and invertible.
        tk = ts.to(_F64) / self.num_train_timesteps
        lk = self.logsnr_table
        l0 = lk[0] + (lk[0] - lk[1]) * tk[0] / (tk[1] - tk[0])
        self._tk = torch.cat([tk.new_zeros(1), tk])
        self._lk = torch.cat([l0.reshape(1), lk])

    @classmethod
    def from_betas(cls, betas) -> DiscreteSchedule:
        b = _as_f64(betas, "betas")
        if (b <= 0).any() or (b >= 1).any():
            raise PixdiffError("betas must lie in (0, 1)")
        return cls(torch.cumprod(1.0 - b, 0))

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_k = (1 − ᾱ_{k−1}) / (1 − ᾱ_k) β_k (Ho et al. 2020, eq. 7); ᾱ_0 = 1 so β̃_1 = 0."""
        prev = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        return (1.0 - prev) / (1.0 - self.alphas_cumprod) * self.betas

    def step_t(self) -> torch.Tensor:
        """Continuous time t = i/T of each step of this chain."""
        return self._tk[1:].clone()

    def _segment(self, t):
        idx = torch.searchsorted(self._tk, t.contiguous(), right=True).clamp(1, len(self._tk) - 1)
        return idx - 1, idx

    def _logsnr(self, t):
        i0, i1 = self._segment(t)
        t0, t1, l0, l1 = self._tk[i0], self._tk[i1], self._lk[i0], self._lk[i1]
        return l0 + (l1 - l0) * (t - t0) / (t1 - t0)

    def _dlogsnr_dt(self, t):
        i0, i1 = self._segment(t)
        return (self._lk[i1] - self._lk[i0]) / (self._tk[i1] - self._tk[i0])

    def _t(self, lam):
        # λ decreasing: search the reversed knots.
        lk, tk = self._lk.flip(0), self._tk.flip(0)
        idx = torch.searchsorted(lk, lam.contiguous()).clamp(1, len(lk) - 1)
        l0, l1, t0, t1 = lk[idx - 1], lk[idx], tk[idx - 1], tk[idx]
        return t0 + (t1 - t0) * (lam - l0) / (l1 - l0)

    def __len__(self):
        return self.alphas_cumprod.numel()

    def __repr__(self):
        return f"DiscreteSchedule(steps={len(self)}, num_train_timesteps={self.num_train_timesteps})"


def respace(schedule: DiscreteSchedule, use_timesteps: Sequence[int]) -> DiscreteSchedule:
    """Keep only the steps ``use_timesteps`` (1-based indices into ``schedule``'s steps) with
    β_S = 1 − ᾱ_S / ᾱ_{S−1} (Nichol & Dhariwal 2021, §4)."""
    idx = torch.as_tensor(sorted(set(int(i) for i in use_timesteps)), dtype=torch.long)
    if idx.numel() < 2 or idx[0] < 1 or idx[-1] > len(schedule):
        raise PixdiffError(f"use_timesteps must hold >= 2 distinct steps in [1, {len(schedule)}]")
    return DiscreteSchedule(schedule.alphas_cumprod[idx - 1], schedule.timesteps[idx - 1], schedule.num_train_timesteps)


def ddim_timesteps(T: int, steps: int, kind: str = "uniform") -> list[int]:
    """DDIM's sub-sequence τ of length ``steps`` from 1..T (Song et al. 2021a (DDIM), §4.2):
    ``uniform`` τ_i = i·⌊T/steps⌋ + 1, ``quadratic`` τ_i = ⌊(i·sqrt(0.8 T)/(steps−1))²⌋ + 1."""
    _check_T(T)
    if not (isinstance(steps, int) and 1 <= steps <= T):
        raise PixdiffError(f"steps must be an integer in [1, {T}] (got {steps!r})")
    if kind == "uniform":
        seq = np.arange(steps) * (T // steps)
    elif kind == "quadratic":
        seq = (np.linspace(0, np.sqrt(T * 0.8), steps) ** 2).astype(np.int64)
        if len(set(seq.tolist())) != steps:
            raise PixdiffError(f"quadratic sub-sequence of {steps} steps from T={T} repeats steps; use fewer steps")
    else:
        raise PixdiffError(f"kind must be 'uniform' or 'quadratic' (got {kind!r})")
    return [int(k) + 1 for k in seq]


SPACINGS = ("linspace", "leading", "trailing")


def respaced_timesteps(T: int, steps: int, spacing: str = "linspace") -> list[int]:
    """``steps`` increasing 1-based steps of a chain of T, for sampling a discrete model with fewer
    steps. ``spacing`` (named as diffusers' ``timestep_spacing``):

        linspace   round(i (T − 1)/(steps − 1)) + 1: from step 1 to step T inclusive. IDDPM's
                   ``space_timesteps(T, [steps])`` (Nichol & Dhariwal 2021, §4 "Improving
                   sampling speed"; improved-diffusion respace.py, with its float accumulation
                   and Python rounding) = diffusers' "linspace". One step is [T].
        leading    i ⌊T/steps⌋ + 1: DDIM's uniform τ (Song et al. 2021a, §4.2; ``ddim_timesteps``)
                   = diffusers' "leading"; starts at step 1, never reaches T.
        trailing   round(T − i T/steps), i.e. T, T − T/steps, …: diffusers' "trailing"; starts at
                   T, never reaches step 1.
    """
    _check_T(T)
    if not (isinstance(steps, int) and 1 <= steps <= T):
        raise PixdiffError(f"steps must be an integer in [1, {T}] (got {steps!r})")
    if spacing == "linspace":
        if steps == 1:
            return [T]
        frac, cur, out = (T - 1) / (steps - 1), 0.0, []
        for _ in range(steps):
            out.append(round(cur) + 1)
            cur += frac
        return out
    if spacing == "leading":
        return ddim_timesteps(T, steps, "uniform")
    if spacing == "trailing":
        return sorted(int(k) for k in np.round(np.arange(T, 0, -T / steps)).astype(np.int64))
    raise PixdiffError(f"spacing must be one of {', '.join(SPACINGS)} (got {spacing!r})")


def edm_sigma_grid(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM's time steps σ_0 = σ_max > … > σ_{N−1} = σ_min (Karras et al. 2022, Alg. 1,
    eq. 5):
    σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ. Samplers append σ_N = 0."""
    if not (isinstance(steps, int) and steps >= 1):
        raise PixdiffError(f"steps must be a positive integer (got {steps!r})")
    if not (0 < sigma_min < sigma_max):
        raise PixdiffError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
    if steps == 1:
        return torch.tensor([sigma_max], dtype=_F64)
    i = torch.arange(steps, dtype=_F64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + i / (steps - 1) * (b - a)) ** rho


# --- registry ------------------------------------------------------------------------------------


def _linear_continuous(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> VPSchedule:
    s = VPSchedule(beta_start * T, beta_end * T)
    s.name = "linear"
    return s


def _linear_discrete(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteSchedule:
    s = DiscreteSchedule.from_betas(linear_beta_table(T, beta_start, beta_end))
    s.name = "linear_discrete"
    return s


def _cosine_discrete(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
    sch = DiscreteSchedule.from_betas(cosine_beta_table(T, s, max_beta))
    sch.name = "iddpm_cosine_discrete"
    return sch


_REGISTRY: dict[str, Callable[..., Schedule]] = {
    "linear": _linear_continuous,
    "linear_discrete": _linear_discrete,
    "iddpm_cosine": IDDPMCosineSchedule,
    "iddpm_cosine_discrete": _cosine_discrete,
    "cosine": CosineSchedule,
    "shifted_cosine": ShiftedCosineSchedule,
    "cosine_interpolated": InterpolatedCosineSchedule,
    "edm": EDMSchedule,
    "edm_lognormal": EDMLogNormalSchedule,
    "ve": VESchedule,
    "vp": VPSchedule,
}


def available() -> list[str]:
    """Names accepted by ``get``."""
    return sorted(_REGISTRY)


def get(name: str | Schedule, **options) -> Schedule:
    """The schedule called ``name`` with ``options`` overriding its defaults, e.g.
    ``get("cosine_interpolated", resolution=64)``. A Schedule passes through unchanged."""
    if isinstance(name, Schedule):
        if options:
            raise PixdiffError("options cannot be applied to an already-built schedule")
        return name
    if name not in _REGISTRY:
        raise PixdiffError(f"unknown schedule {name!r}; available: {', '.join(available())}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as e:
        raise PixdiffError(f"bad option for schedule {name!r}: {e}") from None
