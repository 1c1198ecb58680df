"""Log-likelihoods of a trained denoiser, per example, in bits/dim (what ``pixdiff nll`` reports).

Three estimators, all spoken in λ so that they do not depend on the training schedule:

``vlb_bpd``   IDDPM's discrete variational bound over a chain of T steps (Nichol & Dhariwal 2021):
              prior KL + Σ Gaussian KLs + the discretised-Gaussian decoder. The decoder puts mass
              on the 256 bins, so no dequantisation is needed: the result bounds −log₂ P(x) / D.
``elbo_bpd``  the continuous-time ELBO (VDM, Kingma et al. 2021; Hoogeboom et al. 2025 (SiD2)
              eq. 2 with w̃ = 1): prior KL at λ_min + Gaussian decoder at λ_max
              + ½ ∫ E‖ε − ε̂‖² dλ, estimated by Monte Carlo.
``ode_nll``   the probability-flow ODE (Song et al. 2021b (score SDE), §4.3) with the
              instantaneous change of variables (Chen et al. 2018): exact trace by autograd for
              small D, else Hutchinson's estimator (Hutchinson 1989).

Dequantisation (``elbo_bpd``, ``ode_nll``): these give a density. ``dequantize='uniform'`` maps
8-bit data x = 2k/255 − 1 to x̃ = 2(k + u)/256 − 1, u ~ U[0, 1)^D, and reports
−(log p(x̃) + D log(2/256)) / (D log 2), an upper bound (in expectation over u) on the discrete
NLL, as the score-SDE paper reports it. ``'none'`` reports −log p(x) / (D log 2) of a density.

Each function returns per-example bits/dim so the caller can form a confidence interval with
``mean_ci``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pixdiff import process, vlb
from pixdiff.errors import PixdiffError
from pixdiff.losses import LossConfig, check_images, loss_fn, predict, randn_like
from pixdiff.schedules import DiscreteSchedule

__all__ = ["VLBResult", "ELBOResult", "ODEResult", "vlb_bpd", "elbo_bpd", "ode_nll", "dequantize_uniform", "mean_ci",
           "checkpoint_nll", "NLL_METHODS"]

_LN2 = math.log(2.0)
_F64 = torch.float64


@dataclass
class VLBResult:
    bpd: torch.Tensor  # [B] total bound in bits/dim
    prior_bpd: torch.Tensor  # [B] L_T
    terms_bpd: torch.Tensor  # [B, K] L_{k−1} for k = 1..K (column 0 is the decoder L_0)


@dataclass
class ELBOResult:
    bpd: torch.Tensor  # [B]
    nats: torch.Tensor  # [B] −ELBO in nats (of x̃ with dequantisation, without its log-volume)
    stderr_nats: torch.Tensor  # [B] Monte-Carlo standard error of ``nats`` (ignores stratification: conservative)


@dataclass
class ODEResult:
    bpd: torch.Tensor  # [B]
    nats: torch.Tensor  # [B] −log p of x (or of x̃), without the dequantisation log-volume
    nfe: int  # denoiser evaluations used by the solver


def _dims(x: torch.Tensor) -> int:
    return x[0].numel()


def vlb_bpd(denoiser, x: torch.Tensor, schedule: DiscreteSchedule, generator: torch.Generator | None = None,
            cond=None, decoder: Literal["discretized", "gaussian"] = "discretized",
            fixed_variance: Literal["small", "large"] = "small", clip_denoised: bool | None = None) -> VLBResult:
    """IDDPM's L_vlb (Nichol & Dhariwal 2021) of each example in bits/dim, summed over every step
    of ``schedule``.
    One z_k ~ q(z_k | x) per step; the learned variance is used when the denoiser has one, else
    ``fixed_variance``. ``decoder='gaussian'`` is the continuous decoder for data with a density.
    ``clip_denoised`` (default: with the discretised decoder, whose data lie in [−1, 1]) clips x̂ to
    [−1, 1] before forming p(z_{k−1} | z_k), as IDDPM's evaluation does (its ``calc_bpd_loop``): still
    a bound (any reverse mean is), and without it an ε-model's x̂ = (z − σ ε̂)/α magnifies small
    errors by σ/α at the noisy end of the chain."""
    if clip_denoised is None:
        clip_denoised = decoder == "discretized"
    if not isinstance(schedule, DiscreteSchedule):
        raise PixdiffError("vlb_bpd sums over a discrete chain; pass a DiscreteSchedule (e.g. schedules.get('linear_discrete'))")
    check_images(x, check_range=decoder == "discretized")
    B, D, K = x.shape[0], _dims(x), len(schedule)
    terms = torch.zeros(B, K, dtype=_F64, device=x.device)
    with torch.no_grad():
        for k in range(K, 0, -1):
            steps = torch.full((B,), k, dtype=torch.long)
            lam = schedule.logsnr_table[steps - 1]
            z = process.diffuse(x, lam, randn_like(x, generator))
            out = predict(denoiser, z, lam, cond)
            x_hat = out.x_hat.clamp(-1.0, 1.0) if clip_denoised else out.x_hat
            term = vlb.vlb_term(x, z, x_hat, steps, schedule, out.var_interp, decoder, fixed_variance)
            terms[:, k - 1] = term.to(_F64).flatten(1).sum(1)
        prior = vlb.prior_kl(x.to(_F64), schedule.logsnr_table[-1]).flatten(1).sum(1)
    to_bpd = 1.0 / (D * _LN2)
    return VLBResult((terms.sum(1) + prior) * to_bpd, prior * to_bpd, terms * to_bpd)


def dequantize_uniform(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x̃ = 2(k + u)/256 − 1 for 8-bit data x = 2k/255 − 1, u ~ U[0, 1) (float64)."""
    check_images(x)
    k = (x.to(_F64) + 1.0) * 127.5
    if (k - k.round()).abs().max() > 1e-3:
        raise PixdiffError("dequantize='uniform' needs 8-bit data (x = k/127.5 − 1 for integers k); "
                         "use dequantize='none' for continuous data")
    u = torch.rand(x.shape, generator=generator, dtype=_F64).to(x.device)
    return 2.0 * (k.round() + u) / 256.0 - 1.0


