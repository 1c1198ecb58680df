"""No traceback for any user mistake: every subcommand's flags, fuzzed.

The subcommands and their options are read from ``pixdiff.cli.build_parser()``, so a new command or
flag is fuzzed without editing this file (with the generic values of its type; a flag that can make
a run expensive belongs in ``CAPS``). Each example calls ``pixdiff.cli.main(argv)`` in this process
and requires that it either returns 0, or fails with one ``pixdiff CMD: error: ...`` line (exit 2,
or 3 for a failed checkpoint write) and no traceback; any other exception escaping ``main`` is a bug.

Values are valid, boundary and garbage: 0, negatives, huge numbers, nan, inf, empty and unicode
strings, paths that do not exist, paths to files of the wrong kind, and real inputs made once per
module (a tiny run, a 2-D run, a classifier, an npz, an image folder, configs). Expensive flags
(run length, batch, image count, resolution, network size) are always given small values, so the
examples stay fast; the other flags are fuzzed freely. Everything is written under pytest's
temporary folders (the examples run with that as the working directory).

Examples are derandomized (the same ones every run) so that CI is stable;
``PIXDIFF_FUZZ_EXAMPLES=500`` runs that many random examples per command instead.

The second half holds one focused test per user mistake named in the reliability issue, and a
regression test for each traceback the fuzzing found.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NET_FLAGS as NET
from helpers import subparsers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixdiff.cli import main

SUBPARSERS = subparsers()
COMMANDS = sorted(SUBPARSERS)

# ------------------------------------------------------------------------------------ the inputs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real inputs, made once: ``@name`` tokens in the value lists below resolve to these paths."""
    from pixdiff.data import load_digits, to_uint8

    root = tmp_path_factory.mktemp("fuzz")
    w = {"root": root}
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
        assert main(["train", "--data", "digits", *NET, "--steps", "2", "--batch", "4", "--ckpt-every", "4",
                     "--log-every", "4", "--warmup", "0", "--out", str(root / "run"), "--quiet",
                     "--device", "cpu"]) == 0
        assert main(["train", "--data", "moons", "--steps", "2", "--batch", "4", "--warmup", "0",
                     "--out", str(root / "toy"), "--quiet", "--device", "cpu"]) == 0
        assert main(["train-classifier", "--out", str(root / "classifier"), "--steps", "1", "--batch", "2",
                     "--quiet"]) == 0
    w["run"], w["toy"], w["classifier"] = root / "run", root / "toy", root / "classifier"
    w["ckpt"] = sorted((root / "run" / "checkpoints").glob("ckpt-*"))[-1]
    corrupt = root / "corrupt"  # every checkpoint truncated
    shutil.copytree(root / "run", corrupt)
    for f in corrupt.glob("checkpoints/*/model.safetensors"):
        f.write_bytes(f.read_bytes()[:64])
    w["corrupt"] = corrupt

    digits = load_digits(16, "train")
    imgs = to_uint8(digits.images[:80])  # enough for a full-rank Fréchet distance of the digits features
    labels = digits.labels[:80].numpy().astype(np.int64)
    np.savez(root / "samples.npz", images=imgs, labels=labels)
    np.savez(root / "strlabels.npz", images=imgs[:8], labels=np.array(list("abcdefgh")))
    np.savez(root / "floats.npz", images=imgs[:8].astype(np.float32) / 255)
    np.savez(root / "nolabels.npz", images=imgs[:8])
    np.savez(root / "wrongkey.npz", pictures=imgs[:8])
    (root / "text.npz").write_text("these are not arrays\n")
    (root / "text.txt").write_text("hello\n")
    (root / "weights.pth").write_text("not a torch file\n")
    (root / "empty").mkdir()
    from PIL import Image

    for c in ("0", "1"):
        (root / "folder" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(imgs[3 * int(c) + i, :, :, 0]).save(root / "folder" / c / f"{i}.png")
    (root / "config.json").write_text(json.dumps({"optim": {"lr": 0.002}, "model": {"overrides": {"channels": 8}}}))
    (root / "badconfig.json").write_text("{not json")
    (root / "listconfig.json").write_text("[1, 2]")
    (root / "unknownconfig.json").write_text(json.dumps({"optim": {"speed": 3}}))
    (root / "wrongtypeconfig.json").write_text(json.dumps({"optim": {"lr": "fast"}, "run": "x"}))
    (root / "labels.json").write_text(json.dumps({"0/0.png": 0}))
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    w["scratch"] = root / "scratch"
    w["scratch"].mkdir()
    yield w
    (root / "ro").chmod(0o755)


_fresh = itertools.count()


def _resolve(token: str, w: dict) -> str:
    """``@name`` → a fixture path; ``@new/x.npz`` → a path that does not exist yet; ``@fresh-dir`` →
    a new empty folder; ``@copy-run`` → a fresh copy of the run (training into it may change it)."""
    if not token.startswith("@"):
        return token
    name, _, rest = token[1:].partition("/")
    if name == "ro" and os.geteuid() == 0:  # root writes anywhere: keep the fixture's folder empty
        name = "new"
    if name == "new":
        return str(w["scratch"] / f"new{next(_fresh)}" / rest)
    if name == "fresh-dir":
        d = w["scratch"] / f"dir{next(_fresh)}"
        d.mkdir()
        return str(d)
    if name == "copy-run":
        dst = w["scratch"] / f"copy{next(_fresh)}"
        shutil.copytree(w["run"], dst)
        return str(dst / rest) if rest else str(dst)
    path = w[name] if name in w else w["root"] / name
    return str(Path(path) / rest) if rest else str(path)


# ------------------------------------------------------------------------------------ the values

INTS = ["0", "1", "2", "3", "-1", "-8", "7", "12", "9" * 30, "-" + "9" * 30, "1.5", "1e3", "nan", "x", "", "٣"]
SMALL_INTS = ["0", "1", "2", "-1", "-5", "x", "", "nan", "1.0"]  # for flags that make a run longer
FLOATS = ["0", "1", "0.5", "-1", "-0", "1e308", "-1e308", "5e-324", "1e999", "nan", "inf", "-inf", "x", ""]
STRINGS = ["", " ", "none", "cat", "ü🙂", "a,b", "1,x", "-", "..", "/", "x" * 300]
INPUT_PATHS = ["@run", "@ckpt", "@toy", "@classifier", "@corrupt", "@samples.npz", "@strlabels.npz",
               "@floats.npz", "@nolabels.npz", "@wrongkey.npz", "@text.npz", "@text.txt", "@weights.pth",
               "@empty", "@folder", "@missing", "@text.txt/below", "@config.json"]
OUTPUT_FILES = ["@new/x.npz", "@new/x.png", "@new/x.json", "@new/x.safetensors", "@new/deep/er/x.npz", "@new/x",
                "@empty", "@text.txt/x.npz", "@ro/x.npz", "@ro/x.json", "", "ü.json"]
DATA = ["digits", "moons", "swissroll", "mixture", "@folder",  # not photos: decoding 3200 photos takes seconds "@samples.npz", "@nolabels.npz",
        "@strlabels.npz", "@floats.npz", "@wrongkey.npz", "@text.npz", "@text.txt", "@empty", "@missing", "@run",
        "", "ü"]
NET_ITEMS = ["channels=4", "channels=0", "channels=-3", "channels=x", "channels=1.5", "channel_mult=[1]",
             "channel_mult=[]", "channel_mult=[1,2,2]", "channel_mult=3", "num_res_blocks=0", "num_res_blocks=2",
             "attention_resolutions=[]", "attention_resolutions=[3]", "attention_resolutions=16",
             "head_channels=null", "num_heads=2", "num_heads=0", "norm_groups=3", "norm_groups=0", "dropout=1.5",
             "dropout=0.1", "dropout=nan", "bogus=1", "=1", "noequals", "resolution=8", "in_channels=3",
             "num_classes=-1", "patch_size=3", "hidden=0", "blocks=1", "learn_sigma=true", "emb_channels=0",
             "channels=null", "channels=[8]", 'channels="8"']

# (command or "*", option) -> the values it gets. Flags that set the amount of work are capped here.
CAPS: dict[tuple[str, str], list[str]] = {
    ("*", "--steps"): SMALL_INTS,
    ("*", "--batch"): ["1", "2", "3", "0", "-2", "x"],
    ("*", "--n"): ["1", "2", "3", "0", "-1", "x"],
    ("*", "--num-images"): ["1", "2", "0", "-1"],
    ("*", "--resolution"): ["8", "16", "32", "12", "7", "1", "0", "-4", "x"],
    ("*", "--device"): ["cpu", "cuda", "cuda:7", "mps", "tpu", "", "cpu:0", "ü"],
    ("*", "--preset"): ["tiny", "tiny-uvit", "tiny-classifier", "mlp", "bogus", "", "TINY"],
    ("*", "--data"): DATA,
    ("*", "--out"): OUTPUT_FILES,
    ("*", "--json"): OUTPUT_FILES,
    ("*", "--ckpt"): INPUT_PATHS,
    ("*", "--sampler"): None,  # filled below: every sampler and garbage
    ("*", "--schedule"): None,
    ("*", "--seed"): ["0", "1", "-1", str(2**63), "9" * 30, "x", "1.5"],
    ("train", "--out"): ["@new/run", "@new/run", "@copy-run", "@text.txt", "@text.txt/run", "@ro/run", "@fresh-dir",
                         "@new/ü", "."],
    ("train", "--images"): SMALL_INTS,
    ("train", "--train-schedule"): None,  # filled below, as --schedule
    ("train", "--micro-batch"): ["0", "1", "2", "3", "-1", "x"],
    ("train", "--net"): NET_ITEMS,
    ("train", "--config"): ["@config.json", "@badconfig.json", "@listconfig.json", "@unknownconfig.json",
                            "@wrongtypeconfig.json", "@missing.json", "@empty", "@samples.npz", "@text.txt", ""],
    ("train", "--crop-pad"): ["0", "1", "2", "-1", "100", "x"],
    ("train", "--haar-levels"): ["0", "1", "2", "3", "9", "-1"],
    ("train", "--keep"): ["0", "1", "2", "-1"],
    ("train", "--max-nan-steps"): ["0", "1", "-1"],
    ("train", "--log-every"): ["0", "1", "2", "-1", "9" * 30, "x"],
    ("train", "--ckpt-every"): ["0", "1", "2", "-8", "9" * 30, "x"],
    ("train", "--sample-every"): ["0", "-1", "9" * 30, "x"],  # a grid of 100 images is not cheap: none mid-run
    ("train", "--eval-every"): ["0", "-1", "9" * 30, "x"],
    ("train", "--eval-n"): ["0", "1", "2", "100", "-1"],
    ("train", "--eval-features"): ["digits", "inception", "bogus", ""],
    ("train", "--eval-inception-weights"): ["@weights.pth", "@missing.pth", "@empty", "none", ""],
    ("train", "--labels"): ["none", "folders", "auto", "@labels.json", "@missing.json", "@text.txt", "bogus", ""],
    ("train", "--log"): ["none", "tensorboard", "wandb", "bogus"],
    ("train", "--schedule-option"): ["shift=2", "bogus=1", "base_resolution=0", "shift=nan", "x", "=", "num=-1"],
    ("train", "--decay-images"): ["1", "2", "0", "-1", "none", "9" * 30],
    ("train", "--bias-warmup-steps"): ["0", "1", "-1", "9" * 30],
    ("train", "--warmup"): ["0", "1", "-1", "9" * 30, "x"],
    ("sample", "--classes"): ["0", "0,1", "9", "10", "-1", "99", "cat", "1,x", "", ",", "0,,1", "1e3"],
    ("sample", "--guidance-interval"): ["-2,4", "4,-2", "1", "a,b", "-inf,inf", "nan,1", "1,1", "", ",", "1,2,3"],
    ("sample", "--classifier"): ["@classifier", "@run", "@toy", "@missing", "@text.txt", "@empty"],
    ("sample", "--guide-ckpt"): ["@run", "@toy", "@classifier", "@corrupt", "@missing", "@text.txt", "@empty"],
    ("eval", "--images"): ["@samples.npz", "@strlabels.npz", "@floats.npz", "@nolabels.npz", "@wrongkey.npz",
                           "@text.npz", "@text.txt", "@folder", "@empty", "@run", "@missing", ""],
    ("eval", "--ref"): ["digits", "@samples.npz", "@nolabels.npz", "@text.npz", "@strlabels.npz", "@folder",
                        "@empty", "@missing", "@text.txt", "@missing.safetensors", "@weights.pth", "", "ü"],
    ("eval", "--ref-cache"): ["@new/r.safetensors", "@text.txt", "@empty", "@text.npz", "@text.txt/x.safetensors",
                              "@ro/r.safetensors"],
    ("eval", "--metrics"): ["fd", "kid", "pr", "is", "acc", "mem", "fd,kid", "is,acc", "bogus", "", ",", "fd,,fd", "FD"],
    ("eval", "--inception-weights"): ["@weights.pth", "@missing.pth", "@empty", "@text.npz", ""],
    ("eval", "--kid-subsets"): ["0", "1", "2", "-1", "10", "x"],
    ("eval", "--kid-subset-size"): INTS,
    ("eval", "--pr-k"): INTS,
    ("eval", "--is-splits"): INTS,
    ("nll", "--num-t"): ["1", "2", "0", "-1", "x"],
    ("info", "--resolution"): INTS,
    ("train-classifier", "--out"): ["@new/c", "@classifier", "@text.txt", "@ro/c", "@fresh-dir", "@run"],
    ("train-classifier", "--lr"): FLOATS,
    ("prepare-data", "src"): DATA,
    ("prepare-data", "--out"): ["@new/d", "@new/d", "@copy-run", "@text.txt", "@text.txt/d", "@ro/d", "@new/d.npz"],
    ("prepare-data", "--labels"): ["none", "folders", "@labels.json", "@missing.json", "@text.txt", "bogus", ""],
    ("*", "--workers"): ["0", "1", "-1", "x"],
}

ALWAYS = {("train", "out")}  # not required by argparse (--print-config needs none), but by the work
EXCLUDED = {("train", "--compile")}  # torch.compile takes minutes on a CPU: not a fuzzing matter

# Always given (first, so that a fuzzed value of the same flag wins): keeps every example small.
BASE: dict[str, list[str]] = {
    "train": [*NET, "--batch", "2", "--steps", "1", "--warmup", "0", "--quiet"],
    "sample": ["--n", "2", "--steps", "1"],
    "eval": ["--n", "4", "--steps", "1", "--kid-subsets", "2"],
    "nll": ["--n", "2", "--num-t", "1", "--batch", "2"],
    "train-classifier": ["--steps", "1", "--batch", "2", "--quiet"],
    "prepare-data": ["--workers", "0", "--quiet"],
}

EXAMPLES = {"train": 20, "sample": 30, "eval": 30, "nll": 20, "info": 20, "train-classifier": 15, "prepare-data": 15}
RANDOM_EXAMPLES = int(os.environ.get("PIXDIFF_FUZZ_EXAMPLES", "0"))


def _names():
    from pixdiff import samplers, schedules

    CAPS[("*", "--sampler")] = [*samplers.available(), "bogus", "", "HEUN"]
    CAPS[("*", "--schedule")] = CAPS[("train", "--train-schedule")] = [*schedules.available(), "bogus", ""]


_names()


def _values(command: str, action: argparse.Action) -> list[str]:
    for opt in action.option_strings or [action.dest]:  # a positional by its name
        for key in ((command, opt), ("*", opt)):
            if CAPS.get(key) is not None:
                return CAPS[key]
    if action.choices is not None:
        return [str(c) for c in action.choices] + ["", "bogus"]
    if action.type is int or getattr(action.type, "__name__", "") == "int":
        return INTS
    if action.type is float or getattr(action.type, "__name__", "") == "float":
        return FLOATS
    if action.type is Path:
        return INPUT_PATHS + OUTPUT_FILES[:3]
    return STRINGS + INPUT_PATHS[:6]


def _optional_actions(command: str) -> list[argparse.Action]:
    p = SUBPARSERS[command]
    return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
            and not any((command, o) in EXCLUDED for o in a.option_strings)]


