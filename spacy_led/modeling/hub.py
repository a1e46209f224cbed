"""Checkpoint names -> local directories: a local path as it is, a HuggingFace hub id through the hub's cache.

Every place that takes a checkpoint (``from_pretrained`` of the models, the config and the tokenizer, the spaCy
components, the CLI) accepts what the LED model card and tutorials write, ``allenai/led-base-16384``, with an
optional revision (``revision=`` or ``allenai/led-base-16384@<branch, tag or commit>``).

An existing local path always wins. A hub id is resolved by ``huggingface_hub`` (the optional ``hub`` extra), which
keeps its standard cache (``HF_HUB_CACHE`` / ``HF_HOME``), so files downloaded by ``hf download`` or by
transformers are found and shared. Only the files a caller needs are fetched: config, generation settings,
tokenizer files, safetensors weights (``pytorch_model.bin`` only when a repository has no safetensors). Offline
(``HF_HUB_OFFLINE=1``, or the hub unreachable) the cache alone answers. Nothing from a repository is ever
executed: only JSON, text and weight files are read.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

# What a caller needs from a checkpoint.
CONFIG = "config"
WEIGHTS = "weights"
TOKENIZER = "tokenizer"
MODEL = (CONFIG, WEIGHTS)
EVERYTHING = (CONFIG, WEIGHTS, TOKENIZER)

# Files of each need, as glob patterns on the repository's top-level names; safetensors before pickles.
_PATTERNS = {
    CONFIG: ("config.json", "generation_config.json"),
    TOKENIZER: ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                "added_tokens.json"),
}
_SAFETENSORS_PATTERNS = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors")
_PICKLE_PATTERNS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin")
# A file present in the snapshot folder of every usable checkpoint of a need: how a cached snapshot is found.
_PROBES = ("config.json", "tokenizer.json", "vocab.json")

# org/name, optionally @revision. One slash exactly: "path/to/dir" and "dir" are local paths.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>\S+))?$")

INSTALL_HINT = 'pip install "spacy-led[hub]"'


class CheckpointNotFound(FileNotFoundError):
    """A hub checkpoint that is neither downloadable now nor in the local HuggingFace cache."""


def split_hub_id(name: str, revision: Optional[str] = None) -> Optional[Tuple[str, Optional[str]]]:
    """``(repo_id, revision)`` if ``name`` has the shape of a hub id (``org/name`` or ``org/name@rev``), else None."""
    match = _HUB_ID.match(name)
    if match is None or ".." in name or "--" in match["repo"]:
        return None
    in_name = match["revision"]
    if in_name and revision and in_name != revision:
        raise ValueError(
            f"checkpoint {name!r} names revision {in_name!r} but revision={revision!r} was also given: "
            f"give the revision once."
        )
    return match["repo"], in_name or revision


def resolve_checkpoint(
    name_or_path: Union[str, Path],
    *,
    revision: Optional[str] = None,
    needs: Sequence[str] = EVERYTHING,
) -> Path:
    """The local directory holding checkpoint ``name_or_path``'s files for ``needs`` (config, weights, tokenizer).

    A path that exists, or a string that cannot be a hub id, is returned as a ``Path`` unchanged (the caller's
    loader reports what is wrong with it). A hub id is downloaded (only the needed files) or found in the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.exists() or isinstance(name_or_path, Path):
        if revision:
            raise ValueError(
                f"revision={revision!r} applies to hub ids, but {str(name_or_path)!r} is a local directory."
            )
        return path
    hub_id = split_hub_id(str(name_or_path), revision)
    if hub_id is None:
        return path
    repo_id, revision = hub_id
    hub = _import_hub(repo_id)
    revision = revision or "main"
    reason = "HF_HUB_OFFLINE is set"
    if not hub.constants.HF_HUB_OFFLINE:
        try:
            repo_files = hub.list_repo_files(repo_id, revision=revision)
        except (hub.errors.RepositoryNotFoundError, hub.errors.RevisionNotFoundError) as err:
            raise CheckpointNotFound(
                f"checkpoint {repo_id!r} (revision {revision!r}) is neither a local directory nor a repository "
                f"revision on the HuggingFace hub (private and gated models need `hf auth login`): {err}"
            ) from err
        except Exception as err:  # no network, hub down, ...: the cache may still hold the files
            reason = f"the hub could not be reached ({type(err).__name__}: {err})"
        else:
            wanted = select_files(repo_files, needs)
            folder = Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=wanted))
            missing = missing_files(folder, needs)
            if missing:
                raise CheckpointNotFound(
                    f"hub repository {repo_id!r} (revision {revision!r}) is not an LED/BART checkpoint: it has no "
                    f"{', '.join(missing)}."
                )
            return folder
    folder = _cached_snapshot(hub, repo_id, revision)
    missing = missing_files(folder, needs) if folder is not None else [_describe(need) for need in needs]
    if missing:
        raise CheckpointNotFound(
            f"checkpoint {repo_id!r} (revision {revision!r}) is not a local directory, and its "
            f"{', '.join(missing)} are not in the HuggingFace cache {hub.constants.HF_HUB_CACHE} ({reason}). "
            f"Download them where there is network access:\n  {download_command(repo_id, revision, needs, hub)}\n"
            f"(a repository without safetensors weights needs --include \"pytorch_model*.bin\"), then point "
            f"HF_HUB_CACHE at that cache, or give a local checkpoint directory."
        )
    return folder


