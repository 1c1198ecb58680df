"""Training objectives: (how t is drawn) × (weighting w̃(λ)) × (what the network predicts).

Every loss is SiD2's weighted loss, written once over the denoiser's output x̂ (Hoogeboom et al.
2025 (SiD2), eq. 2; ε-form in §2.1; derivations and the ε/x/v tables in docs/losses.md):

    L(x) = ½ E_t [ −dλ/dt · w̃(λ_t) · ‖ε − ε̂‖² ] = ½ E_t [ −dλ/dt · w̃(λ_t) · e^λ ‖x − x̂‖² ]

The parameterisation (eps / x / v / EDM's F) lives in the Denoiser and only changes how x̂ is
produced; the weighting (``pixdiff.weighting``) decides what the loss means. IDDPM's L_vlb and
L_hybrid = L_simple + λ L_vlb (Nichol & Dhariwal 2021, §3.1) add the discrete-chain terms of ``pixdiff.vlb``.

Conventions: ``reduction='mean'`` averages over the D = C·H·W elements (DDPM's mean‖ε − ε̂‖², the
scale every learning rate in the papers was tuned for); ``'sum'`` gives nats per example (so
``elbo`` + ``sum`` is the ELBO's λ-integral). The L_vlb term is in bits with the same reduction
(bits/dim under 'mean', as IDDPM reports it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from pixdiff import process, schedules, vlb
from pixdiff.denoiser import DenoiserOutput
from pixdiff.errors import PixdiffError
from pixdiff.weighting import WEIGHTINGS, eps_to_x, haar_subbands, log_weight_eps, sigmoid_bias, time_shifted_bias

__all__ = ["LossConfig", "LossOutput", "loss_fn", "sample_t", "predict", "check_images", "weighted_mse",
           "power_loss", "make_sampler", "randn_like"]

Weighting = Literal["eps_mse", "x_mse", "v_mse", "elbo", "sigmoid", "edm", "vlb"]
TSampling = Literal["uniform", "stratified", "low_discrepancy", "importance"]
_T_EPS = 1e-6  # keep t off 0 and 1, where λ is ±∞ for iddpm_cosine and edm_lognormal


def _h(default, help: str, **kw):
    """A field whose ``help`` is the ``pixdiff train`` flag's help (pixdiff.config generates the flags)."""
    if default in (dict, list):
        return field(default_factory=default, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class LossConfig:
    """One λ-weighted loss for every weighting (see docs/losses.md)."""

    weighting: Weighting = _h("sigmoid", "loss weighting: one of pixdiff.weighting.WEIGHTINGS (e.g. sigmoid, "
                                         "eps_mse, v_mse, edm, elbo) or vlb (IDDPM's pure L_vlb)")
    # Only the estimator's variance depends on how λ is visited (Kingma & Gao 2023, §2; SiD2 §1.1).
    schedule: str = _h("cosine", "training noise schedule: how logSNR is visited (see `pixdiff info --schedules`)",
                       flag="train-schedule")
    schedule_options: dict = _h(dict, "schedule options, KEY=VALUE with VALUE as JSON", flag="schedule-option")
    t_sampling: TSampling = _h("stratified", "uniform; stratified (one t per 1/B stratum); low_discrepancy "
                                             "(Kingma et al. 2021); importance (Nichol & Dhariwal 2021, vlb only)")
    reduction: Literal["mean", "sum"] = _h("mean", "mean or sum over pixels")
    bias: float | None = _h(None, "sigmoid weighting bias b (default: SiD2's per-resolution bias, "
                                  "0 at 128 px, -1 at 256, -3 at 512)")
    bias_start: float | None = _h(None, "time-shifted bias: start value, moved linearly to --bias over "
                                        "--bias-warmup-steps (Hoogeboom et al. 2025, App. B.1)")
    bias_warmup_steps: int = _h(0, "steps over which the time-shifted bias moves")
    haar_levels: int = _h(0, "power loss: sigmoid weighting per Haar sub-band, this many levels "
                             "(Hoogeboom et al. 2025, App. A.1); 0 = plain")
    sigma_data: float = _h(0.5, "EDM's sigma_data: the data's standard deviation (Karras et al. 2022); used by "
                                "--param edm and --weighting edm")
    p_mean: float = _h(-1.2, "EDM's log-normal training distribution of ln sigma: mean (Karras et al. 2022)")
    p_std: float = _h(1.2, "EDM's log-normal training distribution of ln sigma: standard deviation")
    vlb_weight: float = _h(0.0, "L_hybrid = L + vlb_weight * L_vlb with stop-gradient on the mean "
                                "(Nichol & Dhariwal 2021: 0.001)")
    fixed_variance: Literal["small", "large"] = _h("small", "reverse variance for L_vlb without learn_sigma: "
                                                           "small (beta tilde) or large (beta)")

    def __post_init__(self):
        if self.weighting not in (*WEIGHTINGS, "vlb"):
            raise PixdiffError(f"unknown weighting {self.weighting!r}; choose from {', '.join((*WEIGHTINGS, 'vlb'))}")
        if self.t_sampling not in ("uniform", "stratified", "low_discrepancy", "importance"):
            raise PixdiffError(f"unknown t_sampling {self.t_sampling!r}; choose uniform, stratified, "
                             "low_discrepancy or importance")
        if self.reduction not in ("mean", "sum"):
            raise PixdiffError(f"reduction must be 'mean' or 'sum' (got {self.reduction!r})")
        if not (isinstance(self.haar_levels, int) and self.haar_levels >= 0):
            raise PixdiffError(f"haar_levels must be a non-negative integer (got {self.haar_levels!r})")
        if self.haar_levels and self.weighting != "sigmoid":
            raise PixdiffError("the power loss (haar_levels > 0) is defined for weighting='sigmoid' (Hoogeboom et al. 2025, App. A.1)")
        if self.bias_warmup_steps < 0 or (self.bias_warmup_steps > 0) != (self.bias_start is not None):
            raise PixdiffError("a time-shifted bias needs both bias_start and bias_warmup_steps > 0 (Hoogeboom et al. 2025, App. B.1)")
        if self.bias_start is not None and self.bias is None:
            raise PixdiffError("a time-shifted bias needs the end value `bias` too (Hoogeboom et al. 2025, App. B.1, uses −3)")
        for name in ("sigma_data", "p_mean", "p_std", "bias", "bias_start", "vlb_weight"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise PixdiffError(f"loss {name} must be a finite number (got {v})")
        if self.sigma_data <= 0 or self.p_std <= 0:
            raise PixdiffError("sigma_data and p_std must be positive")
        if self.schedule == "edm_lognormal":  # the log-normal is stored once: p_mean, p_std
            so = dict(self.schedule_options)
            for k in ("p_mean", "p_std"):
                if k in so and so[k] != getattr(self, k):
                    raise PixdiffError(f"schedule_options {k}={so[k]} disagrees with the loss's {k}="
                                       f"{getattr(self, k)}; set it once, as loss.{k}")
                so.pop(k, None)
            self.schedule_options = so
        if self.vlb_weight < 0:
            raise PixdiffError(f"vlb_weight must be non-negative (got {self.vlb_weight}); IDDPM uses 0.001")
        if self.fixed_variance not in ("small", "large"):
            raise PixdiffError(f"fixed_variance must be 'small' or 'large' (got {self.fixed_variance!r})")
        discrete = isinstance(self.build_schedule(), schedules.DiscreteSchedule)
        if (self.weighting == "vlb" or self.vlb_weight > 0) and not discrete:
            raise PixdiffError("L_vlb is a sum over a discrete chain: set schedule='linear_discrete' or "
                             "'iddpm_cosine_discrete'")
        if self.weighting == "vlb" and self.vlb_weight > 0:
            raise PixdiffError("weighting='vlb' is already the full L_vlb; leave vlb_weight at 0")
        if self.t_sampling == "importance" and self.weighting != "vlb":
            raise PixdiffError("importance sampling of t is for weighting='vlb' (Nichol & Dhariwal 2021, §3.3: it does not help L_hybrid)")

    def build_schedule(self) -> schedules.Schedule:
        # Cached per (name, options): loss_fn asks every step, and a 1000-step table is not free.
        opts = dict(self.schedule_options)
        if self.schedule == "edm_lognormal":
            opts.update(p_mean=self.p_mean, p_std=self.p_std)
        key = (self.schedule, repr(sorted(opts.items())))
        cached = self.__dict__.get("_schedule_cache")
        if cached is None or cached[0] != key:
            self.__dict__["_schedule_cache"] = cached = (key, schedules.get(self.schedule, **opts))
        return cached[1]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LossOutput:
    loss: torch.Tensor  # [B] what to average and backpropagate
    t: torch.Tensor  # [B] float64
    logsnr: torch.Tensor  # [B] float64
    weight: torch.Tensor  # [B] float64: −dλ/dt · w̃(λ), the ε-space weight (0 for weighting='vlb')
    terms: dict[str, torch.Tensor]  # [B] each, not detached: 'mse' and, with L_vlb, 'vlb' (bits) and 'vlb_t'
    steps: torch.Tensor | None = None  # [B] 1-based chain steps for discrete schedules


def make_sampler(config: LossConfig) -> vlb.ImportanceSampler | None:
    """The importance sampler the trainer keeps (and checkpoints) when t_sampling='importance'."""
    if config.t_sampling != "importance":
        return None
    return vlb.ImportanceSampler(len(config.build_schedule()))


def check_images(x: torch.Tensor, check_range: bool = True) -> None:
    """One-line ValueErrors for the batches a user can get wrong (one host sync for all checks)."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 2:
        raise PixdiffError(f"x must be a float tensor [B, ...] (got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}); convert images with x = img / 127.5 - 1")
    finite, lo, hi = torch.stack([torch.isfinite(x).all().to(x.dtype), x.min(), x.max()]).tolist()
    if not finite:
        raise PixdiffError("x contains NaN or inf; check the data pipeline (a corrupt image or a bad transform)")
    if check_range and (lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4):
        raise PixdiffError(f"x must lie in [-1, 1] (found min {lo:.3g}, max {hi:.3g}); "
                         "scale 8-bit images with x = img / 127.5 - 1")


def predict(denoiser, z: torch.Tensor, logsnr: torch.Tensor, cond=None) -> DenoiserOutput:
    """x̂ (and the IDDPM variance fraction, if learned) from a Denoiser or any ``f(z, logsnr, cond)``."""
    out = denoiser.predict(z, logsnr, cond) if hasattr(denoiser, "predict") else DenoiserOutput(denoiser(z, logsnr, cond))
    if out.x_hat.shape != z.shape:
        raise PixdiffError(f"the denoiser returned shape {tuple(out.x_hat.shape)} for input {tuple(z.shape)}; "
                         "it must return x̂ with the shape of z")
    return out


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """ε ~ N(0, I) shaped like x, drawn on the generator's device (a CPU generator may drive a GPU
    batch, as the trainer's does) and moved to x's."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def sample_t(batch_size: int, generator: torch.Generator | None, kind: str = "stratified",
             device=None) -> torch.Tensor:
    """t ∈ (0, 1) [B] float64. Stratified and low-discrepancy draws cover [0, 1] evenly per batch,
    which lowers the variance of the loss estimate without biasing it (VDM, Kingma et al. 2021)."""
    u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    i = torch.arange(batch_size, dtype=torch.float64)
    if kind == "uniform":
        t = u
    elif kind == "stratified":
        t = (i + u) / batch_size
    elif kind == "low_discrepancy":
        t = torch.remainder(u[:1] + i / batch_size, 1.0)
    else:
        raise PixdiffError(f"unknown t sampling {kind!r}; choose uniform, stratified or low_discrepancy")
    return t.clamp(_T_EPS, 1.0 - _T_EPS).to(device)


def weighted_mse(x: torch.Tensor, x_hat: torch.Tensor, logsnr: torch.Tensor, log_weight: torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
    """½ · W · e^λ ‖x − x̂‖² per example, W = −dλ/dt w̃(λ) given as its log (the x-space form of
    ½ W ‖ε − ε̂‖², Hoogeboom et al. 2025, §2.1); computed in float64 so e^{±15} weights keep
    their digits."""
    err = (x.to(torch.float64) - x_hat.to(torch.float64)).flatten(1) ** 2
    sq = err.mean(1) if reduction == "mean" else err.sum(1)
    return 0.5 * torch.exp(eps_to_x(log_weight, logsnr.to(torch.float64))).to(sq.device) * sq


def power_loss(x: torch.Tensor, x_hat: torch.Tensor, logsnr: torch.Tensor, log_dlogsnr: torch.Tensor,
               bias: float, levels: int, reduction: str = "mean") -> torch.Tensor:
    """SiD2's power loss (Hoogeboom et al. 2025, App. A.1):
    PL = ½ Σ_s (−dλ/dt) e^{b} sigmoid(λ + b_s) ‖s‖² over the Haar
    sub-bands s of I = x̂ − x, with b_s = log 2 · l(s) − b. A low pass raises the logSNR by log 2, so
    e^{b} sigmoid(λ + b_s) is the sigmoid's x-space weight at the band's logSNR; the paper omits the
    constant e^{b}, kept here so that levels = 0 is exactly the sigmoid loss."""
    lam = logsnr.to(torch.float64).to(x.device)
    err = x_hat.to(torch.float64) - x.to(torch.float64)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for _, band, lows in haar_subbands(err, levels):
        b_s = math.log(2.0) * lows - bias
        total = total + torch.sigmoid(lam + b_s) * (band.flatten(1) ** 2).sum(1)
    if reduction == "mean":
        total = total / err[0].numel()
    return 0.5 * torch.exp(log_dlogsnr.to(x.device) + bias) * total


def _timesteps(config, schedule, batch_size, generator, sampler, t):
    """(t [B], steps [B] or None, p_t [B] or None): steps and p_t only for discrete chains."""
    discrete = isinstance(schedule, schedules.DiscreteSchedule)
    uniform = None if not discrete else torch.full((batch_size,), 1.0 / len(schedule), dtype=torch.float64)
    if t is not None:
        t = torch.as_tensor(t, dtype=torch.float64).cpu().flatten()
        if t.numel() != batch_size:
            raise PixdiffError(f"t has {t.numel()} entries for a batch of {batch_size}")
        if not discrete:
            return t, None, None
        steps = torch.searchsorted(schedule.timesteps, torch.round(t * schedule.num_train_timesteps).long())
        steps = steps.clamp(0, len(schedule) - 1) + 1  # the chain step at (or just after) t
        return schedule.step_t()[steps - 1], steps, uniform
    if config.t_sampling == "importance":
        if sampler is None:
            raise PixdiffError("t_sampling='importance' needs the ImportanceSampler from make_sampler(config)")
        steps, p = sampler.sample(batch_size, generator)
        return schedule.step_t()[steps - 1], steps, p
    t = sample_t(batch_size, generator, config.t_sampling)
    if not discrete:
        return t, None, None
    # A discrete chain is visited at its steps (DDPM's integer t); ceil keeps the strata.
    steps = torch.ceil(t * len(schedule)).long().clamp(1, len(schedule))
    return schedule.step_t()[steps - 1], steps, uniform


def loss_fn(denoiser, x: torch.Tensor, cond, generator: torch.Generator | None, config: LossConfig,
            step: int = 0, *, sampler: vlb.ImportanceSampler | None = None, t: torch.Tensor | None = None,
            noise: torch.Tensor | None = None, check_range: bool = True) -> LossOutput:
    """The per-example training loss [B] of ``config`` for a batch x in [−1, 1].

    ``denoiser``: a ``Denoiser`` (its ``predict`` gives the learned variance) or any
    ``f(z, logsnr, cond) -> x̂``. ``step``: the training step, for the time-shifted bias.
    ``sampler``: the ``make_sampler(config)`` object for importance sampling; it is updated here with
    the detached L_t. ``t`` / ``noise`` override the random draws (evaluation on a fixed grid).
    ``check_range=False`` skips the [−1, 1] check, for unbounded synthetic data."""
    check_images(x, check_range)
    B = x.shape[0]
    if cond is not None and (torch.as_tensor(cond).dim() == 0 or len(cond) != B):
        raise PixdiffError(f"cond must hold one label per example ({B}); got shape {tuple(torch.as_tensor(cond).shape)}")
    if noise is not None and noise.shape != x.shape:
        raise PixdiffError(f"noise has shape {tuple(noise.shape)} but x has {tuple(x.shape)}")
    schedule = config.build_schedule()
    t, steps, p_t = _timesteps(config, schedule, B, generator, sampler, t)
    logsnr = schedule.logsnr(t) if steps is None else schedule.logsnr_table[steps - 1]  # [B] float64
    if noise is None:
        noise = randn_like(x, generator)
    z = process.diffuse(x, logsnr, noise)  # Hoogeboom et al. 2025, eq. 1
    out = predict(denoiser, z, logsnr, cond)
    log_dlogsnr = torch.log(-schedule.dlogsnr_dt(t))  # log(−dλ/dt) [B]

    terms: dict[str, torch.Tensor] = {}
    weight, loss = torch.zeros_like(logsnr), torch.zeros(B, dtype=torch.float64, device=x.device)
    if config.weighting != "vlb":
        if out.var_interp is not None and config.vlb_weight == 0:
            raise PixdiffError("the denoiser learns its variance but vlb_weight = 0, so the variance would never "
                             "train; set vlb_weight=0.001 (IDDPM's L_hybrid) or learn_sigma=False")
        bias = _bias(config, x, step) if config.weighting == "sigmoid" else 0.0
        opts = dict(bias=bias, sigma_data=config.sigma_data, p_mean=config.p_mean, p_std=config.p_std)
        log_w = log_dlogsnr + log_weight_eps(config.weighting, logsnr, -log_dlogsnr, **opts)  # log(−λ' w̃)
        weight = torch.exp(log_w)
        if config.haar_levels:
            terms["mse"] = power_loss(x, out.x_hat, logsnr, log_dlogsnr, bias, config.haar_levels, config.reduction)
        else:
            terms["mse"] = weighted_mse(x, out.x_hat, logsnr, log_w, config.reduction)
        loss = terms["mse"]
    if config.weighting == "vlb" or config.vlb_weight > 0:
        terms.update(_vlb_terms(config, schedule, x, z, out, steps, p_t))
        loss = loss + (1.0 if config.weighting == "vlb" else config.vlb_weight) * terms["vlb"]
        if sampler is not None:
            sampler.update(steps, terms["vlb_t"])
    return LossOutput(loss, t, logsnr, weight, terms, steps)


def _vlb_terms(config, schedule, x, z, out, steps, p_t) -> dict[str, torch.Tensor]:
    """L_t in bits and the estimate L_vlb = L_t / p_t (Nichol & Dhariwal 2021, §3.3)."""
    if config.weighting != "vlb" and out.var_interp is None:
        raise PixdiffError("L_hybrid's L_vlb term only trains a learned variance: build the Denoiser with "
                         "learn_sigma=True, or set vlb_weight=0")
    # L_hybrid: the L_vlb term sees a stop-gradient mean, so it shapes only Σ_θ (Nichol & Dhariwal 2021, §3.1).
    x_hat = out.x_hat if config.weighting == "vlb" else out.x_hat.detach()
    l_t = vlb.vlb_term(x, z, x_hat, steps, schedule, out.var_interp, "discretized", config.fixed_variance)
    l_t = l_t.to(torch.float64).flatten(1)
    l_t = (l_t.mean(1) if config.reduction == "mean" else l_t.sum(1)) / math.log(2.0)
    return {"vlb_t": l_t, "vlb": l_t / p_t.to(l_t.device)}


def _bias(config: LossConfig, x: torch.Tensor, step: int) -> float:
    if config.bias is None and x.dim() < 4:
        raise PixdiffError("SiD2's per-resolution bias needs images [B, C, H, W]; set LossConfig.bias for other data")
    end = config.bias if config.bias is not None else sigmoid_bias(max(x.shape[-2:]))
    if config.bias_start is None:
        return float(end)
    return time_shifted_bias(step, config.bias_start, end, config.bias_warmup_steps)
