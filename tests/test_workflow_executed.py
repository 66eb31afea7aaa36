""".github/workflows/run.yml, executed: every job in `needs` order, every `run:` step as
written inside the CPU image built from infra/, as the runner's uid 1001, both scoring shards,
and the publish job against a moto S3 server on loopback (tests/workflow_runner.py says how
each action is stood in for). Then the published bucket and both job summaries are checked.

Marked `container` and `e2e`: it builds (or reuses) the same localhost/movielens-job:test-cpu
image as test_container.py, and trains the seed preset for one epoch on ml-latest-small.
The first tests check the runner itself, in milliseconds, without an image.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from bench.motoserver import FAKE_CREDENTIALS, moto_server
from containers import Engine, cpu_image_tag, usable_engine
from publish_support import public_read_policy
from workflow_runner import (
    RUNNER_UID,
    WorkflowError,
    WorkflowRun,
    evaluate,
    interpolate,
    read_outputs,
)

ROOT = Path(__file__).resolve().parents[1]
RUN_WORKFLOW = ROOT / ".github" / "workflows" / "run.yml"
BUCKET, PREFIX = "movielens-site", "site"
INPUTS = {
    "dataset": "ml-latest-small",
    "preset": "seed",
    "epochs": "1",
    "runner": "cpu",
    "shards": "2",
    "keep_top": "20",
    "publish": True,
    "warm_start": True,
}
GITHUB = {
    "repository": "Owner/MovieLens-Job",  # mixed case: the image job lower-cases it for GHCR
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "actor": "someone",
    "token": "not-a-token",
    "run_id": 4242,
    "workflow": "Run the job",
    "server_url": "https://github.com",
}


# ---------------------------------------------------------------------------------------------
# The runner itself


CONTEXT = {
    "inputs": {"runner": "cpu", "shards": "2", "epochs": "", "publish": True},
    "vars": {"JOB_BUCKET": "b"},
    "needs": {"train": {"outputs": {"shards": "[0,1]"}}},
}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("inputs.runner == 'gpu' && 'big' || 'ubuntu-24.04'", "ubuntu-24.04"),
        ("inputs.runner == 'CPU' && 'small' || 'other'", "small"),  # strings: any case
        ("vars.JOB_KEEP_RUNS || '10'", "10"),
        ("fromJSON(needs.train.outputs.shards)", [0, 1]),
        ("!inputs.epochs", True),
        ("inputs.publish", True),
        ("inputs.shards == 2", True),  # mixed types compare as numbers
        ("(vars.JOB_BUCKET != 'b') || format('{0}-{1}', 'a', inputs.shards)", "a-2"),
    ],
)
def test_expressions(expression: str, value: Any) -> None:
    assert evaluate(expression, CONTEXT) == value


def test_interpolation_keeps_a_whole_expression_typed_and_strings_joined() -> None:
    assert interpolate("${{ fromJSON(needs.train.outputs.shards) }}", CONTEXT) == [0, 1]
    assert interpolate("s3://${{ vars.JOB_BUCKET }}/${{ vars.MISSING }}x", CONTEXT) == "s3://b/x"


@pytest.mark.parametrize(
    "expression", ["secrets.TOKEN", "hashFiles('x')", "inputs.runner ==", "inputs.runner = 'a'"]
)
def test_expressions_the_runner_does_not_know_fail(expression: str) -> None:
    with pytest.raises(WorkflowError):
        evaluate(expression, CONTEXT)


def test_outputs_files_are_read_as_github_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "output"
    path.write_text("shards=[0,1]\nnotes<<EOF\ntwo\nlines\nEOF\nempty=\n", encoding="utf-8")
    assert read_outputs(path) == {"shards": "[0,1]", "notes": "two\nlines", "empty": ""}


def _tiny_workflow(tmp_path: Path, steps: list[dict[str, Any]]) -> WorkflowRun:
    path = tmp_path / "wf.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "on": {
                    "workflow_dispatch": {"inputs": {"who": {"type": "string", "default": "x"}}}
                },
                "jobs": {"only": {"runs-on": "ubuntu-24.04", "steps": steps}},
            }
        ),
        encoding="utf-8",
    )
    return WorkflowRun(
        workflow_file=path,
        repository=ROOT,
        work=tmp_path / "work",
        engine=Engine("false", podman=False),
        build_image=lambda kind: pytest.fail("no image is built here"),
        inputs={"who": "world"},
        vars={},
        github=GITHUB,
        aws={},
    )


def test_an_action_without_a_stand_in_fails_the_run(tmp_path: Path) -> None:
    run = _tiny_workflow(
        tmp_path,
        [
            {"run": "echo before"},
            {"uses": "actions/cache@0057852bfaa89a56745cba8c7296529d2fc39830"},
            {"run": "echo after"},
        ],
    )
    with pytest.raises(WorkflowError, match=r"actions/cache@.* has no stand-in"):
        run.run()
    assert [s.status for s in run.steps] == ["ran"], "nothing after it ran"


def test_run_steps_see_env_outputs_and_fail_on_a_bad_exit(tmp_path: Path) -> None:
    run = _tiny_workflow(
        tmp_path,
        [
            {
                "id": "first",
                "env": {"WHO": "${{ inputs.who }}"},
                "run": 'echo "greeting=hello $WHO" >> "$GITHUB_OUTPUT"\necho "LATER=1" >> "$GITHUB_ENV"',
            },
            {
                "env": {"GREETING": "${{ steps.first.outputs.greeting }}"},
                "run": 'echo "$GREETING, $LATER" >> "$GITHUB_STEP_SUMMARY"',
            },
            {"if": "inputs.who == 'nobody'", "run": "exit 1"},
            {"run": "false\necho not reached"},
        ],
    )
    with pytest.raises(WorkflowError, match="exited 1"):
        run.run()
    assert [s.status for s in run.steps] == ["ran", "ran", "skipped"]
    temp = tmp_path / "work" / "temp"  # the job failed: its summary is read from the file
    summaries = [f.read_text(encoding="utf-8") for f in temp.rglob("step_summary_*")]
    assert summaries == ["hello world, 1\n"], "the step saw the output and the env of the first"


def test_a_step_on_the_runner_that_uses_sudo_is_refused(tmp_path: Path) -> None:
    run = _tiny_workflow(tmp_path, [{"run": "sudo rm -rf /usr/share/dotnet"}])
    with pytest.raises(WorkflowError, match="runs sudo on this machine"):
        run.run()


# ---------------------------------------------------------------------------------------------
# The workflow


engine = pytest.fixture(scope="module")(usable_engine)


def _image_of(kind: str, engine: Engine, config: pytest.Config) -> str:
    """The image the workflow's `image` job builds: the CPU image (INPUTS run on cpu)."""
    assert kind == "cpu", f"the executed workflow builds the {kind} image"
    return cpu_image_tag(config, engine)


def _s3_text(s3: Any, key: str) -> str:
    return s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read().decode("utf-8")


@pytest.mark.container
@pytest.mark.e2e
def test_the_workflow_runs_and_publishes(
    engine: Engine, tmp_path: Path, pytestconfig: pytest.Config, tiny_run: Path
) -> None:
    duckdb = pytest.importorskip("duckdb")
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, **_credentials())
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_policy(Bucket=BUCKET, Policy=public_read_policy(BUCKET))
        site_url = f"{endpoint}/{BUCKET}/{PREFIX}"  # moto serves the objects over plain HTTP
        # An earlier run of the same preset (seed), as far as a warm start reads it:
        # latest.json and the model files of the run it names. A tiny run, whose users 1-50
        # are ml-latest-small's first 50: those rows are carried over, the rest start fresh.
        previous_id = _put_previous_run(s3, tiny_run)
        run = WorkflowRun(
            workflow_file=RUN_WORKFLOW,
            repository=ROOT,
            work=tmp_path,
            engine=engine,
            build_image=lambda kind: _image_of(kind, engine, pytestconfig),
            inputs=INPUTS,
            vars={
                "JOB_BUCKET": BUCKET,
                "JOB_PREFIX": PREFIX,
                "AWS_REGION": "eu-west-1",
                "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/publish",
                "SITE_URL": site_url + "/",
            },
            github=GITHUB,
            aws={**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL_S3": endpoint},
        )
        run.run()
        for step in run.steps:  # shown with -rP or on a failure: what each step costs
            print(f"{step.job:<16} {step.name:<40} {step.status:<8} {step.seconds:6.1f} s")

        # Every job ran, the score job once per shard; only the GPU steps were skipped.
        assert {job: result.status for job, result in run.jobs.items()} == {
            "image": "success",
            "train": "success",
            "score": "success",
            "site": "success",
            "publish": "success",
        }
        assert run.jobs["train"].outputs == {"shards": "[0,1]"}
        assert len(run.jobs["score"].workspaces) == 2
        skipped = {s.name for s in run.steps if s.status == "skipped"}
        assert skipped == {"Make room for the GPU image", "Build and push the GPU image"}
        ran = [(s.job, s.name) for s in run.steps if s.status == "ran"]
        assert ("score (shard=0)", "Score") in ran and ("score (shard=1)", "Score") in ran
        assert ("train", "Fetch the published model") in ran

        # What the site job made, as the runner's user, from the inputs.
        out = run.jobs["site"].workspaces[0] / "out"
        manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
        run_id = manifest["run_id"]
        assert (out / "run.json").stat().st_uid == RUNNER_UID
        assert manifest["dataset"]["name"] == "ml-latest-small"
        assert manifest["config"]["preset"] == "seed"
        assert manifest["config"]["model"]["epochs"] == 1
        assert manifest["scoring"]["shards"] == 2 and manifest["scoring"]["keep_top"] == 20
        # warm_start: the train job started from the published model, for the users it knew.
        known = set(_user_ids(tiny_run)) & set(_user_ids(out))
        assert manifest["warm_start"]["from_run"] == previous_id
        assert manifest["warm_start"]["known_users"] == len(known) > 0
        assert manifest["warm_start"]["new_users"] == manifest["dataset"]["n_users"] - len(known)
        assert run_id != previous_id

        # The bucket: the entry points name this run, and its database holds every user's top_k.
        latest = json.loads(_s3_text(s3, "latest.json"))
        assert latest["run_id"] == run_id
        assert f"runs/{run_id}/site/index.html" in _s3_text(s3, "index.html")
        run_page = _s3_text(s3, f"runs/{run_id}/site/index.html")
        assert run_id in run_page and "</html>" in run_page
        database = tmp_path / "published.duckdb"
        s3.download_file(BUCKET, f"{PREFIX}/{latest['database']}", str(database))
        with duckdb.connect(str(database), read_only=True) as con:
            users = con.execute("SELECT count(*) FROM users").fetchone()[0]
            per_user = con.execute(
                "SELECT min(n), max(n), count(*) FROM "
                "(SELECT u.user_id, count(t.user_id) AS n FROM users u "
                "LEFT JOIN top_k t USING (user_id) GROUP BY u.user_id)"
            ).fetchone()
            kept = con.execute(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM predictions GROUP BY user_id)"
            ).fetchone()[0]
        assert users == manifest["dataset"]["n_users"] > 0
        assert per_user == (manifest["scoring"]["top_k"], manifest["scoring"]["top_k"], users)
        assert kept == 20, "keep_top reached the score steps"

        # The two job summaries, and the addresses the publish summary gives resolve.
        (site_summary,) = run.jobs["site"].summaries
        assert site_summary.startswith(f"## Run {run_id}\n")
        assert "Dataset `ml-latest-small`" in site_summary and "preset `seed`" in site_summary
        assert "on the cpu runner" in site_summary and "in 2 shard(s)" in site_summary
        model_rows = [r for r in manifest["metrics"]["rows"] if r["rmse"] is not None]
        for row in model_rows:
            assert f"| {row['model']} | {row['rmse']:.4f} | {row['mae']:.4f} |" in site_summary
        (published,) = run.jobs["publish"].summaries
        assert f"- Stored under `s3://{BUCKET}/{PREFIX}/runs/{run_id}/`" in published
        links = dict(line[2:].split(": ", 1) for line in published.splitlines() if ": " in line)
        assert links["This run"] == f"{site_url}/runs/{run_id}/site/index.html"
        # Read as a visitor reads them: anonymously, over http, no proxy between us and loopback.
        anonymous = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with anonymous.open(links["This run"], timeout=30) as page:
            assert run_id in page.read().decode("utf-8")
        assert links["Data"] == f"{site_url}/runs/{run_id}/recommendations.duckdb"
        with anonymous.open(links["Data"], timeout=30) as data:
            assert data.read() == database.read_bytes()


def _put_previous_run(s3: Any, out: Path) -> str:
    run_id = json.loads((out / "run.json").read_text(encoding="utf-8"))["run_id"]
    for name in ("run.json", "model.keras", "encoding.json"):
        s3.upload_file(str(out / name), BUCKET, f"{PREFIX}/runs/{run_id}/{name}")
    latest = json.dumps({"run_id": run_id}).encode("utf-8")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/latest.json", Body=latest)
    return run_id


def _user_ids(out: Path) -> list[int]:
    return json.loads((out / "encoding.json").read_text(encoding="utf-8"))["user_ids"]


def _credentials() -> dict[str, Any]:
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
        "region_name": FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def test_a_job_whose_if_is_false_skips_the_jobs_that_need_it(tmp_path: Path) -> None:
    run = _tiny_workflow(tmp_path, [{"id": "say", "run": 'echo "word=hi" >> "$GITHUB_OUTPUT"'}])
    run.workflow["jobs"]["only"]["outputs"] = {"word": "${{ steps.say.outputs.word }}"}
    run.workflow["jobs"]["publish"] = {
        "needs": "only",
        "if": "inputs.who == 'nobody'",
        "steps": [{"run": "exit 1"}],
    }
    run.workflow["jobs"]["after"] = {"needs": ["publish"], "steps": [{"run": "exit 1"}]}
    run.run()
    assert {job: result.status for job, result in run.jobs.items()} == {
        "only": "success",
        "publish": "skipped",
        "after": "skipped",
    }
    assert run.jobs["only"].outputs == {"word": "hi"}
