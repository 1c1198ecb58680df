"""Train the photos feature network that `pixdiff eval --features photos` uses.

    python scripts/train_photos_features.py            # writes pixdiff/assets/photos_features.*

Trains `pixdiff.metrics.photos_features.PhotosNet` on the embedded photos *train* split only
(3200 crops of the left 512 columns of each photo; the test split, the right 128 columns, stays
held out for the accuracy check). The task is finer than the dataset's 2 labels so that the
features encode content: 16 classes = source photo × row band (4 equal bands of the photo's
height, by the crop's centre) × scale (crop side < 96 px or ≥ 96 px). The crop boxes are those
`pixdiff.datasets.photos` cuts (the same seeded draw, checked against its images here).

Every random draw (init, order, augmentation, dropout) comes from generators seeded by
``--seed``. Augmentation: horizontal flips (they change neither label), random shifts of up to
2 px (reflect padding) and, on half the batches, Gaussian pixel noise with σ ~ U(0, 0.05) per
image (``--noise``), so that slightly off samples from a generator are still read by their
content. About 2 minutes on one CPU thread.

Writes the weights (safetensors, no pickle, no metadata) and a JSON with their provenance: the
command, seed, settings, train and held-out accuracies (2 source photos and 16 fine classes, at
32×32 and at 16 and 64 px through the extractor's resizing), torch version and the weights'
sha256. Bit-exact reproduction needs the same torch build and thread count; accuracy does not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixdiff.datasets import load_photos
from pixdiff.metrics.features import write_feature_net
from pixdiff.metrics.photos_features import PhotosNet, photos_extractor

ROWS, SCALE_SPLIT = 4, 96  # row bands of the photo; crop sides < 96 px vs ≥ 96 px


def fine_labels(split: str) -> torch.Tensor:
    """int64 [N]: photo · 8 + row band · 2 + scale bin of every crop of ``split``, in the order
    of `load_photos(split=split)` (which is checked: same count, same photo labels, same pixels
    for the first crop of each photo)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from pixdiff.datasets.folder import fit_image
    from pixdiff.datasets.photos import crop_boxes, photo_crops

    images, photo, _ = photo_crops(32, split)
    out, start = [], 0
    for p, img in enumerate(load_sample_images().images):
        b = crop_boxes(p, split, img.shape[0], img.shape[1])  # (top, left, side), as photo_crops cuts them
        top, left, side = (int(v) for v in b[0])
        first = fit_image(Image.fromarray(img).crop((left, top, left + side, top + side)), 32, 3)[0]
        if not np.array_equal(first, images[start]):
            raise RuntimeError("pixdiff.datasets.photos no longer cuts the crops this script labels")
        row = np.minimum((b[:, 0] + b[:, 2] / 2) * ROWS // img.shape[0], ROWS - 1).astype(np.int64)
        out.append(p * PhotosNet.positions + row * 2 + (b[:, 2] >= SCALE_SPLIT))
        start += len(b)
    y = torch.from_numpy(np.concatenate(out).astype(np.int64))
    if len(y) != len(photo) or not torch.equal(y // PhotosNet.positions, torch.from_numpy(np.array(photo))):
        raise RuntimeError("pixdiff.datasets.photos no longer cuts the crops this script labels")
    return y


def augment(x: torch.Tensor, g: torch.Generator, max_px: int = 2) -> torch.Tensor:
    """Random horizontal flip and translation by up to max_px pixels (reflect padding) per image."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = F.pad(x, (max_px,) * 4, mode="reflect")
    dx, dy = torch.randint(0, 2 * max_px + 1, (2, n), generator=g)
    return torch.stack([p[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@torch.no_grad()
def accuracies(net: PhotosNet, x: torch.Tensor, fine: torch.Tensor) -> tuple[float, float]:
    """(accuracy on the 2 source photos, accuracy on the 16 fine classes)."""
    net.eval()
    feats_logits = [net.fine(x[i:i + 512]) for i in range(0, len(x), 512)]
    logits = torch.cat([lg for _, lg in feats_logits])
    photo = logits.unflatten(1, (PhotosNet.num_classes, PhotosNet.positions)).logsumexp(2).argmax(1)
    return ((photo == fine // PhotosNet.positions).double().mean().item(),
            (logits.argmax(1) == fine).double().mean().item())


def train(seed: int, epochs: int, batch: int, lr: float, noise: float = 0.05,
          verbose: bool = True) -> tuple[PhotosNet, dict]:
    tr, te = load_photos(32, "train"), load_photos(32, "test")
    ytr, yte = fine_labels("train"), fine_labels("test")
    g = torch.Generator().manual_seed(seed)
    net = PhotosNet()
    net.init_weights(g)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(tr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(tr), generator=g)
        for i in range(0, len(tr) - batch + 1, batch):
            idx = order[i:i + batch]
            x, y = augment(tr.images[idx], g), ytr[idx]
            if step % 2 and noise > 0:
                sigma = noise * torch.rand(len(idx), 1, 1, 1, generator=g)
                x = (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)
            # dropout draws from the global RNG; seed it from g so the run stays a function of --seed
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            loss = F.cross_entropy(net.fine(x)[1], y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}", flush=True)
    acc = {}
    acc["train_accuracy"], acc["train_accuracy_fine"] = accuracies(net, tr.images, ytr)
    acc["test_accuracy"], acc["test_accuracy_fine"] = accuracies(net, te.images, yte)
    acc["test_correct"] = round(acc["test_accuracy"] * len(te))
    acc["test_count"] = len(te)
    return net, acc


def resized_accuracies(weights: Path) -> dict:
    """Held-out accuracy on the 2 source photos through the extractor, at 16 and 64 px."""
    ext = photos_extractor(weights)
    out = {}
    for r in (16, 64):
        te = load_photos(r, "test")
        out[f"test_accuracy_{r}px"] = (ext(te.images).probs.argmax(1) == te.labels).double().mean().item()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--noise", type=float, default=0.05, help="largest σ of the pixel-noise augmentation (0: none)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (part of the bit-exact recipe)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "pixdiff" / "assets" / "photos_features.safetensors")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    net, acc = train(a.seed, a.epochs, a.batch, a.lr, a.noise)
    seconds = time.time() - t0
    sha = write_feature_net(net, a.out)
    acc.update(resized_accuracies(a.out))
    info = {
        "what": "pixdiff.metrics.photos_features.PhotosNet weights, trained on load_photos(32, 'train') "
                "with 16 classes (photo x 4 row bands x 2 crop scales); accuracies without _fine are on "
                "the 2 source photos",
        "command": f"python scripts/train_photos_features.py --seed {a.seed} --epochs {a.epochs} --batch {a.batch} --lr {a.lr} --noise {a.noise} --threads {a.threads}",
        "seed": a.seed, "epochs": a.epochs, "batch": a.batch, "lr": a.lr, "noise": a.noise, "threads": a.threads,
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in acc.items()},
        "torch": torch.__version__, "seconds": round(seconds, 1),
        "sha256": sha,
    }
    a.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
