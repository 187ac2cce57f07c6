"""The test kit itself: its probe's counters, and its fixtures in a user's own project.

The projects are run by a pytest subprocess (``runpytest_subprocess``), so the plugin loads
by its entry point as it does for a user, and none of this project's configuration applies.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from actors import Added, Counter

from actorsource.testing import ActorKit

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_a_crash_without_a_crash_point_is_counted(actor_kit: ActorKit) -> None:
    async with actor_kit.start(Counter) as counter:
        await actor_kit.publish("count.a", Added("a", 1))
        await counter.settled()
        await counter.crash()
        assert counter.crashes == 1
        assert counter.starts == 2


# -- the README's example in a user's project -------------------------------------------------


def readme_tour() -> str:
    """The tour's actor and its test, exactly as README.md shows them."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    return blocks[0] + "\n\n" + blocks[1]


def run_user_project(pytester: pytest.Pytester, **files: str) -> pytest.RunResult:
    """Write the README's tour and the user's ``files`` into a fresh project and run it,
    with every warning an error."""
    pytester.makepyfile(test_tour=readme_tour())
    pytester.makepyfile(**{name: textwrap.dedent(source) for name, source in files.items()})
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider", timeout=120)
    assert "Warning" not in result.stderr.str(), result.stderr.str()
    return result


USER_SYNC_TEST = """
    def test_arithmetic():
        assert 1 + 1 == 2
"""


def test_the_readme_example_passes_in_a_project_with_no_pytest_configuration(
    pytester: pytest.Pytester,
) -> None:
    result = run_user_project(
        pytester,
        test_mine=USER_SYNC_TEST
        + """
    import asyncio
    import pytest

    @pytest.mark.asyncio
    async def test_marked():
        await asyncio.sleep(0)
    """,
    )
    result.assert_outcomes(passed=3, warnings=0)


def test_the_readme_example_passes_in_strict_mode_and_the_users_own_tests_run_as_before(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    result = run_user_project(
        pytester,
        test_mine=USER_SYNC_TEST
        + """
    import asyncio
    import pytest
    import pytest_asyncio

    @pytest_asyncio.fixture(scope="session")
    async def session_loop():
        return asyncio.get_running_loop()

    @pytest.mark.asyncio(loop_scope="session")
    async def test_marked_on_the_session_loop(session_loop):
        assert asyncio.get_running_loop() is session_loop

    async def test_unmarked():
        pass
    """,
    )
    # strict mode still leaves an unmarked coroutine test of the user's alone
    result.assert_outcomes(passed=3, failed=1, warnings=0)
    result.stdout.fnmatch_lines(
        ["async def functions are not natively supported.", "FAILED test_mine.py::test_unmarked*"]
    )


def test_the_readme_example_passes_in_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    result = run_user_project(
        pytester,
        test_mine=USER_SYNC_TEST
        + """
    import asyncio

    async def test_unmarked():
        await asyncio.sleep(0)
    """,
    )
    result.assert_outcomes(passed=3, warnings=0)


def test_without_pytest_asyncio_the_plugin_leaves_a_project_alone_and_the_kit_says_what_it_needs(
    pytester: pytest.Pytester,
) -> None:
    # actorsource installed without its [testing] extra: pytest-asyncio cannot be imported
    pytester.makepyfile(
        pytest_asyncio="raise ModuleNotFoundError(\"No module named 'pytest_asyncio'\", name='pytest_asyncio')"
    )
    pytester.makepyfile(
        test_mine=USER_SYNC_TEST
        + """
    async def test_with_the_kit(actor_kit):
        pass
    """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:asyncio", "-W", "error", "-p", "no:cacheprovider", timeout=120
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines(
        [
            r"^the actorsource fixtures need pytest-asyncio, .*: pip install 'actorsource\[testing\]'$"
        ]
    )
