"""Regression tests of issue 10: nothing a user owns is overwritten, no input can exhaust the
machine, every failure is one clear line. Each test names the failure it guards against."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cocogan import budget, get_preset
from cocogan.apps.huge import plan_huge, write_huge
from cocogan.apps.io import parse_seeds
from cocogan.checkpoint import CheckpointError, load_model, resumable_steps
from cocogan.cli import main
from cocogan.config import ConfigError, apply_overrides
from cocogan.data.folder import ImageFolderDataset, scan_images
from cocogan.metrics.inception import load_fid_inception
from cocogan.outputs import atomic_write
from test_distributed import TRAIN, free_port, quiet_env, wait_for_steps
from test_generate_cli import save_run

SMALL = ["--set", "model.z_dim=8", "model.ngf=8", "model.ndf=8", "model.aux_hidden=16",
         "optim.batch=4", "run.log_every=1", "run.sample_every=2", "run.checkpoint_every=2",
         "data.num_workers=0", "run.n_samples=4", "optim.ema_warmup=1"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    previous = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(tmp_path_factory.mktemp("runs"), "tiny")


def new_run(out: Path, *extra: str, steps: int = 2) -> int:
    return main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--out", str(out),
                 "--steps", str(steps), *SMALL, *extra])


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single error line of a failed command (no traceback anywhere)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---- 1. data loss: the write rule -------------------------------------------------------------
def test_train_never_writes_into_a_folder_of_user_files(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.yaml").write_text("my settings\n")
    (proj / "notes.txt").write_text("notes\n")
    before = tree(proj)
    assert new_run(proj, steps=3) == 2
    line = one_line(capsys)
    assert "did not write" in line and "config.yaml" in line and "--out" in line
    assert tree(proj) == before  # nothing overwritten, nothing added
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine, and so is a dry-run folder afterwards
    assert new_run(empty, "--dry-run") == 0 and new_run(empty, "--dry-run") == 0
    assert (empty / "config.yaml").read_text().startswith("name: tiny")


def test_generate_never_overwrites_user_files(run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "pictures"
    mine.mkdir()
    (mine / "seed0000.png").write_bytes(b"my holiday photo")
    assert main(["generate", "full", "--run", str(run), "--seeds", "0", "--out", str(mine)]) == 2
    assert "did not write" in one_line(capsys)
    assert (mine / "seed0000.png").read_bytes() == b"my holiday photo"
    mine_tif = mine / "x.tif"
    mine_tif.write_bytes(b"my scan")
    huge = ["generate", "huge", "--run", str(run), "--size", "64", "--no-progress"]
    assert main([*huge, "--output", str(mine_tif)]) == 2
    assert "already exists" in one_line(capsys) and mine_tif.read_bytes() == b"my scan"
    # A new file in the user's folder is fine, and so is replacing cocogan's own output; the
    # message names the folder actually written to.
    ours = mine / "y.tif"
    assert main([*huge, "--output", str(ours)]) == 0
    assert f"to {mine}" in capsys.readouterr().out
    assert main([*huge, "--output", str(ours)]) == 0
    assert sorted(p.name for p in mine.iterdir()) == ["seed0000.png", "x.tif", "y.json",
                                                      "y.tif"]


def test_atomic_write_failure_removes_the_temp_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"previous")

    def full_disk(tmp: Path) -> None:
        tmp.write_bytes(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        atomic_write(path, full_disk)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert path.read_bytes() == b"previous"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        assert new_run(tmp_path / "run") == 0
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for path in [tmp_path / "run" / "config.yaml",
                 *(tmp_path / "run" / "checkpoints").iterdir(),
                 *(tmp_path / "run" / "samples").iterdir()]:
        assert path.stat().st_mode & 0o777 == expected, path


# ---- 2. budgets -------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needs", [
    (["huge", "--size", "10000000", "--output", "x.tif"], "TB on disk"),
    (["huge", "--size", "1000000", "--output", "x.png"], "TB on disk"),
    (["beyond", "--extend", "100000"], "of memory"),
])
def test_sizes_beyond_the_machine_are_refused_up_front(
        run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str],
        needs: str) -> None:
    argv = [a if a not in ("x.tif", "x.png") else str(tmp_path / a) for a in argv]
    start = time.perf_counter()
    assert main(["generate", argv[0], "--run", str(run), "--out", str(tmp_path / "o"),
                 *argv[1:]]) == 2
    assert time.perf_counter() - start < 20  # refused before any work
    line = one_line(capsys)
    assert needs in line and "--force" in line and ("available" in line or "free" in line)
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.rglob("*.png"))


def test_force_runs_past_the_budget(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(budget, "free_disk", lambda path: 1000)
    argv = ["generate", "huge", "--run", str(run), "--size", "64", "--no-progress",
            "--output", str(tmp_path / "h.tif")]
    assert main(argv) == 2
    assert "only 1.0 KB is free" in one_line(capsys)
    assert main([*argv, "--force"]) == 0 and (tmp_path / "h.tif").is_file()
    assert "needs ~" in capsys.readouterr().err  # the estimate is printed either way


def tiff_peak_bytes(model: object, side: int, path: Path) -> int:
    z = torch.zeros(1, 8)
    plan = plan_huge(model.coords, side, side, tile=32)  # type: ignore[attr-defined]
    tracemalloc.start()
    write_huge(model, z, path, plan, progress=False, chunk=256)  # type: ignore[arg-type]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_huge_memory_is_bounded_by_the_tile(tmp_path: Path) -> None:
    config = get_preset("tiny")
    config.model.z_dim = 8
    from cocogan.model import CocoGAN

    model = CocoGAN(config.model).eval()
    small = tiff_peak_bytes(model, 128, tmp_path / "a.tif")
    large = tiff_peak_bytes(model, 512, tmp_path / "b.tif")  # 16x the pixels
    assert large < 1.5 * small + 200_000, (small, large)


# ---- 3. hangs ---------------------------------------------------------------------------------
def test_symlink_loops_are_scanned_once(tmp_path: Path) -> None:
    for index in range(20):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(tmp_path / f"{index:02d}.png")
    subprocess.run(["ln", "-s", ".", str(tmp_path / "loop1")], check=True)
    subprocess.run(["ln", "-s", ".", str(tmp_path / "loop2")], check=True)
    found: list[list[Path]] = []
    caught: list[list[str]] = []

    def scan() -> None:
        with pytest.warns(UserWarning, match="link loop") as record:
            found.append(scan_images(tmp_path))
        caught.append([str(w.message) for w in record])

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the scan did not finish"
    assert len(found[0]) == 20 and "loop1" in caught[0][0] and "loop2" in caught[0][0]


# ---- 4. full disk -----------------------------------------------------------------------------
def test_full_disk_during_a_checkpoint_is_one_line_and_stays_resumable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert new_run(run) == 0
    write_bytes = Path.write_bytes

    def full_disk(path: Path, data: bytes) -> int:
        if ".state.pt" in path.name:
            write_bytes(path, data[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 2
    line = one_line(capsys)
    assert "No space left" in line and "step-2 checkpoint is intact" in line
    assert "--resume" in line and "step-00000004.state.pt" in line
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000002.safetensors", "step-00000002.state.pt"]  # no orphan, no temp file
    assert main(["train", "--resume", str(run), "--steps", "4"]) == 0
    assert resumable_steps(run) == [2, 4]


def test_generate_onto_a_full_disk_leaves_no_partial_files(
        run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    def full_disk(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(str(fp)).write_bytes(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "full"
    assert main(["generate", "full", "--run", str(run), "--seeds", "0-2", "--out", str(out)]) == 2
    assert "disk is full" in one_line(capsys)
    assert [p.name for p in out.iterdir()] == [".cocogan"]
    monkeypatch.undo()

    def torn_tiles(tmp: Path, *args: object, **kwargs: object) -> None:
        Path(tmp).write_bytes(b"II*\x00partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    import tifffile

    monkeypatch.setattr(tifffile, "imwrite", torn_tiles)
    assert main(["generate", "huge", "--run", str(run), "--size", "64", "--no-progress",
                 "--out", str(out)]) == 2
    assert "No space left" in one_line(capsys)
    assert [p.name for p in out.iterdir()] == [".cocogan"]


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real size-limited (or read-only) file system, where the machine allows mounting."""
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
            capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_huge_onto_a_really_full_disk(run: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        argv = ["generate", "huge", "--run", str(run), "--size", "512", "--no-progress",
                "--output", str(disk / "h.tif")]
        assert main(argv) == 2 and "free on the disk" in one_line(capsys)  # the budget
        assert main([*argv, "--force"]) == 2  # past the budget: the disk really fills up
        assert "disk is full" in one_line(capsys)
        assert list(disk.iterdir()) == []


def test_read_only_file_system_is_one_line(run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    with small_tmpfs(tmp_path / "ro", "4m", read_only=True) as ro:
        every_writer_fails_in_one_line(run, ro, "read-only", capsys)


def every_writer_fails_in_one_line(run: Path, folder: Path, words: str,
                                   capsys: pytest.CaptureFixture) -> None:
    """train --out, generate --out and huge --output below ``folder`` end in one line."""
    assert new_run(folder / "run") == 2
    assert words in one_line(capsys)
    assert main(["generate", "full", "--run", str(run), "--out", str(folder / "g")]) == 2
    assert words in one_line(capsys)
    assert main(["generate", "huge", "--run", str(run), "--size", "64",
                 "--output", str(folder / "h.tif")]) == 2
    assert words in one_line(capsys)


# ---- 5. one line instead of a traceback -------------------------------------------------------
@pytest.mark.parametrize("errno_code, words", [(errno.EROFS, "read-only"),
                                               (errno.EACCES, "permission denied")])
def test_unwritable_out_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture, errno_code: int,
                                    words: str) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno_code, os.strerror(errno_code), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert new_run(tmp_path / "run") == 2
    line = one_line(capsys)
    assert words in line and str(tmp_path / "run") in line


def test_out_below_a_file_is_one_line(run: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    every_writer_fails_in_one_line(run, afile, "not a folder", capsys)


def test_undecodable_inspire_inputs_are_one_line(run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    whole = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(whole)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[:400])
    for argv in (["--patch", str(text)], ["--patch", str(truncated)],
                 ["--image", str(truncated), "--box", "0,0"]):
        assert main(["generate", "inspire", "--run", str(run), "--out", str(tmp_path / "o"),
                     *argv]) == 2
        line = one_line(capsys)
        assert "cannot be decoded" in line and argv[1] in line


def test_corrupt_run_files_on_resume_are_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert new_run(run, "--dry-run") == 0
    (run / "run.yaml").write_text("data: [unclosed\n")
    assert main(["train", "--resume", str(run)]) == 2
    assert "run.yaml is corrupt" in one_line(capsys)
    (run / "run.yaml").write_text("data: builtin:blobs\nseed: 0\n")
    (run / "config.yaml").write_text("model: {micro: [\n")
    assert main(["train", "--resume", str(run)]) == 2
    assert "config.yaml is unusable" in one_line(capsys)


def test_unexpected_errors_keep_the_traceback_and_ask_for_a_report(
        run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from cocogan.cli import generate

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(generate, "_run_full", bug)
    assert main(["generate", "full", "--run", str(run), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "please report" in err


# ---- 6. unclear or wrong messages -------------------------------------------------------------
def test_batch_of_one_is_refused_before_writing(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert new_run(tmp_path / "run", "--batch", "1") == 2
    assert "optim.batch must be at least 2" in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_pickles_are_refused_in_the_documented_words(tmp_path: Path) -> None:
    import pickle

    class Exploit:
        def __reduce__(self) -> tuple:
            return (print, ("ran code",))

    for protocol in (2, 4):
        path = tmp_path / f"weights{protocol}.pth"
        path.write_bytes(pickle.dumps({"w": Exploit()}, protocol=protocol))
        with pytest.raises(CheckpointError) as raised:
            load_fid_inception(path)
        assert "contains pickled Python objects; refusing to load it" in str(raised.value)
        assert "weights_only" not in str(raised.value)


def test_repeated_and_huge_seeds(run: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    assert parse_seeds("1,1,0-2,1") == [1, 0, 2]
    assert main(["generate", "full", "--run", str(run), "--seeds", "1,1,1",
                 "--out", str(tmp_path)]) == 0
    assert "wrote 1 file(s)" in capsys.readouterr().out
    assert main(["generate", "full", "--run", str(run), "--seeds", str(2**64),
                 "--out", str(tmp_path)]) == 2
    assert "2^63 - 1" in one_line(capsys)
    assert parse_seeds(str(2**63 - 1)) == [2**63 - 1]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", ".inf"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    config = apply_overrides(get_preset("tiny"), [f"optim.lr_g={value}"])
    with pytest.raises(ConfigError, match="finite"):
        config.validate()


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (what a decompression bomb does)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


def test_huge_data_images_are_named_for_what_they_are(tmp_path: Path) -> None:
    for index in range(3):
        Image.new("RGB", (16, 16)).save(tmp_path / f"ok{index}.png")
    png_header(tmp_path / "bomb.png", 20_000, 20_000)
    Image.new("L", (4001, 4001)).save(tmp_path / "big.png")  # 16 MP: decoded at every draw
    with pytest.warns(UserWarning) as record:
        dataset = ImageFolderDataset(tmp_path, 16, 16)
    messages = " | ".join(str(w.message) for w in record)
    assert "over 178 megapixels" in messages and "bomb.png" in messages
    assert "exceed 16 megapixels" in messages and "big.png" in messages
    assert "unreadable" not in messages
    assert len(dataset) == 4 and [p.name for p in dataset.skipped] == ["bomb.png"]


def test_eval_warns_about_too_few_real_images(run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    real = tmp_path / "real"
    real.mkdir()
    for index in range(2):
        Image.new("RGB", (32, 32), (40 * index, 0, 0)).save(real / f"{index}.png")
    assert main(["eval", "--run", str(run), "--real", str(real), "--metrics", "swd",
                 "--n", "4", "--batch", "4", "--device", "cpu", "--no-cache"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "only 2 image(s)" in err and "unreliable" in err


def test_written_checkpoints_still_load(tmp_path: Path) -> None:
    """The in-memory serialisation (for clean disk errors) writes the same files as before."""
    assert new_run(tmp_path / "run") == 0
    config, _, step = load_model(tmp_path / "run")
    assert step == 2 and config.name == "tiny"


def test_sigterm_during_generation_leaves_no_partial_file(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-c", "import sys; from cocogan.cli import main; sys.exit(main())",
               "generate", "huge", "--run", str(run), "--size", "4096", "--tile", "64",
               "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600  # seconds on an idle machine; generous when shared
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name.endswith(".tmp") for p in out.glob(".huge-*")):  # tiles being written
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert [p.name for p in out.iterdir()] == [".cocogan"]


def test_sigkill_during_huge_leaves_a_temp_that_the_next_run_removes(run: Path,
                                                                     tmp_path: Path) -> None:
    """SIGKILL cannot be caught, so a killed `generate huge` leaves its hidden temporary file;
    the next run for the same output removed none of them. Now it removes the unlocked ones,
    and keeps the one another run is writing (it holds a lock on it)."""
    out = tmp_path / "out"
    command = [sys.executable, "-c", "import sys; from cocogan.cli import main; sys.exit(main())",
               "generate", "huge", "--run", str(run), "--size", "4096", "--tile", "64",
               "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        temps = [p for p in out.glob(".huge-*.tmp")]
        if temps:
            break
        time.sleep(0.1)
    process.kill()
    process.communicate(timeout=60)
    assert len(temps) == 1 and temps[0].exists()  # what issue 19 found left behind
    target = out / temps[0].name[1:].rsplit(".", 2)[0]  # .NAME.XXXXXXXX.tmp -> NAME
    live = target.with_name(f".{target.name}.abcd1234.tmp")  # "a concurrent run's"
    live.write_bytes(b"partial")
    foreign = target.with_name(f".{target.name}.notes.tmp")  # not our pattern: never touched
    foreign.write_bytes(b"mine")
    import fcntl

    from cocogan.apps.huge import remove_stale_temps

    _, model, _ = load_model(run)
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        write_huge(model, model.sample_z(1), target, plan_huge(model.coords, 64, 64),
                   progress=False)  # the next, successful run for the same output
    assert target.is_file() and live.exists() and foreign.exists() and not temps[0].exists()
    assert remove_stale_temps(target) == [live]  # its writer is gone: stale now


# ---- issue 19: hostile config texts -----------------------------------------------------------
LAUGHS = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
          + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n"
                    for i in range(8)))  # 342 bytes; 9^9 = 387 million "lol" when expanded
DEEP_YAML = "model: " + "[" * 5000 + "]" * 5000 + "\n"


def test_billion_laughs_yaml_is_refused_small_and_short(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The 400-byte YAML grew past 2 GB through --config; through --set it printed a 351 MB
    error line. Both are refused while parsing, in one short line, with little memory."""
    config = tmp_path / "laughs.yaml"
    config.write_text(LAUGHS)
    inline = "[" + ",".join(["&x [" + ",".join(["lol"] * 9) + "]"] + ["*x"] * 9) + "]"
    tracemalloc.start()
    try:
        assert main(["train", "--config", str(config), "--data", "builtin:blobs", "--out",
                     str(tmp_path / "a"), "--dry-run"]) == 2
        line = one_line(capsys)
        assert "laughs.yaml expands to more than" in line and len(line) < 300
        laughs_set = "[" + ",".join(["&y " + inline] + ["*y"] * 9) + "]"
        assert new_run(tmp_path / "b", "--set", f"model.ngf={LAUGHS_INLINE}") == 2
        line = one_line(capsys)
        assert "--set 'model.ngf' expands to more than" in line and len(line) < 300
        assert new_run(tmp_path / "c", "--set", f"model.ngf={laughs_set}") == 2
        line = one_line(capsys)  # 900 values: within the bound, refused by type, echo cut short
        assert "model.ngf expects int, got [[" in line and len(line) < 300
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.1f} MB"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


LAUGHS_INLINE = "{" + ", ".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
) + "}"


def test_config_files_are_size_capped_before_reading(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 200 MB YAML gave no output for minutes; its size is checked before it is read (a
    sparse file: nothing is written, and reading it would take 200 MB)."""
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.truncate(200 * 2**20)
    start = time.perf_counter()
    assert main(["train", "--config", str(big), "--data", "builtin:blobs", "--out",
                 str(tmp_path / "a"), "--dry-run"]) == 2
    assert time.perf_counter() - start < 5
    assert "big.yaml is 209715200 bytes; a config is a few KB" in one_line(capsys)


def test_deeply_nested_configs_are_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """YAML or JSON nested thousands deep (a --config, a run's config.yaml or run.yaml, a
    checkpoint's config string) gave a RecursionError traceback."""
    from safetensors.torch import save_file

    deep = tmp_path / "deep.yaml"
    deep.write_text(DEEP_YAML)
    assert main(["train", "--config", str(deep), "--data", "builtin:blobs", "--out",
                 str(tmp_path / "a"), "--dry-run"]) == 2
    assert "deep.yaml nests more than 32 levels deep" in one_line(capsys)
    run = tmp_path / "run"
    assert new_run(run, "--dry-run") == 0
    (run / "config.yaml").write_text(DEEP_YAML)
    assert main(["train", "--resume", str(run)]) == 2
    assert "config.yaml is unusable" in one_line(capsys)
    (run / "config.yaml").write_text(get_preset("tiny").to_yaml())
    (run / "run.yaml").write_text("data: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
    assert main(["train", "--resume", str(run)]) == 2
    assert "run.yaml is corrupt" in one_line(capsys)
    for nested in ("[" * 100_000 + "]" * 100_000, '{"model": ' + "[" * 500 + "]" * 500 + "}"):
        ckpt = tmp_path / "deep.safetensors"
        save_file({"x": torch.zeros(1)}, str(ckpt), metadata={"format": "cocogan",
                                                               "config": nested})
        assert main(["generate", "full", "--run", str(ckpt), "--out", str(tmp_path / "o")]) == 2
        assert "has an invalid config" in one_line(capsys)


# ---- issue 19: model sizes beyond the machine --------------------------------------------------
@pytest.mark.parametrize("setting", ["model.ngf=1000000", "model.full_height=1000000",
                                     "model.z_dim=1000000000"])
def test_model_sizes_beyond_the_machine_are_refused_with_the_figure(
        setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """ngf=1000000 reached 10 GB RSS and kept growing, full_height=1000000 sat at step 0,
    z_dim=1000000000 ended in an allocator traceback: the estimate refuses them up front (a
    machine of 16 GB, so the figure does not depend on this one)."""
    monkeypatch.setattr(budget, "available_memory", lambda: 16 * 10**9)
    start = time.perf_counter()
    assert main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--out",
                 str(tmp_path / "run"), "--set", setting]) == 2
    line = one_line(capsys)
    assert "needs ~" in line and "only 16.0 GB of memory is available" in line
    assert "or pass --force" in line and time.perf_counter() - start < 20
    assert not (tmp_path / "run").exists()


def test_training_budget_passes_the_presets_and_force_skips_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    tiny = get_preset("tiny")
    estimate = budget.training_budget(tiny.model, tiny.optim.batch, tiny.run.n_samples, 3)
    assert 10e6 < estimate.memory < 1e9  # ~135 MB for the tiny preset
    monkeypatch.setattr(budget, "available_memory", lambda: 10**6)
    assert new_run(tmp_path / "a", "--dry-run") == 2
    assert "of memory and up to" in one_line(capsys)
    assert new_run(tmp_path / "b", "--dry-run", "--force") == 0


@pytest.mark.parametrize("workers", ["100000", "-2"])
def test_num_workers_is_bounded_by_the_cores(workers: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """data.num_workers=100000 forked until the machine was at load 289."""
    assert main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--out",
                 str(tmp_path / "run"), "--set", f"data.num_workers={workers}"]) == 2
    line = one_line(capsys)
    assert "data.num_workers must be -1" in line and "per usable CPU core" in line
    assert line.endswith(f"got {workers}")


_LOAD_UNDER_A_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))  # 2 GB of address space
from cocogan.cli import main
for path in sys.argv[2:]:
    print("rc", main(["generate", "full", "--run", path, "--out", sys.argv[1]]), flush=True)
"""


def test_checkpoint_configs_are_checked_against_their_tensors_before_building(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """An 8 MB file claiming ngf 512 reached 5.3 GB RSS (the model was built from the stored
    config first); ngf 65536 and a huge z_dim gave tracebacks. Under a 2 GB address-space
    limit each is refused in one line."""
    import json as json_module

    from safetensors.torch import load_file, save_file

    source = save_run(tmp_path / "src", "tiny") / "checkpoints"
    original = sorted(source.glob("*.safetensors"))[-1]
    tensors = load_file(str(original))
    from cocogan.checkpoint import read_metadata

    metadata = read_metadata(original)
    files = []
    for key, value in (("ngf", 512), ("ngf", 65536), ("z_dim", 10**9)):
        config = json_module.loads(metadata["config"])
        config["model"][key] = value
        path = tmp_path / f"{key}-{value}.safetensors"
        save_file(tensors, str(path), metadata={**metadata, "config": json_module.dumps(config)})
        files.append(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _LOAD_UNDER_A_LIMIT, str(tmp_path / "out"),
                           *map(str, files)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.stdout.split() == ["rc", "2"] * 3, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in done.stderr
    assert all("implies" in line and "its config (ngf" in line for line in lines), lines
    # A config that does describe its tensors, on a machine without the memory for them.
    monkeypatch.setattr(budget, "available_memory", lambda: 10**6)
    with pytest.raises(CheckpointError, match=r"loading a 32x32 model .* only 1\.0 MB of memory"):
        load_model(original)


# ---- issue 19: a rank lost under torchrun --------------------------------------------------------
@pytest.mark.slow  # two ranks to step 3, then the kill: ~60 s on a loaded 2-core machine
def test_a_killed_rank_names_the_newest_checkpoint(tmp_path: Path) -> None:
    """torchrun SIGTERMs the survivors when a rank dies: rank 0 said "finishing step 37, then
    writing a checkpoint" and wrote none, leaving the user to guess that step 20 was the last.
    It now names the newest checkpoint's step (issue 19)."""
    run = tmp_path / "run"
    port = str(free_port())
    ranks = [subprocess.Popen(
        [sys.executable, "-m", "cocogan", "train", "--out", str(run), "--steps", "100000",
         *TRAIN, "run.checkpoint_every=2", "run.sample_every=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=quiet_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for rank in range(2)]
    wait_for_steps(run, ranks, 3)
    ranks[1].kill()
    ranks[0].send_signal(signal.SIGTERM)  # what torchrun's agent does to the survivors
    _, err = ranks[0].communicate(timeout=60)
    ranks[1].communicate()
    assert ranks[0].returncode == 1 and "Traceback" not in err, err
    steps = resumable_steps(run)
    assert steps and steps[-1] >= 2
    line = next(line for line in err.splitlines() if "error:" in line)
    assert f"the newest checkpoint is step {steps[-1]}: resume with: cocogan train --resume " \
           f"{run}" in line, err
    assert "then writing a checkpoint" not in err, err  # issue 27.20: no promise before it
    assert "if all 2 processes are still running, writing a checkpoint" in err, err


# ---- issue 27: what a hostile or unlucky input still broke ------------------------------------
@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run written by `cocogan train` (config.yaml, run.yaml, marker, two checkpoints)."""
    out = tmp_path_factory.mktemp("real") / "run"
    assert new_run(out, steps=2) == 0
    return out


def test_config_and_run_yaml_do_not_make_a_folder_a_run(run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Issue 27.1: any folder holding files named config.yaml and run.yaml (and two levels
    below it) counted as a run: generate replaced the user's seed0000.png, train their config."""
    proj = tmp_path / "proj"
    (proj / "pictures" / "best").mkdir(parents=True)
    (proj / "config.yaml").write_text("my: settings\n")
    (proj / "run.yaml").write_text("my: run notes\n")
    for folder in (proj, proj / "pictures", proj / "pictures" / "best"):
        (folder / "seed0000.png").write_bytes(b"my photo")
    before = tree(proj)
    for out in (proj, proj / "pictures", proj / "pictures" / "best"):
        assert main(["generate", "full", "--run", str(run), "--seeds", "0", "--out",
                     str(out)]) == 2
        assert "did not write" in one_line(capsys)
    assert new_run(proj) == 2 and "did not write" in one_line(capsys)
    (proj / ".cocogan").write_text("not cocogan's words\n")  # a marker must say cocogan's text
    assert new_run(proj) == 2 and "did not write" in one_line(capsys)
    (proj / ".cocogan").unlink()
    assert tree(proj) == before


def test_demo_never_writes_into_a_folder_that_merely_holds_a_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The demo took any --out holding a summary.json for its own (and removed a `blobs/run`
    holding a run.yaml): a user's folder is refused, an earlier demo's unmarked one is not."""
    from cocogan.cli.demo import _demo_from_before_markers

    mine = tmp_path / "mine"
    (mine / "blobs" / "run").mkdir(parents=True)
    (mine / "summary.json").write_text('{"my": "notes"}\n')
    (mine / "blobs" / "run" / "run.yaml").write_text("my: run notes\n")
    before = tree(mine)
    assert main(["demo", "--fast", "--out", str(mine)]) == 2
    assert "did not write" in one_line(capsys)
    assert tree(mine) == before
    old = tmp_path / "old-demo"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps([{"step0": {}, "final": {}}]))
    assert _demo_from_before_markers(old) and not _demo_from_before_markers(mine)


def test_plot_never_replaces_a_users_file_of_the_default_name(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`cocogan plot RUN` wrote RUN/training-indicators.png without the write rule."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text('{"step": 1, "L_W": 0.5}\n')
    (mine / "training-indicators.png").write_bytes(b"my picture")
    assert main(["plot", str(mine)]) == 2
    assert "did not write" in one_line(capsys)
    assert (mine / "training-indicators.png").read_bytes() == b"my picture"


def test_runs_without_a_marker_still_resume_and_load(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Issue 27.1: runs written before the marker are recognised by their checkpoints (a
    safetensors header with cocogan's metadata); resuming one gives it its marker."""
    from cocogan.outputs import MARKER, RUN_MARKER_TEXT, is_run_dir

    out = tmp_path / "old"
    assert new_run(out, steps=2) == 0
    assert (out / MARKER).read_text() == RUN_MARKER_TEXT
    (out / MARKER).unlink()  # what today's code wrote: no marker in a run
    assert is_run_dir(out)
    assert main(["generate", "full", "--run", str(out), "--seeds", "0", "--out", str(out)]) == 0
    assert not (out / MARKER).exists()  # generate into the run does not unmark it
    assert main(["train", "--resume", str(out), "--steps", "4"]) == 0
    assert (out / MARKER).read_text() == RUN_MARKER_TEXT and resumable_steps(out)[-1] == 4
    capsys.readouterr()
    fake = tmp_path / "fake"  # the same names with a checkpoint cocogan did not write
    shutil.copytree(out, fake)
    (fake / MARKER).unlink()
    for weights in (fake / "checkpoints").glob("*.safetensors"):
        weights.write_bytes(struct.pack("<Q", 2) + b"{}")
    assert not is_run_dir(fake)


def test_export_never_replaces_a_runs_own_files(real_run: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """Issue 27.2: export --output RUN/checkpoints/step-N.safetensors replaced the training
    checkpoint (even its own source), and --output RUN/eval.safetensors replaced eval.json."""
    (real_run / "eval.json").write_text('{"metrics": {}}\n')
    before = tree(real_run)
    step = resumable_steps(real_run)[-1]
    for output in (f"checkpoints/step-{step:08d}.safetensors", "checkpoints/new.safetensors",
                   "eval.safetensors", "eval.onnx", "samples/x.safetensors"):
        assert main(["export", "--run", str(real_run), "--output",
                     str(real_run / output)]) == 2, output
        assert "one of the files of the cocogan run" in one_line(capsys)
    assert tree(real_run) == before
    assert main(["export", "--run", str(real_run), "--output",
                 str(real_run / "model.safetensors")]) == 0  # a new name in the run is fine
    (real_run / "eval.json").unlink()
    for name in ("model.safetensors", "model.json"):
        (real_run / name).unlink()


def test_two_trainings_of_one_run_are_refused(real_run: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """Issue 27.14: two `train --resume` of one run at once both trained, one ending with a
    self-contradictory error and the metrics of the other lost: the run is locked (flock), and
    released when a training ends (the fixture's training ran in this process)."""
    holder = subprocess.Popen(  # another process holding the run's lock, as a training does
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); "
         "time.sleep(60)", str(real_run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and select.select([holder.stdout], [], [], 60)[0]
        assert holder.stdout.readline() == "locked\n"
        before = tree(real_run)
        assert main(["train", "--resume", str(real_run), "--steps", "4"]) == 2
        assert "being trained by another cocogan train" in one_line(capsys)
        assert tree(real_run) == before
    finally:
        holder.kill()
        holder.wait()


def test_plot_skips_a_deeply_nested_metrics_line(real_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Issue 27.8: one line of 100,000 nested lists in metrics.jsonl made `cocogan plot` a
    RecursionError traceback; it is skipped like a torn line."""
    run_copy = tmp_path / "run"
    shutil.copytree(real_run, run_copy)
    with open(run_copy / "metrics.jsonl", "a") as handle:
        handle.write("[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["plot", str(run_copy)]) == 0
    assert "wrote" in capsys.readouterr().out
    (run_copy / "metrics.jsonl").write_text('{"step": ' * 100_000 + "\n")
    assert main(["plot", str(run_copy)]) == 2
    assert "metrics" in one_line(capsys)


EVAL_SMALL = ["--metrics", "seams", "--n", "8", "--batch", "8", "--device", "cpu"]


def test_eval_json_obeys_the_write_rule_and_figures_come_first(
        real_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Issue 27.6: `eval` replaced a user's ./generated/skyline/eval.json, and lost its
    computed figures when eval.json or the statistics cache could not be written."""
    from cocogan.evaluation import evaluate_run
    from test_evaluation import SMALL, StandIn

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "generated" / "skyline" / "eval.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"my": "notes"}\n')
    assert main(["eval", "--run", "skyline", "--real", "builtin:skyline", *EVAL_SMALL]) == 2
    assert "cocogan did not write it" in one_line(capsys)
    assert mine.read_text() == '{"my": "notes"}\n'
    run_copy = tmp_path / "run"
    shutil.copytree(real_run, run_copy)
    (run_copy / "eval.json").mkdir()  # eval.json cannot be written
    assert main(["eval", "--run", str(run_copy), "--real", "builtin:blobs", *EVAL_SMALL]) == 2
    captured = capsys.readouterr()
    assert "seams" in captured.out and "eval.json" in captured.err  # the figures, then the line
    monkeypatch.setenv("COCOGAN_CACHE", str(mine))  # the statistics cache cannot be written
    with pytest.warns(UserWarning, match="real statistics not cached"):
        result = evaluate_run(run_copy, "builtin:blobs", "fid", cfg=SMALL, device="cpu",
                              feature_extractor=StandIn(), write=False)
    assert math.isfinite(result.values["fid"])


def test_fingerprint_write_edits_only_a_cocogan_card(real_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Issue 27.7: `models --fingerprint FILE --write` edited any FILE.json (a user's notes), and
    a JSON list or string there was a TypeError traceback."""
    file = tmp_path / "model.safetensors"
    shutil.copy(resumable_checkpoint(real_run), file)
    card = file.with_suffix(".json")
    for text in ('{"my": "notes"}\n', "[1, 2]\n", '"a string"\n', "{not json\n"):
        card.write_text(text)
        assert main(["models", "--fingerprint", str(file), "--write"]) == 2, text
        assert "is not a cocogan model card" in one_line(capsys)
        assert card.read_text() == text
    card.unlink()  # no card yet: one is written, and may be updated again
    for _ in range(2):
        assert main(["models", "--fingerprint", str(file), "--write"]) == 0
    assert "fingerprint" in json.loads(card.read_text())


def resumable_checkpoint(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[-1]


def test_training_budget_keeps_a_margin_and_prints_its_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Issue 27.18: the training budget admitted 21.4 GB against 21.5 GB available, silently;
    an estimate must now leave 10% of the memory free, and it is printed."""
    tiny = get_preset("tiny")
    estimate = budget.training_budget(tiny.model, tiny.optim.batch, tiny.run.n_samples,
                                      tiny.run.keep_checkpoints).memory

    def dry_run(out: Path) -> int:
        return main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--out", str(out),
                     "--dry-run", "--set", "data.num_workers=0"])

    monkeypatch.setattr(budget, "available_memory", lambda: int(estimate * 1.05))  # 5% spare
    assert dry_run(tmp_path / "a") == 2
    assert "(and 10% of it is kept free)" in one_line(capsys)
    monkeypatch.setattr(budget, "available_memory", lambda: int(estimate * 1.2))
    assert dry_run(tmp_path / "b") == 0
    assert f"training {budget.describe_model(tiny.model, budget.model_size(tiny.model, 1))[:20]}" \
        in capsys.readouterr().out  # the estimate, printed


def test_the_stop_notice_promises_no_checkpoint_in_a_multi_process_run() -> None:
    """Issue 27.20: under torchrun rank 0 said "finishing step 38, then writing a checkpoint"
    and wrote none (a peer had died), the line just before the one saying so."""
    from cocogan.training.distributed import SINGLE, World, stop_notice

    alone = stop_notice(SINGLE, "SIGTERM", 38)
    assert alone.startswith("received SIGTERM: finishing step 38, then writing a checkpoint")
    two = stop_notice(World(rank=0, size=2), "SIGTERM", 38)
    assert "then writing" not in two and "if all 2 processes are still running," in two


def test_export_checks_its_memory_estimate_first(real_run: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Issue 27.15: export had no memory estimate (a 2.08 GB generator peaked at 15.9 GB RSS):
    it is printed, and refused beyond the memory available unless --force."""
    from cocogan.export import EXPORT_COPIES, export_budget

    config, model, _ = load_model(real_run)
    weights = sum(p.numel() * p.element_size() for p in model.generator.parameters())
    assert export_budget(config, "onnx").memory == EXPORT_COPIES["onnx"] * weights
    inference = tmp_path / "g.safetensors"
    assert main(["export", "--run", str(real_run), "--output", str(inference)]) == 0
    assert "exporting a 32x32 model" in capsys.readouterr().out  # the estimate, printed
    memory = int(budget.inference_budget(config.model).memory / 0.85)  # loading it fits
    assert export_budget(config, "onnx").memory > 0.9 * memory
    monkeypatch.setattr(budget, "available_memory", lambda: memory)
    onnx = ["export", "--run", str(inference), "--output", str(tmp_path / "g.onnx")]
    assert main(onnx) == 2
    line = one_line(capsys)
    assert "exporting a 32x32 model" in line and "as onnx" in line and "--force" in line
    assert not (tmp_path / "g.onnx").exists()
    assert main(["export", "--run", str(inference), "--output", str(tmp_path / "h.safetensors")
                 ]) == 0  # two copies fit
