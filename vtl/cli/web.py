"""``vtl web``: the read-only status page and Prometheus ``/metrics`` on their own (see
:mod:`vtl.web`; ``vtl serve --web`` runs the same beside the target)."""

from __future__ import annotations

import logging
import re
import signal
from typing import Annotated

import typer

from vtl.cli.common import CliError, settings
from vtl.cli.errors import OperationFailed

DEFAULT_LISTEN = "127.0.0.1:9180"
_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` (PORT 0: any free port); CliError else."""
    m = _LISTEN_RE.match(text.strip())
    if not m or int(m.group("port")) > 65535:
        raise CliError(f"invalid address {text!r} (expected HOST:PORT or [IPV6]:PORT)")
    return m.group("v6") or m.group("host"), int(m.group("port"))


def start_web(listen: str):
    """The status server for the library at --root, serving on a thread; its URL logged."""
    from vtl.web import StatusServer

    address = parse_listen(listen)
    try:
        server = StatusServer(settings().root, address)
    except OSError as e:
        raise OperationFailed(f"cannot listen on {listen}: {e.strerror or e}") from None
    return server


def web(
    listen: Annotated[str, typer.Option(
        "--listen", "-l", metavar="HOST:PORT", help="HOST:PORT of the page and /metrics (port 0: any free one).")]
    = DEFAULT_LISTEN,
) -> None:
    """Serve the read-only status page and Prometheus /metrics until SIGTERM/SIGINT."""
    from vtl.library import Library

    Library.open(settings().root, readonly=True).close(back_up=False)  # no library: one line
    server = start_web(listen)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"vtl web: {server.url} (metrics: {server.url}metrics)", flush=True)

    def stop(*_a: object) -> None:
        import threading

        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.command("web")(web)
