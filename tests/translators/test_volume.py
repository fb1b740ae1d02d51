"""Volume translator: sparse images and a loop device, chunk-level incrementals, byte-exact
restores at every point of a chain, and a layout GNU tar extracts by itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import pytest
from pax_helpers import entries, run_backup

from translators import volume
from translators.base import TranslatorError, apply_chain, load_translator
from translators.volume import VolumeTranslator

MiB = 1024 * 1024


def write_at(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def make_image(path, size=24 * MiB):
    with open(path, "wb") as f:
        f.truncate(size)  # all hole
    write_at(path, 0, os.urandom(3 * MiB))
    write_at(path, 10 * MiB + 123, os.urandom(5000))
    write_at(path, 20 * MiB, bytes(MiB))  # written zeros: a zero run, not a hole
    return path


def test_chain_of_a_sparse_image_restores_each_point_exactly(tmp_path):
    img = make_image(tmp_path / "disk.img")
    t = load_translator("volume")
    assert isinstance(t, VolumeTranslator)
    snaps = [tmp_path / "p0"]
    shutil.copyfile(img, snaps[0])
    a0, r0 = run_backup(t, img)
    assert r0.level_hint == "baseline"
    # 3 MiB + one chunk around 10 MiB: holes and the written zeros are not stored
    assert 4 * MiB <= len(a0) < 4 * MiB + 64 * 1024

    write_at(img, 10 * MiB + 7, b"changed")         # one chunk changes
    write_at(img, 1 * MiB, bytes(MiB))              # a data chunk becomes zero
    with open(img, "r+b") as f:
        f.truncate(26 * MiB)                        # the image grows
    write_at(img, 25 * MiB, b"tail")
    shutil.copyfile(img, tmp_path / "p1")
    snaps.append(tmp_path / "p1")
    a1, r1 = run_backup(t, img, r0.state)
    assert r1.level_hint == "incremental"
    assert 2 * MiB <= len(a1) < 2 * MiB + 64 * 1024  # two changed chunks, nothing else

    with open(img, "r+b") as f:
        f.truncate(5 * MiB + 100)                   # shrinks, ends mid-chunk
    shutil.copyfile(img, tmp_path / "p2")
    snaps.append(tmp_path / "p2")
    a2, r2 = run_backup(t, img, r1.state)
    assert len(a2) < 64 * 1024

    chain = [a0, a1, a2]
    for n in range(3):
        out = tmp_path / f"r{n}"
        apply_chain(t, [entries(a) for a in chain[: n + 1]], out)
        assert (out / "disk.img").read_bytes() == snaps[n].read_bytes()
    one = tmp_path / "one"
    t.restore((p for a in chain[:2] for p in entries(a)), one)
    got = one / "disk.img"
    assert got.read_bytes() == snaps[1].read_bytes() and os.listdir(one) == ["disk.img"]
    assert got.stat().st_blocks * 512 <= 4 * MiB  # sparse where zero: 3 data chunks + tail


def test_gnu_tar_extracts_the_baseline_image_and_the_delta_chunks(tmp_path):
    img = make_image(tmp_path / "disk.img")
    t = VolumeTranslator()
    a0, r0 = run_backup(t, img)
    (tmp_path / "b.tar").write_bytes(a0)
    out = tmp_path / "tar"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "b.tar"), "-C", str(out)], check=True)
    assert sorted(os.listdir(out)) == ["disk.img", "disk.img.ebm-volume.json"]
    assert (out / "disk.img").read_bytes() == img.read_bytes()
    assert (out / "disk.img").stat().st_blocks * 512 < 8 * MiB  # tar made it sparse too
    write_at(img, 2 * MiB + 5, b"x")
    a1, _ = run_backup(t, img, r0.state)
    (tmp_path / "i.tar").write_bytes(a1)
    subprocess.run(["tar", "-xf", str(tmp_path / "i.tar"), "-C", str(out)], check=True)
    delta = (out / "disk.img.ebm-volume-delta.000001").read_bytes()
    assert delta[2 * MiB:3 * MiB] == img.read_bytes()[2 * MiB:3 * MiB]
    meta = json.loads((out / "disk.img.ebm-volume-delta.000001.ebm-volume.json").read_text())
    assert meta["data"] == [[2 * MiB, MiB]] and meta["zero"] == []


def test_refuses_bad_sources_and_a_volume_that_moves(tmp_path, monkeypatch):
    t = VolumeTranslator()
    with pytest.raises(TranslatorError, match="does not exist"):
        t.validate_source(str(tmp_path / "nope"))
    with pytest.raises(TranslatorError, match="not a block device or an image file"):
        t.validate_source(str(tmp_path))
    img = make_image(tmp_path / "disk.img", 4 * MiB)
    real = volume.scan_chunks

    def scan_then_write(fd, chunk_size, parent):
        scan = real(fd, chunk_size, parent)
        write_at(img, 100, b"late write")
        return scan

    monkeypatch.setattr(volume, "scan_chunks", scan_then_write)
    with pytest.raises(TranslatorError, match="changed while being read"):
        run_backup(t, img)


@contextlib.contextmanager
def loop_device(image):
    try:
        dev = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                             text=True, check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no loop device here (losetup failed)")
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, timeout=20)


def test_loop_device_round_trip(tmp_path):
    img = make_image(tmp_path / "disk.img", 6 * MiB)
    t = VolumeTranslator()
    with loop_device(img) as dev:
        a0, r0 = run_backup(t, dev)
        write_at(img, 4 * MiB + 1, b"through the file")
        with open(dev, "rb") as f:  # drop the device's cached pages of that chunk
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        a1, r1 = run_backup(t, dev, r0.state)
    name = os.path.basename(dev)
    out = tmp_path / "r"
    apply_chain(t, [entries(a0), entries(a1)], out)
    assert (out / name).read_bytes() == img.read_bytes()
    assert r1.level_hint == "incremental" and len(a1) < 2 * MiB


def test_a_refused_delta_leaves_the_image_restored_before(tmp_path):
    """One restore call per archive (``apply_chain``): a delta that does not apply to the
    image an earlier call left must not take that image with it."""
    img = make_image(tmp_path / "disk.img", 4 * MiB)
    t = VolumeTranslator()
    a0, r0 = run_backup(t, img)
    write_at(img, 5, b"one")
    _, r1 = run_backup(t, img, r0.state)
    write_at(img, 5, b"two")
    a2, _ = run_backup(t, img, r1.state)
    out = tmp_path / "r"
    apply_chain(t, [entries(a0)], out)
    before = (out / "disk.img").read_bytes()
    with pytest.raises(TranslatorError, match="does not apply"):
        apply_chain(t, [entries(a2)], out)  # the delta of backup 1 was skipped
    assert os.listdir(out) == ["disk.img"] and (out / "disk.img").read_bytes() == before
