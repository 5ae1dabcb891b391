#!/usr/bin/env python3
"""VOC -> COCO conversion throughput: `odorch convert voc2coco` against Datumaro.

What is measured
    Wall-clock seconds of one whole command run as a subprocess of this script,
    start-up included, on the same replicated Pascal VOC tree, one tool after the
    other on the same machine (best of --repeat runs):

    * odorch:   odorch convert voc2coco ROOT --out WORK/out-odorch
                (writes OUT/annotations/all.json and hard-links every image into OUT/images/)
    * Datumaro: datum convert -i ROOT -if voc_detection -f coco_instances -o WORK/out-datumaro
                (writes annotations/instances_default.json; no --save-media, so it
                copies no images: the cheaper job, which favours Datumaro).
                --datumaro-format coco gives Datumaro's plain `-f coco`, which also writes
                image_info_default.json and stuff_default.json (every box a second time).

    The input is BCCD (Pascal VOC, 364 images) replicated --copies times
    (default 28 -> 10,192 XMLs) under WORK/voc: renamed XML copies in Annotations/,
    hard links (or copies) of the original JPEGs in JPEGImages/, plus what Datumaro
    needs and odorch ignores: ImageSets/Main/default.txt (all ids, one subset) and
    labelmap.txt (BCCD's classes are not the 20 VOC ones).

    Boxes written are counted from the output json files with plain json. odorch
    drops zero-area boxes (2 per copy of BCCD) and reports them in OUT/odorch.json;
    the check compares odorch kept + dropped with Datumaro's count, and counts the
    zero-area boxes that Datumaro wrote.

Goal: odorch >= 5x Datumaro (ratio = Datumaro seconds / odorch seconds).

Datumaro is not a project dependency: on first use the script makes its own venv
WORK/datumaro-venv and pip-installs datumaro[cli]==DATUMARO_VERSION there, or uses
--datumaro PATH (an existing `datum` executable). If Datumaro cannot be installed or
run, the script says so and exits non-zero.

Run:
    .venv/bin/python bench/convert_bench.py                 # 28 copies, 1 run each
    .venv/bin/python bench/convert_bench.py --repeat 3      # best of 3
    .venv/bin/python bench/convert_bench.py --copies 2      # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from benchlib import BenchError, odorch_executable

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = Path("/work/shared/datasets/bccd/BCCD")
DEFAULT_WORK = HERE / ".work"
DEFAULT_COPIES = 28  # 28 x 364 = 10,192 XMLs
DATUMARO_VERSION = "1.13.12"
GOAL = 5.0
FILENAME_RE = re.compile(r"<filename>[^<]*</filename>")


@dataclass
class Result:
    tool: str
    seconds: float
    xmls: int
    boxes: int
    dropped: int | None = None  # boxes the tool reported as dropped (odorch only)
    zero_area: int = 0  # zero-area boxes present in the written json


# ---------------------------------------------------------------- replication


def _replica_key(source: Path, copies: int) -> dict[str, object]:
    return {"source": str(source.resolve()), "copies": copies, "version": 1}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _classes_of(xml_text: str) -> set[str]:
    root = ET.fromstring(xml_text)
    return {(o.findtext("name") or "").strip() for o in root.iter("object")}


def _copy_one(xml: Path, image: Path, root: Path, copies: int) -> list[str]:
    """Write `copies` renamed copies of one XML and its image; return the new ids."""
    text = xml.read_text(encoding="utf-8")
    ids = []
    for k in range(copies):
        new_id = f"{xml.stem}_r{k:04d}"
        new_image = new_id + image.suffix
        (root / "Annotations" / f"{new_id}.xml").write_text(
            FILENAME_RE.sub(f"<filename>{new_image}</filename>", text, count=1), encoding="utf-8"
        )
        _link_or_copy(image, root / "JPEGImages" / new_image)
        ids.append(new_id)
    return ids


def _image_for(source: Path, xml: Path) -> Path:
    for ext in (".jpg", ".jpeg", ".png", ".JPG"):
        path = source / "JPEGImages" / (xml.stem + ext)
        if path.is_file():
            return path
    raise BenchError(f"{xml}: no image {xml.stem}.* in {source / 'JPEGImages'}")


def replicate(source: Path, root: Path, copies: int) -> int:
    """Build (or reuse) the replicated VOC tree at `root`; return its number of XMLs."""
    marker = root / "replica.json"
    key = _replica_key(source, copies)
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        return int(json.loads(marker.read_text())["xmls"])
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    xmls = sorted((source / "Annotations").glob("*.xml"))
    if not xmls:
        raise BenchError(f"{source / 'Annotations'}: no XML files")
    ids: list[str] = []
    classes: set[str] = set()
    for xml in xmls:
        classes |= _classes_of(xml.read_text(encoding="utf-8"))
        ids += _copy_one(xml, _image_for(source, xml), root, copies)
    (root / "ImageSets" / "Main" / "default.txt").write_text("".join(i + "\n" for i in ids))
    (root / "labelmap.txt").write_text("".join(f"{c}:::\n" for c in sorted(classes)))
    marker.write_text(json.dumps({"key": key, "xmls": len(ids)}))
    return len(ids)


# ------------------------------------------------------------------ the tools


def _quiet(cmd: list[str]) -> None:
    """Run `cmd`, showing its output only if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")


