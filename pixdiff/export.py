"""pixdiff runs in formats others read: one weights file, and the noise schedule as a diffusers
scheduler config.

* ``export_weights(run, out)``: the EMA (or raw) weights of a run's newest valid checkpoint as one
  ``.safetensors`` file whose metadata holds the run's config and network config as JSON, so the
  file alone is a model: ``pixdiff.load("model.safetensors")`` samples it, bit-identical to the
  run, and any safetensors reader gets plain tensors (no optimizer state, no pickle).
* ``export_diffusers_scheduler(run, out_dir)``: ``scheduler_config.json`` for diffusers'
  ``DDPMScheduler`` with the run's discrete training chain (Ho et al. 2020: linear β; Nichol &
  Dhariwal 2021: cosine ᾱ, diffusers' ``squaredcos_cap_v2``; any other β table as
  ``trained_betas``) and the run's output kind as ``prediction_type``. A diffusers scheduler loop
  then drives the pixdiff network through ``pixdiff.adapters.to_diffusers_model``.

What cannot be exported: the networks themselves as diffusers classes. pixdiff's ADM U-Net and
U-ViT take a continuous logSNR, not an integer timestep, and their layers are not diffusers'
``UNet2DModel`` blocks; the weights file is read by pixdiff (or by anyone who rebuilds the
network from the JSON in its metadata). Continuous-time training schedules (cosine, EDM, VP, …)
have no discrete chain for a ``DDPMScheduler``: export those with ``timesteps=T`` to tabulate
ᾱ at t = i/T as ``trained_betas``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pixdiff import checkpoint as ckpt_io
from pixdiff import schedules
from pixdiff.atomic import atomic_write, atomic_write_text
from pixdiff.errors import PixdiffError

__all__ = ["export_weights", "read_weights_file", "export_diffusers_scheduler", "diffusers_scheduler_config",
           "WEIGHTS_FORMAT"]

WEIGHTS_FORMAT = "pixdiff-weights-1"
_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x": "sample", "edm": "epsilon"}


def export_weights(run: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write the run's ``weights`` (ema | raw) as one safetensors file with its config in the
    metadata (key ``pixdiff``: config, network config, classes, images seen, source checkpoint)."""

    if weights not in ("ema", "raw"):
        raise PixdiffError(f"weights must be 'ema' or 'raw' (got {weights!r})")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise PixdiffError(f"the weights file must end in .safetensors (got {out})")
    ck = ckpt_io.load(run)
    if ck.state.get("kind", "diffusion") != "diffusion":
        raise PixdiffError(f"{ck.path} is a {ck.state['kind']} run; only diffusion runs export to a weights file")
    sd = ck.ema if weights == "ema" else ck.model
    return write_weights_file(out, sd, {"weights": weights, "images": ck.state.get("images"), "source": str(ck.path),
                                        "config": ck.state["config"], "meta": ck.state["meta"]})


def write_weights_file(out: str | Path, tensors: dict, meta: dict) -> Path:
    """The weights file ``read_weights_file`` reads: ``tensors`` with ``meta`` (config, meta, ...) as
    JSON under the metadata key ``pixdiff``, written atomically."""
    from safetensors.torch import save_file

    out = Path(out)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": WEIGHTS_FORMAT, **meta}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: save_file(tensors, str(p), metadata={"pixdiff": json.dumps(meta)}))
    return out


def read_weights_file(path: str | Path) -> ckpt_io.Checkpoint:
    """A weights file written by ``export_weights``, as a ``Checkpoint`` (model = ema = the tensors)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("pixdiff")
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError) as e:  # safetensors' own errors derive from these
        raise ckpt_io.CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    if raw is None:
        raise ckpt_io.CheckpointError(f"{path} has no pixdiff metadata: not written by `pixdiff export "
                                      "--format safetensors-ema`")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ckpt_io.CheckpointError(f"{path}: its pixdiff metadata is not JSON") from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ckpt_io.CheckpointError(f"{path}: unknown weights format {meta.get('format')!r}")
    state = {"kind": "diffusion", "config": meta["config"], "meta": meta["meta"], "images": meta.get("images"),
             "weights": meta["weights"]}
    return ckpt_io.Checkpoint(path, state, tensors, tensors, {})


def diffusers_scheduler_config(run: str | Path, timesteps: int | None = None) -> dict:
    """The ``DDPMScheduler`` config of a run's training chain (see the module docstring)."""
    from pixdiff.config import TrainConfig

    ck = ckpt_io.load(run)
    if ck.state.get("kind", "diffusion") != "diffusion":
        raise PixdiffError(f"{ck.path} is a {ck.state['kind']} run, not a diffusion run")
    cfg = TrainConfig.from_dict(ck.state["config"])
    sched = cfg.loss.build_schedule()
    opts = dict(cfg.loss.schedule_options)
    base = {"_class_name": "DDPMScheduler", "prediction_type": _PREDICTION[cfg.model.parameterization],
            "clip_sample": False, "variance_type": "fixed_small", "timestep_spacing": "leading"}
    if isinstance(sched, schedules.DiscreteSchedule):
        T = len(sched)
        if cfg.loss.schedule == "linear_discrete":
            return {**base, "num_train_timesteps": T, "beta_schedule": "linear",
                    "beta_start": float(opts.get("beta_start", 1e-4)), "beta_end": float(opts.get("beta_end", 0.02))}
        if cfg.loss.schedule == "iddpm_cosine_discrete" and opts.get("s", 0.008) == 0.008 \
                and opts.get("max_beta", 0.999) == 0.999:
            # diffusers' squaredcos_cap_v2 is Nichol & Dhariwal 2021's ᾱ(t) = f(t)/f(0), s = 0.008, β ≤ 0.999
            return {**base, "num_train_timesteps": T, "beta_schedule": "squaredcos_cap_v2"}
        return {**base, "num_train_timesteps": T, "trained_betas": sched.betas.tolist()}
    if timesteps is None:
        raise PixdiffError(f"the run trained on the continuous schedule {cfg.loss.schedule!r}, which has no "
                           "discrete chain; give timesteps=T (--timesteps T) to tabulate it at t = i/T")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 2:
        raise PixdiffError(f"timesteps must be an integer >= 2 (got {timesteps!r})")
    t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
    lam = sched.logsnr(t)
    if not bool(torch.isfinite(lam).all()):
        raise PixdiffError(f"schedule {cfg.loss.schedule!r} reaches logSNR ±inf on t = i/{timesteps}; choose "
                           "another T or a discrete schedule")
    ab = torch.sigmoid(lam)  # ᾱ = α² = sigmoid(λ)
    betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    return {**base, "num_train_timesteps": timesteps, "trained_betas": betas.tolist()}


def export_diffusers_scheduler(run: str | Path, out_dir: str | Path, timesteps: int | None = None) -> Path:
    """Write ``out_dir/scheduler_config.json`` (``diffusers_scheduler_config``); returns its path."""
    cfg = diffusers_scheduler_config(run, timesteps)
    out = Path(out_dir) / "scheduler_config.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(cfg, indent=2) + "\n")
    return out
