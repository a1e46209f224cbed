"""The compiled CPU kernels: ``fewrow.c`` (generation's few-row products, ``fewrow.py``),
``decoder_layer.c`` (a decoder layer of generation's step in one call, ``decoder_layer.py``),
``band_attention.c`` (the encoder's sliding-window attention in inference, ``band_attention.py``) and
``greedy_head.c`` (greedy search's LM head through an int8 copy, ``greedy_head.py``), with ``simd.h``'s
shared vector helpers.

All are plain C with AVX2/FMA intrinsics and OpenMP, compiled together by the system's C compiler (``$CC``,
else ``cc``) into one library in a cache folder the first time they are needed (about a second), and loaded
with ``ctypes`` after torch, so their OpenMP threads are torch's own (the same ``libgomp``; torch's
``set_num_threads`` applies).

Nothing depends on them: where they cannot be used (no x86-64 CPU with AVX2 and FMA, not Linux, no compiler,
a compile error, a second OpenMP runtime in the process, or ``SPACY_LED_KERNELS=0`` in the environment)
``library()`` is ``None`` and the model uses torch's operations, with a warning saying why when the reason is
worth knowing. The cache folder is ``$SPACY_LED_CACHE``, else ``$XDG_CACHE_HOME/spacy-led``, else
``~/.cache/spacy-led``; the library's name carries a hash of the sources, the header and the flags, so an edited
source is rebuilt, and a finished build is moved into place atomically (processes building at once are safe).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Optional

import torch

SOURCES = tuple(Path(__file__).with_name(name)
                for name in ("fewrow.c", "band_attention.c", "greedy_head.c", "decoder_layer.c"))
HEADERS = (Path(__file__).with_name("simd.h"),)  # included by the sources (part of the build's hash)
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
LIBRARIES = ("-lm",)
FEWROW_MAX_ROWS = 8  # fewrow.c's MAX_ROWS

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_tried = False
_C_LONG, _C_INT, _PTR = ctypes.c_long, ctypes.c_int, ctypes.c_void_p
FALLBACK = ("the compiled CPU kernels are off; generation's products and the encoder's attention use torch's "
            "operations")


def cache_dir() -> Path:
    if os.environ.get("SPACY_LED_CACHE"):
        return Path(os.environ["SPACY_LED_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spacy-led"


def _cpu_supported() -> Optional[str]:
    """None when this machine can run the kernels, else why not."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"built for Linux on x86-64 only (this is {sys.platform} on {platform.machine()})"
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return "/proc/cpuinfo is unreadable"
    missing = [flag for flag in ("avx2", "fma") if flag not in flags.split()]
    return f"the CPU lacks {', '.join(missing)}" if missing else None


