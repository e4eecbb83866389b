"""Bad data inputs: each one is refused with a one-line TorchslimError, never a traceback or a
wrong result, and the file it came from is left untouched.

Every case writes its bad input under ``tmp_path``, hashes it, checks that :func:`load_data`
raises :class:`DataError` (or another :class:`TorchslimError`, never a different exception type)
with a message that names the problem, and checks the input is byte-identical afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from torchslim.cli import inspect as inspect_cli
from torchslim.data import DataSet, load_data
from torchslim.errors import DataError, TorchslimError, UntrustedPickleError

# --------------------------------------------------------------------------------------------
# helpers


def _digest(path: Path) -> str:
    """SHA-256 over a file, or over every file (names and bytes) under a folder."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _refused(source: str, path: Path, *words: str, exc: type[TorchslimError] = DataError) -> str:
    """Assert ``load_data(source)`` raises ``exc`` naming ``words``, leaving ``path`` intact."""
    before = _digest(path)
    with pytest.raises(TorchslimError) as info:
        load_data(source)
    assert isinstance(info.value, exc), f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    assert "\n" not in info.value.message, text
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert _digest(path) == before, "the input was modified"
    return text


def _npz(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _idx_bytes(arr: np.ndarray, magic: bytes = b"\x00\x00\x08") -> bytes:
    header = magic + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header declares ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _image_folder(root: Path, size: tuple[int, int] = (8, 8)) -> Path:
    from PIL import Image

    for ci, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", size, (ci * 100, 50, 10)).save(root / cls / "0.png")
    return root


# --------------------------------------------------------------------------------------------
# .npz


def test_truncated_npz(tmp_path: Path) -> None:
    path = _npz(tmp_path / "cut.npz", x=np.zeros((10, 4), np.float32), y=np.arange(10) % 2)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    text = _refused(str(path), path, "cut.npz", "not a valid .npz")
    assert "pickle" not in text


def test_empty_npz(tmp_path: Path) -> None:
    path = tmp_path / "blank.npz"
    path.write_bytes(b"")
    _refused(str(path), path, "blank.npz", "is empty")


def test_random_bytes_npz_is_not_called_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    text = _refused(str(path), path, "noise.npz", "not a valid .npz")
    assert "pickle" not in text.lower()


def test_object_array_npz_needs_unpickling(tmp_path: Path) -> None:
    path = _npz(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    text = _refused(str(path), path, "obj.npz", "pickled", "'x'")
    assert "not a valid" not in text


def test_single_npy_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    with path.open("wb") as fh:
        np.save(fh, np.zeros((3, 2), np.float32))
    _refused(str(path), path, "one.npz", ".npy")


def test_npz_without_samples(tmp_path: Path) -> None:
    path = _npz(tmp_path / "none.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, int))
    _refused(str(path), path, "none.npz", "no samples")


def test_npz_single_value_input(tmp_path: Path) -> None:
    path = _npz(tmp_path / "scalar.npz", x=np.float32(3.0))
    _refused(str(path), path, "scalar.npz", "single value")


def test_npz_text_input(tmp_path: Path) -> None:
    path = _npz(tmp_path / "text.npz", x=np.array(["a", "b"]))
    _refused(str(path), path, "text.npz", "dtype")


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (np.array([0, 1, -1, 0]), ("index 2", "-1", "negative")),
        (np.array([0.0, 1.0, np.nan, 0.0]), ("index 2", "nan", "NaN")),
        (np.array([0.0, np.inf, 1.0, 0.0]), ("index 1", "inf")),
        (np.array([0.0, 1.0, 1.5, 0.0]), ("index 2", "1.5", "whole")),
        (np.eye(4), ("shape (4, 4)", "argmax")),
        (np.array(["cat", "dog", "cat", "dog"]), ("dtype",)),
    ],
    ids=["negative", "nan", "inf", "fraction", "one-hot", "strings"],
)
def test_npz_bad_labels(tmp_path: Path, labels: np.ndarray, words: tuple[str, ...]) -> None:
    path = _npz(tmp_path / "labels.npz", x=np.zeros((4, 2), np.float32), y=labels)
    _refused(str(path), path, "labels.npz", *words)


def test_npz_float_labels_must_be_whole(tmp_path: Path) -> None:
    path = _npz(tmp_path / "f.npz", x=np.zeros((4, 2), np.float32), y=np.array([0.0, 2.0, 1, 0]))
    ds = load_data(str(path))
    assert ds.labels is not None and ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [0, 2, 1, 0] and ds.num_classes == 3
    path = _npz(tmp_path / "g.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 2, 0.999, 0]))
    _refused(str(path), path, "g.npz", "index 2", "0.999")


def test_npz_nan_and_inf_inputs(tmp_path: Path) -> None:
    x = np.zeros((5, 2), np.float32)
    x[3, 1] = np.nan
    path = _npz(tmp_path / "nan_x.npz", x=x, y=np.arange(5) % 2)
    _refused(str(path), path, "nan_x.npz", "NaN/Inf", "sample 3")
    x[3, 1], x[4, 0] = 0.0, -np.inf
    path = _npz(tmp_path / "inf_x.npz", x=x)
    _refused(str(path), path, "inf_x.npz", "NaN/Inf", "sample 4")


# --------------------------------------------------------------------------------------------
# .pt


def test_pt_list_labels_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save({"x": torch.rand(4, 3), "y": [0, 2, 1, 2]}, path)
    ds = load_data(str(path))
    assert ds.labels is not None and ds.labels.dtype == torch.int64
    assert ds.labels.tolist() == [0, 2, 1, 2] and ds.num_classes == 3


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ([0, 1.5, 1], ("index 1", "1.5")),
        ([0, -3, 1], ("index 1", "-3")),
        ([0, "cat", 1], ("dtype",)),
        ([[0, 1], [1]], ("not a flat list",)),
        (torch.tensor([0.0, float("nan"), 1.0]), ("index 1", "nan")),
        (torch.tensor([0, 1, -2]), ("index 2", "-2")),
        ("abc", ("single",)),
    ],
    ids=["list-fraction", "list-negative", "list-mixed", "list-ragged", "nan", "negative", "str"],
)
def test_pt_bad_labels(tmp_path: Path, labels: object, words: tuple[str, ...]) -> None:
    path = tmp_path / "bad_labels.pt"
    torch.save({"x": torch.rand(3, 2), "y": labels}, path)
    _refused(str(path), path, "bad_labels.pt", *words)


