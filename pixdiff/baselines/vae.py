"""Conditional convolutional VAE with a discretised-Gaussian decoder; the ELBO in bits/dim.

Kingma & Welling 2014 ("Auto-Encoding Variational Bayes"): encoder q(z | x, y) = N(μ, diag σ²),
prior p(z) = N(0, I), reparameterised z = μ + σ ε (§2.4), and the bound (§2.3, eq. 3)

    log p(x | y) ≥ E_q[log p(x | z, y)] − KL(q(z | x, y) ‖ p(z)),

with the KL of diagonal Gaussians in closed form (their appendix B; ``kl_diag_gaussians``). The
decoder is a Gaussian N(μ_θ(z, y), σ²) (σ learned per channel) discretised to the 256 levels of
8-bit images, as DDPM's last step (Ho et al. 2020, §3.3, eq. 13): each level gets the Gaussian's
mass on its bin of width 2/255, the edge levels the tails. So −ELBO is a bound on the exact
negative log-likelihood of the 8-bit images, in bits per dimension: −ELBO / (D ln 2).

Conditioning (Sohn et al. 2015, the CVAE): the label's embedding enters encoder and decoder.
Samples: z ~ N(0, I), image = the decoder mean μ_θ(z, y) (the usual VAE picture; drawing the
pixel noise too only adds grain).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NET_DEFAULTS", "TRAIN_DEFAULTS", "build", "VAE", "kl_diag_gaussians", "discretized_gaussian_log_likelihood"]

NET_DEFAULTS = {"channels": 32, "latent": 16, "embed": 32}
TRAIN_DEFAULTS = {"optim": {"lr": 2e-3, "batch": 64, "warmup_images": 2_000, "ema_halflife_images": 10_000.0},
                  "run": {"images": 100_000, "ckpt_every_images": 20_000, "log_every_images": 3_200}}


def kl_diag_gaussians(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor | float = 0.0,
                      logvar2: torch.Tensor | float = 0.0) -> torch.Tensor:
    """KL(N(μ1, diag e^logvar1) ‖ N(μ2, diag e^logvar2)), summed over the last dimension:
    ½ Σ [logvar2 − logvar1 + (e^logvar1 + (μ1 − μ2)²) / e^logvar2 − 1]
    (with μ2 = 0, logvar2 = 0 it is Kingma & Welling 2014, appendix B: −½ Σ (1 + log σ² − μ² − σ²))."""
    mu2, logvar2 = torch.as_tensor(mu2, dtype=mu1.dtype), torch.as_tensor(logvar2, dtype=mu1.dtype)
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2) ** 2) * torch.exp(-logvar2) - 1.0).sum(-1)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per element for x on the 256 levels of [−1, 1] (Ho et al. 2020, eq. 13): the mass of
    N(mean, e^{2 log_scale}) on [x − 1/255, x + 1/255], with (−∞, −1 + 1/255] for x = −1 and
    [1 − 1/255, ∞) for x = 1."""
    inv = torch.exp(-log_scale)
    upper = (x - mean + 1.0 / 255) * inv
    lower = (x - mean - 1.0 / 255) * inv
    log_cdf_upper = torch.special.log_ndtr(upper)  # log Φ(upper)
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)  # log (1 − Φ(lower))
    mid = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_one_minus_cdf_lower, mid))


class VAE(nn.Module):
    def __init__(self, net: dict, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise ValueError(f"the VAE halves the image twice: sides must be multiples of 4 (got {h}×{w})")
        ch, zd, emb = net["channels"], net["latent"], net["embed"]
        self.shape, self.num_classes, self.latent = shape, num_classes, zd
        self.hw = (h // 4, w // 4)
        self.embed = nn.Embedding(num_classes, emb) if num_classes else None
        e = emb if num_classes else 0
        self.enc = nn.Sequential(nn.Conv2d(c, ch, 3, 1, 1), nn.SiLU(), nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(2 * ch, 2 * ch, 4, 2, 1), nn.SiLU(), nn.Flatten())
        flat = 2 * ch * self.hw[0] * self.hw[1]
        self.enc_out = nn.Sequential(nn.Linear(flat + e, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, 2 * zd))
        self.dec_in = nn.Sequential(nn.Linear(zd + e, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, flat), nn.SiLU())
        self.dec = nn.Sequential(nn.ConvTranspose2d(2 * ch, 2 * ch, 4, 2, 1), nn.SiLU(),
                                 nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1), nn.SiLU(), nn.Conv2d(ch, c, 3, 1, 1))
        self.log_scale = nn.Parameter(torch.full((c,), math.log(0.1)))

    def _cond(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return h if self.embed is None else torch.cat([h, self.embed(y)], 1)

    def encode(self, x, y=None):
        mu, logvar = self.enc_out(self._cond(self.enc(x), y)).chunk(2, 1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z, y=None):
        h = self.dec_in(self._cond(z, y)).view(z.shape[0], -1, *self.hw)
        return self.dec(h)

    def neg_elbo_bits(self, x, y, eps: torch.Tensor):
        """(−ELBO in bits/dim [n], reconstruction part, KL part) with the reparameterisation noise ``eps``."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * eps  # Kingma & Welling 2014, §2.4
        mean = self.decode(z, y)
        rec = -discretized_gaussian_log_likelihood(x, mean, self.log_scale[:, None, None]).flatten(1).sum(1)
        kl = kl_diag_gaussians(mu, logvar)
        d = x[0].numel() * math.log(2.0)
        return (rec + kl) / d, rec / d, kl / d

    def bits_per_dim(self, x, y=None):
        eps = torch.randn(x.shape[0], self.latent, device=x.device)
        return self.neg_elbo_bits(x, y, eps)[0]

    def train_step(self, x, y, g, opt, ctx) -> dict:
        eps = torch.randn(x.shape[0], self.latent, generator=g).to(x.device)
        bpd, rec, kl = self.neg_elbo_bits(x, y, eps)
        loss = bpd.mean()
        ctx.optimize(opt, loss, self.parameters())
        return {"loss": loss.item(), "rec_bpd": rec.mean().item(), "kl_bpd": kl.mean().item()}

    def ema_key(self, name: str) -> bool:
        return True

    @torch.no_grad()
    def generate(self, labels, gens, steps=None):
        dev = next(self.parameters()).device
        z = torch.stack([torch.randn(self.latent, generator=gi) for gi in gens]).to(dev)
        return self.decode(z, labels).clamp(-1, 1)


def build(net: dict, shape, num_classes: int) -> VAE:
    return VAE(net, shape, num_classes)
