"""Synthetic tidy frames with the schemas the plots and findings expect (for tests and demos).

The numbers are random but shaped like a real study (GA's unlearning G-effect negative and
large, importance weights falling with likelihood, ...), so every plot and finding has
something to show. Build a demo report without training anything::

    python -m analyses.report --synthetic /tmp/demo_report.html
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = ["ga", "gd", "npo", "wga", "tnpo", "simsat", "simimp", "satimp", "wagle_gd", "random_gd"]


def frames(methods: list[str] | None = None, *, steps: int = 6, layers: int = 4, instances: int = 8,
           seed: int = 0) -> dict[str, pd.DataFrame]:
    """A dict of tidy frames keyed like :data:`analyses.pipeline.FRAMES`."""
    rng = np.random.default_rng(seed)
    methods = methods or METHODS
    groups = ["embed"] + [f"layer.{i}" for i in range(layers)] + ["final_norm", "lm_head"]
    layer_rows, pg_rows, tw_rows, trade_rows, traj_rows = [], [], [], [], []
    for k, method in enumerate(methods):
        scale = 10.0 ** (2 - k % 3)
        for step in range(1, steps + 1):
            decay = np.exp(-step / 3)
            for probe, sign in (("forget", -1.0), ("retain", -0.3 + 0.1 * k)):
                for j, group in enumerate(groups):
                    depth = 1.0 / (1 + j)  # shallow layers carry more
                    value = sign * scale * decay * depth * (1 + 0.2 * rng.standard_normal())
                    if group == "embed":
                        value *= 0.01
                    layer_rows.append((method, step, probe, group, value))
            for i in range(instances):
                pg_rows.append((method, step, i, -abs(rng.normal(scale, scale / 3)),
                                rng.normal(0, scale / 3), float(rng.uniform(0.2, 1.0))))
        p = rng.uniform(0, 1, 400)
        if method in ("wga", "simsat", "tnpo"):
            w = p ** 2
        elif method == "simimp":
            w = (1 - p) ** 1
        elif method == "satimp":
            w = p ** 2 * (1 - p) ** 0.5
        else:
            w = np.ones_like(p)
        tw_rows += [(method, 1 + i % steps, i % instances, float(pi), float(wi)) for i, (pi, wi) in enumerate(zip(p, w))]
        speed, cost = rng.uniform(0.5, 1.5), rng.uniform(0.2, 1.0)
        traj_rows += [(method, s_, 0.9 * np.exp(-speed * s_ / steps), 0.9 * np.exp(-cost * speed * s_ / steps / 3),
                       0.5 * np.exp(-cost * s_ / steps / 2)) for s_ in range(0, steps + 1, 2)]
        trade_rows.append((method, False, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9),
                           10 ** rng.uniform(-6, -1), rng.uniform(0.2, 0.5)))
    trade_rows += [("target", True, 0.9, 0.9, 1e-8, 0.5), ("retain", True, 0.1, 0.88, 1.0, 0.5)]
    layer = pd.DataFrame(layer_rows, columns=["method", "step", "probe", "group", "value"])
    steps_frame = layer.groupby(["method", "step", "probe"], as_index=False)["value"].sum()
    steps_frame["direction_norm"] = rng.uniform(0.5, 2.0, len(steps_frame))
    steps_frame["per_norm"] = steps_frame["value"] / steps_frame["direction_norm"]
    modules = layer[layer["group"].str.startswith("layer")].assign(layer=lambda f: f["group"])
    modules = pd.concat([modules.assign(module="attn", value=modules["value"] * 0.4),
                         modules.assign(module="mlp", value=modules["value"] * 0.6)]).drop(columns="group")
    mask_rows = []
    for mask in ("wagle", "magnitude", "random"):
        for group in groups:
            for module in (("attn", "mlp") if group.startswith("layer") else (group,)):
                density = 0.5 if mask == "random" else float(rng.uniform(0.1, 0.9))
                mask_rows.append((mask, group, module, density, 1000))
    tokens = ["The", " author", " was", " born", " in", " Paris", "."]
    attr_rows = [(e, model, pos, tok, float(rng.normal()))
                 for e in range(2) for model in ("before", methods[0], methods[-1])
                 for pos, tok in enumerate(tokens)]
    metrics = pd.DataFrame(trade_rows, columns=["method", "reference", "forget_es", "retain_es",
                                                 "forget_quality", "model_utility"])
    return {
        "geffect_steps": steps_frame,
        "geffect_layers": layer,
        "geffect_modules": modules,
        "trajectory": pd.DataFrame(traj_rows, columns=["method", "step", "forget_es", "retain_es", "model_utility"]),
        "pg_effects": pd.DataFrame(pg_rows, columns=["method", "step", "instance", "unlearning",
                                                     "retaining", "weight"]),
        "token_weights": pd.DataFrame(tw_rows, columns=["method", "step", "instance", "likelihood", "weight"]),
        "mask_density": pd.DataFrame(mask_rows, columns=["mask", "group", "module", "density", "numel"]),
        "metrics": metrics,
        "token_attribution": pd.DataFrame(attr_rows, columns=["example", "model", "position", "token",
                                                              "attribution"]),
    }
