"""Recipe validation: typed sections, unknown keys list valid ones, --set overrides are validated too."""

import pytest

from pipeline.errors import ConfigError
from pipeline.recipe import apply_override, load_recipe, parse_recipe
from tests.conftest import tiny_recipe, write_recipe


def test_valid_recipe_fills_defaults(tmp_path):
    r = parse_recipe(tiny_recipe(tmp_path))
    assert r.export.formats == ["onnx", "tflite", "openvino"]
    assert r.validate_.gates.top1_agreement_min == 0.999
    assert r.model.input.mean == [0.5]


def test_single_mean_broadcasts_to_channels(tmp_path):
    r = parse_recipe(tiny_recipe(tmp_path, **{"model.input": {"shape": [1, 3, 8, 8], "mean": [0.5], "std": [0.25],
                                                              "num_classes": 10}}))
    assert r.model.input.mean == [0.5, 0.5, 0.5] and r.model.input.std == [0.25] * 3


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_recipe(tiny_recipe(tmp_path, **{"profile.thread": 4}))
    msg = str(e.value)
    assert "profile.thread" in msg and "did you mean 'threads'" in msg and "warmup" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="valid keys here: name, seed, output_dir, model"):
        parse_recipe({**tiny_recipe(tmp_path), "exports": ["onnx"]})


def test_unknown_stage_and_stage_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'prunee'; valid stages: train"):
        parse_recipe(tiny_recipe(tmp_path, stages=[{"type": "prunee"}]))
    with pytest.raises(ConfigError, match="valid keys for train: type, epochs, lr"):
        parse_recipe(tiny_recipe(tmp_path, stages=[{"type": "train", "epoch": 3}]))


@pytest.mark.parametrize(("shape", "needle"), [([1, 3, 224], "4 positive dimensions"), ([1, 0, 8, 8], "positive")])
def test_bad_input_shape(tmp_path, shape, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        parse_recipe(tiny_recipe(tmp_path, **{"model.input.shape": shape}))
    assert "model.input.shape" in str(e.value)


def test_mean_length_must_match_channels(tmp_path):
    with pytest.raises(ConfigError, match="mean has 2 values but the input has 1 channels"):
        parse_recipe(tiny_recipe(tmp_path, **{"model.input.mean": [0.1, 0.2]}))


def test_bad_format_and_gate_range(tmp_path):
    with pytest.raises(ConfigError, match="export.formats.0"):
        parse_recipe(tiny_recipe(tmp_path, **{"export.formats": ["coreml"]}))
    with pytest.raises(ConfigError, match="top1_agreement_min"):
        parse_recipe(tiny_recipe(tmp_path, **{"validate.gates.top1_agreement_min": 1.5}))


def test_overrides_apply_and_validate(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    r = load_recipe(path, ["profile.threads=3", "stages.0.epochs=1", "export.formats=[onnx]"])
    assert r.profile.threads == 3 and r.stages[0].model_dump()["epochs"] == 1 and r.export.formats == ["onnx"]
    with pytest.raises(ConfigError, match="profile.threads"):
        load_recipe(path, ["profile.threads=zero"])
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(path, ["profile.threads"])
    with pytest.raises(ConfigError, match="stages has 1 entries"):
        load_recipe(path, ["stages.5.epochs=1"])


def test_apply_override_parses_yaml_values():
    d = {"a": {"b": 1}}
    apply_override(d, "a.c=[1, 2]")
    apply_override(d, "x.y=true")
    assert d == {"a": {"b": 1, "c": [1, 2]}, "x": {"y": True}}


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_recipe(bad)


def test_examples_are_valid_recipes():
    from tests.conftest import ROOT

    for path in sorted((ROOT / "examples").glob("*.yaml")):
        load_recipe(path)
