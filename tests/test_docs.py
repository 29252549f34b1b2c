"""The documentation runs: every Python block of README.md and docs/*.md executes, every relative link and image
resolves (anchors included), and every shell command in a bash block names files that exist and parses with the
CLI's own parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sampledsoftmax.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _ids(pages):
    return [str(p.relative_to(ROOT)) for p in pages]


def _blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped (hyphens and underscores kept), spaces → '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_the_pages_are_found():  # guards the walker: a glob that finds nothing passes everything
    names = {p.name for p in PAGES}
    assert {"README.md", "losses.md", "huggingface.md", "results.md", "training.md"} <= names
    assert len(_blocks(ROOT / "README.md", "python")) >= 2


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_python_block_runs(page):
    for code in _blocks(page, "python"):
        exec(compile(code, str(page.relative_to(ROOT)), "exec"), {})


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_relative_link_and_image_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def _commands(page: Path) -> list[str]:
    out = []
    for block in _blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()  # a trailing comment
            if line and not line.startswith("#"):
                out.append(line)
    return out


_ENV = {"$SLURM_ARRAY_TASK_ID": "0", "$SLURM_ARRAY_TASK_COUNT": "4"}


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_shell_command_parses_and_names_files_that_exist(page):
    parser = build_parser()
    checked = 0
    for line in _commands(page):
        for k, v in _ENV.items():
            line = line.replace(k, v)
        argv = shlex.split(line)
        for tok in argv:  # shipped configs, scripts and examples exist (data/ and runs/ are made by commands)
            if re.match(r"(configs|scripts|examples)/", tok):
                assert (ROOT / tok).exists(), f"{page.name}: `{line}` names {tok}, which does not exist"
        if "sampledsoftmax" in argv[0] or (argv[0].endswith("torchrun") and "sampledsoftmax" in argv):
            args = argv[1:] if "sampledsoftmax" in argv[0] else argv[argv.index("sampledsoftmax") + 1:]
            try:
                parser.parse_args(args)
            except SystemExit as e:
                pytest.fail(f"{page.name}: `{line}` does not parse (exit {e.code})")
            checked += 1
    if page.name in ("README.md", "training.md", "sweeps.md", "results.md"):
        assert checked, f"{page.name}: no sampledsoftmax command found: the walker is broken"
