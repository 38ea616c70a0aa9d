"""tools/kaist_eval.py on the real improved KAIST test annotations, and its error paths.

Expected values are derived here from the annotation files with a few lines of independent
parsing and the protocol's definitions, never copied from a run.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from conftest import REPO  # noqa: E402

TOOL = REPO / "tools" / "kaist_eval.py"
# MATLAB's 10.^(-2:.25:0) (sprintf('%.17g')): the doubles nearest to 10^x.
REF = [
    0.01,
    0.017782794100389229,
    0.031622776601683791,
    0.056234132519034911,
    0.1,
    0.17782794100389229,
    0.31622776601683794,
    0.56234132519034907,
    1.0,
]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def cli_json(*args: str) -> Dict:
    out = cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def kaist(shared_data: Path) -> Dict[str, Path]:
    paths = {
        "annotations": shared_data / "kaist-annotations-test-improved",
        "image_set": shared_data / "kaist-imagesets" / "test-all-20.txt",
        "fixture": shared_data / "kaist-fixture",
    }
    if not all(p.exists() for p in paths.values()):
        pytest.skip("KAIST annotations / image sets not found under the shared data")
    return paths


def frames_and_objects(kaist) -> Tuple[List[str], List[List[Tuple]]]:
    """Independent reading: the frame names and, per frame, (label, x, y, w, h, occ, ign)."""
    names = kaist["image_set"].read_text().split()
    objects = []
    for name in names:
        lines = (kaist["annotations"] / (name.replace("/", "_") + ".txt")).read_text().splitlines()[1:]
        objects.append([(f[0], *map(float, f[1:5]), int(f[5]), int(f[10])) for f in map(str.split, lines) if f])
    return names, objects


def reasonable(o: Tuple) -> bool:
    label, x, y, w, h, occ, ign = o
    return (
        label == "person"
        and not ign
        and h >= 55
        and occ in (0, 1)
        and 5 <= x
        and x + w <= 635
        and 5 <= y
        and y + h <= 507
    )


def is_day(name: str) -> bool:
    return int(name[3:5]) in (0, 1, 2, 6, 7, 8)


def write_txt(path: Path, rows: List[Tuple[int, Tuple, float]]) -> Path:
    path.write_text("".join(f"{f + 1},{b[0]},{b[1]},{b[2]},{b[3]},{s}\n" for f, b, s in rows))
    return path


def test_perfect_detections_give_zero_and_none_give_hundred(kaist, tmp_path):
    names, objects = frames_and_objects(kaist)
    # Every annotated box (ignore regions too) as a detection: persons are found, the rest absorbed.
    perfect = write_txt(tmp_path / "perfect.txt", [(i, o[1:5], 1.0) for i, objs in enumerate(objects) for o in objs])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = ["--annotations", kaist["annotations"], "--image-set", kaist["image_set"]]
    best = cli_json(*args, "--detections", perfect)
    none = cli_json(*args, "--detections", empty)
    for name, setting in best["settings"].items():
        assert setting["MR"] < 1e-6 and setting["recall"] == 100.0, name
        assert none["settings"][name]["MR"] == pytest.approx(100.0), name
    assert (best["MR_all"], none["MR_all"], none["MR_day"], none["MR_night"]) == (
        best["settings"]["Reasonable-all"]["MR"],
        100.0,
        100.0,
        100.0,
    )
    # Day/night come from the set ids: 1,455 day and 797 night frames in test-all-20.
    n_day = sum(map(is_day, names))
    assert (n_day, len(names) - n_day) == (1455, 797)
    s = best["settings"]
    assert (s["Reasonable-day"]["n_images"], s["Reasonable-night"]["n_images"]) == (n_day, len(names) - n_day)
    assert s["Reasonable-all"]["n_persons"] == sum(reasonable(o) for objs in objects for o in objs)
    assert s["Reasonable-day"]["n_persons"] == sum(
        reasonable(o) for name, objs in zip(names, objects) if is_day(name) for o in objs
    )


def test_crafted_mix_has_the_hand_derived_miss_rate(kaist, tmp_path):
    """Persons in three groups: A found first (score .9), then K false positives in empty frames
    (.8), then B (.7); C never found. Miss rate is 1 - |A|/P before FPPI K/N and 1 - (|A|+|B|)/P
    from there on, in each subset (N frames, P Reasonable persons of the subset)."""
    names, objects = frames_and_objects(kaist)
    persons = [(i, o[1:5]) for i, objs in enumerate(objects) for o in objs if reasonable(o)]
    group_a, group_b = persons[0::3], persons[1::3]
    empty_frames = [i for i, objs in enumerate(objects) if not objs]
    fps = [(i, (300.0, 200.0, 40.0, 100.0)) for i in empty_frames[::7][:113]]  # both day and night frames
    rows = [(i, b, 0.9) for i, b in group_a] + [(i, b, 0.8) for i, b in fps] + [(i, b, 0.7) for i, b in group_b]
    rows.reverse()  # file order must not matter
    det = write_txt(tmp_path / "mix.txt", rows)
    out = cli_json("--annotations", kaist["annotations"], "--image-set", kaist["image_set"], "--detections", det)

    for key, keep in (("MR_all", lambda n: True), ("MR_day", is_day), ("MR_night", lambda n: not is_day(n))):
        n = sum(keep(x) for x in names)
        p = sum(keep(names[i]) for i, _ in persons)
        a = sum(keep(names[i]) for i, _ in group_a) / p
        b = sum(keep(names[i]) for i, _ in group_b) / p
        k = sum(keep(names[i]) for i, _ in fps) / n
        assert 0 < k < 1  # the false positives matter in every subset
        miss = [1 - a if r < k else 1 - a - b for r in REF]
        expected = 100 * math.exp(np.mean(np.log(miss)))
        assert out[key] == pytest.approx(expected, rel=1e-12), key


def test_text_output_json_output_and_plot(kaist, tmp_path):
    names, objects = frames_and_objects(kaist)
    rows = [(i, o[1:5], 0.5) for i, objs in enumerate(objects) for o in objs if reasonable(o)][::2]
    det = write_txt(tmp_path / "half.txt", rows)
    as_json = tmp_path / "half.json"
    as_json.write_text(json.dumps([{"image_id": i, "bbox": list(b), "score": s} for i, b, s in rows]))
    args = ["--annotations", kaist["annotations"], "--image-set", kaist["image_set"]]
    out = cli(*args, "--detections", det)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# frames numbered from 1 in text files, from 0 in JSON files\n")
    lines = [ln for ln in out.stdout.splitlines() if not ln.startswith("#")]
    keys = [
        "MR_all",
        "MR_day",
        "MR_night",
        "MR_near",
        "MR_medium",
        "MR_far",
        "MR_occ_none",
        "MR_occ_partial",
        "MR_occ_heavy",
    ]
    assert [ln.split(":")[0] for ln in lines] == keys + ["tied_pairs"]
    report = cli_json(*args, "--detections", as_json)  # same detections as 0-based JSON
    # Every setting is printed, each the JSON's value; scale and occlusion settings differ here.
    assert lines[:-1] == [f"{k}: {report[k]:.2f}" for k in keys]
    assert report["MR_occ_heavy"] != report["MR_near"]
    # Every detection scores .5 and frames hold several: the ties are counted and noted.
    frame_sizes = np.bincount([f for f, _, _ in rows])
    tied = int(sum(k * (k - 1) // 2 for k in frame_sizes))
    assert tied > 0 and lines[-1] == f"tied_pairs: {tied}" and report["tied_pairs"] == tied
    assert f"{det} has {tied} pair(s) of equally scored detections" in out.stderr
    assert set(report["settings"]) == {
        "Reasonable-all",
        "Reasonable-day",
        "Reasonable-night",
        "Scale=near",
        "Scale=medium",
        "Scale=far",
        "Occ=none",
        "Occ=partial",
        "Occ=heavy",
    }
    assert len(report["settings"]["Occ=heavy"]["miss_rate_at_fppi"]) == 9
    # Two result files, one plot.
    png = tmp_path / "curves.png"
    out = cli(*args, "--detections", det, as_json, "--names", "txt", "json", "--plot", png)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("MR_all:") == 2 and "# txt" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tree_and_flat_layouts_agree_on_the_fixture(kaist, tmp_path):
    fixture = kaist["fixture"]
    image_set = fixture / "imageSets" / "test-fixture.txt"
    names = image_set.read_text().split()
    objects = [
        [ln.split() for ln in (fixture / "annotations" / f"{n}.txt").read_text().splitlines()[1:] if ln.strip()]
        for n in names
    ]
    det = write_txt(
        tmp_path / "d.txt", [(i, tuple(map(float, o[1:5])), 0.9) for i, objs in enumerate(objects) for o in objs[:1]]
    )
    tree = cli_json("--annotations", fixture / "annotations", "--image-set", image_set, "--detections", det)
    flat = cli_json("--annotations", kaist["annotations"], "--image-set", image_set, "--detections", det)
    assert tree == flat
    assert tree["settings"]["Reasonable-all"]["n_images"] == 9
    assert tree["settings"]["Reasonable-day"]["n_images"] == 4


def test_errors_name_the_file_and_line(kaist, tmp_path):
    args = ["--annotations", kaist["annotations"], "--image-set", kaist["image_set"]]
    bad = tmp_path / "bad.txt"
    bad.write_text("1,10,10,10,10,0.5\n2,10,10,ten,10,0.5\n")
    out = cli(*args, "--detections", bad)
    assert out.returncode == 2 and f"{bad}:2: expected 6 numbers" in out.stderr
    bad.write_text("1,10,10,10,10,0.5\n2253,10,10,10,10,0.5\n")
    out = cli(*args, "--detections", bad)
    assert out.returncode == 2 and f"{bad}:2: frame index out of range 1..2252" in out.stderr
    # A broken annotation file and a missing one.
    ann = tmp_path / "ann"
    ann.mkdir()
    image_set = tmp_path / "set.txt"
    image_set.write_text("set06/V000/I00019\nset06/V000/I00039\n")
    (ann / "set06_V000_I00019.txt").write_text("% bbGt version=3\n")
    out = cli("--annotations", ann, "--image-set", image_set, "--detections", bad)
    assert out.returncode == 2 and "set06_V000_I00039.txt" in out.stderr and "not found" in out.stderr
    (ann / "set06_V000_I00039.txt").write_text("% bbGt version=3\n")
    (ann / "set06_V000_I00019.txt").write_text("% bbGt version=3\nperson 1 2 3\n")
    out = cli("--annotations", ann, "--image-set", image_set, "--detections", bad)
    assert out.returncode == 2 and "set06_V000_I00019.txt:2: expected 12 fields" in out.stderr


def test_cli_imports_neither_torch_nor_detectron2_nor_matplotlib():
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import kaisteval.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2', 'detpre', 'matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_frame_numbering_is_explicit_and_a_shifted_file_is_noticed(kaist, tmp_path):
    """A JSON file numbered from 1 read as 0-based lands every detection on the next frame."""
    names, objects = frames_and_objects(kaist)
    rows = [(i, o[1:5], 0.9) for i, objs in enumerate(objects) for o in objs if reasonable(o)]
    # No detection on the first or the last frame, so both numberings are valid indices.
    rows = [r for r in rows if 0 < r[0] < len(names) - 1]
    one_based = tmp_path / "one_based.json"
    one_based.write_text(json.dumps([{"image_id": i + 1, "bbox": list(b), "score": s} for i, b, s in rows]))
    args = ["--annotations", kaist["annotations"], "--image-set", kaist["image_set"], "--detections", one_based]
    default = cli(*args)
    assert default.returncode == 0, default.stderr
    shifted = float(re.search(r"MR_all: ([\d.]+)", default.stdout).group(1))
    assert f"warning: {one_based}: read with frames numbered from 0" in default.stderr
    assert "pass --json-base 1" in default.stderr
    right = cli(*args, "--json-base", "1")
    assert right.returncode == 0 and "warning" not in right.stderr
    assert right.stdout.startswith("# frames numbered from 1 in text files, from 1 in JSON files")
    correct = float(re.search(r"MR_all: ([\d.]+)", right.stdout).group(1))
    assert correct < shifted - 10
    assert cli_json(*args, "--json-base", "1")["frame_base"] == {"txt": 1, "json": 1}
