"""README.md's examples, run as a user would run them.

Every ```bash block and every `$ ` line of the other code blocks (transcripts) runs in README
order, in bash, in one empty folder, with the venv's `odorch` first on PATH and AWS on loopback
(the moto harness, bucket `my-odorch-bucket` made beforehand; a training job runs the real
entrypoint, tuning children are played by the harness) for the SageMaker examples.
Three things differ from a user's terminal, and only these:
- the venv/pip parts of the set-up command are CI's own set-up (.ci/run did them) and are skipped;
- `odorch quickstart` runs with `--fast` (the full tour is ~15 minutes of the same steps);
- `python -m pytest` (this test's own command) is not run again.
A user's own data is played by a demo dataset: `my_voc/` (Pascal VOC) is made before the run;
examples on the real datasets read `../shared` beside the repository and are skipped, saying so,
where it is absent. Each example runs in its own process group, so a server it leaves running in
the background is stopped with it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SHARED = README.parent.parent / "shared"
SETUP = ("python3 -m venv", "python -m venv", "pip install", ". .venv/bin/activate", "source .venv/bin/activate")
BUCKET = "my-odorch-bucket"


def readme_examples(text: str) -> list[tuple[int, str]]:
    """(line number, bash script) for each example, in README order."""
    examples = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start, body = fence.group(1), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in ("bash", "sh"):
            examples.append((start + 1, "\n".join(body)))
        else:
            examples.extend((start + 1 + n, line[2:]) for n, line in enumerate(body) if line.startswith("$ "))
    return examples


def as_run_here(script: str) -> str | None:
    """The script with CI's set-up parts dropped and the quickstart made fast; None: nothing left."""
    out = []
    for line in script.splitlines():
        if " && " not in line and not line.strip().startswith(("odorch quickstart", "python -m pytest", *SETUP)):
            out.append(line)  # as written: heredoc lines keep their indentation
            continue
        parts = [p.strip() for p in line.split(" && ")]
        parts = [p for p in parts if not p.startswith(SETUP) and p != "python -m pytest"]
        parts = [p + " --fast" if re.fullmatch(r"odorch quickstart( --out \S+)?", p) else p for p in parts]
        if parts:
            out.append(" && ".join(parts))
    text = "\n".join(out)
    return text if text.strip() and not all(line.lstrip().startswith("#") for line in out if line.strip()) else None


def run_example(command: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """bash -euo pipefail in a new session, its output to a file (a server it left running would
    hold a pipe open); once bash is done, whatever it left running is killed."""
    import signal
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            proc.wait(timeout=900)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read())


def test_examples_are_found_and_set_up_is_dropped():
    text = "intro\n```bash\npython3 -m venv .venv && pip install -e '.[dev]' && odorch quickstart\n```\n" \
           "```text\n$ odorch demo-data demo\nwrote 200 images\n```\n```bash\npython -m pytest\n```\n"
    examples = readme_examples(text)
    assert examples == [(3, "python3 -m venv .venv && pip install -e '.[dev]' && odorch quickstart"),
                        (6, "odorch demo-data demo"), (10, "python -m pytest")]
    assert [as_run_here(s) for _, s in examples] == ["odorch quickstart --fast", "odorch demo-data demo", None]
    assert as_run_here("cat > a.yaml <<'EOF'\ntrain:\n  epochs: 3\nEOF") == "cat > a.yaml <<'EOF'\ntrain:\n  epochs: 3\nEOF"


@pytest.mark.slow
def test_every_readme_example_runs(tmp_path, aws):
    from odorch.converters.demo import make_demo_voc

    examples = readme_examples(README.read_text(encoding="utf-8"))
    assert len(examples) >= 20, "README lost its examples?"
    aws.make_bucket(BUCKET)
    aws.on_create = aws.run_entrypoint  # a training job runs the real entrypoint on its S3 data
    make_demo_voc(tmp_path / "my_voc", images=40, classes=2, seed=3, image_size=192)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.pop("ODORCH_CONFIG", None)
    ran = 0
    for line, script in examples:
        command = as_run_here(script)
        if command is None:
            continue
        if "../shared/" in command:
            if not SHARED.is_dir():
                print(f"--- README.md:{line}: skipped, {SHARED} (the real datasets) is absent")
                continue
            command = command.replace("../shared/", f"{SHARED}/")
        proc = run_example(command, cwd=tmp_path, env=env)
        print(f"--- README.md:{line}\n$ {command}\n{proc.stdout[-3000:]}")
        assert proc.returncode == 0, f"README.md:{line} failed (exit {proc.returncode}):\n$ {command}\n{proc.stdout[-5000:]}"
        ran += 1
    assert ran >= 20
