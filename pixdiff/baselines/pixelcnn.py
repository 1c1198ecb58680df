"""Class-conditional gated PixelCNN on pixels: exact NLL in bits/dim.

van den Oord et al. 2016b ("Conditional Image Generation with PixelCNN Decoders"):

- p(x | y) = Π_i p(x_i | x_<i, y) in raster order (§2, eq. 1), so −log p(x | y) / (D ln 2) is the
  exact negative log-likelihood in bits per dimension. Each factor is, by ``output``:
  ``softmax``: a 256-way softmax over the pixel's 8-bit value (van den Oord et al. 2016a, "Pixel
  Recurrent Neural Networks", §5.3); ``logistic``: a discretised mixture of ``mixtures`` logistics
  (Salimans et al. 2017, PixelCNN++, §2.1, eq. 2): level l of 0..255 at x_l = l / 127.5 − 1 gets the
  mixture's mass on [x_l − 1/255, x_l + 1/255], level 0 everything below its upper edge and level 255
  everything above its lower edge, so the 256 probabilities sum to 1 (``logistic_mixture_log_prob``).
- Gated layers (§2.2, eq. 2, conditional form eq. 4): y = tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h),
  h the class embedding. With ``cond_map`` = m > 0 the layers also get location-dependent
  conditioning (§2.3): V_f * s + V_g * s, s = m(h) a learned m×H×W map per class (m(h) is a lookup
  table, the simplest such map for a one-hot h; a single map when unconditional), through a 1×1
  convolution per layer, so the class can say *where* strokes go, not only how strong each feature is.
- Two stacks without a blind spot (§2.2, Figure 2): a vertical stack (a (k/2+1)×k kernel: the rows
  above) feeds a horizontal stack (a 1×(k/2+1) kernel: the pixels to the left in the row); in the
  first layer both kernels' own row / own column are masked out, so the output at pixel i depends
  on pixels < i only (tests/test_baselines.py checks it by gradients). The horizontal stack is
  residual (Figure 2); ``v_residual`` makes the vertical stack residual as well (layers 2..L).

With several channels (RGB) the channels of one pixel are predicted independently given the
pixels before it (a valid but weaker factorisation than the paper's R → G → B masks; PixelCNN++'s
linear channel coupling is not used either).
Sampling runs the network once per pixel; pixel values are drawn by inverting the CDF of the
pixel's 256 level probabilities (either output) at a uniform drawn up front from the image's own
generator.

A run saved before a field existed loads with that field's earlier behaviour (``_LEGACY``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NET_DEFAULTS", "TRAIN_DEFAULTS", "build", "PixelCNN", "to_levels", "logistic_mixture_log_prob"]

# Defaults chosen on digits (16×16) for class accuracy at a ≤ 5-minute CPU budget: the location map
# and the logistic mixture together take the samples' class accuracy from 0.26 to ~0.98 (the
# candidates and their numbers: docs/baselines.md).
NET_DEFAULTS = {"channels": 16, "layers": 5, "kernel": 5, "embed": 16, "cond_map": 32, "output": "logistic",
                "mixtures": 5, "v_residual": True}
TRAIN_DEFAULTS = {"optim": {"lr": 5e-3, "batch": 64, "warmup_images": 2_000, "ema_halflife_images": 10_000.0},
                  "run": {"images": 40_000, "ckpt_every_images": 20_000, "log_every_images": 3_200}}
# the behaviour of a run saved before these fields existed
_LEGACY = {"cond_map": 0, "output": "softmax", "mixtures": 5, "v_residual": False}
OUTPUTS = ("softmax", "logistic")
LOG_SCALE_MIN = -7.0  # PixelCNN++'s floor on the logistics' log-scales (Salimans et al. 2017, code)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → their 8-bit levels 0..255 (the rounding of pixdiff.data.to_uint8)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().long()


def logistic_mixture_log_prob(logit_pi: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                              levels: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """log P(level) under a discretised mixture of logistics (Salimans et al. 2017, eq. 2).

    The mixture's components lie along ``dim`` of ``logit_pi`` / ``mean`` / ``log_scale``; ``levels``
    (integers 0..255) broadcasts against them with size 1 (or absent) there. With x = l / 127.5 − 1
    and a = (x + 1/255 − μ) / s, b = (x − 1/255 − μ) / s, a component gives level 0 σ(a), level 255
    1 − σ(b) = σ(−b), and an inner level σ(a) − σ(b), computed as σ(a) σ(−b) (1 − e^{b − a}) (exact
    algebra, stable in the tails without PixelCNN++'s mid-point fallback)."""
    levels = levels.unsqueeze(dim) if levels.dim() < mean.dim() else levels
    x = levels.to(mean.dtype) / 127.5 - 1.0
    inv_s = torch.exp(-log_scale)
    a = (x + 1.0 / 255 - mean) * inv_s
    b = (x - 1.0 / 255 - mean) * inv_s
    lo, hi = F.logsigmoid(a), F.logsigmoid(-b)
    inner = lo + hi + torch.log(-torch.expm1(b - a))
    lp = torch.where(levels == 0, lo, torch.where(levels == 255, hi, inner))
    return torch.logsumexp(F.log_softmax(logit_pi, dim) + lp, dim)


class GatedLayer(nn.Module):
    def __init__(self, c_in: int, dim: int, k: int, first: bool, cond_dim: int, map_dim: int, v_residual: bool):
        super().__init__()
        self.first, self.k, self.v_residual = first, k, v_residual and not first
        self.v = nn.Conv2d(c_in, 2 * dim, (k // 2 + 1, k))
        self.h = nn.Conv2d(c_in, 2 * dim, (1, k // 2 + 1))
        self.v2h = nn.Conv2d(2 * dim, 2 * dim, 1)
        self.h_out = nn.Conv2d(dim, dim, 1)
        self.cond = nn.Linear(cond_dim, 4 * dim) if cond_dim else None
        self.loc = nn.Conv2d(map_dim, 4 * dim, 1, bias=False) if map_dim else None
        vmask, hmask = torch.ones_like(self.v.weight), torch.ones_like(self.h.weight)
        if first:
            vmask[:, :, -1, :] = 0  # the vertical stack of layer 1 does not see its own row
            hmask[:, :, :, -1] = 0  # the horizontal stack of layer 1 does not see its own pixel
        self.register_buffer("vmask", vmask, persistent=False)
        self.register_buffer("hmask", hmask, persistent=False)

    @staticmethod
    def _gate(a: torch.Tensor) -> torch.Tensor:
        f, g = a.chunk(2, 1)
        return torch.tanh(f) * torch.sigmoid(g)  # eq. 2

    def forward(self, xv, xh, h, s):
        H, W, p = xv.shape[2], xv.shape[3], self.k // 2
        # vertical: output row r sees input rows r − k/2 .. r (.. r − 1 in layer 1), columns r ± k/2
        av = F.conv2d(F.pad(xv, (p, p, p, 0)), self.v.weight * self.vmask, self.v.bias)[:, :, :H, :W]
        # horizontal: output column c sees input columns c − k/2 .. c (.. c − 1 in layer 1) of its row
        ah = F.conv2d(F.pad(xh, (p, 0, 0, 0)), self.h.weight * self.hmask, self.h.bias)[:, :, :H, :W]
        ah = ah + self.v2h(av)
        if self.cond is not None:  # eq. 4: V h, the same at every location
            bv, bh = self.cond(h)[:, :, None, None].chunk(2, 1)
            av, ah = av + bv, ah + bh
        if self.loc is not None:  # §2.3: V * s, a class-dependent map (rows 0..H−1 of it)
            mv, mh = self.loc(s[:, :, :H]).chunk(2, 1)
            av, ah = av + mv, ah + mh
        out_v = self._gate(av)
        out_h = self.h_out(self._gate(ah))
        return (out_v + xv if self.v_residual else out_v), (out_h if self.first else out_h + xh)


class PixelCNN(nn.Module):
    def __init__(self, net: dict, shape, num_classes: int):
        super().__init__()
        net = {**_LEGACY, **net}
        c = shape[0]
        dim, k, emb, m = net["channels"], net["kernel"], net["embed"], net["cond_map"]
        if k % 2 == 0 or k < 3:
            raise ValueError(f"the kernel must be odd and >= 3 (got {k})")
        if net["output"] not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)} (got {net['output']!r})")
        if net["output"] == "logistic" and net["mixtures"] < 1:
            raise ValueError(f"mixtures must be >= 1 (got {net['mixtures']})")
        self.shape, self.num_classes, self.output = tuple(shape), num_classes, net["output"]
        self.mixtures = net["mixtures"]
        self.embed = nn.Embedding(num_classes, emb) if num_classes else None
        cd = emb if num_classes else 0
        # one m×H×W map per class (one in all when unconditional)
        self.cmap = nn.Embedding(max(num_classes, 1), m * shape[1] * shape[2]) if m else None
        self.layers = nn.ModuleList([GatedLayer(c if i == 0 else dim, dim, k, i == 0, cd, m, net["v_residual"])
                                     for i in range(net["layers"])])
        per_channel = 256 if self.output == "softmax" else 3 * self.mixtures
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(dim, 4 * dim, 1), nn.ReLU(), nn.Conv2d(4 * dim, per_channel * c, 1))

    def forward(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The head's raw output [n, P·C, H, W] for 8-bit images x in [−1, 1] (the parameters of
        p(x_i | x_<i, y): 256 logits, or the mixture's logits, means and log-scales, per channel)."""
        h = self.embed(y) if self.embed is not None else None
        s = None
        if self.cmap is not None:
            idx = y if self.num_classes else torch.zeros(len(x), dtype=torch.long, device=x.device)
            s = self.cmap(idx).view(len(x), -1, *self.shape[1:])
        xv = xh = x
        for layer in self.layers:
            xv, xh = layer(xv, xh, h, s)
        return self.head(xh)

    def _mixture(self, out: torch.Tensor):
        n, _, H, W = out.shape
        lp, mu, ls = out.view(n, 3, self.mixtures, self.shape[0], H, W).unbind(1)  # [n, K, C, H, W] each
        return lp, mu, ls.clamp(min=LOG_SCALE_MIN)

    def level_log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """log p(level | x_<i, y) of all 256 levels, [n, 256, C, H, W], from the raw output ``out``."""
        n, _, H, W = out.shape
        if self.output == "softmax":
            return out.view(n, 256, self.shape[0], H, W).log_softmax(1)
        lp, mu, ls = self._mixture(out)
        levels = torch.arange(256, device=out.device).view(1, 256, 1, 1, 1, 1)
        return logistic_mixture_log_prob(lp[:, None], mu[:, None], ls[:, None], levels, dim=2)

    def log_probs(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """log p(x_i = level | x_<i, y), [n, 256, C, H, W], for 8-bit images x in [−1, 1]."""
        return self.level_log_probs(self(x, y))

    def bits_per_dim(self, x, y=None) -> torch.Tensor:
        """Exact −log p(x | y) / (D ln 2) per image of 8-bit images x."""
        lv = to_levels(x)
        out = self(lv.to(x.dtype) / 127.5 - 1.0, y)
        if self.output == "softmax":
            n, _, H, W = out.shape
            nll = F.cross_entropy(out.view(n, 256, self.shape[0], H, W), lv, reduction="none")
        else:
            nll = -logistic_mixture_log_prob(*self._mixture(out), lv, dim=1)
        return nll.flatten(1).sum(1) / (x[0].numel() * math.log(2.0))

    def train_step(self, x, y, g, opt, ctx) -> dict:
        loss = self.bits_per_dim(x, y).mean()
        ctx.optimize(opt, loss, self.parameters())
        return {"loss": loss.item()}

    def ema_key(self, name: str) -> bool:
        return True

    @torch.no_grad()
    def generate(self, labels, gens, steps=None):
        w = next(self.parameters())
        dev = w.device
        c, H, W = self.shape
        u = torch.stack([torch.rand(c, H, W, generator=gi, dtype=torch.float64) for gi in gens]).to(dev)
        x = torch.zeros(len(gens), c, H, W, device=dev, dtype=w.dtype)
        for i in range(H):
            for j in range(W):
                # rows below i cannot change the output at row i (causality): run rows 0..i only
                out = self(x[:, :, : i + 1], labels)[:, :, i: i + 1, j: j + 1]
                p = self.level_log_probs(out.double())[:, :, :, 0, 0].exp()  # [n, 256, C]
                cdf = p.cumsum(1).transpose(1, 2).contiguous()  # [n, C, 256]
                level = torch.searchsorted(cdf, u[:, :, i, j, None].contiguous()).clamp(max=255).squeeze(-1)
                x[:, :, i, j] = level.to(x.dtype) / 127.5 - 1.0
        return x


def build(net: dict, shape, num_classes: int) -> PixelCNN:
    return PixelCNN(net, shape, num_classes)