def test_pt_truncated_empty_and_random(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"x": torch.rand(6, 3), "y": torch.tensor([0, 1, 0, 1, 0, 1])}, good)
    raw = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) // 2])
    _refused(str(cut), cut, "cut.pt", "not a valid .pt")
    empty = tmp_path / "blank.pt"
    empty.write_bytes(b"")
    _refused(str(empty), empty, "blank.pt", "is empty")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(1).bytes(500))
    text = _refused(str(noise), noise, "noise.pt", "not a valid .pt")
    assert "pickle" not in text.lower()


def test_pt_real_object_is_untrusted_pickle(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"x": torch.rand(2, 1), "note": Path("x")}, path)
    _refused(str(path), path, "obj.pt", "PosixPath", exc=UntrustedPickleError)


def test_pt_scalar_and_nan_input(tmp_path: Path) -> None:
    scalar = tmp_path / "scalar.pt"
    torch.save(torch.tensor(1.0), scalar)
    _refused(str(scalar), scalar, "scalar.pt", "single value")
    x = torch.rand(4, 2)
    x[2, 0] = float("nan")
    nan = tmp_path / "nan.pt"
    torch.save({"x": x}, nan)
    _refused(str(nan), nan, "nan.pt", "NaN/Inf", "sample 2")


# --------------------------------------------------------------------------------------------
# IDX


