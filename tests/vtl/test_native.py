"""vtl.native.optional_extension: a missing, turned-off or outdated extension falls back."""

from __future__ import annotations

import pytest

from vtl import native


def test_present_module_with_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    assert native.optional_extension("json", "dumps", "loads") is not None


def test_module_built_without_a_needed_function_falls_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    assert native.optional_extension("json", "dumps", "no_such_function") is None


def test_missing_or_disabled_module_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    assert native.optional_extension("vtl._no_such_extension") is None
    monkeypatch.setenv(native.DISABLE_ENV, "1")
    assert native.optional_extension("json") is None
