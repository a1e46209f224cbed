"""Few-row float32 products (``fewrow.c``), compiled on first use, for generation's decoder step.

A decoder step multiplies 1-8 rows (the beams) by every decoder weight and attends 1-8 queries per input
over the cached cross-attention keys/values: its floor is reading those bytes once. On the CPUs we measured,
MKL reads a weight at about half the memory bandwidth for so few rows; ``fewrow.c`` reads it at close to the
bandwidth (``benchmarks/bench_generate.py`` prints both). It is plain C with AVX2/FMA intrinsics and OpenMP,
compiled by the system's C compiler (``$CC``, else ``cc``) into a cache folder the first time generation
needs it (well under a second), and loaded with ``ctypes`` after torch, so its OpenMP threads are torch's own
(the same ``libgomp``; torch's ``set_num_threads`` applies).

Nothing depends on it: where it cannot be used (no x86-64 CPU with AVX2 and FMA, not Linux, no compiler, a
compile error, a second OpenMP runtime in the process, or ``SPACY_LED_KERNELS=0`` in the environment) every
function here returns ``None`` and the decoder step uses torch's products, with a warning saying why when
the reason is worth knowing. The cache folder is ``$SPACY_LED_CACHE``, else ``$XDG_CACHE_HOME/spacy-led``,
else ``~/.cache/spacy-led``; the library's name carries a hash of the source and flags, so an edited source
is rebuilt, and a finished build is moved into place atomically (processes building at once are safe).
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
from typing import Optional

import torch

SOURCE = Path(__file__).with_name("fewrow.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
MAX_ROWS = 8  # fewrow.c's MAX_ROWS

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_tried = False
_disabled = 0
_C_LONG, _C_INT, _PTR = ctypes.c_long, ctypes.c_int, ctypes.c_void_p


def cache_dir() -> Path:
    if os.environ.get("SPACY_LED_CACHE"):
        return Path(os.environ["SPACY_LED_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spacy-led"


def _cpu_supported() -> Optional[str]:
    """None when this machine can run fewrow.c, else why not."""
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
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed to compile {SOURCE.name}: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent build replaces it with the same bytes


def _load() -> Optional[ctypes.CDLL]:
    if os.environ.get("SPACY_LED_KERNELS", "1") == "0":
        return None
    reason = _cpu_supported()
    if reason is not None:
        return None  # the expected state on such machines: torch's products, no warning
    before = _openmp_runtimes()
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / f"fewrow-{digest}.so"
    try:
        if not target.exists():
            _build(target)
        library = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        warnings.warn(f"spacy-led: generation falls back to torch's products (slower on the CPU): {error}",
                      RuntimeWarning, stacklevel=3)
        return None
    runtimes = _openmp_runtimes()
    if len(runtimes) > 1 or (before and runtimes != before):
        warnings.warn(
            f"spacy-led: generation falls back to torch's products: {target.name} loaded a second OpenMP runtime "
            f"({', '.join(sorted(runtimes))}) beside torch's; two thread pools on the same cores would slow both.",
            RuntimeWarning, stacklevel=3)
        return None
    library.fewrow_linear.argtypes = [_PTR, _C_LONG, _PTR, _C_LONG, _C_LONG, _PTR, _PTR, _C_LONG, _C_LONG,
                                      _C_LONG, _C_LONG, _C_LONG, _C_INT, _C_INT]
    library.fewrow_linear.restype = _C_INT
    if library.fewrow_max_rows() != MAX_ROWS:
        return None
    return library


@contextmanager
def disabled():
    """Inside this block ``library()`` is None: torch's products (the benchmarks' in-run baseline)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def library() -> Optional[ctypes.CDLL]:
    """The loaded library, built on first use; None where it cannot be used (see the module docstring)."""
    global _library, _tried
    if _disabled:
        return None
    if not _tried:
        with _lock:
            if not _tried:
                _library = _load()
                _tried = True
    return _library


def _usable(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
               for t in tensors)


def _products(weight: torch.Tensor, x: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor) -> None:
    """out[..., r, n] = x[..., r, :] . weight[..., n, :] (+ bias[n]) over the leading (batch) dimensions."""
    lib = library()
    rows, k = x.shape[-2:]
    n = weight.shape[-2]
    batch = out.numel() // (rows * n) if out.numel() else 0
    # Named for torch.profiler when it runs (bench_generate.py --profile), which sees no ctypes call otherwise.
    named = (torch.profiler.record_function(f"fewrow::products batch={batch} rows={rows} n={n} k={k}")
             if torch.autograd._profiler_enabled() else nullcontext())
    with named:
        status = lib.fewrow_linear(weight.data_ptr(), n * k, x.data_ptr(), rows * k, k,
                                   None if bias is None else bias.data_ptr(), out.data_ptr(), rows * n, n,
                                   batch, n, k, rows, torch.get_num_threads())
    if status != 0:
        raise ValueError(f"fewrow_linear takes 1-{MAX_ROWS} rows, got {rows}")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``F.linear(x, weight, bias)`` for x of 1..8 rows (rows, in), or None where the library cannot do it."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_ROWS or torch.is_grad_enabled() or library() is None:
        return None
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not _usable(*tensors):
        return None
    out = x.new_empty((x.shape[0], weight.shape[0]))
    _products(weight, x, bias, out)
    return out


def batched_products(x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.Tensor]:
    """``x @ weight.transpose(-1, -2)`` for x (..., rows, k) of 1..8 rows and weight (..., n, k) with the same
    leading dimensions, or None where the library cannot do it. Cross-attention in one step: queries times
    keys (n = positions), and probabilities times the transposed values (n = head_dim)."""
    if (x.dim() < 3 or x.shape[:-2] != weight.shape[:-2] or x.shape[-1] != weight.shape[-1]
            or not 1 <= x.shape[-2] <= MAX_ROWS or torch.is_grad_enabled() or library() is None
            or not _usable(x, weight)):
        return None
    out = x.new_empty((*x.shape[:-1], weight.shape[-2]))
    _products(weight, x, None, out)
    return out
