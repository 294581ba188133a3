"""Image-level labels from the forms datasets come in besides masks: a tags file (CSV or JSON), VOC XML
annotations. Labels are class ids 1..C, sorted; masks are read by image_labels itself (it checks them against
their images)."""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from stages import StageError


def class_ids(names, classes: list[str], where: str) -> list[int]:
    """Sorted class ids of class names; a name that is not a class of the config is an error naming ``where``."""
    index = {c: k + 1 for k, c in enumerate(classes)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise StageError(f"{where}: {unknown[0]!r} is not a class of data.classes ({', '.join(classes)})")
    return sorted({index[n] for n in names})


def read_tags_csv(path: Path, classes: list[str]) -> dict[str, list[int]]:
    """``id,labels`` rows, the labels being class names separated by spaces."""
    rows: dict[str, list[int]] = {}
    first_line: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if [h.strip().lower() for h in header or []] != ["id", "labels"]:
            raise StageError(f"{path}: line 1: the header must be 'id,labels', got {','.join(header or [])!r}")
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 2 or not row[0].strip():
                raise StageError(f"{path}: line {line}: malformed row {','.join(row)!r} (expected id,labels)")
            image_id = row[0].strip()
            if image_id in rows:
                raise StageError(f"{path}: line {line}: id {image_id!r} already tagged on line {first_line[image_id]}")
            rows[image_id] = class_ids(row[1].split(), classes, f"{path}: line {line}")
            first_line[image_id] = line
    return rows


def read_tags_json(path: Path, classes: list[str]) -> dict[str, list[int]]:
    """``{id: [class names]}``."""
    try:
        d = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise StageError(f"{path}: expected an object {{id: [class names]}}")
    out = {}
    for image_id, names in d.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise StageError(f"{path}: id {image_id!r}: expected a list of class names, got {names!r}")
        out[image_id.strip()] = class_ids(names, classes, f"{path}: id {image_id!r}")
    return out


def read_tags(path, classes: list[str]) -> dict[str, list[int]]:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: tags file not found (data.tags)")
    return (read_tags_json if path.suffix.lower() == ".json" else read_tags_csv)(path, classes)


def xml_label_names(path: Path) -> list[str]:
    """The ``<object><name>`` entries of one VOC annotation (difficult objects included)."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise StageError(f"{path}: annotation not found") from None
    except ET.ParseError as e:
        raise StageError(f"{path}: malformed XML ({e})") from None
    return [(o.findtext("name") or "").strip() for o in root.iter("object")]


def xml_labels(path: Path, classes: list[str]) -> list[int]:
    """Class ids of one VOC annotation's objects."""
    return class_ids(xml_label_names(path), classes, str(path))
