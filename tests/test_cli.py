"""The CLI contract: every command has help, flags validate early, errors are one line."""

from __future__ import annotations

import argparse
import shutil
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


# ---------------------------------------------------------------------------------------
# What a command loads before its work, and where its flags go

# Runs the job's CLI in a fresh process and reports on stderr's last line whether Keras or
# TensorFlow was imported by the time the command ended.
PROBE = """
import sys
from job.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("keras", "tensorflow") if m in sys.modules)
print("imported:", ",".join(heavy) or "none", file=sys.stderr)
sys.exit(code)
"""


def probe(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.slow  # trains or starts processes: `make test` only
def test_commands_that_never_train_or_score_never_import_tensorflow(
    scored_run: Path, tmp_path: Path
) -> None:
    """merge, render, publish, pull-latest and the workflow's steps run without Keras: each
    stays light on a runner that only publishes, and starts in well under the import's time."""
    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    site, pulled = tmp_path / "www", tmp_path / "previous"
    calls = [
        ["merge", "--out", str(out)],
        ["render", "--out", str(out)],
        ["publish", str(out), str(site)],
        ["pull-latest", str(site), "--out", str(pulled)],
        ["shard-plan", "--shards", "2"],
        ["run-summary", str(out)],
        ["publish-summary", str(out), "s3://bucket/prefix"],
    ]
    for argv in calls:
        done = probe("-q", *argv)
        assert done.returncode == 0, f"{argv[0]}: {done.stderr}"
        assert done.stderr.splitlines()[-1] == "imported: none", f"{argv[0]} imported Keras"
    assert (site / "index.html").is_file() and (pulled / "model.keras").is_file()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--publish", "s3://Bad_Bucket/x"], "Bad_Bucket"),
        (["--keep-top", "0"], "--keep-top"),
    ],
)
def test_a_bad_option_fails_in_one_line_before_keras_is_imported(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    done = probe("run", "--out", str(tmp_path / "out"), *argv)
    *lines, report = done.stderr.splitlines()
    assert done.returncode != 0 and report == "imported: none"
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_and_verbose_are_accepted_before_and_after_the_command(where: str) -> None:
    for flag, name in (("-q", "quiet"), ("-v", "verbose")):
        argv = [flag, "run"] if where == "before" else ["run", flag]
        args = build_parser().parse_args(argv)
        assert getattr(args, name) is True
        assert getattr(args, {"quiet": "verbose", "verbose": "quiet"}[name]) is False


def test_help_lists_every_command_once_in_its_group(capsys: pytest.CaptureFixture[str]) -> None:
    from job.cli import COMMAND_GROUPS

    grouped = [name for _, names in COMMAND_GROUPS for name in names]
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(grouped) == sorted(commands.choices)  # each command in exactly one group
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert [listing.index(f"\n  {name} ") for name in grouped] == sorted(
        listing.index(f"\n  {name} ") for name in grouped
    )  # in the groups' order: the user's path first
