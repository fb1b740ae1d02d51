"""A read-only status page and a Prometheus ``/metrics`` endpoint over HTTP, for ``vtl web``
(on its own) and ``vtl serve --web`` (beside the iSCSI target).

Routes: ``/`` the page (changer map with barcodes, drives with their state and throughput,
sessions, pools with used/free capacity and compression, the EBM's running backups with their
live bytes, files, rate and percent, and its recent jobs; it refreshes itself every 5 s, every
2 s while a backup runs), ``/metrics`` (:mod:`vtl.metrics`), ``/status.json`` (the snapshot itself). Every request
takes a fresh read-only snapshot (:mod:`vtl.status_snapshot`); the server changes nothing.
It listens where it is told, 127.0.0.1 by default: the page shows barcodes and initiator names,
so put it behind a proxy with authentication before exposing it further.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from vtl.cli.formatting import human_duration, human_rate, human_size, human_time

log = logging.getLogger("vtl.web")


class Throughput:
    """Bytes per second of each drive between two page views (from the server's counters)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def rate(self, serial: str, now: float, total: int) -> float | None:
        with self._lock:
            prev = self._last.get(serial)
            self._last[serial] = (now, total)
        if prev is None or now <= prev[0] or total < prev[1]:
            return None
        return (total - prev[1]) / (now - prev[0])


def _table(headers: list[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p class=empty>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(snap: dict[str, Any], speeds: Throughput) -> str:
    elements = snap["elements"]
    counters = {c["serial"]: c for c in snap["drive_counters"]}
    drive_rows = []
    for r in (e for e in elements if e["type"] == "data_transfer"):
        c = counters.get(r.get("serial") or "")
        total = (c["bytes_written"] + c["bytes_read"]) if c else None
        speed = speeds.rate(r["serial"], snap["time"], total) if total is not None else None
        state = ("in use" if r.get("in_use") else "loaded") if r["barcode"] else "empty"
        drive_rows.append([r["element"], r.get("serial") or "", r["barcode"] or "-", state,
                           human_size(c["bytes_written"]) if c else "-",
                           human_size(c["bytes_read"]) if c else "-",
                           human_rate(speed),
                           r.get("claimed_by") or ""])
    changer = [[r["element"], r["address"], r["barcode"] or "", r["media"] or "",
                r["source"] or ""] for r in elements if r["type"] != "data_transfer"]
    sessions = [[s["initiator"], ", ".join(c["address"] for c in s["connections"]),
                 ",".join(map(str, s["luns"])), s["commands"], human_size(s["bytes_in"]),
                 human_size(s["bytes_out"])] for s in snap["sessions"]]
    cap = snap["capacity"]
    pools = [[name, t["cartridges"], human_size(t["used"]), human_size(t["free"]),
              human_size(t["capacity"]), human_size(t["written"]),
              f"{t['compression_ratio']:.2f}:1" if t["compression_ratio"] else "-"]
             for name, t in [("(library)", cap["library"]), *cap["pools"].items()]]
    running = [j for j in snap["jobs"] if j["state"] == "running"]
    jobs = [[j["uuid"][:8], j["dataset"], j["level"], j["state"], human_time(j["started"]),
             human_duration(j["seconds"]), human_size(j["size"]), j["nfiles"]]
            for j in snap["jobs"]]
    title = f"vtl {snap['library']}"
    refresh = 2 if running else 5
    serving = "serving over iSCSI" if snap["serving"] else "not served (vtl serve is not running)"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content={refresh}>
<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #bbb;padding:2px 8px;text-align:left}}th{{background:#eee}}
.empty{{color:#777}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p id=summary>{html.escape(snap['changer'])}, drives {html.escape(snap['drive_model'])};
{html.escape(serving)}; as of {html.escape(human_time(snap['time']))}</p>
<h2>Drives</h2>{_table(["drive", "serial", "cartridge", "state", "written", "read",
                         "throughput", "claimed by"], drive_rows, "no drives")}
<h2>Sessions</h2>{_table(["initiator", "address", "LUNs", "commands", "in", "out"], sessions,
                          "no sessions")}
<h2>Pools</h2>{_table(["pool", "cartridges", "used", "free", "capacity", "written",
                       "compression"], pools, "no pools")}
<h2>Running backups</h2>{_running_jobs(running, snap["time"])}
<h2>Recent backups</h2>{_table(["backup", "dataset", "level", "state", "started", "duration",
                                "size", "entries"], jobs, "no EBM backups yet")}
<h2>Changer</h2>{_table(["element", "address", "barcode", "media", "source"], changer,
                         "no elements")}
</body></html>
"""


def _running_jobs(jobs: list[dict[str, Any]], now: float) -> str:
    """The running backups with their live numbers (ebm.job_progress) and a progress bar
    when the total is known."""
    if not jobs:
        return "<p class=empty>no backup running</p>"
    head = "".join(f"<th>{h}</th>" for h in ("backup", "dataset", "level", "started",
                                              "elapsed", "bytes", "files", "rate", "done"))
    rows = []
    for j in jobs:
        live = j.get("live") or {}
        pct = live.get("percent")
        cells = [j["uuid"][:8], j["dataset"], j["level"], human_time(j["started"]),
                 human_duration(now - j["started"]),
                 _of(live.get("bytes_done"), live.get("bytes_total"), human_size),
                 _of(live.get("files_done"), live.get("files_total"), str),
                 human_rate(live.get("rate")) if live else "-"]
        bar = (f"<progress max=100 value={pct:.1f}></progress> {pct:.1f}%" if pct is not None
               else "-" if live else "no progress published")
        rows.append("<tr class=job>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + f"<td>{bar}</td></tr>")
    return f"<table id=running><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _of(done: int | None, total: int | None, fmt: Any) -> str:
    """``12.0 MiB of 40.0 MiB``, ``12.0 MiB`` without a total, ``-`` without numbers."""
    if done is None:
        return "-"
    return f"{fmt(done)} of {fmt(total)}" if total else fmt(done)


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer

    def do_GET(self) -> None:  # the http.server name
        from vtl import metrics
        from vtl.status_snapshot import snapshot

        path = self.path.split("?", 1)[0]
        if path not in ("/", "/metrics", "/status.json"):
            self._send(404, "text/plain; charset=utf-8", "not found\n")
            return
        try:
            snap = snapshot(self.server.root)
        except Exception as e:  # a page, not a traceback
            log.warning("status snapshot failed: %s", e)
            self._send(503, "text/plain; charset=utf-8", f"library unavailable: {e}\n")
            return
        if path == "/metrics":
            self._send(200, metrics.CONTENT_TYPE, metrics.render(snap))
        elif path == "/status.json":
            self._send(200, "application/json", json.dumps(snap, default=str))
        else:
            self._send(200, "text/html; charset=utf-8", render_page(snap, self.server.speeds))

    def _send(self, code: int, kind: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # http.server's name
        log.debug("%s %s", self.address_string(), format % args)


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int]) -> None:
        self.root = Path(root)
        self.speeds = Throughput()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}/"

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="vtl web", daemon=True)
        thread.start()
        return thread