def _prepare(x, dequantize, generator):
    if dequantize == "uniform":
        return dequantize_uniform(x, generator), _dims(x) * math.log(2.0 / 256.0)
    if dequantize == "none":
        check_images(x, check_range=False)
        return x.to(_F64), 0.0
    raise PixdiffError(f"dequantize must be 'none' or 'uniform' (got {dequantize!r})")


def elbo_bpd(denoiser, x: torch.Tensor, generator: torch.Generator | None = None, cond=None,
             num_t: int = 256, logsnr_min: float = -15.0, logsnr_max: float = 15.0,
             dequantize: Literal["none", "uniform"] = "none", chunk: int = 65536) -> ELBOResult:
    """The continuous-time −ELBO of each example (VDM, Kingma et al. 2021; Hoogeboom et al. 2025
    (SiD2), eq. 2 with w̃ = 1), in bits/dim:

        KL(q(z_{λmin} | x) ‖ N(0, I)) + E[−log N(x; z_{λmax}/α, e^{−λmax} I)] + ½ ∫ E‖ε − ε̂‖² dλ

    The decoder's expected NLL is ½ D (log 2π − λ_max + 1) (x − z/α = (σ/α) ε). The integral is
    ``loss_fn`` with weighting 'elbo' over λ uniform on [λ_min, λ_max] (the 've' schedule is linear
    in λ), ``num_t`` stratified draws per example. The endpoint gaps vanish as λ_max → ∞,
    λ_min → −∞: at ±15 they are O(e^{−15}) relative to the data variance."""
    if not logsnr_min < logsnr_max:
        raise PixdiffError(f"need logsnr_min < logsnr_max (got {logsnr_min}, {logsnr_max})")
    xt, log_volume = _prepare(x, dequantize, generator)
    B, D = x.shape[0], _dims(x)
    config = LossConfig(weighting="elbo", schedule="ve", reduction="sum", t_sampling="stratified",
                        schedule_options=dict(sigma_min=math.exp(-0.5 * logsnr_max), sigma_max=math.exp(-0.5 * logsnr_min)))
    xs = xt.repeat_interleave(num_t, 0)  # [B·num_t, ...]
    cs = None if cond is None else torch.as_tensor(cond).repeat_interleave(num_t, 0)
    u = torch.rand(B, num_t, generator=generator, dtype=_F64)
    t = ((torch.arange(num_t, dtype=_F64) + u) / num_t).clamp(1e-9, 1 - 1e-9).flatten()
    vals = []
    with torch.no_grad():
        for i in range(0, xs.shape[0], chunk):
            sl = slice(i, i + chunk)
            out = loss_fn(denoiser, xs[sl], None if cs is None else cs[sl], generator, config,
                          t=t[sl], check_range=False)
            vals.append(out.loss.to(_F64).cpu())
    diff = torch.cat(vals).reshape(B, num_t)
    prior = vlb.prior_kl(xt, logsnr_min).flatten(1).sum(1).cpu()
    recon = 0.5 * D * (math.log(2.0 * math.pi) - logsnr_max + 1.0)
    nats = prior + recon + diff.mean(1)
    stderr = diff.std(1) / math.sqrt(num_t)
    return ELBOResult((nats - log_volume) / (D * _LN2), nats, stderr)