def _pip_install_datumaro(venv: Path) -> None:
    _quiet([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _quiet([*pip, f"datumaro[cli]=={DATUMARO_VERSION}"])


def datumaro_executable(given: Path | None, work: Path) -> Path:
    """An existing `datum`, or one installed into WORK/datumaro-venv on first use."""
    if given is not None:
        if not given.is_file():
            raise BenchError(f"--datumaro {given}: no such file")
        return given
    venv = work / "datumaro-venv"
    exe = venv / "bin" / "datum"
    if not exe.is_file():
        print(f"installing datumaro[cli]=={DATUMARO_VERSION} into {venv} (once) ...", flush=True)
        try:
            _pip_install_datumaro(venv)
        except (BenchError, OSError) as e:
            shutil.rmtree(venv, ignore_errors=True)
            raise BenchError(f"could not install Datumaro into {venv}; no result. {e}") from e
    if not exe.is_file():
        raise BenchError(f"Datumaro installed but {exe} is missing")
    return exe


def tool_version(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"


def timed_run(cmd: list[str], out: Path, log: Path) -> float:
    """Run `cmd` into a fresh `out` dir (removal not timed); return wall-clock seconds."""
    shutil.rmtree(out, ignore_errors=True)
    with log.open("w") as f:
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{cmd[0]} exited {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
    return seconds


def best_of(cmd: list[str], out: Path, log: Path, repeat: int) -> float:
    return min(timed_run(cmd, out, log) for _ in range(repeat))


# ------------------------------------------------------------- counting boxes


def _zero_area(annotations: list[dict]) -> int:
    return sum(1 for a in annotations if a["bbox"][2] * a["bbox"][3] <= 0)


def odorch_counts(out: Path) -> tuple[int, int, int]:
    """(boxes written, zero-area boxes written, boxes reported dropped) of an odorch output."""
    anns = []
    for path in sorted((out / "annotations").glob("*.json")):
        anns += json.loads(path.read_text())["annotations"]
    report = json.loads((out / "odorch.json").read_text())
    return len(anns), _zero_area(anns), int(report["box_counts"]["dropped"])


def datumaro_counts(out: Path) -> tuple[int, int]:
    """(boxes written, zero-area boxes written) of Datumaro's COCO instances json(s)."""
    paths = sorted((out / "annotations").glob("instances_*.json"))
    if not paths:
        raise BenchError(f"{out / 'annotations'}: no instances_*.json written by Datumaro")
    anns = [a for p in paths for a in json.loads(p.read_text())["annotations"] if "bbox" in a]
    return len(anns), _zero_area(anns)


# ------------------------------------------------------------------ reporting


def print_table(results: list[Result], cores: int, repeat: int) -> None:
    print(f"\nVOC -> COCO, {results[0].xmls:,} XMLs, {cores} cores, best of {repeat}")
    print(f"{'tool':<10} {'seconds':>9} {'XMLs/s':>9} {'boxes written':>14} {'dropped':>8} {'zero-area in json':>18}")
    for r in results:
        dropped = "-" if r.dropped is None else str(r.dropped)
        print(
            f"{r.tool:<10} {r.seconds:>9.2f} {r.xmls / r.seconds:>9,.0f} {r.boxes:>14,} {dropped:>8} {r.zero_area:>18,}"
        )


def print_verdict(odorch: Result, datumaro: Result) -> bool:
    ratio = datumaro.seconds / odorch.seconds
    met = ratio >= GOAL
    print(f"\nratio (Datumaro s / odorch s): {ratio:.1f}x   goal >= {GOAL:.0f}x: {'MET' if met else 'NOT MET'}")
    total = odorch.boxes + (odorch.dropped or 0)
    agree = total == datumaro.boxes
    print(
        f"boxes: odorch {odorch.boxes:,} kept + {odorch.dropped:,} dropped (zero-area) = {total:,}; "
        f"Datumaro {datumaro.boxes:,} -> {'agree' if agree else 'DIFFER by ' + f'{datumaro.boxes - total:+,}'}"
    )
    if datumaro.zero_area:
        print(
            f"note: Datumaro keeps zero-area boxes: {datumaro.zero_area:,} of its boxes have w*h == 0 "
            "(odorch drops and reports them)"
        )
    return agree


# ----------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for details.")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Pascal VOC root to replicate (default: BCCD)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work dir (default: bench/.work, git-ignored)")
    p.add_argument("--copies", type=int, default=DEFAULT_COPIES, help="copies of the source (default: 28 -> 10,192)")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool; the best is kept (default: 1)")
    p.add_argument("--datumaro", type=Path, help="an existing `datum` executable (default: install into WORK)")
    p.add_argument(
        "--datumaro-format",
        choices=("coco_instances", "coco"),
        default="coco_instances",
        help="Datumaro output format (default: coco_instances, the same job as odorch's; "
        "coco also writes stuff and image_info json)",
    )
    args = p.parse_args(argv)
    if args.copies < 1 or args.repeat < 1:
        p.error("--copies and --repeat must be >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    odorch = odorch_executable()
    datum = datumaro_executable(args.datumaro, work)
    print(f"{tool_version([str(odorch), '--version'])}; datumaro {tool_version([str(datum), '--version'])}")
    root = work / "voc"
    print(f"replicating {args.source} x {args.copies} into {root} ...", flush=True)
    xmls = replicate(args.source, root, args.copies)
    out_o, out_d = work / "out-odorch", work / "out-datumaro"
    cmd_o = [str(odorch), "convert", "voc2coco", str(root), "--out", str(out_o)]
    cmd_d = [str(datum), "convert", "-i", str(root), "-if", "voc_detection", "-f", args.datumaro_format]
    cmd_d += ["-o", str(out_d)]
    print(f"running odorch, then Datumaro ({args.repeat} run(s) each) ...", flush=True)
    sec_o = best_of(cmd_o, out_o, work / "odorch.log", args.repeat)
    sec_d = best_of(cmd_d, out_d, work / "datumaro.log", args.repeat)
    kept, zero_o, dropped = odorch_counts(out_o)
    boxes_d, zero_d = datumaro_counts(out_d)
    res_o = Result("odorch", sec_o, xmls, kept, dropped, zero_o)
    res_d = Result("Datumaro", sec_d, xmls, boxes_d, None, zero_d)
    print_table([res_o, res_d], os.cpu_count() or 0, args.repeat)
    agree = print_verdict(res_o, res_d)
    return 0 if agree else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
