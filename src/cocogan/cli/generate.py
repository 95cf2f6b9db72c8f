"""`cocogan generate <app>`: the applications of :mod:`cocogan.apps` from the command line.

One runner loads the model and claims ``--out`` (the write rule) before any work; each app of
``cocogan.apps.APPLICATIONS`` adds only its own flags (``_add_NAME``) and work (``_run_NAME``,
returning the files it wrote)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cocogan import shipped
from cocogan.apps import APPLICATIONS, DEFAULT_CHUNK
from cocogan.apps.backend import BACKENDS, DEFAULT_BACKEND, use_backend
from cocogan.apps.beyond import Extension, beyond, extended_rect
from cocogan.apps.huge import FORMATS, huge_budget, patch_seconds, plan_huge, write_huge
from cocogan.apps.inspire import check_patch, content_warning, crop_patch, inspire, macro_size
from cocogan.apps.io import Provenance, parse_numbers, parse_seeds, save_png, write_sidecar
from cocogan.apps.panorama import panoramas, wrap_view
from cocogan.apps.viewport import cartesian_box, covering_rect, cylindrical_box, viewport
from cocogan.budget import Budget, BudgetError, check_budget, image_bytes, render_bytes
from cocogan.checkpoint import load_model, resolve_checkpoint
from cocogan.config import Config
from cocogan.model import CocoGAN
from cocogan.outputs import claim_file, claim_folder
from cocogan.render import GPU_CHUNK, axis_coordinates, default_chunk, latents, trained_rect
from cocogan.training.device import select_device


@dataclass
class Context:
    """What every app needs: the loaded run, where to write, and how to sample."""

    app: str
    config: Config
    model: CocoGAN
    provenance: Provenance
    out: Path
    raw: bool
    chunk: int
    force: bool = False  # --force: run even when the budget says it will not fit

    def seeds(self, text: str, flag: str = "--seeds") -> tuple[list[int], torch.Tensor]:
        seeds = parse_seeds(text, flag)
        return seeds, latents(seeds, self.config.model.z_dim, self.model.device)

    def check_budget(self, budget: Budget, destination: Path | None = None) -> None:
        """Refuse (unless --force) when memory or disk will not suffice."""
        try:
            check_budget(budget, destination or self.out)
        except BudgetError as error:
            if not self.force:
                raise
            _note(f"{error} (--force: going on)")

    def fits(self, what: str, count: int, height: int, width: int,
             rendered: int | None = None) -> None:
        """The budget of ``count`` images of height x width, ``rendered`` (default all) at once."""
        self.check_budget(Budget(f"{self.app}, {what}", render_bytes(
            count if rendered is None else rendered, height, width),
            image_bytes(count, height, width)))

    def write(self, name: str, image: Any, **fields: Any) -> Path:
        """``image`` as OUT/NAME (PNG) with its sidecar."""
        path = save_png(self.out / name, image)
        write_sidecar(path, self.provenance, app=self.app, **fields)
        return path

    @property
    def size(self) -> tuple[int, int]:
        return self.config.model.full_height, self.config.model.full_width


RUN_HELP = ("run directory (newest checkpoint), .safetensors checkpoint or shipped model name "
            "(cocogan models)")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="generate images with a trained run (full, viewport, panorama, ...)",
        description="Generate with a trained run. Each APP samples from the EMA generator in "
        "eval mode (--raw: the raw one) and writes PNG/GIF files, each with a JSON sidecar "
        "(checkpoint, step, seed, coordinates), to --out (default RUN/generated/APP, or "
        "./generated/NAME/APP for a shipped model). See docs/applications.md.")
    apps = parser.add_subparsers(dest="app", required=True, metavar="APP")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    common.add_argument("--out", type=Path, default=None,
                        help="output folder (default: RUN/generated/<app>; for a shipped model "
                        "./generated/NAME/<app>)")
    add_sampling_flags(common)
    common.add_argument("--chunk", type=int, default=None,
                        help=f"micro patches per forward pass (default {DEFAULT_CHUNK} on a CPU, "
                        f"{GPU_CHUNK} on a GPU); lower it if memory runs out")
    common.add_argument("--force", action="store_true",
                        help="run even if the up-front estimate says memory/disk will not suffice")
    for app, help_line in APPLICATIONS.items():
        _app(app, "add")(apps.add_parser(app, parents=[common], help=help_line,
                                         description=help_line))


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """--device, --raw and --backend, shared by every command that samples a trained G."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--raw", action="store_true",
                        help="sample from the raw generator instead of its EMA")
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help=f"what runs G (default {DEFAULT_BACKEND}); onnxruntime: its graph, "
                        "equal to 1e-4 (pip install 'cocogan[export]'); auto: the faster one")


