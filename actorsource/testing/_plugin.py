"""The test kit's pytest hooks: its tests run in any project as they are, without warnings.

The fixtures (``nats_server``, ``nats_cluster``, ``actor_kit``) are pytest-asyncio fixtures, as nats-py is
asyncio-only. Two things would otherwise need configuring in a user's project:

- pytest-asyncio's default (strict) mode runs only the coroutine tests marked
  ``@pytest.mark.asyncio``, and decides which tests those are while collecting them, in its
  ``pytest_pycollect_makeitem`` wrapper: a marker added later (``pytest_collection_modifyitems``)
  comes too late. So a wrapper of our own, ``trylast`` (the innermost one, which sees the
  items before pytest-asyncio's does), marks the coroutine tests that use a kit fixture,
  and only those: a project's other tests keep whatever its mode does with them. Making the
  fixtures anyio-based instead (the anyio plugin runs any coroutine test that uses
  ``anyio_backend``) is no way out: in pytest-asyncio's auto mode both plugins would claim
  the same fixtures and tests, and run them on different event loops.
- pytest-asyncio, installed with actorsource, warns in every run of a project that leaves
  ``asyncio_default_fixture_loop_scope`` unset, that the default may change one day. The
  kit's fixtures are function-scoped, so either default gives them the test's own loop:
  when the option is unset, the plugin ignores that one warning (a standard warnings
  filter, set while pytest configures, before pytest-asyncio's hook runs). Nothing else
  changes; a project that sets the option gets no filter at all.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Generator

import pytest

KIT_FIXTURES = frozenset({"nats_server", "nats_cluster", "actor_kit"})

_FIXTURE_LOOP_SCOPE = "asyncio_default_fixture_loop_scope"


@pytest.hookimpl(tryfirst=True)  # before pytest-asyncio's pytest_configure warns
def pytest_configure(config: pytest.Config) -> None:
    try:
        scope = config.getini(_FIXTURE_LOOP_SCOPE)
    except ValueError:  # pytest-asyncio is not loaded (-p no:asyncio)
        return
    if not scope:
        # pytest applies its warning filters around the configure hooks; this one joins
        # them for the rest of the run and matches only pytest-asyncio's notice.
        warnings.filterwarnings(
            "ignore",
            message=f'The configuration option "{_FIXTURE_LOOP_SCOPE}" is unset',
            category=pytest.PytestDeprecationWarning,
        )


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, object, object]:
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Function) and _runs_on_the_kit(item):
            item.add_marker(pytest.mark.asyncio)
    return result


def _runs_on_the_kit(item: pytest.Function) -> bool:
    """A coroutine test that uses a kit fixture and that no async plugin claimed yet."""
    return (
        inspect.iscoroutinefunction(item.obj)
        and not KIT_FIXTURES.isdisjoint(item.fixturenames)
        and item.config.pluginmanager.hasplugin("asyncio")
        and item.get_closest_marker("asyncio") is None
        # left to the anyio plugin, as the test asks
        and item.get_closest_marker("anyio") is None
        and "anyio_backend" not in item.fixturenames
    )
