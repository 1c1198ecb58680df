"""The `pixdiff` program: help everywhere, flags generated from the config, one-line user errors,
`pixdiff info`, `--device`, and what `pixdiff eval` does with images of another size."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NET_FLAGS as NET
from helpers import subparsers

from pixdiff.cli import main
from pixdiff.cli.flags import config_flags, typed_overrides
from pixdiff.config import TrainConfig
from pixdiff.errors import PixdiffError

COMMANDS = sorted(subparsers())


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pixdiff {command}: error: "), err
    return err


def _print_config(*flags) -> dict:
    """The config `pixdiff train FLAGS --print-config` prints."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", *map(str, flags), "--print-config"]) == 0
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", "digits", *NET, "--steps", "2", "--batch", "4", "--ckpt-every", "8",
                 "--log-every", "4", "--warmup", "0", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    return out


# ------------------------------------------------------------------------------------------ help


def test_the_parser_has_every_command():
    assert set(COMMANDS) == {"train", "sample", "eval", "nll", "info", "train-classifier", "prepare-data", "distill", "export"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_prints_its_help(command, capsys):
    assert main([command, "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: pixdiff {command}") and len(out.splitlines()) > 3
    assert err == ""


def test_top_level_help_and_bare_invocation(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pixdiff") and all(c in out for c in COMMANDS)
    assert "95% CI" in out  # nll's help holds a per cent sign, which once crashed argparse
    assert main([]) == 0
    bare = capsys.readouterr()
    assert bare.out == out and bare.err == ""


def test_train_help_groups_the_generated_flags_by_section(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    heads = [out.index(f"{s.name} settings:") for s in dataclasses.fields(TrainConfig)]
    assert heads == sorted(heads)
    for c in config_flags():  # each flag sits in its own section's group
        pos = out.index(f"  {c.option}")
        later = [h for h in heads if h < pos]
        assert later and out[later[-1]:].startswith(f"{c.section} settings:"), c.option


def test_help_that_points_to_pixdiff_info_is_true(capsys):
    pointers = set()
    for p in subparsers().values():
        for a in p._actions:
            pointers.update(re.findall(r"`pixdiff info (--[a-z-]+)`", a.help or ""))
    assert {"--presets", "--samplers"} <= pointers
    for flag in sorted(pointers):
        capsys.readouterr()
        assert main(["info", flag]) == 0, flag
        assert len(capsys.readouterr().out.splitlines()) >= 3, flag


# -------------------------------------------------------------------------- generated train flags


def _hints():
    sections = typing.get_type_hints(TrainConfig)
    return {s.name: (sections[s.name], typing.get_type_hints(sections[s.name])) for s in dataclasses.fields(TrainConfig)}


def _typed_value(option: str, tp):
    """(argv, expected value) for one flag, from the field's annotation (written independently of
    the generator: this is what the flag types must be)."""
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return [option], True
    if origin is typing.Literal:
        return [option, str(args[-1])], args[-1]
    if origin is tuple:
        return [option, "1", "2"], (args[0](1), args[0](2))
    if tp is dict or origin is dict:
        return [option, "a=1", option, "b=[1, 2]", option, "c=word"], {"a": 1, "b": [1, 2], "c": "word"}
    return [option, {int: "3", float: "0.25", str: "abc"}[tp]], tp({int: "3", float: "0.25", str: "abc"}[tp])


def test_every_config_field_is_a_train_flag_of_its_type(capsys):
    hints = _hints()
    fields = {(sec, f.name) for sec, (kls, _) in hints.items() for f in dataclasses.fields(kls)}
    flags = config_flags()
    assert {(c.section, c.field) for c in flags} == fields  # nothing hand-picked, nothing missing
    train = subparsers()["train"]
    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    for c in flags:
        kls, h = hints[c.section]
        tp = h[c.field]
        assert f"  {c.option}" in help_text
        argv, want = _typed_value(c.option, tp)
        assert typed_overrides(train.parse_args(argv)) == {c.section: {c.field: want}}, c.option
        if tp is bool:
            assert typed_overrides(train.parse_args([f"--no-{c.flag}"])) == {c.section: {c.field: False}}
        if type(None) in typing.get_args(tp):
            assert typed_overrides(train.parse_args([c.option, "none"])) == {c.section: {c.field: None}}
        meta = next(f for f in dataclasses.fields(kls) if f.name == c.field).metadata
        assert c.flag == meta.get("flag", c.field.replace("_", "-"))


def test_untyped_flags_leave_nothing_behind():
    assert typed_overrides(subparsers()["train"].parse_args([])) == {}


def test_flag_values_are_checked(capsys):
    assert main(["train", "--param", "z", "--print-config"]) == 2
    assert "invalid choice" in _one_line_error(capsys, "train")
    assert main(["train", "--lr", "fast", "--print-config"]) == 2
    assert "--lr" in _one_line_error(capsys, "train")
    assert main(["train", "--net", "channels", "--print-config"]) == 2
    assert "KEY=VALUE" in _one_line_error(capsys, "train")
    assert main(["train", "--p-uncond", "1.5", "--print-config"]) == 2
    assert "p_uncond" in _one_line_error(capsys, "train")
    assert main(["train", "--ema", "3", "--print-config"]) == 2  # no abbreviations
    assert "unrecognized arguments: --ema" in _one_line_error(capsys, "train")


def test_the_documented_flag_names_keep_working():
    cfg = _print_config("--data", "digits", "--resolution", "32", "--channels", "1", "--hflip", "--unconditional",
                        "--p-uncond", "0.2", "--preset", "tiny-uvit", "--param", "eps", "--batch", "8",
                        "--micro-batch", "4", "--lr", "0.01", "--warmup", "7", "--weighting", "eps_mse", "--seed", "3",
                        "--bf16", "--net", "channels=16", "--ckpt-every", "64", "--log-every", "16", "--steps", "5",
                        "--quiet")
    d, m, o, r, loss = cfg["data"], cfg["model"], cfg["optim"], cfg["run"], cfg["loss"]
    assert (d["name"], d["resolution"], d["channels"], d["hflip"], d["conditional"], d["p_uncond"]) == \
        ("digits", 32, 1, True, False, 0.2)
    assert (m["preset"], m["parameterization"], m["overrides"]) == ("tiny-uvit", "eps", {"channels": 16})
    assert (o["batch"], o["micro_batch"], o["lr"], o["warmup_images"]) == (8, 4, 0.01, 7)
    assert loss["weighting"] == "eps_mse"
    assert r["seed"] == 3 and r["images"] == 5 * 8 and r["ckpt_every_images"] == 64 and r["log_every_images"] == 16
    assert r.get("precision") == "bf16" or r.get("bf16") is True
    assert _print_config("--images", "123")["run"]["images"] == 123
    assert _print_config("--no-conditional")["data"]["conditional"] is False
    assert _print_config("--betas", "0.8", "0.95")["optim"]["betas"] == [0.8, 0.95]


def test_a_config_file_is_the_base_and_typed_flags_override_it(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"optim": {"lr": 0.5, "batch": 32}, "run": {"seed": 5},
                             "model": {"overrides": {"channels": 8}}}))
    cfg = _print_config("--config", f, "--batch", "16", "--net", "num_res_blocks=1")
    assert cfg["optim"]["lr"] == 0.5 and cfg["run"]["seed"] == 5  # from the file, though the flags have defaults
    assert cfg["optim"]["batch"] == 16  # typed
    assert cfg["model"]["overrides"] == {"channels": 8, "num_res_blocks": 1}  # KEY=VALUE adds to the file's
    assert _print_config("--config", f, "--steps", "3")["run"]["images"] == 3 * 32  # steps × the file's batch
    # new data without --channels: the channels follow the data (3 for an image folder)
    assert _print_config("--config", f, "--data", str(tmp_path / "imgs"))["data"]["channels"] == 3


def test_new_data_brings_its_own_resolution_and_channels_unless_given():
    """`--data photos` trains at the photos' documented 32×32 RGB, not digits' 16×16 (a regression: the
    resolution stayed at the digits default), for diffusion and baseline families alike."""
    for fam in ((), ("--family", "gan")):
        d = _print_config(*fam, "--data", "photos")["data"]
        assert (d["resolution"], d["channels"]) == (32, 3)
        d = _print_config(*fam, "--data", "photos", "--resolution", "16")["data"]
        assert (d["resolution"], d["channels"]) == (16, 3)
    assert _print_config("--data", "digits")["data"]["resolution"] == 16


def test_resume_without_config_starts_from_the_saved_config(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    saved = TrainConfig()
    saved.run.seed, saved.optim.lr, saved.model.preset = 7, 0.02, "tiny-uvit"
    (out / "config.json").write_text(saved.to_json())
    cfg = _print_config("--out", out, "--resume", "--images", "999")
    assert (cfg["run"]["seed"], cfg["optim"]["lr"], cfg["model"]["preset"], cfg["run"]["images"]) == \
        (7, 0.02, "tiny-uvit", 999)
    fresh = _print_config("--out", out, "--images", "999")  # not resuming: the defaults
    assert fresh["run"]["seed"] == 0 and fresh["model"]["preset"] == "tiny"


def test_points_data_gets_the_mlp_and_no_bias_unless_given():
    cfg = _print_config("--data", "moons")
    assert cfg["model"]["preset"] == "mlp" and cfg["loss"]["bias"] == 0.0 and cfg["data"]["channels"] == 1
    assert _print_config("--data", "mixture", "--bias", "0.5")["loss"]["bias"] == 0.5
    assert _print_config("--data", "swissroll", "--preset", "tiny-uvit")["model"]["preset"] == "tiny-uvit"
    assert _print_config("--data", "digits")["loss"]["bias"] is None


def test_steps_and_images_are_exclusive(capsys, tmp_path):
    assert main(["train", "--steps", "2", "--images", "10", "--print-config"]) == 2
    assert "--steps or --images" in _one_line_error(capsys, "train")
    assert main(["train", "--steps", "0", "--print-config"]) == 2
    assert "--steps must be at least 1" in _one_line_error(capsys, "train")


def test_print_config_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["images"] == 64
    assert not out.exists()
    assert main(["train", "--steps", "1"]) == 2
    assert "--out is required" in _one_line_error(capsys, "train")


# --------------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--classes", "cat"], "--classes takes comma-separated integers"),
    (["--classes", "1,x"], "--classes takes comma-separated integers"),
    (["--guidance-interval", "1"], "--guidance-interval takes LO,HI"),
    (["--guidance-interval", "a,b"], "--guidance-interval takes LO,HI"),
    (["--guidance-interval", "3,1"], "LO < HI"),
    (["--sampler", "nope"], "unknown sampler"),
    (["--out", "{tmp}/grid.jpg"], "--out must end in .png or .npz"),
    (["--out", "{tmp}/afile/x.npz"], "is a file, not a folder"),
    (["--out", "{tmp}/adir.npz"], "is a folder"),
])
def test_sample_refuses_bad_requests_in_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    import pixdiff.generate

    def no_loading(*a, **k):
        raise AssertionError("the checkpoint was loaded before the request was checked")

    monkeypatch.setattr(pixdiff.generate, "load", no_loading)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.npz").mkdir()
    base = ["sample", "--ckpt", str(tmp_path / "missing-run"), "--out", str(tmp_path / "s.npz")]
    assert main(base + [a.format(tmp=tmp_path) for a in argv]) == 2
    assert message in _one_line_error(capsys, "sample")


def test_usage_errors_are_one_line(capsys):
    assert main(["sample", "--n", "many", "--ckpt", "x", "--out", "x.npz"]) == 2
    err = _one_line_error(capsys, "sample")
    assert "invalid int value" in err and "pixdiff sample --help" in err
    assert main(["sample"]) == 2
    assert "required" in _one_line_error(capsys, "sample")
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_only_pixdiff_errors_become_one_line(tmp_path, monkeypatch, capsys):
    import pixdiff.train

    def fail(exc):
        def train(*a, **k):
            raise exc
        return train

    monkeypatch.setattr(pixdiff.train, "train", fail(PixdiffError("no good\nat all")))
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "1", "--device", "cpu"]) == 2
    assert _one_line_error(capsys, "train") == "pixdiff train: error: no good at all"
    for exc in (RuntimeError("CUDA out of memory"), ValueError("a bug"), KeyError("x")):
        monkeypatch.setattr(pixdiff.train, "train", fail(exc))
        with pytest.raises(type(exc)):  # keeps its traceback
            main(["train", "--out", str(tmp_path / "r"), "--steps", "1", "--device", "cpu"])
    monkeypatch.setattr(pixdiff.train, "train", fail(PixdiffError("shown in full")))
    monkeypatch.setenv("PIXDIFF_DEBUG", "1")
    with pytest.raises(PixdiffError):
        main(["train", "--out", str(tmp_path / "r"), "--steps", "1", "--device", "cpu"])


