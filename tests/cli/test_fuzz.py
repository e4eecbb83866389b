"""Fuzz the CLI with bad inputs: every mistake is one ``error:`` line, one ``hint:`` line, exit 2.

A corpus of broken files (random bytes, truncated archives, a tampered artifact, hostile recipes)
and bad option values is run through every command, in-process with typer's ``CliRunner``. For
every case: exit code 2; stderr holds one ``error:`` line naming the problem and one ``hint:`` line
(and nothing but ``error:``/``hint:``/``warning:`` lines); no traceback; stdout is empty, or under
``--json`` exactly one JSON object ``{"error", "hint", "exit_code": 2}``; every input file is
byte-identical afterwards; no output directory (or temporary sibling) is left behind.
Hypothesis then throws generated option values at the cheap paths: each run exits 0 or 2, never 1,
never with a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from torchslim.cli.main import app

TINY = ["support_models:tiny", "--input-shape", "1x1x8x8"]
CNN = "torchslim:fashion_cnn"
DATA = "torchslim:fashion_mnist?limit=64"
ALLOWED_PREFIXES = ("error: ", "hint: ", "warning: ")


# ------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    root: Path  # every input file the cases read lives under here
    out: Path  # --out directories go under here; it must stay empty
    cwd: Path  # the working directory of every run; it must stay empty too

    def files(self) -> dict[str, str]:
        return {
            p.relative_to(self.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from support_models import tiny

    base = tmp_path_factory.mktemp("fuzz")
    root, out, cwd = base / "inputs", base / "out", base / "cwd"
    for d in (root, out, cwd):
        d.mkdir()
    noise = np.random.default_rng(0).bytes(4096)

    (root / "random.pt").write_bytes(noise)
    (root / "empty.pt").write_bytes(b"")
    buf = io.BytesIO()
    torch.save(tiny().state_dict(), buf)
    assert zipfile.is_zipfile(io.BytesIO(buf.getvalue()))
    (root / "truncated.pt").write_bytes(_truncate(buf.getvalue()))

    (root / "random.pt2").write_bytes(noise)
    torch.manual_seed(0)
    linear = nn.Linear(4, 3).eval()
    genuine = base / "genuine.pt2"
    torch.export.save(torch.export.export(linear, (torch.randn(1, 4),)), str(genuine))
    (root / "truncated.pt2").write_bytes(_truncate(genuine.read_bytes()))

    (root / "random.onnx").write_bytes(noise)
    save_file(tiny().state_dict(), str(base / "tiny.safetensors"))
    (root / "truncated.safetensors").write_bytes(
        _truncate((base / "tiny.safetensors").read_bytes())
    )
    rng = np.random.default_rng(1)
    np.savez(
        base / "data.npz",
        x=rng.random((64, 1, 28, 28), dtype=np.float32),
        y=np.arange(64) % 10,
    )
    (root / "truncated.npz").write_bytes(_truncate((base / "data.npz").read_bytes()))

    artifact = base / "artifact"
    with pytest.MonkeyPatch.context() as mp:  # the module fixture runs before conftest's cache one
        if "TORCHSLIM_CACHE_DIR" not in os.environ:
            mp.setenv("TORCHSLIM_CACHE_DIR", str(base / "cache"))
        res = _invoke(["export", CNN, "--runtime", "onnxruntime", "--out", str(artifact)])
    assert res.exit_code == 0, res.output
    shutil.copytree(artifact, root / "artifact")  # genuine, read by `run ARTIFACT MODEL`
    flipped = root / "flipped"
    shutil.copytree(artifact, flipped)
    onnx_file = flipped / "runtime" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    recipe = (artifact / "recipe.yaml").read_text()
    (root / "recipe.yaml").write_text(recipe)
    (root / "unknown_step.yaml").write_text(
        recipe.replace(
            "steps: []",
            "steps:\n- type: WarpDriveConfig\n  version: 1\n  fields: {factor: 9}",
        )
    )
    (root / "python_tag.yaml").write_text(
        recipe.replace(
            "steps: []",
            f"steps:\n- !!python/object/apply:os.system ['touch {base / 'pwned'}']",
        )
    )
    (root / "truncated.yaml").write_text(recipe[: len(recipe) // 3] + "\n  - [unclosed")
    (root / "binary.yaml").write_bytes(noise)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)  # anything written to a relative path would show up here
        yield Corpus(root, out, cwd)
    assert not (base / "pwned").exists(), "a recipe's !!python tag ran code"


@pytest.fixture(scope="module")
def hashes(corpus: Corpus) -> dict[str, str]:
    return corpus.files()


# ------------------------------------------------------------------------------------------------
# Cases: (id, command line, keyword the error line must contain)
# ------------------------------------------------------------------------------------------------

# Placeholders: {C} the corpus directory, {O} a fresh --out path that must not exist afterwards.
OUT = ["--out", "{O}"]
RUN_RECIPE = "{C}/recipe.yaml"

CASES: list[tuple[str, list[str], str]] = [
    # ---- broken model files, every command that loads a model -------------------------------
    *[
        (f"{cmd}-{name}", [cmd, f"{{C}}/{name}", *extra], keyword)
        for cmd, extra in (
            ("inspect", []),
            ("bench", ["--no-peak", "--min-time", "0", "--repeats", "1"]),
            ("export", ["--runtime", "onnxruntime", *OUT]),
            ("quantize", OUT),
            ("prune", OUT),
            ("compress", ["--method", "lowrank", *OUT]),
            ("distill", ["--teacher", CNN, "--data", DATA, *OUT]),
        )
        for name, keyword in (
            ("random.pt", "random.pt"),
            ("truncated.pt", "truncated"),
            ("empty.pt", "empty"),
            ("random.pt2", "torch.export"),
            ("truncated.pt2", "torch.export"),
            ("random.onnx", "ONNX"),
            ("flipped", "modified"),
        )
    ],
    *[
        (
            f"{cmd}-truncated-safetensors",
            [cmd, "{C}/truncated.safetensors", "--arch", "support_models:tiny", *extra],
            "safetensors",
        )
        for cmd, extra in (
            ("inspect", []),
            ("quantize", OUT),
            ("prune", OUT),
            ("export", ["--runtime", "onnxruntime", *OUT]),
        )
    ],
    ("run-model-random-pt", ["run", RUN_RECIPE, "{C}/random.pt", *OUT], "random.pt"),
    ("run-model-flipped", ["run", RUN_RECIPE, "{C}/flipped", *OUT], "modified"),
    (
        "distill-teacher-trunc-pt2",
        ["distill", CNN, "--teacher", "{C}/truncated.pt2", "--data", DATA, *OUT],
        "torch.export",
    ),
    *[
        (f"{cmd}-{name}", [cmd, f"{{C}}/{name}", *extra], keyword)
        for cmd, extra in (
            ("profile", []),
            ("predict", [DATA, "--format", "jsonl", "--out", "{O}"]),
        )
        for name, keyword in (
            ("random.pt", "random.pt"),
            ("truncated.pt2", "torch.export"),
            ("random.onnx", "ONNX"),
            ("flipped", "modified"),
        )
    ],
    ("serve-flipped-artifact", ["serve", "{C}/flipped"], "modified"),
    ("serve-not-an-artifact", ["serve", "{C}/random.pt"], "artifact"),
    (
        "predict-data-trunc-npz",
        ["predict", CNN, "{C}/truncated.npz", "--format", "jsonl", "--out", "{O}"],
        ".npz",
    ),
    (
        "predict-batch-size-0",
        ["predict", CNN, DATA, "--batch-size", "0", "--format", "jsonl", "--out", "{O}"],
        "batch",
    ),
    ("profile-batch-0", ["profile", CNN, "--batch", "0"], "batch"),
    # ---- broken data files ------------------------------------------------------------------
    ("inspect-data-trunc-npz", ["inspect", CNN, "--data", "{C}/truncated.npz"], ".npz"),
    (
        "quantize-calib-trunc-npz",
        ["quantize", *TINY, "--method", "static", "--calib", "{C}/truncated.npz", *OUT],
        ".npz",
    ),
    ("quantize-eval-trunc-npz", ["quantize", CNN, "--eval", "{C}/truncated.npz", *OUT], ".npz"),
    (
        "prune-data-trunc-npz",
        ["prune", *TINY, "--recover", "kd", "--data", "{C}/truncated.npz", *OUT],
        ".npz",
    ),
    (
        "distill-data-trunc-npz",
        ["distill", CNN, "--teacher", CNN, "--data", "{C}/truncated.npz", *OUT],
        ".npz",
    ),
    # ---- recipes ----------------------------------------------------------------------------
    ("run-unknown-step", ["run", "{C}/unknown_step.yaml", *TINY, *OUT], "WarpDriveConfig"),
    ("run-python-tag", ["run", "{C}/python_tag.yaml", *TINY, *OUT], "tag"),
    ("run-truncated-yaml", ["run", "{C}/truncated.yaml", *TINY, *OUT], "YAML"),
    ("run-binary-yaml", ["run", "{C}/binary.yaml", *TINY, *OUT], "recipe"),
    ("run-missing-recipe", ["run", "{C}/missing.yaml", *TINY, *OUT], "does not exist"),
    ("run-flipped-artifact", ["run", "{C}/flipped", *TINY, *OUT], "modified"),
    (
        "run-out-over-its-recipe",
        ["run", "{C}/artifact", *TINY, "--out", "{C}/artifact", "--force"],
        "input",
    ),
    # ---- bad option values ------------------------------------------------------------------
    *[
        (f"{cmd}-threads-{value}", [cmd, *model, f"--threads={value}", *extra], "--threads")
        for cmd, model, extra in (
            ("bench", TINY, []),
            ("quantize", TINY, OUT),
            ("export", TINY, ["--runtime", "onnxruntime", *OUT]),
            ("run", [RUN_RECIPE, *TINY], OUT),
            ("demo", [], OUT),
            ("optimize", [CNN], ["--eval", DATA, *OUT]),
        )
        for value in ("0", "-2")
    ],
    ("bench-threads-abc", ["bench", *TINY, "--threads", "abc"], "--threads"),
    ("bench-batch-0", ["bench", *TINY, "--batch", "0"], "--batch"),
    ("bench-batch-list", ["bench", *TINY, "--batch", "1,-8"], "--batch"),
    ("optimize-batch-0", ["optimize", CNN, "--eval", DATA, "--batch", "0", *OUT], "--batch"),
    *[
        (
            f"{cmd}-batch-size-{value}",
            [cmd, *model, f"--batch-size={value}", *extra],
            "--batch-size",
        )
        for cmd, model, extra in (
            ("prune", TINY, ["--recover", "kd", "--data", DATA, *OUT]),
            ("compress", TINY, ["--method", "lowrank", *OUT]),
            ("distill", [CNN], ["--teacher", CNN, "--data", DATA, *OUT]),
        )
        for value in ("0", "-4")
    ],
    *[
        (
            f"{cmd}-input-shape-{value}",
            [cmd, "support_models:tiny", "--input-shape", value, *extra],
            keyword,
        )
        for cmd, extra in (
            ("inspect", []),
            ("bench", []),
            ("quantize", OUT),
            ("prune", OUT),
            ("compress", ["--method", "lowrank", *OUT]),
            ("export", ["--runtime", "onnxruntime", *OUT]),
        )
        for value, keyword in (("0x3", "shape"), ("abc", "shape"), ("1x1x99999x99999", "large"))
    ],
    ("prune-ratio-1.5", ["prune", *TINY, "--ratio", "1.5", *OUT], "ratio"),
    ("prune-ratio-neg", ["prune", *TINY, "--ratio=-0.5", *OUT], "ratio"),
    ("prune-ratio-nan", ["prune", *TINY, "--ratio", "nan", *OUT], "ratio"),
    (
        "compress-energy-1.5",
        ["compress", *TINY, "--method", "lowrank", "--energy", "1.5", *OUT],
        "energy",
    ),
    ("compress-unknown-method", ["compress", *TINY, "--method", "zip", *OUT], "method"),
    ("quantize-unknown-method", ["quantize", *TINY, "--method", "warp", *OUT], "warp"),
    *[
        (f"{cmd}-max-drop-{value}", [cmd, *model, f"--max-drop={value}", *extra], "--max-drop")
        for cmd, model, extra in (
            ("quantize", TINY, ["--eval", DATA, *OUT]),
            ("demo", [], OUT),
            ("optimize", [CNN], ["--eval", DATA, *OUT]),
        )
        for value in ("-3", "nan")
    ],
    *[
        (f"{cmd}-out-empty", [cmd, *model, "--out", ""], "output directory")
        for cmd, model in (
            ("export", [*TINY, "--runtime", "onnxruntime"]),
            ("quantize", TINY),
            ("prune", TINY),
            ("compress", [*TINY, "--method", "lowrank"]),
            ("distill", [CNN, "--teacher", CNN, "--data", DATA]),
            ("run", [RUN_RECIPE, *TINY]),
            ("demo", []),
        )
    ],
    *[
        (f"{cmd}-out-proc", [cmd, *model, "--out", "/proc/x"], "/proc/x")
        for cmd, model in (
            ("export", [*TINY, "--runtime", "onnxruntime"]),
            ("quantize", TINY),
            ("prune", TINY),
            ("compress", [*TINY, "--method", "lowrank"]),
            ("distill", [CNN, "--teacher", CNN, "--data", DATA]),
            ("run", [RUN_RECIPE, *TINY]),
            ("demo", []),
        )
    ],
    ("quantize-out-is-input-dir", ["quantize", "{C}/truncated.pt", "--out", "{C}"], "input"),
    ("quantize-out-is-file", ["quantize", *TINY, "--out", "{C}/empty.pt"], "is a file"),
    ("demo-out-is-file", ["demo", "--out", "{C}/empty.pt"], "is a file"),
    ("demo-time-budget-abc", ["demo", "--time-budget", "abc", *OUT], "--time-budget"),
    ("prune-out-nested", ["prune", "{C}/random.pt", "--out", "{O}/deeper/still"], "random.pt"),
    # ---- bad data query options -------------------------------------------------------------
    *[
        (f"{cmd}-{flag[2:]}-{name}", [cmd, *model, flag, src, *extra], keyword)
        for cmd, model, flag, extra in (
            ("inspect", TINY, "--data", []),
            ("quantize", TINY, "--calib", ["--method", "static", *OUT]),
            ("quantize", [CNN], "--eval", OUT),
            ("prune", TINY, "--data", ["--recover", "kd", *OUT]),
            ("distill", [CNN], "--data", ["--teacher", CNN, *OUT]),
        )
        for name, src, keyword in (
            ("seed-abc", "torchslim:fashion_mnist?seed=abc", "seed"),
            ("limit-0", "torchslim:fashion_mnist?limit=0", "limit"),
        )
    ],
    (
        "inspect-data-unknown-option",
        ["inspect", *TINY, "--data", "torchslim:fashion_mnist?x=1"],
        "option",
    ),
    # ---- usage errors typer catches before the command runs ---------------------------------
    ("bench-missing-model", ["bench", "--batch", "1"], "MODEL"),
    ("quantize-unknown-option", ["quantize", *TINY, "--frobnicate"], "frobnicate"),
    ("prune-steps-0", ["prune", *TINY, "--steps", "0", *OUT], "--steps"),
]


def _fill(args: list[str], corpus: Corpus, case_id: str) -> tuple[list[str], Path]:
    out = corpus.out / case_id
    return [a.replace("{C}", str(corpus.root)).replace("{O}", str(out)) for a in args], out


def check_one_error(res: Any, *, as_json: bool, code: int = 2, keyword: str | None = None) -> str:
    """The failure contract for one run; returns the error message."""
    where = f"exit {res.exit_code}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"{type(res.exception).__name__} escaped: {res.exception}\n{where}"
    )
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, where
    assert res.exit_code == code, where
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    stray = [line for line in lines if not line.startswith(ALLOWED_PREFIXES)]
    assert not stray, f"stderr holds more than torchslim's messages: {stray}\n{where}"
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, where
    message = errors[0].removeprefix("error: ")
    if keyword is not None:
        assert keyword.lower() in message.lower(), f"'{keyword}' not in the error line\n{where}"
    if as_json:
        obj = json.loads(res.stdout)  # exactly one JSON document, nothing else
        assert isinstance(obj, dict) and set(obj) == {"error", "hint", "exit_code"}, where
        assert obj["exit_code"] == code and obj["error"] == message, where
        assert obj["hint"] == hints[0].removeprefix("hint: "), where
    else:
        assert res.stdout.strip() == "", where
    return message


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(("case_id", "args", "keyword"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(
    corpus: Corpus,
    hashes: dict[str, str],
    case_id: str,
    args: list[str],
    keyword: str,
    as_json: bool,
) -> None:
    argv, out = _fill(args, corpus, case_id)
    res = _invoke(argv + (["--json"] if as_json else []))
    check_one_error(res, as_json=as_json, keyword=keyword)
    assert corpus.files() == hashes, "an input file changed"
    assert not out.exists(), f"{out} was left behind"
    assert list(corpus.out.iterdir()) == [], "something was left in the output area"
    assert list(corpus.cwd.iterdir()) == [], "something was written to the working directory"


def test_cases_cover_every_command() -> None:
    assert {args[0] for _, args, _ in CASES} == {c.name for c in app.registered_commands}
    assert len({c[0] for c in CASES}) == len(CASES), "case ids must be unique"


# ------------------------------------------------------------------------------------------------
# The other exits: internal errors, interrupts, running out of memory
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "keyword"),
    [
        (ZeroDivisionError("boom"), 1, "internal error: ZeroDivisionError: boom"),
        (KeyboardInterrupt(), 130, "Interrupted"),
        (MemoryError(), 2, "Out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: 4e10 bytes"), 2, "memory"),
    ],
    ids=["bug", "interrupt", "memory", "allocator"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_unexpected_exceptions_never_show_a_traceback(
    corpus: Corpus,
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    code: int,
    keyword: str,
    as_json: bool,
) -> None:
    import torchslim.models

    def explode(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(torchslim.models, "load_model", explode)
    res = _invoke(["inspect", CNN, *(["--json"] if as_json else [])])
    check_one_error(res, as_json=as_json, code=code, keyword=keyword)
    if code == 1:
        assert "hint: rerun with --debug for the full traceback and report it" in res.stderr
    if not isinstance(exc, KeyboardInterrupt):  # --debug lets the exception through
        debug = _invoke(["inspect", CNN, "--debug"])
        assert isinstance(debug.exception, type(exc)), debug.output


# ------------------------------------------------------------------------------------------------
# Hypothesis: generated option values on the cheap paths
# ------------------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_clean(res: Any, corpus: Corpus) -> None:
    """Exit 0, or exit 2 with one error line; never a traceback, never exit 1."""
    where = f"exit {res.exit_code}\nstdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-2000:]}"
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"{type(res.exception).__name__} escaped: {res.exception}\n{where}"
    )
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, where
    assert res.exit_code in (0, 2), where
    if res.exit_code == 2:
        check_one_error(res, as_json=False)
    else:
        assert not [line for line in res.stderr.splitlines() if line.startswith("error:")], where
    assert list(corpus.out.iterdir()) == [] and list(corpus.cwd.iterdir()) == [], where


def _numbers(low: float, high: float) -> st.SearchStrategy[object]:
    """Mostly plausible values in [low, high], then any float, then text that is no number."""
    return st.one_of(
        st.floats(low, high),
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.sampled_from(["abc", "", "1e400", "-0", "0x10", "1,5", "nan", "-inf"]),
    )


@FUZZ
@given(
    threads=st.one_of(
        st.integers(-3, 8),
        st.integers(-(10**6), 10**6),
        st.sampled_from(["x", "", "1.5", "2e3"]),
    )
)
def test_threads_values(corpus: Corpus, threads: object) -> None:
    res = _invoke(["quantize", *TINY, f"--threads={threads}", "--dry-run"])
    check_clean(res, corpus)
    if isinstance(threads, int) and threads > (os.cpu_count() or 1):
        assert f"warning: --threads {threads} is more than the" in res.stderr
        assert "expect it to run much slower" in res.stderr


@FUZZ
@given(ratio=_numbers(0.0, 1.0))
def test_ratio_values(corpus: Corpus, ratio: object) -> None:
    check_clean(_invoke(["prune", *TINY, f"--ratio={ratio}", "--dry-run"]), corpus)


@FUZZ
@given(max_drop=_numbers(0.0, 100.0))
def test_max_drop_values(corpus: Corpus, max_drop: object) -> None:
    args = ["quantize", *TINY, f"--max-drop={max_drop}", "--eval", DATA, "--dry-run"]
    check_clean(_invoke(args), corpus)


@FUZZ
@given(
    batch=st.lists(st.integers(-3, 64).map(str) | st.sampled_from(["", "x", " "]), max_size=4).map(
        ",".join
    )
)
def test_batch_values(corpus: Corpus, batch: str) -> None:
    args = [
        "bench",
        *TINY,
        "--batch",
        batch,
        "--no-peak",
        "--min-time",
        "0",
        "--max-time",
        "0.01",
        "--repeats",
        "1",
    ]
    check_clean(_invoke(args), corpus)


# Input shapes: dimensions are kept small (the accepted ones are really built and run), joined
# by separators, names and dtypes in any order; plus short free text.
_DIM = st.integers(0, 24).map(str)
_TOKEN = st.sampled_from(["x", "x", "x", ",", ":", "float16", "int64", "bogus", "input_ids", " "])


def _join_shape(parts: list[str]) -> str:
    text = ""
    for part in parts:
        if part.isdigit() and text[-1:].isdigit():
            text += "x"  # keep every dimension small: never glue two numbers together
        text += part
    return text


_SHAPES = st.one_of(
    st.lists(st.integers(1, 12), min_size=1, max_size=5).map(lambda d: "x".join(map(str, d))),
    st.lists(st.one_of(_DIM, _TOKEN), max_size=9).map(_join_shape),
    st.text(alphabet="0123456789x:,-. abf", max_size=7),
    st.sampled_from(["99999999999x1", "1x1x99999x99999", "0", "x", ":", "1x1x8x8:bool"]),
)


@FUZZ
@given(shape=_SHAPES)
def test_input_shape_values(corpus: Corpus, shape: str) -> None:
    check_clean(_invoke(["inspect", "support_models:tiny", "--input-shape", shape]), corpus)


_KEYS = st.sampled_from(
    ["limit", "seed", "split", "n", "size", "normalize", "full", "seq_len", "bogus", "", "limit"]
)
_VALUES = st.one_of(
    st.integers(-3, 200).map(str),
    st.sampled_from(["abc", "", "train", "test", "1e3", "true", "no", "imagenet", "99" * 12]),
)
_PLAUSIBLE = st.one_of(
    st.integers(1, 200).map(lambda n: f"limit={n}"),
    st.integers(0, 10**6).map(lambda n: f"seed={n}"),
    st.sampled_from(["split=train", "split=test", "full=0"]),
)
_QUERIES = st.one_of(
    st.lists(_PLAUSIBLE, max_size=3).map("&".join),
    st.lists(
        st.tuples(_KEYS, _VALUES, st.booleans()).map(lambda t: f"{t[0]}={t[1]}" if t[2] else t[0]),
        max_size=4,
    ).map("&".join),
)


@FUZZ
@given(query=_QUERIES)
def test_data_query_values(corpus: Corpus, query: str) -> None:
    res = _invoke(["inspect", CNN, "--data", f"torchslim:fashion_mnist?{query}"])
    check_clean(res, corpus)
