"""The mIoU tables: rows per scored stage, in markdown, CSV and JSON."""
import csv
import io

from conftest import run_stage

from stages.data.index import load_index
from stages.report import rows_from_tables, to_csv, to_markdown
from stages.utils.io import write_json

PER_CLASS = {"background": 90.0, "disc": 50.0, "square": None}


GIVEN = {"fg_threshold": 0.75, "bg_threshold": 0.35, "beta": 32, "threshold": 0.45}


def tables():
    cam = {"variant": "puzzle", "split": "train", "images": 10, "protocol": "full",
           "best": {"threshold": 0.3, "miou": 70.0, "per_class": PER_CLASS}, "sweep": []}
    masks = [
        {"stage": "upper_bound", "split": "val", "images": 5, "protocol": "full", "miou": 80.0, "per_class": PER_CLASS},
        {"stage": "segmentation", "split": "val", "images": 5, "protocol": "full", "miou": 72.0, "per_class": PER_CLASS},
        {"stage": "pseudo_labels", "split": "train", "images": 10, "protocol": "full", "miou": 75.0, "per_class": PER_CLASS},
    ]
    return [cam], masks


def test_rows_are_in_pipeline_order_with_the_best_cam_threshold():
    rows = rows_from_tables(*tables(), variant="puzzle")
    assert [r["stage"] for r in rows] == ["cam", "pseudo_labels", "segmentation", "upper_bound"]
    assert rows[0]["threshold"] == 0.3 and rows[0]["miou"] == 70.0
    assert rows[3]["variant"] is None and rows[1]["variant"] == "puzzle"


def test_markdown_and_csv_carry_the_same_numbers():
    rows = rows_from_tables(*tables(), variant="puzzle")
    md = to_markdown(rows).splitlines()
    assert md[2] == "Scored every image of each split; mIoU over the classes present (eval.protocol: full)."
    assert md[4].startswith("| stage | split | variant |")
    assert "| pseudo_labels | train | puzzle | 10 | - | 75.00 | 90.00 | 50.00 | - |" in md
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [float(r["miou"]) for r in parsed] == [70.0, 75.0, 72.0, 80.0]
    assert parsed[0]["square"] == "" and parsed[0]["disc"] == "50.0"


def test_a_class_without_a_training_image_is_a_warning_in_the_report(tiny_index, tmp_path):
    index = tiny_index.to_json()
    train = tiny_index.layout.split_file("train")
    ids = train.read_text().split()
    index["labels"] = {i: [c for c in v if c != 4] or [1] for i, v in index["labels"].items()}  # no 'cross' in train
    write_json(tmp_path / "labels.json", index)
    cam, masks = tables()
    write_json(tmp_path / "cam.json", cam[0])
    out = tmp_path / "tables"
    proc = run_stage("report", input={"cams": [tmp_path / "cam.json"], "masks": [], "labels": tmp_path / "labels.json",
                                      "split": train, "thresholds": []},
                     output={"md": out / "miou.md", "csv": out / "miou.csv", "json": out / "miou.json"},
                     params={"variant": "puzzle", "left_out": [], "thresholds": GIVEN}, wildcards={"seed": 0})
    assert proc.returncode == 0, proc.stderr
    line = ("class 'cross' has no image in the training split (train): never learned, "
            "and left out of mIoU where no mask holds them")
    assert (out / "miou.md").read_text().endswith(
        "\n\nThresholds:\n\n- given in the config: affinity labels fg 0.75 / bg 0.35, random walk beta 32, pseudo labels "
        f"threshold 0.45\n\n**Warning:** {line}\n")
    assert load_index(tmp_path / "labels.json").classes_without_images(ids) == ["cross"]
    assert tiny_index.classes_without_images(ids) == []


def test_markdown_has_no_warning_when_every_class_has_a_training_image():
    assert "Warning" not in to_markdown(rows_from_tables(*tables(), variant="puzzle"))
def test_rows_left_out_and_label_disagreement_are_stated():
    from stages.report import label_notes

    rows = [{"split": "val", "label_disagreement": {"source": "tags", "images": 40, "disagree": 3,
                                                    "first": "holiday/IMG 0042"}}] * 2  # one note per split
    md = to_markdown([], ["segmentation on val: that split has no masks (data.mask_splits)"], label_notes(rows))
    assert md.splitlines()[-7:] == [
        "Not scored:", "", "- segmentation on val: that split has no masks (data.mask_splits)", "",
        "Image-level labels:", "", "- tags labels differ from the mask's classes on 3 of 40 val images (first: holiday/IMG 0042)"]
