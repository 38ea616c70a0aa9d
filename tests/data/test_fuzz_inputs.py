"""Fuzzing the parsers and loaders users feed files to: every random or truncated input gives
a result or a clear error (the expected type, naming the file), never an unrelated crash.

Inputs are valid samples mutated by a seeded generator (truncation, deleted spans, inserted
tokens such as ``nan``/``1e400``/NUL/non-ASCII, replaced fields, dropped or duplicated lines)
plus raw random bytes, so every run checks the same cases. Where two readers parse one
format (bbGt: the strict parser and the vectorised reader of the evaluator) they must agree.
"""

import random
import re
import shutil

import numpy as np
import pytest

from detpre.data.annotation_checks import check_dataset_dicts
from detpre.data.datasets.kaist import TRAINING_SETTING, load_kaist_dicts, read_voc_xml
from detpre.engine.defaults import ConfigError, detpre_argument_parser, setup_cfg
from kaisteval.bbgt import BBGTFormatError, objects_to_arrays, parse_bbgt, read_bbgt, read_bbgt_many
from kaisteval.detections import DetectionFormatError, parse_detections, read_detections
from kaisteval.frames import read_image_set

from conftest import REPO

CASES = 300

TOKENS = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "1e400",
    "0",
    "1_0",
    "0x1f",
    "99999999999999999999999",
    "person",
    "people",
    "%",
    "% bbGt version=9",
    "\x00",
    "\u00e9",
    "\u2028",
    "\x0c",
    "\t",
    " ",
    "\n",
    "\r",
    ",",
    "[",
    "]",
    "{",
    "}",
    '"',
    "<",
    ">",
    "</object>",
    "<x>",
    ":",
    "- ",
    "_BASE_",
    "!!",
    "'",
    "null",
    "true",
]

BBGT = """% bbGt version=3
person 64 241 71 189 0 0 0 0 0 0 0
people 300 200 40 90 1 300 220 40 60 0 0
person? 500 210 20 50 2 0 0 0 0 0 0
cyclist 12 300 50 120 0 0 0 0 0 1 0
"""
DETECTIONS_TXT = "1,64.5,241,71,189,0.9\n1,300,200,40,90,0.4\n% a comment\n3,10,20,30,60,0.05\n4,0,0,5,5,1e-3\n"
DETECTIONS_JSON = (
    '[{"image_id": 0, "bbox": [64.5, 241, 71, 189], "score": 0.9},\n'
    ' {"image_id": 2, "bbox": [10, 20, 30, 60], "score": 0.05},\n'
    ' {"image_id": 3, "bbox": [0, 0, 5, 5], "score": 0.001}]\n'
)
IMAGE_SET = "set06/V000/I00019\nset06/V000/I00039\n\nset09/V001/I01219\n"
VOC_XML = """<annotation><filename>I00003</filename>
  <object><name>person</name><bndbox><x>10</x><y>20</y><w>30</w><h>70</h></bndbox><occlusion>1</occlusion></object>
  <object><name>cyclist</name><bndbox><x>100</x><y>120</y><w>40</w><h>60</h></bndbox></object>
</annotation>
"""
DEMO_CONFIG_TEXT = (REPO / "configs" / "Demo" / "faster_rcnn_R18_FPN_scratch.yaml").read_text()


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        if not text:
            text = rng.choice(TOKENS)
            continue
        i = rng.randrange(len(text) + 1)
        op = rng.randrange(6)
        if op == 0:  # truncated file
            text = text[:i]
        elif op == 1:  # a span deleted
            text = text[:i] + text[rng.randrange(i, len(text) + 1) :]
        elif op == 2:  # a token inserted
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        elif op == 3:  # a field replaced
            parts = re.split(r"(\s+)", text)
            parts[rng.randrange(len(parts))] = rng.choice(TOKENS)
            text = "".join(parts)
        elif op == 4:  # a line dropped or duplicated
            lines = text.splitlines(keepends=True)
            k = rng.randrange(len(lines))
            lines[k : k + 1] = [] if rng.random() < 0.5 else [lines[k]] * 2
            text = "".join(lines)
        else:  # random characters
            text = text[:i] + "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randint(1, 8))) + text[i:]
    return text


def cases(sample: str):
    """(case, content): CASES mutations of ``sample``; every tenth is random bytes instead."""
    for case in range(CASES):
        rng = random.Random(f"{sample[:20]}-{case}")
        if case % 10 == 9:
            yield case, bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        else:
            yield case, mutate(rng, sample).encode("utf-8", errors="surrogatepass")