def run(args: argparse.Namespace) -> int:
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1 micro patch per forward pass, got {args.chunk}")
    device = select_device(args.device)
    checkpoint = resolve_checkpoint(args.run)
    config, model, step = load_model(checkpoint, device)
    ctx = Context(
        app=args.app, config=config, model=model,
        out=args.out or default_out(args.run, checkpoint, args.app),
        provenance=Provenance(str(checkpoint.resolve()), step, config.name,
                              "raw" if args.raw else "ema"),
        raw=args.raw, chunk=args.chunk or default_chunk(device), force=args.force)
    if getattr(args, "output", None) is None:
        claim_folder(ctx.out, "--out")  # the write rule (cocogan.outputs), before any work
    use_backend(model, args.backend, raw=args.raw, note=_note)
    written = _app(args.app, "run")(args, ctx)
    folders = sorted({str(p.parent) for p in written})
    print(f"cocogan generate {args.app}: wrote {len(written)} file(s) to {', '.join(folders)}"
          + (f" (e.g. {written[0].name})" if written else ""))
    return 0


def default_out(run: str, checkpoint: Path, app: str) -> Path:
    """RUN/generated/APP (the checkpoint's run folder); for a shipped model ./generated/NAME/APP
    in the current folder, never the package's."""
    local = shipped.output_folder(run)
    if local is not None:
        return local / app
    base = Path(run) if Path(run).is_dir() else checkpoint.parent
    if base.name == "checkpoints":
        base = base.parent
    return base / "generated" / app


def _app(name: str, part: str) -> Callable:  # _add_NAME or _run_NAME (module docstring)
    return globals()[f"_{part}_{name}"]


def _note(message: str) -> None:
    print(f"cocogan generate: {message}", file=sys.stderr)


