"""LST's side_layers (the layers that keep a side block, as in the authors' scripts) hold on every family."""

from __future__ import annotations

import pytest

from energybench.methods.base import ApplyContext
from energybench.models.backbones import load_backbone
from energybench.registry import load_method


@pytest.mark.parametrize("preset", ["tiny-bert-4layer", "tiny-llama-4layer"])
@pytest.mark.parametrize("given, kept", [({"side_layers": [1, 3]}, [1, 3]), ({"drop_layers": [0]}, [1, 2, 3])])
def test_side_layers_and_drop_layers_choose_the_same_blocks_on_encoders_and_decoders(preset, given, kept):
    cls = load_method("lst")
    method = cls(cls.Settings.model_validate({"init": "random", **given}))
    model = method.apply(load_backbone(preset, seed=0, num_labels=2).model, ApplyContext(total_steps=10, seed=0))
    assert list(model.kept) == kept
    assert method.describe(model)["side_layers"] == kept


def test_side_layers_out_of_range_name_the_field():
    cls = load_method("lst")
    method = cls(cls.Settings.model_validate({"init": "random", "side_layers": [7]}))
    with pytest.raises(ValueError, match=r"side_layers \[7\] out of range for the 4-layer backbone"):
        method.apply(load_backbone("tiny-bert-4layer", seed=0, num_labels=2).model, ApplyContext(total_steps=10, seed=0))
