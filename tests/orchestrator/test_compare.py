"""odorch compare: two trained runs and a served endpoint of one of them on the same split; the
report's numbers against `odorch evaluate`, its files, the HTML in headless Chromium, F1, the
verdict, and every kind of bad input."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from odorch.cli import main
from tests.helpers import with_unknown_class

COCO_KEYS = ("stats", "per_class", "images", "detections", "backend")
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def compare(*args: object) -> object:
    return CliRunner().invoke(main, ["compare", *[str(a) for a in args]])


def evaluate_json(run: Path, data: Path) -> dict:
    """`odorch evaluate --json` with one image per batch, as compare sends them."""
    result = CliRunner().invoke(main, ["evaluate", str(run), "--data", str(data), "--batch-size", "1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def report(trained_runs, tiny_data, served, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "report"
    result = compare(trained_runs["small-a"], trained_runs["small-b"], f"served={served.url}", "--data", tiny_data,
                     "--out", out)
    assert result.exit_code == 0, result.output
    return {"dir": out, "output": result.output, "json": json.loads((out / "report.json").read_text())}


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """Untrained models saved as model folders: the demo's classes in another order, and another class set."""
    import torch

    from odorch.runtime.models import build_model, save_model

    root = tmp_path_factory.mktemp("other")
    runs = {}
    for name, classes in (("reordered", ["square", "circle"]), ("hexagons", ["circle", "hexagon"])):
        torch.manual_seed(0)
        model = build_model("ssdlite320_mobilenet_v3_large", classes, weights="none", image_size=128)
        save_model(root / name, model.eval(), {"model": "ssdlite320_mobilenet_v3_large", "classes": classes,
                                               "image_size": 128, "origin": "none", "weights": "none"})
        runs[name] = root / name
    return runs


# ---------------------------------------------------------------- the report


def test_numbers_equal_odorch_evaluate(report, trained_runs, tiny_data):
    rows = {r["name"]: r for r in report["json"]["candidates"]}
    assert list(rows) == ["small-a", "small-b", "served"]
    for name in ("small-a", "small-b"):
        expected = evaluate_json(trained_runs[name], tiny_data)
        assert {k: rows[name][k] for k in COCO_KEYS} == {k: expected[k] for k in COCO_KEYS}, name
    for name in ("small-a", "small-b"):  # errors and best F1 too, from the same COCOeval matches
        expected = evaluate_json(trained_runs[name], tiny_data)
        assert rows[name]["errors"] == expected["errors"] and rows[name]["f1"] == expected["errors"]["f1"], name
    for key in (*COCO_KEYS, "f1", "errors", "pr_curve"):  # the served run gives the run's numbers, exactly
        assert rows["served"][key] == rows["small-a"][key], key
    assert rows["small-a"]["stats"] != rows["small-b"]["stats"]


