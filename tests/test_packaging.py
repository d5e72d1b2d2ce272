"""What gets installed: one ``edgeship`` namespace, every file, every dependency declared, layers enforced."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_recipe, write_recipe

FOLDERS = {"pipeline": "edgeship", "calibration": "edgeship/calibration", "exporters": "edgeship/exporters",
           "targets": "edgeship/targets", "examples": "edgeship/examples"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def build_tree(out: Path) -> Path:
    """The installed layout (setuptools build_py, what the wheel holds) under ``out``."""
    subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
                    "--build-lib", str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_layer_contracts_hold_and_fire_on_an_import_that_runs_back_up(tmp_path):
    tree = build_tree(tmp_path / "lib")
    ok = lint_imports(tree)
    assert ok.returncode == 0 and "3 kept, 0 broken" in ok.stdout, ok.stdout + ok.stderr
    io = tree / "edgeship" / "core" / "io.py"
    io.write_text(io.read_text() + "\nfrom edgeship.runner import Runner  # noqa\n")  # the bottom imports the top
    broken = lint_imports(tree)
    assert broken.returncode == 1 and "core is the bottom layer" in broken.stdout and "BROKEN" in broken.stdout
    (tree / "edgeship" / "exporters" / "sneaky.py").write_text("import edgeship.targets.base\n")
    assert "do not depend on each other BROKEN" in lint_imports(tree).stdout


def test_contracts_name_every_pipeline_module():
    pipeline = {f"edgeship.{p.stem}" for p in (ROOT / "pipeline").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    pipeline -= {"edgeship.core"}
    for contract in PYPROJECT["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "forbidden":
            listed = set(contract["forbidden_modules"]) - {f"edgeship.{f}" for f in
                                                           ("calibration", "exporters", "targets", "examples")}
            assert listed == pipeline, f"{contract['name']}: add or remove {sorted(listed ^ pipeline)}"


def test_setuptools_packages_cover_every_folder():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for folder, prefix in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([*prefix.split("/"), *rel.parts]))
    assert listed == found


def test_every_imported_third_party_package_is_declared():
    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in [*PYPROJECT["project"]["dependencies"],
                          *(x for extra in PYPROJECT["project"]["optional-dependencies"].values() for x in extra)]}
    dists = packages_distributions()
    used: dict[str, set[str]] = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in ("edgeship", "__future__"):
                        continue
                    for dist in dists.get(top, [top]):
                        used.setdefault(dist.lower().replace("_", "-"), set()).add(str(path.relative_to(ROOT)))
    undeclared = {d: sorted(files) for d, files in used.items() if d not in declared}
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    return next(out.glob("edgeship-*.whl"))


def test_wheel_holds_only_the_edgeship_namespace_and_every_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"edgeship", "edgeship-0.1.0.dist-info"}
    for folder, prefix in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                assert f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}" in names, path


def test_installed_wheel_runs_from_anywhere_and_user_modules_do_not_shadow_it(wheel, tmp_path):
    """A fresh venv outside the repository, the wheel installed non-editable (its dependencies borrowed from
    this environment); from a directory holding calibration.py, pipeline.py, targets.py and exporters.py."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next(env_dir.glob("lib/python*/site-packages"))
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    (site / "borrowed-deps.pth").write_text("\n".join(borrowed) + "\n")  # plain paths: no editable finder
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True, capture_output=True)
    user = tmp_path / "user-project"
    user.mkdir()
    for name in ("calibration", "pipeline", "targets", "exporters"):
        (user / f"{name}.py").write_text(f"raise SystemExit('the user\\'s own {name}.py was imported')\n")
    recipe = tiny_recipe(tmp_path, **{"stages": [{"type": "train", "epochs": 1}], "export.formats": ["onnx"],
                                      "latency.enabled": False})
    (user / "recipe.yaml").write_text(write_recipe(tmp_path, recipe).read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys; sys.path.insert(0, ''); import edgeship\n"
            "r = edgeship.run('recipe.yaml', out='run')\n"
            "print(edgeship.__file__, r.status, sorted(r.results))")
    out = subprocess.run([str(python), "-c", code], cwd=user, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    where, status, runtimes = out.stdout.split(" ", 2)
    assert Path(where).is_relative_to(site) and status == "pass" and "onnxruntime" in runtimes
    script = env_dir / "bin" / "edgeship"
    version = subprocess.run([str(script), "--version"], cwd=user, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and "edgeship 0.1.0" in version.stdout
    assert all(lib in version.stdout for lib in ("torch", "onnxruntime", "ai-edge-litert", "openvino"))
    demo = subprocess.run([str(script), "demo", "--out", str(tmp_path / "demo"), "--set", "latency.runs=10",
                           "--set", "stages.0.epochs=2"], cwd=user, env=env, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / "demo" / "report.html").is_file()
