"""The README and the pages under docs/: what they link, run and name must exist.

Three checks over ``README.md`` and ``docs/*.md``, none of which runs anything heavy:

- every relative link (``[text](target)`` and images) resolves to a file or folder of the
  repository, and its ``#anchor``, if any, is a heading of the target page (GitHub's slugs);
- every ``nas ...`` command in a fenced shell block parses with the real argument parser
  (:func:`nas.cli.build_parser`; parsed, never run): continuation lines are joined, comments,
  redirections and the commands around it (``pip install ... &&``, ``ray job submit ... --``) are
  left out. No command is skipped: the pages use example values, not placeholders. Paths that
  only exist after a run (``runs/quick/best.yaml``) or on a user's machine (``/data/cifar10``)
  are not checked while parsing, except paths into the repository (``configs/quick.yaml``);
- every repository path named in backticks or in a code block (``configs/quick.yaml``,
  ``bench/end_to_end.py``, ``tests/nas/train/test_distributed*.py``) exists, and every file a
  "Where things are" table names in a package's row exists in that package.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from nas.cli import build_parser
from nas.cli.paths import PathArgument
from tests import REPO

#: The pages checked: the README and every page under docs/.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: A path into the repository: one of its top-level folders (or files), then anything path-like.
_REPO_PATH = re.compile(
    r"(?:\.ci|bench|configs|deploy|docs|nas|results|scaling|searchspace|tests)/[\w.*/-]*"
    r"|README\.md|pyproject\.toml"
)
_FENCE = re.compile(r"^(`{3,})(\w*)\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SHELL = {"sh", "bash", "shell", "console", ""}
_OPERATORS = {"&&", "||", ";", "|", "&"}
_REDIRECTIONS = {">", ">>", "<", "2>"}


def _split(text: str) -> tuple[list[tuple[int, str]], list[tuple[str, int, list[str]]]]:
    """A page's prose lines (number, text) and its fenced blocks (language, first line, lines)."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if block is None and fence:
            block = (fence.group(1), fence.group(2), number + 1, [])
        elif block is not None and line.strip() == block[0]:
            blocks.append((block[1], block[2], block[3]))
            block = None
        elif block is not None:
            block[3].append(line)
        else:
            prose.append((number, line))
    assert block is None, f"a code block opened at line {block[2] - 1} is never closed"
    return prose, blocks


