"""The documentation against the code: every `budgetnet` command line that README.md and docs/*.md show names a
subcommand and options that the CLI's parser has, the README's command table lists every subcommand, and the
files, make targets, links and modules the pages name exist.

Command lines are read from inline code and from shell code blocks (no language, bash, sh, shell, console); a word
after `budgetnet` in capitals (`budgetnet SUBCOMMAND`) is a placeholder and is not checked."""
import argparse
import re
import shlex
from pathlib import Path

import pytest

from budgetnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
COMMAND = re.compile(r"(?<![\w.-])budgetnet\s+-{0,2}[a-z]")  # `budgetnet train`, `budgetnet --version`
SEPARATORS = set(";&|()<>")


def parsers() -> dict[str, dict[str, argparse.Action]]:
    """Each parser build_parser() makes, by prog ('budgetnet', 'budgetnet train', ...), with its actions by option
    string, recorded through the actions that argparse's add_argument returns."""
    found: dict[str, dict[str, argparse.Action]] = {}
    add_argument = argparse.ArgumentParser.add_argument
    groups = {name: getattr(argparse.ArgumentParser, name)
              for name in ("add_argument_group", "add_mutually_exclusive_group")}

    def record(prog: str, action: argparse.Action) -> argparse.Action:
        found.setdefault(prog, {}).update({s: action for s in action.option_strings})
        return action

    def recording(self, *args, **kwargs):
        return record(self.prog, add_argument(self, *args, **kwargs))

    def recording_group(name):  # a group's options belong to the parser that made the group
        def make(self, *args, **kwargs):
            group, parser = groups[name](self, *args, **kwargs), self
            add = group.add_argument
            group.add_argument = lambda *a, **k: record(parser.prog, add(*a, **k))
            return group
        return make

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "add_argument", recording)
        for name in groups:
            patch.setattr(argparse.ArgumentParser, name, recording_group(name))
        build_parser()
    return found


PARSERS = parsers()
SUBCOMMANDS = {prog.split(" ", 1)[1] for prog in PARSERS if " " in prog}


