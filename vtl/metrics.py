"""The Prometheus text exposition (format 0.0.4) of a status snapshot
(:mod:`vtl.status_snapshot`): gauges for what is, counters for what a running server has
counted (drive bytes and errors since each load, session commands and bytes), a histogram of
the EBM's backup durations, and gauges of each running backup's live numbers."""

from __future__ import annotations

from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    parts = []
    for k, v in labels.items():
        text = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{text}"')
    return "{" + ",".join(parts) + "}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str,
               samples: list[tuple[dict[str, Any], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {value!r}")

    def histogram(self, name: str, help_text: str,
                  series: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """``series``: (labels, {"buckets": [(le, cumulative count)], "sum", "count"})."""
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for labels, h in series:
            for le, count in [*h["buckets"], ("+Inf", h["count"])]:
                self.lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}")
            self.lines.append(f"{name}_sum{_labels(labels)} {float(h['sum'])!r}")
            self.lines.append(f"{name}_count{_labels(labels)} {h['count']}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(snap: dict[str, Any]) -> str:
    e = _Exposition()
    drives = [r for r in snap["elements"] if r["type"] == "data_transfer"]
    slots = [r for r in snap["elements"] if r["type"] == "storage"]
    e.metric("vtl_serving", "gauge", "1 while vtl serve exports the library.",
             [({}, int(snap["serving"]))])
    e.metric("vtl_slots", "gauge", "Storage slots, by whether they hold a cartridge.",
             [({"state": "full"}, sum(1 for s in slots if s["barcode"])),
              ({"state": "empty"}, sum(1 for s in slots if not s["barcode"]))])
    e.metric("vtl_drive_loaded", "gauge", "1 when the drive holds a cartridge.",
             [({"drive": r["element"], "serial": r.get("serial") or ""}, int(bool(r["barcode"])))
              for r in drives])
    counters = snap["drive_counters"]
    for key, help_text in (("bytes_written", "Bytes written by initiators since the load."),
                           ("bytes_read", "Bytes read by initiators since the load.")):
        e.metric(f"vtl_drive_{key}_total", "counter", help_text,
                 [({"serial": c["serial"], "lun": c["lun"]}, c[key]) for c in counters])
    e.metric("vtl_drive_errors_total", "counter", "Write and read errors since the load.",
             [({"serial": c["serial"], "lun": c["lun"], "kind": kind}, c[f"{kind}_errors"])
              for c in counters for kind in ("write", "read")])
    sessions = snap["sessions"]
    e.metric("vtl_sessions", "gauge", "Logged-in iSCSI sessions.", [({}, len(sessions))])
    e.metric("vtl_session_commands_total", "counter", "SCSI commands of a session.",
             [({"initiator": s["initiator"], "tsih": s["tsih"]}, s["commands"]) for s in sessions])
    for key in ("bytes_in", "bytes_out"):
        e.metric(f"vtl_session_{key}_total", "counter", f"TCP {key.replace('_', ' ')} of a session.",
                 [({"initiator": s["initiator"], "tsih": s["tsih"]}, s[key]) for s in sessions])
    pools = snap["capacity"]["pools"]
    for key, help_text in (("capacity", "Native capacity of the pool's cartridges."),
                           ("used", "Bytes the pool's cartridges hold (compressed)."),
                           ("free", "Capacity left in the pool's cartridges.")):
        e.metric(f"vtl_pool_{key}_bytes", "gauge", help_text,
                 [({"pool": p}, t[key]) for p, t in pools.items()])
    e.metric("vtl_pool_cartridges", "gauge", "Cartridges in the pool.",
             [({"pool": p}, t["cartridges"]) for p, t in pools.items()])
    e.metric("vtl_cartridges", "gauge", "Cartridges by state.",
             [({"state": k}, v) for k, v in sorted(snap["cartridge_states"].items())])
    e.metric("vtl_catalog_bytes", "gauge", "Size of catalog.sqlite.",
             [({}, snap["catalog_bytes"])])
    e.metric("ebm_backups", "gauge", "EBM backups by state.",
             [({"state": k}, v) for k, v in sorted(snap["backup_states"].items())])
    last: dict[str, dict[str, Any]] = {}
    for j in snap["jobs"]:
        if j["state"] == "done" and j["dataset"] not in last:
            last[j["dataset"]] = j
    e.metric("ebm_last_backup_duration_seconds", "gauge",
             "Duration of the dataset's newest good backup (among the recent jobs).",
             [({"dataset": d}, float(j["seconds"] or 0)) for d, j in sorted(last.items())])
    e.metric("ebm_last_backup_timestamp_seconds", "gauge",
             "When the dataset's newest good backup finished.",
             [({"dataset": d}, float(j["finished"] or 0)) for d, j in sorted(last.items())])
    e.metric("ebm_jobs_running", "gauge", "EBM backups running now.",
             [({}, sum(1 for j in snap["jobs"] if j["state"] == "running"))])
    e.histogram("ebm_backup_duration_seconds", "Durations of the finished EBM backups.",
                [({"state": state}, h) for state, h in sorted(snap["job_durations"].items())])
    _live_jobs(e, [j for j in snap["jobs"] if j.get("live")])
    return e.text()


def _live_jobs(e: _Exposition, jobs: list[dict[str, Any]]) -> None:
    """Gauges of each running backup (what the status page shows live)."""
    def labels(j: dict[str, Any]) -> dict[str, Any]:
        return {"backup": j["uuid"][:8], "dataset": j["dataset"]}

    e.metric("ebm_job_bytes_done", "gauge", "Bytes a running backup has read from its source.",
             [(labels(j), j["live"]["bytes_done"]) for j in jobs])
    e.metric("ebm_job_files_done", "gauge", "Entries a running backup has archived.",
             [(labels(j), j["live"]["files_done"]) for j in jobs])
    e.metric("ebm_job_rate_bytes_per_second", "gauge",
             "A running backup's rate over its last second or so.",
             [(labels(j), float(j["live"]["rate"])) for j in jobs
              if j["live"]["rate"] is not None])
    e.metric("ebm_job_progress_ratio", "gauge",
             "Done / total of a running backup, where its translator knows the total.",
             [(labels(j), j["live"]["percent"] / 100) for j in jobs
              if j["live"]["percent"] is not None])
