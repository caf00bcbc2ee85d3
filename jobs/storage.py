"""Object storage behind one small interface: an S3 bucket (boto3) or a local directory.

Torch- and Celery-free: the API imports it to presign downloads. Keys follow the layout in
``jobs.contract``. Errors are split the way retries need them: :class:`TransientStorageError`
(connection problems, 5xx, throttling: retry with backoff) versus :class:`ObjectNotFound` and
:class:`StorageError` (permanent).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from jobs.errors import ErrorCode, ServiceError
from jobs.settings import StorageSettings

_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "503",
    "500",
    "502",
    "504",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


class StorageError(ServiceError):
    """Raised when storage refuses an operation for a reason a retry will not fix."""

    code = ErrorCode.STORAGE_ERROR


class TransientStorageError(StorageError):
    """Raised when storage is unreachable, overloaded or answers 5xx: retry with backoff."""

    code = ErrorCode.STORAGE_UNAVAILABLE


class ObjectNotFound(StorageError):
    """Raised when a key does not exist."""

    code = ErrorCode.OBJECT_NOT_FOUND


class BucketNotFound(StorageError):
    """Raised when the bucket itself does not exist (a permanent storage error, not a missing key)."""


CHUNK_BYTES = 1 << 16  # what a stream yields at a time


@dataclass
class StoredObject:
    """An object opened for reading: its size and a stream of its bytes (read once, then closed)."""

    key: str
    size: int
    chunks: Iterator[bytes]
    close: Callable[[], None]


class Storage(Protocol):
    """What the worker and the API need from storage (S3 and local disk alike)."""

    backend: str

    def ensure_bucket(self) -> None: ...
    def ping(self) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def get_bytes(self, key: str) -> bytes: ...
    def open(self, key: str) -> StoredObject:
        """The object as a stream (nothing read yet); :class:`ObjectNotFound` when it is missing."""
        ...

    def put_bytes(self, key: str, data: bytes, *, content_type: str, filename: str | None = None) -> None: ...
    def put_file(self, key: str, fileobj: IO[bytes], *, content_type: str, filename: str | None = None) -> None: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many (shared by both backends)."""
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def presign(self, key: str, *, filename: str | None = None, expires_s: int | None = None) -> str | None: ...


def open_storage(settings: StorageSettings) -> Storage:
    """S3 when an endpoint is configured, else the local directory (DESIGN §4)."""
    if settings.backend == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.local_dir)


def _disposition(filename: str | None) -> dict[str, str]:
    return {"ContentDisposition": f'attachment; filename="{filename}"'} if filename else {}


def _no_bucket(bucket: str) -> BucketNotFound:
    return BucketNotFound(f"bucket {bucket!r} does not exist (ECHO_S3_BUCKET)")


@contextmanager
def _translated(key: str, bucket: str) -> Iterator[None]:
    """Turn botocore errors on ``key`` of ``bucket`` into our named storage errors."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            raise _no_bucket(bucket) from None
        if code in _NOT_FOUND_CODES or status == 404:
            raise ObjectNotFound(f"no object {key!r}") from None
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            raise TransientStorageError(f"storage busy or failing on {key!r}: {code} {status}") from exc
        raise StorageError(f"storage refused {key!r}: {code} {error.get('Message', '')}".strip()) from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise TransientStorageError(f"storage unreachable for {key!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"storage error on {key!r}: {exc}") from exc


class S3Storage(Storage):
    """One bucket on an S3-compatible server; presigns with the public endpoint when it differs."""

    backend = "s3"

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.client = self._client(settings.endpoint_url)
        public = settings.public_endpoint_url
        # SigV4 signs the Host header: a URL for clients outside the network needs its own client.
        self.presign_client = self._client(public) if public and public != settings.endpoint_url else self.client
        self.transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold, multipart_chunksize=settings.multipart_chunksize
        )

    def _client(self, endpoint: str | None) -> Any:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=self.settings.region,
            aws_access_key_id=self.settings.access_key_id,
            aws_secret_access_key=self.settings.secret_access_key,
            config=config,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (idempotent)."""
        with _translated(self.bucket, self.bucket):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404 and exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def ping(self) -> None:
        try:
            with _translated(self.bucket, self.bucket):
                self.client.head_bucket(Bucket=self.bucket)
        except ObjectNotFound:  # HEAD answers a bare 404 (no error code) for a missing bucket
            raise _no_bucket(self.bucket) from None

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        with _translated(key, self.bucket):
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def head(self, key: str) -> dict[str, Any]:
        with _translated(key, self.bucket):
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))

    def get_bytes(self, key: str) -> bytes:
        with _translated(key, self.bucket):
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def open(self, key: str) -> StoredObject:
        with _translated(key, self.bucket):
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        body = obj["Body"]

        def chunks() -> Iterator[bytes]:
            with _translated(key, self.bucket):
                yield from body.iter_chunks(CHUNK_BYTES)

        return StoredObject(key, int(obj["ContentLength"]), chunks(), body.close)

    def put_bytes(self, key: str, data: bytes, *, content_type: str, filename: str | None = None) -> None:
        with _translated(key, self.bucket):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **_disposition(filename)
            )

    def put_file(self, key: str, fileobj: IO[bytes], *, content_type: str, filename: str | None = None) -> None:
        """Upload a file object; multipart above the configured threshold."""
        extra = {"ContentType": content_type, **_disposition(filename)}
        with _translated(key, self.bucket):
            self.client.upload_fileobj(fileobj, self.bucket, key, ExtraArgs=extra, Config=self.transfer)

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with _translated(prefix, self.bucket):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def delete(self, key: str) -> None:
        with _translated(key, self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def presign(self, key: str, *, filename: str | None = None, expires_s: int | None = None) -> str | None:
        """A GET URL for clients (public endpoint), valid ``expires_s`` (default from settings)."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        with _translated(key, self.bucket):
            return str(
                self.presign_client.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=expires_s or self.settings.presign_expires_s
                )
            )


class LocalStorage(Storage):
    """The same key layout in a local directory (one machine, no S3). Writes are atomic renames.

    ``presign`` returns None: the API streams ``open(key)`` itself. Content types are not
    stored; the reader derives them from the key's extension (``contract.OUTPUT_FORMATS``).
    """

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file for ``key``; keys that would escape the root are refused."""
        parts = Path(key).parts
        if not key or Path(key).is_absolute() or ".." in parts:
            raise StorageError(f"invalid storage key {key!r}")
        return self.root / key

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise TransientStorageError(f"storage directory {self.root} is missing or not writable")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r}") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r}") from None

    def open(self, key: str) -> StoredObject:
        try:
            handle = self.path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r}") from None
        size = os.fstat(handle.fileno()).st_size
        return StoredObject(key, size, iter(lambda: handle.read(CHUNK_BYTES), b""), handle.close)

    def put_bytes(self, key: str, data: bytes, *, content_type: str, filename: str | None = None) -> None:
        self._write(key, lambda out: out.write(data))

    def put_file(self, key: str, fileobj: IO[bytes], *, content_type: str, filename: str | None = None) -> None:
        self._write(key, lambda out: shutil.copyfileobj(fileobj, out))

    def _write(self, key: str, fill: Any) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def list_keys(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".tmp-"))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def presign(self, key: str, *, filename: str | None = None, expires_s: int | None = None) -> str | None:
        return None
