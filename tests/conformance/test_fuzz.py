"""A fuzz smoke of the recipe loader: whatever the input, only edgeship's own errors come out (engineering.md E1)."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeship.core.errors import EdgeshipError
from edgeship.recipe import apply_override, load_recipe_file, parse_recipe
from tests.conftest import tiny_recipe

KEYS = ["name", "seed", "model", "source", "weights", "input", "shape", "mean", "std", "num_classes", "data",
        "calibration", "validation", "samples", "stages", "type", "train", "prune", "quantize", "distill",
        "archify", "epochs", "ratio", "weight_bits", "act_bits", "export", "formats", "onnx", "validate", "gates",
        "runtimes", "latency", "profile", "threads", "check", "x"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["onnx", "digits", "train", "prune", "openvino@x"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=25)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _parse(data: object) -> None:
    try:
        parse_recipe(data)
    except EdgeshipError:
        pass


@FUZZ
@given(VALUES)
def test_any_structure_is_a_recipe_or_an_edgeship_error(data):
    _parse(data)


@FUZZ
@given(st.sampled_from(KEYS), st.sampled_from(KEYS), VALUES)
def test_any_value_at_any_key_of_a_valid_recipe(section, key, value):
    recipe = tiny_recipe(__import__("pathlib").Path("/nonexistent"))
    node = recipe.setdefault(section, {}) if isinstance(recipe.get(section, {}), dict) else recipe
    node[key] = value
    _parse(recipe)


@FUZZ
@given(st.text(alphabet=string.printable, max_size=300))
def test_any_text_as_a_recipe_file(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    try:
        load_recipe_file(path, [])
    except EdgeshipError:
        pass


@FUZZ
@given(st.text(alphabet=string.printable, max_size=60))
def test_any_override(tmp_path, assignment):
    try:
        apply_override(tiny_recipe(tmp_path), assignment)
    except EdgeshipError:
        pass
