"""Preset summaries: sizes and parameter counts, for `cocogan presets` and the docs."""

from __future__ import annotations

from typing import Any

from cocogan.budget import shape_networks
from cocogan.config import Config
from cocogan.presets import PRESETS


def parameter_counts(config: Config) -> dict[str, int]:
    """Parameters of G, of D without its heads, and of each head (networks built for their
    shapes only: instant, no memory, whatever the preset's size)."""
    generator, disc = shape_networks(config.model)
    g, d, spatial, q = (sum(p.numel() for p in module.parameters())
                        for module in (generator, disc, disc.spatial, disc.content))
    return {"g_params": g, "d_params": d - spatial - q, "spatial_head_params": spatial,
            "q_params": q}


def preset_rows() -> list[dict[str, Any]]:
    """One dict per preset with the fields `cocogan presets --json` promises."""
    rows = []
    for name, preset in PRESETS.items():
        config = preset.config()
        m, loss = config.model, config.loss
        rows.append({
            "name": name, "full_height": m.full_height, "full_width": m.full_width,
            "micro": m.micro, "macro": m.macro, "macro_width": m.macro_w, "coords": m.coords,
            "sampling": m.sampling, "batch": config.optim.batch, "z_dim": m.z_dim, "ngf": m.ngf,
            "ndf": m.ndf, "w_gp": loss.w_gp, "w_spatial": loss.w_spatial,
            "w_content": loss.w_content,
            **parameter_counts(config), "description": preset.description,
        })
    return rows


# title -> cell of each column of the presets table (G and D parameters in millions)
COLUMNS = {"preset": "{name}", "full": "{full_height}x{full_width}", "micro": "{micro}",
           "macro": "{macro}x{macro_width}", "coords": "{coords}", "batch": "{batch}",
           "z": "{z_dim}", "ngf/ndf": "{ngf}/{ndf}",
           "GP/S/C": "{w_gp:g}/{w_spatial:g}/{w_content:g}",
           "G params": "{g_M:.2f}M", "D params": "{d_M:.2f}M"}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of preset rows (left-aligned columns, a dashed rule under the titles)."""
    values = ({**r, "g_M": r["g_params"] / 1e6, "d_M": r["d_params"] / 1e6} for r in rows)
    table = [list(COLUMNS), *([cell.format(**v) for cell in COLUMNS.values()] for v in values)]
    widths = [max(map(len, column)) for column in zip(*table, strict=True)]
    table.insert(1, ["-" * width for width in widths])
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
                     for line in table)
