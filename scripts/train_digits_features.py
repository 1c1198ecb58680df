"""Train the digits feature network that `pixdiff eval --features digits` uses.

    python scripts/train_digits_features.py            # writes pixdiff/assets/digits_features.*

Trains `pixdiff.metrics.features.DigitsNet` on the embedded digits *train* split only (the
test split stays held out for the accuracy check), with every random draw (init, order,
augmentation, dropout) taken from generators seeded by ``--seed``. Augmentation: random shifts
of up to 1 px and, on half the batches, Gaussian pixel noise (σ = 0.1), so that slightly off
samples from a generator are still classified by their shape. Takes ~30 s on 2 CPU cores.

Writes the weights (safetensors, no pickle) and a JSON with their provenance: seed, settings,
held-out accuracy, torch version and the weights' sha256. Bit-exact reproduction needs the same
torch build and thread count (CPU conv kernels differ across them); accuracy does not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pixdiff.data import load_digits
from pixdiff.metrics.features import DigitsNet, write_feature_net


def shift(x: torch.Tensor, g: torch.Generator, max_px: int = 1) -> torch.Tensor:
    """Random translation per image by up to max_px pixels (edge padding with the background −1)."""
    n, _, h, w = x.shape
    p = F.pad(x, (max_px,) * 4, value=-1.0)
    dx, dy = (torch.randint(0, 2 * max_px + 1, (2, n), generator=g))
    return torch.stack([p[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train(seed: int, epochs: int, batch: int, lr: float, verbose: bool = True) -> tuple[DigitsNet, float, float]:
    tr, te = load_digits(16, "train"), load_digits(16, "test")
    g = torch.Generator().manual_seed(seed)
    net = DigitsNet()
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
            x, y = shift(tr.images[idx], g), tr.labels[idx]
            if step % 2:
                x = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
            # dropout draws from the global RNG; seed it from g so the run stays a function of --seed
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            loss = F.cross_entropy(net(x)[1], y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}", flush=True)
    net.eval()
    with torch.no_grad():
        acc_te = (net(te.images)[1].argmax(1) == te.labels).float().mean().item()
        acc_tr = (net(tr.images)[1].argmax(1) == tr.labels).float().mean().item()
    return net, acc_tr, acc_te


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (part of the bit-exact recipe; 1 is also fastest for this tiny net)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "pixdiff" / "assets" / "digits_features.safetensors")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    net, acc_tr, acc_te = train(a.seed, a.epochs, a.batch, a.lr)
    sha = write_feature_net(net, a.out)
    info = {
        "what": "pixdiff.metrics.features.DigitsNet weights, trained on load_digits(16, 'train')",
        "command": f"python scripts/train_digits_features.py --seed {a.seed} --epochs {a.epochs} --batch {a.batch} --lr {a.lr} --threads {a.threads}",
        "seed": a.seed, "epochs": a.epochs, "batch": a.batch, "lr": a.lr, "threads": a.threads,
        "train_accuracy": round(acc_tr, 4), "test_accuracy": round(acc_te, 4),
        "torch": torch.__version__, "seconds": round(time.time() - t0, 1),
        "sha256": sha,
    }
    a.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