def ode_nll(denoiser, x: torch.Tensor, generator: torch.Generator | None = None, cond=None,
            logsnr_min: float = -15.0, logsnr_max: float = 15.0, rtol: float = 1e-5, atol: float = 1e-5,
            trace: Literal["auto", "exact", "hutchinson"] = "auto",
            dequantize: Literal["none", "uniform"] = "none") -> ODEResult:
    """−log p(x) by the probability-flow ODE (Song et al. 2021b (score SDE)), per example, in
    bits/dim.

    In λ the PF ODE of the VP process is dz/dλ = ½ α (x̂ − α z) (from f = d log α/dt = ½σ² λ',
    g² = −σ² λ' and score = (α x̂ − z)/σ²; the same path as DDIM). With τ = −λ and G = dz/dτ,
    log p_{λmax}(z(λmax)) = log N(z(λmin); 0, I) + ∫ tr(∂G/∂z) dτ, tr(∂G/∂z) = ½α²D − ½α tr(∂x̂/∂z).
    The data enter at λ_max as z = α x (so p(x) ≈ α^D p_{λmax}(α x)), the prior is N(0, I) at
    λ_min; scipy's RK45 with ``rtol``/``atol`` (score SDE's 1e-5) integrates state and log-density
    together. ``trace``: 'exact' (D backward passes; 'auto' picks it for D ≤ 64) or 'hutchinson'
    (one Rademacher probe per example, fixed over the solve, drawn from ``generator``)."""
    from scipy.integrate import solve_ivp

    if not logsnr_min < logsnr_max:
        raise PixdiffError(f"need logsnr_min < logsnr_max (got {logsnr_min}, {logsnr_max})")
    xt, log_volume = _prepare(x, dequantize, generator)
    B, D, shape = x.shape[0], _dims(x), x.shape
    if trace == "auto":
        trace = "exact" if D <= 64 else "hutchinson"
    if trace not in ("exact", "hutchinson"):
        raise PixdiffError(f"trace must be 'auto', 'exact' or 'hutchinson' (got {trace!r})")
    probe = None
    if trace == "hutchinson":
        probe = (torch.randint(0, 2, xt.shape, generator=generator, dtype=_F64) * 2 - 1).to(x.device)
    nfe = 0

    def rhs(tau: float, state: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        lam = torch.full((B,), -tau, dtype=_F64)
        a = float(torch.sigmoid(torch.tensor(-tau, dtype=_F64)).sqrt())
        z = torch.from_numpy(state[: B * D]).reshape(shape).to(x.device).requires_grad_(True)
        with torch.enable_grad():
            x_hat = predict(denoiser, z.to(x.dtype), lam, cond).x_hat.to(_F64)
            if trace == "exact":
                flat = x_hat.flatten(1)
                tr = sum(torch.autograd.grad(flat[:, d].sum(), z, retain_graph=d < D - 1)[0].flatten(1)[:, d]
                         for d in range(D))
            else:
                g = torch.autograd.grad((x_hat * probe).sum(), z)[0]
                tr = (g * probe).flatten(1).sum(1)
        dz = 0.5 * a * (a * z.detach() - x_hat.detach())
        div = 0.5 * a * a * D - 0.5 * a * tr.detach()
        return torch.cat([dz.flatten(), div]).cpu().numpy()

    a_max = math.sqrt(1.0 / (1.0 + math.exp(-logsnr_max)))
    y0 = torch.cat([(a_max * xt).flatten().cpu(), torch.zeros(B, dtype=_F64)]).numpy()
    sol = solve_ivp(rhs, (-logsnr_max, -logsnr_min), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise PixdiffError(f"the probability-flow ODE solver failed ({sol.message}); loosen rtol/atol or check the denoiser")
    end = torch.from_numpy(sol.y[:, -1])
    z1, integral = end[: B * D].reshape(B, D), end[B * D:]
    log_prior = -0.5 * (z1**2).sum(1) - 0.5 * D * math.log(2.0 * math.pi)
    log_p = log_prior + integral + D * math.log(a_max)
    nats = -log_p
    return ODEResult((nats - log_volume) / (D * _LN2), nats, nfe)


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t confidence interval at ``level`` over per-example values."""
    from scipy import stats

    v = torch.as_tensor(values, dtype=_F64).flatten()
    if v.numel() < 2 or not torch.isfinite(v).all():
        raise PixdiffError("mean_ci needs at least 2 finite values; evaluate more examples")
    half = stats.t.ppf(0.5 + level / 2.0, v.numel() - 1) * v.std().item() / math.sqrt(v.numel())
    return v.mean().item(), float(half)


NLL_METHODS = ("elbo", "ode", "vlb")


def checkpoint_nll(path, data: str | None = None, split: str = "test", n: int = 100, method: str = "elbo",
                   seed: int = 0, weights: str = "ema", batch: int = 16, num_t: int = 64, progress: bool = False,
                   device=None) -> dict:
    """NLL of a trained run on ``n`` images of ``data`` (default: the data it was trained on), in
    bits/dim with a 95 % confidence interval (what ``pixdiff nll`` reports).

    The images are quantised to 8 bits (as they would be stored) and, for the density estimators
    ``elbo`` and ``ode``, uniformly dequantised, so the number bounds the discrete NLL in
    expectation and is comparable across papers; ``vlb`` (a model trained on a discrete chain)
    uses IDDPM's discretised decoder instead. ``device=None``: the GPU when there is one."""
    from tqdm import tqdm

    from pixdiff import data as data_mod
    from pixdiff import datasets
    from pixdiff.config import TrainConfig
    from pixdiff.generate import load_denoiser, resolve_device

    if method not in NLL_METHODS:
        raise PixdiffError(f"method must be one of {', '.join(NLL_METHODS)} (got {method!r})")
    if n < 2:
        raise PixdiffError(f"n must be at least 2 for a confidence interval (got {n})")
    if batch < 1 or num_t < 1:
        raise PixdiffError(f"batch and num_t must be at least 1 (got {batch}, {num_t})")
    dev = resolve_device(device)
    den, ck = load_denoiser(path, weights, dev)
    cfg = TrainConfig.from_dict(ck.state["config"])
    ds = datasets.load(data or cfg.data.name, cfg.data.resolution, cfg.data.channels, split=split,
                       labels=cfg.data.labels)
    if len(ds.shape) != 3 or ds.shape != (cfg.data.channels, cfg.data.resolution, cfg.data.resolution):
        raise PixdiffError(f"data of shape {ds.shape} does not fit the model's {cfg.data.channels}×"
                           f"{cfg.data.resolution}×{cfg.data.resolution} images")
    n = min(n, len(ds))
    x = data_mod.from_uint8(data_mod.to_uint8(ds.images[:n]))  # the 8-bit images
    cond = ds.labels[:n] if (ds.labels is not None and den.num_classes) else None
    g = torch.Generator().manual_seed(seed)
    vals = []
    for lo in tqdm(range(0, n, batch), desc=f"nll ({method})", disable=not progress):
        xb = x[lo:lo + batch].to(dev)
        cb = None if cond is None else cond[lo:lo + batch].to(dev)
        if method == "elbo":
            r = elbo_bpd(den, xb, g, cb, num_t=num_t, dequantize="uniform")
        elif method == "ode":
            r = ode_nll(den, xb, g, cb, dequantize="uniform")
        else:
            r = vlb_bpd(den, xb, cfg.loss.build_schedule(), g, cb)
        vals.append(r.bpd.detach().cpu())
    mean, half = mean_ci(torch.cat(vals))
    return {"bits_per_dim": mean, "ci95": half, "n": n, "method": method, "data": ds.name, "weights": weights,
            "seed": seed, "dequantization": "8-bit quantise + uniform" if method != "vlb" else "discretised decoder",
            "checkpoint": str(ck.path), "conditional": cond is not None}
