"""notebooks/walkthrough.ipynb runs top to bottom (small settings), its cloud cells against the
moto harness, as CI runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.ipynb"


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", "") or json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.slow
def test_walkthrough_notebook_runs_with_its_cloud_cells(tmp_path, aws, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    aws.make_bucket("my-odorch-bucket")
    aws.on_create = aws.run_entrypoint  # the cloud training cell runs the real entrypoint on its S3 data
    work = tmp_path / "walk"
    monkeypatch.setenv("ODORCH_WALKTHROUGH_SMALL", "1")
    monkeypatch.setenv("ODORCH_WALKTHROUGH_DIR", str(work))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _text(nb)
    assert "Skipping the SageMaker cells" not in text
    report = json.loads((work / "report" / "report.json").read_text())
    assert {c["name"] for c in report["candidates"]} == {"ssdlite", "tuned", "served"}
    assert (work / "export" / "metrics.json").is_file()
    assert json.loads((work / "runs" / "cloud-ssdlite" / "job.json").read_text())["status"] == "Completed"
    assert (work / "predictions-cloud" / "predictions.json").is_file()
    assert "walkthrough-ssdlite" not in aws.sm_backend().endpoints  # the cleanup cell deleted it
