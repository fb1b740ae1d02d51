"""A dedup cartridge's stream tail: payloads copied in whole, with or without the C copy."""

from __future__ import annotations

import array
import random

import pytest

from tape_formats.store import stream_tail
from tape_formats.store.stream_tail import BUFFER_SIZE, StreamTail


@pytest.fixture(params=["c", "python"])
def copy_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "c":
        if stream_tail._copy_into is None:
            pytest.skip("_streamfast not built")
    else:
        monkeypatch.setattr(stream_tail, "_copy_into", None)
        monkeypatch.setattr(stream_tail, "_new_buffer", None)
    return request.param


def test_payloads_of_every_kind_land_in_order(copy_kind: str) -> None:
    rng = random.Random(7)
    tail = StreamTail()
    want = bytearray()
    big = rng.randbytes(3 * BUFFER_SIZE // 2)  # bigger than a buffer: a buffer of its own
    for data in (rng.randbytes(10), bytearray(rng.randbytes(300_000)),
                 memoryview(rng.randbytes(200_000))[1000:150_000], b"", big,
                 rng.randbytes(70_000)):
        tail.append(data)
        want += data
    assert tail.view() == want
    used = len(want) - 12_345
    buf = tail.hand_over(used)
    assert buf[:used] == want[:used]
    assert tail.view() == want[used:]


def test_a_buffer_of_any_format_is_copied_as_bytes(copy_kind: str) -> None:
    words = array.array("I", range(50_000))
    dst = bytearray(300_000)
    stream_tail._copy(dst, 7, words)
    assert dst[7:7 + 200_000] == words.tobytes()
    assert not any(dst[:7]) and not any(dst[7 + 200_000:])


def test_a_copy_that_does_not_fit_is_refused() -> None:
    if stream_tail._copy_into is None:
        pytest.skip("_streamfast not built")
    with pytest.raises(ValueError):
        stream_tail._copy_into(bytearray(4), 2, b"abc")
    with pytest.raises(ValueError):
        stream_tail._copy_into(bytearray(4), -1, b"a")
    with pytest.raises(BufferError):
        stream_tail._copy_into(b"read only", 0, b"a")


def test_new_buffer_is_a_bytearray_of_the_size_asked() -> None:
    if stream_tail._new_buffer is None:
        pytest.skip("_streamfast not built")
    for n in (0, 1, 5 << 20):
        buf = stream_tail._new_buffer(n)
        assert type(buf) is bytearray and len(buf) == n
    with pytest.raises(ValueError):
        stream_tail._new_buffer(-1)
