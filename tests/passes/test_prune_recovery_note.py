"""The note unstructured/global/N:M pruning reports when recovery training was asked for."""

from __future__ import annotations

import pytest
import torch

from slim_models import small_resnet
from torchslim.passes import PassContext, apply_pass
from torchslim.passes.prune import PruneConfig, PruneMethod
from torchslim.train import DistillConfig, DistillMethod

X = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))

FULL_NOTE = (
    "Recovery training was skipped because it would re-densify the pruned weights; run "
    "torchslim distill before pruning instead, or prune again after training."
)


@pytest.mark.parametrize("method", ["unstructured", "global", "nm"])
def test_recovery_note_is_one_complete_sentence(method: str) -> None:
    recover = DistillConfig(method=DistillMethod.FINETUNE, max_steps=1, batch_size=2)
    cfg = PruneConfig(method=PruneMethod(method), ratio=0.5, recover=recover)
    res = apply_pass(small_resnet(), cfg, PassContext(example_inputs=(X,)))
    note = res.report["recovery_note"]
    assert note == FULL_NOTE
    assert note.endswith(".") and note.count(".") == 1
    assert "recovery" not in res.report  # no training ran: the note says so


def test_no_recovery_note_without_recover() -> None:
    res = apply_pass(
        small_resnet(),
        PruneConfig(method=PruneMethod.UNSTRUCTURED, ratio=0.5),
        PassContext(example_inputs=(X,)),
    )
    assert "recovery_note" not in res.report
