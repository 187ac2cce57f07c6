"""Every code block in README.md runs, and the Quickstart holds exactly two commands."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from actorsource.testing import ActorKit

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_quickstart_has_exactly_two_commands_demo_then_tests() -> None:
    quickstart = README.read_text().split("## Quickstart", 1)[1]
    block = re.search(r"^```sh\n(.*?)^```", quickstart, flags=re.S | re.M)
    assert block is not None
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("actorsource demo")
    assert lines[1].endswith("pytest")


async def test_the_tour_defines_an_actor_and_its_test_passes(actor_kit: ActorKit) -> None:
    definition, test = _blocks("python")[:2]
    module = types.ModuleType("readme_tour")
    sys.modules[module.__name__] = module
    try:
        exec(compile(definition + "\n" + test, str(README), "exec"), module.__dict__)
        await module.test_a_crash_after_commit_loses_nothing(actor_kit)
    finally:
        del sys.modules[module.__name__]


def test_the_excerpts_of_the_examples_are_their_current_code() -> None:
    root = README.parent
    sources = [p.read_text() for p in [*root.glob("examples/**/*.py"), *root.glob("tests/*.py")]]
    # Compared without whitespace: the excerpts are dedented and formatted on their own.
    flat = ["".join(source.split()) for source in sources]
    for excerpt in _blocks("python")[2:]:
        assert any("".join(excerpt.split()) in source for source in flat), excerpt


def test_the_operating_section_lists_every_command() -> None:
    import click

    from actorsource.cli import main

    operating = README.read_text().split("## Operating", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in operating.splitlines() if line.startswith("| `actorsource ")]
    for name, command in main.commands.items():
        subcommands = command.commands if isinstance(command, click.Group) else {}
        if not subcommands:
            assert any(f"`actorsource {name}" in line for line in lines), name
        for sub in subcommands:
            assert any(
                line.startswith(f"| `actorsource {name} ") and sub in line for line in lines
            ), f"{name} {sub}"
