"""IDDPM's variational bound over a discrete chain (Nichol & Dhariwal 2021, §3.1; Ho et al. 2020).

    L_vlb = L_0 + L_1 + … + L_{T−1} + L_T
    L_T     = KL(q(z_T | x) ‖ N(0, I))                                       prior
    L_{t−1} = KL(q(z_{t−1} | z_t, x) ‖ p(z_{t−1} | z_t)),  t = 2..T              Gaussian KLs
    L_0     = −log p(x | z_1)                                                decoder, 256 bins

with p(z_{t−1} | z_t) = N(μ_θ, Σ_θ), μ_θ the posterior mean at x̂ and the learned variance

    Σ_θ = exp(f log β_t + (1 − f) log β̃_t)              (Nichol & Dhariwal 2021, §3.1)

where f = (v + 1)/2 is the denoiser's ``var_interp`` (IDDPM code convention for the paper's v).
β̃_1 = 0, so log β̃ is clipped to β̃_2 at step 1, as IDDPM does.

Steps are 1-based indices k ∈ {1..K} into a ``DiscreteSchedule`` (so a respaced chain works: its
β and β̃ are those of the respaced chain). Every term here is in nats per element (no reduction);
callers sum or average over dimensions and divide by log 2 for bits.
"""

from __future__ import annotations

import math

import torch

from pixdiff import process
from pixdiff.errors import PixdiffError
from pixdiff.schedules import DiscreteSchedule