# Values that a careful user could give: drawn half the time, so that examples also get past the
# checks and into the work (where a traceback is likelier to hide) instead of all failing at the first.
PLAUSIBLE_WORDS = {"digits", "moons", "mixture", "@folder", "@samples.npz", "@nolabels.npz", "@run", "@ckpt", "@toy",
                   "@classifier", "@config.json", "@labels.json", "none", "folders", "cpu", "tiny", "tiny-uvit",
                   "tiny-classifier", "fd", "kid", "pr", "is", "acc", "mem", "fd,kid", "is,acc", "0", "0,1", "9",
                   "-2,4", "-inf,inf", "num_res_blocks=2", "dropout=0.1", "attention_resolutions=[]",
                   "emb_channels=16", "head_channels=4", "shift=2"}


def _plausible(v: str) -> bool:
    if v in PLAUSIBLE_WORDS or v.startswith("@new/") or v in CAPS[("*", "--sampler")][:-3] \
            or v in CAPS[("*", "--schedule")][:-2]:
        return True
    try:
        x = float(v)
    except ValueError:
        return False
    return 0 <= x <= 1000 and v.strip() == v and v.lower() not in ("nan", "inf")


def _value(draw, vals: list[str], choices=None) -> str:
    good = [v for v in vals if _plausible(v) or (choices is not None and v in map(str, choices))]
    return draw(st.sampled_from(good) if good and draw(st.booleans()) else st.sampled_from(vals))


