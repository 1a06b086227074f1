"""Entry points: user errors in one line (the traceback on request), bugs with their traceback; output dirs that
are inputs are refused before anything is read or written."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from prismatic.training.config import ConfigError
from prismatic.util.cli import check_output_dir, run_cli
from prismatic.util.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _run(main, argv, monkeypatch, env=None):
    monkeypatch.setattr(sys, "argv", ["prog.py", *argv])
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_:
        run_cli(main)
    return exit_.value.code


def test_user_errors_print_one_line_and_exit_1(monkeypatch, capsys):
    def main():
        raise ConfigError("--vla.max_grad_norm must be > 0, got -1")

    assert _run(main, [], monkeypatch) == 1
    err = capsys.readouterr().err
    assert err == "prog.py: error: --vla.max_grad_norm must be > 0, got -1  [--debug shows the traceback]\n"

    def lookup():
        raise KeyError("unknown dataset 'bridge_orgi'; choose one of: bridge_orig")

    assert _run(lookup, [], monkeypatch) == 1
    assert "error: unknown dataset 'bridge_orgi'; choose" in capsys.readouterr().err  # no KeyError quotes


def test_debug_flag_or_variable_shows_the_traceback_and_bugs_always_do(monkeypatch):
    seen = []

    def main():
        seen.append(list(sys.argv))
        raise UserError("bad flag")

    monkeypatch.setattr(sys, "argv", ["prog.py", "--debug", "--x", "1"])
    with pytest.raises(UserError, match="bad flag"):
        run_cli(main)
    assert seen[-1] == ["prog.py", "--x", "1"]  # --debug is not passed on to the script's own parser
    monkeypatch.setattr(sys, "argv", ["prog.py"])
    monkeypatch.setenv("PRISMATIC_DEBUG", "1")
    with pytest.raises(UserError):
        run_cli(main)
    monkeypatch.delenv("PRISMATIC_DEBUG")

    def bug():
        return None.shape  # AttributeError: a bug, never hidden

    with pytest.raises(AttributeError):
        run_cli(bug)
    assert _run(lambda: 3, [], monkeypatch) == 3  # the script's own exit code


def test_output_dir_that_is_an_input_is_refused(tmp_path):
    (tmp_path / "base").mkdir()
    with pytest.raises(UserError, match=r"--out_dir .*base/\.\./base is also the input --base_dir"):
        check_output_dir(tmp_path / "base" / ".." / "base", base_dir=tmp_path / "base", run_dir=tmp_path / "run")
    assert check_output_dir(tmp_path / "merged", base_dir=tmp_path / "base", tokenizer=None) == tmp_path / "merged"


def _script(path: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [path, *argv])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / path), run_name="__main__")
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "script, flags",
    [
        ("vla-scripts/merge_lora.py", lambda base, run: ["--base_dir", base, "--run_dir", run, "--out_dir", base]),
        ("vla-scripts/extern/convert_native_to_hf.py", lambda base, run: ["--run_dir", run, "--out_dir", run]),
        ("vla-scripts/extern/convert_hf_to_native.py", lambda base, run: ["--hf_dir", base, "--out_dir", base]),
    ],
)
def test_scripts_refuse_an_output_dir_that_is_an_input(script, flags, tmp_path, monkeypatch, capsys):
    """merge_lora.py used to delete the base's shards (writing its own there), convert_native_to_hf.py replaced
    the run's training config.json."""
    base, run = tmp_path / "base", tmp_path / "run"
    for d in (base, run / "checkpoints", run / "adapter"):
        d.mkdir(parents=True)
    (base / "model-00001-of-00002.safetensors").write_bytes(b"base weights")
    (run / "config.json").write_text('{"vla": {"type": "mine"}}')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, err = _script(script, flags(str(base), str(run)), monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1 and "is also the input" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
