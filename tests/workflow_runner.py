"""Runs a GitHub Actions workflow's jobs on this machine, as GitHub would: a test harness for
.github/workflows/run.yml, not product code.

The jobs run one after another in `needs` order (a matrix job once per combination). Every
`run:` step runs exactly as written, with the step's shell (`bash -e` by default), its `env:`
resolved and the job's `container:` honoured: the step runs in that image (named by digest, so
it must be one the workflow's own build produced) with the job's `options` (`--user 1001:1001`),
a mounted workspace as the working directory and a writable HOME, like GitHub's runner. The
`${{ }}` expressions the workflow uses are evaluated here (contexts inputs, vars, github,
needs, steps, matrix, env; literals, `!`, `==`, `!=`, `&&`, `||`, fromJSON, ...), and an
expression this evaluator does not understand fails rather than reading as empty.
`$GITHUB_OUTPUT`, `$GITHUB_ENV` and `$GITHUB_STEP_SUMMARY` are files, read back after each step.
A job without a container runs its steps on this machine, in its own workspace folder; a step
there that uses sudo is refused (it would change this machine, not a runner).

Actions (`uses:`) have stand-ins, and only the ones in ACTIONS: any other action fails the run,
so no step slips through unexecuted.

- actions/checkout: nothing to copy (only the image build reads the checkout: the repository);
- docker/setup-buildx-action, docker/login-action: nothing (no registry here);
- docker/build-push-action: the image built locally from the same Dockerfile; its `digest`
  output is the local image's id, and `ghcr.io/REPOSITORY@DIGEST` then names that image;
- actions/upload-artifact, actions/download-artifact: folder copies under the run's artifacts
  folder, with v4's rules (a directory's contents, hidden files left out, one upload per name,
  `pattern` and `merge-multiple`);
- aws-actions/configure-aws-credentials: the given credentials and S3 endpoint (a moto server)
  exported to the job's later steps, with the region the step asks for.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import json
import operator
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from containers import Engine

RUNNER_UID = 1001  # the user GitHub-hosted runners run as, and that run.yml's jobs ask for
CONTAINER_HOME = "/github/home"
CONTAINER_TEMP = "/__w/_temp"


class WorkflowError(Exception):
    """The workflow cannot run as written here: a failed step, an unknown action or expression."""


# ---------------------------------------------------------------------------------------------
# Expressions: ${{ ... }}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>\|\||&&|==|!=|<=|>=|[<>!().,\[\]*])"
    r"|(?P<name>[A-Za-z_][\w-]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise WorkflowError(f"cannot read the expression {text!r} at {text[pos:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match[kind]))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value  # NaN is false too


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip() or 0)
        except ValueError:
            return float("nan")
    return float("nan")


def _equal(a: Any, b: Any) -> bool:
    """GitHub's loose equality: strings case-insensitively, other mixed types as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if type(a) is type(b) or a is None or b is None:
        if isinstance(a, dict | list) or isinstance(b, dict | list):
            return a is b
        if a is None or b is None:
            return a is b or _number(a) == _number(b)
        return bool(a == b)
    return _number(a) == _number(b)


def to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, indent=2)
    return str(value)


class _Parser:
    def __init__(self, text: str, context: dict[str, Any]) -> None:
        self.text, self.tokens, self.pos, self.context = text, _tokens(text), 0, context

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise WorkflowError(f"{self.text!r}: expected {value or 'more'} at token {self.pos}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise WorkflowError(f"{self.text!r}: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.compare()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.compare()
            value = right if truthy(value) else value
        return value

    def compare(self) -> Any:
        left = self.unary()
        token = self.peek()
        if token is not None and token[1] in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take()[1]
            right = self.unary()
            if op == "==":
                return _equal(left, right)
            if op == "!=":
                return not _equal(left, right)
            a, b = _number(left), _number(right)
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return left

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text == "(":
            value = self.or_()
            self.take(")")
            return value
        if kind != "name":
            raise WorkflowError(f"{self.text!r}: unexpected {text!r}")
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if self.peek() == ("op", "("):
            self.take()
            args = []
            while self.peek() != ("op", ")"):
                args.append(self.or_())
                if self.peek() == ("op", ","):
                    self.take()
            self.take(")")
            return _call(text, args, self.text)
        if text not in self.context:
            raise WorkflowError(f"{self.text!r}: no context {text!r} here")
        return self.context[text]

    def postfix(self, value: Any) -> Any:
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                kind, name = self.take()
                if kind != "name":
                    raise WorkflowError(f"{self.text!r}: a property name expected after '.'")
                value = value.get(name) if isinstance(value, dict) else None
            else:
                key = self.or_()
                self.take("]")
                if isinstance(value, list) and isinstance(key, int | float):
                    value = value[int(key)] if 0 <= int(key) < len(value) else None
                else:
                    value = value.get(to_string(key)) if isinstance(value, dict) else None
        return value


def _call(name: str, args: list[Any], text: str) -> Any:
    name = name.lower()
    if name == "fromjson":
        return json.loads(to_string(args[0]))
    if name == "tojson":
        return json.dumps(args[0], indent=2)
    if name == "format":
        return re.sub(r"\{(\d+)\}", lambda m: to_string(args[1 + int(m[1])]), to_string(args[0]))
    if name == "contains":
        hay, needle = args
        if isinstance(hay, list):
            return any(_equal(item, needle) for item in hay)
        return to_string(needle).casefold() in to_string(hay).casefold()
    if name == "startswith":
        return to_string(args[0]).casefold().startswith(to_string(args[1]).casefold())
    if name == "endswith":
        return to_string(args[0]).casefold().endswith(to_string(args[1]).casefold())
    # Status functions: a step or job only runs after everything before it succeeded (a failure
    # ends the run here), so success() and always() hold and failure() and cancelled() do not.
    if name in ("success", "always"):
        return True
    if name in ("failure", "cancelled"):
        return False
    raise WorkflowError(f"{text!r}: the function {name}() is not known to this runner")


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    return _Parser(expression, context).parse()


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(value: Any, context: dict[str, Any]) -> Any:
    """`value` with every ${{ }} evaluated: a string that is one expression keeps its type."""
    if isinstance(value, dict):
        return {k: interpolate(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, context) for v in value]
    if not isinstance(value, str) or "${{" not in value:
        return value
    whole = _TEMPLATE.fullmatch(value.strip())
    if whole:
        return evaluate(whole[1], context)
    return _TEMPLATE.sub(lambda m: to_string(evaluate(m[1], context)), value)


def condition(text: Any, context: dict[str, Any]) -> bool:
    """A job's or step's `if:`, written with or without ${{ }}."""
    if text is None:
        return True
    if isinstance(text, bool):
        return text
    whole = _TEMPLATE.fullmatch(str(text).strip())
    return truthy(evaluate(whole[1] if whole else str(text), context))


# ---------------------------------------------------------------------------------------------
# Files GitHub reads back after a step


def read_outputs(path: Path) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` blocks, as $GITHUB_OUTPUT and $GITHUB_ENV hold."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = list(itertools.takewhile(functools.partial(operator.ne, delimiter), lines))
            values[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise WorkflowError(f"{path.name}: cannot read the line {line!r}")
    return values


def _give_to_runner(path: Path) -> None:
    """The runner's user owns its workspace, as on GitHub (rootless engines: world-writable)."""
    for entry in [path, *path.rglob("*")]:
        if os.geteuid() == 0:
            os.chown(entry, RUNNER_UID, RUNNER_UID, follow_symlinks=False)
        elif not entry.is_symlink():
            entry.chmod(entry.stat().st_mode | 0o777)


def _copy_contents(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, destination, dirs_exist_ok=True, symlinks=True)


# ---------------------------------------------------------------------------------------------
# The runner


@dataclass
class StepRecord:
    job: str  # job id, with the matrix values for a matrix job: "score (shard=1)"
    name: str
    status: str  # "ran" or "skipped"
    seconds: float = 0.0


@dataclass
class JobResult:
    status: str  # "success" or "skipped"
    outputs: dict[str, Any] = field(default_factory=dict)
    summaries: list[str] = field(default_factory=list)  # one per $GITHUB_STEP_SUMMARY written
    workspaces: list[Path] = field(default_factory=list)  # one per matrix combination


@dataclass
class WorkflowRun:
    """One dispatch of a workflow with `inputs`, here. Call `run()`, then read `jobs`/`steps`."""

    workflow_file: Path
    repository: Path  # the checkout: what actions/checkout gives and the image is built from
    work: Path  # an empty folder for workspaces, artifacts and temporary files
    engine: Engine
    build_image: Callable[[str], str]  # "cpu"/"gpu" -> a local image tag built from infra/
    inputs: dict[str, Any]
    vars: dict[str, str]
    github: dict[str, Any]
    aws: dict[str, str]  # what configure-aws-credentials exports (credentials, endpoint)
    container_network: str = "host"  # so a server on the host's loopback is reachable
    step_timeout: float = 1800
    jobs: dict[str, JobResult] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # ghcr.io/REPO@DIGEST -> local id
    artifacts: Path = field(init=False)

    def __post_init__(self) -> None:
        data = yaml.safe_load(self.workflow_file.read_text(encoding="utf-8"))
        if True in data:  # YAML 1.1 reads the key `on` as True
            data["on"] = data.pop(True)
        self.workflow: dict[str, Any] = data
        self.artifacts = self.work / "artifacts"
        self.artifacts.mkdir(parents=True)
        self.inputs = self._dispatch_inputs(self.inputs)

    def _dispatch_inputs(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.workflow["on"]["workflow_dispatch"]["inputs"]
        unknown = set(given) - set(declared)
        if unknown:
            raise WorkflowError(f"inputs the workflow does not declare: {sorted(unknown)}")
        inputs = {}
        for name, spec in declared.items():
            value = given.get(
                name, spec.get("default", "" if spec.get("type") != "boolean" else False)
            )
            if spec.get("type") == "boolean":
                if not isinstance(value, bool):
                    raise WorkflowError(f"input {name} is a boolean, not {value!r}")
            else:
                value = str(value)
                if spec.get("type") == "choice" and value not in spec["options"]:
                    raise WorkflowError(f"input {name}={value!r} is not one of {spec['options']}")
            inputs[name] = value
        return inputs

    # -- jobs ------------------------------------------------------------------------------

    def order(self) -> list[str]:
        """The jobs in `needs` order (the file's order among jobs that could run together)."""
        jobs = self.workflow["jobs"]
        done: list[str] = []
        while len(done) < len(jobs):
            ready = [j for j in jobs if j not in done and set(_needs(jobs[j])) <= set(done)]
            if not ready:
                raise WorkflowError(
                    f"a cycle or a missing job in needs: {sorted(set(jobs) - set(done))}"
                )
            done.append(ready[0])
        return done

    def run(self) -> None:
        for job_id in self.order():
            self.jobs[job_id] = self._run_job(job_id, self.workflow["jobs"][job_id])

    def _context(self, job_id: str) -> dict[str, Any]:
        job = self.workflow["jobs"][job_id]
        return {
            "inputs": self.inputs,
            "vars": self.vars,
            "github": self.github,
            "env": dict(self.workflow.get("env") or {}),
            "needs": {
                need: {"outputs": self.jobs[need].outputs, "result": self.jobs[need].status}
                for need in _needs(job)
            },
        }

    def _run_job(self, job_id: str, job: dict[str, Any]) -> JobResult:
        context = self._context(job_id)
        # A job whose needs did not all succeed is skipped unless its `if` says always().
        needs_skipped = any(self.jobs[n].status != "success" for n in _needs(job))
        if needs_skipped and "always()" not in str(job.get("if", "")):
            skip = True
        else:
            skip = not condition(job.get("if"), context)
        if skip:
            for step in job.get("steps", []):
                self.steps.append(StepRecord(job_id, _step_name(step), "skipped"))
            return JobResult("skipped")
        for key in ("runs-on", "environment", "concurrency", "permissions", "timeout-minutes"):
            interpolate(job.get(key), context)  # every expression must at least evaluate
        result = JobResult("success")
        for matrix in self._matrix(job, context):
            label = job_id + (
                " (" + ", ".join(f"{k}={to_string(v)}" for k, v in matrix.items()) + ")"
                if matrix
                else ""
            )
            steps_context = self._run_steps(
                job_id, label, job, {**context, "matrix": matrix}, result
            )
            outputs_context = {**context, "matrix": matrix, "steps": steps_context}
            # A matrix job's outputs are its last combination's, as on GitHub.
            result.outputs = {
                name: to_string(interpolate(value, outputs_context))
                for name, value in (job.get("outputs") or {}).items()
            }
        return result

    def _matrix(self, job: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
        strategy = job.get("strategy") or {}
        matrix = interpolate(strategy.get("matrix"), context)
        if not matrix:
            return [{}]
        if not isinstance(matrix, dict) or {"include", "exclude"} & set(matrix):
            raise WorkflowError(f"this runner knows a matrix of plain lists only: {matrix!r}")
        for name, values in matrix.items():
            if not isinstance(values, list) or not values:
                raise WorkflowError(f"matrix.{name} is not a non-empty list: {values!r}")
        names = list(matrix)
        return [
            dict(zip(names, combo, strict=True)) for combo in itertools.product(*matrix.values())
        ]

    # -- steps -----------------------------------------------------------------------------

    def _run_steps(
        self,
        job_id: str,
        label: str,
        job: dict[str, Any],
        context: dict[str, Any],
        result: JobResult,
    ) -> dict[str, Any]:
        slug = re.sub(r"\W+", "-", label).strip("-")
        workspace, home, temp = (self.work / part / slug for part in ("workspace", "home", "temp"))
        for folder in (workspace, home, temp):
            folder.mkdir(parents=True)
            _give_to_runner(folder)
        result.workspaces.append(workspace)
        container = interpolate(job.get("container"), context)
        image = self._image(container) if container else None
        job_env = {k: to_string(v) for k, v in interpolate(job.get("env") or {}, context).items()}
        exported: dict[str, str] = {}  # $GITHUB_ENV and actions' exports, for later steps
        steps: dict[str, Any] = {}
        job_state = _JobState(workspace=workspace, home=home, temp=temp, checked_out=False)
        for step in job.get("steps", []):
            env_context = {**context["env"], **job_env, **exported}
            step_context = {**context, "env": env_context, "steps": steps}
            name = _step_name(step)
            if not condition(step.get("if"), step_context):
                self.steps.append(StepRecord(label, name, "skipped"))
                if "id" in step:
                    steps[step["id"]] = {
                        "outputs": {},
                        "outcome": "skipped",
                        "conclusion": "skipped",
                    }
                continue
            step_env = {
                k: to_string(v) for k, v in interpolate(step.get("env") or {}, step_context).items()
            }
            env = {**env_context, **step_env}
            started = time.monotonic()
            files = {
                "GITHUB_OUTPUT": f"set_output_{uuid.uuid4().hex}",
                "GITHUB_ENV": f"set_env_{uuid.uuid4().hex}",
                "GITHUB_STEP_SUMMARY": f"step_summary_{uuid.uuid4().hex}",
                "GITHUB_PATH": f"add_path_{uuid.uuid4().hex}",
            }
            if "uses" in step:
                outputs = self._action(step, step_context, job_state, exported)
            elif "run" in step:
                self._script(step, env, files, image, container, job_state, label)
                outputs = read_outputs(temp / files["GITHUB_OUTPUT"])
                exported.update(read_outputs(temp / files["GITHUB_ENV"]))
                summary = temp / files["GITHUB_STEP_SUMMARY"]
                if summary.exists() and summary.read_text(encoding="utf-8").strip():
                    result.summaries.append(summary.read_text(encoding="utf-8"))
            else:
                raise WorkflowError(f"{label}: step {name!r} has neither uses nor run")
            self.steps.append(StepRecord(label, name, "ran", time.monotonic() - started))
            if "id" in step:
                steps[step["id"]] = {
                    "outputs": outputs,
                    "outcome": "success",
                    "conclusion": "success",
                }
        return steps

    def _image(self, container: Any) -> str:
        reference = container if isinstance(container, str) else container.get("image", "")
        if reference not in self.images:
            raise WorkflowError(
                f"the container {reference!r} is not an image this workflow run built "
                f"(built: {sorted(self.images) or 'none'})"
            )
        return self.images[reference]

    def _script(
        self,
        step: dict[str, Any],
        env: dict[str, str],
        files: dict[str, str],
        image: str | None,
        container: Any,
        state: _JobState,
        label: str,
    ) -> None:
        shell = step.get("shell")
        if isinstance(shell, str) and "${{" in shell:
            raise WorkflowError(f"{label}: an expression in shell: is not supported here")
        template = str(
            {
                None: "bash -e {0}",
                "bash": "bash --noprofile --norc -eo pipefail {0}",
                "sh": "sh -e {0}",
                "python": "python {0}",
            }.get(shell, shell)
        )
        if "{0}" not in template:
            template += " {0}"
        suffix = ".py" if shell == "python" else ".sh"
        script = state.temp / f"{uuid.uuid4().hex}{suffix}"
        script.write_text(step["run"], encoding="utf-8")
        _give_to_runner(script)
        if image is None:  # on the runner itself: this machine, in the job's workspace
            paths = {"workspace": state.workspace, "home": state.home, "temp": state.temp}
        else:
            paths = {
                "workspace": Path("/__w", *[self.github["repository"].split("/")[1]] * 2),
                "home": Path(CONTAINER_HOME),
                "temp": Path(CONTAINER_TEMP),
            }
        full_env = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(paths["workspace"]),
            "GITHUB_REPOSITORY": self.github["repository"],
            "GITHUB_SHA": self.github["sha"],
            "GITHUB_RUN_ID": str(self.github["run_id"]),
            "GITHUB_ACTOR": self.github["actor"],
            "GITHUB_WORKFLOW": self.github["workflow"],
            "RUNNER_OS": "Linux",
            "RUNNER_TEMP": str(paths["temp"]),
            "HOME": str(paths["home"]),
            **{name: str(paths["temp"] / file) for name, file in files.items()},
            **env,
        }
        command = shlex.split(
            template.replace("{0}", shlex.quote(str(paths["temp"] / script.name)))
        )
        if image is None:
            if re.search(r"(^|[\s;&|(])sudo\s", step["run"]):
                # Such a step changes the runner itself (run.yml's GPU job frees disk space);
                # here the runner is this machine.
                raise WorkflowError(f"{label}: {_step_name(step)!r} runs sudo on this machine")
            proc = subprocess.run(
                command,
                cwd=state.workspace,
                env={"PATH": os.environ["PATH"], **full_env},
                capture_output=True,
                text=True,
                timeout=self.step_timeout,
                check=False,
            )
        else:
            options = (
                shlex.split(to_string(container.get("options")))
                if isinstance(container, dict)
                else []
            )
            for name, value in full_env.items():
                options += ["--env", f"{name}={value}"]
            options += ["--network", self.container_network, "--workdir", str(paths["workspace"])]
            proc = self.engine.run(
                image,
                *command[1:],
                volumes={
                    state.workspace: str(paths["workspace"]),
                    state.home: str(paths["home"]),
                    state.temp: str(paths["temp"]),
                },
                entrypoint=command[0],
                options=options,
                timeout=self.step_timeout,
            )
        if proc.returncode != 0:
            raise WorkflowError(
                f"{label}: step {_step_name(step)!r} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )

    # -- actions ---------------------------------------------------------------------------

    def _action(
        self,
        step: dict[str, Any],
        context: dict[str, Any],
        state: _JobState,
        exported: dict[str, str],
    ) -> dict[str, str]:
        action = step["uses"].split("@", 1)[0]
        stand_in = ACTIONS.get(action)
        if stand_in is None:
            raise WorkflowError(
                f"the action {step['uses']} has no stand-in in tests/workflow_runner.py; "
                "add one (or the step would go unexecuted)"
            )
        options = {k: v for k, v in interpolate(step.get("with") or {}, context).items()}
        return stand_in(self, options, state, exported)

    def _checkout(
        self, options: dict[str, Any], state: _JobState, exported: dict[str, str]
    ) -> dict[str, str]:
        state.checked_out = True
        return {}

    def _nothing(
        self, options: dict[str, Any], state: _JobState, exported: dict[str, str]
    ) -> dict[str, str]:
        return {}

    def _build_push(
        self, options: dict[str, Any], state: _JobState, exported: dict[str, str]
    ) -> dict[str, str]:
        if not state.checked_out or options.get("context") != ".":
            raise WorkflowError("build-push-action builds the checkout (context: .) only here")
        kind = re.fullmatch(r"infra/Dockerfile\.(\w+)", options.get("file", ""))
        if kind is None or not (self.repository / options["file"]).is_file():
            raise WorkflowError(f"build-push-action: no Dockerfile {options.get('file')!r}")
        tag = self.build_image(kind[1])
        proc = subprocess.run(
            [self.engine.exe, "image", "inspect", "--format", "{{.Id}}", tag],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise WorkflowError(f"cannot inspect {tag}: {proc.stderr.strip()}")
        image_id = proc.stdout.strip().removeprefix("sha256:")
        digest = f"sha256:{image_id}"
        for pushed in str(options.get("tags", "")).split(","):
            repository = pushed.strip().rsplit(":", 1)[0]
            # By id, as GitHub runs it by digest: a later build of the same tag (another
            # checkout's tests) cannot change what this run's jobs run.
            self.images[f"{repository}@{digest}"] = image_id
        return {"digest": digest, "imageid": digest}

    def _upload(
        self, options: dict[str, Any], state: _JobState, exported: dict[str, str]
    ) -> dict[str, str]:
        name = options["name"]
        target = self.artifacts / name
        if target.exists():
            raise WorkflowError(f"upload-artifact: an artifact named {name!r} exists already")
        source = state.workspace / options["path"]
        files = [
            p
            for p in (source.rglob("*") if source.is_dir() else [source])
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(source.parent).parts)
        ]
        if not files:
            if options.get("if-no-files-found", "warn") == "error":
                raise WorkflowError(f"upload-artifact {name!r}: no files at {options['path']}")
            return {}
        root = source if source.is_dir() else source.parent
        for file in files:
            destination = target / file.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination)
        return {"artifact-id": name}

    def _download(
        self, options: dict[str, Any], state: _JobState, exported: dict[str, str]
    ) -> dict[str, str]:
        destination = state.workspace / options.get("path", ".")
        if "name" in options:
            source = self.artifacts / options["name"]
            if not source.is_dir():
                raise WorkflowError(f"download-artifact: no artifact named {options['name']!r}")
            _copy_contents(source, destination)
        else:
            pattern = options.get("pattern", "*")
            names = sorted(
                p.name for p in self.artifacts.iterdir() if fnmatch.fnmatchcase(p.name, pattern)
            )
            if not names:
                raise WorkflowError(f"download-artifact: no artifact matches {pattern!r}")
            merge = options.get("merge-multiple") is True
            for name in names:
                _copy_contents(self.artifacts / name, destination if merge else destination / name)
        _give_to_runner(state.workspace)
        return {"download-path": str(destination)}

    def _aws_credentials(
        self, options: dict[str, Any], state: _JobState, exported: dict[str, str]
    ) -> dict[str, str]:
        region = options.get("aws-region")
        if not options.get("role-to-assume") or not region:
            raise WorkflowError(
                "configure-aws-credentials: role-to-assume and aws-region are empty"
            )
        exported.update(self.aws)
        exported.update({"AWS_REGION": str(region), "AWS_DEFAULT_REGION": str(region)})
        return {"aws-account-id": "123456789012"}


@dataclass
class _JobState:
    workspace: Path
    home: Path
    temp: Path
    checked_out: bool


StandIn = Callable[[WorkflowRun, dict[str, Any], _JobState, dict[str, str]], dict[str, str]]

# The actions this runner stands in for; any other `uses:` fails the run.
ACTIONS: dict[str, StandIn] = {
    "actions/checkout": WorkflowRun._checkout,
    "docker/setup-buildx-action": WorkflowRun._nothing,
    "docker/login-action": WorkflowRun._nothing,
    "docker/build-push-action": WorkflowRun._build_push,
    "actions/upload-artifact": WorkflowRun._upload,
    "actions/download-artifact": WorkflowRun._download,
    "aws-actions/configure-aws-credentials": WorkflowRun._aws_credentials,
}


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _step_name(step: dict[str, Any]) -> str:
    uses = str(step.get("uses", "")).split("@", 1)[0]
    return str(step.get("name") or uses or step.get("run", "").splitlines()[0])


def iter_summaries(run: WorkflowRun) -> Iterator[tuple[str, str]]:
    for job_id, result in run.jobs.items():
        for text in result.summaries:
            yield job_id, text
