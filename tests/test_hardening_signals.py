"""Interrupted stages (issue 15): SIGKILL at a point of each stage, then the same command
again, completes and leaves nothing stale; Ctrl-C (SIGINT to the process group) and
SIGTERM print one line and exit 130 / 143 with no traceback and nothing half-written.

Each scenario is a real ``python -m job`` process signalled when something it does shows:
a temporary file appearing in the run folder (the stage is writing) or a line of its output
(training is in its second epoch). All scenarios start at once and are checked one test
each, so the Python and TensorFlow start-ups overlap instead of adding up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hardening import CLI, ROOT, one_error_line, record, snapshot, subprocess_env, temporaries

from job.cli import main
from job.core.errors import JobError
from job.pipeline import render
from job.runfolder.preflight import require

DEADLINE_S = 300  # all scenarios together; a hung child fails its test instead of the suite


@dataclass
class Scenario:
    name: str
    stage: str
    argv: list[str]
    out: Path
    signal: int
    trigger: str  # "file:GLOB" (relative to out), "output:TEXT", "after:SECONDS"
    source: Path | None = None  # the run folder ``out`` starts as a copy of (None: no folder)
    tries: int = 0
    before: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    started: float = 0.0
    signalled_after: float | None = None
    delivered: bool = False  # the process was still running when signalled
    code: int | None = None
    output: list[str] = field(default_factory=list)  # stdout and stderr lines, as they come
    stderr: list[str] = field(default_factory=list)
    pumps: list[threading.Thread] = field(default_factory=list)

    def fired(self) -> bool:
        kind, _, what = self.trigger.partition(":")
        if kind == "file":
            return any(self.out.glob(what))
        if kind == "output":
            return any(what in line for line in list(self.output))
        return time.monotonic() - self.started >= float(what)


def _pump(stream: object, *sinks: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        for sink in sinks:
            sink.append(line.rstrip("\n"))


def run_all(scenarios: list[Scenario], tries: int = 3) -> None:
    """Start every scenario, signal each when its trigger fires, wait for all; start again
    (up to ``tries`` times) the few whose process ended before the trigger was seen or
    before the signal reached it, as a short write on a busy machine can."""
    batch = scenarios
    while batch:
        _run_batch(batch)
        batch = [s for s in batch if not s.delivered and s.tries < tries]


def _reset(s: Scenario) -> None:
    if s.out.exists():
        shutil.rmtree(s.out)
    if s.source is not None:
        shutil.copytree(s.source, s.out)
    s.output.clear()
    s.stderr.clear()
    s.tries += 1


def _run_batch(scenarios: list[Scenario]) -> None:
    for s in scenarios:
        _reset(s)
        s.before = snapshot(s.out)
        s.started = time.monotonic()
        s.process = subprocess.Popen(
            [*CLI, *s.argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=ROOT,
            start_new_session=True,  # its own process group: Ctrl-C reaches every process
        )
        s.pumps = [
            threading.Thread(target=_pump, args=(s.process.stdout, s.output), daemon=True),
            threading.Thread(
                target=_pump, args=(s.process.stderr, s.output, s.stderr), daemon=True
            ),
        ]
        for pump in s.pumps:
            pump.start()
    deadline = time.monotonic() + DEADLINE_S
    waiting = list(scenarios)
    while waiting and time.monotonic() < deadline:
        for s in list(waiting):
            assert s.process is not None
            if s.process.poll() is not None:
                waiting.remove(s)  # finished before its trigger: delivered stays False
            elif s.fired():
                s.delivered = True
                s.signalled_after = round(time.monotonic() - s.started, 2)
                os.killpg(s.process.pid, s.signal)
                waiting.remove(s)
        time.sleep(0.002)
    for s in scenarios:
        assert s.process is not None
        try:
            s.code = s.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(s.process.pid, signal.SIGKILL)
            s.code = s.process.wait()
        # Every line the process wrote is read before any test looks at it: the pipes close
        # when the process group has exited, and each pump ends at its pipe's end.
        for pump in s.pumps:
            pump.join(timeout=60)
            assert not pump.is_alive(), f"{s.name}: its output pipe is still open after 60 s"
        if s.delivered and s.code == 0:
            # Exit 0 after a signal: the process had already finished when it came (the
            # trigger's line was read late on a busy machine; a signalled job never exits
            # 0), so it counts as ending before its trigger and is started again.
            s.delivered = False


@pytest.fixture(scope="module")
def full_run(scored_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full-signals") / "out"
    shutil.copytree(scored_run, out)
    render(out, workers=1)
    return out


def _data_of(run: Path) -> str:
    return str(json.loads((run / "run.json").read_text())["config"]["data"])


def _train(out: Path, data: str) -> list[str]:
    return ["train", "--data", data, "--out", str(out), "--preset", "seed", "--epochs", "30"]


SCORE = ["--top-k", "5", "--block-users", "1"]  # one user a block: the part is open longest


@pytest.fixture(scope="module")
def scenarios(full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario]:
    root = tmp_path_factory.mktemp("signals")
    data = _data_of(full_run)

    made = []
    for name, stage, sig, trigger in (
        ("SIGKILL in training", "train", signal.SIGKILL, "output:Epoch 2/"),
        ("SIGKILL while train writes", "train", signal.SIGKILL, "file:.model.keras.*"),
        ("SIGKILL while score writes", "score", signal.SIGKILL, "file:parts/.predictions-*"),
        ("SIGKILL while merge writes", "merge", signal.SIGKILL, "file:.recommendations.duckdb.*"),
        ("SIGKILL while render writes", "render", signal.SIGKILL, "file:.site.*"),
        ("Ctrl-C in training", "train", signal.SIGINT, "output:Epoch 2/"),
        ("Ctrl-C while score writes", "score", signal.SIGINT, "file:parts/.predictions-*"),
        ("Ctrl-C while merge writes", "merge", signal.SIGINT, "file:.recommendations.duckdb.*"),
        ("Ctrl-C while render writes", "render", signal.SIGINT, "file:.site.*"),
        ("SIGTERM while score writes", "score", signal.SIGTERM, "file:parts/.predictions-*"),
    ):
        out = root / name.replace(" ", "-") / "out"
        argv = {
            "train": _train(out, data),
            "score": ["score", "--out", str(out), *SCORE],
            "merge": ["merge", "--out", str(out)],
            "render": ["render", "--out", str(out)],
        }[stage]
        made.append(Scenario(name, stage, argv, out, sig, trigger, source=full_run))
    # Ctrl-C while Python and TensorFlow start, into a folder that does not exist yet.
    fresh = root / "fresh" / "out"
    made.append(
        Scenario(
            "Ctrl-C while starting", "train", _train(fresh, data), fresh, signal.SIGINT, "after:1.5"
        )
    )
    run_all(made)
    return {s.name: s for s in made}


# What each stage writes, and the stage whose require() then checks it is whole.
WRITES = {
    "train": ("", "score"),
    "score": ("parts/", "merge"),
    "merge": ("recommendations.duckdb", "parquet/", "run.json", "render"),
    "render": ("site/", "run.json", "publish"),
}


def assert_previous_or_complete(s: Scenario) -> None:
    """Under final names, only this stage's outputs changed (the signal came after it had
    written them all: they are complete), and the next stage accepts the folder."""
    *outputs, after = WRITES[s.stage]
    now, before = finals(snapshot(s.out)), finals(s.before)
    changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
    assert all(k.startswith(tuple(outputs)) for k in changed), changed
    if s.stage == "train" and s.trigger.startswith("output:"):
        assert not changed, "signalled in training: the previous run is untouched"
    require(s.out, after)


def finals(files: dict[str, str]) -> dict[str, str]:
    """A snapshot without temporaries (any path part starting with a dot)."""
    return {k: v for k, v in files.items() if not any(p.startswith(".") for p in k.split("/"))}


def _scenario(scenarios: dict[str, Scenario], name: str) -> Scenario:
    s = scenarios[name]
    assert s.delivered, (
        f"{name}: in {s.tries} tries the process ended before its trigger:\n"
        + "\n".join(s.output[-20:])
    )
    return s


KILLED = [
    "SIGKILL in training",
    "SIGKILL while train writes",
    "SIGKILL while score writes",
    "SIGKILL while merge writes",
    "SIGKILL while render writes",
]


@pytest.mark.parametrize("name", KILLED)
def test_killed_stage_then_the_same_command_completes(
    name: str, scenarios: dict[str, Scenario], capsys: pytest.CaptureFixture[str]
) -> None:
    s = _scenario(scenarios, name)
    assert s.code == -signal.SIGKILL
    out = s.out
    # Killed: what is under a final name is the previous run's, or this stage's complete
    # new outputs; or, killed among train's renames, a folder without run.json that every
    # stage refuses.
    if s.stage == "train" and not (out / "run.json").exists():
        assert s.trigger.startswith("file:"), "killed in training, the old run is untouched"
        with pytest.raises(JobError, match="no trained run here"):
            require(out, "score")
    else:
        assert_previous_or_complete(s)

    left = temporaries(out)
    capsys.readouterr()
    code = main(["-q", *s.argv])  # the same command again
    err = capsys.readouterr().err
    record(
        name,
        s.stage,
        f"(killed at {s.signalled_after} s, {len(left)} temporaries left; the same command "
        f"again: exit {code}, {len(temporaries(out))} left)",
        code,
    )
    assert code == 0, err
    assert not temporaries(out), temporaries(out)
    if s.stage == "train":
        require(out, "score")
    else:
        require(
            out, "publish" if s.stage == "render" else "render" if s.stage == "merge" else "merge"
        )


INTERRUPTED = [
    ("Ctrl-C in training", 130),
    ("Ctrl-C while score writes", 130),
    ("Ctrl-C while merge writes", 130),
    ("Ctrl-C while render writes", 130),
    ("SIGTERM while score writes", 143),
    ("Ctrl-C while starting", 130),
]


@pytest.mark.parametrize(("name", "exit_code"), INTERRUPTED)
def test_interrupted_stage_is_one_line_and_nothing_half_written(
    name: str, exit_code: int, scenarios: dict[str, Scenario]
) -> None:
    s = _scenario(scenarios, name)
    line = one_error_line("\n".join(s.stderr))
    record(name, s.stage, line, s.code if s.code is not None else "?", s.out)
    assert s.code == exit_code, "\n".join(s.stderr)
    assert "interrupted" in line or "terminated" in line
    assert not temporaries(s.out) if s.out.exists() else True
    if s.source is None:
        assert not s.out.exists(), "interrupted while starting: nothing written"
    else:
        assert_previous_or_complete(s)