def select_files(repo_files: Iterable[str], needs: Sequence[str]) -> List[str]:
    """The repository files to download for ``needs``: top-level files only, pickled weights only when there
    are no safetensors."""
    top_level = [name for name in repo_files if "/" not in name]

    def matching(patterns: Sequence[str]) -> List[str]:
        return [name for name in top_level if any(fnmatch.fnmatchcase(name, p) for p in patterns)]

    wanted: List[str] = []
    for need in needs:
        if need == WEIGHTS:
            wanted += matching(_SAFETENSORS_PATTERNS) or matching(_PICKLE_PATTERNS)
        else:
            wanted += matching(_PATTERNS[need])
    return wanted


def missing_files(folder: Path, needs: Sequence[str]) -> List[str]:
    """What ``folder`` lacks for ``needs``, described for an error message (empty: complete)."""
    from .checkpoint import weight_files

    missing = []
    for need in needs:
        if need == CONFIG and not (folder / "config.json").is_file():
            missing.append(_describe(CONFIG))
        elif need == TOKENIZER and not (
            (folder / "tokenizer.json").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
        ):
            missing.append(_describe(TOKENIZER))
        elif need == WEIGHTS:
            try:
                weight_files(folder)
            except (FileNotFoundError, ValueError):
                missing.append(_describe(WEIGHTS))
    return missing


def download_command(repo_id: str, revision: str, needs: Sequence[str], hub=None) -> str:
    """The ``hf download`` command that puts ``needs`` of a checkpoint into the cache this process reads."""
    patterns: List[str] = []
    for need in needs:
        patterns += _SAFETENSORS_PATTERNS if need == WEIGHTS else _PATTERNS[need]
    cache = f" --cache-dir {hub.constants.HF_HUB_CACHE}" if hub is not None else ""
    includes = " ".join(f'--include "{p}"' for p in patterns)
    return f"hf download {repo_id} --revision {revision}{cache} {includes}"


def _describe(need: str) -> str:
    return {
        CONFIG: "config.json",
        WEIGHTS: "weights (model.safetensors, sharded safetensors or pytorch_model.bin)",
        TOKENIZER: "tokenizer files (tokenizer.json, or vocab.json + merges.txt)",
    }[need]


def _cached_snapshot(hub, repo_id: str, revision: str) -> Optional[Path]:
    """The cache's snapshot folder of ``repo_id`` at ``revision`` (a branch, tag or commit), if it has one."""
    for probe in _PROBES:
        found = hub.try_to_load_from_cache(repo_id, probe, revision=revision)
        if isinstance(found, str):
            return Path(found).parent
    return None


def _import_hub(repo_id: str):
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401  (submodules used above, not imported by the package)
        import huggingface_hub.errors  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{repo_id!r} is not a local directory, and reading checkpoints from the HuggingFace hub needs "
            f"huggingface_hub: {INSTALL_HINT} (or give the path of a downloaded checkpoint directory)."
        ) from err
    return huggingface_hub