def test_report_contents(report, trained_runs, tiny_data):
    from PIL import Image

    from odorch.runtime.evaluation import F1_THRESHOLDS

    r, out = report["json"], report["dir"]
    rows = {row["name"]: row for row in r["candidates"]}
    assert r["winner"] in rows and r["images"] == 5 and r["classes"] == ["circle", "square"]
    ap = r"\d\.\d{3}"
    assert re.fullmatch(rf"{re.escape(r['winner'])} wins: AP {ap}( vs {ap} \([+-]{ap}\) for \S+, at|, tied with \S+, and faster:)"
                        r" [\d.]+ ms/image vs [\d.]+ ms\.", r["summary"]), r["summary"]
    for row in rows.values():
        assert len(row["stats"]) == 12 and set(row["per_class"]) == {"circle", "square"}
        assert all({"AP", "AP50"} <= set(c) for c in row["per_class"].values())
        assert row["f1"]["threshold"] in F1_THRESHOLDS and 0 < row["f1"]["f1"] <= 1
        assert len(row["f1"]["curve"]) == len(F1_THRESHOLDS)
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] and row["latency_ms"]["images"] == 5
        assert all(len(curve) == len(r["pr_recall"]) == 101 for curve in row["pr_curve"].values())
    for name in ("small-a", "small-b"):
        job = json.loads((trained_runs[name] / "job.json").read_text())
        assert rows[name]["training"] == {"job": name, "backend": "local", "duration_s": job["duration_s"], "cost_usd": None}
        assert rows[name]["size_mb"] == round((trained_runs[name] / "model" / "model.pth").stat().st_size / 2**20, 3)
        assert rows[name]["model"] == "ssdlite320_mobilenet_v3_large"
    assert rows["served"]["training"] is None and rows["served"]["size_mb"] is None and rows["served"]["kind"] == "url"
    assert [g["class"] for g in r["grid"][:2]] == ["circle", "square"]
    for g in r["grid"][:2]:
        assert Path(g["image"]).is_file() and any(b["class"] == g["class"] for b in g["truth"])
    for g in r["grid"]:
        assert set(g["candidates"]) == set(rows)
    worst = r["grid"][2:]  # each candidate's worst image not shown above; "served" is small-a: no new one
    assert 1 <= len(worst) <= 2 and len({g["image"] for g in r["grid"]}) == len(r["grid"])
    for g in worst:
        name = g["label"].split(":")[0].removeprefix("worst of ")
        listed = {w["file_name"]: w for w in rows[name]["errors"]["worst_images"]}
        w = listed[Path(g["image"]).name]
        assert g["class"] is None and g["label"] == f"worst of {name}:\n{w['missed']} missed, {w['false_positives']} false pos."
    for row in rows.values():
        errors = row["errors"]
        assert errors["threshold"] == row["f1"]["threshold"] and set(errors["per_class"]) == {"circle", "square"}
        matrix = errors["confusion"]["matrix"]
        assert errors["confusion"]["labels"] == ["circle", "square", "background"]
        gt_boxes = sum(c["gt_boxes"] for c in row["per_class"].values())
        assert sum(map(sum, matrix[:2])) == gt_boxes  # every counted box is found, confused or missed

    md = (out / "report.md").read_text()
    assert md.splitlines()[2] == f"**{r['summary']}**"
    for png in ("bars.png", "pr_curves.png", "confusion.png", "grid.png"):
        assert f"]({png})" in md
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 300
    html = (out / "report.html").read_text()
    assert html.index(r["summary"].replace("'", "&#x27;")) < html.index("<table")
    assert "<script" not in html and "<link" not in html and "href=" not in html and "url(" not in html
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    pngs = ("bars.png", "pr_curves.png", "confusion.png", "grid.png")
    assert [base64.b64decode(e) for e in embedded] == [(out / p).read_bytes() for p in pngs]
    assert len(re.findall(r"\bsrc=", html)) == 4  # nothing but the embedded PNGs is loaded
    assert "<h2>Confusion matrix of small-a (score &gt;= " in html
    assert r["summary"] in report["output"] and f"wrote {out / 'report.json'}" in report["output"]


def test_report_opens_in_headless_chromium(report, tmp_path):
    from PIL import Image

    chromium = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium): the HTML report was not rendered")
    shot = tmp_path / "report.png"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
               "--window-size=1280,5200", (report["dir"] / "report.html").as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    print(f"screenshot of the report in headless Chromium: {shot}")
    assert done.returncode == 0, done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    with Image.open(shot) as im:
        assert im.size == (1280, 5200)
        low, high = im.convert("L").getextrema()
        assert high - low > 100  # not a blank page


# ---------------------------------------------------------------- more candidates, by name


