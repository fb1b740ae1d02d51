"""The status page and Prometheus ``/metrics`` (``vtl web``, ``vtl serve --web``), and the
capacity totals of ``vtl status``: the metrics read back with prometheus_client's own parser,
the page rendered by headless Chromium (screenshot kept with the test's files). A backup
running in this process shows its live numbers there (ebm.job_progress), and its duration
lands in the histogram when it ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, write_tree
from iscsi_support import RawInitiator
from served_library import free_port, start, vtl

from ebm import manager
from ebm.controller import BackupRequest
from ebm.manager import Ebm
from translators.base import Progress
from translators.filesystem import FilesystemTranslator
from vtl.library import Library

IQN = "iqn.2026-11.org.vtl-ebm:webtest"
VTL = str(Path(sys.executable).with_name("vtl"))


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def parse_metrics(text: str) -> dict[str, list]:
    parser = pytest.importorskip("prometheus_client.parser")
    return {f.name: f.samples for f in parser.text_string_to_metric_families(text)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "2", "--slots", "6", "--mailslots", "1", "--iqn", IQN)
    vtl(root, "pool", "create", "daily")
    vtl(root, "cartridge", "create", "WEB001L8-WEB003L8", "--capacity", "2MiB", "--pool", "daily")
    vtl(root, "load", "WEB001L8", "0")
    return root


def test_status_shows_capacity_totals(root: Path):
    out = vtl(root, "status").stdout
    assert "library: 3 cartridge(s), 0 B used, 6.0 MiB free of 6.0 MiB" in out
    assert "pool daily: 3 cartridge(s)" in out
    cap = json.loads(vtl(root, "status", "--json").stdout)["capacity"]
    assert cap["pools"]["daily"] == {"cartridges": 3, "capacity": 3 << 21, "used": 0,
                                     "free": 3 << 21, "written": 0, "compression_ratio": None,
                                     "uncounted": 0}
    # 256 KiB of text and 64 KiB of noise written through a drive: the catalog counts the
    # native bytes at the unmount, and the ratio is written / on the medium.
    with Library.open(root) as lib:
        cart = lib.drives[0].mount()
        for _ in range(4):
            cart.write_block(b"all work and no play " * 3120)
        cart.write_filemarks(1)
        cart.write_block(os.urandom(65536))
        lib.drives[0].unmount()
    cap = json.loads(vtl(root, "status", "--json").stdout)["capacity"]
    t = cap["pools"]["daily"]
    assert t["written"] == 4 * 65520 + 65536 and t["uncounted"] == 0
    assert t["compression_ratio"] == round(t["written"] / t["used"], 3) and t[
        "compression_ratio"] > 2
    assert cap["library"]["compression_ratio"] == t["compression_ratio"]
    assert f"compression {t['compression_ratio']:.2f}:1" in vtl(root, "status").stdout


def test_vtl_web_page_and_metrics(root: Path, tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen([VTL, "--root", str(root), "web", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port}/" in proc.stdout.readline()
        code, kind, page = get(f"http://127.0.0.1:{port}/")
        assert code == 200 and kind.startswith("text/html")
        for text in ("WEB001L8", "WEB003L8", "daily", "not served", "no EBM backups yet"):
            assert text in page
        code, kind, text = get(f"http://127.0.0.1:{port}/metrics")
        assert kind.startswith("text/plain; version=0.0.4")
        m = parse_metrics(text)
        loaded = {s.labels["drive"]: s.value for s in m["vtl_drive_loaded"]}
        assert loaded == {"drive:0": 1, "drive:1": 0}
        pools = {s.labels["pool"]: s.value for s in m["vtl_pool_capacity_bytes"]}
        assert pools["daily"] == 3 << 21
        assert m["vtl_sessions"][0].value == 0 and m["vtl_serving"][0].value == 0
        assert m["vtl_catalog_bytes"][0].value > 0
        with pytest.raises(urllib.error.HTTPError):
            get(f"http://127.0.0.1:{port}/nope")
        _screenshot(f"http://127.0.0.1:{port}/", tmp_path / "status.png")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_serve_web_shows_sessions_and_drive_counters(root: Path):
    port = free_port()
    s = start(root, "--web", f"127.0.0.1:{port}")
    try:
        ini = RawInitiator(s.port, name="iqn.2026-11.org.example:webhost")
        ini.login(target=IQN)
        ini.collect(ini.scsi(bytes(6), lun=0))
        deadline = time.monotonic() + 5
        while True:
            m = parse_metrics(get(f"http://127.0.0.1:{port}/metrics")[2])
            if m["vtl_sessions"][0].value == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert m["vtl_serving"][0].value == 1 and m["vtl_sessions"][0].value == 1
        (cmds,) = m["vtl_session_commands"]
        assert cmds.labels["initiator"] == "iqn.2026-11.org.example:webhost" and cmds.value >= 1
        assert {s.labels["lun"] for s in m["vtl_drive_bytes_written"]} == {"1", "2"}
        page = get(f"http://127.0.0.1:{port}/")[2]
        assert "iqn.2026-11.org.example:webhost" in page and "serving over iSCSI" in page
        ini.close()
    finally:
        assert s.stop() == 0


class _Paused(FilesystemTranslator):
    """Reports 3 of 10 files (3 of 10 MiB) until released, then backs up for real."""

    release = threading.Event()

    def backup(self, source, parent_state, writer, *, progress=None):
        while not _Paused.release.wait(0.2):
            progress(Progress("backup", 3, 10, 3 << 20, 10 << 20, "c"))
        return super().backup(source, parent_state, writer, progress=progress)


def test_a_running_backup_shows_live_on_the_page_and_in_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "lib"
    make_library(root, barcodes(1)).close()
    write_tree(tmp_path / "src", {"a": b"alpha"})
    monkeypatch.setattr(manager, "load_translator", lambda name: _Paused())
    _Paused.release.clear()
    done: list = []

    def run() -> None:
        ebm = Ebm(root)
        try:
            done.append(ebm.backup(BackupRequest(dataset="home", source=tmp_path / "src",
                                                 pool="pool")))
        finally:
            ebm.close()
    job = threading.Thread(target=run)
    job.start()
    port = free_port()
    proc = subprocess.Popen([VTL, "--root", str(root), "web", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            m = parse_metrics(get(url + "metrics")[2])
            files = m.get("ebm_job_files_done")  # the first second's file says 0 of ?
            if (files and files[0].value) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        (files,) = m["ebm_job_files_done"]
        assert files.labels["dataset"] == "home" and files.value == 3
        assert m["ebm_job_bytes_done"][0].value == 3 << 20
        assert m["ebm_job_progress_ratio"][0].value == 0.3
        assert m["ebm_jobs_running"][0].value == 1
        dom = _chromium(url, "--dump-dom", "--virtual-time-budget=1000")
        row = dom[dom.index("<table id=\"running\">"):]
        assert "home" in row and "3.0 MiB of 10.0 MiB" in row and "3 of 10" in row
        assert '<progress max="100" value="30.0">' in row and "30.0%" in row
        _screenshot(url, tmp_path / "running.png")
        _Paused.release.set()
        job.join(60)
        assert done and done[0].state == "done"
        assert not list((root / "ebm-jobs").glob("*.json"))  # gone with the job
        m = parse_metrics(get(url + "metrics")[2])
        assert "ebm_job_files_done" not in m or not m["ebm_job_files_done"]
        hist = {(s.name, s.labels.get("state"), s.labels.get("le")): s.value
                for s in m["ebm_backup_duration_seconds"]}
        assert hist[("ebm_backup_duration_seconds_count", "done", None)] == 1
        assert hist[("ebm_backup_duration_seconds_bucket", "done", "+Inf")] == 1
        assert hist[("ebm_backup_duration_seconds_bucket", "failed", "+Inf")] == 0
        assert "no backup running" in get(url)[2]
    finally:
        _Paused.release.set()
        job.join(60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr.read()


def _chromium(url: str, *args: str) -> str:
    """Headless Chromium on ``url`` with ``args`` (its stdout); skipped where it is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium for the page (Debian package chromium)")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", *args, url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _screenshot(url: str, png: Path) -> None:
    """Headless Chromium renders the page to ``png`` (skipped where Chromium is missing)."""
    _chromium(url, f"--screenshot={png}", "--window-size=1200,900")
    assert png.stat().st_size > 5000  # a rendered page, not an empty image
    print(f"status page screenshot: {png}")
