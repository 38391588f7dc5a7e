"""The code samples of README.md and docs/*.md, and the checks that a shell sample's commands are real.

A sample is a fenced block; the HTML comment on the line just before it (`<!-- run -->`,
`<!-- not run: why -->`, `<!-- module: NAME -->`, `<!-- worker: VAR=VALUE ... -->`, `<!-- json: what -->`,
`<!-- text: what -->`) says how tests/processes/test_docs.py runs it (docs/layout.md, *The docs*, describes them).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from tests.support.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*(?P<key>[a-z ]+?)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")


@dataclass(frozen=True)
class Sample:
    """One fenced block: where it is, its language, its text (dedented) and the mark before it."""

    page: str
    line: int
    lang: str
    code: str
    mark: str = ""
    value: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def samples(pages: list[Path] = PAGES) -> list[Sample]:
    return [sample for page in pages for sample in _page_samples(page)]


def _page_samples(page: Path) -> Iterator[Sample]:
    lines = page.read_text().split("\n")
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, body = len(opening["indent"]), []
        j = i + 1
        while not lines[j].strip().startswith("```"):
            body.append(lines[j][indent:])
            j += 1
        mark = MARK.match(lines[i - 1]) if i > 0 else None
        yield Sample(str(page.relative_to(REPO)), i + 1, opening["lang"], "\n".join(body),
                     mark["key"] if mark else "", (mark["value"] or "") if mark else "")
        i = j + 1


def commands(code: str) -> list[list[str]]:
    """The simple commands of a shell sample: continuation lines joined, comments dropped, split at `&&`,
    `||`, `|` and `;`, and every `$(...)` a command of its own."""
    found: list[list[str]] = []
    for line in code.replace("\\\n", " ").split("\n"):
        for inner in SUBSTITUTION.findall(line):
            found.extend(commands(inner))
        lexer = shlex.shlex(SUBSTITUTION.sub("X", line), posix=True, punctuation_chars="|&;")
        lexer.whitespace_split, lexer.commenters = True, "#"
        current: list[str] = []
        for token in lexer:
            if token in {"&&", "||", "|", ";"}:
                found.append(current)
                current = []
            else:
                current.append(token)
        found.append(current)
    return [words for words in found if words and not re.fullmatch(r"[A-Z_]+=\S*", " ".join(words))]


def refreshq_command(words: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """The click command a `refreshq ...` path names, the path taken and the arguments left."""
    from cli import cli

    command: click.Command = cli
    path, rest = ["refreshq"], list(words)
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return command, path, rest


def check_refreshq(words: list[str]) -> None:
    """The command path exists and its parser takes the sample's options and arguments."""
    command, path, rest = refreshq_command(words)
    try:
        command.make_context(" ".join(path), list(rest), resilient_parsing=False)
    except click.ClickException as exc:
        raise AssertionError(f"`refreshq {' '.join(words)}`: {exc.format_message()}") from None


def check_bench(words: list[str]) -> None:
    """The bench's own parser takes the options (and refuses an unknown scenario in `--only`)."""
    from bench.__main__ import _parse

    try:
        _parse(words)
    except SystemExit:
        raise AssertionError(f"`python -m bench {' '.join(words)}` is refused by its parser") from None


def check_install(words: list[str]) -> None:
    """`pip install -c constraints.txt -e SPEC`: through the lock, of refreshq or its dev extra."""
    assert words[:3] == ["pip", "install", "-c"] and words[3] == "constraints.txt", words
    assert (REPO / "constraints.txt").is_file()
    assert words[4:] in (["-e", "."], ["-e", ".[dev]"]), f"an install the lock does not cover: {words}"
    if words[-1] == ".[dev]":
        assert "dev = [" in (REPO / "pyproject.toml").read_text()


def ci_test_command() -> str:
    """The test command .ci/run runs (the line after its comment naming the README's)."""
    lines = (REPO / ".ci" / "run").read_text().split("\n")
    return lines[lines.index("# The README's test command:") + 1].strip()


def check_command(words: list[str]) -> None:
    """One command of a shell sample, checked without running it; anything else must be marked not run."""
    if words[0] == "refreshq":
        check_refreshq(words[1:])
    elif words[:3] == ["python", "-m", "bench"]:
        check_bench(words[3:])
    elif words[:3] == ["python", "-m", "pytest"]:
        assert " ".join(words) == ci_test_command(), f"{words}: not the test command .ci/run runs"
    elif words[0] == "pip":
        check_install(words)
    elif words not in (["python3", "-m", "venv", ".venv"], [".", ".venv/bin/activate"]):
        raise AssertionError(f"`{' '.join(words)}`: no check for it; put it in a `console` block after "
                             "`<!-- not run: why -->`")