def _without_code_spans(line: str) -> str:
    return re.sub(r"`[^`]*`", "", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces
    as hyphens (``Searching: `nas search` `` -> ``searching-nas-search``)."""
    text = _LINK.sub(r"\1", heading).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, repeated headings numbered as GitHub numbers them."""
    prose, _ = _split(page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose:
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _links() -> list[tuple[str, str]]:
    """(page:line, target) for every relative link of every page."""
    links = []
    for page in PAGES:
        prose, _ = _split(page.read_text())
        for number, line in prose:
            for match in _LINK.finditer(_without_code_spans(line)):
                target = match.group(2)
                if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    links.append((f"{page.relative_to(REPO)}:{number}", target))
    return links


def _commands() -> list[tuple[str, list[str]]]:
    """(page:line, argv after ``nas``) for every ``nas`` command in a fenced shell block."""
    commands = []
    for page in PAGES:
        _, blocks = _split(page.read_text())
        for language, first, lines in blocks:
            if language not in _SHELL:
                continue
            joined, start = "", None
            for offset, line in enumerate(lines):
                start = first + offset if start is None else start
                if line.rstrip().endswith("\\"):
                    joined += line.rstrip()[:-1] + " "
                    continue
                for argv in _nas_commands(joined + line):
                    commands.append((f"{page.relative_to(REPO)}:{start}", argv))
                joined, start = "", None
    return commands


def _nas_commands(line: str) -> list[list[str]]:
    """The ``nas`` commands of one shell line, each as the words after ``nas``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    skip_next = False
    for word in lexer:
        if skip_next:
            skip_next = False
        elif word in _OPERATORS:
            segments.append([])
        elif word in _REDIRECTIONS:
            skip_next = True
        else:
            segments[-1].append(word)
    found = []
    for words in segments:
        if words[:1] == ["nas"]:
            found.append(words[1:])
        elif "--" in words and words[words.index("--") + 1 : words.index("--") + 2] == ["nas"]:
            found.append(words[words.index("--") + 2 :])  # ray job submit ... -- nas ...
    return found


def _repo_paths() -> list[tuple[str, str]]:
    """(page:line, path) for every repository path in backticks or in a code block."""
    paths = []
    for page in PAGES:
        text = page.read_text()
        prose, blocks = _split(text)
        where = str(page.relative_to(REPO))
        # Code spans may wrap across lines: take them from the prose joined, then find the line.
        joined = "\n".join(line for _, line in prose)
        for span in re.finditer(r"`([^`]+)`", joined):
            number = prose[joined.count("\n", 0, span.start())][0]
            paths += [(f"{where}:{number}", p) for p in _paths_in(span.group(1))]
        for _, first, lines in blocks:
            for offset, line in enumerate(lines):
                paths += [(f"{where}:{first + offset}", p) for p in _paths_in(line)]
    return paths


def _paths_in(text: str) -> list[str]:
    words = re.split(r"[\s\"'(),;:=]+", text)
    return [w.rstrip(".") for w in words if _REPO_PATH.fullmatch(w.rstrip("."))]


def _package_rows() -> list[tuple[str, str, str]]:
    """(README:line, package folder, name) for the files a "Where things are" row names."""
    rows = []
    lines = (REPO / "README.md").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        match = re.match(r"\|\s*`([\w/]+/)`\s*\|(.*)", line)
        if not match:
            continue
        for name in re.findall(r"`([\w/]+\.py|[\w]+/)`", match.group(2)):
            rows.append((f"README.md:{number}", match.group(1), name))
    return rows


def _exists(path: str) -> bool:
    return any(REPO.glob(path)) if "*" in path else (REPO / path).exists()


def test_the_checks_find_what_the_pages_hold():
    """Each check sees the pages' links, commands and paths (a parser gone blind would pass)."""
    counts = {
        "pages": len(PAGES),
        "links": len(_links()),
        "commands": len(_commands()),
        "paths": len(_repo_paths()),
        "package files": len(_package_rows()),
    }
    print(counts)
    assert counts["pages"] >= 12 and all(count >= 30 for count in list(counts.values())[1:])


def test_every_relative_link_resolves():
    broken = []
    for where, target in _links():
        page = REPO / where.split(":")[0]
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        outside = REPO not in resolved.parents and resolved != REPO
        if outside or not resolved.exists():
            broken.append(f"{where}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where}: {target}: no heading #{anchor} in {resolved.name}")
    assert broken == []


def _only_repository_paths(self: PathArgument, text: str) -> str:
    """A :class:`PathArgument` that checks only paths into the repository, which must exist."""
    path = self.path_of(text)
    in_repository = path is not None and self.role == "input" and _REPO_PATH.fullmatch(path)
    if in_repository and not (REPO / path).exists():
        raise ValueError(f"{path} is not in the repository")
    return text


def test_every_nas_command_parses(monkeypatch):
    monkeypatch.setattr(PathArgument, "__call__", _only_repository_paths)
    parser = build_parser()
    refused = []
    for where, argv in _commands():
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit:
            refused.append(f"{where}: nas {shlex.join(argv)}: {errors.getvalue().strip()}")
    assert refused == []


def test_every_repository_path_exists():
    missing = [f"{where}: {path}" for where, path in _repo_paths() if not _exists(path)]
    missing += [
        f"{where}: {name} in {package}"
        for where, package, name in _package_rows()
        if not (REPO / package / name).exists()
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Searching: `nas search`", "searching-nas-search"),
        (
            "On several workers or a cluster: `nas train --workers N`",
            "on-several-workers-or-a-cluster-nas-train---workers-n",
        ),
        (
            "Does the search find better nets? `bench/search_quality.py`",
            "does-the-search-find-better-nets-benchsearch_qualitypy",
        ),
        ("Cluttered MNIST's defaults", "cluttered-mnists-defaults"),
    ],
)
def test_slugs_are_githubs(heading, anchor):
    assert slug(heading) == anchor


def test_ci_runs_the_readmes_test_command():
    """CI (.ci/run) installs the dev extra and runs exactly the test command the README's quick
    start shows, so that the figure a reader gets is the one CI measures."""
    readme = (REPO / "README.md").read_text()
    [quick] = re.findall(r'^pip install -e "\.\[dev\]" && (python -m pytest[^\n]*)$', readme, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[dev]"' in ci
    assert [line for line in ci.splitlines() if line.startswith("python -m pytest")] == [quick]