def test_reordered_classes_are_mapped_by_name_and_a_study_means_its_best(runner, trained_runs, other_runs, tiny_data, tmp_path):
    runs_dir = tmp_path / "runs"
    study = runs_dir / "tune-demo"
    study.mkdir(parents=True)
    (study / "summary.json").write_text(json.dumps({"study": "demo", "cost_usd": None,
                                                    "trials": [{"duration_s": 20.0}, {"duration_s": 30.0}]}))
    (study / "best").symlink_to(trained_runs["small-b"], target_is_directory=True)
    out = tmp_path / "report"
    result = compare(other_runs["reordered"], "tune:demo", "--runs-dir", runs_dir, "--data", tiny_data, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["candidates"]}
    assert list(rows) == ["reordered", "tune-demo"]
    assert report["notes"] == ["reordered: labels mapped to the data's classes by name (its order: square, circle)"]
    expected = evaluate_json(other_runs["reordered"], tiny_data)  # evaluate maps by label_map
    assert {k: rows["reordered"][k] for k in COCO_KEYS} == {k: expected[k] for k in COCO_KEYS}
    expected = evaluate_json(trained_runs["small-b"], tiny_data)
    assert {k: rows["tune-demo"][k] for k in COCO_KEYS} == {k: expected[k] for k in COCO_KEYS}
    assert rows["tune-demo"]["kind"] == "tune" and rows["tune-demo"]["training"]["job"] == "small-b"
    assert rows["tune-demo"]["training"]["study"] == {"trials": 2, "duration_s": 50.0, "cost_usd": None}


# ---------------------------------------------------------------- bad input