def test_idx_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "m-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((2, 3, 3)), magic=b"\x00\x00\x0d"))
    _refused(str(path), path, "m-images-idx3-ubyte", "magic number 0x00000d03")
    path.write_bytes(b"\x08\x00\x00\x03" + b"\x00" * 40)
    _refused(str(path), path, "magic number 0x08000003")


def test_idx_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "s-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((2, 3, 3))) + b"\x00" * 5)
    _refused(str(path), path, "s-images-idx3-ubyte", "2x3x3", "18 data bytes", "holds 23")
    path.write_bytes(_idx_bytes(np.zeros((2, 3, 3)))[:-4])
    _refused(str(path), path, "truncated", "holds 14")


def test_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "h-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 2))
    _refused(str(path), path, "h-images-idx3-ubyte", "truncated", "3 dimensions")


def test_idx_gz_corrupt_and_wrong_rank(tmp_path: Path) -> None:
    gz = tmp_path / "g-images-idx3-ubyte.gz"
    packed = gzip.compress(_idx_bytes(np.zeros((2, 3, 3))))
    gz.write_bytes(packed[: len(packed) // 2])
    _refused(str(gz), gz, "g-images-idx3-ubyte.gz")
    flat = tmp_path / "f-images-idx3-ubyte"
    flat.write_bytes(_idx_bytes(np.zeros(4)))
    _refused(str(flat), flat, "f-images-idx3-ubyte", "1 dimensions")


def test_idx_labels_count_mismatch(tmp_path: Path) -> None:
    images = tmp_path / "c-images-idx3-ubyte"
    images.write_bytes(_idx_bytes(np.zeros((3, 2, 2))))
    (tmp_path / "c-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1])))
    _refused(str(images), tmp_path, "different lengths")


# --------------------------------------------------------------------------------------------
# image folders


def test_png_declaring_huge_size_is_refused(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / "b" / "bomb.png").write_bytes(_png_declaring(100_000, 100_000))
    _refused(f"{root}?size=4", root, "bomb.png", "too large")


def test_image_over_pixel_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    root = _image_folder(tmp_path / "imgs", size=(8, 8))  # 64 pixels each
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # > 2x the limit: Pillow raises
    _refused(f"{root}?size=4", root, "0.png", "too large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 1x-2x the limit: Pillow only warns
    _refused(f"{root}?size=4", root, "0.png", "too large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64)
    assert len(load_data(f"{root}?size=4")) == 2


def test_corrupt_and_degenerate_images(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    good = (root / "a" / "0.png").read_bytes()
    (root / "a" / "1.png").write_bytes(good[: len(good) // 2])
    _refused(f"{root}?size=4", root, "1.png", "Cannot read image")
    (root / "a" / "1.png").unlink()
    from PIL import Image

    Image.new("RGB", (300, 2)).save(root / "a" / "thin.png")
    _refused(f"{root}?size=4", root, "thin.png", "300x2")


def test_image_folder_for_four_channel_model(tmp_path: Path) -> None:
    from torchslim.specs import parse_input_spec

    root = _image_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match="4 channels"):
        load_data(str(root), input_spec=parse_input_spec("1x4x8x8"))


# --------------------------------------------------------------------------------------------
# factories


FACTORY = """
import torch
from torchslim.data import DataSet

def out_of_range():
    return DataSet("f", (torch.zeros(3, 2),), torch.tensor([0, 5, 1]), num_classes=3)

def fractional():
    return [(torch.zeros(2), 0), (torch.zeros(2), 1.5)]

def ragged():
    return [(torch.zeros(2), 0), (torch.zeros(3), 1)]

def broken():
    raise KeyError("missing column")

def empty():
    return []
"""


@pytest.fixture
def factory_mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "bad_data_factories.py"
    path.write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bad_data_factories", None)
    return path


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        ("out_of_range", ("index 1", "5", "3 classes")),
        ("fractional", ("index 1", "1.5")),
        ("ragged", ("different shapes",)),
        ("broken", ("failed", "missing column")),
        ("empty", ("no samples",)),
    ],
)
def test_factory_bad_data(factory_mod: Path, fn: str, words: tuple[str, ...]) -> None:
    _refused(f"bad_data_factories:{fn}", factory_mod, *words)


# --------------------------------------------------------------------------------------------
# query options


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _image_folder(tmp_path / "imgs")


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?size=0", ("size=0", "1 to 4096")),
        ("?size=-3", ("size=-3", "1 to 4096")),
        ("?size=4097", ("size=4097", "1 to 4096")),
        ("?size=abc", ("size='abc'", "whole number")),
        ("?size=1.5", ("size='1.5'", "whole number")),
        ("?seed=abc", ("seed='abc'", "0 to")),
        ("?seed=-1", ("seed=-1", "0 to")),
        ("?limit=0", ("limit=0", "1 to")),
        ("?limit=", ("limit=''", "whole number")),
        ("?normalize=zscore", ("normalize='zscore'", "'imagenet', 'none'")),
        ("?n=8", ("'n'", "does not apply", "image folder")),
        ("?sise=8", ("'sise'", "Unknown", "size")),
        ("?size=8&size=9", ("'size'", "twice")),
    ],
)
def test_bad_image_folder_options(folder: Path, query: str, words: tuple[str, ...]) -> None:
    _refused(f"{folder}{query}", folder, *words)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("synthetic:1x4?n=0", ("n=0", "1 to 1000000")),
        ("synthetic:1x4?n=-2", ("n=-2", "1 to 1000000")),
        ("synthetic:1x4?n=2000000", ("n=2000000", "1 to 1000000")),
        ("synthetic:1x4?seed=99999999999999999999", ("seed=99999999999999999999", "0 to")),
        ("synthetic:1x4?seed=%0A", ("seed='\\n'",)),
        ("synthetic:1x1000x1000?n=10000", ("GiB", "?n=")),
        ("torchslim:fashion_mnist?split=validation", ("split='validation'", "'test', 'train'")),
        ("torchslim:fashion_mnist?full=maybe", ("full='maybe'",)),
        ("torchslim:fashion_mnist?size=28", ("'size'", "does not apply")),
        ("torchslim:text_polarity?seq_len=1", ("seq_len=1", "2 to 512")),
    ],
)
def test_bad_options(tmp_path: Path, source: str, words: tuple[str, ...]) -> None:
    _refused(source, tmp_path, *words)


def test_npz_options_do_not_apply(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32))
    _refused(f"{path}?n=2", path, "'n'", "does not apply", ".npz")
    _refused(f"{path}?split=train", path, "'split'", "does not apply", ".npz")
    assert len(load_data(f"{path}?limit=2&seed=3")) == 2
    # The split= keyword (which quantize passes for any calibration source) is ignored here.
    assert len(load_data(str(path), split="train")) == 4