__all__ = [
    "normal_kl",
    "gaussian_log_likelihood",
    "discretized_gaussian_log_likelihood",
    "model_log_variance",
    "step_logsnr",
    "vlb_term",
    "prior_kl",
    "ImportanceSampler",
]


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(μ₁, e^{v₁}) ‖ N(μ₂, e^{v₂})) per element = ½(v₂ − v₁ + e^{v₁−v₂} + (μ₁−μ₂)² e^{−v₂} − 1)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def gaussian_log_likelihood(x, mean, logvar) -> torch.Tensor:
    """log N(x; μ, e^{v}) per element: the continuous decoder, for data that has a density."""
    return -0.5 * (math.log(2.0 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Φ(b) − Φ(a)) for a < b, mirrored into the lower tail where Φ keeps its precision."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi).clamp(max=1.0 - 1e-12))


def discretized_gaussian_log_likelihood(x, mean, logvar, bins: int = 256) -> torch.Tensor:
    """log P(x) per element for x ∈ [−1, 1] on ``bins`` levels under N(μ, e^{v}) integrated over the
    bin of width 2/(bins − 1) around x; the edge bins take the tails to ±∞ (Ho et al. 2020,
    §3.3)."""
    half = 1.0 / (bins - 1)
    inv_std = torch.exp(-0.5 * logvar)
    upper, lower = (x - mean + half) * inv_std, (x - mean - half) * inv_std
    mid = _log_ndtr_diff(lower, upper)
    left = torch.special.log_ndtr(upper)  # x = −1: P(X < −1 + half)
    right = torch.special.log_ndtr(-lower)  # x = +1: P(X > 1 − half)
    edge = 1.0 - 0.5 * half
    return torch.where(x < -edge, left, torch.where(x > edge, right, mid))


def _check_steps(schedule: DiscreteSchedule, steps: torch.Tensor) -> torch.Tensor:
    if not isinstance(schedule, DiscreteSchedule):
        raise PixdiffError("L_vlb needs a discrete chain: use a schedule such as 'linear_discrete' or "
                         "'iddpm_cosine_discrete'")
    steps = torch.as_tensor(steps, dtype=torch.long).cpu()
    if steps.numel() and (steps.min() < 1 or steps.max() > len(schedule)):
        raise PixdiffError(f"steps must lie in 1..{len(schedule)} (the schedule's chain)")
    return steps


def step_logsnr(schedule: DiscreteSchedule, steps) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ_k, λ_{k−1}) for 1-based steps k, with λ_0 = +∞ (clean data) so that step 1's posterior
    mean is x̂ itself (process.posterior_coefficients gives c_z = 0, c_x = 1 there)."""
    steps = _check_steps(schedule, steps)
    table = schedule.logsnr_table
    prev = torch.cat([table.new_full((1,), math.inf), table])
    return table[steps - 1], prev[steps - 1]


def model_log_variance(schedule: DiscreteSchedule, steps, var_interp: torch.Tensor | None,
                       fixed: str = "small") -> torch.Tensor:
    """log Σ_θ at 1-based ``steps`` (float64, shaped to broadcast against var_interp [B, ...]).

    With ``var_interp`` f: f log β + (1 − f) log β̃ (Nichol & Dhariwal 2021). Without it, DDPM's
    fixed choices: ``small`` β̃ or ``large`` β (Ho et al. 2020, §3.2: both gave similar results)."""
    steps = _check_steps(schedule, steps)
    log_beta = torch.log(schedule.betas)
    tilde = schedule.posterior_variance.clone()
    tilde[0] = tilde[1]  # β̃_1 = 0 would make log Σ = −∞; IDDPM clips to β̃_2
    log_tilde = torch.log(tilde)
    lb, lt = log_beta[steps - 1], log_tilde[steps - 1]  # [B]
    if var_interp is None:
        if fixed not in ("small", "large"):
            raise PixdiffError(f"fixed variance must be 'small' (β̃) or 'large' (β) (got {fixed!r})")
        return lt if fixed == "small" else lb
    f = var_interp.to(torch.float64)
    shape = (-1,) + (1,) * (f.dim() - 1)
    return f * lb.to(f.device).reshape(shape) + (1.0 - f) * lt.to(f.device).reshape(shape)


def vlb_term(x: torch.Tensor, z: torch.Tensor, x_hat: torch.Tensor, steps, schedule: DiscreteSchedule,
             var_interp: torch.Tensor | None = None, decoder: str = "discretized", fixed: str = "small") -> torch.Tensor:
    """L_{k−1} of each example in nats per element ([B, ...]): the Gaussian KL for k ≥ 2 and the
    decoder NLL −log p(x | z_1) for k = 1 (``discretized`` 256 bins, or ``gaussian`` for data with a
    density). z = z_k ~ q(z_k | x); x̂ the denoiser's output at z (detach it for L_hybrid)."""
    steps = _check_steps(schedule, steps)
    lam_t, lam_s = step_logsnr(schedule, steps)
    mean_q, var_q = process.posterior(z.to(torch.float64), x.to(torch.float64), lam_t, lam_s)
    mean_p, _ = process.posterior(z.to(torch.float64), x_hat.to(torch.float64), lam_t, lam_s)
    logvar_p = model_log_variance(schedule, steps, var_interp, fixed)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if logvar_p.dim() == 1:
        logvar_p = logvar_p.to(x.device).reshape(shape).expand(x.shape)
    first = (steps == 1).to(x.device).reshape(shape)
    # var_q = β̃_k; its log is −∞ at k = 1 where the KL is unused, so clamp it to stay finite.
    logvar_q = torch.log(var_q.clamp(min=1e-300)).to(x.device).reshape(shape)
    kl = normal_kl(mean_q, logvar_q, mean_p, logvar_p)
    if decoder == "discretized":
        nll = -discretized_gaussian_log_likelihood(x.to(torch.float64), mean_p, logvar_p)
    elif decoder == "gaussian":
        nll = -gaussian_log_likelihood(x.to(torch.float64), mean_p, logvar_p)
    else:
        raise PixdiffError(f"decoder must be 'discretized' or 'gaussian' (got {decoder!r})")
    return torch.where(first, nll, kl).to(x.dtype)


