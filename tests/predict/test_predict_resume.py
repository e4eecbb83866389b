"""Checkpointed output: a run killed mid-way and resumed writes exactly the file an uninterrupted
run writes, without losing or duplicating rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from predict_helpers import MODEL

import torchslim
from torchslim.predict import read_predictions
from torchslim.predict._output import PartStore

# 2,000 test images at batch 4: long enough (500 model calls) to be killed mid-way.
DATA = "torchslim:fashion_mnist"
OPTS = {"limit": 2000, "batch_size": 4, "workers": 0, "threads": 1, "checkpoint_every": 64}

CHILD = """
import sys
import torchslim
torchslim.predict({model!r}, {data!r}, out=sys.argv[1], **{opts!r})
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet"])
def test_resume_after_kill_gives_the_same_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"killed.{fmt}"
    store = PartStore(out)
    code = CHILD.format(model=MODEL, data=DATA, opts=OPTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(store.done()) < 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, "the child finished (or died) before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not out.exists(), "the output appeared before the run was complete"
    done_before = sum(e - s for s, e in store.done())
    assert 0 < done_before < OPTS["limit"]

    summary = torchslim.predict(MODEL, DATA, out=out, resume=True, **OPTS)
    assert summary.resumed_rows == done_before
    assert summary.items == OPTS["limit"]
    assert not store.dir.exists()

    fresh = tmp_path / f"fresh.{fmt}"
    torchslim.predict(MODEL, DATA, out=fresh, **OPTS)
    assert out.read_bytes() == fresh.read_bytes()
    index = read_predictions(out)["index"]
    assert index.tolist() == list(range(OPTS["limit"]))  # nothing lost, nothing twice


def test_resume_ignores_a_half_written_part(tmp_path: Path) -> None:
    """A kill while a part is being written leaves only its temporary file: it is redone."""
    data, opts = "torchslim:fashion_mnist", {"limit": 64, "batch_size": 8, "workers": 0}
    fresh = tmp_path / "fresh.npy"
    torchslim.predict(MODEL, data, out=fresh, **opts)
    out = tmp_path / "p.npy"
    store = PartStore(out)
    # what an interrupted run leaves: its job record, one committed part, one partial write
    from torchslim.predict import _all_spans, _commit, _iterate, _prepare

    job = _prepare(
        MODEL,
        data,
        batch_size=8,
        workers=0,
        threads=None,
        device="cpu",
        topk=5,
        memory_limit_mb=None,
        preprocess=None,
        limit=64,
        overlap=True,
        trust_code=False,
        verify=True,
    )
    from torchslim.predict import _job_record

    store.start(_job_record(job, "npy", 5, 64, None))
    results = list(_iterate(job, _all_spans(64, 8)[:2]))
    _commit(store, results)
    (store.dir / ".part-000000000016-000000000024.npz.tmp").write_bytes(b"PK\x03\x04 cut")
    summary = torchslim.predict(MODEL, data, out=out, resume=True, **opts)
    assert summary.resumed_rows == 16
    assert out.read_bytes() == fresh.read_bytes()
