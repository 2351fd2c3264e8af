"""Real weights offline: minilm-l6 loads from its packaged checkpoint and learns real SST-2.

Skipped unless the ``energybench[minilm]`` extra is installed and a GLUE copy
is at ../shared/data/glue (or $ENERGYBENCH_GLUE_DIR). Marked slow: 50 steps
of a 22.7 M-parameter BERT on two CPU cores take a minute or more.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

GLUE = Path(os.environ.get("ENERGYBENCH_GLUE_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue"))
if not (GLUE / "SST-2" / "train.tsv").exists():
    GLUE = Path("/work/shared/data/glue")

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None, reason="needs energybench[minilm]"),
    pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").exists(), reason=f"no SST-2 under {GLUE}"),
]


def test_minilm_loads_from_the_packaged_checkpoint_as_a_pretrained_bert():
    from energybench.models import packaged
    from energybench.models.backbones import load_backbone

    bb = load_backbone("minilm-l6", num_labels=2)
    assert bb.family == "encoder" and bb.model.config.hidden_size == 384 and bb.model.config.num_hidden_layers == 6
    folder = packaged.checkpoint_dir("minilm-l6")
    assert packaged._sha256(folder / "model.safetensors") == packaged.PACKAGED["minilm-l6"].sha256
    assert bb.tokenizer("a good movie")["input_ids"][0] == bb.tokenizer.cls_token_id


@pytest.mark.slow
def test_fifty_steps_of_full_fine_tuning_beat_the_majority_class_on_sst2_validation():
    from energybench.methods.full_ft import FullFineTuning
    from energybench.models.backbones import load_backbone
    from energybench.tasks import load_task
    from energybench.train.evaluate import evaluate
    from energybench.train.loop import fit
    from energybench.train.settings import TrainingSettings

    torch.manual_seed(0)
    bb = load_backbone("minilm-l6", num_labels=2)
    data = load_task("sst2", str(GLUE))
    validation = data.validation[:300]
    majority = 100 * Counter(e.label for e in validation).most_common(1)[0][1] / len(validation)
    cfg = TrainingSettings(learning_rate=1e-4, batch_size=16, max_steps=50, max_epochs=1, patience=None,
                           eval_every_steps=None, warmup_ratio=0.1, max_source_length=64, eval_batch_size=100)
    model = FullFineTuning().apply(bb.model, None)
    data.validation = validation[:50]  # the loop's own validation (kept short)
    fit(model, FullFineTuning(), bb.tokenizer, data, cfg, total_steps=50, device=torch.device("cpu"), seed=0,
        log=lambda _: None, family="encoder")
    score, _ = evaluate(model, bb.tokenizer, data.spec, validation, 64, 16, 100, torch.device("cpu"), family="encoder")
    assert score > majority + 10, (score, majority)
