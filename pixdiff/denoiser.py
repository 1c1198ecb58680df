"""Backbone + parameterisation = the one interface that every sampler, loss and guidance uses:

    denoiser(z, logsnr, cond=None) -> x̂        (VP state z, logsnr [B], labels or None)

A backbone is any ``nn.Module`` called as ``net(x_in, logsnr, cond)``; what its output means is
the parameterisation (ε-prediction, Ho et al. 2020; v-prediction, Salimans & Ho 2022 as used by
Hoogeboom et al. 2025 (SiD2); EDM's F, Karras et al. 2022):

    eps   x̂ = (z − σ ε̂)/α
    x     x̂ = net output
    v     x̂ = α z − σ v̂                           (v = α ε − σ x)
    edm   x̂ = c_skip x_σ + c_out F(c_in x_σ, λ)    (x_σ = z/α, s = exp(−λ/2); Karras et al.
                                                    2022, Table 1; the net sees λ = −8 c_noise)

With ``learn_sigma`` (IDDPM, Nichol & Dhariwal 2021, §3.1) the backbone returns twice the
channels; the second half is the raw output v ∈ [−1, 1] and ``predict`` returns the fraction
f = (v + 1)/2 beside x̂, so that
log Σ = f log β_t + (1 − f) log β̃_t (IDDPM's code convention for the paper's interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pixdiff import process
from pixdiff.errors import PixdiffError

__all__ = ["Denoiser", "DenoiserOutput", "PARAMETERIZATIONS"]

Parameterization = Literal["eps", "x", "v", "edm"]
PARAMETERIZATIONS = ("eps", "x", "v", "edm")


@dataclass
class DenoiserOutput:
    x_hat: torch.Tensor  # [B, C, H, W]
    var_interp: torch.Tensor | None = None  # IDDPM's v ∈ [0, 1] (Nichol & Dhariwal 2021), or None


class Denoiser(nn.Module):
    """Wraps a backbone into ``denoiser(z, logsnr, cond) -> x̂``.

    Args:
        net: backbone called as ``net(x_in, logsnr, cond)``.
        parameterization: what the backbone predicts: eps, x, v or edm.
        sigma_data: EDM's σ_data (only for ``edm``).
        learn_sigma: the backbone returns 2·C channels, the second half the IDDPM variance
            interpolation v (Nichol & Dhariwal 2021, §3.1).
    """

    def __init__(self, net: nn.Module, parameterization: Parameterization = "v", sigma_data: float = 0.5,
                 learn_sigma: bool = False):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise PixdiffError(f"unknown parameterization {parameterization!r}; choose from {', '.join(PARAMETERIZATIONS)}")
        if sigma_data <= 0:
            raise PixdiffError(f"sigma_data must be positive (got {sigma_data})")
        self.net = net
        self.parameterization = parameterization
        self.sigma_data = float(sigma_data)
        self.learn_sigma = bool(learn_sigma)
        # The label that means "no class" (classifier-free guidance batches it beside the real
        # labels in one forward); None when the backbone is unconditional or does not say.
        n = getattr(getattr(net, "config", None), "num_classes", 0)
        self.null_label = int(n) if isinstance(n, int) and n > 0 else None

    def predict(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None) -> DenoiserOutput:
        lam = torch.as_tensor(logsnr, dtype=torch.float64, device=z.device).expand(z.shape[0])
        # The backbone runs in its own dtype (e.g. float32 weights under a float64 likelihood
        # solver); the parameterisation arithmetic stays in z's dtype.
        p = next(self.net.parameters(), None) if isinstance(self.net, nn.Module) else None
        nd = p.dtype if p is not None else z.dtype
        if self.parameterization == "edm":
            x_sigma, s = process.to_sigma_space(z, lam)
            c_skip, c_out, c_in, _ = process.edm_preconditioning(s, self.sigma_data)
            out = self.net((process._b(c_in, z) * x_sigma).to(nd), lam.to(nd), cond)
            out, var = self._split(out, z)
            x_hat = process._b(c_skip, z) * x_sigma + process._b(c_out, z) * out.to(z.dtype)
        else:
            out = self.net(z.to(nd), lam.to(nd), cond)
            out, var = self._split(out, z)
            x_hat = process.to_x(out.to(z.dtype), self.parameterization, z, lam)
        return DenoiserOutput(x_hat, var)

    def _split(self, out: torch.Tensor, z: torch.Tensor):
        c = z.shape[1]
        if self.learn_sigma:
            if out.shape[1] != 2 * c:
                raise PixdiffError(f"learn_sigma needs a backbone with {2 * c} output channels (got {out.shape[1]})")
            return out[:, :c], (out[:, c:].to(z.dtype) + 1.0) / 2.0
        if out.shape[1] != c:
            raise PixdiffError(f"backbone returned {out.shape[1]} channels for a {c}-channel input")
        return out, None

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor | None = None, full: bool = False):
        """x̂; with ``full=True`` the whole ``DenoiserOutput`` (what ``predict`` returns), so that a
        trainer can reach ``predict`` through ``__call__`` and its hooks (DDP)."""
        out = self.predict(z, logsnr, cond)
        return out if full else out.x_hat
