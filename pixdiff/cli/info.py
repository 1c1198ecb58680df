"""`pixdiff info`: what is available (presets, samplers, schedules, weightings), a network preset's
size, or a summary of a run."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path

__all__ = ["add_parser", "run", "presets", "samplers", "schedules", "weightings", "run_summary"]

LISTS = ("presets", "samplers", "schedules", "weightings")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="list presets / samplers / schedules / weightings, size a preset, or summarise a run",
                       description="What is available, or what a run is. With no option: every list.",
                       epilog="examples:\n  pixdiff info --samplers\n  pixdiff info --preset sid2-s --resolution 256\n"
                              "  pixdiff info --ckpt runs/digits\n  pixdiff info --ckpt runs/digits --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", action="store_true", help="network presets: kind and parameters at their resolution")
    p.add_argument("--samplers", action="store_true", help="samplers: the paper each comes from, default steps")
    p.add_argument("--schedules", action="store_true", help="noise schedules (`pixdiff train --train-schedule`)")
    p.add_argument("--weightings", action="store_true", help="loss weightings (`pixdiff train --weighting`)")
    p.add_argument("--preset", metavar="NAME", help="one network preset: parameters and GFLOPs per image")
    p.add_argument("--resolution", type=int, default=None, help="resolution for --preset (default: the preset's)")
    p.add_argument("--ckpt", type=Path, metavar="RUN", help="summarise a run folder or checkpoint folder")
    p.add_argument("--json", action="store_true", help="machine-readable JSON instead of text")
    p.set_defaults(func=run)
    return p


# --- the lists: name -> one line ------------------------------------------------------------------


def _first_line(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split()) if doc else ""


def _first_sentence(text: str, width: int = 110) -> str:
    """Up to the first full stop that ends a sentence (not "App." or "et al."), at most ``width``
    characters."""
    text = text.strip()
    for m in re.finditer(r"\.\s+(?=[A-Z])", text):
        word = re.search(r"(\S+)$", text[:m.start()]).group(1)
        if not (word.isalpha() and len(word) <= 3):
            text = text[:m.start() + 1]
            break
    if len(text) > width:
        text = text[:width].rsplit(" ", 1)[0] + " …"
    return text


def _leading_comment(fn) -> str:
    """The comment block that opens a function's body (where pixdiff.weighting explains each one)."""
    try:
        lines = inspect.getsource(fn).splitlines()[1:]
    except (OSError, TypeError):
        return ""
    block = []
    for line in lines:
        s = line.strip()
        if not s.startswith("#"):
            break
        block.append(s.lstrip("#").strip())
    return " ".join(block)


def presets() -> dict[str, str]:
    import torch

    from pixdiff import nets

    out = {}
    for name in nets.available():
        cfg = nets.preset_config(name)
        with torch.device("meta"):  # shapes only: no memory, no time
            n = sum(p.numel() for p in nets.from_config(cfg).parameters())
        where = f"{cfg.in_channels}-d points" if cfg.kind == "mlp" else f"{cfg.in_channels}×{cfg.resolution}×{cfg.resolution}"
        out[name] = f"{cfg.kind}, {n / 1e6:.2f} M parameters at {where}"
    return out


def samplers() -> dict[str, str]:
    from pixdiff import samplers as S

    out = {}
    for name in S.available():
        spec = S.get(name)
        paper = getattr(spec, "paper", None) or getattr(spec, "seed", "")  # the registry's citation field
        out[name] = f"{paper} (default {spec.steps} steps, {spec.grid} grid)"
    return out


def schedules() -> dict[str, str]:
    from pixdiff import schedules as S

    def doc(name):  # the registry entry's own docstring (a class, or a function that builds one), else the class's
        return _first_line(getattr(S._REGISTRY.get(name), "__doc__", None)) or _first_line(type(S.get(name)).__doc__)

    return {name: _first_sentence(doc(name)) for name in S.available()}


