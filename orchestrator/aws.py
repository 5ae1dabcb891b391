"""AWS clients and the S3 side of every SageMaker job, over boto3 clients passed in (no SDK):

    s3://BUCKET/odorch/datasets/<hash>/      a converted folder, content-addressed (see dataset_hash)
    s3://BUCKET/odorch/jobs/<job>/...        a job's source, output and checkpoints (backends.sagemaker)
    s3://BUCKET/odorch/models/<job>/...      a deployed model (deploy)
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odorch.archive import package_source, safe_extract
from odorch.errors import PreflightError, SageMakerError

PREFIX = "odorch"


@dataclass
class AwsClients:
    sagemaker: Any
    runtime: Any
    logs: Any
    s3: Any

    @classmethod
    def from_env(cls, region: str | None = None) -> AwsClients:
        """Clients from boto3's usual configuration (AWS_ENDPOINT_URL, profiles, ...)."""
        import boto3

        session = boto3.session.Session(region_name=region)
        if not session.region_name:
            raise PreflightError("no AWS region: pass --region or set AWS_DEFAULT_REGION")
        return cls(
            sagemaker=session.client("sagemaker"),
            runtime=session.client("sagemaker-runtime"),
            logs=session.client("logs"),
            s3=session.client("s3"),
        )

    @property
    def region(self) -> str:
        return self.sagemaker.meta.region_name


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise SageMakerError(f"not an s3:// uri: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def dataset_files(data_dir: Path | str) -> list[tuple[str, Path]]:
    """(relative posix path, file) of what a job needs from a converted folder, sorted:
    annotations/*.json, odorch.json and everything under images/ (hidden files left out)."""
    root = Path(data_dir)
    files = sorted((root / "annotations").glob("*.json"))
    if (root / "odorch.json").is_file():
        files.append(root / "odorch.json")
    if (root / "images").is_dir():
        files += [p for p in (root / "images").rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(((p.relative_to(root).as_posix(), p) for p in files), key=lambda item: item[0])


def dataset_hash(data_dir: Path | str) -> str:
    """16 hex digits of a sha256 over each uploaded file's relative path, size and sha256 of its
    bytes. Content, not mtimes: `convert` hard-links images, so mtimes say little, and hashing
    costs about a second per GB, far less than uploading. Equal hash = equal S3 prefix content."""
    h = hashlib.sha256()
    for rel, path in dataset_files(data_dir):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        h.update(f"{rel}\0{path.stat().st_size}\0{digest.hexdigest()}\n".encode())
    return h.hexdigest()[:16]


def existing_objects(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """{key: size} of every object under prefix."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out


def upload_dataset(clients: AwsClients, data_dir: Path | str, bucket: str, *,
                   echo: Callable[[str], None] | None = None) -> str:
    """Upload a converted folder to s3://bucket/odorch/datasets/<hash>/ (objects already there
    with the same size are skipped: the prefix is content-addressed) and return that uri."""
    prefix = f"{PREFIX}/datasets/{dataset_hash(data_dir)}/"
    existing = existing_objects(clients.s3, bucket, prefix)
    uploaded = skipped = 0
    for rel, path in dataset_files(data_dir):
        key = prefix + rel
        if existing.get(key) == path.stat().st_size:
            skipped += 1
            continue
        clients.s3.upload_file(str(path), bucket, key)
        uploaded += 1
    uri = f"s3://{bucket}/{prefix}"
    if echo:
        echo(f"dataset {uri}: {uploaded} file(s) uploaded, {skipped} already there")
    return uri


def check_bucket(clients: AwsClients, bucket: str) -> list[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    if not bucket:
        return ["no --bucket: give an S3 bucket in the job's region for data, code and models"]
    try:
        clients.s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return [f"--bucket {bucket}: no such bucket; create it (aws s3 mb s3://{bucket} --region {clients.region}) or pass another"]
        if code in ("403", "AccessDenied", "Forbidden"):
            return [f"--bucket {bucket}: access denied; use a bucket your credentials (and the role) may read and write"]
        return [f"--bucket {bucket}: {e}"]
    except BotoCoreError as e:
        return [f"cannot reach S3 to check --bucket {bucket}: {e}; check credentials, --region and the network"]
    return []


def download_model(clients: AwsClients, uri: str, model_dir: Path) -> None:
    bucket, key = split_s3(uri)
    with tempfile.TemporaryDirectory(dir=model_dir.parent) as tmp:
        path = Path(tmp) / "model.tar.gz"
        clients.s3.download_file(bucket, key, str(path))
        safe_extract(path, model_dir)


def job_prefix(job_name: str) -> str:
    return f"{PREFIX}/jobs/{job_name}"


def upload_source(clients: AwsClients, bucket: str, job_name: str) -> str:
    key = f"{job_prefix(job_name)}/source/sourcedir.tar.gz"
    clients.s3.put_object(Bucket=bucket, Key=key, Body=package_source())
    return f"s3://{bucket}/{key}"

