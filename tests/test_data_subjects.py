"""Subject lists: folders, csv/tsv tables with relative paths, and the errors they can raise."""

from __future__ import annotations

import numpy as np
import pytest
from _data_fixtures import write_nifti

from brainsynth.library.subjects import list_subjects, read_table, subject_name
from brainsynth.core.errors import DataError


def test_subject_name_strips_volume_and_token_suffixes():
    assert subject_name("/data/sub-01_T1w.nii.gz") == "sub-01_T1w"
    assert subject_name("sub-02.nii") == "sub-02"
    assert subject_name("tokens/sub-03.npy") == "sub-03"
    assert subject_name("sub-04") == "sub-04"
    assert subject_name("a.b.NII.GZ") == "a.b"


def test_folder_lists_nifti_files_sorted_and_ignores_others(tmp_path):
    volume = np.zeros((2, 2, 2), np.float32)
    write_nifti(tmp_path / "b.nii.gz", volume)
    write_nifti(tmp_path / "a.nii", volume)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "table.tsv").write_text("path\n")
    (tmp_path / "sub").mkdir()
    write_nifti(tmp_path / "sub" / "c.nii.gz", volume)  # sub-folders are not searched

    subjects = list_subjects(tmp_path)

    assert [s.name for s in subjects] == ["a", "b"]
    assert [s.path.name for s in subjects] == ["a.nii", "b.nii.gz"]


@pytest.mark.parametrize("suffix, delimiter", [(".tsv", "\t"), (".csv", ",")])
def test_table_paths_are_relative_to_the_table_folder(tmp_path, suffix, delimiter):
    volume = np.zeros((2, 2, 2), np.float32)
    write_nifti(tmp_path / "lists" / "images" / "x.nii.gz", volume)
    absolute = write_nifti(tmp_path / "elsewhere" / "y.nii", volume)
    table = tmp_path / "lists" / f"train{suffix}"
    table.write_text(f"path{delimiter}age\nimages/x.nii.gz{delimiter}50\n{absolute}{delimiter}60\n")

    subjects = list_subjects(table)

    assert [s.name for s in subjects] == ["x", "y"]
    assert subjects[0].path == tmp_path / "lists" / "images" / "x.nii.gz"
    assert subjects[1].path == absolute


def test_missing_file_is_named_when_the_list_is_built(tmp_path):
    write_nifti(tmp_path / "present.nii.gz", np.zeros((2, 2, 2), np.float32))
    table = tmp_path / "list.tsv"
    table.write_text("path\npresent.nii.gz\nabsent.nii.gz\n")

    with pytest.raises(DataError) as error:
        list_subjects(table)

    message = str(error.value)
    assert "absent.nii.gz" in message and "line 3" in message and str(table) in message
    assert "\n" not in message


def test_table_without_path_column_and_missing_sources(tmp_path):
    table = tmp_path / "list.csv"
    table.write_text("file\nx.nii.gz\n")
    with pytest.raises(DataError, match="no 'path' column"):
        list_subjects(table)
    with pytest.raises(DataError, match="no such folder or table"):
        list_subjects(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .nii or .nii.gz files"):
        list_subjects(tmp_path / "empty")
    (tmp_path / "list.json").write_text("{}")
    with pytest.raises(DataError, match=r"\.csv \(comma\) or \.tsv"):
        list_subjects(tmp_path / "list.json")


def test_two_files_with_one_subject_name_are_refused(tmp_path):
    volume = np.zeros((2, 2, 2), np.float32)
    write_nifti(tmp_path / "a" / "s.nii.gz", volume)
    write_nifti(tmp_path / "b" / "s.nii", volume)
    table = tmp_path / "list.tsv"
    table.write_text("path\na/s.nii.gz\nb/s.nii\n")
    with pytest.raises(DataError, match="subject name 's' is given by both"):
        list_subjects(table)


def test_read_table_pads_short_rows_and_refuses_long_ones(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("subject\tage\tsex\ns1\t50\n\ns2\t60\tF\n")
    header, rows = read_table(table)
    assert header == ["subject", "age", "sex"]
    assert rows == [{"subject": "s1", "age": "50", "sex": ""}, {"subject": "s2", "age": "60", "sex": "F"}]
    wide = tmp_path / "t.csv"
    wide.write_text("subject,age\ns1,50,extra\n")
    with pytest.raises(DataError, match="line 2: 3 cells for 2 columns"):
        read_table(wide)
