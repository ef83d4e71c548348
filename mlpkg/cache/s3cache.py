"""``s3://`` caches (see :mod:`mlpkg.cache.transport` for the contract).

``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1``: keys live under
``prefix/`` in ``bucket``; ``endpoint`` (an S3-compatible server, addressed path-style) and
``region`` are optional; credentials come from boto3's default chain (environment, shared
files, instance roles). Needs boto3, the ``s3`` extra: ``pip install 'mlpkg[s3]'``.

One boto3 client is created per transport and shared by all threads (clients are
thread-safe, sessions are not); botocore's own retries are off, this module retries
(:func:`mlpkg.cache.transport.retrying`). Files up to :data:`MULTIPART_THRESHOLD` are
stored with one PUT, larger ones with a multipart upload (parts of :func:`part_size`),
aborted if it fails; both become visible only when complete.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from mlpkg.cache.transport import (
    CHUNK,
    HAS_WORKERS,
    Transport,
    _check_prefix,
    check_key,
    display_url,
    parallel_has,
    retrying,
    split_url,
    timeouts,
)
from mlpkg.errors import BadInput, CacheError, CacheMissing, CacheUnavailable
from mlpkg.store.http import describe

__all__ = ["MAX_PARTS", "MIN_PART", "MULTIPART_THRESHOLD", "S3Transport", "part_size"]

MIB = 1 << 20
MULTIPART_THRESHOLD = 64 * MIB
"""Files larger than this are uploaded in parts."""
MIN_PART = 8 * MIB
"""The smallest part of a multipart upload (S3 wants at least 5 MiB but for the last)."""
MAX_PARTS = 10_000
"""S3's limit on the parts of one upload."""

ABSENT_CODES = frozenset({"NoSuchKey", "NotFound", "404", "403", "AccessDenied"})
TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"}
)

_T = TypeVar("_T")