def _openmp_runtimes() -> set:
    """The OpenMP runtimes loaded in this process (paths of libgomp / libiomp / libomp)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return set()
    paths = {line.split()[-1] for line in maps}  # a mapping's last field: its file, when it has one
    return {path for path in paths
            if path.startswith("/") and Path(path).name.startswith(("libgomp", "libiomp", "libomp"))}


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler found ({compiler!r}; set CC to one)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *FLAGS, *map(str, SOURCES), "-o", str(built), *LIBRARIES]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            names = ", ".join(source.name for source in SOURCES)
            raise RuntimeError(f"{compiler} failed to compile {names}: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent build replaces it with the same bytes


def _load() -> Optional[ctypes.CDLL]:
    if os.environ.get("SPACY_LED_KERNELS", "1") == "0":
        return None
    reason = _cpu_supported()
    if reason is not None:
        return None  # the expected state on such machines: torch's operations, no warning
    before = _openmp_runtimes()
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in SOURCES + HEADERS)
                            + " ".join(FLAGS + LIBRARIES).encode())
    target = cache_dir() / f"kernels-{digest.hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _build(target)
        library = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        warnings.warn(f"spacy-led: {FALLBACK} (slower on the CPU): {error}", RuntimeWarning, stacklevel=3)
        return None
    # The library links libgomp.so.1, which the loader resolves to torch's (already loaded under that name).
    # Runtimes that other packages vendor under their own names (scikit-learn's libgomp-<hash>.so) do not
    # matter to it; only a runtime that loading it brought in would mean a second thread pool beside torch's.
    added = _openmp_runtimes() - before if before else set()
    if added:
        warnings.warn(
            f"spacy-led: {FALLBACK}: {target.name} loaded a second OpenMP runtime ({', '.join(sorted(added))}) "
            f"beside torch's ({', '.join(sorted(before))}); two thread pools on the same cores would slow both.",
            RuntimeWarning, stacklevel=3)
        return None
    library.fewrow_linear.argtypes = [_PTR, _C_LONG, _PTR, _C_LONG, _C_LONG, _PTR, _PTR, _C_LONG, _C_LONG,
                                      _C_LONG, _C_LONG, _C_LONG, _C_INT, _C_INT]
    library.fewrow_linear.restype = _C_INT
    library.greedy_head_int8_products.argtypes = [_PTR, _PTR, _PTR, _C_LONG, _PTR, _C_LONG, _C_LONG, _C_LONG,
                                                  _C_INT, _C_INT]
    library.greedy_head_int8_products.restype = _C_INT
    library.greedy_head_quantize.argtypes = [_PTR, _C_LONG, _C_LONG, ctypes.c_double, _PTR, _PTR, _PTR, _C_INT]
    library.greedy_head_quantize.restype = None
    library.greedy_head_candidates.argtypes = [_PTR, _PTR, _PTR, _PTR, _PTR, _C_LONG, _C_LONG, _PTR, _PTR]
    library.greedy_head_candidates.restype = _C_INT
    library.band_attention.argtypes = [_PTR, _PTR, _PTR, _C_LONG, _C_LONG, _C_LONG, _C_LONG, _C_LONG, _PTR, _PTR,
                                       _PTR, _PTR, _C_LONG, ctypes.c_float, _PTR, _PTR, _C_INT]
    library.band_attention.restype = _C_INT
    library.band_attention_scratch_floats.argtypes = [_C_LONG, _C_LONG, _C_LONG, _C_LONG]
    library.band_attention_scratch_floats.restype = _C_LONG
    library.decoder_layer_step.argtypes = [_PTR, _PTR, _C_LONG, _C_LONG, _C_LONG, _C_LONG, _C_LONG, _C_LONG,
                                           _C_LONG, _C_LONG, _C_INT, _PTR, _C_INT]
    library.decoder_layer_step.restype = _C_INT
    library.decoder_layer_work_floats.argtypes = [_C_LONG] * 6
    library.decoder_layer_work_floats.restype = _C_LONG
    if library.fewrow_max_rows() != FEWROW_MAX_ROWS:
        return None
    return library


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can read these tensors: float32, on the CPU, contiguous."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def profiled(label: Callable[[], str]) -> ContextManager:
    """A kernel call named ``label()`` for torch.profiler when it runs (which sees no ctypes call otherwise;
    ``bench_generate.py --profile``), else a null context (the label is not even formatted)."""
    return torch.profiler.record_function(label()) if torch.autograd._profiler_enabled() else nullcontext()


class OffSwitch:
    """Something turned off inside ``with switch.off():`` blocks, which may nest; ``bool(switch)`` is True
    while any such block runs."""

    def __init__(self):
        self._blocks = 0

    def __bool__(self) -> bool:
        return self._blocks > 0

    @contextmanager
    def off(self):
        self._blocks += 1
        try:
            yield
        finally:
            self._blocks -= 1


_off = OffSwitch()
disabled = _off.off  # inside ``with disabled():`` library() is None: torch's operations (in-run baselines)


def library() -> Optional[ctypes.CDLL]:
    """The loaded library, built on first use; None where it cannot be used (see the module docstring)."""
    global _library, _tried
    if _off:
        return None
    if not _tried:
        with _lock:
            if not _tried:
                _library = _load()
                _tried = True
    return _library