def weightings() -> dict[str, str]:
    from pixdiff import vlb, weighting

    out = {name: _first_sentence(_first_line(fn.__doc__) or _leading_comment(fn))
           for name, fn in weighting.WEIGHTINGS.items()}
    out["vlb"] = _first_sentence(_first_line(vlb.__doc__)).rstrip(".") + "; needs a discrete schedule"
    return out


def _print_table(rows: dict[str, str]) -> None:
    w = max(map(len, rows), default=0)
    for name, text in rows.items():
        print(f"{name:<{w}}  {text}".rstrip())


# --- one preset, one run --------------------------------------------------------------------------


def preset_size(name: str, resolution: int | None = None) -> dict:
    import torch

    from pixdiff import nets

    cfg = nets.preset_config(name, **({"resolution": resolution} if resolution is not None else {}))
    with torch.device("meta"):
        n = sum(p.numel() for p in nets.from_config(cfg).parameters())
    if cfg.kind == "mlp":  # 2-D points: no image size, and no FLOP counter for the MLP
        return {"preset": name, "kind": cfg.kind, "parameters": n, "resolution": None, "gflops_per_image": None}
    return {"preset": name, "kind": cfg.kind, "parameters": n, "resolution": cfg.resolution,
            "gflops_per_image": nets.count_flops(cfg) / 1e9}


def _last_log(path: Path) -> dict | None:
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: take the one before
            continue
    return None


def run_summary(path: str | Path) -> dict:
    """A run's facts: where it is, how far, the network, EMA, data, loss and the last log line."""
    from pixdiff import checkpoint as ckpt_io

    ck = ckpt_io.load(path)
    run_dir = ck.path.parent.parent if ck.path.parent.name == "checkpoints" else Path(path)
    st, meta = ck.state, ck.state.get("meta", {})
    params = sum(v.numel() for v in ck.model.values())
    out = {"path": str(run_dir), "checkpoint": str(ck.path), "written": st.get("time"), "images": st["images"],
           "step": st.get("step"), "parameters": params, "last_log": _last_log(run_dir / "log.jsonl")}
    if st.get("kind") == "classifier":
        c = st["config"]
        out.update(kind="noisy classifier", images_planned=c["steps"] * c["batch"],
                   network={"kind": st["net_kind"], "preset": c["preset"]}, data={"name": st["data"]},
                   schedule=st["schedule"], num_classes=meta.get("num_classes"))
        return out
    if st.get("kind", "diffusion") != "diffusion":  # a distilled student or a baseline family
        cfg = st.get("config") or {}
        planned = (cfg.get("run") or {}).get("images") or cfg.get("images")
        data = cfg.get("data")
        out.update(kind=st["kind"], images_planned=planned,
                   network={"kind": meta.get("net_kind") or meta.get("family") or st["kind"], "preset": None,
                            "overrides": meta.get("net_config") or {}},
                   data={"name": data.get("name") if isinstance(data, dict) else data,
                         "dataset": meta.get("dataset"), "shape": meta.get("data_shape"),
                         "num_classes": meta.get("num_classes")},
                   sampler=meta.get("sampler"), steps=meta.get("steps"), config=cfg)
        return out
    cfg = st["config"]
    m, d, o, loss = cfg["model"], cfg["data"], cfg["optim"], cfg["loss"]
    out.update(
        kind="diffusion", images_planned=cfg["run"]["images"],
        network={"kind": meta.get("net_kind"), "preset": m["preset"], "overrides": m.get("overrides", {})},
        parameterization=m["parameterization"],
        ema={"halflife_images": None if o.get("ema_decay") is not None else o.get("ema_halflife_images"),
             "decay": o.get("ema_decay"), "rampup": o.get("ema_rampup")},
        data={"name": d["name"], "dataset": meta.get("dataset"), "shape": meta.get("data_shape"),
              "num_classes": meta.get("num_classes"), "conditional": d.get("conditional"),
              "p_uncond": d.get("p_uncond")},
        loss={"weighting": loss.get("weighting"), "schedule": loss.get("schedule")},
        optim={"lr": o["lr"], "batch": o["batch"]}, config=cfg)
    return out