def part_size(size: int) -> int:
    """The part size for a multipart upload of ``size`` bytes: enough that at most
    :data:`MAX_PARTS` parts are needed, at least :data:`MIN_PART`, in whole MiB."""
    wanted = max(MIN_PART, -(-size // MAX_PARTS))
    return -(-wanted // MIB) * MIB


def _timestamp(item: Any) -> float:
    """The POSIX time of an object listed by ``list_objects_v2`` (its LastModified, a
    datetime that botocore gives in UTC; a naive one is taken as UTC)."""
    when: datetime.datetime = item["LastModified"]
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _status(exc: Any) -> tuple[str, int]:
    """The error code and HTTP status of a botocore ClientError."""
    response = getattr(exc, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


class S3Transport(Transport):
    """A cache in an S3 bucket (see the module docstring)."""

    def __init__(self, url: str) -> None:
        url, _params = split_url(url)
        self.url = display_url(url)
        parts = urlsplit(url)
        self._bucket = parts.netloc
        self._prefix = _check_prefix(parts.path.strip("/"))
        options = dict(parse_qsl(parts.query))
        unknown = sorted(set(options) - {"endpoint", "region"})
        if not self._bucket or unknown:
            raise BadInput(
                f"The cache URL {self.url} is not s3://bucket[/prefix][?endpoint=URL&region=R]"
                + (f" (unknown: {', '.join(unknown)})." if unknown else ".")
            )
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:
            raise BadInput("s3:// caches need boto3: pip install 'mlpkg[s3]'.") from exc
        self._errors = botocore.exceptions
        connect, read = timeouts()
        endpoint = options.get("endpoint")
        config = botocore.config.Config(
            connect_timeout=connect,
            read_timeout=read,
            retries={"total_max_attempts": 1},
            max_pool_connections=2 * HAS_WORKERS,
            s3={"addressing_style": "path"} if endpoint else None,
        )
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=options.get("region"), config=config
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self._prefix}/{key}" if self._prefix else key

    def _transient(self, exc: BaseException) -> bool:
        e = self._errors
        if isinstance(exc, e.ClientError):
            code, status = _status(exc)
            return status >= 500 or status in (408, 429) or code in TRANSIENT_CODES
        return isinstance(exc, e.ConnectionError | e.HTTPClientError | e.IncompleteReadError)

    def _absent(self, exc: BaseException) -> bool:
        return isinstance(exc, self._errors.ClientError) and _status(exc)[0] in ABSENT_CODES

    def _call(self, call: Callable[[], _T], what: str) -> _T:
        """``call()`` retried; a cache that stays down is CacheUnavailable, another botocore
        failure (no credentials, a bad parameter) CacheError. ClientErrors that are not
        transient pass, for the caller to read."""

        def fail(exc: BaseException) -> CacheUnavailable:
            return CacheUnavailable(
                f"The cache {self.url} is unreachable: {what} failed ({describe(exc)}).",
                cache=self.url,
            )

        try:
            return retrying(call, transient=self._transient, fail=fail)
        except self._errors.ClientError:
            raise
        except self._errors.BotoCoreError as exc:
            raise CacheError(
                f"The cache {self.url} failed {what}: {describe(exc)}.", cache=self.url
            ) from exc

    def _refused(self, what: str, exc: BaseException) -> CacheError:
        code, status = _status(exc)
        return CacheError(
            f"The cache {self.url} refused {what}: {code or 'error'} (HTTP {status}).",
            cache=self.url,
        )

    def get(self, key: str) -> bytes | None:
        name = self._key(key)

        def read() -> bytes:
            body = self._client.get_object(Bucket=self._bucket, Key=name)["Body"]
            with contextlib.closing(body):
                data: bytes = body.read()
                return data

        try:
            return self._call(read, f"reading {key}")
        except self._errors.ClientError as exc:
            if self._absent(exc):
                return None
            raise self._refused(f"reading {key}", exc) from exc

    @contextlib.contextmanager
    def stream(self, key: str) -> Iterator[Iterator[bytes]]:
        name, what = self._key(key), f"reading {key}"
        try:
            response = self._call(
                lambda: self._client.get_object(Bucket=self._bucket, Key=name), what
            )
        except self._errors.ClientError as exc:
            if self._absent(exc):
                raise CacheMissing(f"The cache {self.url} has no {key}.", cache=self.url) from exc
            raise self._refused(what, exc) from exc
        body = response["Body"]
        with contextlib.closing(body):
            yield self._pieces(body, what)

    def _pieces(self, body: Any, what: str) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except self._errors.BotoCoreError as exc:
            raise CacheUnavailable(
                f"The cache {self.url} is unreachable: {what} failed ({describe(exc)}).",
                cache=self.url,
            ) from exc

    def _exists(self, key: str) -> bool:
        name = self._key(key)
        try:
            self._call(
                lambda: self._client.head_object(Bucket=self._bucket, Key=name),
                f"looking up {key}",
            )
        except self._errors.ClientError as exc:
            if self._absent(exc):
                return False
            raise self._refused(f"looking up {key}", exc) from exc
        return True

    def has(self, keys: Sequence[str]) -> set[str]:
        return parallel_has(keys, self._exists)

    def put(self, key: str, source: bytes | Path) -> None:
        name, what = self._key(key), f"storing {key}"
        try:
            if isinstance(source, Path) and source.stat().st_size > MULTIPART_THRESHOLD:
                self._put_parts(name, source, what)
                return

            def put_once() -> None:
                if isinstance(source, bytes):
                    self._client.put_object(Bucket=self._bucket, Key=name, Body=source)
                    return
                with source.open("rb") as f:
                    self._client.put_object(Bucket=self._bucket, Key=name, Body=f)

            self._call(put_once, what)
        except self._errors.ClientError as exc:
            raise self._refused(what, exc) from exc

    def _put_parts(self, name: str, source: Path, what: str) -> None:
        """A multipart upload of ``source``, aborted if any step fails."""
        client, bucket = self._client, self._bucket
        size = part_size(source.stat().st_size)
        created = self._call(lambda: client.create_multipart_upload(Bucket=bucket, Key=name), what)
        upload_id = created["UploadId"]
        try:
            parts: builtins.list[dict[str, Any]] = []
            with source.open("rb") as f:
                while data := f.read(size):
                    number = len(parts) + 1
                    upload = functools.partial(
                        client.upload_part,
                        Bucket=bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                    )
                    parts.append({"ETag": self._call(upload, what)["ETag"], "PartNumber": number})
            self._call(
                lambda: client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
                what,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
            raise

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for key, size, _mtime in self.list_mtimes(prefix):
            yield key, size

    def list_mtimes(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        """As :meth:`Transport.list_mtimes`: ``list_objects_v2``'s LastModified (when the
        object was last written, by the server's clock)."""
        sub = _check_prefix(prefix)
        base = f"{self._prefix}/" if self._prefix else ""
        full = f"{base}{sub}/" if sub else base
        what = f"listing {sub or 'the cache'}"
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self._bucket, "Prefix": full}
            if token:
                args["ContinuationToken"] = token
            try:
                page = self._call(functools.partial(self._client.list_objects_v2, **args), what)
            except self._errors.ClientError as exc:
                raise self._refused(what, exc) from exc
            for item in page.get("Contents", []):
                yield item["Key"][len(base) :], int(item["Size"]), _timestamp(item)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def delete(self, key: str) -> None:
        name = self._key(key)
        try:
            self._call(
                lambda: self._client.delete_object(Bucket=self._bucket, Key=name),
                f"deleting {key}",
            )
        except self._errors.ClientError as exc:
            if not self._absent(exc):
                raise self._refused(f"deleting {key}", exc) from exc

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()
