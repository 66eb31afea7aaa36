"""The README and the docs site (docs/) stay true: every example is parsed or run here.

- The generated pages (docs/reference/cli.md, tables.md) are what tests/docs_gen.py writes now.
- Every `python -m job ...` / `movielens-job ...` line of a shell block, and every inline
  `python -m job ...` span, parses against the real parser; every `make TARGET` names a target
  of the Makefile (and `make run ARGS="..."` parses as `run`'s flags).
- Every SQL block runs against the database of a run made the way the docs say (`make run`:
  the default preset on the shipped ml-latest-small). Where a ```text block follows it, that
  is its output, compared (numbers to their printed precision, within a small tolerance for
  another machine's floating point). The same for `recommend`'s documented output.
- The site's SQL examples are the querying guide's, word for word.

After a change of the model or the ranking, `UPDATE_GOLDEN=1` rewrites the documented outputs
from the run (review the diff); `UPDATE_DOCS=1` rewrites the generated pages.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import docs_gen
import duckdb
import pytest
from bench.__main__ import build_parser as bench_parser

from job.core.tables import CATALOG
from job.site import sql as site_sql

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
QUERYING = DOCS / "guides" / "querying.md"
SHELLS = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
UPDATE_GOLDEN = bool(os.environ.get("UPDATE_GOLDEN"))
# Commands whose documented output the tests run and compare (fast, read-only on a run).
RUNNABLE = {"recommend"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    start: int  # character offsets of the body in the page
    end: int

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        found.append(
            Block(
                page,
                text.count("\n", 0, match.start()) + 1,
                match["lang"],
                body,
                match.start("body"),
                match.end("body"),
            )
        )
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]


def output_of(block: Block) -> Block | None:
    """The ```text block right after ``block`` (nothing but blank lines between): its output."""
    following = [b for b in ALL_BLOCKS if b.page == block.page and b.start > block.end]
    if not following:
        return None
    text = block.page.read_text(encoding="utf-8")
    nxt = min(following, key=lambda b: b.start)
    between = text[block.end : nxt.start]
    if nxt.lang == "text" and re.fullmatch(r"```[ \t]*\n(?:[ \t]*\n)*[ \t]*```text[^\n]*\n", between):
        return nxt
    return None


# ---------------------------------------------------------------------------------------
# Shell lines: commands and flags that exist


def _logical_lines(body: str) -> list[str]:
    return body.replace("\\\n", " ").splitlines()


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    for word in lexer:
        if word in {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "(", ")"}:
            break
        words.append(word)
    return words


JOB_CALL = re.compile(r"(?:python3? -m job|movielens-job)\s(?P<args>.*)")
BENCH_CALL = re.compile(r"python3? -m bench\s(?P<args>.*)")
MAKE_CALL = re.compile(r"(?:^|&&|;|\s)make\s+(?P<args>[^&;|#]*)")


def shell_calls() -> list[tuple[str, str, list[str]]]:
    """(where, kind, words): kind is "job" (the CLI's arguments) or "make" (make's)."""
    calls = []
    for block in ALL_BLOCKS:
        if block.lang not in SHELLS:
            continue
        for offset, line in enumerate(_logical_lines(block.body)):
            line = line.removeprefix("$ ")
            where = f"{block.where}+{offset + 1}"
            for match in JOB_CALL.finditer(line):
                calls.append((where, "job", _words(match["args"])))
            for match in BENCH_CALL.finditer(line):
                calls.append((where, "bench", _words(match["args"])))
            if not line.lstrip().startswith("#"):
                for match in MAKE_CALL.finditer(line.split(" #", 1)[0]):
                    calls.append((where, "make", _words(match["args"])))
    for page in PAGES:
        if page in docs_gen.PAGES:  # generated from the parser itself
            continue
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for match in re.finditer(r"`(?:python3? -m job|movielens-job) ([^`]*)`", text):
            calls.append((f"{page.relative_to(ROOT)} (inline)", "job", _words(match[1])))
        for match in re.finditer(r"`python3? -m bench ([^`]*)`", text):
            calls.append((f"{page.relative_to(ROOT)} (inline)", "bench", _words(match[1])))
    return calls


SHELL_CALLS = shell_calls()


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w.-]+):(?!=)", text, re.M))


def parse_job(words: list[str], kind: str = "job") -> str | None:
    """None when the job's parser (or the development tools', ``kind="bench"``) accepts
    ``words``, else argparse's complaint."""
    err = io.StringIO()
    parser = docs_gen.parser() if kind == "job" else bench_parser()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(words)
        except SystemExit as exit:
            return None if exit.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def test_the_docs_show_commands() -> None:
    """A guard for the checks below: the pages were found and hold commands."""
    assert sum(kind in {"job", "bench"} for _, kind, _ in SHELL_CALLS) >= 30
    assert sum(kind == "make" for _, kind, _ in SHELL_CALLS) >= 5