def _seeds_flag(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--seeds", default=default, help=f"seeds, e.g. 0-15,20 (default {default})")


def _add_full(parser: argparse.ArgumentParser) -> None:
    _seeds_flag(parser, "0-7")
    parser.add_argument("--grid", action="store_true", help="also write all images as grid.png")
    parser.add_argument("--grid-cols", type=int, default=None, help="grid columns (default ~sqrt)")


def _run_full(args: argparse.Namespace, ctx: Context) -> list[Path]:
    from cocogan.apps import full_images, images_per_pass
    from cocogan.apps.io import image_grid

    seeds, z = ctx.seeds(args.seeds)
    per_pass = images_per_pass(ctx.model, ctx.chunk)
    kept = len(seeds) if args.grid else 0  # --grid keeps every image for the grid
    ctx.fits(f"{len(seeds)} image(s) of {ctx.size[0]}x{ctx.size[1]}", len(seeds) + kept,
             *ctx.size, rendered=per_pass + kept)
    coordinates = axis_coordinates(ctx.model.coords, trained_rect(ctx.model.coords))
    written, images = [], []
    for start in range(0, len(seeds), per_pass):  # bounded memory for long seed lists
        batch = full_images(ctx.model, z[start:start + per_pass], raw=ctx.raw, chunk=ctx.chunk)
        written += [ctx.write(f"seed{seed:04d}.png", image, seed=seed, coordinates=coordinates)
                    for seed, image in zip(seeds[start:start + per_pass], batch, strict=True)]
        images += [batch.cpu()] if args.grid else []
    if args.grid:
        written.append(ctx.write("grid.png", image_grid(torch.cat(images), args.grid_cols),
                                 seeds=seeds, coordinates=coordinates))
    return written


def _add_viewport(parser: argparse.ArgumentParser) -> None:
    _seeds_flag(parser, "0")
    parser.add_argument("--box", help="Cartesian runs: pixel box TOP,LEFT,HEIGHT,WIDTH")
    parser.add_argument("--angles", help="cylindrical runs: START,END in degrees (0 = left "
                        "edge; END < START crosses the seam)")
    parser.add_argument("--rows", help="cylindrical runs: pixel rows TOP,BOTTOM (default all)")


def _run_viewport(args: argparse.Namespace, ctx: Context) -> list[Path]:
    coords = ctx.model.coords
    if coords.cyclic:
        if args.box or not args.angles:
            raise ValueError("viewport on a cylindrical run takes --angles START,END (degrees) "
                             "and optionally --rows TOP,BOTTOM, not --box")
        start, end = parse_numbers(args.angles, "--angles", (2,), float)
        top, bottom = parse_numbers(args.rows, "--rows", (2,)) if args.rows else (0, None)
        box = cylindrical_box(coords, start, end, top, bottom)
    else:
        if args.angles or args.rows or not args.box:
            raise ValueError("viewport on a cartesian run takes --box TOP,LEFT,HEIGHT,WIDTH "
                             "(pixels), not --angles/--rows")
        box = cartesian_box(coords, *parse_numbers(args.box, "--box", (4,)))
    seeds, z = ctx.seeds(args.seeds)
    ctx.fits(f"{len(seeds)} view(s) of {box.height}x{box.width}", len(seeds), box.height, box.width)
    views = viewport(ctx.model, z, box, raw=ctx.raw, chunk=ctx.chunk)
    rect = covering_rect(coords, box)
    return [ctx.write(f"viewport-seed{seed:04d}.png", view, seed=seed, box=vars(box),
                      patches_computed=rect.count, patches_full_image=coords.grid_h * coords.grid_w,
                      coordinates=axis_coordinates(coords, rect))
            for seed, view in zip(seeds, views, strict=True)]


def _add_panorama(parser: argparse.ArgumentParser) -> None:
    _seeds_flag(parser, "0-3")
    parser.add_argument("--start", type=float, default=0.0, help="view start angle, degrees")
    parser.add_argument("--degrees", type=float, default=720.0,
                        help="view width in degrees (default 720: pasted twice)")


def _run_panorama(args: argparse.Namespace, ctx: Context) -> list[Path]:
    seeds, z = ctx.seeds(args.seeds)
    if not (math.isfinite(args.degrees) and math.isfinite(args.start)) or args.degrees <= 0:
        raise ValueError(f"--start and --degrees must be finite and --degrees positive, got "
                         f"{args.start:g}, {args.degrees:g}")
    height, width = ctx.size
    view = max(1, round(args.degrees / 360.0 * width))
    ctx.fits(f"{len(seeds)} view(s) of {height}x{view}", len(seeds), height, width + view)
    full = panoramas(ctx.model, z, raw=ctx.raw, chunk=ctx.chunk)
    views = wrap_view(full, args.start, args.degrees)
    coordinates = axis_coordinates(ctx.model.coords, trained_rect(ctx.model.coords))
    written = []
    for seed, image, view in zip(seeds, full, views, strict=True):
        stem = f"panorama-seed{seed:04d}"
        written += [ctx.write(f"{stem}.png", image, seed=seed, degrees=[0, 360],
                              coordinates=coordinates),
                    ctx.write(f"{stem}-{args.degrees:g}deg.png", view, seed=seed,
                              degrees=[args.start, args.start + args.degrees],
                              coordinates=coordinates)]
    return written


def _add_interpolate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=("micro", "spatial", "full"),
                        help="micro: fixed position, z slerped; spatial: fixed z, coordinate "
                        "moved; full: z slerped, every patch regenerated")
    parser.add_argument("--seeds", default=None,
                        help="A,B for micro/full (default 0,1); one seed for spatial (default 0)")
    parser.add_argument("--frames", type=int, default=8, help="frames, endpoints included")
    parser.add_argument("--position", help="micro: grid position ROW,COL in micro patches "
                        "(default the centre)")
    parser.add_argument("--start", default="-1,-1", help="spatial: start coordinate Y,X in "
                        "[-1, 1] (x is the angle for cylindrical runs)")
    parser.add_argument("--end", default="1,1", help="spatial: end coordinate Y,X")
    parser.add_argument("--fps", type=float, default=8.0, help="GIF frames per second")


