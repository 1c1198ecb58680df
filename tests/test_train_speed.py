"""Speed features that must not change what is computed: no graph break in the networks'
forward (torch.compile), fp16 with a gradient scaler that resumes bit-exactly, and the
precision field that replaced the old bf16 switch."""

import pytest
import torch

from pixdiff import checkpoint as ckpt_io
from pixdiff import nets
from pixdiff.config import TrainConfig
from pixdiff.denoiser import Denoiser
from pixdiff.train import train

SMALL = {"tiny": dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), head_channels=8,
                      norm_groups=4),
         "tiny-uvit": dict(channels=(8, 16, 32), down_blocks=(1, 1), mid_blocks=1, head_channels=8, norm_groups=4)}


@pytest.mark.parametrize("preset", list(SMALL))
def test_forward_compiles_as_one_graph(preset):
    # fullgraph=True raises on any graph break; the eager backend checks tracing without codegen.
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = nets.from_preset(preset, num_classes=10, **SMALL[preset])
    den = Denoiser(net, "v")
    z, lam, c = torch.randn(3, 1, 16, 16), torch.tensor([-4.0, 0.0, 4.0]), torch.tensor([0, 9, 10])
    ref = den(z, lam, c)
    net.compile(backend="eager", fullgraph=True)
    assert torch.equal(den(z, lam, c), ref)
    torch._dynamo.reset()


def _cfg(images, precision="fp16"):
    cfg = TrainConfig()
    cfg.model.overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in SMALL["tiny"].items()}
    cfg.optim.batch, cfg.optim.warmup_images, cfg.optim.decay = 8, 0, "constant"
    cfg.run.images, cfg.run.ckpt_every_images, cfg.run.log_every_images = images, 16, 8
    cfg.run.precision = precision
    return cfg


def test_fp16_trains_and_resumes_bit_exactly_with_its_loss_scale(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(_cfg(32), whole, progress=False)
    train(_cfg(16), parts, progress=False)
    train(_cfg(32), parts, resume=True, progress=False)
    a, b = ckpt_io.load(whole), ckpt_io.load(parts)
    assert a.state["grad_scaler"]["scale"] == b.state["grad_scaler"]["scale"] > 0
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]) and torch.equal(a.ema[k], b.ema[k]), k
    assert all(torch.isfinite(v).all() for v in a.model.values() if v.is_floating_point())


def test_old_bf16_switch_reads_as_precision():
    assert TrainConfig.from_dict({"run": {"bf16": True}}).run.precision == "bf16"
    assert TrainConfig.from_dict({"run": {"bf16": False}}).run.precision == "fp32"
    with pytest.raises(ValueError, match="--precision"):
        TrainConfig.from_dict({"run": {"precision": "fp8"}})


@pytest.mark.slow
def test_compiled_training_loss_agrees_with_eager(tmp_path):
    eager, comp = tmp_path / "eager", tmp_path / "comp"
    train(_cfg(16, "fp32"), eager, progress=False)
    cfg = _cfg(16, "fp32")
    cfg.run.compile = True
    train(cfg, comp, progress=False)
    import json

    la = [json.loads(x)["loss"] for x in (eager / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (comp / "log.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-4)
