"""Locating datasets on disk: every absent dataset of a mixture is named in one error, not only the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from prismatic.data.errors import DataError
from prismatic.data.locate import check_datasets_present, find_dataset_dir


def present(root: Path, name: str, *versions: str) -> None:
    for version in versions:
        (root / name / version).mkdir(parents=True)
        (root / name / version / "dataset_info.json").write_text("{}")


def test_every_absent_dataset_is_listed_with_its_reason(tmp_path):
    present(tmp_path, "bridge_orig", "1.0.0")
    present(tmp_path, "kuka", "0.1.0")
    with pytest.raises(DataError) as err:
        check_datasets_present(
            tmp_path, [("bridge_orig", None), ("fractal20220817_data", None), ("kuka", "0.2.0"), ("toto", None)]
        )
    msg = str(err.value)
    assert f"3 of 4 datasets are not under data root '{tmp_path}'" in msg
    assert f"'fractal20220817_data' not found: no {tmp_path}/fractal20220817_data/<version>/dataset_info.json" in msg
    assert f"'kuka' has no version '0.2.0' under {tmp_path / 'kuka'}; versions present: 0.1.0" in msg
    assert "'toto' not found" in msg and "Datasets present: bridge_orig, kuka" in msg
    check_datasets_present(tmp_path, [("bridge_orig", "1.0.0"), ("kuka", None)])  # all there: no error
    assert find_dataset_dir(tmp_path, "kuka") == tmp_path / "kuka" / "0.1.0"


def test_the_pipeline_names_every_absent_dataset_before_reading_any(tmp_path):
    from prismatic.data.pipeline import PipelineConfig, make_dataset

    present(tmp_path, "bridge_orig", "1.0.0")  # present but not a real dataset: never opened
    with pytest.raises(DataError, match=r"(?s)2 of 3 datasets are not under .*'fractal20220817_data' not found.*'kuka' not found"):
        make_dataset(tmp_path, [("bridge_orig", 1.0), ("fractal20220817_data", 1.0), ("kuka", 1.0)],
                     PipelineConfig(shuffle_buffer_size=8))  # fmt: skip
