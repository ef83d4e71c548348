"""Reading a remote wheel's METADATA by HTTP range requests (mlpkg.importer.metadata)."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable

import httpx
import pytest

from mlpkg.errors import FetchError
from mlpkg.importer.metadata import (
    TAIL_BYTES,
    fetch_metadata_file,
    parse_metadata,
    read_remote_wheel_metadata,
)

MB = 1024 * 1024


def _serve(fake_index: Callable[..., object], whl: object, **options: object) -> tuple[object, str]:
    index = fake_index(**options)
    path = index.add(whl)  # type: ignore[attr-defined]
    return index, f"http://127.0.0.1:{index.port}{path}"  # type: ignore[attr-defined]


def test_metadata_at_the_end_is_read_with_one_suffix_range(fake_index, wheel, client):
    whl = wheel("bigpkg", "1.0", padding=4 * MB, requires_dist=("numpy>=1.21",))
    index, url = _serve(fake_index, whl)
    text = read_remote_wheel_metadata(client, url)
    assert text == whl.metadata
    requests = index.requests_to(url.split(str(index.port))[1])
    assert [r.headers.get("range") for r in requests] == [f"bytes=-{TAIL_BYTES}"]
    assert all(r.status == 206 for r in requests)
    assert index.sent(requests[0].path) <= TAIL_BYTES < len(whl.data) // 50


def test_metadata_at_the_start_is_read_by_offset(fake_index, wheel, client):
    whl = wheel("firstpkg", "2.0", padding=4 * MB, metadata_first=True)
    assert zipfile.ZipFile(io.BytesIO(whl.data)).namelist()[0].endswith("dist-info/METADATA")
    index, url = _serve(fake_index, whl)
    assert read_remote_wheel_metadata(client, url) == whl.metadata
    path = url.split(str(index.port))[1]
    ranges = [r.headers.get("range") for r in index.requests_to(path)]
    assert ranges[0] == f"bytes=-{TAIL_BYTES}"
    assert len(ranges) == 2 and ranges[1].startswith("bytes=0-")
    assert index.sent(path) < 100_000 < len(whl.data)


def _sentinel_eocd(data: bytes) -> bytes:
    """Set the classic EOCD's counts, size and offset to their ZIP64 sentinels."""
    at = data.rfind(b"PK\x05\x06")
    head = struct.pack("<4sHHHHII", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return data[:at] + head + data[at + len(head) :]


@pytest.mark.parametrize("sentinels", [False, True])
def test_zip64_wheels(fake_index, wheel, client, sentinels):
    whl = wheel("zipsixtyfour", "1.0", padding=1 * MB, zip64=True, metadata_first=True)
    assert b"PK\x06\x06" in whl.data and b"PK\x06\x07" in whl.data  # ZIP64 EOCD and locator
    with zipfile.ZipFile(io.BytesIO(whl.data)) as zf:  # ZIP64 extras in the central directory
        assert all(info.extra[:2] == b"\x01\x00" for info in zf.infolist()[1:])
    if sentinels:
        whl.data = _sentinel_eocd(whl.data)
        assert zipfile.ZipFile(io.BytesIO(whl.data)).read(zf.namelist()[0]).decode() == whl.metadata
    index, url = _serve(fake_index, whl)
    assert read_remote_wheel_metadata(client, url) == whl.metadata
    assert index.sent(url.split(str(index.port))[1]) < len(whl.data) // 4


def test_a_server_that_ignores_range_gets_the_whole_body_once(fake_index, wheel, client):
    whl = wheel("norange", "1.0", padding=300_000)
    index, url = _serve(fake_index, whl, ranges=False)
    said: list[str] = []
    assert read_remote_wheel_metadata(client, url, on_progress=said.append) == whl.metadata
    path = url.split(str(index.port))[1]
    assert len(index.requests_to(path)) == 1 and index.sent(path) == len(whl.data)
    assert any("ignores HTTP Range" in s and url in s for s in said)


def test_stored_metadata_and_a_long_zip_comment(fake_index, wheel, client):
    whl = wheel("stored", "1.0", stored=True, padding=200_000)
    buf = io.BytesIO(whl.data)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = b"c" * 0xFFFF  # the longest comment: the EOCD 64 KiB from the end
    whl.data = buf.getvalue()
    assert len(whl.data) - whl.data.rfind(b"PK\x05\x06") == 22 + 0xFFFF  # as far back as can be
    index, url = _serve(fake_index, whl)
    assert read_remote_wheel_metadata(client, url) == whl.metadata
    assert len(index.requests_to(url.split(str(index.port))[1])) == 2  # the tail, then METADATA


def test_a_zip64_wheel_with_the_longest_comment(fake_index, wheel, client):
    whl = wheel("commented64", "1.0", padding=1 * MB, zip64=True)
    assert whl.data.endswith(b"\x00\x00")  # the end record's comment length: none yet
    whl.data = whl.data[:-2] + struct.pack("<H", 0xFFFF) + b"c" * 0xFFFF
    assert zipfile.ZipFile(io.BytesIO(whl.data)).comment == b"c" * 0xFFFF
    assert b"PK\x06\x06" in whl.data[-TAIL_BYTES:] and b"PK\x06\x07" in whl.data[-TAIL_BYTES:]
    index, url = _serve(fake_index, whl)
    assert read_remote_wheel_metadata(client, url) == whl.metadata
    path = url.split(str(index.port))[1]
    ranges = [r.headers.get("range") for r in index.requests_to(path)]
    assert len(ranges) == 2 and ranges[0] == f"bytes=-{TAIL_BYTES}"
    assert index.sent(path) < len(whl.data) // 4


def test_a_directory_longer_than_the_tail_takes_one_more_request(fake_index, wheel, client):
    whl = wheel("manyfiles", "1.0", metadata_first=True)
    buf = io.BytesIO(whl.data)
    with zipfile.ZipFile(buf, "a") as zf:
        for i in range(2000):
            zf.writestr(f"manyfiles/sub/a_module_with_a_rather_long_name_{i:05d}.py", "")
        directory = sum(46 + len(info.filename) for info in zf.infolist())
    whl.data = buf.getvalue()
    assert directory > TAIL_BYTES
    index, url = _serve(fake_index, whl)
    assert read_remote_wheel_metadata(client, url) == whl.metadata
    path = url.split(str(index.port))[1]
    ranges = [r.headers.get("range") for r in index.requests_to(path)]
    size = len(whl.data)
    assert ranges[0] == f"bytes=-{TAIL_BYTES}" and ranges[2].startswith("bytes=0-")
    assert len(ranges) == 3 and ranges[1].endswith(f"-{size - TAIL_BYTES - 1}")  # no byte twice


def test_a_corrupt_metadata_member_fails_its_crc(fake_index, wheel, client):
    whl = wheel("corrupt", "1.0", stored=True)
    at = whl.data.find(b"Summary: The corrupt")
    whl.data = whl.data[:at] + b"X" + whl.data[at + 1 :]
    _, url = _serve(fake_index, whl)
    with pytest.raises(FetchError, match="CRC") as info:
        read_remote_wheel_metadata(client, url)
    assert url in info.value.message


def test_not_a_zip_and_no_metadata_are_fetch_errors(fake_index, wheel, client):
    index = fake_index()
    index.blobs["/files/junk-1.0-py3-none-any.whl"] = b"this is not a zip at all" * 100
    junk = f"http://127.0.0.1:{index.port}/files/junk-1.0-py3-none-any.whl"
    with pytest.raises(FetchError, match="not a zip") as info:
        read_remote_wheel_metadata(client, junk)
    assert junk in info.value.message
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("nometa/__init__.py", "")
    index.blobs["/files/nometa-1.0-py3-none-any.whl"] = buf.getvalue()
    with pytest.raises(FetchError, match=r"no \*\.dist-info/METADATA"):
        read_remote_wheel_metadata(client, junk.replace("junk", "nometa"))
    with pytest.raises(FetchError, match="404") as info:
        read_remote_wheel_metadata(client, junk.replace("junk", "missing"))
    assert "missing-1.0" in info.value.message


def test_metadata_file_is_verified(fake_index, wheel, client):
    whl = wheel("withmeta", "1.0")
    index, url = _serve(fake_index, whl, metadata_files=True)
    good = index.projects["withmeta"][0].metadata_sha256
    assert fetch_metadata_file(client, url, good) == whl.metadata
    assert fetch_metadata_file(client, url, None) == whl.metadata
    with pytest.raises(FetchError, match="does not match the sha256"):
        fetch_metadata_file(client, url, "0" * 64)
    assert fetch_metadata_file(client, url.replace("withmeta", "other"), None) is None


def test_parse_metadata():
    meta = parse_metadata(
        "Metadata-Version: 2.1\nName: Foo.Bar\nVersion: 1.0\nSummary:  A thing \n"
        "Requires-Python: >=3.8\nRequires-Dist: numpy>=1; extra == 'x'\nRequires-Dist: six\n"
        "X-Unknown: 1\n\nBody text\n"
    )
    assert (meta.name, meta.version, meta.summary) == ("Foo.Bar", "1.0", "A thing")
    assert meta.requires_python == ">=3.8"
    assert meta.requires_dist == ("numpy>=1; extra == 'x'", "six")
    assert parse_metadata("Name: x\nVersion: 1\n").requires_python is None


def test_user_agent_is_sent(fake_index, wheel):
    from mlpkg import __version__

    whl = wheel("agent", "1.0")
    index, url = _serve(fake_index, whl)
    with httpx.Client(trust_env=False) as own:
        read_remote_wheel_metadata(own, url)
    assert {r.headers["user-agent"] for r in index.log} == {f"mlpkg/{__version__}"}


def _bzip2_metadata(data: bytes) -> bytes:
    """The same wheel with its METADATA compressed by bzip2 (zip method 12)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as old, zipfile.ZipFile(out, "w") as new:
        for info in old.infolist():
            method = (
                zipfile.ZIP_BZIP2 if info.filename.endswith("/METADATA") else info.compress_type
            )
            new.writestr(info, old.read(info), compress_type=method)
    return out.getvalue()


def _broken_deflate(data: bytes) -> bytes:
    """The same wheel with the start of its deflated METADATA garbled (CRC left as is)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/METADATA"))
    at = info.header_offset + 30 + len(info.filename) + len(info.extra)
    return data[:at] + b"\xff" * 8 + data[at + 8 :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:-10], "it is not a zip file"),
        (
            lambda data: data.replace(b"PK\x01\x02", b"PK\x01\x09", 1),
            "its zip directory is corrupt",
        ),
        (_bzip2_metadata, "its METADATA uses zip compression method 12"),
        (_broken_deflate, "its METADATA does not inflate"),
    ],
)
def test_damaged_wheels_are_fetch_errors(fake_index, wheel, client, damage, reason):
    whl = wheel("damaged", "1.0", padding=100_000)
    whl.data = damage(whl.data)
    _, url = _serve(fake_index, whl)
    with pytest.raises(FetchError) as info:
        read_remote_wheel_metadata(client, url)
    assert info.value.message.startswith(
        f"Could not read the metadata of the wheel {url}: {reason}"
    )


def test_a_metadata_too_big_to_read_is_refused(fake_index, wheel, client, monkeypatch):
    from mlpkg.importer import metadata

    whl = wheel("bigmeta", "1.0")
    _, url = _serve(fake_index, whl)
    monkeypatch.setattr(metadata, "_MAX_METADATA", 10)
    with pytest.raises(FetchError, match=r"its METADATA claims \d+ bytes") as info:
        read_remote_wheel_metadata(client, url)
    assert url in info.value.message


def test_a_bad_answer_to_a_range_request_names_the_wheel():
    url = "http://mirror.invalid/files/odd-1.0-py3-none-any.whl"
    answer = httpx.Response(206, content=b"x" * 10)  # no Content-Range
    client = httpx.Client(transport=httpx.MockTransport(lambda request: answer))
    with client, pytest.raises(FetchError) as info:
        read_remote_wheel_metadata(client, url)
    assert info.value.message == (
        f"Could not read the metadata of the wheel {url}: the server's answer to a range "
        "request has no usable Content-Range."
    )