# -------------------------------------------------------------------------------------- device


def test_device_reaches_the_library(tmp_path, monkeypatch, capsys):
    import pixdiff.generate
    import pixdiff.likelihood
    import pixdiff.metrics.evaluate as ev
    import pixdiff.train

    seen = {}

    def fake_train(cfg, out, resume=False, progress=True, device=None):
        seen["train"] = device
        return Path(out) / "checkpoints" / "ckpt-1"

    class FakePipe:
        def sample(self, n, *a, **k):
            return np.zeros((n, 4, 4, 1), np.uint8), np.arange(n)

    def fake_load(path, device=None, weights="ema"):
        seen["sample"] = device
        return FakePipe()

    def fake_nll(*a, device=None, **k):
        seen["nll"] = device
        return {"bits_per_dim": 1.0, "ci95": 0.1, "method": "elbo", "n": 2}

    real_eval = ev.evaluate_images

    def spy_eval(*a, device=None, **k):
        seen["eval"] = device
        return real_eval(*a, device=device, **k)

    monkeypatch.setattr(pixdiff.train, "train", fake_train)
    monkeypatch.setattr(pixdiff.generate, "load", fake_load)
    monkeypatch.setattr(pixdiff.likelihood, "checkpoint_nll", fake_nll)
    monkeypatch.setattr(ev, "evaluate_images", spy_eval)
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "1", "--device", "cpu"]) == 0
    assert main(["sample", "--ckpt", "r", "--n", "3", "--out", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    assert np.load(tmp_path / "s.npz")["images"].shape == (3, 4, 4, 1)
    assert main(["nll", "--ckpt", "r", "--device", "cpu"]) == 0
    npz = tmp_path / "e.npz"
    np.savez(npz, images=np.zeros((12, 16, 16, 1), np.uint8))
    assert main(["eval", "--images", str(npz), "--metrics", "is", "--device", "cpu"]) == 0
    assert seen == {k: torch.device("cpu") for k in ("train", "sample", "nll", "eval")}
    # no --device: the GPU when there is one, else the CPU
    assert main(["sample", "--ckpt", "r", "--n", "1", "--out", str(tmp_path / "t.npz")]) == 0
    assert seen["sample"] == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("argv", [
    ["train", "--steps", "1", "--out", "{tmp}/r"],
    ["sample", "--ckpt", "{tmp}/r", "--out", "{tmp}/s.npz"],
    ["eval", "--images", "{tmp}/e.npz"],
    ["nll", "--ckpt", "{tmp}/r"],
])
def test_asking_for_a_missing_gpu_is_a_user_error(argv, tmp_path, capsys):
    np.savez(tmp_path / "e.npz", images=np.zeros((2, 16, 16, 1), np.uint8))
    assert main([a.format(tmp=tmp_path) for a in argv] + ["--device", "cuda"]) == 2
    assert "no CUDA GPU" in _one_line_error(capsys, argv[0])


# --------------------------------------------------------------------------------------- info


def _info(capsys, *flags) -> str:
    capsys.readouterr()
    assert main(["info", *flags]) == 0
    return capsys.readouterr().out


def _rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.strip()}


def test_info_lists_presets_samplers_schedules_and_weightings(capsys):
    from pixdiff import nets, samplers, schedules, weighting

    presets = _rows(_info(capsys, "--presets"))
    assert list(presets) == nets.available()
    assert re.search(r"unet, 1\.9\d M parameters at 1×16×16", presets["tiny"])
    assert "mlp" in presets["mlp"] and all("parameters" in v for v in presets.values())
    rows = _rows(_info(capsys, "--samplers"))
    assert list(rows) == samplers.available()
    for name, line in rows.items():
        spec = samplers.get(name)
        cite = getattr(spec, "paper", None) or spec.seed
        assert cite in line and f"default {spec.steps} steps" in line
    rows = _rows(_info(capsys, "--schedules"))
    assert list(rows) == schedules.available() and all(len(v.split(None, 1)) == 2 for v in rows.values())
    assert "VE SDE" in rows["ve"]
    rows = _rows(_info(capsys, "--weightings"))
    assert set(rows) == set(weighting.WEIGHTINGS) | {"vlb"}
    assert "sigmoid(b − λ)" in rows["sigmoid"] and "L_simple" in rows["eps_mse"]
    both = _info(capsys, "--samplers", "--weightings")
    assert "samplers:" in both and "weightings:" in both and "presets:" not in both
    everything = json.loads(_info(capsys, "--json"))
    assert set(everything) == {"presets", "samplers", "schedules", "weightings"}
    assert list(everything["samplers"]) == samplers.available()


def test_info_preset(capsys):
    text = _info(capsys, "--preset", "tiny")
    assert text.startswith("preset tiny: unet, 1,920,705 parameters") and "GFLOPs per image at 16×16" in text
    r = json.loads(_info(capsys, "--preset", "tiny", "--resolution", "32", "--json"))
    assert r["resolution"] == 32 and r["parameters"] > 0 and r["gflops_per_image"] > 0


def test_info_summarises_a_run(run, capsys):
    text = _info(capsys, "--ckpt", str(run))
    rows = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in text.splitlines()}
    assert rows["run"] == str(run) and "ckpt-000000000008" in rows["checkpoint"]
    assert rows["images"].startswith("8 seen of 8 planned (100 %)")
    assert rows["network"].startswith("unet from preset tiny (") and "channels=8" in rows["network"]
    assert re.search(r", [\d,]+ parameters$", rows["network"])
    assert rows["predicts"].startswith("v ")
    assert rows["EMA"] == "half-life 20,000 images, ramp-up 0.05"
    assert rows["data"].startswith("digits16-train (1×16×16), 10 classes")
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert rows["last log"].startswith(f"step {last['step']}, images {last['images']}, loss ")
    s = json.loads(_info(capsys, "--ckpt", str(run), "--json"))
    assert s["images"] == 8 and s["images_planned"] == 8 and s["last_log"] == last
    assert s["parameterization"] == "v" and s["ema"]["halflife_images"] == 20000.0
    assert s["parameters"] == sum(v.numel() for v in __import__("pixdiff").checkpoint.load(run).model.values())


