"""Damaged checkpoints, full disks and killed saves: resume names the damaged file and falls back to the newest
complete older checkpoint; a failed save leaves nothing behind; nothing foreign is ever unpickled."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_training import losses, tiny_cfg

from prismatic.models.load import CheckpointError, load_vla
from prismatic.training.checkpoint import CheckpointManager, TrainerState
from prismatic.training.distributed import DistInfo
from prismatic.training.trainer import Trainer

CPU = DistInfo(0, 0, 1, torch.device("cpu"))


@pytest.fixture(scope="module")
def finished_run(data_root, tmp_path_factory) -> Path:
    """A 6-step tiny run with resumable checkpoints at steps 3 and 6 and weights files for both."""
    cfg = tiny_cfg(data_root, tmp_path_factory.mktemp("runs"), max_steps=6)
    Trainer(cfg).train()
    assert sorted(p.name for p in (cfg.run_dir / "state").iterdir()) == ["step-000003", "step-000006"]
    return cfg.run_dir


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    return dst


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2
    data[i : i + 64] = bytes(255 - b for b in data[i : i + 64])
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated shard": ("__0_0.distcp", _truncate),
    "corrupt shard (same size)": ("__0_0.distcp", _flip_middle),
    "garbage metadata": (".metadata", lambda p: p.write_bytes(b"\x80\x04garbage")),
    "truncated rng file": ("rng-rank0.pt", _truncate),
    "unreadable trainer_state.json": ("trainer_state.json", lambda p: p.write_text('{"step": 6, "epo')),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_is_named_and_skipped(damage, finished_run, tmp_path, caplog):
    run = _copy(finished_run, tmp_path)
    name, fn = DAMAGE[damage]
    fn(run / "state" / "step-000006" / name)
    with caplog.at_level(logging.WARNING):
        ckpt_dir, state = CheckpointManager(run, CPU).resume_point()
    assert ckpt_dir.name == "step-000003" and state.step == 3 and state.samples_seen == 12
    assert name in caplog.text and "step-000006" in caplog.text


def test_checkpoints_without_a_manifest_are_still_checked(finished_run, tmp_path, caplog):
    """Checkpoints saved before trainer_state.json listed its files: sizes come from DCP's own index."""
    run = _copy(finished_run, tmp_path)
    for d in (run / "state").iterdir():
        record = json.loads((d / "trainer_state.json").read_text())
        del record["files"]
        (d / "trainer_state.json").write_text(json.dumps(record))
    assert CheckpointManager(run, CPU).resume_point()[0].name == "step-000006"
    _truncate(run / "state" / "step-000006" / "__0_0.distcp")
    with caplog.at_level(logging.WARNING):
        assert CheckpointManager(run, CPU).resume_point()[0].name == "step-000003"
    assert "__0_0.distcp" in caplog.text and "truncated" in caplog.text


