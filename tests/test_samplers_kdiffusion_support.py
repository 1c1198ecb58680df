"""Load k-diffusion's ``k_diffusion/sampling.py`` alone (v0.1.1), as a peer for the sampler tests.

Only the sampling module is executed, from the installed wheel's source; its package imports
(``from . import utils``, torchsde, torchdiffeq, tqdm) are replaced by what the samplers use
(``utils.append_dims``, a silent ``trange``); torchsde's Brownian tree is never used because every
call passes a ``noise_sampler``. Returns None when k-diffusion is not installed.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import torch

_CACHE: dict[str, types.ModuleType | None] = {}


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load_kdiffusion_sampling() -> types.ModuleType | None:
    if "m" in _CACHE:
        return _CACHE["m"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        _CACHE["m"] = None
        return None
    src = (Path(list(spec.submodule_search_locations)[0]) / "sampling.py").read_text()
    swaps = {"from torchdiffeq import odeint\n": "odeint = None\n", "import torchsde\n": "torchsde = None\n",
             "from tqdm.auto import trange, tqdm\n": "", "from . import utils\n": ""}
    for a, b in swaps.items():
        assert a in src, f"k_diffusion/sampling.py changed: {a!r} not found"
        src = src.replace(a, b)
    mod = types.ModuleType("_kdiffusion_sampling")
    mod.__dict__.update(utils=types.SimpleNamespace(append_dims=_append_dims),
                        trange=lambda n, **kw: range(n), tqdm=lambda x=None, **kw: x, torch=torch)
    exec(compile(src, "k_diffusion/sampling.py", "exec"), mod.__dict__)
    _CACHE["m"] = mod
    return mod
