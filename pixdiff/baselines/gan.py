"""Class-conditional GAN: DCGAN-style generator and discriminator, hinge loss, spectral norm,
projection discriminator, EMA of the generator.

- Architecture: DCGAN's (Radford et al. 2016, §3: strided convolutions in D, up-sampling in G,
  no pooling or fully-connected hidden layers beyond the first projection), at 16×16; G normalises
  per sample (GroupNorm) so that an image never depends on the others of its batch.
- Spectral normalisation of every weight of D (Miyato et al. 2018, §2.1, eq. 8: W / σ(W), σ by
  one power iteration per forward, torch.nn.utils.parametrizations.spectral_norm).
- Projection discriminator (Miyato & Koyama 2018, §3, eq. 3): D(x, y) = ψ(φ(x)) + embed(y)ᵀ φ(x).
- Hinge loss (Lim & Ye 2017; Miyato et al. 2018, eq. 16; ``hinge_d_loss``, ``hinge_g_loss``):
      L_D = E_x[max(0, 1 − D(x, y))] + E_z[max(0, 1 + D(G(z, y), y))],   L_G = −E_z[D(G(z, y), y)].
- One D update then one G update per step (Adam β = (0.5, 0.999), DCGAN's); samples come from the
  EMA of G's weights (Yazıcı et al. 2019), which the common loop keeps (D's EMA just copies D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["NET_DEFAULTS", "TRAIN_DEFAULTS", "build", "GAN", "hinge_d_loss", "hinge_g_loss"]

NET_DEFAULTS = {"channels": 32, "latent": 64, "embed": 32}
TRAIN_DEFAULTS = {"optim": {"lr": 2e-4, "betas": (0.5, 0.999), "batch": 64, "warmup_images": 1_000,
                            "ema_halflife_images": 10_000.0},
                  "run": {"images": 64_000, "ckpt_every_images": 16_000, "log_every_images": 3_200}}


def hinge_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 − D(x))] + E[max(0, 1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018, eq. 16)."""
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()


def hinge_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """−E[D(G(z))] (the generator's side of the hinge loss)."""
    return -d_fake.mean()


class Generator(nn.Module):
    def __init__(self, net: dict, shape, num_classes: int):
        super().__init__()
        c, h, w = shape
        ch, zd, emb = net["channels"], net["latent"], net["embed"]
        self.hw, self.ch = (h // 4, w // 4), ch
        self.embed = nn.Embedding(num_classes, emb) if num_classes else None
        self.fc = nn.Linear(zd + (emb if num_classes else 0), 4 * ch * self.hw[0] * self.hw[1])

        def up(i, o):
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(i, o, 3, 1, 1), nn.GroupNorm(8, o), nn.ReLU()]

        self.body = nn.Sequential(nn.GroupNorm(8, 4 * ch), nn.ReLU(), *up(4 * ch, 2 * ch), *up(2 * ch, ch),
                                  nn.Conv2d(ch, c, 3, 1, 1), nn.Tanh())

    def forward(self, z, y=None):
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        return self.body(self.fc(z).view(z.shape[0], 4 * self.ch, *self.hw))


class Discriminator(nn.Module):
    def __init__(self, net: dict, shape, num_classes: int):
        super().__init__()
        c = shape[0]
        ch = net["channels"]
        self.features = nn.Sequential(spectral_norm(nn.Conv2d(c, ch, 3, 1, 1)), nn.LeakyReLU(0.2),
                                      spectral_norm(nn.Conv2d(ch, 2 * ch, 4, 2, 1)), nn.LeakyReLU(0.2),
                                      spectral_norm(nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1)), nn.LeakyReLU(0.2))
        self.out = spectral_norm(nn.Linear(4 * ch, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, 4 * ch)) if num_classes else None

    def forward(self, x, y=None):
        phi = self.features(x).sum((2, 3))  # φ(x): global sum pooling (Miyato & Koyama 2018)
        d = self.out(phi).squeeze(1)
        if self.embed is not None:
            d = d + (self.embed(y) * phi).sum(1)  # the projection term embed(y)ᵀ φ(x), eq. 3
        return d


class GAN(nn.Module):
    def __init__(self, net: dict, shape, num_classes: int):
        super().__init__()
        self.latent = net["latent"]
        self.G = Generator(net, shape, num_classes)
        self.D = Discriminator(net, shape, num_classes)

    def train_step(self, x, y, g, opt, ctx) -> dict:
        n, dev = x.shape[0], x.device
        z = torch.randn(n, self.latent, generator=g).to(dev)
        fake = self.G(z, y).detach()
        loss_d = hinge_d_loss(self.D(x, y), self.D(fake, y))
        ctx.optimize(opt, loss_d, self.D.parameters())
        z = torch.randn(n, self.latent, generator=g).to(dev)
        loss_g = hinge_g_loss(self.D(self.G(z, y), y))
        ctx.optimize(opt, loss_g, self.G.parameters())
        return {"loss": loss_d.item(), "loss_d": loss_d.item(), "loss_g": loss_g.item()}

    def ema_key(self, name: str) -> bool:
        return name.startswith("G.")

    @torch.no_grad()
    def generate(self, labels, gens, steps=None):
        dev = next(self.parameters()).device
        z = torch.stack([torch.randn(self.latent, generator=gi) for gi in gens]).to(dev)
        return self.G(z, labels)


def build(net: dict, shape, num_classes: int) -> GAN:
    return GAN(net, shape, num_classes)