def _run_interpolate(args: argparse.Namespace, ctx: Context) -> list[Path]:
    from cocogan.apps import full_interpolation, micro_interpolation, spatial_interpolation
    from cocogan.apps.interpolate import spatial_path
    from cocogan.apps.io import image_grid, save_gif

    wanted = 1 if args.mode == "spatial" else 2
    seeds, z = ctx.seeds(args.seeds or ("0" if wanted == 1 else "0,1"))
    if len(seeds) != wanted:
        raise ValueError(f"--seeds: interpolate {args.mode} takes {wanted} seed(s), "
                         f"got {len(seeds)}")
    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2 (start and end), got {args.frames}")
    if not math.isfinite(args.fps) or args.fps <= 0:
        raise ValueError(f"--fps must be a positive number, got {args.fps}")
    ctx.fits(f"{args.frames} frames of {ctx.size[0]}x{ctx.size[1]}", 2 * args.frames, *ctx.size)
    coords, extra = ctx.model.coords, {}
    if args.mode == "micro":
        row, col = (parse_numbers(args.position, "--position", (2,), float) if args.position
                    else (coords.grid_h // 2, coords.grid_w // 2))
        frames = micro_interpolation(ctx.model, z[0], z[1], row, col, args.frames, raw=ctx.raw)
        extra = {"position": [row, col]}
    elif args.mode == "spatial":
        start = parse_numbers(args.start, "--start", (2,), float)
        end = parse_numbers(args.end, "--end", (2,), float)
        frames = spatial_interpolation(ctx.model, z[0], start, end, args.frames, raw=ctx.raw)
        rows, cols = spatial_path(coords, start, end, args.frames)
        extra = {"start": start, "end": end, "grid_rows": rows, "grid_cols": cols}
    else:
        frames = full_interpolation(ctx.model, z[0], z[1], args.frames, raw=ctx.raw,
                                    chunk=ctx.chunk)
    stem = f"interpolate-{args.mode}-" + "-".join(f"{s:04d}" for s in seeds)
    gif = save_gif(ctx.out / f"{stem}.gif", frames, fps=args.fps)
    strip = ctx.write(f"{stem}.png", image_grid(frames, columns=len(frames), pad=1),
                      mode=args.mode, seeds=seeds, frames=len(frames), gif=gif.name, **extra)
    return [strip, gif]


def _add_inspire(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="real image of the run's full size")
    parser.add_argument("--box", help="with --image: macro patch corner TOP,LEFT in pixels "
                        "(TOP,LEFT,HEIGHT,WIDTH also accepted if it is the macro size)")
    parser.add_argument("--patch", type=Path, help="or a macro-patch image file")


def _run_inspire(args: argparse.Namespace, ctx: Context) -> list[Path]:
    from cocogan.apps.io import draw_box, load_image, to_uint8

    height, width = macro_size(ctx.model)
    true_box = None
    if args.patch and not args.image and not args.box:
        patch, stem = check_patch(ctx.model, load_image(args.patch)), args.patch.stem
    elif args.image and args.box and not args.patch:
        values = parse_numbers(args.box, "--box", (2, 4))
        if len(values) == 4 and tuple(values[2:]) != (height, width):
            raise ValueError(f"--box size {values[2]}x{values[3]} must be the run's macro patch "
                             f"size {height}x{width}")
        image = load_image(args.image)
        patch, stem, true_box = crop_patch(ctx.model, image, *values[:2]), args.image.stem, values
    else:
        raise ValueError("inspire takes --image FILE --box TOP,LEFT, or --patch FILE")
    warning = content_warning(ctx.config)  # after the inputs are known to be valid
    if warning:
        print(f"cocogan generate inspire: warning: {warning}", file=sys.stderr)
    result = inspire(ctx.model, patch[None].to(ctx.model.device), raw=ctx.raw, chunk=ctx.chunk)
    top, left, cyclic = int(result.top[0]), int(result.left[0]), ctx.model.coords.cyclic
    full = to_uint8(result.full[0])

    def estimated(picture: Any) -> Any:
        return draw_box(picture, top, left, height, width, (0, 96, 255), wrap=cyclic)

    prefix = ctx.out / f"inspire-{stem}"
    written = [save_png(f"{prefix}-input.png", patch),
               save_png(f"{prefix}-position.png", estimated(full)),
               save_png(f"{prefix}-macro.png", result.macro[0]),
               save_png(f"{prefix}-full.png", full)]
    if true_box is not None:
        real = draw_box(to_uint8(image), true_box[0], true_box[1], height, width, (255, 0, 0),
                        wrap=cyclic)
        written.append(save_png(f"{prefix}-real.png", estimated(real)))
    write_sidecar(f"{prefix}.json", ctx.provenance, app="inspire", source=str(args.image or
                  args.patch), input_box=true_box[:2] if true_box else None,
                  estimated_position={"row": int(result.rows[0]), "col": int(result.cols[0])},
                  estimated_box={"top": top, "left": left, "height": height, "width": width},
                  estimated_coordinate=result.coords[0], estimated_z=result.z[0],
                  files=[p.name for p in written], warning=warning)
    return written


def _add_beyond(parser: argparse.ArgumentParser) -> None:
    _seeds_flag(parser, "0-3")
    parser.add_argument("--extend", default="1", help="micro patches added past the borders: "
                        "K for every side or TOP,BOTTOM,LEFT,RIGHT (default 1)")


def _run_beyond(args: argparse.Namespace, ctx: Context) -> list[Path]:
    extension = Extension.of(parse_numbers(args.extend, "--extend", (1, 4)))
    coords = ctx.model.coords
    rect = extended_rect(coords, extension)
    seeds, z = ctx.seeds(args.seeds)
    height, width = rect.rows * coords.micro, rect.cols * coords.micro
    ctx.fits(f"{len(seeds)} image(s) of {height}x{width}", len(seeds), height, width, rendered=1)
    if not ctx.config.loss.extrapolate:
        print("cocogan generate beyond: warning: this run was not fine-tuned for extrapolation "
              "(loss.extrapolate=0); see cocogan train --extrapolate", file=sys.stderr)
    trained = {"top": extension.top * coords.micro, "left": extension.left * coords.micro,
               "height": ctx.size[0], "width": ctx.size[1]}
    return [ctx.write(f"beyond-seed{seed:04d}.png",  # one image at a time: memory of one image
                      beyond(ctx.model, z[i:i + 1], extension, raw=ctx.raw, chunk=ctx.chunk)[0],
                      seed=seed, extend=vars(extension), trained_box_pixels=trained,
                      coordinates=axis_coordinates(coords, rect))
            for i, seed in enumerate(seeds)]


def _add_huge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the image (default 0)")
    parser.add_argument("--size", required=True,
                        help="output HEIGHT,WIDTH or one side, pixels (multiples of the micro "
                        "patch), e.g. 16384")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile/band side in pixels (multiple of 16 and of the micro patch; "
                        "default 256)")
    parser.add_argument("--origin", help="grid position ROW,COL of the top-left micro patch "
                        "(default: the trained image centred)")
    parser.add_argument("--output", type=Path, default=None,
                        help="file ending in .tif (tiled BigTIFF, default) or .png")
    parser.add_argument("--compress", action="store_true", help="deflate-compress the tiles")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_huge(args: argparse.Namespace, ctx: Context) -> list[Path]:
    size = parse_numbers(args.size, "--size", (1, 2))
    height, width = (size * 2) if len(size) == 1 else size
    origin = parse_numbers(args.origin, "--origin", (2,)) if args.origin else None
    plan = plan_huge(ctx.model.coords, height, width, tile=args.tile, origin=origin)
    seeds, z = ctx.seeds(str(args.seed), "--seed")
    output = args.output or ctx.out / f"huge-seed{args.seed:04d}-{height}x{width}.tif"
    if args.output is not None:
        if output.suffix.lower() not in FORMATS:
            raise ValueError(f"--output must end in one of {', '.join(FORMATS)}, got "
                             f"{output.name!r}")
        claim_file(output, "--output", sidecar=output.with_suffix(".json"))
    ctx.check_budget(huge_budget(plan, output.suffix), output)  # refuse before timing anything
    seconds = patch_seconds(ctx.model, ctx.chunk, raw=ctx.raw)
    _note(f"{huge_budget(plan, output.suffix, seconds).describe()}")
    path = write_huge(ctx.model, z, output, plan, raw=ctx.raw, chunk=ctx.chunk,
                      progress=not args.no_progress, compress=args.compress)
    write_sidecar(path, ctx.provenance, app="huge", seed=seeds[0], size=[height, width],
                  origin=[plan.origin_row, plan.origin_col], tile=plan.tile,
                  format="BigTIFF (tiled)" if path.suffix.lower() != ".png" else "PNG",
                  coordinate_range={k: [v[0], v[-1]] for k, v in
                                    axis_coordinates(ctx.model.coords, plan.rect()).items()})
    return [path]
