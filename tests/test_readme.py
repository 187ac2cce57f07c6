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
    for excerpt in _blocks("python")[2:]:
        assert any(excerpt in source for source in sources), excerpt