@pytest.mark.parametrize(
    "where,kind,words",
    [call for call in SHELL_CALLS if call[1] in {"job", "bench"}],
    ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40],
)
def test_each_documented_command_parses(where: str, kind: str, words: list[str]) -> None:
    assert words, f"{where}: a {kind} call without a command"
    if len(words) == 1 and "inline" in where:  # prose naming a command: it exists
        parser = docs_gen.parser() if kind == "job" else bench_parser()
        assert words[0] in docs_gen.subcommands(parser), f"{where}: no {words[0]}"
        return
    error = parse_job(words, kind)
    assert error is None, f"{where}: `python -m {kind} {shlex.join(words)}`: {error}"


@pytest.mark.parametrize(
    "where,words",
    [(w, words) for w, kind, words in SHELL_CALLS if kind == "make"],
    ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40],
)
def test_each_documented_make_call_names_a_target(where: str, words: list[str]) -> None:
    targets = [w for w in words if "=" not in w and not w.startswith("-")]
    variables = dict(w.split("=", 1) for w in words if "=" in w)
    assert targets, f"{where}: `make {' '.join(words)}` names no target"
    for target in targets:
        assert target in makefile_targets(), f"{where}: the Makefile has no target {target!r}"
    if targets == ["run"] and "ARGS" in variables:
        error = parse_job(["run", *shlex.split(variables["ARGS"])])
        assert error is None, f"{where}: make run ARGS={variables['ARGS']!r}: {error}"
    if targets == ["bench"] and "ARGS" in variables:
        error = parse_job(shlex.split(variables["ARGS"]), "bench")
        assert error is None, f"{where}: make bench ARGS={variables['ARGS']!r}: {error}"


# ---------------------------------------------------------------------------------------
# Generated pages


def test_generated_pages_are_current() -> None:
    if os.environ.get("UPDATE_DOCS"):
        docs_gen.main([])
    stale = [str(p.relative_to(ROOT)) for p in docs_gen.stale_pages()]
    assert not stale, f"stale: {stale}; run `python -m tests.docs_gen` (or UPDATE_DOCS=1)"


def test_the_cli_reference_has_every_command() -> None:
    text = docs_gen.CLI_PAGE.read_text(encoding="utf-8")
    for name in docs_gen.subcommands(docs_gen.parser()):
        assert f"\n## {name}\n" in text


def test_the_tables_reference_has_every_table() -> None:
    text = docs_gen.TABLES_PAGE.read_text(encoding="utf-8")
    for entry in CATALOG:
        assert f"\n## {entry.name}\n" in text
        for column in entry.columns:
            assert f"| `{column.name}` | `{column.type}` |" in text


# ---------------------------------------------------------------------------------------
# Documented outputs: compared to the real run's, numbers within their printed precision

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _normal(line: str) -> str:
    """A line with its box drawing's lengths and its spacing ignored (they follow the values)."""
    return re.sub(r"─+", "─", " ".join(line.split()))


def _close(expected: str, actual: str) -> bool:
    want, got = float(expected.replace(",", "")), float(actual.replace(",", ""))
    decimals = len(expected.split(".", 1)[1]) if "." in expected else 0
    return abs(want - got) <= max(2 * 10.0**-decimals, 0.02 * abs(want))


def same_output(expected: str, actual: str) -> str | None:
    """None when ``actual`` reads as ``expected``: the same words, in the same places, and
    numbers within two units of their last printed digit or 2%; else the first difference."""
    want, got = expected.strip("\n").splitlines(), actual.strip("\n").splitlines()
    if len(want) != len(got):
        return f"{len(got)} lines, the docs show {len(want)}"
    for a, b in zip(want, got, strict=True):
        a, b = _normal(a), _normal(b)
        if NUMBER.sub("#", a) != NUMBER.sub("#", b):
            return f"docs: {a!r}\n  run: {b!r}"
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
            if not _close(x, y):
                return f"docs: {a!r}\n  run: {b!r} ({x} against {y})"
    return None


def check_or_update(block: Block, output: Block, actual: str) -> None:
    if UPDATE_GOLDEN:
        # Offsets from this session's parse: earlier rewrites may have moved them, so find
        # the same block (by its index on the page) again.
        index = [b.line for b in ALL_BLOCKS if b.page == output.page].index(output.line)
        text = output.page.read_text(encoding="utf-8")
        now = blocks(output.page)[index]
        text = text[: now.start] + actual.strip("\n") + "\n" + text[now.end :]
        output.page.write_text(text, encoding="utf-8")
        return
    difference = same_output(output.body, actual)
    assert difference is None, (
        f"{output.where}: the documented output of {block.where} differs from the run's "
        f"(UPDATE_GOLDEN=1 rewrites it):\n  {difference}"
    )


