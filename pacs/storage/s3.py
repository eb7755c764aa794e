"""Object store on S3 or MinIO, through the ``minio`` client."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from pacs.errors import StorageUnavailable
from pacs.storage.objects import INSTANCE_SUFFIX, ObjectInfo, ObjectNotFound, check_key

T = TypeVar("T")
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NotFound"}
DICOM_CONTENT_TYPE = "application/dicom"


class _ResponseStream(io.RawIOBase):
    """A urllib3 response as a file object that returns its connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._response.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class S3ObjectStore:
    """Objects in one bucket; S3 PUTs are durable and atomic when they return."""

    name = "s3"

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = True,
        region: str = "",
        create_bucket: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        self.bucket = bucket
        # A modality waits on us: a dead or hung endpoint must become a clear "out
        # of resources" status within seconds, not a hung association. The read
        # timeout bounds silence between bytes, not a whole (large) transfer, and
        # a read that timed out is not retried: a hung server will not answer.
        http = urllib3.PoolManager(
            num_pools=4,
            maxsize=16,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=urllib3.Retry(
                total=2,
                connect=2,
                read=0,
                backoff_factor=0.2,
                status_forcelist=[500, 502, 503, 504],
            ),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region or None,
            http_client=http,
        )
        if create_bucket:
            self._call(f"bucket {bucket}", self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise ObjectNotFound(f"object {what} is missing") from exc
            raise StorageUnavailable(f"S3 error on {what}: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StorageUnavailable(f"S3 unreachable for {what}: {exc}") from exc

    def put_file(self, key: str, path: Path, *, consume: bool, synced: bool = False) -> None:
        check_key(key)
        self._call(
            key,
            lambda: self.client.fput_object(
                self.bucket, key, str(path), content_type=DICOM_CONTENT_TYPE
            ),
        )
        if consume:
            path.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        check_key(key)
        self._call(
            key,
            lambda: self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=DICOM_CONTENT_TYPE
            ),
        )

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        response = self._call(key, lambda: self.client.get_object(self.bucket, key))
        return io.BufferedReader(_ResponseStream(response), 1 << 16)  # type: ignore[return-value]

    def read_range(self, key: str, start: int, length: int) -> bytes:
        check_key(key)
        if length <= 0:
            return b""

        def fetch() -> bytes:
            try:
                response = self.client.get_object(self.bucket, key, offset=start, length=length)
            except S3Error as exc:
                # Past the end: S3 says 416; a file would read nothing, and so do we.
                if exc.code == "InvalidRange":
                    return b""
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(key, fetch)

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        check_key(key)
        try:
            self._call(key, lambda: self.client.stat_object(self.bucket, key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._call(key, lambda: self.client.remove_object(self.bucket, key))
        except ObjectNotFound:
            return

    def iter_objects(self) -> Iterator[ObjectInfo]:
        listing = self._call(
            "listing", lambda: self.client.list_objects(self.bucket, recursive=True)
        )
        try:
            for obj in listing:
                name = obj.object_name or ""
                if name.endswith(INSTANCE_SUFFIX) and obj.last_modified is not None:
                    yield ObjectInfo(name, int(obj.size or 0), obj.last_modified)
        except (S3Error, MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StorageUnavailable(f"S3 listing failed: {exc}") from exc

    def free_bytes(self) -> int | None:
        return None

    def check(self) -> None:
        self._call("bucket", lambda: self.client.bucket_exists(self.bucket))
