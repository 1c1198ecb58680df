"""``ddpm`` / ``ddim`` through ``pixdiff.load(run).sample`` walk the run's own discrete chain (IDDPM
respaces the chain it trained on, Nichol & Dhariwal 2021, §4); a continuous-time run keeps the
samplers' default chain, and a named ``schedule`` always wins."""

import math
from pathlib import Path

import pytest
import torch


def _cosine_chain_logsnr(T=1000, s=0.008, max_beta=0.999):
    """IDDPM's cosine chain written out (Nichol & Dhariwal 2021, eq. 17 and the β ≤ 0.999 clip):
    f(t) = cos²((t/T + s)/(1 + s)·π/2), β_t = min(1 − f(t)/f(t−1), 0.999), ᾱ_t = Π(1 − β)."""
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    ab, out = 1.0, []
    for t in range(1, T + 1):
        ab *= 1 - min(1 - f(t) / f(t - 1), max_beta)
        out.append(math.log(ab) - math.log1p(-ab))
    return torch.tensor(out, dtype=torch.float64)  # λ_1 … λ_T


def _linear_lambda_T(T=1000):
    ab = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / (T - 1)) for i in range(T))
    return math.log(ab) - math.log1p(-ab)


def _seen(pipe, **kw):
    """Every logSNR the network is evaluated at while drawing two images."""
    seen, net = [], pipe.denoiser

    def spy(z, logsnr, cond=None):
        seen.extend(float(v) for v in logsnr.flatten().unique())
        return net(z, logsnr, cond)

    pipe.denoiser = spy
    try:
        pipe.sample(2, steps=4, **kw)
    finally:
        pipe.denoiser = net
    return seen


@pytest.fixture(scope="module")
def runs():
    """Untrained tiny eps-prediction pipelines as ``pixdiff.load`` builds them, one per training schedule."""
    from pixdiff.config import TrainConfig
    from pixdiff.generate import Pipeline, build_denoiser

    out = {}
    for schedule in ("iddpm_cosine_discrete", "cosine"):
        cfg = TrainConfig()
        cfg.data.name, cfg.data.resolution, cfg.data.channels = "digits", 16, 1
        cfg.model.parameterization, cfg.loss.schedule = "eps", schedule
        cfg.model.overrides = {"channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (),
                               "norm_groups": 4, "head_channels": 8}
        den = build_denoiser(cfg, 1, 0).eval()
        out[schedule] = Pipeline(den, cfg, Path("unsaved"), "ema", torch.device("cpu"),
                                 {"num_classes": 0, "data_shape": [1, 16, 16]})
    return out


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_a_discrete_run_is_sampled_on_its_own_chain(runs, sampler):
    pipe = runs["iddpm_cosine_discrete"]
    table = _cosine_chain_logsnr()
    seen = _seen(pipe, sampler=sampler)
    assert seen[0] == pytest.approx(float(table[-1]), abs=1e-4)  # starts at the chain's λ_T
    assert all(torch.isclose(table, torch.tensor(v, dtype=torch.float64), atol=1e-4).any() for v in seen)
    # a named schedule wins over the run's own
    assert _seen(pipe, sampler=sampler, schedule="linear_discrete")[0] == pytest.approx(_linear_lambda_T(), abs=1e-4)


def test_a_continuous_run_keeps_the_samplers_default_chain(runs):
    assert runs["cosine"].training_chain is None
    assert _seen(runs["cosine"], sampler="ddim")[0] == pytest.approx(_linear_lambda_T(), abs=1e-4)
