"""Publishing a library through the kernel's LIO target with rtslib-fb, and taking it back.

What an export creates in configfs (``/sys/kernel/config/target``), named after the library
so several libraries and other LIO users live side by side:

* one TCMU user backstore per device, ``<library>-changer`` and ``<library>-drive<N>``, with
  ``dev_config`` ``vtl/<role>@<library root>`` (what :mod:`vtl.lio.uio` looks for), control
  ``nl_reply_supported=-1`` (the kernel never waits for a netlink reply from us; see
  :mod:`vtl.lio.handler`), a data area that holds the largest tape block twice, and
  ``cmd_time_out`` raised from the kernel's 30 s to what a tape ERASE or long LOCATE needs;
* one fabric target with LUN 0 the changer and LUN N+1 drive N (:mod:`vtl.scsi.devices`):
  ``iscsi`` (the library's IQN, its portal, CHAP and mutual CHAP from ``library.toml`` or
  the command line, an ACL per allowed initiator with the LUNs mapped in the same order, or
  open access when none is given) or ``loopback`` (tcm_loop: the LUNs appear as local SCSI
  devices, ``/dev/nst*`` and ``/dev/sch*``, on this machine).

Every step looks before it creates, so exporting twice changes nothing; :func:`unexport`
removes the targets that use our backstores, then the backstores (and their HBAs), leaving
no configfs debris. The result is ordinary LIO configuration: ``targetcli ls`` shows it and
``targetcli saveconfig`` saves it (``targetcli/README.md``). rtslib is imported only here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtl.lio.uio import config_string
from vtl.scsi.devices import CHANGER_LUN, drive_lun
from vtl.scsi.ssc import MAX_BLOCK

# ERASE of a whole LTO cartridge, or a LOCATE across it, takes hours on real tape; ours take
# seconds to minutes, but the kernel must never abort them at its default 30 s.
CMD_TIME_OUT = 3600
NOMINAL_SIZE = 1 << 30  # a user backstore must have a size; nothing reads it for tape
HW_MAX_SECTORS = MAX_BLOCK // 512  # the largest block READ BLOCK LIMITS offers, in one command
MAX_DATA_AREA_MB = 2 * MAX_BLOCK >> 20  # two such blocks in flight
FABRICS = ("iscsi", "loopback")
DBROOT = Path("/etc/target")


class ExportError(Exception):
    """The export cannot be made or removed (no LIO in this kernel, a name taken, ...)."""


@dataclass(frozen=True)
class Backstore:
    name: str
    role: str  # "changer" or "drive<N>"
    lun: int
    config: str  # dev_config


@dataclass
class ExportPlan:
    """What :func:`export` makes for one library; pure data, so it is tested without LIO."""

    library: str
    root: str
    fabric: str
    backstores: list[Backstore]
    iqn: str = ""
    portal: tuple[str, int] | None = None
    chap: tuple[str, str] | None = None
    mutual_chap: tuple[str, str] | None = None
    initiators: list[str] = field(default_factory=list)
    cmd_time_out: int = CMD_TIME_OUT

    @property
    def control(self) -> str:
        return f"nl_reply_supported=-1,max_data_area_mb={MAX_DATA_AREA_MB}"

    @property
    def loopback_wwn(self) -> str:
        """A tcm_loop target name fixed by the library's root, so a second export finds it."""
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:9]
        return f"naa.5001405{digest}"


def plan(library: Any, fabric: str = "iscsi", *, portal: tuple[str, int] | None = None,
         chap: tuple[str, str] | None = None, mutual_chap: tuple[str, str] | None = None,
         initiators: list[str] | None = None) -> ExportPlan:
    """The export of ``library`` (a :class:`vtl.library.Library`): names, LUNs, access."""
    if fabric not in FABRICS:
        raise ExportError(f"unknown fabric {fabric!r} (one of {', '.join(FABRICS)})")
    cfg = library.config
    root = os.path.abspath(library.root)
    if ":" in root or any(c.isspace() for c in root):
        raise ExportError(f"cannot export {root!r}: LIO's config string takes no ':' or spaces")
    stores = [Backstore(f"{cfg.name}-changer", "changer", CHANGER_LUN,
                        config_string("changer", root))]
    for bay in library.drives:
        role = f"drive{bay.index}"
        stores.append(Backstore(f"{cfg.name}-{role}", role, drive_lun(bay.index),
                                config_string(role, root)))
    iscsi = fabric == "iscsi"
    if mutual_chap is not None and chap is None:
        raise ExportError("mutual CHAP needs CHAP too")
    return ExportPlan(
        library=cfg.name, root=root, fabric=fabric, backstores=stores,
        iqn=cfg.iscsi.target_iqn if iscsi else "",
        portal=(portal or (cfg.iscsi.portal_host, cfg.iscsi.portal_port)) if iscsi else None,
        chap=chap if iscsi else None, mutual_chap=mutual_chap if iscsi else None,
        initiators=list(initiators or []) if iscsi else [],
    )


def _rtslib():
    try:
        import rtslib
    except ImportError:
        raise ExportError("rtslib-fb is not installed (pip install 'vtl-ebm[lio]')") from None
    return rtslib


