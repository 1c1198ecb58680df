"""Few-step students of diffusion models: distillation and consistency training.

One module per method, each following its paper's algorithm (equation numbers in its docstring):

    ct            consistency training, improved CT's choices (Song et al. 2023, Alg. 3;
                  Song & Dhariwal 2023)                                         pixdiff.distill.ct
    cd            consistency distillation (Song et al. 2023, Alg. 2)           pixdiff.distill.cd
    progressive   progressive distillation (Salimans & Ho 2022, Alg. 2)         pixdiff.distill.progressive
    moment        moment-matching distillation, alternating (Salimans et al. 2024, Alg. 2)
                                                                                pixdiff.distill.moment
    genie         GENIE's distilled derivative head + TTM-2 sampler (Dockhorn et al. 2022)
                                                                                pixdiff.distill.genie

``pixdiff.distill.common`` holds the loop (checkpoints, bit-exact resume), the teachers (a run, or
the exact denoiser of a 2-D toy) and the student loader behind ``pixdiff sample`` / ``eval``.
``pixdiff distill --method M --teacher RUN|mixture --out DIR`` is the program's front door.
"""

from __future__ import annotations

# name -> "module:class"; only finished methods are listed (the CLI's --method choices)
METHODS: dict[str, str] = {
    "ct": "pixdiff.distill.ct:ConsistencyTraining",
    "cd": "pixdiff.distill.cd:ConsistencyDistillation",
    "progressive": "pixdiff.distill.progressive:ProgressiveDistillation",
    "moment": "pixdiff.distill.moment:MomentMatching",
    "genie": "pixdiff.distill.genie:GenieDistillation",
}

from pixdiff.distill.common import DistillConfig, distill, load_student  # noqa: E402

__all__ = ["METHODS", "DistillConfig", "distill", "load_student"]