def test_resume_falls_back_and_continues_bit_exactly(finished_run, data_root, tmp_path):
    run = _copy(finished_run, tmp_path)
    _truncate(run / "state" / "step-000006" / "__0_0.distcp")
    cfg = tiny_cfg(data_root, tmp_path, max_steps=6)
    trainer = Trainer(cfg)
    assert cfg.run_dir == run and trainer.state.step == 3
    trainer.train()
    assert losses(run)[-3:] == losses(finished_run)[-3:]  # steps 4-6 again, identical
    a = torch.load(sorted((finished_run / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    b = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    assert all(torch.equal(a[g][k], b[g][k]) for g in a for k in a[g])


def test_all_checkpoints_damaged_is_an_error_naming_them(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    for step in ("step-000003", "step-000006"):
        _truncate(run / "state" / step / "rng-rank0.pt")
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged: step-000006 \(rng-rank0.pt: .* bytes"
                                              r".*step-000003.*--checkpoint.resume false"):  # fmt: skip
        CheckpointManager(run, CPU).resume_point()


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-payload-ran",))


def test_a_planted_metadata_pickle_is_never_run(finished_run, tmp_path, monkeypatch, caplog):
    """DCP's .metadata is a pickle: one that builds anything but DCP's own metadata classes is refused."""
    run = _copy(finished_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    meta = run / "state" / "step-000006" / ".metadata"
    meta.write_bytes(pickle.dumps(_Planted()))
    record = json.loads((meta.parent / "trainer_state.json").read_text())
    del record["files"]  # even with no checksum to catch it
    (meta.parent / "trainer_state.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        assert CheckpointManager(run, CPU).resume_point()[0].name == "step-000003"
    assert "posix.system is not part of a checkpoint's metadata" in caplog.text
    assert not (tmp_path / "planted-payload-ran").exists()


def test_a_full_disk_during_a_save_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    import torch.distributed.checkpoint.filesystem as fs

    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    mgr = CheckpointManager(tmp_path, CPU)
    mgr.save(model, optimizer, TrainerState(step=1))
    real = fs._write_item

    def fills_the_disk(transforms, stream, data, *args, **kwargs):
        real(transforms, stream, data, *args, **kwargs)  # some bytes reach the file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs, "_write_item", fills_the_disk)
    with pytest.raises(OSError, match=r"no space left on the device of .*step-000002.partial while saving checkpoint "
                                      r"step 2 .*the last complete checkpoint \(.*step-000001\) is intact") as err:  # fmt: skip
        mgr.save(model, optimizer, TrainerState(step=2))
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["step-000001"]  # no .partial
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert mgr.resume_point()[0].name == "step-000001"


def test_leftovers_of_a_killed_save_are_removed_at_start(finished_run, data_root, tmp_path, caplog):
    """A killed save used to leave a .partial checkpoint (blocking the next start on a full disk) or a model-sized
    .tmp weights file forever."""
    run = _copy(finished_run, tmp_path)
    (run / "state" / "step-000009.partial").mkdir()
    (run / "state" / "step-000009.partial" / "__0_0.distcp").write_bytes(b"\0" * 2**20)
    (run / "checkpoints" / ".step-000009-epoch-00-loss=1.0000.pt.k2j3.tmp").write_bytes(b"\0" * 2**20)
    (run / ".config.json.x81.tmp").write_text("{")
    with caplog.at_level(logging.WARNING):
        Trainer(tiny_cfg(data_root, tmp_path, max_steps=6))
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert "removed 3 leftover(s) of an interrupted save" in caplog.text


def test_a_damaged_weights_file_is_named_and_an_older_one_loaded(finished_run, tmp_path, caplog):
    run = _copy(finished_run, tmp_path)
    newest, older = sorted((run / "checkpoints").glob("*.pt"), reverse=True)
    _truncate(newest)
    with caplog.at_level(logging.WARNING):
        vla = load_vla(run)
    assert newest.name in caplog.text and "incomplete or corrupt" in caplog.text and older.name in caplog.text
    assert vla.model.config.image_sizes == [112, 112]
    with pytest.raises(CheckpointError, match=rf"{newest.name} is incomplete or corrupt"):
        load_vla(newest)  # asked for by name: no silent substitute


@pytest.mark.slow
def test_two_ranks_split_the_checks_and_fall_back_together(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).with_name("two_rank_checkpoints.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0: fell back to step-000001" in proc.stdout and "rank 1: fell back to step-000001" in proc.stdout
    assert "__1_0.distcp: " in proc.stderr  # the warning names the damaged file


def test_an_only_checkpoint_with_an_unreadable_state_is_not_silently_dropped(finished_run, tmp_path):
    """An unreadable trainer_state.json used to skip back silently (here: to a fresh start)."""
    run = _copy(finished_run, tmp_path)
    shutil.rmtree(run / "state" / "step-000003")
    (run / "state" / "step-000006" / "trainer_state.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged: step-000006 \(trainer_state.json: unreadable\)"):
        CheckpointManager(run, CPU).resume_point()
