"""The README and the docs site: the README stays a front page, the site builds with warnings as errors, and
every code sample in them is run or checked (tests/support/docs_samples.py reads them; docs/layout.md, *The docs*,
says how each kind of block is treated). A sample that cannot run is marked so, and listed with its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from jobs.config import Settings
from jobs.observe.channels import Notice, webhook_body
from tests.support.docs_samples import (
    FENCE,
    MARK,
    PAGES,
    Sample,
    check_command,
    ci_test_command,
    commands,
    refreshq_command,
    samples,
)
from tests.support.helpers import REPO, kill_with_horses, wait_until

SAMPLES = samples()
KINDS = {"sh", "python", "json", "text", "console"}
RUNNER = """import ast, asyncio, sys
code = compile(open(sys.argv[1]).read(), sys.argv[1], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__main__"})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def of(lang: str, *marks: str) -> list[Sample]:
    return [s for s in SAMPLES if s.lang == lang and (not marks or s.mark in marks)]


def ids(found: list[Sample]) -> list[str]:
    return [s.where for s in found]


def test_the_readme_is_a_front_page_with_the_two_set_up_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.split("\n")) < 200
    setup = [s.code for s in SAMPLES if s.page == "README.md" and s.lang == "sh"][:2]
    assert setup[0].endswith("pip install -c constraints.txt -e . && refreshq demo"), setup[0]
    # .ci/run runs the README's test command: the same words, so neither drifts from the other.
    assert setup[1].endswith(f"pip install -c constraints.txt -e '.[dev]' && {ci_test_command()}"), setup[1]
    assert ci_test_command() == "python -m pytest -q -n 4"
    for word in ("refresh", "task", "run", "attempt", "job", "dead letter"):
        assert f"| **{word}** |" in text, f"the glossary has no {word!r}"
    assert "`refreshq:task:<id>`" in text and "need a data migration" in " ".join(text.split())


def test_the_glossary_is_the_same_in_the_readme_and_the_site() -> None:
    def rows(path: Path) -> list[str]:
        return [line for line in path.read_text().split("\n") if line.startswith("| **")]

    assert rows(REPO / "README.md") == rows(REPO / "docs" / "index.md") != []


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert built >= {p.stem for p in (REPO / "docs").glob("*.md")} - {"index"}


def test_every_sample_is_of_a_kind_the_tests_handle() -> None:
    assert len(SAMPLES) >= 15, "the pages were not found or hold few samples"
    for sample in SAMPLES:
        assert sample.lang in KINDS, f"{sample.where}: a block without a known language ({sample.lang!r})"
        if sample.lang == "console" or sample.mark == "not run":
            assert sample.mark == "not run" and sample.value, f"{sample.where}: say why it is not run"
        if sample.lang == "text":
            assert sample.mark == "text", f"{sample.where}: a text block says what it shows (<!-- text: ... -->)"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_mark_sits_on_the_line_before_its_block(page: Path) -> None:
    lines = page.read_text().split("\n")
    for number, line in enumerate(lines[:-1], 1):
        if MARK.match(line):
            assert FENCE.match(lines[number]), f"{page.name}:{number}: a mark the block below it would not get"


def test_samples_that_are_not_run_are_listed_with_their_reason() -> None:
    not_run = [s for s in SAMPLES if s.mark == "not run"]
    assert all(s.value for s in not_run)
    listing = "\n".join(f"  {s.where}: {s.value}" for s in not_run)
    # Shown in pytest's warnings summary on every run: nothing is left out silently.
    warnings.warn(f"{len(not_run)} docs sample(s) not run:\n{listing}", UserWarning, stacklevel=1)


@pytest.mark.parametrize("sample", of("sh"), ids=ids(of("sh")))
def test_shell_samples_name_real_commands_and_options(sample: Sample) -> None:
    found = commands(sample.code)
    assert found, f"{sample.where}: no command"
    for words in found:
        if sample.mark == "run" and words[0] != "refreshq":
            continue  # run with bash by the next test: what it does not run there fails it
        check_command(words)


@pytest.mark.parametrize("sample", of("sh", "run"), ids=ids(of("sh", "run")))
def test_shell_samples_marked_run_succeed_against_the_server(
    sample: Sample, env: dict[str, str], tmp_path: Path
) -> None:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", sample.code], cwd=tmp_path, capture_output=True,
                          text=True, env={**env, "PATH": path}, timeout=120)
    assert done.returncode == 0, f"{sample.where}:\n{done.stdout}\n{done.stderr}"


def _write_modules(page: str, where: Path) -> None:
    for module in [s for s in of("python", "module") if s.page == page]:
        (where / f"{module.value}.py").write_text(module.code + "\n")


