"""Where independent work runs: in this process (``local``) or on a Ray cluster (``ray``).

The local engine is the laptop path and the reference: it runs items in order. The Ray
engine runs the same function on the same items as Ray tasks and returns the results in
item order, so a caller's output does not depend on the engine. Ray is an optional
dependency (``pip install cogsae[ray]``); ``ray`` connects to ``RAY_ADDRESS`` when it is
set and otherwise starts a local cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

from cogsae.errors import CogsaeError

Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = ("local", "ray")
TASK_RETRIES = 3
"""Times Ray reruns a task whose worker died (work is idempotent: outputs are written
atomically under deterministic names)."""

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


def check_engine(engine: str) -> Engine:
    """``engine`` if it is known and usable here, else a CogsaeError naming ``--engine``."""
    if engine not in ENGINES:
        raise CogsaeError(f"unknown engine {engine!r}; choose from {ENGINES}", field="--engine")
    if engine == "ray":
        ray_module()
    return engine  # type: ignore[return-value]


def ray_module() -> Any:
    """The ``ray`` module, connected (to ``RAY_ADDRESS`` or a new local cluster)."""
    try:
        import ray
    except ImportError as err:
        raise CogsaeError(
            "the ray engine needs Ray: pip install 'cogsae[ray]'", field="--engine"
        ) from err
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        ray.init(
            address=address or None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return ray


def map_tasks(
    fn: Callable[[T], R], items: Sequence[T], *, engine: Engine = "local", num_cpus: float = 1
) -> list[R]:
    """[fn(item) for item in items], run locally in order or as Ray tasks (in item order).

    Args:
        fn: a picklable, module-level function (Ray ships it to the workers).
        items: its arguments, one task each.
        engine: "local" or "ray".
        num_cpus: CPUs Ray reserves for each task.
    """
    if engine == "local":
        return [fn(item) for item in items]
    ray = ray_module()
    remote = ray.remote(num_cpus=num_cpus, max_retries=TASK_RETRIES)(fn)
    return ray.get([remote.remote(item) for item in items])


def map_actors(
    setup: Callable[[], S],
    fn: Callable[[S, T], R],
    items: Iterable[T],
    done: Callable[[R], Any],
    *,
    engine: Engine = "local",
    workers: int | None = None,
    num_cpus: float = 1,
) -> None:
    """``done(fn(state, item))`` for every item, with ``state = setup()`` made once per worker.

    The local engine makes one state and runs the items in order. The Ray engine starts
    ``workers`` actors (default: one per GPU of the cluster, else one per ``num_cpus``
    CPUs), each calling ``setup()`` once (e.g. loading a model; ``num_gpus=1`` per actor
    when the cluster has GPUs), and feeds them the items, at most two in flight per actor,
    so ``items`` may be a long generator. ``done`` runs in this process, in completion
    order (not item order). An actor that dies is restarted (``setup()`` again) and its
    item retried, up to `TASK_RETRIES` times: ``fn`` must be idempotent.

    Args:
        setup: picklable; builds the per-worker state (Ray ships it to every actor).
        fn: picklable; the work on one item, given the worker's state.
        items: the work items.
        done: consumes each result (writes a manifest entry, merges a partial result).
        engine: "local" or "ray".
        workers: Ray actors to start.
        num_cpus: CPUs Ray reserves for each actor.
    """
    if engine == "local":
        state = setup()
        for item in items:
            done(fn(state, item))
        return
    ray = ray_module()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if workers is None:
        workers = gpus or max(1, int(ray.cluster_resources().get("CPU", 1) // num_cpus))
    actor_class = ray.remote(_Worker).options(
        num_cpus=num_cpus,
        num_gpus=1 if gpus else 0,
        max_restarts=TASK_RETRIES,
        max_task_retries=TASK_RETRIES,
    )
    actors = [actor_class.remote(setup) for _ in range(workers)]
    in_flight = [0] * workers
    pending: dict[Any, int] = {}  # result ref -> actor index

    def finish_one() -> None:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        in_flight[pending.pop(ref)] -= 1
        done(ray.get(ref))

    try:
        for item in items:
            if len(pending) >= 2 * workers:
                finish_one()
            actor = in_flight.index(min(in_flight))
            pending[actors[actor].run.remote(fn, item)] = actor
            in_flight[actor] += 1
        while pending:
            finish_one()
    finally:
        for handle in actors:
            ray.kill(handle)


class _Worker:
    """A Ray actor holding one ``setup()`` state (a loaded model) for many items."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self.state = setup()

    def run(self, fn: Callable[[Any, Any], Any], item: Any) -> Any:
        return fn(self.state, item)
