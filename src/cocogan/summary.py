"""Preset summaries: sizes and parameter counts, for `cocogan presets` and the docs."""

from __future__ import annotations

from typing import Any

import torch

from cocogan.budget import shape_networks
from cocogan.config import Config
from cocogan.presets import PRESETS


def parameter_counts(config: Config) -> dict[str, int]:
    """Parameters of G, of D without its heads, and of each head (networks built for their
    shapes only: instant, no memory, whatever the preset's size)."""
    generator, disc = shape_networks(config.model)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    heads = count(disc.spatial) + count(disc.content)
    return {"g_params": count(generator), "d_params": count(disc) - heads,
            "spatial_head_params": count(disc.spatial), "q_params": count(disc.content)}


def preset_rows() -> list[dict[str, Any]]:
    """One dict per preset with the fields `cocogan presets --json` promises."""
    rows = []
    for name, preset in PRESETS.items():
        config = preset.config()
        m, t = config.model, config
        rows.append({
            "name": name, "full_height": m.full_height, "full_width": m.full_width,
            "micro": m.micro, "macro": m.macro, "macro_width": m.macro_w, "coords": m.coords,
            "sampling": m.sampling, "batch": t.optim.batch, "z_dim": m.z_dim, "ngf": m.ngf,
            "ndf": m.ndf, "w_gp": t.loss.w_gp, "w_spatial": t.loss.w_spatial,
            "w_content": t.loss.w_content,
            **parameter_counts(config), "description": preset.description,
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of preset rows."""
    columns = [("name", "preset"), ("size", "full"), ("micro", "micro"), ("macro", "macro"),
               ("coords", "coords"), ("batch", "batch"), ("z_dim", "z"), ("widths", "ngf/ndf"),
               ("weights", "GP/S/C"), ("g", "G params"), ("d", "D params")]
    cells = []
    for r in rows:
        cells.append({
            "name": r["name"], "size": f"{r['full_height']}x{r['full_width']}",
            "micro": str(r["micro"]), "macro": f"{r['macro']}x{r['macro_width']}",
            "coords": r["coords"], "batch": str(r["batch"]), "z_dim": str(r["z_dim"]),
            "widths": f"{r['ngf']}/{r['ndf']}",
            "weights": f"{r['w_gp']:g}/{r['w_spatial']:g}/{r['w_content']:g}",
            "g": f"{r['g_params'] / 1e6:.2f}M", "d": f"{r['d_params'] / 1e6:.2f}M",
        })
    widths = {key: max(len(title), *(len(c[key]) for c in cells)) for key, title in columns}
    lines = ["  ".join(title.ljust(widths[key]) for key, title in columns)]
    lines.append("  ".join("-" * widths[key] for key, _ in columns))
    lines += ["  ".join(c[key].ljust(widths[key]) for key, _ in columns) for c in cells]
    return "\n".join(lines)
