"""Work that one process does while the others wait for it without a collective, and one outcome for every process.

A process waiting in `dist.barrier()` (or any collective) while rank 0 builds a dataset index, downloads shards or
writes a checkpoint is killed by the process group's timeout (NCCL's watchdog; 10 minutes by default) however
healthy rank 0 is. Here the waiting processes poll the launcher's rendezvous store (the TCPStore every
`torch.distributed` job has; no shared file system needed, so it works across machines) instead:

* `on_main(work, what)`: global rank 0 runs `work()`; the others wait for it and get `share(result)` (JSON);
* `on_local_main(work, what)`: the same per machine (local rank 0 works, the processes of its machine wait);
* while it works, the working process beats a heartbeat; a waiting process gives up only when it has seen no beat
  for the store's timeout (the process-group timeout, `run.dist_timeout_minutes`), with a `TimeoutError` naming
  what it waited for. A worker that stays alive but hangs (a stuck network mount) is therefore waited for; one that
  died or lost the network is not;
* when `work()` raises, every waiting process raises the same exception (the same class when that class is
  already imported there, else RuntimeError; the same one-line message);
* `same_outcome(fn)`: `fn()` on every process, then one collective that shares each process's error, so that all
  raise the first one (by rank) with the same class and message, or none does.

Without an initialised process group of several processes these are plain calls. Calls pair up by order (the
n-th call on one process waits for the n-th on the worker), as collectives do: call `on_main` on every process and
`on_local_main` on every process of a machine, in the same order, and never inside `work` (a call only the worker
makes would pair with the others' next one), nor `work` with collectives in it. The store is reached through torch's
`_get_default_store` (torch has no public accessor).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch.distributed as dist

__all__ = ["distributed", "on_local_main", "on_main", "same_outcome"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_calls: dict[str, itertools.count] = {}  # per group of processes: the n-th call of each names the same key
_FALLBACK_TIMEOUT_S = 1800.0  # a store without a readable timeout (never seen with torchrun / accelerate)


def distributed() -> bool:
    """True under an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def on_main(work: Callable[[], T], what: str, share: Callable[[T], Any] | None = None) -> T | Any:
    """`work()` on global rank 0, the others waiting without a collective (see the module docstring). Returns
    `work()`'s result on rank 0 and `share(result)` (JSON-able; None without `share`) on the others."""
    if not distributed():
        return work()
    return _one_works(work, what, share, worker=dist.get_rank() == 0, group="main", who="rank 0")


def on_local_main(work: Callable[[], T], what: str, share: Callable[[T], Any] | None = None) -> T | Any:
    """`work()` once per machine, on its local rank 0 (LOCAL_RANK); the other processes of that machine wait for it
    and get `share(result)`. Ranks are numbered machine by machine (torchrun, accelerate launch)."""
    if not distributed():
        return work()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    first = dist.get_rank() - local_rank  # the global rank of this machine's local rank 0
    return _one_works(work, what, share, worker=local_rank == 0, group=f"node{first}", who=f"rank {first} (local 0)")


def same_outcome(fn: Callable[[], T]) -> T:
    """`fn()` on every process; when it raised on any, every process raises the first error (lowest rank) with the
    same class and message. One collective (an all-gather of the errors): call it on every process."""
    error: BaseException | None = None
    try:
        result = fn()
    except Exception as e:  # shared below
        error, result = e, None
    if not distributed():
        if error is not None:
            raise error
        return result
    errors: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, _describe(error) if error is not None else None)
    first = next(((rank, e) for rank, e in enumerate(errors) if e is not None), None)
    if first is None:
        return result
    if error is not None and first[0] == dist.get_rank():
        raise error
    raise _rebuild(first[1], f"rank {first[0]}")


# ---------------------------------------------------------------------------------------------------------------


def _store() -> Any:
    return dist.distributed_c10d._get_default_store()  # the rendezvous store; torch has no public accessor


def _timeout_s(store: Any) -> float:
    timeout = getattr(store, "timeout", None)
    return timeout.total_seconds() if timeout is not None else _FALLBACK_TIMEOUT_S


def _describe(error: BaseException) -> dict[str, str]:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return {"module": type(error).__module__, "type": type(error).__qualname__, "message": message}


def _rebuild(desc: dict[str, str], who: str) -> Exception:
    """The exception `desc` describes: its class when that is an Exception class already imported here (nothing is
    imported because of what the store holds), else RuntimeError; the same message."""
    cls = getattr(sys.modules.get(desc.get("module", "")), desc.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(desc["message"])
        except Exception:  # a constructor that wants other arguments
            pass
    return RuntimeError(f"{who} failed: {desc.get('type')}: {desc.get('message')}")


def _one_works(work: Callable[[], T], what: str, share: Callable[[T], Any] | None, worker: bool, group: str,
               who: str) -> T | Any:
    store = _store()
    key = f"magvit2/one-works/{group}/{next(_calls.setdefault(group, itertools.count()))}"
    timeout = _timeout_s(store)
    if worker:
        return _work(store, key, work, share, beat_every=max(0.05, min(10.0, timeout / 5)))
    return _wait(store, key, what, who, timeout)


def _work(store: Any, key: str, work: Callable[[], T], share: Callable[[T], Any] | None, beat_every: float) -> T:
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(beat_every):
            try:
                store.add(f"{key}/beat", 1)
            except Exception:  # the store went away (the job is ending); the waiters notice by themselves
                return

    store.add(f"{key}/beat", 1)
    thread = threading.Thread(target=heartbeat, name="magvit2-heartbeat", daemon=True)
    thread.start()
    try:
        result = work()
    except BaseException as e:
        stop.set()
        thread.join()
        store.set(key, json.dumps({"error": _describe(e)}))
        raise
    stop.set()
    thread.join()
    store.set(key, json.dumps({"value": share(result) if share is not None else None}))
    return result


def _wait(store: Any, key: str, what: str, who: str, timeout: float) -> Any:
    poll = max(0.02, min(1.0, timeout / 20))
    beats, last_change, start = -1, time.monotonic(), time.monotonic()
    while not store.check([key]):
        now = time.monotonic()
        seen = store.add(f"{key}/beat", 0)  # reads the count without blocking
        if seen != beats:
            beats, last_change = seen, now
        elif now - last_change > timeout:
            raise TimeoutError(f"waited {now - start:.0f} s for {who} to finish {what}; it has shown no sign of life "
                               f"for {timeout:.0f} s (run.dist_timeout_minutes): it died or cannot be reached")
        time.sleep(poll)
    message = json.loads(store.get(key))
    if "error" in message:
        raise _rebuild(message["error"], who)
    return message["value"]