def test_candidates_with_different_class_sets_are_refused(trained_runs, other_runs, tiny_data, tmp_path):
    result = compare(trained_runs["small-a"], other_runs["hexagons"], "--data", tiny_data, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "different class sets (small-a: circle, square; hexagons: circle, hexagon)" in result.stderr
    assert not (tmp_path / "r").exists()


def test_split_with_classes_no_candidate_knows_is_refused(trained_runs, tiny_data, tmp_path):
    other = with_unknown_class(tiny_data, tmp_path / "data")
    result = compare(trained_runs["small-a"], trained_runs["small-b"], "--data", other, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "candidates small-a, small-b:" in result.stderr
    assert "classes the model was not trained on: hexagon" in result.stderr


def test_endpoint_that_is_down_is_named_before_anything_runs(trained_runs, tiny_data, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = compare(trained_runs["small-a"], url, "--data", tiny_data, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert f"candidate 127.0.0.1:{port}: cannot reach {url}/ping" in result.stderr
    assert "odorch serve" in result.stderr and "images of" not in result.output


@pytest.mark.parametrize("args, message", [
    (["{a}", "{a}"], "more than one candidate is named small-a"),
    (["x={a}", "x={b}"], "more than one candidate is named x"),
    (["runs/not-there"], "runs/not-there: no such file or folder, and not http://HOST:PORT"),
    (["tune:nothing"], "tune:nothing: no study in"),
    (["http://"], "not a URL of an endpoint"),
])  # fmt: skip
def test_bad_candidates(trained_runs, tiny_data, tmp_path, args, message):
    given = [a.format(a=trained_runs["small-a"], b=trained_runs["small-b"]) for a in args]
    result = compare(*given, "--runs-dir", tmp_path, "--data", tiny_data, "--out", tmp_path / "r")
    assert result.exit_code == 1, result.output
    assert message in result.stderr


def test_no_candidate_is_a_usage_error(tiny_data, tmp_path):
    result = compare("--data", tiny_data, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "Missing argument '[NAME=]CANDIDATE...'" in result.stderr


def test_missing_sagemaker_endpoint_is_named(aws, trained_runs, tiny_data, tmp_path):
    result = compare(trained_runs["small-a"], "odorch-nothing", "--data", tiny_data, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "candidate odorch-nothing: SageMaker endpoint odorch-nothing:" in result.stderr


@pytest.mark.slow
def test_sagemaker_endpoint_gives_the_runs_numbers(aws, trained_runs, tiny_data, tmp_path, monkeypatch):
    """Deployed to moto (each InvokeEndpoint runs the real handler in a subprocess: slow)."""
    import odorch.deploy as backend
    from odorch.aws import AwsClients
    from tests.aws_harness import ROLE

    monkeypatch.setattr(backend, "POLL_S", 0.01)
    aws.make_bucket("odorch-compare")
    run = tmp_path / "runs" / "small-a"
    shutil.copytree(trained_runs["small-a"], run, ignore=shutil.ignore_patterns("checkpoints"))
    backend.deploy(AwsClients.from_env(), run, instance_type="ml.m5.xlarge", bucket="odorch-compare", role=ROLE,
                   endpoint_name="odorch-small-a")
    out = tmp_path / "report"
    result = compare(run, "sm=odorch-small-a", "--runs-dir", run.parent, "--data", tiny_data, "--out", out)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["candidates"]}
    for key in (*COCO_KEYS, "f1", "size_mb", "training"):
        assert rows["sm"][key] == rows["small-a"][key], key
    assert rows["sm"]["kind"] == "endpoint" and len(aws.invocations) == 6  # warm-up + 5 images


# ---------------------------------------------------------------- the verdict


def test_verdict_in_one_sentence():
    from odorch.compare import verdict

    def row(name, ap, ms):
        return {"name": name, "stats": {"AP": ap}, "latency_ms": {"p50": ms}}

    assert verdict([row("b", 0.37, 30.2), row("a", 0.41, 12.04)]) == (
        "a", "a wins: AP 0.410 vs 0.370 (+0.040) for b, at 12 ms/image vs 30 ms.")
    assert verdict([row("slow", 0.4, 50), row("fast", 0.4, 5.25)]) == (
        "fast", "fast wins: AP 0.400, tied with slow, and faster: 5.2 ms/image vs 50 ms.")
    assert verdict([row("slow", 0.4004, 50), row("fast", 0.4001, 5)])[0] == "fast"  # equal to 3 decimals: a tie
    assert verdict([row("only", 0.2, 9)])[1] == "only is the only candidate: AP 0.200, at 9.0 ms/image."


def test_candidate_kinds(tmp_path):
    from odorch.compare import parse_candidate

    job = tmp_path / "runs" / "job-1"
    (job / "model").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"job_name": "job-1"}))
    cases = {
        str(job): ("job-1", "run", str(job / "model"), job),
        str(job / "model"): ("job-1", "run", str(job / "model"), job),
        f"mine={job}": ("mine", "run", str(job / "model"), job),
        "http://127.0.0.1:8080/": ("127.0.0.1:8080", "url", "http://127.0.0.1:8080", None),
        "local=http://localhost:9000": ("local", "url", "http://localhost:9000", None),
        "odorch-job-1": ("odorch-job-1", "endpoint", "odorch-job-1", None),
    }
    for text, (name, kind, target, job_dir) in cases.items():
        c = parse_candidate(text, runs_dir=tmp_path / "runs")
        assert (c.name, c.kind, c.target, c.job_dir) == (name, kind, target, job_dir), text


@pytest.mark.slow
def test_an_openvino_export_is_a_candidate(trained_runs, tiny_data, tmp_path):
    """`odorch export`'s folder compared with its run: same answers within the IR's float error, faster."""
    pytest.importorskip("openvino")
    from odorch.export import export_model
    from odorch.runtime.models import load_trained

    source = trained_runs["small-a"] / "model"
    model, config = load_trained(source)
    export_model(model, config, source=source, data=tiny_data, out=tmp_path / "export", echo=lambda *_: None)
    out = tmp_path / "report"
    result = compare(trained_runs["small-a"], f"ov={tmp_path / 'export'}", "--data", tiny_data, "--out", out)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["candidates"]}
    assert rows["ov"]["model"] == "ssdlite320_mobilenet_v3_large (openvino fp32)"
    assert rows["ov"]["stats"]["AP"] == pytest.approx(rows["small-a"]["stats"]["AP"], abs=0.01)
    assert rows["ov"]["training"] == rows["small-a"]["training"]  # found through the export's source
    xml = tmp_path / "export" / "fp32" / "model.xml"
    assert rows["ov"]["size_mb"] == round((xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20, 3)
