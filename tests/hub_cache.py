"""A HuggingFace hub cache written by hand, laid out as huggingface_hub lays it out, for offline tests.

``<cache>/models--{org}--{name}/blobs/<hash>`` holds each file once (git's blob sha1 for small files, sha256 for
weights, as LFS names them), ``snapshots/<commit>/<file>`` links to its blob, ``refs/<revision>`` holds the commit
hash. huggingface_hub's own ``scan_cache_dir`` reading this layout back is checked by the tests that use it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Optional

LFS_SUFFIXES = (".safetensors", ".bin")


def _blob_name(name: str, content: bytes) -> str:
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def write_hub_cache(
    cache_dir: Path,
    repo_id: str,
    source: Path,
    *,
    revision: str = "main",
    files: Optional[Iterable[str]] = None,
) -> str:
    """Put the top-level files of checkpoint directory ``source`` (or only ``files``) into the cache as
    ``repo_id`` at ``revision``; return the commit hash (derived from the contents, 40 hex digits)."""
    names = sorted(files) if files is not None else sorted(p.name for p in source.iterdir() if p.is_file())
    contents = {name: (source / name).read_bytes() for name in names}
    commit = hashlib.sha1(b"".join(name.encode() + hashlib.sha1(contents[name]).digest() for name in names)).hexdigest()
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        blob = _blob_name(name, content)
        (repo / "blobs" / blob).write_bytes(content)
        link = snapshot / name
        if not link.exists():
            os.symlink(os.path.join("..", "..", "blobs", blob), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit
