"""Help placeholders that read as words (``--chap-secret-file FILE``, ``--portal PORTAL``,
``INITIATOR``), not typer's ``<str>``, ``<path>`` or ``{initiator}``: given to every option and
argument without a metavar of its own, from its name and type, when the root command starts.
"""

from __future__ import annotations

from typing import Any

_PATH_WORDS = {"root": "DIR", "to": "DIR", "prefix": "DIR", "bindir": "DIR", "catalog": "DIR"}


def placeholder(param: Any) -> str:
    """``--chap-secret-file`` (a path) -> FILE; ``--chap-user`` -> USER; ``--count`` (an int)
    -> N; an argument ``initiator`` -> INITIATOR."""
    name = (param.name or "value").lower()
    kind = getattr(param.type, "name", "")
    if param.param_type_name == "argument":
        return name.upper()
    last = name.rsplit("_", 1)[-1]
    if kind == "path":
        return "FILE" if last == "file" else _PATH_WORDS.get(last, "PATH")
    if kind in ("int", "int range", "integer", "integer range"):
        return "N"
    if kind in ("float", "float range"):
        return "SECONDS" if any(w in name for w in ("interval", "timeout")) else "NUMBER"
    return last.upper()


def name_placeholders(command: Any) -> None:
    """Set the placeholders of ``command`` and its subcommands (once)."""
    if getattr(command, "_placeholders_named", False):
        return
    command._placeholders_named = True
    for param in getattr(command, "params", ()):
        if getattr(param, "metavar", None) is None and not getattr(param, "is_flag", False) \
                and not getattr(param, "count", False):
            param.metavar = placeholder(param)
    for sub in getattr(command, "commands", {}).values():
        name_placeholders(sub)
