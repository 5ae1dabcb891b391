"""The archives odorch sends to SageMaker and gets back: reproducible .tar.gz of the container code
(odorch/runtime/ beside a stub odorch/__init__.py, so it imports without the rest of odorch) and
a safe extraction of model.tar.gz."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from odorch.errors import SageMakerError

SHIM = "from odorch.runtime.train import main\n\nraise SystemExit(main())\n"
RUNTIME_STUB = '"""odorch\'s container code only (odorch.runtime), shipped in a training or model archive."""\n'


def tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a member reproducibly (mtime 0, root-owned, 0644): the same files give the same archive."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def runtime_files(prefix: str, *, requirements: bool = True) -> dict[str, bytes]:
    """The container code as archive members under PREFIX: odorch/runtime/*.py beside a stub
    odorch/__init__.py, so the archive imports `odorch.runtime` without the rest of odorch;
    with ``requirements``, the training requirements.txt too (a toolkit pip-installs it)."""
    from odorch import runtime

    root = Path(runtime.__file__).parent
    members = {f"{prefix}odorch/__init__.py": RUNTIME_STUB.encode()}
    for p in sorted(root.glob("*.py")):
        members[f"{prefix}odorch/runtime/{p.name}"] = p.read_bytes()
    if requirements and (root / "requirements.txt").is_file():
        members[f"{prefix}requirements.txt"] = (root / "requirements.txt").read_bytes()
    return members


def write_tar_gz(members: dict[str, bytes]) -> bytes:
    """A deterministic .tar.gz of MEMBERS: sorted names, mtime 0, owner 0."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name in sorted(members):
            tar_add(tar, name, members[name])
    return buf.getvalue()


def package_source() -> bytes:
    """sourcedir.tar.gz: odorch/runtime/ as a package, a top-level train.py shim (SageMaker runs
    `sagemaker_program` = train.py from the top) and requirements.txt (the training toolkit
    installs a top-level one)."""
    return write_tar_gz({"train.py": SHIM.encode(), **runtime_files("")})


def safe_extract(tar_path: Path | str, dest: Path | str) -> None:
    """Extract a tar(.gz) with the "data" filter, after checking EVERY member first, so that a
    member escaping dest (../, absolute path, link outside) refuses the whole archive before
    anything is written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        try:
            for member in tar.getmembers():
                tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as e:
            raise SageMakerError(f"refusing to extract {tar_path}: {e}") from e
        tar.extractall(dest, filter="data")