SQL_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "sql"]


def test_the_docs_show_queries() -> None:
    assert len(SQL_BLOCKS) >= 10
    assert sum(output_of(b) is not None for b in SQL_BLOCKS) >= 8


@pytest.mark.e2e
@pytest.mark.parametrize("block", SQL_BLOCKS, ids=lambda b: b.where)
def test_each_sql_block_runs_on_a_real_run(
    block: Block, shipped_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the run's folder, as the docs say (the Parquet examples name parquet/...)."""
    monkeypatch.chdir(shipped_run)
    with duckdb.connect("recommendations.duckdb", read_only=True) as con:
        try:
            relation = con.sql(block.body)
        except duckdb.Error as exc:
            pytest.fail(f"{block.where}: {type(exc).__name__}: {exc}")
        assert relation is not None, f"{block.where}: not a query"
        actual = str(relation)
    output = output_of(block)
    if output is not None:
        check_or_update(block, output, actual)


def _recommend_blocks() -> list[Block]:
    found = []
    for block in ALL_BLOCKS:
        if block.lang in SHELLS and output_of(block) is not None:
            found.append(block)
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("block", _recommend_blocks(), ids=lambda b: b.where)
def test_each_documented_command_output(
    block: Block, shipped_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shell block followed by its output is one command this test runs on the default run
    (`--out` pointed at it) and compares."""
    from job.cli import main

    lines = [line for line in _logical_lines(block.body) if line.strip()]
    assert len(lines) == 1, f"{block.where}: a command with output shows one command"
    match = JOB_CALL.search(lines[0])
    assert match, f"{block.where}: only `python -m job` commands have checked output"
    words = _words(match["args"])
    assert words[0] in RUNNABLE, f"{block.where}: no way to check {words[0]}'s output here"
    capsys.readouterr()
    assert main(["-q", *words, "--out", str(shipped_run)]) == 0
    output = output_of(block)
    assert output is not None
    check_or_update(block, output, capsys.readouterr().out)


# ---------------------------------------------------------------------------------------
# The site's SQL page


def numbered_queries(page: Path) -> list[tuple[str, str]]:
    """The querying guide's "### N. Title" sections and their first SQL block."""
    text = page.read_text(encoding="utf-8")
    return re.findall(r"^### \d+\. (.+?)\n.*?```sql\n(.*?)\n```", text, re.M | re.S)


def test_the_site_examples_are_the_guides_queries() -> None:
    found = numbered_queries(QUERYING)
    assert [(e.title, e.sql) for e in site_sql.EXAMPLES] == found
    assert len(found) == len(site_sql.EXAMPLES) >= 7


# ---------------------------------------------------------------------------------------
# The README and the site's build


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the docs site has room"


def test_every_page_is_in_the_nav() -> None:
    """mkdocs --strict warns of pages outside the nav only as INFO: checked here."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for item in node for p in pages(item)]
        if isinstance(node, dict):
            return [p for value in node.values() for p in pages(value)]
        return []

    in_nav = {p for p in pages(config["nav"]) if p.endswith(".md")}
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk == in_nav


# ---------------------------------------------------------------------------------------
# The workflow's inputs, as the README and the GitHub Actions page list them


def _inputs_table(page: Path) -> dict[str, tuple[str, str]]:
    """``{input: (choices, default)}`` from the page's table headed `| input | ...`."""
    rows: dict[str, tuple[str, str]] = {}
    lines = page.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| input |"))
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        name, _, choices, default = (cell.strip() for cell in line.strip("|").split("|"))
        rows[name.strip("`")] = (choices, default)
    return rows


def _shown(value: object) -> str:
    if value in (None, ""):
        return "empty"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


@pytest.mark.parametrize("page", ["README.md", "docs/deploy/github-actions.md"])
def test_the_inputs_tables_are_the_workflows_inputs(page: str) -> None:
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "run.yml").read_text())
    inputs = workflow[True]["workflow_dispatch"]["inputs"]  # YAML reads `on:` as True
    table = _inputs_table(ROOT / page)
    assert list(table) == list(inputs), f"{page}: the table's inputs are not run.yml's"
    for name, spec in inputs.items():
        choices, default = table[name]
        assert default == _shown(spec.get("default")), f"{page}: {name}'s default"
        if spec.get("type") == "choice":
            assert choices == ", ".join(f"`{o}`" for o in spec["options"]), f"{page}: {name}"
        if spec.get("type") == "boolean":
            assert choices == "`true`, `false`", f"{page}: {name}"
