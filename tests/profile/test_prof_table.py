"""The per-layer latency table: saved per machine and model hash, read back, format checked."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from torchslim.profile import profile
from torchslim.profile.table import (
    TABLE_FORMAT,
    entry_key,
    load_table,
    model_hash,
    module_latency,
    table_path,
)
from torchslim.timing import TimingConfig

FAST = TimingConfig(min_samples=5, min_time_s=0.0, max_time_s=0.5, min_warmup_calls=2)


def test_model_hash_follows_the_weights(known_net: torch.nn.Module) -> None:
    import copy

    other = copy.deepcopy(known_net)
    assert model_hash(other) == model_hash(known_net)
    with torch.no_grad():
        other.stem.weight[0, 0] += 1.0
    assert model_hash(other) != model_hash(known_net)


def test_profile_saves_and_updates_the_table(known_net: torch.nn.Module, tmp_path: Path) -> None:
    inputs = (torch.randn(8, 32),)
    kwargs = dict(example_inputs=inputs, iterations=3, peak=False, timing=FAST, cache_dir=tmp_path)
    first = profile(known_net, threads=1, **kwargs)
    second = profile(known_net, threads=2, **kwargs)
    assert first.table == second.table
    digest = model_hash(known_net)
    path = table_path(digest, directory=tmp_path)
    assert str(path) == first.table
    assert path.parent.name == first.machine  # one folder per machine fingerprint
    data = load_table(digest, directory=tmp_path)
    assert data is not None
    assert data["format"] == TABLE_FORMAT and data["model_hash"] == digest
    assert set(data["entries"]) == {entry_key("eager", 8, 1), entry_key("eager", 8, 2)}
    entry = data["entries"][entry_key("eager", 8, 2)]
    assert entry["layers"][0]["module"] == "heavy"
    assert entry["latency_ms"] == second.latency_ms
    per_module = module_latency(entry)
    assert per_module["heavy"] == entry["layers"][0]["ms"]
    json.dumps(data)


def test_unreadable_or_foreign_tables_are_ignored(tmp_path: Path) -> None:
    path = table_path("ab" * 32, directory=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    assert load_table("ab" * 32, directory=tmp_path) is None
    path.write_text(json.dumps({"format": "other", "version": 1}), encoding="utf-8")
    assert load_table("ab" * 32, directory=tmp_path) is None