def test_synthetic_n_zero_is_not_one_sample() -> None:
    with pytest.raises(DataError, match="n=0"):
        load_data("synthetic:1x4?n=0")
    assert len(load_data("synthetic:1x4?n=1")) == 1


def test_keyword_limit_and_seed_are_checked() -> None:
    with pytest.raises(DataError, match="limit=0"):
        load_data("synthetic:1x4?n=4", limit=0)
    with pytest.raises(DataError, match="seed=-5"):
        load_data("synthetic:1x4?n=4", seed=-5)
    assert len(load_data("synthetic:1x4?n=4", limit=2, seed=7)) == 2


def test_dataset_check_finite_names_first_sample() -> None:
    x = torch.zeros(4, 3)
    x[2, 1] = float("inf")
    with pytest.raises(DataError, match="sample 2"):
        DataSet("d", (x,)).check_finite()


# --------------------------------------------------------------------------------------------
# properties: any option value either loads (exactly when valid) or raises TorchslimError


_RANGES = {"limit": (1, 2**63 - 1), "n": (1, 1_000_000), "seed": (0, 2**63 - 1)}
# n stays small enough (<= 16 MB of samples) that a loader missing its checks fails, not OOMs.
_SAFE_INTS = {"n": (-(2**8), 2_000_000)}
_TEXT = st.one_of(st.text(max_size=12), st.from_regex(r"\s*[+-]?[0-9]{1,4}\s*", fullmatch=True))