def _sample_env(sample: Sample, env: dict[str, str], where: Path) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in sample.value.split()) if sample.mark == "worker" else {}
    return {**env, **extra, "PYTHONPATH": f"{where}:{REPO}"}


def _run_python(sample: Sample, env: dict[str, str], where: Path) -> subprocess.CompletedProcess[str]:
    script = where / "sample.py"
    script.write_text(sample.code + "\n")
    return subprocess.run([sys.executable, "-c", RUNNER, str(script)], cwd=where, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.parametrize("sample", of("python"), ids=ids(of("python")))
def test_python_samples_run(sample: Sample, env: dict[str, str], tmp_path: Path) -> None:
    _write_modules(sample.page, tmp_path)
    sample_env = _sample_env(sample, env, tmp_path)
    worker = None
    if sample.mark == "worker":
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen([str(Path(sys.executable).parent / "refreshq"), "worker"], env=sample_env,
                                      cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: "Listening on" in log.read_text(errors="replace"), 60, what="the worker to listen")
    try:
        done = _run_python(sample, sample_env, tmp_path)
    finally:
        if worker is not None:
            kill_with_horses(worker)
    assert done.returncode == 0, f"{sample.where}:\n{done.stdout}\n{done.stderr}"
    for expected in re.findall(r"^print\(.*\)\s+#\s*(.+)$", sample.code, re.MULTILINE):
        assert expected.strip() in done.stdout, f"{sample.where}: printed {done.stdout!r}, not {expected!r}"


@pytest.mark.parametrize("sample", of("json"), ids=ids(of("json")))
def test_json_samples_are_what_the_code_sends(sample: Sample) -> None:
    body = json.loads(sample.code)
    if "webhook" in sample.value:
        assert json.loads(webhook_body(Notice("n1", body["alerts"]))) == body


@pytest.mark.parametrize("sample", of("text"), ids=ids(of("text")))
def test_text_samples_match_what_they_show(sample: Sample) -> None:
    if sample.value.startswith("Procfile"):
        shown = [" ".join(line.split("#")[0].split()) for line in sample.code.split("\n") if line.strip()]
        assert shown == [" ".join(line.split()) for line in (REPO / "Procfile").read_text().split("\n") if line]
    else:
        assert sample.value.startswith("layout"), sample.value
        named = [line.split()[0] for line in sample.code.split("\n") if line and not line[0].isspace()]
        assert len(named) > 10
        for path in named:
            assert (REPO / path).exists(), f"{sample.where}: the layout names {path}, which does not exist"


def _table_commands(page: Path) -> list[str]:
    cells = re.findall(r"^\| `(refreshq [^`]*)` \|", page.read_text(), re.MULTILINE)
    return [cell.replace("\\|", "|") for cell in cells]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_command_tables_name_real_commands_and_options(page: Path) -> None:
    for cell in _table_commands(page):
        words = cell.split()[1:]
        ends = next((i for i, word in enumerate(words) if not re.fullmatch(r"[a-z][a-z|-]*", word)), len(words))
        for path in _choices(words[:ends]):
            command, taken, rest = refreshq_command(path)
            assert not rest, f"{page.name}: `{cell}`: no command {' '.join([*taken, rest[0]])}"
            options = {o for param in command.params for o in param.opts + param.secondary_opts}
            for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", cell):
                assert option in options, f"{page.name}: `{cell}`: {' '.join(taken)} has no {option}"


def _choices(path: list[str]) -> list[list[str]]:
    """`workers suspend|resume` -> `workers suspend` and `workers resume`."""
    found: list[list[str]] = [[]]
    for word in path:
        found = [[*prefix, part] for prefix in found for part in word.split("|")]
    return found


def _configuration_rows() -> dict[str, str]:
    """Each variable of the configuration table (`REFRESHQ_RETRY_BASE` / `_FACTOR`: both) -> its setting cell."""
    found: dict[str, str] = {}
    for line in (REPO / "docs" / "configuration.md").read_text().split("\n"):
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        names = re.findall(r"`([A-Z_]+)`", cells[0]) if line.startswith("| `") and len(cells) == 4 else []
        for name in names:
            full = name if not name.startswith("_") else names[0].rsplit("_", 1)[0] + name
            found[full] = cells[1]
    return found


def test_the_configuration_page_names_every_variable_and_where_it_lands() -> None:
    rows = _configuration_rows()
    for name, path, _ in Settings.variables():
        assert name in rows, f"docs/configuration.md has no row for {name}"
        group, leaf = path.rsplit(".", 1)
        assert f"`{path}`" in rows[name] or (f"`{group}." in rows[name] and f"`{leaf}`" in rows[name]), \
            f"{name}: the page says {rows[name]}, the settings {path}"
    assert set(rows) == {name for name, _, _ in Settings.variables()}
