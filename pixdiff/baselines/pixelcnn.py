"""Class-conditional gated PixelCNN on pixels: exact NLL in bits/dim, 256-way softmax.

van den Oord et al. 2016 ("Conditional Image Generation with PixelCNN Decoders"):

- p(x | y) = Π_i p(x_i | x_<i, y) in raster order (§2, eq. 1), each factor a 256-way softmax over
  the pixel's 8-bit value (van den Oord et al. 2016a, "Pixel Recurrent Neural Networks", §5.3), so
  −log p(x | y) / (D ln 2) is the exact negative log-likelihood in bits per dimension.
- Gated layers (§2.2, eq. 2, conditional form eq. 4): y = tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h),
  h the class embedding.
- Two stacks without a blind spot (§2.2, Figure 2): a vertical stack (a (k/2+1)×k kernel: the rows
  above) feeds a horizontal stack (a 1×(k/2+1) kernel: the pixels to the left in the row); in the
  first layer both kernels' own row / own column are masked out, so the output at pixel i depends
  on pixels < i only (tests/test_baselines.py checks it by gradients).

With several channels (RGB) the channels of one pixel are predicted independently given the
pixels before it (a valid but weaker factorisation than the paper's R → G → B masks).
Sampling runs the network once per pixel; pixel values are drawn by inverting each softmax's
CDF at a uniform drawn up front from the image's own generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NET_DEFAULTS", "TRAIN_DEFAULTS", "build", "PixelCNN", "to_levels"]

NET_DEFAULTS = {"channels": 16, "layers": 5, "kernel": 5, "embed": 16}
TRAIN_DEFAULTS = {"optim": {"lr": 2e-3, "batch": 64, "warmup_images": 2_000, "ema_halflife_images": 10_000.0},
                  "run": {"images": 40_000, "ckpt_every_images": 20_000, "log_every_images": 3_200}}


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] → their 8-bit levels 0..255 (the rounding of pixdiff.data.to_uint8)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().long()


class GatedLayer(nn.Module):
    def __init__(self, c_in: int, dim: int, k: int, first: bool, cond_dim: int):
        super().__init__()
        self.first, self.k = first, k
        self.v = nn.Conv2d(c_in, 2 * dim, (k // 2 + 1, k))
        self.h = nn.Conv2d(c_in, 2 * dim, (1, k // 2 + 1))
        self.v2h = nn.Conv2d(2 * dim, 2 * dim, 1)
        self.h_out = nn.Conv2d(dim, dim, 1)
        self.cond = nn.Linear(cond_dim, 4 * dim) if cond_dim else None
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

    def forward(self, xv, xh, h):
        H, W, p = xv.shape[2], xv.shape[3], self.k // 2
        # vertical: output row r sees input rows r − k/2 .. r (.. r − 1 in layer 1), columns r ± k/2
        av = F.conv2d(F.pad(xv, (p, p, p, 0)), self.v.weight * self.vmask, self.v.bias)[:, :, :H, :W]
        # horizontal: output column c sees input columns c − k/2 .. c (.. c − 1 in layer 1) of its row
        ah = F.conv2d(F.pad(xh, (p, 0, 0, 0)), self.h.weight * self.hmask, self.h.bias)[:, :, :H, :W]
        ah = ah + self.v2h(av)
        if self.cond is not None:
            bv, bh = self.cond(h)[:, :, None, None].chunk(2, 1)
            av, ah = av + bv, ah + bh
        out_v = self._gate(av)
        out_h = self.h_out(self._gate(ah))
        return out_v, (out_h if self.first else out_h + xh)


class PixelCNN(nn.Module):
    def __init__(self, net: dict, shape, num_classes: int):
        super().__init__()
        c = shape[0]
        dim, k, emb = net["channels"], net["kernel"], net["embed"]
        if k % 2 == 0 or k < 3:
            raise ValueError(f"the kernel must be odd and >= 3 (got {k})")
        self.shape, self.num_classes = tuple(shape), num_classes
        self.embed = nn.Embedding(num_classes, emb) if num_classes else None
        cd = emb if num_classes else 0
        self.layers = nn.ModuleList([GatedLayer(c if i == 0 else dim, dim, k, i == 0, cd) for i in range(net["layers"])])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(dim, 4 * dim, 1), nn.ReLU(), nn.Conv2d(4 * dim, 256 * c, 1))

    def logits(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Logits [n, 256, C, H, W] of p(x_i | x_<i, y) for 8-bit images x in [−1, 1]."""
        h = self.embed(y) if self.embed is not None else None
        xv = xh = x
        for layer in self.layers:
            xv, xh = layer(xv, xh, h)
        out = self.head(xh)
        n, _, H, W = out.shape
        return out.view(n, 256, self.shape[0], H, W)

    def bits_per_dim(self, x, y=None) -> torch.Tensor:
        """Exact −log p(x | y) / (D ln 2) per image of 8-bit images x."""
        lv = to_levels(x)
        nll = F.cross_entropy(self.logits(lv.float() / 127.5 - 1.0, y), lv, reduction="none")
        return nll.flatten(1).sum(1) / (x[0].numel() * math.log(2.0))

    def train_step(self, x, y, g, opt, ctx) -> dict:
        loss = self.bits_per_dim(x, y).mean()
        ctx.optimize(opt, loss, self.parameters())
        return {"loss": loss.item()}

    def ema_key(self, name: str) -> bool:
        return True

    @torch.no_grad()
    def generate(self, labels, gens, steps=None):
        dev = next(self.parameters()).device
        c, H, W = self.shape
        u = torch.stack([torch.rand(c, H, W, generator=gi, dtype=torch.float64) for gi in gens]).to(dev)
        x = torch.zeros(len(gens), c, H, W, device=dev)
        for i in range(H):
            for j in range(W):
                # rows below i cannot change the logits of row i (causality): run rows 0..i only
                p = self.logits(x[:, :, : i + 1], labels)[:, :, :, i, j].double().softmax(1)  # [n, 256, C]
                cdf = p.cumsum(1).transpose(1, 2).contiguous()  # [n, C, 256]
                level = torch.searchsorted(cdf, u[:, :, i, j, None].contiguous()).clamp(max=255).squeeze(-1)
                x[:, :, i, j] = level.float() / 127.5 - 1.0
        return x


def build(net: dict, shape, num_classes: int) -> PixelCNN:
    return PixelCNN(net, shape, num_classes)
