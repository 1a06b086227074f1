import json
import os
import stat

import pytest
import torch

from prismatic.util.io import atomic_torch_save, atomic_write, atomic_write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "dataset_statistics.json"
    atomic_write_json(target, {"old": 1})

    def half_then_crash(f):
        f.write(b'{"partial": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["dataset_statistics.json"]


def test_files_get_normal_permissions_and_round_trip(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "sub" / "x.pt")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
