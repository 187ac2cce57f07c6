"""``@every`` timers: what time makes happen, recorded as events in the journal.

Each timer ticks in a task of its own and asks the actor's loop to fire it
(:class:`FireTimers`), so it runs between batches and never on replay. Firing calls the
method with the time; the events it returns are recorded the way ``ctx.record`` records
them (journaled, then applied through the actor's handlers), so replay needs no timer.
"""

from __future__ import annotations

from typing import Any

import anyio
import structlog

from .._model.actor import ActorDefinition, Timer
from .._model.dispatch import LiveState
from .._model.effects import Effects
from .control import Control, FireTimers

__all__ = ["TimerTicks", "decide"]


class TimerTicks:
    """The ticking of an actor's timers: each asks the loop to fire it, one at a time."""

    def __init__(self, definition: ActorDefinition, control: Control) -> None:
        self._definition = definition
        self._control = control

    async def run(self) -> None:
        """Tick every timer until cancelled."""
        async with anyio.create_task_group() as tg:
            for timer in self._definition.timers:
                tg.start_soon(self._tick, timer)

    async def _tick(self, timer: Timer) -> None:
        while True:
            await anyio.sleep(timer.interval)
            # Waiting for it keeps one request per timer in the channel, however slow the loop.
            await self._control.ask(FireTimers(timers=(timer,))).done.wait()


async def decide(
    timer: Timer, live: LiveState, now: float, log: structlog.stdlib.BoundLogger
) -> Effects | None:
    """Call ``timer`` at ``now``; the effects holding the events it returned (recorded, not
    yet applied), or None if it raised (logged: it only read the state, nothing to undo)."""
    effects = live.effects(now)
    try:
        result: Any = getattr(live.state, timer.method)(effects.now)
        if timer.is_async:
            result = await result
        for event in result if isinstance(result, list | tuple) else [result]:
            if event is not None:
                effects.record(event)
    except Exception as exc:
        log.error("timer failed", timer=timer.method, error=repr(exc))
        return None
    return effects
