"""The fast mode's discrete-event loop and its clock: time jumps from one event to the next."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class SimClock:
    """Discrete-event time: it jumps from one event to the next, never waiting on the wall.

    Only its owner, the fast mode's event loop, moves it (:meth:`advance_to`); everything
    else reads it. Nothing in the fast mode sleeps on it: a process of the scenario driver
    waits by handing the loop the instant to resume it at.
    """

    def __init__(self, start_epoch_s: float) -> None:
        self._now = start_epoch_s

    def time(self) -> float:
        return self._now

    def advance_to(self, epoch_s: float) -> None:
        """Move time forward (never back)."""
        if epoch_s < self._now:
            raise ValueError(f"simulated time cannot go back: {epoch_s} < {self._now}")
        self._now = epoch_s


class EventLoop:
    """A heap of (time, order, action); time is the shared :class:`SimClock`.

    ``background`` events (the controller's tick, the end-of-day check) repeat forever and
    do not count as something still to happen: :attr:`pending` counts only the others.
    """

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._live: dict[int, bool] = {}  # scheduled, not run or cancelled → background?
        self.pending = 0
        self.events_run = 0

    def at(
        self, time_s: float, action: Callable[[], None], *, background: bool = False
    ) -> Callable[[], None]:
        n = next(self._seq)
        heapq.heappush(self._heap, (max(time_s, self.clock.time()), n, action))
        self._live[n] = background
        if not background:
            self.pending += 1

        def cancel() -> None:
            if self._live.pop(n, True) is False:
                self.pending -= 1

        return cancel

    def soon(self, action: Callable[[], None]) -> None:
        """Run ``action`` at the current instant, after what is already due now."""
        self.at(self.clock.time(), action)

    def run(self, until_s: float, stop: Callable[[], bool]) -> None:
        heap, live, clock = self._heap, self._live, self.clock
        while heap and heap[0][0] <= until_s:
            t, n, action = heapq.heappop(heap)
            background = live.pop(n, None)
            if background is None:
                continue  # cancelled
            if not background:
                self.pending -= 1
            if t > clock.time():
                clock.advance_to(t)
            action()
            self.events_run += 1
            if stop():
                return
        clock.advance_to(max(clock.time(), until_s))
