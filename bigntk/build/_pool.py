"""The one worker-retry policy: Ray actors started, replaced when they die, deaths counted.

A :class:`WorkerPool` holds the actors made by one factory. It starts them
and waits until each answers (:meth:`WorkerPool.start`), asks a first
actor one question (:meth:`WorkerPool.ask_one`, the AUTO timing), replaces
an actor that died (:meth:`WorkerPool.replace`), and counts a death against
the block it was running (:meth:`WorkerPool.count_death`; never a guess): a block that
kills ``max_deaths`` workers stops the build with
:class:`~bigntk.errors.BlockFailedError`, since a block that keeps killing its
worker would otherwise loop forever. A block whose task raises is retried
(:meth:`WorkerPool.count_failure`) until it has failed ``BLOCK_TRIES`` times.
Killing an actor Ray has already lost is harmless (:func:`kill`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from bigntk.build._failures import death_cause, error_summary
from bigntk.errors import BlockFailedError, WorkerStartError

logger = logging.getLogger(__name__)

START_TRIES = 3  # times a worker may die while starting (or timing AUTO) before the build stops
BLOCK_TRIES = 3  # times a block's task may raise before the build stops


def kill(actor: Any) -> None:
    """Kill ``actor``; one Ray no longer knows (its process already gone) is left alone."""
    import ray

    try:
        ray.kill(actor)
    except ray.exceptions.ActorHandleNotFoundError:
        logger.debug("Actor %s was already gone; nothing to kill.", actor)


class WorkerPool:
    """Worker actors made by ``new_actor()``: started, replaced when they die, killed at the end.

    Args:
        new_actor: starts one actor (returns its handle at once; Ray starts it).
        max_deaths: deaths of its worker after which a block stops the build.
        kept: what the build keeps if it stops now (a clause for the error message).
    """

    def __init__(
        self,
        new_actor: Callable[[], Any],
        max_deaths: int = 3,
        kept: Callable[[], str] = lambda: "committed blocks are kept",
    ):
        self._new_actor = new_actor
        self.max_deaths = max_deaths
        self._kept = kept
        self.actors: list[Any] = []
        self.deaths: dict[tuple[int, int], int] = {}
        self.failures: dict[tuple[int, int], int] = {}

    def start(
        self, count: int, tries: int = START_TRIES, first: Any = None
    ) -> list[dict[str, Any]]:
        """Start ``count`` actors and wait until each answers ``info()``; their answers.

        ``first``: an actor already running (the one :meth:`ask_one` kept), taken as
        the first of the ``count``. An actor that dies while starting (killed, out of
        memory) is replaced, up to ``tries`` times; then
        :class:`~bigntk.errors.WorkerStartError`.
        """
        import ray

        self.actors = [first] if first is not None else []
        self.actors += [self._new_actor() for _ in range(count - len(self.actors))]
        try:
            return self._answers("info", (), tries, "A worker died while starting (%s); "
                                 "starting another.")  # fmt: skip
        except ray.exceptions.RayActorError as e:
            raise WorkerStartError(
                f"A worker died while starting, {tries} times: {error_summary(e)}. "
                "Check the workers' memory and logs (Ray's session logs), then run "
                "the same build again to resume."
            ) from e

    def ask_one(
        self, method: str, *args: Any, warning: str, tries: int = START_TRIES
    ) -> tuple[Any, Any]:
        """``(answer, actor)``: ``method(*args)`` asked of one new actor, replaced if it dies
        (``tries`` times at most), and the actor that answered, left running for the
        caller (who kills it or hands it to :meth:`start`).

        Each death is logged with ``warning`` (``%s``: the cause); after ``tries``
        deaths Ray's ``RayActorError`` is raised (no actor is left running).
        """
        self.actors = [self._new_actor()]
        try:
            answer = self._answers(method, args, tries, warning)[0]
        except BaseException:
            self.close()
            raise
        actor, self.actors = self.actors[0], []
        return answer, actor

    def _answers(self, method: str, args: tuple, tries: int, warning: str) -> list:
        """Each actor's answer to ``method(*args)``; one that dies is replaced and asked again."""
        import ray

        answers: list[Any] = [None] * len(self.actors)
        missing = list(range(len(self.actors)))
        for attempt in range(tries):
            refs = [(i, getattr(self.actors[i], method).remote(*args)) for i in missing]
            missing = []
            for i, ref in refs:
                try:
                    answers[i] = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    if attempt == tries - 1:
                        raise
                    logger.warning(warning, e)
                    self.replace(i)
                    missing.append(i)
            if not missing:
                break
        return answers

    def holds(self, slot: int, actor: Any) -> bool:
        """Whether ``actor`` is still the one in ``slot`` (not yet replaced)."""
        return self.actors[slot] is actor

    def replace(self, slot: int) -> None:
        """Kill the actor in ``slot`` (if Ray still knows it) and start a new one there."""
        kill(self.actors[slot])
        self.actors[slot] = self._new_actor()

    def count_death(self, blocks: Sequence[tuple[int, int]], error: BaseException) -> None:
        """A worker died with ``blocks`` in flight (oldest first): count it, or stop.

        With one block in flight the death is that block's; a block that has
        now killed ``max_deaths`` workers stops the build. With several, Ray
        cannot tell which one was running (the reply of a finished one may be
        lost with the process), so none is blamed: the caller reruns them one
        at a time, where the next death is unambiguous.

        Raises:
            BlockFailedError: the block has now killed ``max_deaths`` workers.
        """
        if len(blocks) > 1:
            logger.warning(
                "A worker died while computing block %s or one of the %d blocks queued behind "
                "it (%s); recomputing them one at a time.",
                blocks[0], len(blocks) - 1, death_cause(error),
            )  # fmt: skip
            return
        block = blocks[0]
        deaths = self.deaths[block] = self.deaths.get(block, 0) + 1
        if deaths >= self.max_deaths:
            raise BlockFailedError(
                f"Block {tuple(map(int, block))} killed its worker {deaths} times "
                f"({death_cause(error)}); {self._kept()}. A block that kills its process "
                "usually runs it out of memory: use a smaller block_size (or workers with more "
                "memory), then run the same build again to resume."
            ) from error
        logger.warning(
            "A worker died while computing block %s (%s); recomputing it.",
            block, death_cause(error),
        )  # fmt: skip

    def count_failure(self, block: tuple[int, int], error: BaseException) -> None:
        """``block``'s task raised ``error`` (a Ray task error): retry it, or stop.

        Raises:
            BlockFailedError: ``block`` has now failed ``BLOCK_TRIES`` times.
        """
        failures = self.failures[block] = self.failures.get(block, 0) + 1
        if failures >= BLOCK_TRIES:
            raise BlockFailedError(
                f"Block {tuple(map(int, block))} failed {failures} times; {self._kept()}. Last "
                f"error: {error_summary(error)}"
            ) from error

    def close(self) -> None:
        """Kill every actor."""
        for actor in self.actors:
            kill(actor)
        self.actors = []
