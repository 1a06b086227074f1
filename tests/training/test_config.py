"""TrainConfig.validate and the data mixture: a typo or an absent dataset is reported before any model
is built, every absent dataset at once, and every registered experiment names a mixture that exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prismatic.data.oxe.mixtures import MIXTURES
from prismatic.data.spec import resolve_mixture
from prismatic.training import task as task_module
from prismatic.training import trainer as trainer_module
from prismatic.training.config import ConfigError, LoggingConfig, TrainConfig, VLAConfig
from prismatic.training.distributed import DistInfo

CPU = DistInfo(0, 0, 1, torch.device("cpu"))


def present(root: Path, *names: str) -> Path:
    """The folder layout validation checks (`<root>/<name>/<version>/dataset_info.json`), no data."""
    for name in names:
        (root / name / "1.0.0").mkdir(parents=True)
        (root / name / "1.0.0" / "dataset_info.json").write_text("{}")
    return root


def config(data_root: Path, run_root: Path, data_mix: str, **kw) -> TrainConfig:
    vla = VLAConfig.get_choice_class("tiny+mx-synthetic")(data_mix=data_mix)
    return TrainConfig(vla=vla, data_root=data_root, run_root=run_root, logging=LoggingConfig(progress=False), **kw)


def test_data_mix_typo_stops_the_trainer_before_the_model_is_built(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before --vla.data_mix was checked")

    monkeypatch.setattr(task_module, "build_model_and_processor", no_model)
    cfg = config(present(tmp_path / "data", "bridge_orig"), tmp_path / "runs", "brige_orig")
    with pytest.raises(ConfigError, match=r"--vla.data_mix='brige_orig': .*neither a mixture nor a dataset; did you mean 'bridge_orig'"):
        trainer_module.Trainer(cfg, CPU)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_every_absent_dataset_of_the_mixture_is_named_at_once(tmp_path):
    cfg = config(present(tmp_path / "data", "bridge_orig", "toto"), tmp_path / "runs", "rtx")
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = str(err.value)
    absent = [name for name, _ in MIXTURES["rtx"] if name not in ("bridge_orig", "toto")]
    assert len(absent) == 8 and f"8 of its 10 datasets are not under --data_root='{tmp_path / 'data'}'" in msg
    for name in absent:
        assert f"'{name}' not found: no {tmp_path / 'data' / name}/<version>/dataset_info.json" in msg, name
    assert "present: bridge_orig, toto" in msg and "'bridge_orig' not found" not in msg


def test_absent_dataset_version_and_bad_dataset_configs_are_named(tmp_path):
    data = present(tmp_path / "data", "bridge_orig")
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(
        "bridge_orig:\n  image_obs_keys: {primary: image_0}\n  proprio_obs_keys: null\n"
        "  state_encoding: pos_euler\n  action_encoding: eef_pos\n  version: '9.9.9'\n"
    )
    cfg = config(data, tmp_path / "runs", "bridge_orig", dataset_configs=(spec_file,))
    with pytest.raises(ConfigError, match=r"'bridge_orig' has no version '9.9.9' .*versions present: 1.0.0"):
        cfg.validate()
    spec_file.write_text("bridge_orig:\n  image_obs_keys: {primary: image_0}\n")
    with pytest.raises(ConfigError, match=r"--dataset_configs: .*mine.yaml: dataset 'bridge_orig': key 'state_encoding': missing"):
        cfg.validate()


def test_a_complete_mixture_validates(tmp_path):
    config(present(tmp_path / "data", *(n for n, _ in MIXTURES["rtx"])), tmp_path / "runs", "rtx").validate()


def test_the_default_experiment_names_a_dataset_that_exists():
    """(Every registered experiment: tests/training/test_base_vlm_training.py.)"""
    default = TrainConfig().vla
    assert default.vla_id == "tiny+mx-synthetic" and default.data_mix == "bridge_orig"  # its synthetic data's schema
    [(spec, weight)] = resolve_mixture(default.data_mix)
    assert spec.name == "bridge_orig" and weight == 1.0
