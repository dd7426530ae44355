"""The wheel as a user installs it: built by maturin, accepted by auditwheel, installed with
numpy into a new virtual environment, README's example run from a folder outside the
checkout and checked by mypy --strict, and the built-in models' counts on the sample."""

import os
import pathlib
import re
import subprocess
import sys
import venv
import zipfile

import pytest

from conftest import MANIFEST, REPO, SAMPLE

README = REPO / "README.md"
VENV_BIN = pathlib.Path(sys.executable).parent

COUNT = """
import sys
import numpy as np
import cifar10

records = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)
images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
for int8 in (False, True):
    classes, _ = cifar10.Classifier.bundled(int8=int8).classify(images)
    print(int((classes == records[:, 0]).sum()))
"""


def readme_block(language, heading, index=0):
    """The `index`th ```language block after `heading` in README, exactly as written."""
    text = README.read_text()
    section = text[text.index(heading):]
    found = re.findall(rf"```{language}\n(.*?)```", section, re.S)
    assert len(found) > index, f"no {language} block {index} under {heading!r} in README"
    return found[index]


def run(args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory):
    """README's install block, run as written in the checkout, with `pip` from a new
    environment that has nothing but pip."""
    home = tmp_path_factory.mktemp("user")
    venv.EnvBuilder(with_pip=True).create(home / "venv")
    install = readme_block("sh", "### Install", index=0)
    assert "maturin build" in install and "pip install" in install, install
    env = {**os.environ, "PATH": f"{home / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(["bash", "-euo", "pipefail", "-c", install], cwd=REPO, env=env, check=True)
    return home, home / "venv" / "bin" / "python"


@pytest.fixture(scope="module")
def wheel(user_venv):
    wheels = list((REPO / "target" / "wheels").glob("cifar10-0.1.0-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_is_one_abi3_manylinux_wheel_with_stubs(wheel):
    assert re.fullmatch(r"cifar10-0\.1\.0-cp39-abi3-manylinux_2_\d+_x86_64\.whl", wheel.name), wheel.name
    shown = run([VENV_BIN / "auditwheel", "show", wheel])
    assert re.search(r'consistent with\s+the following platform tag:\s+"manylinux_2_\d+_x86_64"', shown), shown
    names = zipfile.ZipFile(wheel).namelist()
    assert "cifar10/py.typed" in names and "cifar10/__init__.pyi" in names, names
    assert not any(name.endswith(".safetensors") for name in names), "the models live in the extension, once"


def test_readme_example_runs_outside_the_checkout_and_passes_mypy_strict(user_venv):
    home, python = user_venv
    example = home / "example.py"
    example.write_text(readme_block("python", "### Python"))
    printed = run([python, example], cwd=home)
    assert re.fullmatch(r"\['\w+', '\w+', '\w+', '\w+'\] \[[0-9. ]+\]\n", printed), printed
    run([VENV_BIN / "mypy", "--strict", "--no-incremental", "--python-executable", python, example], cwd=home)


def test_the_built_in_models_count_the_manifest_figures_on_the_sample(user_venv):
    import json

    home, python = user_venv
    script = home / "count.py"
    script.write_text(COUNT)
    counts = [int(line) for line in run([python, script, SAMPLE], cwd=home).split()]
    manifest = json.loads(MANIFEST.read_text())
    assert counts == [
        manifest["results"]["sample"]["correct"]["cpu"],
        manifest["int8"]["results"]["sample"]["correct"]["cpu"],
    ]
    assert counts[0] == 817
