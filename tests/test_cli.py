"""The CLI contract: every command has help, flags validate early, errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from job.cli import build_parser, main


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return list(action.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", subcommands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert f"usage: python -m job {command}" in help_text
    assert len(help_text.splitlines()) > 3


def test_design_contract_flags_exist() -> None:
    run_help = build_parser().parse_args(
        [
            "run",
            "--data",
            "x",
            "--out",
            "o",
            "--preset",
            "seed",
            "--epochs",
            "3",
            "--seed",
            "7",
            "--test-fraction",
            "0",
            "--publish",
            "s3://b/p",
        ]
    )
    assert run_help.test_fraction == 0 and run_help.publish == "s3://b/p"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--test-fraction", "1.5"], "--test-fraction must be in [0, 1)"),
        (["train", "--epochs", "0"], "model.epochs must be at least 1"),
        (["recommend", "--out", "/nonexistent", "--user", "1"], "no trained run here"),
    ],
)
def test_bad_flags_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["-q", *argv, *(["--out", str(tmp_path / "o")] if argv[0] == "train" else [])])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "job", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "train" in result.stdout


def test_matplotlib_reads_as_missing_only_while_keras_imports() -> None:
    """Keras' optional matplotlib import is skipped, and matplotlib imports normally after
    (in a fresh interpreter: this one may have imported it already)."""
    code = """
import sys
from job.cli import _without_matplotlib
with _without_matplotlib():
    try:
        import matplotlib.pyplot
    except ImportError:
        print("blocked")
from matplotlib.figure import Figure
print("imports after", "matplotlib.pyplot" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["blocked", "imports after False"]
