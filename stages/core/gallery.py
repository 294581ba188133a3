"""What a person looks at of a folder of segmented photos: each photo's files by kind, the overlay with its legend,
the thumbnails, the page that shows them and the tables of classes and failures.

Every file of one kind has a folder of its own (``masks/``, ``overlays/``, ...), so no photo's name can meet
another's file; the page links them by relative, percent-encoded URLs, and a table cell never starts a formula.
"""
from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np

from stages.data.photos import shown
from stages.data.voc import capped_size
from stages.utils.io import atomic_path, voc_palette

PALETTE = np.array(voc_palette(), np.uint8).reshape(256, 3)
OVERLAY_ALPHA = 0.5  # the mask's weight where it is not background
THUMB = 256  # longest side of a thumbnail, in pixels
# The files of one photo, by kind: (folder, extension); each kind has a folder of its own.
KINDS = {"mask": ("masks", ".png"), "overlay": ("overlays", ".jpg"), "cams": ("cams", ".jpg"),
         "thumb": ("thumbs/photos", ".jpg"), "thumb_overlay": ("thumbs/overlays", ".jpg")}


def output(kind: str, image_id: str) -> str:
    """The file of ``kind`` of a photo, relative to the output (and cache) folder."""
    folder, ext = KINDS[kind]
    return f"{folder}/{image_id}{ext}"


def kinds(cams: bool) -> list[str]:
    return [k for k in KINDS if cams or k != "cams"]


def href(path: str) -> str:
    """A relative link to ``path`` below the page: every byte percent-encoded but the slashes, so that no name
    turns into a scheme (``javascript:``), a fragment (``#``) or a query (``?``)."""
    return "./" + quote(os.fsencode(path), safe="/")


def cell(text: str) -> str:
    """A table cell that a spreadsheet shows as text: one that would start a formula (=, +, -, @, a tab or a
    carriage return) gets a leading quote, as OWASP's CSV-injection guidance says; names that are not UTF-8
    written as \\xNN."""
    text = shown(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def legend(names: list[str], classes: list[int], width: int) -> np.ndarray:
    """A strip of colour boxes and class names, one per class present, wrapped to ``width``."""
    font, scale, thick, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1, 6
    entries = [(PALETTE[c], names[c]) for c in classes] or [((0, 0, 0), "nothing found")]
    rows, row, x = [], [], pad
    for colour, name in entries:
        w = 14 + 4 + cv2.getTextSize(name, font, scale, thick)[0][0] + 2 * pad
        if row and x + w > width:
            rows.append(row)
            row, x = [], pad
        row.append((x, colour, name))
        x += w
    rows.append(row)
    strip = np.full((22 * len(rows) + pad, max(width, 1), 3), 255, np.uint8)
    for r, entries_of_row in enumerate(rows):
        y = pad + 22 * r
        for x, colour, name in entries_of_row:
            cv2.rectangle(strip, (x, y), (x + 14, y + 14), tuple(int(c) for c in colour), -1)
            cv2.rectangle(strip, (x, y), (x + 14, y + 14), (0, 0, 0), 1)
            cv2.putText(strip, name, (x + 18, y + 12), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return strip


def overlay(image: np.ndarray, label: np.ndarray, names: list[str]) -> np.ndarray:
    """The photo with the mask's colours blended over every pixel that is not background, and a legend below."""
    colours = PALETTE[label].astype(np.float32)
    blend = np.where((label > 0)[..., None], (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * colours, image)
    present = [int(c) for c in np.unique(label) if 0 < c < len(names)]
    return np.concatenate([blend.astype(np.uint8), legend(names, present, image.shape[1])])


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def cam_panel(image: np.ndarray, cam: np.ndarray, title: str) -> np.ndarray:
    """A CAM (values 0..1) as a heat map over the photo, under its title."""
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    panel = (0.5 * image + 0.5 * heat).astype(np.uint8)
    strip = np.full((24, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel])


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    h, w = capped_size(rgb.shape[:2], THUMB)
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != rgb.shape[:2] else rgb


def class_fractions(label: np.ndarray, n: int) -> list[float]:
    """The fraction of the mask's pixels of each class 0..n-1."""
    counts = np.bincount(label.ravel(), minlength=n)[:n]
    return (counts / max(label.size, 1)).round(6).tolist()


def index_html(title: str, rows: list[dict], failed: list[tuple[str, str]], names: list[str], cams: bool) -> str:
    """Thumbnails of each photo and its overlay side by side, each linking to the full overlay; the classes found
    with their share of the photo; the photos that could not be read."""
    esc = lambda text: html.escape(shown(text))  # noqa: E731
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>",
           "body{font-family:sans-serif;margin:1em} td{padding:4px;vertical-align:top} img{max-width:256px}",
           ".classes{font-size:90%;color:#333}</style></head><body>",
           f"<h1>{esc(title)}</h1><p>{len(rows)} photos segmented"
           + (f", {len(failed)} could not be (below)" if failed else "") + ".</p><table>"]
    for row in rows:
        i = row["id"]
        link = {k: href(output(k, i)) for k in kinds(cams)}
        found = ", ".join(f"{esc(names[c])} {f:.0%}" for c, f in enumerate(row["fractions"]) if c and f > 0)
        links = f"<a href='{link['overlay']}'>overlay</a> · <a href='{link['mask']}'>mask</a>"
        links += f" · <a href='{link['cams']}'>CAMs</a>" if cams else ""
        out.append(f"<tr class='photo'><td><img src='{link['thumb']}' alt='{esc(i)}'></td>"
                   f"<td><a href='{link['overlay']}'><img src='{link['thumb_overlay']}' alt='{esc(i)} segmented'>"
                   f"</a></td><td><b>{esc(i)}</b><br><span class='classes'>{found or 'background only'}</span><br>"
                   f"{links}</td></tr>")
    out.append("</table>")
    if failed:
        out.append("<h2>Not segmented</h2><ul>"
                   + "".join(f"<li class='failed'>{esc(p)}: {esc(r)}</li>" for p, r in failed) + "</ul>")
    return "\n".join(out) + "\n</body></html>\n"


def classes_csv(rows: list[dict], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "height", "width", *names])
    for row in rows:
        w.writerow([cell(row["id"]), *row["size"], *row["fractions"]])
    return buf.getvalue()


def failed_csv(failed: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["photo", "reason"])
    w.writerows([cell(p), cell(r)] for p, r in failed)
    return buf.getvalue()
