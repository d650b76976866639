"""An S3 bucket as the line's landing zone (``granvae-edge ship --to s3://bucket/prefix``).

Same layout and rules as a folder (ship.py): keys ``<prefix>/objects/<sha256>.<ext>``,
``records/``, ``stream/``, ``feedback/``. Each upload carries its sha256 twice: as
``ChecksumSHA256``, so S3 refuses a body that arrives different from what was sent (AWS S3
and MinIO check it; moto's test server does not), and as
object metadata ``sha256``, which is how a repeated ship sees that a key already holds these
bytes and skips it. An upload counts as confirmed only when S3 answered it and its ETag (the
MD5 of a single-part upload) equals the MD5 of the bytes read from the spool; only then may
ship delete the spool's copy. (A bucket encrypting with SSE-KMS answers ETags that are not
MD5s: every upload then stays unconfirmed and nothing leaves the spool; not supported yet.)

Credentials are boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile,
an instance role); the endpoint is ``--endpoint-url`` or AWS_ENDPOINT_URL (MinIO, the stack's
moto server). boto3 is an optional dependency of the device: ``pip install granvae-edge[s3]``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .ship import ShipError


def _client(endpoint_url: str | None) -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ShipError("shipping to s3:// needs boto3: pip install 'granvae-edge[s3]'") from exc
    return boto3.client("s3", endpoint_url=endpoint_url)


@dataclass
class S3Landing:
    bucket: str
    prefix: str
    client: Any

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None) -> S3Landing:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ShipError(f"--to {url}: expected s3://bucket[/prefix]")
        prefix = parsed.path.strip("/")
        return cls(parsed.netloc, f"{prefix}/" if prefix else "", _client(endpoint_url))

    def _errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _stored_sha(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head.get("Metadata", {}).get("sha256")

    def put(self, key: str, src: Path, sha256: str) -> bool:
        full = self.prefix + key
        try:
            if self._stored_sha(full) == sha256:
                return False
            body = Path(src).read_bytes()
            if hashlib.sha256(body).hexdigest() != sha256:
                raise ShipError(f"{src} changed on disk: it no longer hashes to {sha256}")
            answer = self.client.put_object(
                Bucket=self.bucket, Key=full, Body=body, Metadata={"sha256": sha256},
                ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode("ascii"),
            )  # fmt: skip
        except self._errors() as exc:
            raise ShipError(f"s3://{self.bucket}/{full}: {exc}") from exc
        if answer.get("ETag", "").strip('"') != hashlib.md5(body).hexdigest():  # noqa: S324
            raise ShipError(f"s3://{self.bucket}/{full}: the stored ETag does not match the bytes")
        return True

    def has_object(self, sha256: str) -> bool:
        try:
            listed = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.prefix}objects/{sha256}.", MaxKeys=1)
        except self._errors() as exc:
            raise ShipError(f"s3://{self.bucket}/{self.prefix}objects: {exc}") from exc
        return listed.get("KeyCount", 0) > 0
