"""Recipe validation: typed sections, unknown keys list valid ones, --set overrides are validated too."""

import pytest

from edgeship import load_recipe
from edgeship.core.errors import ConfigError
from edgeship.recipe import apply_override, parse_recipe
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
        parse_recipe(tiny_recipe(tmp_path, **{"latency.thread": 4}))
    msg = str(e.value)
    assert "latency.thread" in msg and "did you mean 'threads'" in msg and "warmup" in msg


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
    r = load_recipe(path, ["latency.threads=3", "stages.0.epochs=1", "export.formats=[onnx]"])
    assert r.latency.threads == 3 and r.stages[0].epochs == 1 and r.export.formats == ["onnx"]
    with pytest.raises(ConfigError, match="latency.threads"):
        load_recipe(path, ["latency.threads=zero"])
    with pytest.raises(ConfigError, match="key=value"):
        load_recipe(path, ["latency.threads"])
    with pytest.raises(ConfigError, match="stages has 1 entries"):
        load_recipe(path, ["stages.5.epochs=1"])


def test_deprecated_profile_key_still_works_with_a_note(tmp_path):
    old = tiny_recipe(tmp_path)
    old["profile"] = old.pop("latency")
    r = parse_recipe(old)
    assert r.latency.threads == 1 and r.deprecations == [
        "profile is deprecated: the key is now latency (the old name still works)"]
    # --set with either name reaches the section, whichever name the file uses
    path = write_recipe(tmp_path, old)
    assert load_recipe(path, ["latency.threads=3"]).latency.threads == 3
    assert load_recipe(write_recipe(tmp_path, tiny_recipe(tmp_path), "new.yaml"),
                       ["profile.threads=4"]).latency.threads == 4
    both = {**tiny_recipe(tmp_path), "profile": {"threads": 2}}
    with pytest.raises(ConfigError, match="deprecated name of latency: give only latency"):
        parse_recipe(both)
    assert parse_recipe(tiny_recipe(tmp_path)).deprecations == []


def test_model_sources_under_the_old_pipeline_package_still_work(tmp_path):
    r = parse_recipe(tiny_recipe(tmp_path, **{"model.source": "pipeline.zoo:digits_cnn"}))
    assert r.model.source == "edgeship.zoo:digits_cnn"
    assert r.deprecations == ["model.source pipeline.zoo:digits_cnn is deprecated: edgeship's modules are now "
                              "edgeship.* (edgeship.zoo:digits_cnn)"]


def test_stage_entries_are_typed_configs(tmp_path):
    from edgeship.prune.config import PruneConfig

    r = parse_recipe(tiny_recipe(tmp_path, stages=[{"type": "train"}, {"type": "prune", "ratio": 0.5}]))
    assert isinstance(r.stages[1], PruneConfig) and r.stages[1].ratio == 0.5
    with pytest.raises(ConfigError, match=r"stages.1.ratio: Input should be greater than 0"):
        parse_recipe(tiny_recipe(tmp_path, stages=[{"type": "train"}, {"type": "prune", "ratio": -1}]))
    with pytest.raises(ConfigError, match="stages.0.type: missing 'type'; valid stages: train"):
        parse_recipe(tiny_recipe(tmp_path, stages=[{"epochs": 1}]))


def test_validate_runtimes_are_checked_against_the_registry(tmp_path):
    r = parse_recipe(tiny_recipe(tmp_path))
    assert r.validate_.runtimes == {"onnx": ["onnxruntime"], "tflite": ["litert"],
                                    "openvino": ["openvino", "openvino@default"]}
    r = parse_recipe(tiny_recipe(tmp_path, **{"validate.runtimes": {"onnx": ["onnxruntime", "openvino"]}}))
    assert r.validate_.runtimes["onnx"] == ["onnxruntime", "openvino"] and r.validate_.runtimes["tflite"] == ["litert"]
    for bad, needle in (({"onnx": ["tensorrt"]}, "unknown runtime 'tensorrt'; valid runtimes: onnxruntime"),
                        ({"onnx": ["litert"]}, "runtime litert reads tflite, not onnx"),
                        ({"onnx": ["openvino@turbo"]}, "variants of openvino: openvino@default"),
                        ({"coreml": ["onnxruntime"]}, "unknown format 'coreml'")):
        with pytest.raises(ConfigError, match=needle):
            parse_recipe(tiny_recipe(tmp_path, **{"validate.runtimes": bad}))


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
