"""A real single-node Ceph for tests: one monitor, one memstore OSD and radosgw (S3) on
127.0.0.1, started from Debian's packages in a temporary folder and stopped by pid.

No mgr, no cephx (auth none: the daemons listen on loopback only, for this test run). The
monitor's paxos intervals are shortened and pools are made with one replica and 8 PGs, so the
whole cluster answers S3 in seconds. ``start`` raises ``CephUnavailable`` when the binaries
are missing or the cluster does not come up in time: tests skip on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
ACCESS_KEY = "VTLTESTACCESSKEY0000"
SECRET_KEY = "vtl-test-secret-key-0000000000000000000"


class CephUnavailable(Exception):
    """The cluster cannot be had here (missing packages, or it did not come up in time)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon warn on pool no redundancy = false
mon max pg per osd = 1000
paxos propose interval = 0.05
paxos min wait = 0.01
osd objectstore = memstore
memstore device bytes = {memstore}
osd crush chooseleaf type = 0
ms bind ipv6 = false
mon data = {d}/mon
osd data = {d}/osd
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/$name.log
pid file = {d}/run/$name.pid
keyring = {d}/keyring
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port} tcp_nodelay=1
rgw data = {d}/rgw
rgw enable usage log = false
"""


@dataclass
class CephCluster:
    root: Path
    memstore: int = 1 << 30
    mon_port: int = 0
    rgw_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    def client(self):
        """A boto3 S3 client of this cluster's radosgw, as the test user."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def env(self) -> dict[str, str]:
        """The environment a ``vtl`` command needs to reach this cluster as the test user."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "VTL_S3_ENDPOINT": self.endpoint}

    def _run(self, *args: str, timeout: float = 30) -> str:
        r = subprocess.run([*args], capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise CephUnavailable(f"{args[0]} failed: {r.stderr.strip()[-300:]}")
        return r.stdout

    def _daemon(self, *args: str) -> None:
        log = open(self.root / f"{args[0]}.out", "wb")  # closed with the proc
        self.procs.append(subprocess.Popen([*args, "-f", "-c", str(self.conf)], stdout=log,
                                           stderr=subprocess.STDOUT))
        log.close()

    def start(self, timeout: float = 60) -> CephCluster:
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise CephUnavailable(f"not installed: {', '.join(missing)}")
        d = self.root
        for sub in ("mon", "osd", "run", "rgw"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.mon_port, self.rgw_port = _free_port(), _free_port()
        fsid = str(uuid.uuid4())
        self.conf.write_text(CONF.format(fsid=fsid, mon_port=self.mon_port, d=d,
                                         memstore=self.memstore, rgw_port=self.rgw_port))
        deadline = time.monotonic() + timeout
        self._run("monmaptool", "--create", "--addv", "a",
                  f"[v2:127.0.0.1:{self.mon_port}]", "--fsid", fsid, str(d / "monmap"))
        self._run("ceph-mon", "-c", str(self.conf), "--mkfs", "-i", "a", "--monmap",
                  str(d / "monmap"))
        self._daemon("ceph-mon", "-i", "a")
        osd_id = self._run("ceph", "-c", str(self.conf), "osd", "create").strip()
        self._run("ceph-osd", "-c", str(self.conf), "-i", osd_id, "--mkfs")
        self._daemon("ceph-osd", "-i", osd_id)
        self._wait(deadline, self._osd_up, "the OSD did not come up")
        self._daemon("radosgw", "-n", "client.rgw", "--keyring", "/dev/null")
        self._wait(deadline, self._rgw_answers, "radosgw did not answer")
        self._run("radosgw-admin", "-c", str(self.conf), "user", "create", "--uid", "vtl",
                  "--display-name", "vtl tests", "--access-key", ACCESS_KEY,
                  "--secret-key", SECRET_KEY)
        return self

    def _wait(self, deadline: float, ready, what: str) -> None:
        while not ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise CephUnavailable(what)
            time.sleep(0.1)

    def _osd_up(self) -> bool:
        out = subprocess.run(["ceph", "-c", str(self.conf), "osd", "stat"],
                             capture_output=True, text=True, timeout=10).stdout
        return " 1 up" in out

    def _rgw_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint, timeout=1).close()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop every daemon this cluster started, by pid (rgw, OSD, then the monitor)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=1)  # memstore: nothing to save
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


@contextlib.contextmanager
def running(root: Path, buckets: Iterable[str] = ()) -> Iterator[CephCluster]:
    """A cluster started for a test module, with ``buckets`` made, and stopped after it; the
    test is skipped (with the reason) where Ceph cannot be had."""
    import pytest

    try:
        cluster = CephCluster(root).start()
    except CephUnavailable as exc:
        pytest.skip(f"no Ceph here: {exc}")
    try:
        for bucket in buckets:
            cluster.client().create_bucket(Bucket=bucket)
        yield cluster
    finally:
        cluster.stop()


def vtl_json(root: Path, cluster: CephCluster, *args: str):
    """``vtl --root ROOT --json ARGS`` in this process (typer's CliRunner), with the cluster's
    S3 endpoint and keys in its environment; the CliRunner's Result."""
    from typer.testing import CliRunner

    from vtl.cli.main import app

    return CliRunner().invoke(app, ["--root", str(root), "--json", *args], env=cluster.env())


if __name__ == "__main__":  # a manual check: how long does it take here?
    import tempfile

    t0 = time.monotonic()
    c = CephCluster(Path(tempfile.mkdtemp(prefix="ceph-"))).start()
    print(f"ready in {time.monotonic() - t0:.1f} s at {c.endpoint}")
    c.stop()
    print(os.listdir(c.root))
