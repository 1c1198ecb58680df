"""The noisy classifier p_φ(y | z_t) of classifier guidance (Dhariwal & Nichol 2021, §4: a
classifier trained on noised images, conditioned on the noise level); `pixdiff train-classifier`
(pixdiff/cli/train_classifier.py) calls ``train_classifier``.

Each step draws t ~ U(0, 1) per image on the training schedule (default ``cosine``), noises the
batch, z = α x + σ ε, and minimises the cross-entropy of the true label. The checkpoint has the
same format as a diffusion run (safetensors + state.json, atomic); ``load_classifier`` gives
``classifier(z, logsnr) -> logits`` for ``pixdiff.guidance.classifier`` and
``pixdiff sample --classifier``. Short runs only: no resume (rerun instead).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from pixdiff import checkpoint as ckpt_io
from pixdiff import datasets, nets, process, schedules
from pixdiff.errors import PixdiffError

__all__ = ["train_classifier", "load_classifier"]


def train_classifier(out: str | Path, data: str = "digits", resolution: int = 16, channels: int = 1,
                     preset: str = "tiny-classifier", steps: int = 2000, batch: int = 64, lr: float = 1e-3,
                     schedule: str = "cosine", seed: int = 0, progress: bool = True,
                     device: str | torch.device = "cpu") -> Path:
    """Train a noisy classifier into ``out``; draws come from one CPU generator (so a run is the
    same on any device up to kernel arithmetic) and the network runs on ``device``."""
    out = Path(out)
    if ckpt_io.list_checkpoints(out):
        raise PixdiffError(f"{out} already holds a checkpoint; choose another --out")
    ds = datasets.load(data, resolution, channels, "train", labels="folders" if Path(str(data)).is_dir() and not (Path(str(data)) / "manifest.json").exists() else "none")
    if ds.labels is None or len(ds.shape) != 3:
        raise PixdiffError(f"a noisy classifier needs labelled images; {data!r} has none")
    torch.manual_seed(seed)
    net = nets.from_preset(preset, in_channels=ds.shape[0], resolution=resolution, num_classes=ds.num_classes)
    if net.config.kind != "classifier":
        raise PixdiffError(f"--preset {preset} is not a classifier preset (try tiny-classifier)")
    net.to(device)
    sch = schedules.get(schedule)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    from tqdm import tqdm

    log = []
    for step in tqdm(range(steps), desc="train-classifier", disable=not progress):
        idx = torch.randint(len(ds), (batch,), generator=g)
        x, y = ds.images[idx], ds.labels[idx]
        t = torch.rand(batch, generator=g, dtype=torch.float64).clamp(1e-4, 1 - 1e-4)
        lam = sch.logsnr(t)
        z = process.diffuse(x, lam, torch.randn(x.shape, generator=g))
        loss = F.cross_entropy(net(z.to(device), lam.float().to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.append({"step": step + 1, "loss": loss.item()})
    sd = {k: v.cpu() for k, v in net.state_dict().items()}
    if not all(bool(torch.isfinite(v).all()) for v in sd.values() if v.is_floating_point()):
        raise PixdiffError(f"the classifier's weights are not finite after {steps} steps (not saved); try a lower --lr")
    state = {"kind": "classifier", "net_kind": net.config.kind, "net_config": asdict(net.config),
             "schedule": schedule, "data": ds.name, "class_names": ds.class_names, "log": log,
             "config": {"preset": preset, "steps": steps, "batch": batch, "lr": lr, "seed": seed},
             "optim": {}, "meta": {"num_classes": ds.num_classes}}
    return ckpt_io.save(out, steps * batch, state, sd, sd, {}, keep=1)


def load_classifier(path: str | Path, device: str | torch.device = "cpu"):
    """``classifier(z, logsnr) -> logits`` from a `pixdiff train-classifier` checkpoint."""
    ck = ckpt_io.load(path)
    if ck.state.get("kind") != "classifier":
        raise PixdiffError(f"{ck.path} is not a noisy-classifier checkpoint (made by `pixdiff train-classifier`)")
    net = nets.build(ck.state["net_kind"], ck.state["net_config"])
    net.load_state_dict(ck.model)
    net.eval().to(device)

    def classifier(z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        return net(z.float(), torch.as_tensor(logsnr).float().expand(z.shape[0])).to(z.dtype)

    classifier.num_classes = ck.state["meta"]["num_classes"]
    return classifier
