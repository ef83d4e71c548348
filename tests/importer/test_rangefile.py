"""A remote file read by HTTP range requests (mlpkg.importer.rangefile)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import httpx
import pytest

from mlpkg.errors import FetchError
from mlpkg.importer.rangefile import RangeAnswerError, RangeFile

BLOB = os.urandom(100_000)
PATH = "/files/blob.bin"


def _open(fake_index: Callable[..., object], client: httpx.Client, **options: object) -> tuple:
    ranges = bool(options.pop("ranges", True))
    index = fake_index(ranges=ranges)
    index.blobs[PATH] = BLOB  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{index.port}{PATH}"  # type: ignore[attr-defined]
    return index, RangeFile(client, url, **options)  # type: ignore[arg-type]


def _ranges(index: object) -> list[str | None]:
    return [r.headers.get("range") for r in index.requests_to(PATH)]  # type: ignore[attr-defined]


def test_it_reads_like_a_local_file(fake_index, client):
    index, remote = _open(fake_index, client, tail=1000)
    local = io.BytesIO(BLOB)
    assert remote.size == len(BLOB) and remote.seekable() and remote.readable()
    steps = [(-22, 2, 22), (10, 0, 30), (5, 1, 100), (-5, 2, -1), (10, 2, 7)]
    for offset, whence, size in steps:  # the last reads past the end
        assert remote.seek(offset, whence) == local.seek(offset, whence)
        assert remote.read(size) == local.read(size) and remote.tell() == local.tell()
    with pytest.raises(OSError):
        remote.seek(-1)
    assert remote.seek(-len(BLOB), 2) == 0 and remote.read() == BLOB
    assert _ranges(index)[0] == "bytes=-1000"


def test_bytes_are_fetched_once_and_only_the_missing_part(fake_index, client):
    index, remote = _open(fake_index, client, tail=1000)
    size = len(BLOB)
    remote.seek(-500, 2)
    assert remote.read(200) == BLOB[-500:-300]  # inside the tail: no request
    remote.seek(-3000, 2)
    assert remote.read(2500) == BLOB[-3000:-500]  # only the part before the tail
    assert remote.read(2500) == BLOB[-500:]  # short at the end, and held
    remote.prefetch(10, 20)
    remote.seek(12)
    assert remote.read(5) == BLOB[12:17]
    remote.seek(0)
    assert remote.read(30) == BLOB[:30]  # the hole before and the one after the held span
    assert _ranges(index) == [
        "bytes=-1000",
        f"bytes={size - 3000}-{size - 1001}",
        "bytes=10-19",
        "bytes=0-29",
    ]
    assert remote.read(0) == b"" and len(_ranges(index)) == 4


def test_a_file_shorter_than_the_tail_is_read_whole(fake_index, client):
    index, remote = _open(fake_index, client, tail=10 * len(BLOB))
    assert remote.size == len(BLOB) and remote.read() == BLOB
    assert len(_ranges(index)) == 1


def test_a_server_that_ignores_range_sends_the_whole_file_once(fake_index, client):
    told: list[str] = []
    index, remote = _open(
        fake_index, client, tail=1000, ranges=False, on_whole=lambda: told.append("x")
    )
    assert remote.size == len(BLOB) and told == ["x"]
    remote.seek(40_000)
    assert remote.read(10) == BLOB[40_000:40_010]
    assert len(index.requests_to(PATH)) == 1  # type: ignore[attr-defined]


def _mock(answer: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, b"x" * 10, "no usable Content-Range"),
        ({"Content-Range": "bytes 0-9/*"}, b"x" * 10, "no usable Content-Range"),
        ({"Content-Range": "bytes 90-99/100"}, b"x" * 5, "the server sent 5 bytes for a 10-byte"),
    ],
)
def test_unusable_answers_to_the_suffix_range(headers, body, reason):
    url = "http://mirror.invalid/x.whl"
    client = _mock(lambda request: httpx.Response(206, headers=headers, content=body))
    with client, pytest.raises(RangeAnswerError, match=reason) as info:
        RangeFile(client, url, tail=10)
    assert isinstance(info.value, FetchError)
    assert info.value.message.startswith(f"Could not read {url} by HTTP range requests: ")


def test_an_answer_for_another_range_is_refused():
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["range"] == "bytes=-10":
            return httpx.Response(
                206, headers={"Content-Range": "bytes 90-99/100"}, content=b"t" * 10
            )
        return httpx.Response(206, headers={"Content-Range": "bytes 0-9/100"}, content=b"h" * 10)

    with _mock(answer) as client:
        remote = RangeFile(client, "http://mirror.invalid/x.whl", tail=10)
        remote.seek(50)
        with pytest.raises(RangeAnswerError, match="answered the range 50-59 with another one"):
            remote.read(10)