def outcome(call, expected, name: str, case: int, content: bytes):
    """``call()``'s result, or the expected error (whose message must name ``name``);
    anything else fails the test with the case that caused it."""
    try:
        return call()
    except expected as e:
        assert name in str(e), f"case {case}: the error does not name {name}: {e}"
        return e
    except Exception as e:  # noqa: BLE001 - the point of the test
        pytest.fail(f"case {case}: {type(e).__name__}: {e}\ninput: {content[:300]!r}")


def names_a_key(error: Exception) -> bool:
    """Whether the message names a config key such as ``MODEL.PIXEL_MEAN``."""
    return re.search(r"\b[A-Z][A-Z0-9_]*\.[A-Z0-9_.]+", str(error)) is not None


class Tally:
    """Counts results and errors, so that a fuzz run that only ever errs is caught."""

    def __init__(self):
        self.results = self.errors = 0

    def add(self, value):
        if isinstance(value, BaseException):
            self.errors += 1
        else:
            self.results += 1
        return value

    def check(self, what: str):
        print(f"{what}: {self.results} results, {self.errors} clear errors")
        assert self.results >= 3 and self.errors >= 3, (what, self.results, self.errors)


def test_bbgt_readers_agree_on_every_input(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text(BBGT)
    tally = Tally()
    for case, content in cases(BBGT):
        path = tmp_path / f"case{case}.txt"
        path.write_bytes(content)
        text = content.decode("utf-8", errors="replace")
        strict = outcome(lambda path=path: read_bbgt(path), BBGTFormatError, str(path), case, content)
        many = outcome(lambda path=path: read_bbgt_many([good, path, good]), BBGTFormatError, str(path), case, content)
        tally.add(strict)
        if isinstance(strict, Exception):
            assert isinstance(many, BBGTFormatError), f"case {case}: only the strict reader refused {content!r}"
            continue
        assert not isinstance(many, Exception), f"case {case}: only the fast reader refused {content!r}: {many}"
        assert parse_bbgt(text, str(path)) == strict
        frame, arrays = many
        expected = [objects_to_arrays(o) for o in (read_bbgt(good), strict, read_bbgt(good))]
        assert frame.tolist() == [i for i, a in enumerate(expected) for _ in range(len(a.labels))], case
        for field in arrays._fields:
            want = np.concatenate([getattr(a, field) for a in expected])
            assert np.array_equal(getattr(arrays, field), want), (case, field)
        assert np.isfinite(arrays.boxes).all() and (arrays.boxes[:, 2:] >= 0).all()
    tally.check("bbGt")


@pytest.mark.parametrize("sample,fmt", [(DETECTIONS_TXT, "txt"), (DETECTIONS_JSON, "json"), (DETECTIONS_TXT, None)])
def test_detection_files(tmp_path, sample, fmt):
    tally = Tally()
    for case, content in cases(sample):
        path = tmp_path / f"case{case}.res"
        path.write_bytes(content)
        result = tally.add(
            outcome(
                lambda path=path, fmt=fmt: read_detections(str(path), 4, fmt),
                DetectionFormatError,
                str(path),
                case,
                content,
            )
        )
        if not isinstance(result, Exception):
            assert ((result.frame >= 0) & (result.frame < 4)).all(), case
            assert np.isfinite(result.boxes).all() and np.isfinite(result.scores).all(), case
            assert (result.boxes[:, 2:] >= 0).all(), case
    tally.check(f"detections ({fmt or 'sniffed'})")


def test_parse_detections_names_its_source_on_random_text():
    for case, content in cases(DETECTIONS_TXT):
        text = content.decode("utf-8", errors="replace")
        outcome(
            lambda text=text: parse_detections(text, "results/run.txt", 4),
            DetectionFormatError,
            "results/run.txt",
            case,
            content,
        )


def _frames_from_text(frames, text: str) -> bool:
    """Every frame read is one the file names (in either separator)."""
    names = [getattr(f, "name", None) or "/".join(f) for f in frames]
    return all(n in text or n.replace("/", "_") in text for n in names)


TEXT_READERS = {
    "image set (kaisteval)": (IMAGE_SET, read_image_set, _frames_from_text),
    "sanitized VOC xml": (VOC_XML, read_voc_xml, lambda objects, _: all(o.w >= 0 and o.h >= 0 for o in objects)),
}


@pytest.mark.parametrize("what", sorted(TEXT_READERS))
def test_annotation_text_files(tmp_path, what):
    sample, reader, plausible = TEXT_READERS[what]
    tally = Tally()
    for case, content in cases(sample):
        path = tmp_path / f"case{case}"
        path.write_bytes(content)
        result = tally.add(
            outcome(lambda path=path, reader=reader: reader(str(path)), ValueError, str(path), case, content)
        )
        if not isinstance(result, Exception):
            assert plausible(result, content.decode("utf-8")), (case, result)
    tally.check(what)


def test_kaist_loader_then_training_checks(tmp_path):
    """A one-frame KAIST tree whose annotation is fuzzed, through the training loader's
    dataset dicts and annotation checks: dicts, or an error naming the annotation file."""
    frame = "set00/V000/I00001"
    for modality in ("visible", "lwir"):
        image = tmp_path / "images" / "set00" / "V000" / modality / "I00001.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"")  # the loader checks presence; images are read by the mapper
    (tmp_path / "mini.txt").write_text(frame + "\n")
    annotation = tmp_path / "annotations" / "set00" / "V000" / "I00001.txt"
    annotation.parent.mkdir(parents=True)
    tally = Tally()
    for case, content in cases(BBGT):
        annotation.write_bytes(content)
        dicts = tally.add(
            outcome(
                lambda: load_kaist_dicts(
                    str(tmp_path / "images"),
                    str(tmp_path / "mini.txt"),
                    str(tmp_path / "annotations"),
                    "bbgt",
                    TRAINING_SETTING,
                ),
                BBGTFormatError,
                str(annotation),
                case,
                content,
            )
        )
        if not isinstance(dicts, Exception):
            [record] = check_dataset_dicts(dicts, ["fuzz"])
            for a in record["annotations"]:
                x, y, w, h = a["bbox"]
                assert w > 0 and h > 0 and x < 640 and y < 512 and x + w > 0 and y + h > 0, (case, a)
    tally.check("KAIST loader")


def launcher_setup(argv, tally: "Tally", where: str, names: str) -> None:
    """``setup_cfg`` on a command line: a config, argparse's usage error, a ConfigError that
    names ``names`` or a config key, or a schedule error; anything else fails at ``where``."""
    try:
        tally.add(setup_cfg(detpre_argument_parser().parse_args(argv)))
    except SystemExit as e:  # argparse's usage error (an override that looks like a flag)
        assert e.code == 2, where
        tally.add(e)
    except ConfigError as e:
        assert names in str(e) or names_a_key(e), f"{where}: {e}"
        tally.add(e)
    except ValueError as e:
        assert "schedule" in str(e).lower() or "SOLVER" in str(e), f"{where}: {type(e).__name__}: {e}"
        tally.add(e)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{where}: {type(e).__name__}: {e}")


def test_config_files(tmp_path):
    """Mutated configs through the launcher's set-up: a config, or a ConfigError naming the
    file (a schedule error names the schedule: a ValueError too). Nothing is loaded."""
    configs = tmp_path / "configs"
    (configs / "Demo").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "Base-Scratch-RCNN-FPN.yaml", configs)
    tally = Tally()
    for case, content in cases(DEMO_CONFIG_TEXT):
        path = configs / "Demo" / f"case{case}.yaml"
        path.write_bytes(content)
        launcher_setup(["--config-file", str(path)], tally, f"case {case}: {content[:300]!r}", str(path))
    tally.check("config files")


def test_config_overrides():
    """Random KEY VALUE overrides on the command line: a config, or a ConfigError quoting them."""
    from detectron2.config import get_cfg

    from detpre import add_detpre_config

    base = get_cfg()
    add_detpre_config(base)
    keys = []

    def walk(node, prefix=""):
        for k, v in node.items():
            if hasattr(v, "items"):
                walk(v, f"{prefix}{k}.")
            else:
                keys.append(f"{prefix}{k}")

    walk(base)
    values = ["1", "-3", "0.5", "(1, 2)", "[3]", "'x'", "True", "None", "nan", "{", "((", "1e400", "6x", "", "a b"]
    config = str(REPO / "configs" / "Demo" / "faster_rcnn_R18_FPN_scratch.yaml")
    tally = Tally()
    for case in range(CASES):
        rng = random.Random(f"override-{case}")
        opts = []
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(keys)
            opts += [key if rng.random() < 0.9 else mutate(rng, key), rng.choice(values)]
        if rng.random() < 0.1:
            opts.append(rng.choice(keys))  # an odd number of items
        launcher_setup(["--config-file", config, *opts], tally, f"case {case} {opts}", "override")
    tally.check("config overrides")