def _format_summary(s: dict) -> list[str]:
    pct = 100.0 * s["images"] / s["images_planned"] if s.get("images_planned") else float("nan")
    planned = f"{s['images_planned']:,} planned ({pct:.0f} %)" if s.get("images_planned") else "? planned"
    rows = [("run", s["path"]),
            ("checkpoint", s["checkpoint"] + (f" (written {s['written']})" if s.get("written") else "")),
            ("images", f"{s['images']:,} seen of {planned}"
                       + (f", step {s['step']:,}" if s.get("step") is not None else ""))]
    net = s["network"]
    ov = ", ".join(f"{k}={json.dumps(v)}" for k, v in (net.get("overrides") or {}).items())
    origin = f" from preset {net['preset']}" if net.get("preset") else ""
    rows.append(("network", f"{net['kind']}{origin}" + (f" ({ov})" if ov else "") + f", {s['parameters']:,} parameters"))
    if s["kind"] not in ("diffusion", "noisy classifier"):
        d = s["data"]
        shape = "×".join(map(str, d["shape"])) if d.get("shape") else "?"
        rows.append(("kind", f"{s['kind']} run (`pixdiff sample` / `pixdiff eval` read it)"
                     + (f", samples with {s['sampler']}" if s.get("sampler") else "")
                     + (f", {s['steps']} steps" if s.get("steps") else "")))
        rows.append(("data", f"{d.get('dataset') or d.get('name')} ({shape}), {d.get('num_classes') or 0} classes"))
    elif s["kind"] == "noisy classifier":
        rows += [("kind", "noisy classifier (for `pixdiff sample --classifier`)"),
                 ("data", f"{s['data']['name']}, {s['num_classes']} classes"), ("schedule", s["schedule"])]
    else:
        rows.append(("predicts", f"{s['parameterization']} (parameterization)"))
        e = s["ema"]
        ema = f"decay {e['decay']} per step" if e["decay"] is not None else f"half-life {e['halflife_images']:,.0f} images"
        rows.append(("EMA", ema + (f", ramp-up {e['rampup']}" if e["rampup"] else ", no ramp-up")))
        d = s["data"]
        shape = "×".join(map(str, d["shape"])) if d.get("shape") else "?"
        cls = (f", {d['num_classes']} classes, label dropout {d['p_uncond']}" if d.get("num_classes")
               else ", unconditional")
        rows.append(("data", f"{d['dataset'] or d['name']} ({shape}){cls}"))
        rows.append(("loss", f"{s['loss']['weighting']} weighting, {s['loss']['schedule']} training schedule"))
        rows.append(("optimizer", f"lr {s['optim']['lr']}, batch {s['optim']['batch']}"))
    log = s.get("last_log")
    if log:
        rows.append(("last log", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in log.items())))
    else:
        rows.append(("last log", "none (no log.jsonl beside the checkpoints)"))
    w = max(len(r[0]) for r in rows)
    return [f"{k:<{w}}  {v}" for k, v in rows]


def run(args: argparse.Namespace) -> int:
    if args.ckpt is not None:
        s = run_summary(args.ckpt)
        print(json.dumps(s, indent=2) if args.json else "\n".join(_format_summary(s)))
        return 0
    if args.preset:
        r = preset_size(args.preset, args.resolution)
        if args.json:
            print(json.dumps(r, indent=2))
        else:
            size = ("on 2-D points" if r["gflops_per_image"] is None else
                    f"{r['gflops_per_image']:.4g} GFLOPs per image at {r['resolution']}×{r['resolution']}")
            print(f"preset {r['preset']}: {r['kind']}, {r['parameters']:,} parameters, {size}")
        return 0
    wanted = [name for name in LISTS if getattr(args, name)] or list(LISTS)
    tables = {name: globals()[name]() for name in wanted}
    if args.json:
        print(json.dumps(tables, indent=2))
        return 0
    for i, (name, rows) in enumerate(tables.items()):
        if len(tables) > 1:
            print(("\n" if i else "") + f"{name}:")
        _print_table(rows)
    return 0
