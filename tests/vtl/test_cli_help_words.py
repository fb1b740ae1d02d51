"""Every ``--help`` of ``vtl`` and ``ebm`` names its placeholders with words (``--pool POOL``,
``--chap-secret-file FILE``, ``--count N``), never typer's ``<str>`` or ``<list[str]>``."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from ebm.cli import app as ebm_app
from vtl.cli.main import app as vtl_app


def command_paths(group, prefix=()):
    yield prefix
    for name, sub in getattr(group, "commands", {}).items():
        yield from command_paths(sub, (*prefix, name))


@pytest.mark.parametrize("app", [vtl_app, ebm_app], ids=["vtl", "ebm"])
def test_help_placeholders_are_words(app):
    runner = CliRunner()
    paths = list(command_paths(typer.main.get_command(app)))
    assert len(paths) > 20
    for path in paths:
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert not re.search(r"<[a-z][^>]*>", r.output), (path, r.output)
    r = runner.invoke(app, ["completion", "--help"])
    assert "SHELL" in r.output
