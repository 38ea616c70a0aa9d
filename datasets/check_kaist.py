#!/usr/bin/env python
"""Check a KAIST tree before training on it: what is there, and what is broken.

    python datasets/check_kaist.py datasets/kaist [--quick]

Reports the frames found under ``images/`` (per modality, day/night), the image sets under
``imageSets/`` and how much of each the images and every annotation version present
(original, paired, sanitized, improved; see ``datasets/README.md``) cover. Problems, each
naming its file: a frame with one modality only; an image that is unreadable or truncated
(every image is decoded whole, as training reads it); a frame that is not 640x512 or whose
two modalities differ in size; an annotation file that is empty, unreadable or malformed,
or holds a box of zero size or wholly outside the frame; an image-set frame without images;
and an annotation version that covers an image set only partly. Exits with status 1 if
there is any problem. ``--quick`` skips decoding images and parsing annotations
(existence checks only).
"""

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Set

from detpre.data.datasets.kaist import ANNOTATION_VERSIONS, FORMAT_LAYOUTS, read_objects
from detpre.data.image_io import read_image
from kaisteval.frames import FRAME_SIZE, MODALITIES, Frame, image_file, parse_frame_path, read_image_set


class Report:
    def __init__(self, max_listed: int):
        self.max_listed = max_listed
        self.problems: Dict[str, List[str]] = defaultdict(list)

    def problem(self, kind: str, message: str) -> None:
        self.problems[kind].append(message)

    def print_problems(self) -> None:
        for kind, messages in self.problems.items():
            print(f"PROBLEM {kind}: {len(messages)}")
            for message in messages[: self.max_listed]:
                print(f"  {message}")
            if len(messages) > self.max_listed:
                print(f"  ... and {len(messages) - self.max_listed} more")


def scan_images(root: Path) -> Dict[Frame, Set[str]]:
    """Frame -> the modalities it has an image for."""
    frames: Dict[Frame, Set[str]] = defaultdict(set)
    images = root / "images"
    for path in images.glob("set*/V*/*/I*.jpg"):
        relative = path.relative_to(images).as_posix()
        frame = parse_frame_path(relative)
        if frame is not None:
            frames[frame].add(path.parent.name)
    return frames


def check_images(root: Path, frames: Dict[Frame, Set[str]], report: Report, sizes: bool) -> None:
    image_root = str(root / "images")
    for frame, modalities in sorted(frames.items()):
        for modality in MODALITIES:
            if modality not in modalities:
                report.problem("missing modality", image_file(image_root, frame, modality))
        if not sizes or len(modalities) < 2:
            continue
        found = {}
        for modality in MODALITIES:
            path = image_file(image_root, frame, modality)
            try:
                height, width = read_image(path).shape[:2]
                found[modality] = (width, height)
            except (OSError, ValueError) as e:
                report.problem("unreadable or truncated image", str(e))
        for modality, (width, height) in found.items():
            if (width, height) != FRAME_SIZE:
                report.problem(
                    "size mismatch",
                    f"{image_file(image_root, frame, modality)} is {width}x{height}, expected "
                    f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
                )
        if len(found) == 2 and found["visible"] != found["lwir"]:
            (vw, vh), (tw, th) = found["visible"], found["lwir"]
            report.problem("size mismatch", f"{frame.name}: visible frame is {vw}x{vh} but lwir frame is {tw}x{th}")


def check_annotation(path: Path, fmt: str, report: Report) -> None:
    """An annotation file must hold the format's header, parse, and have usable boxes."""
    if path.stat().st_size == 0:
        report.problem("empty annotation file", f"{path}: 0 bytes (a frame without persons still has a header)")
        return
    try:
        objects = read_objects(str(path), fmt)
    except (ValueError, OSError) as e:
        report.problem("malformed annotation", str(e))
        return
    width, height = FRAME_SIZE
    for index, o in enumerate(objects, start=1):
        if o.w <= 0 or o.h <= 0:
            report.problem("zero-size box", f"{path}: object {index} ({o.label}) is {o.w:g} x {o.h:g}")
        elif o.x + o.w <= 0 or o.y + o.h <= 0 or o.x >= width or o.y >= height:
            report.problem(
                "box outside the frame",
                f"{path}: object {index} ({o.label}) at x {o.x:g}, y {o.y:g}, {o.w:g} x {o.h:g} lies wholly "
                f"outside the {width}x{height} frame",
            )


