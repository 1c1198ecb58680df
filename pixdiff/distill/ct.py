"""Consistency training, no teacher (Song et al. 2023, Alg. 3), with improved CT's choices
(Song & Dhariwal 2023, "Improved techniques for training consistency models"):

- the consistency function's boundary parameterisation (Song et al. 2023, §3 / App. C;
  ``common.boundary_scalings``): f(x, σ_min) = x exactly;
- the discretisation σ_1 = σ_min < … < σ_N = σ_max of Karras et al. (2022, eq. 5) with ρ = 7
  (``common.karras_sigmas``), its size N(k) growing by the exponential curriculum of Song &
  Dhariwal 2023, §3.4, eq. 9:  N(k) = min(s_0 · 2^⌊k/K'⌋, s_1) + 1, K' = ⌊K / (⌊log₂(s_1/s_0)⌋ + 1)⌋
  (K the total number of training steps; s_0 = 10, s_1 = 1280);
- the index i of the pair (σ_i, σ_{i+1}) drawn from the discretised log-normal of §3.5, eq. 10:
  p(σ_i) ∝ erf((log σ_{i+1} − P_mean)/(√2 P_std)) − erf((log σ_i − P_mean)/(√2 P_std)),
  P_mean = −1.1, P_std = 2.0;
- the weighting λ(σ_i) = 1/(σ_{i+1} − σ_i) (§3.2) and the pseudo-Huber metric
  d(x, y) = sqrt(‖x − y‖² + c²) − c, c = 0.00054 √d (§3.3, d the data dimension);
- no EMA teacher: the target network θ⁻ is θ itself, without gradient (§3.2).

One step (Alg. 3 with these choices): x ~ data, z ~ N(0, I),

    L = λ(σ_i) d( f_θ(x + σ_{i+1} z, σ_{i+1}),  stopgrad f_θ(x + σ_i z, σ_i) ).

The student samples with ``pixdiff.samplers.consistency`` (Alg. 1).
"""

from __future__ import annotations

import math

import torch

from pixdiff.distill.common import SIGMA_MAX, SIGMA_MIN, ConsistencyFunction, Method, karras_sigmas, pseudo_huber

__all__ = ["ConsistencyTraining", "curriculum", "noise_level_probs", "ct_loss", "huber_c"]


def curriculum(k: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) of improved CT (Song & Dhariwal 2023, eq. 9) at training step k of K = ``total``."""
    k_prime = math.floor(total / (math.floor(math.log2(s1 / s0)) + 1))
    return min(s0 * 2 ** (k // max(k_prime, 1)), s1) + 1


def noise_level_probs(sigmas: torch.Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """p(σ_i), i = 1 … N−1, of the discretised log-normal (Song & Dhariwal 2023, eq. 10), float64."""
    ls = torch.log(sigmas)
    cdf = torch.erf((ls - p_mean) / (math.sqrt(2.0) * p_std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def huber_c(dim: int) -> float:
    """c = 0.00054 √d (Song & Dhariwal 2023, §3.3)."""
    return 0.00054 * math.sqrt(dim)


def ct_loss(f: ConsistencyFunction, x: torch.Tensor, z: torch.Tensor, i: torch.Tensor, sigmas: torch.Tensor,
            c: float, cond=None) -> torch.Tensor:
    """Per-example loss of Alg. 3 with improved CT's weighting and metric: pairs (σ_i, σ_{i+1}) =
    (sigmas[i], sigmas[i + 1]) (0-based), the target without gradient."""
    s_lo, s_hi = sigmas[i].to(x.device), sigmas[i + 1].to(x.device)
    b = (-1,) + (1,) * (x.dim() - 1)
    pred = f.sigma(x + s_hi.reshape(b).to(x.dtype) * z, s_hi, cond)
    with torch.no_grad():
        target = f.sigma(x + s_lo.reshape(b).to(x.dtype) * z, s_lo, cond)
    weight = (1.0 / (s_hi - s_lo)).to(x.dtype)
    return weight * pseudo_huber(pred, target, c)


class ConsistencyTraining(Method):
    name = "ct"
    sampler = "consistency"
    consistency = True
    OPTIONS = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "rho": 7.0, "s0": 10, "s1": 1280,
               "p_mean": -1.1, "p_std": 2.0, "huber_c": None}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        o = self.opt
        self.f = ConsistencyFunction(self.student, o["sigma_min"], self.teacher.student_config.loss.sigma_data)
        dim = math.prod(self.teacher.data_shape)
        self.c = float(o["huber_c"]) if o["huber_c"] is not None else huber_c(dim)

    def model(self, den):
        return ConsistencyFunction(den, self.opt["sigma_min"], self.teacher.student_config.loss.sigma_data)

    def levels(self, step: int) -> torch.Tensor:
        o = self.opt
        n = curriculum(step, self.total_steps, o["s0"], o["s1"])
        return karras_sigmas(n, o["sigma_min"], o["sigma_max"], o["rho"])

    def loss(self, step, x, cond, g):
        o = self.opt
        sig = self.levels(step)
        p = noise_level_probs(sig, o["p_mean"], o["p_std"])
        i = torch.multinomial(p, x.shape[0], replacement=True, generator=g)
        z = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        return ct_loss(self.f, x, z, i, sig, self.c, cond).mean()

    def extra_state(self):
        return {}