def _values(key: str) -> st.SearchStrategy[str]:
    low, high = _SAFE_INTS.get(key, (-(2**70), 2**70))
    return st.one_of(
        st.integers(min_value=low, max_value=high).map(str),
        st.integers(min_value=-3, max_value=70).map(str),
        _TEXT,
    )


def _valid(key: str, value: str) -> int | None:
    """The option's value when it is valid, else ``None`` (the specification, not the code)."""
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    low, high = _RANGES[key]
    number = int(text)
    return number if low <= number <= high else None


def _load_or_refuse(source: str, **kwargs: object) -> DataSet | TorchslimError:
    try:
        return load_data(source, **kwargs)  # type: ignore[arg-type]
    except TorchslimError as exc:
        assert "\n" not in exc.message, exc.message
        return exc


_PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_PROPERTY
@given(data=st.data(), key=st.sampled_from(sorted(_RANGES)))
def test_property_synthetic_option_values(data: st.DataObject, key: str) -> None:
    value = data.draw(_values(key), label="value")
    base = {"n": "synthetic:1x2?n={v}", "limit": "synthetic:1x2?n=8&limit={v}"}
    source = base.get(key, "synthetic:1x2?n=8&seed={v}").format(v=quote(value, safe=""))
    got = _load_or_refuse(source)
    expected = _valid(key, value)
    if expected is None:
        assert isinstance(got, DataError), f"{source!r} loaded"
        assert key in got.message
    else:
        assert isinstance(got, DataSet), f"{source!r}: {got}"
        assert len(got) == {"n": expected, "limit": min(expected, 8)}.get(key, 8)


@pytest.fixture(scope="module")
def one_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("one_image")
    (root / "only").mkdir()
    Image.new("RGB", (6, 4), (10, 20, 30)).save(root / "only" / "0.png")
    return root


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    value=st.one_of(
        # at most 6000: a loader missing its checks then fails the test instead of OOM-ing
        st.integers(min_value=-(2**40), max_value=0).map(str),
        st.integers(min_value=-2, max_value=6000).map(str),
        st.text(max_size=8),
    )
)
def test_property_image_size_values(one_image_folder: Path, value: str) -> None:
    source = f"{one_image_folder}?size={quote(value, safe='')}"
    got = _load_or_refuse(source)
    text = value.strip()
    valid = re.fullmatch(r"[+-]?[0-9]+", text) is not None and 1 <= int(text) <= 4096
    if valid:
        assert isinstance(got, DataSet), f"{source!r}: {got}"
        assert got.inputs[0].shape == (1, 3, int(text), int(text))
    else:
        assert isinstance(got, DataError) and "size" in got.message, f"{source!r}: {got!r}"


@_PROPERTY
@given(
    key=st.sampled_from(["limit", "n", "seed", "size", "split", "normalize", "seq_len", "zz"]),
    raw=st.text(max_size=6),  # short, so unchecked digits cannot ask for gigabytes
)
def test_property_raw_query_never_crashes(key: str, raw: str) -> None:
    """Unescaped text (``&``, ``=``, ``?``, ``%`` included) never gives another exception."""
    for base in ("synthetic:1x2", "torchslim:fashion_mnist"):
        got = _load_or_refuse(f"{base}?{key}={raw}")
        assert isinstance(got, (DataSet, TorchslimError))