def scan_annotations(root: Path, report: Report, parse: bool) -> Dict[str, Set[Frame]]:
    """Version -> frames with at least one annotation file; parse errors are problems."""
    found: Dict[str, Set[Frame]] = {}
    for version, (directory, fmt) in ANNOTATION_VERSIONS.items():
        base = root / directory
        if not base.is_dir():
            continue
        frames: Set[Frame] = set()
        count = 0
        for path in sorted(base.rglob("*.*")):
            frame = parse_frame_path(path.relative_to(base).as_posix(), FORMAT_LAYOUTS[fmt])
            if frame is None:
                continue
            count += 1
            frames.add(frame)
            if parse:
                check_annotation(path, fmt, report)
        print(f"  {version}: {count} files, {len(frames)} frames ({directory}/, {fmt})")
        found[version] = frames
    return found


def check_image_sets(
    root: Path, frames: Dict[Frame, Set[str]], annotations: Dict[str, Set[Frame]], report: Report
) -> None:
    image_root = str(root / "images")
    for path in sorted((root / "imageSets").glob("*.txt")):
        try:
            listed = read_image_set(str(path))
        except ValueError as e:
            report.problem("malformed image set", str(e))
            continue
        complete = [f for f in listed if frames.get(f) == set(MODALITIES)]
        for frame in listed:
            if frame not in frames:
                report.problem(
                    "image-set frame without images",
                    f"{path.name}: {image_file(image_root, frame, 'visible')}",
                )
        coverage = []
        for version, annotated in annotations.items():
            covered = sum(f in annotated for f in listed)
            coverage.append(f"{version} {covered}/{len(listed)}")
            if 0 < covered < len(listed):
                directory = ANNOTATION_VERSIONS[version].directory
                missing = next(f for f in listed if f not in annotated)
                report.problem(
                    "partial annotations",
                    f"{path.name}: {version} ({directory}/) lacks {len(listed) - covered} of its "
                    f"{len(listed)} frames, e.g. {missing.name}",
                )
        day = sum(f.day for f in listed)
        print(
            f"  {path.name}: {len(listed)} frames ({day} day, {len(listed) - day} night), "
            f"{len(complete)} with both images; annotations: {', '.join(coverage) or 'none'}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="KAIST root (holding images/, imageSets/, annotations*/)")
    parser.add_argument("--quick", action="store_true", help="skip image sizes and annotation parsing")
    parser.add_argument("--max-listed", type=int, default=20, help="problems listed per kind (default 20)")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "images").is_dir():
        print(f"PROBLEM: {root / 'images'} does not exist; is {root} a KAIST root?")
        return 1
    report = Report(args.max_listed)

    frames = scan_images(root)
    per_modality = Counter(m for modalities in frames.values() for m in modalities)
    day = sum(f.day for f in frames)
    sets = sorted({f.set_name for f in frames})
    print(f"{root}: {len(frames)} frames in images/ ({day} day, {len(frames) - day} night; sets {', '.join(sets)})")
    print("  modalities: " + ", ".join(f"{m} {per_modality[m]}" for m in MODALITIES))
    check_images(root, frames, report, sizes=not args.quick)
    print("annotation versions:")
    annotations = scan_annotations(root, report, parse=not args.quick)
    if not annotations:
        print("  none found")
    print("image sets:")
    if (root / "imageSets").is_dir():
        check_image_sets(root, frames, annotations, report)
    else:
        print("  none (no imageSets/)")

    report.print_problems()
    if report.problems:
        return 1
    print("OK: no problems found.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
