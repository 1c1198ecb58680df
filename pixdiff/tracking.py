"""Experiment tracking beside the JSONL log: TensorBoard (``torch.utils.tensorboard``) or
Weights & Biases (offline unless ``WANDB_MODE`` says otherwise). Both are optional installs,
imported only when asked for; ``none`` keeps just ``RUN/log.jsonl``.

A tracker receives what the trainer logs, keyed by images seen: scalars (loss, lr, grad-norm,
img/s, evaluation metrics) and the periodic sample grid.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from pixdiff.errors import PixdiffError

__all__ = ["Tracker", "make_tracker", "TRACKERS"]

TRACKERS = ("none", "tensorboard", "wandb")


class Tracker:
    """The no-op tracker; subclasses send the records somewhere."""

    def scalars(self, images: int, values: dict[str, float], prefix: str = "train") -> None:
        pass

    def image(self, images: int, tag: str, grid_uint8_hwc: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PixdiffError("--log tensorboard needs the tensorboard package: pip install 'pixdiff[tracking]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, images, values, prefix="train"):
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"{prefix}/{k}", float(v), global_step=images)
        self.writer.flush()

    def image(self, images, tag, grid_uint8_hwc):
        self.writer.add_image(tag, grid_uint8_hwc, global_step=images, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise PixdiffError("--log wandb needs the wandb package: pip install wandb") from None
        # One wandb run per run folder, so a resumed run continues its curves.
        rid = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "pixdiff"), name=run_dir.name, id=rid,
                              resume="allow", dir=str(run_dir), config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def scalars(self, images, values, prefix="train"):
        self.run.log({f"{prefix}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, step=images)

    def image(self, images, tag, grid_uint8_hwc):
        self.run.log({tag: self.wandb.Image(grid_uint8_hwc)}, step=images)

    def close(self):
        self.run.finish()


def make_tracker(kind: str, run_dir: str | Path, config: dict | None = None) -> Tracker:
    """``kind`` is none | tensorboard (events in RUN/tensorboard) | wandb."""
    run_dir = Path(run_dir)
    if kind == "none":
        return Tracker()
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir / "tensorboard")
    if kind == "wandb":
        return WandbTracker(run_dir, config or {})
    raise PixdiffError(f"--log must be one of {', '.join(TRACKERS)} (got {kind!r})")
