"""The joint-centre labels table: by file or SOPInstanceUID, CSV or Parquet, and each error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from koa_core.errors import DatasetError
from koa_core.localize.labels import (
    KneeLabel,
    films_fingerprint,
    find_labels_table,
    read_film_labels,
)
from tests.core.localize.handmade import write_dicom_film

ROWS, COLUMNS = 300, 400


@pytest.fixture
def films(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two hand-written DICOM films under tmp_path/data: a/one.dcm and b/two.dcm."""
    root = tmp_path / "data"
    pixels = np.zeros((ROWS, COLUMNS), np.uint16)
    uids = [
        write_dicom_film(root / "a" / "one.dcm", pixels, 0.5),
        write_dicom_film(root / "b" / "two.dcm", pixels, 0.25),
    ]
    return root, uids


def _rows() -> list[dict[str, object]]:
    return [
        {"file": "a/one.dcm", "side": "R", "joint_x": 100.5, "joint_y": 150, "kl_grade": 2},
        {"file": "a/one.dcm", "side": "l", "joint_x": 300, "joint_y": 149.25, "kl_grade": 0},
        {"file": "b/two.dcm", "side": "L", "joint_x": 10, "joint_y": 20, "kl_grade": 4},
    ]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_by_file_groups_knees_per_film(films: tuple[Path, list[str]], suffix: str) -> None:
    root, _ = films
    table = _write(pd.DataFrame(_rows()), root / f"labels{suffix}")
    read = read_film_labels(root, table)
    assert [film.relpath for film in read] == ["a/one.dcm", "b/two.dcm"]
    assert read[0].knees == (KneeLabel("R", 100.5, 150.0), KneeLabel("L", 300.0, 149.25))
    assert read[1].knees == (KneeLabel("L", 10.0, 20.0),)
    assert (read[0].rows, read[0].columns) == (ROWS, COLUMNS)
    assert [film.spacing_mm for film in read] == [0.5, 0.25]
    assert find_labels_table(root) == table


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_by_sop_instance_uid_finds_the_files(
    films: tuple[Path, list[str]], suffix: str
) -> None:
    root, uids = films
    rows = [{**row, "sop_instance_uid": uids[row["file"] == "b/two.dcm"]} for row in _rows()]
    frame = pd.DataFrame(rows).drop(columns="file")
    table = _write(frame, root.parent / f"labels{suffix}")
    read = read_film_labels(root, table)
    assert [film.relpath for film in read] == ["a/one.dcm", "b/two.dcm"]
    assert len(read[0].knees) == 2


def test_the_same_table_gives_the_same_fingerprint_and_a_moved_joint_another(
    films: tuple[Path, list[str]],
) -> None:
    root, _ = films
    first = read_film_labels(root, _write(pd.DataFrame(_rows()), root / "labels.csv"))
    again = read_film_labels(root, root / "labels.csv")
    rows = _rows()
    rows[0]["joint_x"] = 101.5
    moved = read_film_labels(root, _write(pd.DataFrame(rows), root / "moved.csv"))
    assert films_fingerprint(first) == films_fingerprint(again) != films_fingerprint(moved)


def _error(root: Path, rows: list[dict[str, object]]) -> str:
    table = _write(pd.DataFrame(rows), root / "labels.csv")
    with pytest.raises(DatasetError) as caught:
        read_film_labels(root, table)
    return str(caught.value)


@pytest.mark.parametrize("column", ["side", "joint_x", "joint_y"])
def test_a_missing_column_is_named(films: tuple[Path, list[str]], column: str) -> None:
    root, _ = films
    rows = [{k: v for k, v in row.items() if k != column} for row in _rows()]
    assert f"missing column(s) ['{column}']" in _error(root, rows)


def test_a_table_naming_no_film_is_refused(films: tuple[Path, list[str]]) -> None:
    root, _ = films
    rows = [{k: v for k, v in row.items() if k != "file"} for row in _rows()]
    assert "needs a file or a sop_instance_uid column" in _error(root, rows)


def test_a_side_other_than_r_or_l_names_its_row(films: tuple[Path, list[str]]) -> None:
    root, _ = films
    rows = _rows()
    rows[2]["side"] = "B"
    assert "labels.csv row 4, column side: 'B' is not R or L" in _error(root, rows)