def test_info_on_a_missing_run_is_one_line(tmp_path, capsys):
    assert main(["info", "--ckpt", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys, "info")


# -------------------------------------------------------------------------------- sample, nll


def test_sample_writes_where_asked(run, tmp_path, capsys):
    out = tmp_path / "new" / "dir" / "s.npz"  # folders that do not exist yet are made
    assert main(["sample", "--ckpt", str(run), "--n", "3", "--classes", "4,7", "--sampler", "ddim", "--steps", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    f = np.load(out)
    assert f["images"].shape == (3, 16, 16, 1) and f["labels"].tolist() == [4, 7, 4]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["wrote"] == str(out)
    assert main(["sample", "--ckpt", str(run), "--n", "2", "--classes", "12", "--out", str(out)]) == 2
    assert "out of range" in _one_line_error(capsys, "sample")


def test_nll_checks_its_numbers_first(run, capsys):
    assert main(["nll", "--ckpt", str(run), "--n", "1"]) == 2
    assert "--n must be at least 2" in _one_line_error(capsys, "nll")
    assert main(["nll", "--ckpt", str(run), "--method", "exact"]) == 2
    assert "invalid choice" in _one_line_error(capsys, "nll")


def test_checkpoint_nll_is_a_library_function(run):
    from pixdiff.likelihood import checkpoint_nll

    r = checkpoint_nll(run, n=2, num_t=4, device="cpu")
    assert r["n"] == 2 and np.isfinite(r["bits_per_dim"]) and r["method"] == "elbo"


# -------------------------------------------------------------------------- eval: sizes, stated


def _png_folder(root: Path, n: int, size: int, mode: str, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / f"{i}.png")
    return root


def _eval(capsys, *argv) -> tuple[dict, str]:
    capsys.readouterr()
    js = Path(argv[argv.index("--json") + 1])
    assert main(["eval", *map(str, argv), "--device", "cpu"]) == 0
    return json.loads(js.read_text()), capsys.readouterr().err


def test_eval_reads_a_folder_at_the_references_size_and_says_so(tmp_path, capsys):
    imgs = _png_folder(tmp_path / "rgb64", 12, 64, "RGB")
    res, err = _eval(capsys, "--images", imgs, "--metrics", "is", "--json", tmp_path / "a.json")
    said = [line for line in err.splitlines() if "converted" in line]
    assert len(said) == 1
    assert "64×64 RGB images converted to 16×16 grayscale" in said[0] and "digits reference" in said[0]
    assert res["protocol"]["conversion"] in said[0]
    assert res["protocol"]["samples"]["shape_chw"] == [1, 16, 16]


def test_eval_takes_the_size_of_an_npz_reference(tmp_path, capsys):
    imgs = _png_folder(tmp_path / "rgb64", 12, 64, "RGB")
    ref = tmp_path / "ref8.npz"
    np.savez(ref, images=np.random.default_rng(1).integers(0, 256, (80, 8, 8, 1), dtype=np.uint8))
    res, err = _eval(capsys, "--images", imgs, "--ref", ref, "--metrics", "mem", "--json", tmp_path / "b.json")
    conv = res["protocol"]["conversion"]
    assert "converted to 8×8 grayscale" in conv and "ref8.npz" in conv and conv in err
    assert res["protocol"]["samples"]["shape_chw"] == [1, 8, 8]


def test_eval_says_nothing_when_nothing_is_converted(tmp_path, capsys):
    imgs = _png_folder(tmp_path / "gray16", 12, 16, "L")
    res, err = _eval(capsys, "--images", imgs, "--metrics", "is", "--json", tmp_path / "c.json")
    assert res["protocol"]["conversion"] is None and "converted" not in err
    assert res["protocol"]["samples"]["shape_chw"] == [1, 16, 16]
    small = _png_folder(tmp_path / "gray8", 12, 8, "L")  # 8 px is a digits size too: kept
    res, _ = _eval(capsys, "--images", small, "--metrics", "is", "--json", tmp_path / "d.json")
    assert res["protocol"]["conversion"] is None and res["protocol"]["samples"]["shape_chw"] == [1, 8, 8]


def test_eval_resolution_and_channels_flags_win_and_are_stated(tmp_path, capsys):
    imgs = _png_folder(tmp_path / "rgb64", 12, 64, "RGB")
    res, err = _eval(capsys, "--images", imgs, "--resolution", "32", "--channels", "1", "--metrics", "is",
                     "--json", tmp_path / "e.json")
    assert "converted to 32×32 grayscale (as --resolution and --channels ask)" in res["protocol"]["conversion"]
    assert res["protocol"]["samples"]["shape_chw"] == [1, 32, 32]
    npz = tmp_path / "s.npz"
    np.savez(npz, images=np.zeros((12, 16, 16, 1), np.uint8))
    assert main(["eval", "--images", str(npz), "--resolution", "32", "--metrics", "is"]) == 2
    assert "scored as stored" in _one_line_error(capsys, "eval")


@pytest.mark.parametrize("command", ["train", "sample", "eval", "nll", "train-classifier"])
def test_every_command_that_runs_a_network_takes_device(command):
    opts = {s for a in subparsers()[command]._actions for s in a.option_strings}
    assert "--device" in opts
