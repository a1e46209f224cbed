"""fewrow (the decoder step's compiled few-row products): the same numbers as torch's products for every row
count, ragged shapes and thread splits; None wherever it must not run; a failed build of the compiled kernels
(kernels.py) falls back to torch with a warning instead of breaking generation or the encoder."""
import pytest
import torch
import torch.nn.functional as F

from spacy_led.modeling import band_attention, fewrow, kernels
from spacy_led.modeling.attention import EncoderMaskLayout

from conftest import relative_error, torch_threads

TOLERANCE = 1e-6  # relative to the largest value: the same sums in another order


def _close(actual, expected):
    assert actual is not None
    assert relative_error(actual, expected) < TOLERANCE, relative_error(actual, expected)


@pytest.mark.parametrize("rows", range(1, fewrow.MAX_ROWS + 1))
def test_linear_matches_torch_for_every_row_count(compiled_kernels, rows):
    """Output features not a multiple of any tile (37, 101), inputs with and without a k % 8 tail (13, 40,
    600), with and without bias; 101 x 600 is large enough to run on two threads."""
    generator = torch.Generator().manual_seed(rows)
    with torch_threads(2), torch.no_grad():
        for n, k in ((37, 13), (37, 40), (101, 600)):
            x = torch.randn(rows, k, generator=generator)
            weight = torch.randn(n, k, generator=generator)
            bias = torch.randn(n, generator=generator)
            _close(fewrow.linear(x, weight, bias), F.linear(x, weight, bias))
            _close(fewrow.linear(x, weight, None), F.linear(x, weight))


@pytest.mark.parametrize("rows", [1, 3, 4, 8])
def test_batched_products_match_torch(compiled_kernels, rows):
    """Cross-attention's shapes: (inputs, heads, rows, k) x (inputs, heads, n, k); 2 x 3 products of 101 x 600
    split between two threads in the middle of a product."""
    generator = torch.Generator().manual_seed(10 + rows)
    with torch_threads(2), torch.no_grad():
        for n, k in ((21, 64), (101, 600)):
            x = torch.randn(2, 3, rows, k, generator=generator)
            weight = torch.randn(2, 3, n, k, generator=generator)
            _close(fewrow.batched_products(x, weight), x @ weight.transpose(-1, -2))


def test_none_where_it_must_not_run(compiled_kernels):
    x, weight = torch.randn(2, 16), torch.randn(8, 16)
    with torch.no_grad():
        assert fewrow.linear(torch.randn(fewrow.MAX_ROWS + 1, 16), weight, None) is None
        assert fewrow.linear(x.double(), weight.double(), None) is None
        assert fewrow.linear(torch.randn(16, 2).t(), weight, None) is None  # not contiguous
        assert fewrow.batched_products(torch.randn(2, 3, 2, 16), torch.randn(3, 2, 8, 16)) is None
        with fewrow.disabled():
            assert fewrow.linear(x, weight, None) is None
        assert fewrow.linear(x, weight, None) is not None
    assert fewrow.linear(x, weight, None) is None  # autograd on: torch's products record the graph


def _fresh_state(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_library", None)
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setenv("SPACY_LED_CACHE", str(tmp_path))


@pytest.mark.parametrize("compiler, message", [("false", "failed to compile"),
                                               ("no-such-compiler", "no C compiler found")])
def test_a_failed_build_falls_back_with_a_warning(compiled_kernels, monkeypatch, tmp_path, compiler, message):
    _fresh_state(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", compiler)
    with pytest.warns(RuntimeWarning, match=message):
        assert fewrow.library() is None
    with torch.no_grad():
        assert fewrow.linear(torch.randn(2, 16), torch.randn(8, 16), None) is None
        q = torch.randn(1, 10, 2, 8)
        layout = EncoderMaskLayout.build(torch.ones(1, 10, dtype=torch.long), None)
        assert band_attention.local_attention(q, q, q, layout, 2) is None  # the encoder keeps its SDPA path
    assert not list(tmp_path.glob("*.so"))


def test_other_packages_openmp_runtimes_do_not_switch_the_kernels_off(compiled_kernels, monkeypatch, tmp_path,
                                                                     recwarn):
    """A process where scikit-learn (say) loaded its own vendored libgomp beside torch's: the kernels resolve
    libgomp.so.1 to torch's and must load; only a runtime that loading them adds turns them off."""
    _fresh_state(monkeypatch, tmp_path)
    real = kernels._openmp_runtimes
    vendored = "/site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0"
    monkeypatch.setattr(kernels, "_openmp_runtimes", lambda: real() | {vendored})
    assert kernels.library() is not None
    assert not [w for w in recwarn.list if issubclass(w.category, RuntimeWarning)]

    _fresh_state(monkeypatch, tmp_path)
    seen = []

    def one_more_after_loading():
        seen.append(None)
        return real() | ({"/elsewhere/libomp.so"} if len(seen) > 1 else set())

    monkeypatch.setattr(kernels, "_openmp_runtimes", one_more_after_loading)
    with pytest.warns(RuntimeWarning, match="loaded a second OpenMP runtime .*libomp.so"):
        assert kernels.library() is None


def test_switched_off_by_the_environment(monkeypatch, tmp_path, recwarn):
    _fresh_state(monkeypatch, tmp_path)
    monkeypatch.setenv("SPACY_LED_KERNELS", "0")
    assert fewrow.library() is None
    assert not recwarn.list
    assert not list(tmp_path.iterdir())  # nothing was built


def test_a_row_gets_the_same_numbers_alone_or_in_a_padded_batch(compiled_kernels):
    """Bit for bit: the CLI resumes a killed run with documents in other batches (other row counts, other
    padding of the cross-attention keys) and must write the bytes the whole run would have written. A key
    position past a row's end has probability 0 (x is 0 there) whatever the padded values hold."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        weight, x = torch.randn(50, 37, generator=generator), torch.randn(8, 37, generator=generator)
        alone = fewrow.linear(x[:1], weight, None)
        for rows in range(2, fewrow.MAX_ROWS + 1):
            assert torch.equal(fewrow.linear(x[:rows], weight, None)[:1], alone)
        padded_x = torch.cat([x, torch.zeros(8, 11)], dim=1)
        padded_weight = torch.cat([weight, torch.randn(50, 11, generator=generator)], dim=1)
        assert torch.equal(fewrow.linear(padded_x[:1], padded_weight, None), alone)
        assert torch.equal(fewrow.batched_products(padded_x[None, :4], padded_weight[None])[0, :1], alone)


def test_every_kernel_source_ships_in_the_package():
    """A source or header missing from setup.cfg's package_data is absent from a wheel, and there the kernels do
    not build (greedy_head.c was left out once: editable installs, CI's, do not notice)."""
    import configparser
    from fnmatch import fnmatch
    from pathlib import Path

    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["spacy_led"].replace(",", "\n").split()]
    package = Path(kernels.__file__).resolve().parents[1]
    assert kernels.HEADERS
    for source in kernels.SOURCES + kernels.HEADERS:
        relative = source.resolve().relative_to(package).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)