def test_a_side_labelled_twice_on_one_film_is_refused(films: tuple[Path, list[str]]) -> None:
    root, _ = films
    rows = _rows()
    rows[1]["side"] = "R"
    assert "row 3, column side: R is labelled twice" in _error(root, rows)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("joint_x", COLUMNS, "column joint_x: 400 lies outside the image (400 columns x 300 rows)"),
        ("joint_y", -1, "column joint_y: -1 lies outside the image"),
        ("joint_x", "left", "column joint_x: 'left' is not a number"),
    ],
)
def test_a_joint_outside_the_image_names_row_and_column(
    films: tuple[Path, list[str]], column: str, value: object, expected: str
) -> None:
    root, _ = films
    rows = _rows()
    rows[0][column] = value
    message = _error(root, rows)
    assert "labels.csv row 2" in message
    assert expected in message


def test_an_unknown_file_names_its_row(films: tuple[Path, list[str]]) -> None:
    root, _ = films
    rows = _rows()
    rows[1]["file"] = "a/missing.dcm"
    assert "row 3, column file: 'a/missing.dcm' is not a file" in _error(root, rows)


def test_a_file_outside_the_folder_is_refused(films: tuple[Path, list[str]]) -> None:
    root, _ = films
    rows = _rows()
    rows[0]["file"] = "../outside.dcm"
    write_dicom_film(root.parent / "outside.dcm", np.zeros((ROWS, COLUMNS), np.uint16), 0.5)
    assert "row 2, column file: '../outside.dcm' is not a file under" in _error(root, rows)


def test_a_file_that_is_no_image_names_its_row(films: tuple[Path, list[str]]) -> None:
    root, _ = films
    (root / "notes.txt").write_text("not a film")
    rows = _rows()
    rows[2]["file"] = "notes.txt"
    assert "row 4, column file:" in _error(root, rows)


def test_an_unknown_sop_instance_uid_names_its_row(films: tuple[Path, list[str]]) -> None:
    root, uids = films
    rows = [
        {"sop_instance_uid": uids[0], "side": "R", "joint_x": 1, "joint_y": 1},
        {"sop_instance_uid": "1.2.3.4", "side": "L", "joint_x": 1, "joint_y": 1},
    ]
    assert "row 3, column sop_instance_uid: no DICOM file under" in _error(root, rows)


def test_no_table_in_the_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no labels\.csv or labels\.parquet"):
        find_labels_table(tmp_path)


def test_a_row_without_side_or_joint_lists_a_film_with_no_knee(
    films: tuple[Path, list[str]],
) -> None:
    root, _ = films
    rows = [*_rows()[:2], {"file": "b/two.dcm", "side": "", "joint_x": "", "joint_y": ""}]
    read = read_film_labels(root, _write(pd.DataFrame(rows), root / "labels.csv"))
    assert [film.knees for film in read][1] == ()
    rows.append({"file": "b/two.dcm", "side": "L", "joint_x": 1, "joint_y": 1})
    assert "listed with knees and without" in _error(root, rows)


@pytest.mark.parametrize(("view", "lateral"), [("lateral", True), ("LL", True), ("PA", False)])
def test_a_view_column_names_the_lateral_views(
    films: tuple[Path, list[str]], view: str, lateral: bool
) -> None:
    root, _ = films
    knee_less = {"file": "b/two.dcm", "side": "", "joint_x": "", "joint_y": "", "view": view}
    read = read_film_labels(root, _write(pd.DataFrame([*_rows()[:2], knee_less]), root / "t.csv"))
    assert [film.lateral for film in read] == [False, lateral]


def test_a_lateral_header_names_the_view_and_a_lateral_view_lists_no_knee(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dicom_film(root / "side.dcm", np.zeros((ROWS, COLUMNS), np.uint16), 0.5, view="LL")
    knee_less = {"file": "side.dcm", "side": "", "joint_x": "", "joint_y": ""}
    (film,) = read_film_labels(root, _write(pd.DataFrame([knee_less]), root / "labels.csv"))
    assert film.lateral
    with_knee = {"file": "side.dcm", "side": "R", "joint_x": 10, "joint_y": 10}
    assert "is a lateral view: it lists no knees" in _error(root, [with_knee])


def test_an_unknown_view_names_its_row(films: tuple[Path, list[str]]) -> None:
    rows = [{**_rows()[0], "view": "oblique"}]
    assert "row 2, column view: 'oblique'" in _error(films[0], rows)
