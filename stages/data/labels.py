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


def _coordinate(box, name: str, limit: int | None) -> int:
    value = int(float((box.findtext(name) or "0").strip()))  # VOC writes integers, some tools "12.0"
    return max(min(value, limit - 1), 0) if limit else value


def has_area(obj, width: int | None, height: int | None) -> bool:
    """Whether an object's box, clipped to the image, is wider and taller than nothing: the reference drops the
    others (an object without a box is kept)."""
    box = obj.find("bndbox")
    if box is None:
        return True
    xs = [_coordinate(box, k, width) for k in ("xmin", "xmax")]
    ys = [_coordinate(box, k, height) for k in ("ymin", "ymax")]
    return xs[1] - xs[0] != 0 and ys[1] - ys[0] != 0


def xml_label_names(path: Path) -> list[str]:
    """The ``<object><name>`` entries of one VOC annotation, difficult objects included and objects whose box has
    no width or height (once clipped to ``<size>``) left out, as the reference reads them."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width, height = (int(size.findtext(k)) for k in ("width", "height")) if size is not None else (None, None)
        return [(o.findtext("name") or "").strip() for o in root.iter("object") if has_area(o, width, height)]
    except FileNotFoundError:
        raise StageError(f"{path}: annotation not found") from None
    except (ET.ParseError, TypeError, ValueError) as e:
        raise StageError(f"{path}: malformed XML ({e})") from None


def xml_labels(path: Path, classes: list[str]) -> list[int]:
    """Class ids of one VOC annotation's objects."""
    return class_ids(xml_label_names(path), classes, str(path))
