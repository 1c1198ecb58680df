"""The batches of training step s — the same for any number of worker processes and any resume point.

Order (the rule of ``pixdiff.train``): global batch ``step`` is positions [step·B, (step+1)·B) of the
endless concatenation of per-epoch permutations ``pixdiff.data.epoch_order(n, seed, epoch)``.
Process r of W takes positions [r·B/W, (r+1)·B/W) of it — its accumulation shards, in order — so the
micro-batch m of process r is global shard r·accum + m, as before.

``StepBatchSampler`` yields exactly those index lists from any start step on, for a
``torch.utils.data.DataLoader`` (worker processes, pinned memory only with CUDA, persistent
workers). Each batch's content is a function of its indices alone, so 0 or 8 workers give the same
bytes, and a run resumed at step s rebuilds the sampler at s.

Conversion and augmentation happen per batch, after collation, on the training device: uint8
[B, H, W, C] → float [B, C, H, W] in [−1, 1] (exactly ``pixdiff.data.from_uint8``), then an optional
random crop (reflect-pad by p pixels, crop back at a random offset; reflection so that the model never
sees artificial borders) and an optional horizontal flip. Each image's draws come from a counter-based
generator (SplitMix64) keyed by (seed, epoch, dataset index): independent of the batch it lands in,
of the shard, of the worker count and of where the run was resumed — so resume stays bit-exact on CPU
and a 2-process run equals 1 process with 2 micro-batches.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from pixdiff.errors import PixdiffError

__all__ = ["global_batch_indices", "StepBatchSampler", "augment_params", "augment", "StepBatches",
           "open_training_data", "local_positions", "sample_images"]


def global_batch_indices(n: int, seed: int, step: int, batch: int) -> torch.Tensor:
    """Example indices of global batch ``step``: positions [step·B, (step+1)·B) of the endless
    concatenation of per-epoch permutations ``pixdiff.data.epoch_order(n, seed, epoch)``."""
    from pixdiff.data import epoch_order

    start, out = step * batch, []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        order = epoch_order(n, seed, epoch)
        out.extend(order[pos : pos + batch - len(out)].tolist())
    return torch.tensor(out, dtype=torch.int64)


def local_positions(batch: int, rank: int = 0, world: int = 1) -> tuple[int, int]:
    """[lo, hi) of the global batch that process ``rank`` of ``world`` takes."""
    if batch % world:
        raise PixdiffError(f"global batch {batch} is not divisible by the {world} processes")
    local = batch // world
    return rank * local, (rank + 1) * local


class StepBatchSampler:
    """A ``batch_sampler``: for step = start, start + 1, … (to ``stop`` or endless) the indices of this
    process's part of global batch ``step``."""

    def __init__(self, n: int, seed: int, batch: int, start: int = 0, rank: int = 0, world: int = 1,
                 stop: int | None = None):
        if n < 1:
            raise PixdiffError("the dataset is empty")
        self.n, self.seed, self.batch, self.start, self.stop = n, seed, batch, start, stop
        self.lo, self.hi = local_positions(batch, rank, world)

    def indices(self, step: int) -> list[int]:
        return global_batch_indices(self.n, self.seed, step, self.batch)[self.lo : self.hi].tolist()

    def __iter__(self):
        step = self.start
        while self.stop is None or step < self.stop:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless StepBatchSampler has no length")
        return max(0, self.stop - self.start)


