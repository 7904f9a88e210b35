"""A model repository in S3-compatible storage (AWS S3, MinIO, Ceph RGW), read the way
repository.report reads a folder, so one `inspect` verifies both.

Where it runs: in the verification Job (`tritonop repo verify-version s3://...`), with the same
credentials Secret the servers get (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_DEFAULT_REGION as environment variables). Never in the operator: it does not hold storage
credentials.

The URI forms are Triton's: `s3://bucket/path` (AWS; region from AWS_DEFAULT_REGION) and
`s3://[http://|https://]host:port/bucket/path` (an endpoint; https unless http:// is given, as
Triton does). A private CA: point SSL_CERT_FILE at its bundle (the servers' AWS SDK reads the
system trust store; mount the bundle there, see the README).

Objects are listed once (one listing of the model's prefix); file bodies are streamed in
HASH_CHUNK_BYTES pieces, so memory stays bounded for any model size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

# Triton's own pattern (core/src/filesystem/implementations/s3.h), plus the AWS form.
ENDPOINT_URI = re.compile(r"^s3://(?:(https?)://)?([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)((?:/[^/]+)*)/?$")
AWS_URI = re.compile(r"^s3://([0-9a-z.\-]+)((?:/[^/]+)*)/?$")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root
    endpoint: str | None  # host:port; None: AWS
    secure: bool = True

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if match := ENDPOINT_URI.match(uri):
            scheme, host, port, bucket, path = match.groups()
            return cls(bucket, path.strip("/"), f"{host}:{port}", scheme != "http")
        if match := AWS_URI.match(uri):
            bucket, path = match.groups()
            return cls(bucket, path.strip("/"), None)
        raise ValueError(f"{uri!r} is not s3://bucket/path nor s3://[http(s)://]host:port/bucket/path")


class S3Path:
    """The few read-only Path operations repository.report and .manifests use, over one listing of a bucket
    prefix. Folders are key prefixes (S3 has no folders); str() is the s3:// URI."""

    def __init__(
        self,
        uri: str,
        keys: frozenset[str],
        client: Any,
        location: S3Location,
        key: str = "",
        objects: Mapping[str, ObjectInfo] | None = None,
    ) -> None:
        self.uri = uri.rstrip("/")
        self._keys = keys  # every object key under the listed prefix, relative to location.prefix
        self._client = client
        self._location = location
        self._key = key  # relative to location.prefix
        self._objects: Mapping[str, ObjectInfo] = objects or {}  # size and ETag by key, from the listing

    @classmethod
    def open_repository(cls, uri: str, credentials: S3Credentials, subtree: str = "") -> S3Path:
        """The repository at uri; objects under uri/subtree (e.g. the model's folder) are listed."""
        location = S3Location.parse(uri)
        client = s3_client(location, credentials)
        base = f"{location.prefix}/" if location.prefix else ""
        listed = client.list_objects(location.bucket, prefix=base + subtree.strip("/"), recursive=True)
        objects = {
            obj.object_name[len(base) :]: ObjectInfo(int(obj.size or 0), (obj.etag or "").strip('"') or None)
            for obj in listed
            if not obj.is_dir
        }
        return cls(uri, frozenset(objects), client, location, objects=objects)

    def __truediv__(self, part: str) -> S3Path:
        key = f"{self._key}/{part}".strip("/")
        return S3Path(self.uri, self._keys, self._client, self._location, key, self._objects)

    def info(self) -> ObjectInfo:
        """The object's size and ETag as the listing gave them (no request: the node cache sizes a
        version and notices overwritten objects from one listing)."""
        if not self.is_file():
            raise FileNotFoundError(str(self))
        return self._objects.get(self._key, ObjectInfo(-1, None))

    def files(self) -> list[str]:
        """Every object under this prefix, relative to it (like rglob's files)."""
        prefix = f"{self._key}/" if self._key else ""
        return sorted(key[len(prefix) :] for key in self._keys if key.startswith(prefix))

    def __str__(self) -> str:
        return f"{self.uri}/{self._key}" if self._key else self.uri

    @property
    def name(self) -> str:
        return self._key.rsplit("/", 1)[-1]

    def is_file(self) -> bool:
        return self._key in self._keys

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_dir(self) -> bool:
        if not self._key:
            return True  # the bucket (prefix) itself: a listing that found nothing proves little
        prefix = self._key + "/"
        return any(key.startswith(prefix) for key in self._keys)

    def iterdir(self) -> Iterator[S3Path]:
        prefix = f"{self._key}/" if self._key else ""
        children = {key[len(prefix) :].split("/", 1)[0] for key in self._keys if key.startswith(prefix)}
        for child in sorted(children):
            yield self / child

    def read_text(self) -> str:
        with self.open("rb") as body:
            return body.read().decode()

    def open(self, mode: str = "rb") -> BinaryIO:
        if mode != "rb":
            raise ValueError("S3Path is read-only")
        if not self.is_file():
            raise FileNotFoundError(str(self))
        base = f"{self._location.prefix}/" if self._location.prefix else ""
        response = self._client.get_object(self._location.bucket, base + self._key)
        return cast(BinaryIO, _Body(response))


@dataclass(frozen=True)
class ObjectInfo:
    size: int  # -1: not known (a listing without sizes)
    etag: str | None  # without the quotes S3 puts around it


class _Body:
    """A streamed GET body as a file object that releases its connection when closed."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._response.read(None if size < 0 else size)
        return data

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *_: object) -> None:
        self._response.close()
        self._response.release_conn()


@dataclass(frozen=True)
class S3Credentials:
    """The servers' S3 settings (their Secret's AWS_* variables); None: anonymous / not set."""

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> S3Credentials:
        return cls(
            access_key=environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=environ.get("AWS_SECRET_ACCESS_KEY"),
            session_token=environ.get("AWS_SESSION_TOKEN"),
            region=environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or None,
        )


def s3_client(location: S3Location, credentials: S3Credentials) -> Any:
    """A MinIO SDK client (it speaks S3 to any of these stores)."""
    from minio import Minio  # imported here: only the verification Job needs it

    return Minio(
        location.endpoint or "s3.amazonaws.com",
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.session_token,
        region=credentials.region,
        secure=location.secure,
    )