def _flag(draw, command: str, action: argparse.Action) -> list[str]:
    opt = draw(st.sampled_from(action.option_strings))
    if action.nargs == 0:
        return [opt]
    vals = _values(command, action)
    if isinstance(action.nargs, int) or action.nargs in ("+", "*"):
        k = action.nargs if isinstance(action.nargs, int) else draw(st.integers(1, 3))
        return [opt, *(_value(draw, vals, action.choices) for _ in range(k))]
    v = _value(draw, vals, action.choices)
    return [f"{opt}={v}"] if v.startswith("-") else [opt, v]  # "-inf" would read as an option


@st.composite
def argvs(draw, command: str) -> list[str]:
    p = SUBPARSERS[command]
    actions = _optional_actions(command)
    chosen = [a for a in actions if a.required or (command, a.dest) in ALWAYS]
    for g in p._mutually_exclusive_groups:  # eval: --images or --ckpt
        if g.required and not any(a in chosen for a in g._group_actions):
            chosen.append(draw(st.sampled_from(g._group_actions)))
    chosen += draw(st.lists(st.sampled_from(actions), max_size=4, unique_by=id))
    argv = [command, *BASE.get(command, [])]
    for a in p._actions:  # positionals (prepare-data's SRC), in order
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            argv.append(_value(draw, [v for v in _values(command, a) if not v.startswith("-")], a.choices))
    for a in chosen:
        argv += _flag(draw, command, a)
    argv += draw(st.sampled_from([[]] * 40 + [["--bogus"], ["stray"], ["-h"]]))
    return argv