_M64 = (1 << 64) - 1


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (wrap-around arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _draws(seed: int, epochs: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """Draw ``k`` (uint64) of the generator keyed by (seed, epoch, index), one per image."""
    with np.errstate(over="ignore"):
        h = _splitmix(np.full(len(indices), seed & _M64, dtype=np.uint64))
        h = _splitmix(h ^ np.asarray(epochs, dtype=np.int64).astype(np.uint64))
        h = _splitmix(h ^ np.asarray(indices, dtype=np.int64).astype(np.uint64))
        return _splitmix(h ^ np.uint64(k))


def augment_params(seed: int, epochs, indices, hflip: bool = False, crop_pad: int = 0):
    """Per image: flip (bool), crop offsets oy, ox in [0, 2·pad] (int64), from the generator keyed
    by (seed, epoch, index)."""
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    flip = (_draws(seed, epochs, indices, 0) >> np.uint64(63)).astype(bool) if hflip else np.zeros(n, bool)
    if crop_pad > 0:
        span = np.uint64(2 * crop_pad + 1)
        oy = (_draws(seed, epochs, indices, 1) % span).astype(np.int64)
        ox = (_draws(seed, epochs, indices, 2) % span).astype(np.int64)
    else:
        oy = ox = np.full(n, 0, np.int64)
    return flip, oy, ox


def augment(x: torch.Tensor, flip, oy, ox, crop_pad: int = 0) -> torch.Tensor:
    """Random crop (reflect-pad by ``crop_pad``, crop at (oy, ox)) then horizontal flip, per image."""
    b, c, h, w = x.shape
    if crop_pad > 0:
        xp = F.pad(x, (crop_pad,) * 4, mode="reflect")
        oy_t, ox_t = torch.as_tensor(oy, device=x.device), torch.as_tensor(ox, device=x.device)
        rows = (oy_t[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox_t[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        x = xp[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
               rows, cols]
    flip = torch.as_tensor(flip, device=x.device)
    if bool(flip.any()):
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def _identity(batch):
    return batch


def _warn_tiny(n: int, batch: int) -> None:
    if batch > n:
        warnings.warn(f"{n} image(s) with batch {batch}: each image repeats ~{batch / n:.0f}× per batch", stacklevel=3)


class StepBatches:
    """``batches(step)`` → (x, y): this process's part of global batch ``step`` on ``device`` — x float
    [b, C, H, W] in [−1, 1] (or [b, D] points), augmented; y int64 [b] or None.

    ``ds`` is either a ``pixdiff.data.ImageDataset`` (digits, photos, 2-D toys: held on the device and
    indexed) or a ``pixdiff.datasets.UInt8Images`` (folder, prepared file, npz, HF: read through a
    DataLoader with ``workers`` processes, created at the first call and rebuilt when a call does not
    ask for the next step)."""

    def __init__(self, ds, *, seed: int, batch: int, device, conditional: bool = True, rank: int = 0,
                 world: int = 1, hflip: bool = False, crop_pad: int = 0, workers: int = 0, prefetch: int = 2):
        from pixdiff.data import ImageDataset

        self.ds, self.seed, self.batch, self.device = ds, seed, batch, torch.device(device)
        self.rank, self.world = rank, world
        self.lo, self.hi = local_positions(batch, rank, world)
        self.hflip, self.crop_pad, self.workers, self.prefetch = bool(hflip), int(crop_pad), int(workers), prefetch
        self.n = len(ds)
        self.memory = isinstance(ds, ImageDataset)
        shape = tuple(ds.shape)
        if (self.hflip or self.crop_pad) and len(shape) != 3:
            raise PixdiffError(f"flips and crops apply to images, not to data of shape {shape}")
        if self.crop_pad < 0 or (len(shape) == 3 and self.crop_pad >= min(shape[1:])):
            raise PixdiffError(f"crop padding must lie in [0, {min(shape[1:]) if len(shape) == 3 else 0}) "
                               f"(got {self.crop_pad})")
        if self.workers < 0:
            raise PixdiffError(f"workers must be >= 0 (got {self.workers})")
        _warn_tiny(self.n, batch)
        labelled = ds.labels is not None and conditional
        if self.memory:
            self.x = ds.images.to(self.device)
            self.y = ds.labels.to(self.device) if labelled else None
        self.labelled = labelled
        self._it, self._next, self._loader = None, None, None

    def indices(self, step: int) -> torch.Tensor:
        return global_batch_indices(self.n, self.seed, step, self.batch)[self.lo : self.hi]

    def epochs(self, step: int) -> np.ndarray:
        return (step * self.batch + np.arange(self.lo, self.hi, dtype=np.int64)) // self.n

    def _start(self, step: int) -> None:
        from torch.utils.data import DataLoader

        self.close()
        sampler = StepBatchSampler(self.n, self.seed, self.batch, step, self.rank, self.world)
        kw = dict(persistent_workers=True, prefetch_factor=self.prefetch) if self.workers else {}
        self._loader = DataLoader(self.ds, batch_sampler=sampler, num_workers=self.workers, collate_fn=_identity,
                                  pin_memory=self.device.type == "cuda", **kw)
        self._it, self._next = iter(self._loader), step

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.indices(step)
        if self.memory:
            i = idx.to(self.device)
            x = self.x[i]
            y = self.y[i] if self.y is not None else None
        else:
            if self._it is None or step != self._next:
                self._start(step)
            b = next(self._it)
            self._next = step + 1
            if not torch.equal(b["index"], idx):  # the loader's order is the sampler's: a defect if not
                raise RuntimeError(f"data loader returned the wrong batch for step {step}")
            nb = self.device.type == "cuda"
            u8 = b["images"].to(self.device, non_blocking=nb).permute(0, 3, 1, 2)
            x = torch.empty(u8.shape, dtype=torch.float32, device=self.device)  # contiguous NCHW, one buffer
            x.copy_(u8).div_(127.5).sub_(1.0)  # = pixdiff.data.from_uint8, bit for bit
            y = b["labels"].to(self.device, non_blocking=nb) if self.labelled else None
        if self.hflip or self.crop_pad:
            flip, oy, ox = augment_params(self.seed, self.epochs(step), idx.numpy(), self.hflip, self.crop_pad)
            x = augment(x, flip, oy, ox, self.crop_pad)
        return x, y

    def close(self) -> None:
        """Stop the worker processes (they also stop when this object is collected)."""
        it, self._it, self._loader = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


IN_MEMORY = ("digits", "photos")


def open_training_data(data_cfg, split: str = "train", verbose: bool = False):
    """The dataset a ``DataConfig`` names: ``digits``, ``photos`` and the 2-D toys as an in-memory
    ``ImageDataset``; an image folder, a prepared dataset, an npz or a Hugging Face dataset folder as
    a ``UInt8Images`` (read lazily). ``verbose``: print its summary (count, classes, skipped files,
    conversions) once, to stderr."""
    from pixdiff import data as data_mod

    name, res, ch = data_cfg.name, data_cfg.resolution, data_cfg.channels
    if name in IN_MEMORY or name in data_mod.TOYS:
        from .memory import load

        return load(name, res, ch, split)
    from .sources import open_images

    ds = open_images(name, res, ch, labels=getattr(data_cfg, "labels", "none"), split=split, progress=verbose)
    if verbose:
        print(ds.summary(), file=sys.stderr)
    return ds


def sample_images(ds, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Up to ``n`` images (all when None) of ``ds`` as float [n, C, H, W] in [−1, 1] with their labels
    (or None), picked by a fixed permutation of ``seed`` — for reference statistics of a dataset that
    is not held in memory (a ``UInt8Images``) as well as of an ``ImageDataset``."""
    from pixdiff.data import ImageDataset, from_uint8

    total = len(ds)
    k = total if n is None else min(n, total)
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k].sort().values
    if isinstance(ds, ImageDataset):
        return ds.images[idx], (ds.labels[idx] if ds.labels is not None else None)
    x = from_uint8(ds.get_many(idx.numpy()))
    return x, (torch.from_numpy(ds.labels[idx.numpy()]) if ds.labels is not None else None)