@_PROPERTY
@given(limit=st.integers(min_value=-(2**65), max_value=2**65), seed=st.integers(-9, 2**64))
def test_property_keyword_limit_and_seed(limit: int, seed: int) -> None:
    got = _load_or_refuse("synthetic:1x2?n=5", limit=limit, seed=seed)
    if 1 <= limit <= 2**63 - 1 and 0 <= seed <= 2**63 - 1:
        assert isinstance(got, DataSet) and len(got) == min(limit, 5)
    else:
        assert isinstance(got, DataError)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(cut=st.floats(min_value=0.0, max_value=1.0), flips=st.lists(st.integers(0, 10**6)))
def test_property_damaged_files_are_refused_cleanly(
    tmp_path_factory: pytest.TempPathFactory, cut: float, flips: list[int]
) -> None:
    """Truncated or bit-flipped .npz/.pt/IDX files load or raise TorchslimError, nothing else."""
    root = tmp_path_factory.mktemp("damaged")
    makers: dict[str, Callable[[Path], None]] = {
        "d.npz": lambda p: np.savez_compressed(p, x=np.ones((6, 3), np.float32), y=np.arange(6)),
        "d.pt": lambda p: torch.save({"x": torch.ones(6, 3), "y": torch.arange(6)}, p),
        "d-images-idx3-ubyte": lambda p: p.write_bytes(_idx_bytes(np.ones((6, 2, 2)))),
    }
    for name, make in makers.items():
        path = root / name
        make(path)
        raw = bytearray(path.read_bytes())
        for f in flips:
            raw[f % len(raw)] ^= 0x5A
        path.write_bytes(bytes(raw[: round(len(raw) * cut)]))
        got = _load_or_refuse(str(path))
        assert isinstance(got, (DataSet, TorchslimError))


# --------------------------------------------------------------------------------------------
# CLI: `torchslim inspect torchslim:fashion_cnn --data BAD --json` exits 2 with one error line


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    inspect_cli.register(app)
    return app


def _cli_bad_inputs(root: Path) -> dict[str, tuple[str, Path, str]]:
    """Bad ``--data`` values → (argument, file to hash, word the error must name)."""
    cut = _npz(root / "cut.npz", x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4))
    raw = cut.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    nan = _npz(root / "nan.npz", x=np.zeros((3, 1, 28, 28), np.float32), y=[0.0, np.nan, 1.0])
    folder = _image_folder(root / "imgs")
    (folder / "a" / "bomb.png").write_bytes(_png_declaring(100_000, 100_000))
    return {
        "truncated-npz": (str(cut), cut, "cut.npz"),
        "nan-labels": (str(nan), nan, "index 1"),
        "png-bomb": (str(folder), folder, "bomb.png"),
        "size-zero": (f"{_image_folder(root / 'ok')}?size=0", root / "ok", "size=0"),
        "n-zero": ("synthetic?n=0", root, "n=0"),
    }


@pytest.mark.parametrize("case", ["truncated-npz", "nan-labels", "png-bomb", "size-zero", "n-zero"])
def test_cli_inspect_bad_data_exits_2(app: typer.Typer, tmp_path: Path, case: str) -> None:
    arg, path, word = _cli_bad_inputs(tmp_path)[case]
    before = _digest(path)
    res = CliRunner().invoke(app, ["inspect", "torchslim:fashion_cnn", "--data", arg, "--json"])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.stderr and "Traceback" not in res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and word in errors[0], res.stderr
    err = json.loads(res.stdout)  # under --json: one error object on stdout
    assert err["exit_code"] == 2 and word in err["error"]
    assert _digest(path) == before


def test_cli_process_bad_data_has_no_traceback(tmp_path: Path) -> None:
    """The installed command, in its own process: exit 2, no traceback on stderr."""
    arg, _path, word = _cli_bad_inputs(tmp_path)["truncated-npz"]
    cmd = [sys.executable, "-c", "from torchslim.cli.main import main; main()"]
    res = subprocess.run(
        [*cmd, "inspect", "torchslim:fashion_cnn", "--data", arg, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and word in res.stderr
    assert json.loads(res.stdout)["exit_code"] == 2
