"""The C library as a C user installs and uses it: README's blocks run exactly as written:
scripts/install-c.sh into a temporary prefix, then README's app.c built once with cc and
pkg-config and once as README's CMake project, in a folder outside the checkout; both count
the manifest's figures on the installed sample."""

import json
import os
import pathlib
import re
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[3]
README = REPO / "README.md"
MANIFEST = REPO / "models" / "cifar10.manifest.json"


def blocks(language, heading="### C and C++"):
    text = README.read_text()
    section = text[text.index(heading):]
    section = section[: section.index("\n### ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def bash(script, cwd, env):
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


def test_readme_install_then_pkg_config_and_cmake_builds_count_the_sample(tmp_path):
    install = blocks("sh", "### Install")[1]
    assert "install-c.sh" in install, install
    (build,) = blocks("sh")
    (cmake,) = blocks("cmake")
    (program,) = blocks("c")
    prefix = tmp_path / "prefix"
    env = {**os.environ, "PREFIX": str(prefix)}
    for name in ("PKG_CONFIG_PATH", "LD_LIBRARY_PATH"):
        env.pop(name, None)
    bash(install, REPO, env)

    soname = re.search(r"SONAME\)\s+Library soname: \[(.*)\]",
                       subprocess.run(["readelf", "-d", prefix / "lib/libcifar10.so"], capture_output=True,
                                      text=True, check=True).stdout).group(1)
    assert (prefix / "lib" / soname).is_symlink() and (prefix / "lib/libcifar10.a").is_file()
    assert (prefix / "include/cifar10/cifar10.h").read_bytes() == (REPO / "infer-c/include/cifar10.h").read_bytes()

    project = tmp_path / "project"
    project.mkdir()
    (project / "app.c").write_text(program)
    (project / "CMakeLists.txt").write_text(cmake)
    # CMake talks on stdout too: the counts are the lines of the form N/M.
    printed = re.findall(r"^\d+/\d+$", bash(build, project, env), re.M)
    manifest = json.loads(MANIFEST.read_text())
    float_count = manifest["results"]["sample"]["correct"]["cpu"]
    int8_count = manifest["int8"]["results"]["sample"]["correct"]["cpu"]
    assert printed == [f"{float_count}/1000", f"{int8_count}/1000"], printed
    assert float_count == 817
    # The programs use the installed library, by its soname, not anything in the checkout.
    for exe in (project / "app", project / "build" / "app"):
        needed = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True, check=True).stdout
        assert f"Shared library: [{soname}]" in needed, needed
