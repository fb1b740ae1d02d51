"""A dedup cartridge's stream tail: payloads copied in whole, with or without the C copy."""

from __future__ import annotations

import array
import random

import pytest

from tape_formats.store import stream_tail
from tape_formats.store.stream_tail import BUFFER_SIZE, HEADROOM, StreamTail


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
    buf, start, end = tail.take()
    assert buf[start:end] == want
    assert len(tail) == 0 and tail.room() == BUFFER_SIZE - HEADROOM


def test_what_a_batch_left_uncut_goes_in_front_of_the_next(copy_kind: str) -> None:
    rng = random.Random(8)
    tail = StreamTail()
    first, second = rng.randbytes(4 << 20), rng.randbytes(300_000)
    tail.append(first)
    buf, start, end = tail.take()
    tail.append(second)
    carried = bytes(buf[end - 200_000:end])  # the batch's last chunk, not cut
    tail.prepend(carried)  # a settled writer: the carry back in front of its tail
    assert tail.view() == carried + second
    nxt, s, e = tail.take()
    given: list[bytearray] = []
    assert stream_tail.join(b"", nxt, s, e, given.append) == (nxt, s, e)
    # the cut thread: the carry in the headroom, the batch not moved
    joined, js, je = stream_tail.join(b"x" * 1000, nxt, s, e, given.append)
    assert joined is nxt and js == s - 1000 and joined[js:je] == b"x" * 1000 + carried + second
    # no headroom left: a buffer of its own, the old one given back
    big = rng.randbytes(HEADROOM)
    whole = big + bytes(joined[js:je])
    joined, js, je = stream_tail.join(big, nxt, js, je, given.append)
    assert joined is not nxt and given == [nxt] and joined[js:je] == whole


def test_a_tail_reset_to_bytes_takes_more_in_front_and_behind(copy_kind: str) -> None:
    tail = StreamTail()
    tail.reset(b"middle")
    tail.prepend(b"front ")  # no headroom in a reset tail: moved to a buffer with one
    tail.append(b" back")
    tail.prepend(b"> ")
    assert tail.view() == b"> front middle back"
    tail.cut_back(7)
    assert tail.view() == b"> front"


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