def snippets(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of every inline code span (which may wrap onto the next line of its paragraph) and every
    line of a shell code block of `page` (a line ending in a backslash joined with the next)."""
    found, fence, pending, paragraph = [], None, "", []

    def spans() -> None:
        text = "\n".join(line for _, line in paragraph)
        for span in re.finditer(r"`([^`]+)`", text):
            found.append((paragraph[0][0] + text.count("\n", 0, span.start()), span[1].replace("\n", " ")))
        paragraph.clear()

    for number, line in enumerate(page.read_text().splitlines(), 1):
        if fence is None and not line.startswith("```"):
            paragraph.append((number, line))
            if not line.strip() or line.startswith(("#", "|")):  # a blank line, a heading or a table row ends it
                spans()
            continue
        spans()
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
        elif fence in SHELL_BLOCKS:
            if line.endswith("\\"):
                pending += line[:-1] + " "
            else:
                found.append((number, pending + line))
                pending = ""
    spans()
    return found


def commands(page: Path) -> list[tuple[str, list[str]]]:
    """('page:line', [subcommand, arguments...]) of every `budgetnet ...` command line shown in `page`; a line that
    does not split as a shell line is (where, ['(unsplittable)', the line])."""
    found = []
    for number, text in snippets(page):
        if not COMMAND.search(text):
            continue
        where = f"{page.relative_to(ROOT)}:{number}"
        lexer = shlex.shlex(text, posix=True, punctuation_chars="".join(SEPARATORS))
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:
            found.append((where, ["(unsplittable)", text]))
            continue
        for i, token in enumerate(tokens):
            if token == "budgetnet" or token.endswith("/budgetnet"):
                rest = tokens[i + 1:]
                end = next((j for j, t in enumerate(rest) if set(t) <= SEPARATORS), len(rest))
                if rest[:end] and re.fullmatch(r"-{0,2}[a-z][\w-]*", rest[0]):
                    found.append((where, rest[:end]))
    return found


ALL_COMMANDS = [c for page in PAGES for c in commands(page)]


def problems(argv: list[str]) -> list[str]:
    """What in `argv` (subcommand first, as the docs show it) the parser does not know."""
    prog = "budgetnet" if argv[0].startswith("-") else f"budgetnet {argv[0]}"
    if prog not in PARSERS:
        return [f"no subcommand {argv[0]!r} (there are: {', '.join(sorted(SUBCOMMANDS))})"]
    options, found = PARSERS[prog], []
    for i, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        name, _, value = token.partition("=")
        if name not in options:
            found.append(f"{prog} has no option {name}")
            continue
        action = options[name]
        value = value or (argv[i + 1] if "=" not in token and action.nargs != 0 and i + 1 < len(argv) else "")
        literal = value and not value.startswith("-") and value == value.lower() and "..." not in value
        if literal and action.choices and all(isinstance(c, str) for c in action.choices) \
                and value not in action.choices:
            found.append(f"{prog} {name}: {value!r} is not one of {', '.join(action.choices)}")
    return found


def test_the_pages_show_budgetnet_commands():
    """The extraction finds what it must: the README's quick start and the docs' command blocks."""
    shown = {argv[0] for _, argv in ALL_COMMANDS}
    assert {"train", "eval", "params", "search", "study", "export", "predict"} <= shown
    assert len(ALL_COMMANDS) > 40


@pytest.mark.parametrize("where, argv", ALL_COMMANDS, ids=[f"{w} {' '.join(a)}"[:90] for w, a in ALL_COMMANDS])
def test_documented_command_exists(where, argv):
    assert not problems(argv), f"{where}: budgetnet {' '.join(argv)}: {'; '.join(problems(argv))}"


def test_problems_names_a_renamed_option_and_a_wrong_choice():
    assert problems(["train", "--recipe", "seed", "--out", "runs/x"]) == []
    assert problems(["train", "--recipes", "seed"]) == ["budgetnet train has no option --recipes"]
    assert problems(["export", "RUN", "--format", "tflite"]) \
        == ["budgetnet export --format: 'tflite' is not one of onnx, pt2, standalone"]
    assert problems(["export", "RUN", "--format", "FORMAT"]) == []  # a placeholder
    assert problems(["trian"])[0].startswith("no subcommand 'trian'")
    assert problems(["--version"]) == []


def test_readme_command_table_lists_every_subcommand():
    section = (ROOT / "README.md").read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `budgetnet ([\w-]+)` \|", section, re.M))
    assert listed == SUBCOMMANDS, f"missing: {SUBCOMMANDS - listed}, not commands: {listed - SUBCOMMANDS}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens and underscores dropped, spaces hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # headings in code blocks are not
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_paths_and_make_targets_exist(page):
    text, wrong = page.read_text(), []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and other URLs
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            wrong.append(f"link to {target}: no {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            wrong.append(f"link to {target}: no heading #{anchor} in {file.name}")
    for path in re.findall(r"(?<![\w./~-])((?:src|tests|benchmarks|docs|\.ci)/[\w./-]*[\w/])", text):
        if not (ROOT / path).exists():
            wrong.append(f"names {path}, which does not exist")
    rules = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for _, code in snippets(page):
        wrong += [f"make {t}: no such Makefile target" for t in re.findall(r"\bmake ([a-z][\w-]*)", code)
                  if t not in rules]
    assert not wrong, f"{page.relative_to(ROOT)}: " + "; ".join(wrong)


def test_layout_table_names_existing_modules():
    """Each row of docs/development.md's Layout table names files or folders under src/budgetnet (a bare file name
    sits beside the row's first one)."""
    section = (ROOT / "docs" / "development.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    package, rows = ROOT / "src" / "budgetnet", re.findall(r"^\| (`[^|]+)\|", section, re.M)
    assert len(rows) > 30
    for row in rows:
        names = re.findall(r"`([^`]+)`", row)
        beside = package / Path(names[0]).parent
        missing = [n for n in names if not (package / n).exists() and not (beside / n).exists()]
        assert not missing, f"Layout table row {row.strip()}: no {missing} under src/budgetnet"
