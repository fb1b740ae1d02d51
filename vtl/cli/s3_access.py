"""The object store as the CLI reaches it: a client from library.toml's ``[s3]`` table and the
environment (vtl/s3_settings.py), and the store's own errors as one-line CLI failures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from vtl.cli.errors import OperationFailed


@contextlib.contextmanager
def object_store(lib: Any, location: str | None, *, endpoint: str | None = None,
                 need_location: bool = True) -> Iterator[tuple[Any, str, str]]:
    """(client, bucket, prefix) for ``location`` or the configured one; an error the store
    or the network raises inside becomes OperationFailed (exit 1), one line."""
    settings = lib.config.s3
    bucket, prefix = settings.target(location) if need_location or location else ("", "")
    client = settings.client(endpoint)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield client, bucket, prefix
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise OperationFailed(f"object store: {err.get('Code', '?')} "
                              f"{err.get('Message') or ''}".strip()) from None
    except BotoCoreError as exc:
        raise OperationFailed(f"object store: {exc}") from None
