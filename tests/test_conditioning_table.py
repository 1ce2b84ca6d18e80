"""Conditioning tables: keys, normalisation, equalisation, categorical levels, weights, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brainsynth.core.data import Variable
from brainsynth.library.conditioning_table import ConditioningTable
from brainsynth.core.errors import DataError, RecipeError

TABLE = (
    "subject\tage\tsex\tsite\tvolume\tweight\n"
    "s1.nii.gz\t50\tF\tlondon\t10.0\t1\n"
    "s2\t60\tM\tleeds\t20.0\t2\n"
    "s3.nii\t70\tF\tleeds\t40.0\t1\n"
    "s4\t80\tM\tlondon\t\t1\n"
    "s5\t90\tM\tbristol\t80.0\tNaN\n"
)


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "cond.tsv"
    path.write_text(TABLE)
    return path


def test_subject_keys_match_with_or_without_extension(table_path):
    table = ConditioningTable.read(table_path, [Variable("age")], ["s1", "s2.nii.gz", "/data/s3.nii.gz"])
    assert table.subjects == ["s1", "s2", "s3"]
    assert table.raw_values("s3.nii.gz") == {"age": 70}


def test_minmax_and_zscore_fitted_on_training_subjects(table_path):
    variables = [Variable("age"), Variable("volume", normalize="zscore")]
    table = ConditioningTable.read(table_path, variables, ["s1", "s2", "s3"])

    codes = table.encode_subjects(["s1", "s2", "s3", "s5"])

    np.testing.assert_allclose(codes[:, 0].numpy(), [0.0, 0.5, 1.0, 2.0])  # s5 is outside the fit range
    volumes = np.array([10.0, 20.0, 40.0])
    expected = (np.array([10.0, 20.0, 40.0, 80.0]) - volumes.mean()) / volumes.std()
    np.testing.assert_allclose(codes[:, 1].numpy(), expected, rtol=1e-6)
    assert codes.dtype == torch.float32 and codes.shape == (4, 2)


def test_state_dict_is_json_and_restores_the_same_mapping(table_path):
    variables = [Variable("age", equalize=True), Variable("site", kind="categorical"), Variable("volume", normalize="zscore")]
    table = ConditioningTable.read(table_path, variables, ["s1", "s2", "s3", "s5"])
    restored = ConditioningTable.from_state_dict(json.loads(json.dumps(table.state_dict())))

    values = {"age": 63.5, "site": "leeds", "volume": 33.0}
    assert torch.equal(restored.encode(values), table.encode(values))
    assert restored.columns == table.columns and restored.cardinalities == [None, 3, None]
    assert restored.decode(restored.encode(values)) == pytest.approx(values)
    with pytest.raises(DataError, match="without its table"):
        restored.encode_subjects(["s1"])


def test_equalisation_is_uniform_on_training_values_and_invertible(tmp_path):
    rng = np.random.default_rng(0)
    ages = np.round(rng.gamma(2.0, 10.0, size=200) + 40.0, 1)  # skewed, with ties
    path = tmp_path / "ages.csv"
    path.write_text("subject,age\n" + "".join(f"s{i},{a}\n" for i, a in enumerate(ages)))
    table = ConditioningTable.read(path, [Variable("age", equalize=True)])
    mapping = table.mapping("age")

    codes = mapping.encode(ages)

    assert codes.min() == pytest.approx(0.0) and codes.max() == pytest.approx(1.0)
    # the training values are spread uniformly: their empirical CDF is the identity
    assert np.abs(np.sort(codes) - np.linspace(0, 1, ages.size)).max() < 0.02
    assert np.all(np.diff(mapping.encode(np.sort(np.unique(ages)))) > 0)
    probes = np.concatenate([ages, [ages.min() - 5.0, ages.max() + 7.5, 55.55]])
    np.testing.assert_allclose(mapping.decode(mapping.encode(probes)), probes, atol=1e-9)
    grid = np.linspace(-0.2, 1.2, 57)
    np.testing.assert_allclose(mapping.encode(mapping.decode(grid)), grid, atol=1e-9)


def test_categorical_levels_come_from_the_values_and_strings_are_allowed(table_path):
    table = ConditioningTable.read(table_path, [Variable("site", kind="categorical"), Variable("sex", kind="categorical")])
    assert table.mapping("site").levels == ["bristol", "leeds", "london"]
    assert table.num_levels == {"site": 3, "sex": 2}
    codes = table.encode_subjects(["s1", "s2", "s5"])
    assert codes.tolist() == [[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    columns = table.to_columns(codes)
    assert columns["site"].dtype == torch.int64 and columns["site"].tolist() == [2, 1, 0]
    assert table.decode(codes[1]) == {"site": "leeds", "sex": "M"}


def test_numeric_categorical_values_match_across_types(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("subject,sex\na,0\nb,1\nc,1\n")
    table = ConditioningTable.read(path, [{"column": "sex", "kind": "categorical"}])
    assert table.mapping("sex").levels == [0, 1]
    assert table.encode({"sex": 1}).item() == table.encode({"sex": "1"}).item() == table.encode({"sex": 1.0}).item() == 1.0


def test_unseen_categorical_value_at_sample_time_is_a_clear_error(table_path):
    table = ConditioningTable.read(table_path, [Variable("site", kind="categorical")], ["s1", "s2", "s3"])
    with pytest.raises(DataError) as error:
        table.encode({"site": "bristol"})
    message = str(error.value)
    assert "'site'" in message and "'bristol'" in message and "not seen in training" in message
    assert "'leeds', 'london'" in message
    # a validation subject with an unseen level names the table too
    with pytest.raises(DataError, match="cond.tsv: conditioning column 'site' has value 'bristol'"):
        table.encode_subjects(["s5"])


def test_explicit_values_must_name_every_variable_and_nothing_else(table_path):
    table = ConditioningTable.read(table_path, [Variable("age"), Variable("sex", kind="categorical")])
    with pytest.raises(DataError, match="unknown conditioning variable 'agee'. Did you mean 'age'"):
        table.encode({"agee": 50, "sex": "F"})
    with pytest.raises(DataError, match="no value given for conditioning variable\\(s\\) sex"):
        table.encode({"age": 50})
    with pytest.raises(DataError, match="'age' has value 'old', which is not a number"):
        table.encode({"age": "old", "sex": "F"})


def test_nan_rows_are_dropped_and_reported(table_path):
    table = ConditioningTable.read(table_path, [Variable("age"), Variable("volume")], ["s1", "s2", "s3", "s4", "s5"])
    assert table.subjects == ["s1", "s2", "s3", "s5"]
    assert table.dropped == {"s4": "missing value in 'volume'"}
    assert "s4: missing value in 'volume'" in table.report()


def test_missing_row_is_an_error_unless_dropping_is_asked_for(table_path):
    with pytest.raises(DataError) as error:
        ConditioningTable.read(table_path, [Variable("age")], ["s1", "s9"])
    assert "subject 's9' has no row" in str(error.value) and str(table_path) in str(error.value)

    table = ConditioningTable.read(table_path, [Variable("age")], ["s1", "s9", "s2"], missing="drop")
    assert table.subjects == ["s1", "s2"] and table.dropped == {"s9": "no row in the table"}
    val = table.select(["s3", "s8"], missing="drop")
    assert val == ["s3"] and "s8: no row in the table" in table.report()


def test_weights_for_weighted_sampling(table_path):
    table = ConditioningTable.read(table_path, [Variable("age")], ["s1", "s2", "s3", "s4", "s5"], weights=True)
    assert table.dropped == {"s5": "missing value in 'weight'"}
    assert table.weights(table.subjects).tolist() == [1.0, 2.0, 1.0, 1.0]
    plain = ConditioningTable.read(table_path, [Variable("age")])
    with pytest.raises(DataError, match="weights were not requested"):
        plain.weights(["s1"])


def test_table_without_subject_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("subjects,age\na,1\n")
    with pytest.raises(DataError) as error:
        ConditioningTable.read(path, [Variable("age")])
    assert str(path) in str(error.value) and "no 'subject' column" in str(error.value) and "Is 'subjects' that column? Rename it to 'subject'." in str(error.value)


def test_duplicated_subject_rows(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("subject\tage\na.nii.gz\t1\nb\t2\na\t3\n")
    with pytest.raises(DataError, match=r"subject 'a' has two rows \(lines 2 and 4\)"):
        ConditioningTable.read(path, [Variable("age")])


def test_unknown_conditioning_column(table_path):
    with pytest.raises(DataError) as error:
        ConditioningTable.read(table_path, [Variable("agge")])
    message = str(error.value)
    assert str(table_path) in message and "'agge' is not in the table" in message and "Did you mean 'age'" in message


def test_weights_column_required_when_asked_for(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("subject,age\na,1\nb,2\n")
    with pytest.raises(DataError, match="needs a 'weight' column"):
        ConditioningTable.read(path, [Variable("age")], weights=True)


def test_constant_or_non_numeric_continuous_columns_and_bad_settings(table_path, tmp_path):
    with pytest.raises(DataError, match="'site' has value 'london', which is not a number"):
        ConditioningTable.read(table_path, [Variable("site")])
    path = tmp_path / "c.csv"
    path.write_text("subject,age\na,5\nb,5\n")
    with pytest.raises(DataError, match="single value over the training subjects"):
        ConditioningTable.read(path, [Variable("age")])
    with pytest.raises(RecipeError, match="equalize applies to continuous"):
        ConditioningTable.read(table_path, [Variable("sex", kind="categorical", equalize=True)])


def test_normalize_none_passes_the_stored_values_and_survives_the_state_dict(table_path):
    """The original fed table values as stored; imported priors need exactly those numbers."""
    table = ConditioningTable.read(table_path, [Variable("age", normalize="none")], ["s1", "s2", "s3"])
    restored = ConditioningTable.from_state_dict(json.loads(json.dumps(table.state_dict())))

    np.testing.assert_array_equal(table.encode_subjects(["s1", "s5"]).numpy(), [[50.0], [90.0]])
    assert torch.equal(restored.encode({"age": 61.25}), torch.tensor([61.25]))
    assert restored.decode(restored.encode({"age": 61.25})) == {"age": 61.25}