def prior_kl(x: torch.Tensor, logsnr_min) -> torch.Tensor:
    """L_T = KL(q(z_T | x) ‖ N(0, I)) per element = ½(α² (x² − 1) + softplus(λ)) at λ = λ_min
    (σ² − 1 = −α² and −log σ² = softplus(λ); VDM's prior term)."""
    lam = torch.as_tensor(logsnr_min, dtype=torch.float64, device=x.device)
    lam = lam.reshape((-1,) + (1,) * (x.dim() - 1)) if lam.dim() else lam
    a2 = torch.sigmoid(lam)
    return (0.5 * (a2 * (x.to(torch.float64) ** 2 - 1.0) + torch.nn.functional.softplus(lam))).to(x.dtype)


class ImportanceSampler:
    """Importance sampling of the step for L_vlb (Nichol & Dhariwal 2021, §3.3):

        L_vlb = E_{t~p_t}[L_t / p_t],   p_t ∝ sqrt(E[L_t²]),  Σ p_t = 1

    E[L_t²] is the mean of the last ``history`` values of L_t seen at step t; until every step has a
    full history p_t is uniform. ``uniform_prob`` of the mass stays uniform so no step starves
    (IDDPM's code uses 0.001). State is a plain dict of tensors for checkpoints."""

    def __init__(self, num_steps: int, history: int = 10, uniform_prob: float = 1e-3):
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise PixdiffError(f"num_steps must be a positive integer (got {num_steps!r})")
        if not (isinstance(history, int) and history >= 1):
            raise PixdiffError(f"history must be a positive integer (got {history!r})")
        if not 0.0 <= uniform_prob <= 1.0:
            raise PixdiffError(f"uniform_prob must lie in [0, 1] (got {uniform_prob})")
        self.num_steps, self.history, self.uniform_prob = num_steps, history, float(uniform_prob)
        self._losses = torch.zeros(num_steps, history, dtype=torch.float64)
        self._counts = torch.zeros(num_steps, dtype=torch.long)

    @property
    def ready(self) -> bool:
        return bool((self._counts >= self.history).all())

    def probabilities(self) -> torch.Tensor:
        """p_t over steps 1..K (index 0 is step 1), float64."""
        if not self.ready:
            return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        p = torch.sqrt((self._losses**2).mean(1))
        p = p / p.sum() if p.sum() > 0 else torch.full_like(p, 1.0 / self.num_steps)
        return (1.0 - self.uniform_prob) * p + self.uniform_prob / self.num_steps

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps [B] 1-based, p_t [B]); the unbiased estimate of L_vlb is L_t / p_t."""
        p = self.probabilities()
        idx = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        return idx + 1, p[idx]

    def update(self, steps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example L_t (detached) at their 1-based steps, keeping the last ``history``."""
        steps = torch.as_tensor(steps).detach().cpu().long().flatten()
        losses = torch.as_tensor(losses).detach().cpu().to(torch.float64).flatten()
        if steps.numel() != losses.numel():
            raise PixdiffError(f"got {steps.numel()} steps but {losses.numel()} losses")
        if not torch.isfinite(losses).all():
            raise PixdiffError("L_t holds NaN/inf; the importance sampler would be poisoned — check the loss")
        for k, loss in zip(steps.tolist(), losses.tolist()):
            # a ring buffer: once full, slot count % history holds the oldest value
            self._losses[k - 1, self._counts[k - 1] % self.history] = loss
            self._counts[k - 1] += 1

    def state_dict(self) -> dict:
        return {"losses": self._losses.clone(), "counts": self._counts.clone(), "history": self.history,
                "num_steps": self.num_steps, "uniform_prob": self.uniform_prob}

    def load_state_dict(self, state: dict) -> None:
        if int(state["num_steps"]) != self.num_steps or int(state["history"]) != self.history:
            raise PixdiffError(f"importance-sampler state is for {state['num_steps']} steps × {state['history']} "
                             f"history, this run uses {self.num_steps} × {self.history}; match the loss config")
        self._losses = torch.as_tensor(state["losses"], dtype=torch.float64).clone()
        self._counts = torch.as_tensor(state["counts"], dtype=torch.long).clone()
        self.uniform_prob = float(state["uniform_prob"])
