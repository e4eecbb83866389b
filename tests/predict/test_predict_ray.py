"""``predict --ray``: Ray Data ``map_batches`` over an actor pool on a local cluster the test
starts; the merged output matches the local path's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from predict_helpers import DATA, MODEL

import torchslim
from torchslim.predict import read_predictions

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")  # a throw-away local cluster: no token in $HOME
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    mp.undo()


@pytest.mark.slow
def test_ray_output_matches_local(cluster: None, tmp_path: Path) -> None:
    opts = {"limit": 256, "batch_size": 32}
    via_ray = torchslim.predict(MODEL, DATA, out=tmp_path / "ray.jsonl", ray=True, actors=2, **opts)
    local = torchslim.predict(MODEL, DATA, out=tmp_path / "local.jsonl", workers=0, **opts)
    assert via_ray.ray and via_ray.items == local.items == 256
    assert via_ray.loader["ray_actors"] == 2
    a, b = read_predictions(tmp_path / "ray.jsonl"), read_predictions(tmp_path / "local.jsonl")
    assert a["index"].tolist() == list(range(256))  # order recovered from the shards
    assert (a["id"] == b["id"]).all() and (a["label_ids"] == b["label_ids"]).all()
    assert (a["labels"] == b["labels"]).all()
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
    assert not list(tmp_path.glob(".*")), "shards or temporary files left behind"
