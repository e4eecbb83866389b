"""Recipe: YAML round trip, safe loading, validation before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchslim.passes.graph import FuseConfig
from torchslim.passes.prune import PruneConfig
from torchslim.passes.quantize import QuantizeConfig
from torchslim.recipe import DataRefs, Recipe, RecipeError, Representation
from torchslim.runtimes.configs import OpenVINOConfig, OrtConfig
from torchslim.train import DistillConfig, DistillMethod


def _three_steps() -> Recipe:
    return Recipe(
        steps=(
            FuseConfig(),
            PruneConfig(ratio=0.4, recover=DistillConfig(method=DistillMethod.FINETUNE, epochs=2)),
            QuantizeConfig(method="static", backend="openvino"),
        ),
        runtime=OpenVINOConfig(threads=2),
        batch_sizes=(1, 32),
        data=DataRefs(calib="c.npz", eval="torchslim:fashion_mnist", train="t.npz"),
        seed=7,
    )


def test_yaml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    r = _three_steps()
    path = r.save(tmp_path / "recipe.yaml")
    back = Recipe.load(path)
    assert back == r
    assert back.steps[1].recover.method is DistillMethod.FINETUNE
    assert back.runtime.threads == 2
    text = path.read_text()
    assert text.startswith("format: torchslim.recipe\nversion: 1\n")


def test_loading_a_directory_reads_its_recipe(tmp_path: Path) -> None:
    _three_steps().save(tmp_path / "recipe.yaml")
    assert Recipe.load(tmp_path) == _three_steps()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("format: torchslim.recipe\nversion: 1\nsteps:\n- {type: Evil, fields: {}}\n", "Evil"),
        (
            "format: torchslim.recipe\nversion: 1\nsteps:\n- {type: FuseConfig, fields: {bogus: 1}}\n",
            "bogus",
        ),
        ("format: torchslim.recipe\nversion: 1\nstesp: []\n", "stesp"),
        ("format: torchslim.recipe\nversion: 99\n", "version 99"),
        ("format: something-else\nversion: 1\n", "not a torchslim recipe"),
        ("format: torchslim.recipe\nversion: 1\nsteps: [\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['touch MARKER']\n", "not valid YAML"),
        (
            "format: torchslim.recipe\nversion: 1\nruntime: {type: PruneConfig, fields: {}}\n",
            "not a runtime",
        ),
    ],
)
def test_bad_recipes_give_one_error_naming_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(text).validate()
    assert needle in str(info.value)
    assert not (tmp_path / "MARKER").exists()


def test_validate_reports_what_each_step_produces() -> None:
    assert _three_steps().validate() == [
        Representation.MODULE,
        Representation.MODULE,
        Representation.OPENVINO,
    ]


def test_validate_refuses_a_pass_after_lowering() -> None:
    r = Recipe((QuantizeConfig(method="static", backend="onnxruntime"), PruneConfig()))
    with pytest.raises(RecipeError, match="step 2"):
        r.validate()


def test_validate_refuses_a_runtime_that_cannot_run_the_lowered_model() -> None:
    r = Recipe((QuantizeConfig(method="static", backend="onnxruntime"),), OpenVINOConfig())
    with pytest.raises(RecipeError, match="openvino"):
        r.validate()
    Recipe((QuantizeConfig(method="static", backend="onnxruntime"),), OrtConfig()).validate()


def test_then_appends_and_describe_names_only_changed_fields() -> None:
    r = Recipe((FuseConfig(),)).then(PruneConfig(ratio=0.3), runtime=OrtConfig())
    assert len(r.steps) == 2
    assert r.describe() == ["FuseConfig()", "PruneConfig(ratio=0.3)", "runtime OrtConfig()"]