# ------------------------------------------------------------------------------------ the check


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(argv: list[str], w: dict) -> tuple[int, str, str]:
    """``main(argv)`` with the ``@`` tokens resolved, in the scratch folder; (code, stdout, stderr).
    Fails the test when the call ends in anything but 0 or a one-line error."""
    argv = [_resolve(a, w) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    with _cwd(w["scratch"]), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # allowed, if it says why in one line
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    text = err.getvalue()
    assert "Traceback" not in text, f"{argv}\n{text}"
    if code != 0:
        if code == 1 and argv[0] == "nll":  # a non-finite result: printed, and said by the exit code
            assert "bits/dim" in out.getvalue(), (argv, out.getvalue(), text)
        else:
            last = text.rstrip("\n").split("\n")[-1].split("\r")[-1]  # after any progress bar
            assert code in (2, 3, 130), f"exit code {code} for {argv}: {text}"
            assert last.startswith("pixdiff") and (": error: " in last or last == "pixdiff: interrupted"), \
                f"{argv}\n{text}"
            assert "allow_pickle" not in last, f"never advise unpickling: {argv}\n{last}"
    return code, out.getvalue(), text


@pytest.mark.parametrize("command", COMMANDS)
def test_fuzz_every_flag_of_every_command(command, world):
    n = RANDOM_EXAMPLES or EXAMPLES.get(command, 15)

    @settings(max_examples=n, deadline=None, database=None, derandomize=not RANDOM_EXAMPLES,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(argv=argvs(command))
    def fuzz(argv):
        with torch.random.fork_rng(devices=[]):
            code, _, _ = run_cli(argv, world)  # run_cli fails on a traceback or a multi-line error
        assert code in (0, 1, 2, 3, 130)

    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(world["root"] / ".hypothesis")  # its caches, too, stay out of the repository
    try:
        fuzz()
    finally:
        set_hypothesis_home_dir(None)


# ------------------------------------------------------------------- the user mistakes, one by one
# (sample --batch 0 and --classes cat are in tests/test_cli.py; the library side of the lock, of
# --resume and of a file as the run folder in tests/test_reliability.py)


def assert_fails_in_one_line(argv, w, *needles) -> str:
    code, _, err = run_cli([str(a) for a in argv], w)
    assert code == 2, (argv, err)
    line = err.rstrip("\n").split("\n")[-1]
    for n in needles:
        assert n in line, line
    return line


@pytest.fixture
def no_work(monkeypatch):
    """Every library entry point that does work fails the test if it is reached."""
    import pixdiff.datasets
    import pixdiff.generate
    import pixdiff.likelihood
    import pixdiff.metrics.evaluate
    import pixdiff.train
    import pixdiff.train_classifier

    def reached(*a, **k):
        raise AssertionError("work started before the request was checked")

    for mod, name in ((pixdiff.train, "train"), (pixdiff.generate, "load"), (pixdiff.likelihood, "checkpoint_nll"),
                      (pixdiff.metrics.evaluate, "read_samples"), (pixdiff.metrics.evaluate, "evaluate_images"),
                      (pixdiff.train_classifier, "train_classifier"), (pixdiff.datasets, "prepare_data")):
        monkeypatch.setattr(mod, name, reached)


def test_log_every_zero_and_a_negative_ckpt_every_are_refused_before_training(world, no_work):
    out = world["scratch"] / "log-every"
    assert_fails_in_one_line(["train", *NET, "--steps", "1", "--log-every", "0", "--out", out], world,
                       "--log-every must be at least 1")
    assert_fails_in_one_line(["train", *NET, "--steps", "1", "--ckpt-every=-8", "--out", out], world,
                       "--ckpt-every", ">= 0")
    assert not out.exists()


def test_eval_of_an_npz_with_string_labels_is_one_line(world):
    assert_fails_in_one_line(["eval", "--images", world["root"] / "strlabels.npz"], world,
                       "labels must be integer class indices", "<U1")


def test_float_labels_that_are_whole_numbers_are_class_indices():
    from pixdiff.errors import PixdiffError
    from pixdiff.metrics.evaluate import _integer_labels

    assert _integer_labels(np.array([0.0, 3.0])).tolist() == [0, 3]
    for bad in (np.array([0.5]), np.array([np.nan]), np.array([True]), np.array(["3"])):
        with pytest.raises(PixdiffError, match="integer class indices"):
            _integer_labels(bad)


def test_a_resolution_the_network_cannot_take_names_the_ones_it_can(world):
    assert_fails_in_one_line(["train", "--data", "digits", "--resolution", "12", "--steps", "1", "--out",
                        world["scratch"] / "r12"], world, "8, 16 or 32")
    assert_fails_in_one_line(["train", "--data", world["root"] / "folder", "--resolution", "12", *NET, "--steps", "1",
                        "--batch", "2", "--quiet", "--out", world["scratch"] / "r12f"], world,
                       "resolutions that work: 8 or 16")  # NET has two levels
    assert_fails_in_one_line(["info", "--preset", "tiny", "--resolution", "12"], world, "resolutions that work: 8, 16 or 32")
    assert_fails_in_one_line(["info", "--preset", "tiny", "--resolution", "0"], world, "must be positive")
    assert_fails_in_one_line(["info", "--preset", "tiny-uvit", "--resolution", "6"], world, "multiples of 4")


def test_a_train_out_that_is_a_file_is_one_line(world, no_work):
    assert_fails_in_one_line(["train", "--steps", "1", "--out", world["root"] / "text.txt"], world, "is a file")


@pytest.mark.parametrize("argv", [
    ["eval", "--images", "@text.npz"],
    ["eval", "--images", "@samples.npz", "--ref", "@text.npz"],
    ["train", "--data", "@text.npz", "--steps", "1", "--out", "@new/run"],
    ["prepare-data", "@text.npz", "--resolution", "16", "--out", "@new/d"],
])
def test_a_text_file_named_npz_is_one_line_that_never_advises_unpickling(argv, world):
    code, _, err = run_cli(argv, world)
    assert code == 2 and "npz" in err and "pickle" not in err.replace("never unpickles", ""), err


@pytest.mark.parametrize("make", ["npy", "truncated", "objects", "strlabels"])
def test_npz_files_that_are_not_plain_archives_are_one_line(make, world):
    f = world["scratch"] / f"bad-{make}.npz"
    if make == "npy":
        with open(f, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif make == "truncated":
        f.write_bytes((world["root"] / "samples.npz").read_bytes()[:300])
    elif make == "strlabels":
        np.savez(f, images=np.zeros((2, 16, 16, 1), np.uint8), labels=np.array(["cat", "dog"]))
    else:
        np.savez(f, images=np.zeros((2, 16, 16, 1), np.uint8), labels=np.array([1, None], dtype=object))
    for argv in (["eval", "--images", f], ["eval", "--images", world["root"] / "samples.npz", "--ref", f],
                 ["train", "--data", f, *NET, "--steps", "1", "--out", world["scratch"] / f"run-{make}"],
                 ["prepare-data", f, "--resolution", "16", "--out", world["scratch"] / f"prep-{make}"]):
        # (string labels of a reference are not read: that eval fails on its 2 images instead)
        line = assert_fails_in_one_line(argv, world, *(() if make == "strlabels" else (str(f),)))
        assert "allow_pickle" not in line


def test_resume_of_a_folder_without_a_run_is_one_line(world):
    out = world["scratch"] / "no-run-here"
    assert_fails_in_one_line(["train", "--resume", *NET, "--steps", "1", "--out", out], world, "holds no run")
    assert not out.exists()


def test_a_second_trainer_on_a_locked_folder_is_one_line_naming_the_holder(world):
    from pixdiff.runlock import RunLock

    out = world["scratch"] / "locked"
    with RunLock(out):
        assert_fails_in_one_line(["train", *NET, "--steps", "1", "--batch", "2", "--quiet", "--out", out], world,
                           "is in use by", f"pid {os.getpid()}")
    assert not (out / "checkpoints").exists()


@pytest.fixture
def read_only(world, monkeypatch):
    """A folder nobody may write: chmod 0o555, and for root (whom chmod does not stop) os.access
    answers as it would for anyone else."""
    ro = world["root"] / "ro"
    if os.geteuid() == 0:
        real = os.access

        def access(path, mode, *a, **k):
            if mode & os.W_OK and Path(os.path.abspath(path)).is_relative_to(ro):
                return False
            return real(path, mode, *a, **k)

        monkeypatch.setattr(os, "access", access)
    return ro


@pytest.mark.parametrize("argv", [
    ["sample", "--ckpt", "@run", "--out", "{ro}/s.npz"],
    ["sample", "--ckpt", "@run", "--out", "{ro}/deeper/s.png"],
    ["eval", "--images", "@samples.npz", "--json", "{ro}/scores.json"],
    ["nll", "--ckpt", "@run", "--json", "{ro}/nll.json"],
    ["train", "--steps", "1", "--out", "{ro}/run"],
    ["train", "--steps", "1", "--out", "{ro}"],
    ["train-classifier", "--steps", "1", "--out", "{ro}/c"],
    ["prepare-data", "@folder", "--resolution", "16", "--out", "{ro}/d"],
])
def test_an_out_in_a_read_only_place_fails_before_any_work(argv, world, read_only, no_work):
    assert_fails_in_one_line([a.format(ro=read_only) for a in argv], world, "no write permission", str(read_only))


# ------------------------------------------------------------- tracebacks the fuzzing found, fixed


@pytest.mark.parametrize("dev", ["meta", "mps", "tpu", "", "cuda:7"])
def test_a_device_torch_knows_but_this_machine_cannot_use_is_one_line(dev, world):
    if dev == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    if dev == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert_fails_in_one_line(["sample", "--ckpt", "@run", "--n", "1", "--steps", "1", "--out", "@new/s.npz",
                        f"--device={dev}"], world, "device")


@pytest.mark.parametrize("argv", [
    ["sample", "--ckpt", "@run", "--out", "@new/s.npz"],
    ["eval", "--images", "@samples.npz"],
    ["nll", "--ckpt", "@run"],
    ["train-classifier", "--out", "@new/c"],
    ["train", "--print-config"],
])
@pytest.mark.parametrize("seed", [str(2**63), "9" * 30, "-1"])
def test_a_seed_torch_cannot_take_is_one_line(argv, seed, world, no_work):
    assert_fails_in_one_line([*argv, f"--seed={seed}"], world, "seed", "2**63")


@pytest.mark.parametrize("extra, needle", [
    (["--lr=-1e308"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--out", "@text.txt"], "is a file"),
])
def test_train_classifier_checks_lr_and_out_before_training(extra, needle, world, no_work):
    assert_fails_in_one_line(["train-classifier", "--steps", "1", "--out", "@new/c", *extra], world, needle)


@pytest.mark.parametrize("item, needle", [
    ("channels=x", "channels must be an integer"),
    ("channels=null", "channels must be an integer"),
    ("channel_mult=3", "channel_mult must be a list of integers"),
    ("attention_resolutions=16", "attention_resolutions must be a list of integers"),
    ("dropout=nan", "dropout must be a number"),  # a bare word is a string: JSON's NaN is NaN
    ("norm_groups=0", "norm_groups must be >= 1"),
    ("head_channels=0", "head_channels / num_heads must be >= 1"),
    ("channel_mult=[1,0]", "channel_mult must be positive"),
])
def test_network_overrides_of_the_wrong_type_or_zero_are_one_line(item, needle, world):
    assert_fails_in_one_line(["train", *NET, "--net", item, "--steps", "1", "--batch", "2", "--quiet",
                        "--out", "@new/run"], world, needle)


def test_info_sizes_the_mlp_preset(world):
    code, out, _ = run_cli(["info", "--preset", "mlp"], world)
    assert code == 0 and "parameters, on 2-D points" in out
    code, out, _ = run_cli(["info", "--preset", "mlp", "--json"], world)
    assert code == 0 and json.loads(out)["gflops_per_image"] is None


@pytest.mark.parametrize("content, needle", [
    (b"[1, 2]", "a config is a JSON object of sections"),
    (b'{"run": 5}', "config section [run] must be a JSON object"),
    (b"\xc0\x00binary", "is not text"),
])
def test_a_config_file_that_is_not_a_json_object_of_sections_is_one_line(content, needle, world):
    f = world["scratch"] / f"config-{abs(hash(content))}.json"
    f.write_bytes(content)
    assert_fails_in_one_line(["train", "--config", f, "--print-config"], world, needle)


@pytest.mark.parametrize("flags, needle", [
    (["--betas", "2", "3"], "--betas takes two numbers in [0, 1)"),
    (["--eps=-1"], "--eps must be a finite number >= 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    (["--grad-clip=-1"], "--grad-clip must be a finite number >= 0"),
    (["--ema-halflife", "nan"], "--ema-halflife must be a finite number >= 0"),
    (["--ema-rampup", "nan"], "ema_rampup must be >= 0"),
    (["--lr", "1e308"], "--lr must be a finite number > 0"),  # finite in float64, inf in Adam's float32
])
def test_optimizer_values_adam_refuses_are_refused_first(flags, needle, world):
    assert_fails_in_one_line(["train", *flags, "--print-config"], world, needle)


def test_a_ref_cache_that_cannot_be_written_is_refused_before_scoring(world, no_work):
    assert_fails_in_one_line(["eval", "--images", "@samples.npz", "--ref-cache", "@text.txt/ref.safetensors"], world,
                       "--ref-cache", "is a file, not a folder")


# ----------------------------------------------------------------- exit codes and promises (docs)


def _raising(exc):
    def f(*a, **k):
        raise exc
    return f


def test_exit_codes_of_main(world, monkeypatch):
    """docs/reliability.md lists these: 2 a user mistake, 3 a failed checkpoint write, 130 an
    interrupt outside the training loop, 1 a non-finite NLL."""
    import pixdiff.likelihood
    import pixdiff.train
    from pixdiff.checkpoint import CheckpointWriteError

    train = ["train", "--steps", "1", "--out", "@new/run", "--device", "cpu"]
    monkeypatch.setattr(pixdiff.train, "train", _raising(CheckpointWriteError("could not write checkpoint x (OSError: "
                                                                             "[Errno 28] No space left on device)")))
    code, _, err = run_cli(train, world)
    assert code == 3 and err.strip() == ("pixdiff train: error: could not write checkpoint x (OSError: [Errno 28] "
                                         "No space left on device)")
    monkeypatch.setattr(pixdiff.train, "train", _raising(KeyboardInterrupt()))
    code, _, err = run_cli(train, world)
    assert code == 130 and err.strip() == "pixdiff: interrupted"
    monkeypatch.setattr(pixdiff.likelihood, "checkpoint_nll",
                        lambda *a, **k: {"bits_per_dim": float("nan"), "ci95": float("nan"), "method": "elbo", "n": 2})
    code, out, _ = run_cli(["nll", "--ckpt", "@run", "--device", "cpu"], world)
    assert code == 1 and "nan" in out
    assert run_cli(["train", "--steps", "0", "--out", "@new/run"], world)[0] == 2
    assert run_cli(["train", "--no-such-flag"], world)[0] == 2
    assert run_cli(["info", "--help"], world)[0] == 0


def test_sigterm_and_sigint_ask_the_training_loop_to_stop():
    """Both signals set the flag the loop checks after each step (then it saves and exits 0; the
    SIGINT end to end is tests/test_train.py::test_sigint_saves_a_valid_checkpoint_and_exits_zero)."""
    import signal

    from pixdiff.train import _StopFlag

    for sig in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(sig)
        with _StopFlag() as stop:
            os.kill(os.getpid(), sig)
            assert stop.signal == sig
        assert signal.getsignal(sig) is before  # restored


def test_no_module_unpickles_or_executes_code_from_a_file():
    """Checkpoints are safetensors + JSON; numpy files are read with allow_pickle=False (numpy's
    default); torch.load only with weights_only=True."""
    import re

    import pixdiff

    root = Path(pixdiff.__file__).parent
    for f in sorted(root.rglob("*.py")):
        src = f.read_text()
        assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", src, re.M), f
        assert "allow_pickle=True" not in src, f
        assert not re.search(r"(?<![.\w])(eval|exec)\(", re.sub(r"#.*", "", src)), f
        for call in re.findall(r"torch\.load\([^)]*\)", src):
            assert "weights_only=True" in call, (f, call)


@pytest.mark.parametrize("argv", [
    ["sample", "--ckpt", "@run", "--n", "1", "--steps", "1", "--out", "@new/s.npz"],
    ["eval", "--images", "@samples.npz", "--metrics", "is", "--json", "@new/e.json"],
])
def test_a_full_disk_while_writing_an_output_is_one_line_and_leaves_nothing(argv, world, monkeypatch):
    import pixdiff.atomic

    def full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pixdiff.atomic, "atomic_write", full)
    monkeypatch.setattr(pixdiff.atomic, "atomic_write_text", lambda p, t: full(p, None))
    argv = [_resolve(a, world) for a in argv]
    line = assert_fails_in_one_line(argv, world, "could not write", "No space left on device")
    assert not Path(argv[-1]).exists(), line
