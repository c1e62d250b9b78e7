"""``python -m engine models --layers CHECKPOINT``: the layer names the --layer options take."""
from __future__ import annotations

import json

from engine.cli import main


def test_lists_every_hookable_layer_with_its_shape_and_the_defaults(tiny_checkpoints, capsys):
    from engine.checkpoints import load
    from engine.models import default_layers, list_layers

    model = load(tiny_checkpoints["standard"]).model
    assert main(["models", "--layers", str(tiny_checkpoints["standard"]), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed] == [info.name for info in list_layers(model)]
    assert [row["name"] for row in listed if row["default"]] == default_layers(model)
    assert main(["models", "--layers", str(tiny_checkpoints["standard"])]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == len(listed) and table[0].split()[0] == listed[0]["name"]
    assert sum("(default)" in line for line in table) == len(default_layers(model))


def test_a_missing_checkpoint_is_an_error(tmp_path, capsys):
    assert main(["models", "--layers", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: no model card")
