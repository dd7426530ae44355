"""README's Rust and command install blocks, run exactly as written, outside the checkout:
a new Cargo project beside a checkout named `cifar10` with README's dependency line and
README's program (it counts the sample), and `cargo install --path cli --locked` into a
temporary root, whose `cifar10` then runs from a folder with nothing of the checkout in it.
(The Python and C blocks are run by infer-py/tests/test_wheel.py and
infer-c/tests/package/test_c_package.py.)"""

import json
import os
import pathlib
import re
import shutil
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MANIFEST = REPO / "models" / "cifar10.manifest.json"


def blocks(language, heading):
    text = README.read_text()
    section = text[text.index(heading):]
    section = section[: section.index("\n### ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def run(args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_readme_rust_dependency_and_program_count_the_sample(tmp_path):
    (dependency,) = blocks("toml", "### Install")
    program = blocks("rust", "### Rust")[0]
    (tmp_path / "cifar10").symlink_to(REPO)
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[workspace]\n\n' + dependency
    )
    (app / "src" / "main.rs").write_text(program)
    # The checkout's lock file pins the same crate versions the project tests with.
    shutil.copy(REPO / "Cargo.lock", app / "Cargo.lock")
    # Built into the checkout's target folder with its release settings, so that the crates
    # the test command already built for release are reused.
    env = {
        **os.environ,
        "CARGO_TARGET_DIR": str(REPO / "target"),
        "CARGO_PROFILE_RELEASE_LTO": "thin",
        "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "4",
        "CARGO_PROFILE_RELEASE_DEBUG": "false",
    }
    printed = run(["cargo", "run", "--release", "--quiet"], cwd=app, env=env)
    expected = json.loads(MANIFEST.read_text())["results"]["sample"]["correct"]["cpu"]
    assert printed == f"{expected}/1000\n", printed


def test_readme_cargo_install_gives_a_command_that_works_from_any_folder(tmp_path):
    install = blocks("sh", "### Install")[-1]
    assert install.strip() == "cargo install --path cli --locked", install
    root = tmp_path / "root"
    env = {**os.environ, "CARGO_INSTALL_ROOT": str(root)}
    subprocess.run(["bash", "-euo", "pipefail", "-c", install], cwd=REPO, env=env, check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CIFAR10_DATA_DIR", "CI")}
    report = json.loads(run([root / "bin" / "cifar10", "eval", "--json", "--limit", "100"], cwd=elsewhere, env=env))
    assert report["model"].startswith("bundled cifar10.safetensors"), report["model"]
    assert report["total"] == 100 and report["data_dir"] is None
