"""Where independent work runs: in this process (``local``) or on a Ray cluster (``ray``).

The local engine is the laptop path and the reference: it runs items in order. The Ray
engine runs the same function on the same items as Ray tasks and returns the results in
item order, so a caller's output does not depend on the engine. Ray is an optional
dependency (``pip install cogsae[ray]``); ``ray`` connects to ``RAY_ADDRESS`` when it is
set and otherwise starts a local cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from cogsae.errors import CogsaeError

Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = ("local", "ray")
TASK_RETRIES = 3
"""Times Ray reruns a task whose worker died (work is idempotent: outputs are written
atomically under deterministic names)."""

T = TypeVar("T")
R = TypeVar("R")


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