def _root(rtslib):
    if not Path("/sys/kernel/config").exists():
        raise ExportError("no configfs: this kernel has no LIO target (load target_core_mod)")
    try:
        # rtslib points the kernel's dbroot (PR and ALUA state) at /etc/target, the folder
        # targetcli-fb's package makes; make it where that package is not installed.
        DBROOT.mkdir(mode=0o755, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {DBROOT} (rtslib's dbroot): {e.strerror}") from None
    try:
        return rtslib.RTSRoot()
    except rtslib.RTSLibError as e:
        raise ExportError(f"LIO target not available: {e}") from None


def _backstore(rtslib, store: Backstore, p: ExportPlan):
    try:
        so = rtslib.UserBackedStorageObject(store.name)
    except rtslib.RTSLibNotInCFSError:
        so = rtslib.UserBackedStorageObject(
            store.name, config=store.config, size=NOMINAL_SIZE,
            hw_max_sectors=HW_MAX_SECTORS, control=p.control)
    if so.config != store.config:
        raise ExportError(f"backstore user/{store.name} exists for {so.config!r}, "
                          f"not this library; remove it first")
    if int(so.get_attribute("cmd_time_out")) != p.cmd_time_out:
        so.set_attribute("cmd_time_out", str(p.cmd_time_out))  # only while no LUN uses it
    return so


def _fabric_target(rtslib, p: ExportPlan):
    fm = rtslib.FabricModule(p.fabric)
    wwn = p.iqn if p.fabric == "iscsi" else p.loopback_wwn
    target = rtslib.Target(fm, wwn)
    return target, rtslib.TPG(target, 1)


def _luns(rtslib, tpg, stores: dict[str, Any], p: ExportPlan) -> dict[int, Any]:
    existing = {lun.lun: lun for lun in tpg.luns}
    made = {}
    for store in p.backstores:
        lun = existing.get(store.lun)
        if lun is not None and lun.storage_object.name != store.name:
            raise ExportError(f"LUN {store.lun} of {tpg.parent_target.wwn} is "
                              f"{lun.storage_object.name}, not {store.name}")
        made[store.lun] = lun or rtslib.LUN(tpg, store.lun, stores[store.name])
    return made


def _iscsi_access(rtslib, tpg, luns: dict[int, Any], p: ExportPlan) -> None:
    host, port = p.portal or ("0.0.0.0", 3260)
    rtslib.NetworkPortal(tpg, host, port)
    open_access = not p.initiators
    tpg.set_attribute("authentication", "1" if p.chap else "0")
    tpg.set_attribute("generate_node_acls", "1" if open_access else "0")
    tpg.set_attribute("demo_mode_write_protect", "0")
    tpg.set_attribute("cache_dynamic_acls", "1" if open_access else "0")
    holders = [tpg] if open_access else [rtslib.NodeACL(tpg, iqn) for iqn in p.initiators]
    for holder in holders:
        if p.chap:
            holder.chap_userid, holder.chap_password = p.chap
        if p.mutual_chap:
            holder.chap_mutual_userid, holder.chap_mutual_password = p.mutual_chap
        if holder is not tpg:
            have = {m.mapped_lun for m in holder.mapped_luns}
            for number, lun in sorted(luns.items()):
                if number not in have:
                    rtslib.MappedLUN(holder, number, lun)
    tpg.enable = True


def export(p: ExportPlan) -> dict[str, Any]:
    """Create (or find) everything ``p`` describes; returns :func:`status` afterwards."""
    rtslib = _rtslib()
    _root(rtslib)
    try:
        stores = {s.name: _backstore(rtslib, s, p) for s in p.backstores}
        _, tpg = _fabric_target(rtslib, p)
        if p.fabric == "loopback" and not tpg.nexus:
            # tcm_loop: the I_T nexus first, so each LUN made below is scanned as it comes
            tpg.nexus = p.loopback_wwn.replace("naa.5001405", "naa.5001406", 1)
        luns = _luns(rtslib, tpg, stores, p)
        if p.fabric == "iscsi":
            _iscsi_access(rtslib, tpg, luns, p)
    except rtslib.RTSLibError as e:
        raise ExportError(str(e)) from None
    return status(p)


def _our_targets(root, names: set[str]):
    for target in list(root.targets):
        for tpg in target.tpgs:
            if any(lun.storage_object.name in names for lun in tpg.luns):
                yield target
                break


def unexport(p: ExportPlan) -> list[str]:
    """Delete the targets using our backstores, then the backstores; returns what went."""
    rtslib = _rtslib()
    root = _root(rtslib)
    names = {s.name for s in p.backstores}
    gone = []
    try:
        for target in list(_our_targets(root, names)):
            gone.append(f"{target.fabric_module.name}/{target.wwn}")
            target.delete()
        for so in list(root.storage_objects):
            if so.plugin == "user" and so.name in names:
                gone.append(f"backstores/user/{so.name}")
                so.delete()
    except rtslib.RTSLibError as e:
        raise ExportError(str(e)) from None
    return gone


def status(p: ExportPlan) -> dict[str, Any]:
    """What configfs holds of this library's export now."""
    rtslib = _rtslib()
    root = _root(rtslib)
    names = {s.name for s in p.backstores}
    stores = {so.name: so for so in root.storage_objects
              if so.plugin == "user" and so.name in names}
    out: dict[str, Any] = {"library": p.library, "backstores": [], "targets": []}
    for s in p.backstores:
        so = stores.get(s.name)
        out["backstores"].append({
            "name": s.name, "role": s.role, "lun": s.lun, "present": so is not None,
            "cmd_time_out": int(so.get_attribute("cmd_time_out")) if so else None,
        })
    for target in _our_targets(root, names):
        for tpg in target.tpgs:
            out["targets"].append({
                "fabric": target.fabric_module.name, "wwn": target.wwn, "tpg": tpg.tag,
                "luns": {lun.lun: lun.storage_object.name for lun in tpg.luns},
                "portals": [f"{n.ip_address}:{n.port}" for n in tpg.network_portals]
                if target.fabric_module.name == "iscsi" else [],
                "nexus": tpg.nexus if target.fabric_module.name == "loopback" else None,
            })
    return out
