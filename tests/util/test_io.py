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


def test_full_disk_says_so_and_leaves_no_temporary(tmp_path):
    """ENOSPC mid-write (simulated: the writer fills part of the file, then the device is full)."""
    import errno

    target = tmp_path / "checkpoints" / "step-000010.pt"
    atomic_torch_save({"w": torch.zeros(3)}, target)

    def fills_the_disk(f):
        f.write(b"x" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"no space left on the device of .*step-000010.pt while writing step-000010.pt "
                                      r"\([\d.]+ MiB free\); nothing was written") as err:  # fmt: skip
        atomic_write(target, fills_the_disk)
    assert err.value.errno == errno.ENOSPC
    assert [p.name for p in target.parent.iterdir()] == ["step-000010.pt"]  # no .tmp left behind
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(3))


def test_atomic_dir_replaces_only_on_success_and_stale_temporaries_are_cleared(tmp_path):
    from prismatic.util.io import atomic_dir, remove_stale_temporaries

    adapter = tmp_path / "adapter"
    with atomic_dir(adapter) as d:
        (d / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(adapter) as d:
        (d / "weights").write_text("v2 (half)")
        raise RuntimeError("killed")
    assert (adapter / "weights").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    # what a killed process leaves: a temp file, a half-filled directory, and (killed between atomic_dir's two
    # renames) the previous directory under its old-name, which is put back rather than deleted
    (tmp_path / ".config.json.abc123.tmp").write_text("{")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-000020.pt.x9.tmp").write_bytes(b"\0" * 1000)
    (tmp_path / ".hf.partial").mkdir()
    adapter.rename(tmp_path / ".adapter.old")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".config.json.abc123.tmp", ".hf.partial", ".step-000020.pt.x9.tmp"]
    assert (adapter / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["adapter", "checkpoints", "weights"]
