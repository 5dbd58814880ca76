"""Actor pools of the archive job, sized from the cluster and never waiting forever.

A job runs on whatever it is given: a 2-core laptop, a node that other jobs share, a cluster
that must scale up before a GPU exists. So:

- **Size from the cluster.** A group left unsized in ``PoolOptions`` gets as many actors as the
  cluster's resources hold (analysis: CPUs / ``analysis_cpus``; restore: GPUs / ``restore_gpus``
  when restoring on GPUs, else CPUs / ``restore_cpus``).
- **One pool when the two would be alike.** Restoring on CPUs, restore actors would reserve
  what analysis actors do; then one group of ``CombinedWorker`` actors does both, and stays.
- **One phase at a time when both do not fit.** An actor keeps its reserved resources for its
  whole life; a group that does not fit beside the other in the cluster's resources is made only
  after the other is released (an item's analysis and restoration run one after the other, so
  this costs actor start-up, never a deadlock).
- **Calls go only to actors that are up.** The others join as they are placed, so a partly
  placed group works (and releases what it holds) instead of waiting on a peer that may never
  come. A group none of whose actors is up within ``HOLD_GRACE_S`` makes the job release its
  other group: a job never holds one group while waiting for another (two jobs sharing a cluster
  cannot deadlock). While no actor is up, a line says what it waits for every
  ``REPORT_EVERY_S``; after ``placement_timeout_s`` the job stops with ``PlacementError``
  naming what was asked for and what the cluster has.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable

import ray

from worker.cluster.ray_adapter import (
    CONCURRENCY_GROUPS,
    AnalysisWorker,
    CombinedWorker,
    RestoreWorker,
    unwrap,
)
from worker.config import Config
from worker.errors import PlacementError

log = logging.getLogger(__name__)

RESTARTS = 3  # a killed actor comes back this many times; its in-flight calls are replayed
REPORT_EVERY_S = 30.0  # a waiting group says so this often
HOLD_GRACE_S = 5.0  # a group none of whose actors is up by then makes the job release the others
CLOSE_TIMEOUT_S = 60  # how long a release waits for the actors to remove their input copies


@dataclasses.dataclass
class PoolOptions:
    analysis_actors: int | None = None  # None: as many as the cluster's CPUs hold
    restore_actors: int | None = None  # None: one per GPU share, or as many as the CPUs hold
    analysis_cpus: float = 1.0  # CPUs reserved per analysis actor
    restore_cpus: float = 1.0
    restore_gpus: float = 0.0  # per restore actor; 0 on CPU machines and in tests
    segment_frames: int = 250  # minimum frames per segment (GOPs are grouped up to it)
    in_flight_per_actor: int = 2  # calls queued per actor: keeps actors busy, memory bounded
    placement_timeout_s: float = 900.0  # a group with no actor up by then stops the job


def _need(opts: PoolOptions, kind: str) -> dict[str, float]:
    """Resources one actor of ``kind`` reserves."""
    if kind in ("analysis", "worker"):
        return {"CPU": opts.analysis_cpus}
    return {"CPU": opts.restore_cpus, "GPU": opts.restore_gpus}


def group_size(opts: PoolOptions, kind: str, cluster: dict[str, float]) -> int:
    """Actors in a group of ``kind``: as asked, else as many as ``cluster`` (resource totals)
    holds, at least one (a cluster that must scale up still gets asked for one)."""
    asked = opts.analysis_actors if kind in ("analysis", "worker") else opts.restore_actors
    if asked is not None:
        return max(1, asked)
    need = _need(opts, kind)
    key = "GPU" if need.get("GPU") else "CPU"
    if not need[key]:  # a zero-CPU actor: one per CPU is still a sensible pool
        return max(1, int(cluster.get("CPU", 1)))
    return max(1, math.floor(cluster.get(key, 0) / need[key] + 1e-9))


def fits(groups: list[tuple[int, dict[str, float]]], cluster: dict[str, float]) -> bool:
    """Whether groups of ``(size, need per actor)`` all fit in ``cluster``'s totals at once."""
    keys = {k for _, need in groups for k in need}
    return all(sum(n * need.get(k, 0) for n, need in groups) <= cluster.get(k, 0) + 1e-9 for k in keys)


class Group:
    """The actors of one kind; ``up`` are the ones placed and started (calls go only there).

    ``on_wait`` is called once when no actor is up after ``HOLD_GRACE_S`` (the pools release
    what they hold, so that two jobs sharing a cluster never each hold one group while waiting
    for the other's resources); ``on_stuck(why)`` when none is up after ``timeout_s``."""

    def __init__(self, kind: str, actors: list, need: dict[str, float], timeout_s: float,
                 on_wait: Callable[[], None] | None = None, on_stuck: Callable[[str], None] | None = None):
        self.kind, self.actors, self.need, self.timeout_s = kind, actors, need, timeout_s
        self.on_wait, self.on_stuck = on_wait, on_stuck
        self.up: list = []
        self._booting = {a.ready.remote(): a for a in actors}

    @property
    def booting(self) -> list:
        return list(self._booting)

    def poll(self, timeout: float = 0) -> None:
        """Move the actors that came up (within ``timeout`` s) to ``up``; a constructor that
        failed (a missing model, say) raises its error here."""
        if not self._booting:
            return
        done, _ = ray.wait(self.booting, num_returns=len(self._booting), timeout=timeout)
        for ref in done:
            actor = self._booting.pop(ref)
            ray.get(ref)
            self.up.append(actor)

    def wait_up(self) -> None:
        """Block until at least one actor is up, saying what it waits for meanwhile."""
        t0 = time.monotonic()
        self.poll()
        on_wait, said = self.on_wait, t0
        while not self.up:
            now = time.monotonic()
            if now - t0 >= self.timeout_s:
                flags = {"analysis": "--analysis-cpus", "restore": "--restore-cpus/--restore-gpus"
                         }.get(self.kind, "--analysis-cpus and --restore-cpus")
                why = (f"no {self.kind} actor was placed and started in {self.timeout_s:.0f} s: each "
                       f"asks for {_fmt(self.need)}, the cluster has {_fmt(ray.cluster_resources())} "
                       f"({_fmt(ray.available_resources())} free); lower {flags} or add nodes")
                if self.on_stuck is not None:
                    self.on_stuck(why)
                raise PlacementError(why)
            if on_wait is not None and now - t0 >= HOLD_GRACE_S:
                on_wait()
                on_wait = None
            if now - said >= REPORT_EVERY_S:
                said = now
                log.warning("waiting %.0f s for %d %s actor(s) to be placed and start, each asking "
                            "for %s; the cluster has %s, %s of it free", now - t0, len(self._booting),
                            self.kind, _fmt(self.need), _fmt(ray.cluster_resources()),
                            _fmt(ray.available_resources()))
            ray.wait(self.booting, num_returns=1, timeout=min(HOLD_GRACE_S, self.timeout_s - (now - t0)))
            self.poll()


def _fmt(res: dict[str, float]) -> str:
    shown = {k: v for k, v in res.items() if k in ("CPU", "GPU") and v}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}" if shown else "nothing"


class Pools:
    """The analysis and restore groups of one job, named for the Ray dashboard and made on first
    use: a job of albums only never starts anything it does not need."""

    def __init__(self, cfg: Config, opts: PoolOptions, job: str | None = None):
        self.opts, self.cfg = opts, cfg
        self.job = job or uuid.uuid4().hex[:8]
        self._groups: dict[str, Group] = {}
        self._calibrated: dict = {}
        self.stuck: str | None = None  # why a group could not be placed: the job cannot go on

    @property
    def shared(self) -> bool:
        """Whether one pool of ``CombinedWorker`` actors does both jobs: restore actors would
        reserve exactly what analysis actors do (no GPU), in the same number."""
        o = self.opts
        return (not o.restore_gpus and o.restore_cpus == o.analysis_cpus
                and o.restore_actors == o.analysis_actors)

    @property
    def analysis(self) -> Group:
        if self.shared:
            return self._group("worker", CombinedWorker)
        return self._group("analysis", AnalysisWorker)

    @property
    def restore(self) -> Group:
        if self.shared:
            return self._group("worker", CombinedWorker)
        return self._group("restore", RestoreWorker)

    def _group(self, kind: str, cls: type) -> Group:
        if kind in self._groups:
            return self._groups[kind]
        cluster = ray.cluster_resources()
        n, need = group_size(self.opts, kind, cluster), _need(self.opts, kind)
        for other, g in list(self._groups.items()):
            if not fits([(n, need), (len(g.actors), g.need)], cluster):
                log.info("releasing the %s actors: the %s actors need their resources", other, kind)
                self.release(other)
        remote = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(cls)
        actors = [remote.options(name=f"refstar-{self.job}-{kind}-{i}", num_cpus=need["CPU"],
                                 num_gpus=need.get("GPU", 0), max_restarts=RESTARTS,
                                 max_task_retries=RESTARTS).remote(self.cfg)
                  for i in range(n)]
        self._groups[kind] = Group(kind, actors, need, self.opts.placement_timeout_s,
                                   on_wait=lambda: self._release_all_but(kind), on_stuck=self._stuck)
        return self._groups[kind]

    def _stuck(self, why: str) -> None:
        self.stuck = why

    def _release_all_but(self, kind: str) -> None:
        for other in [k for k in self._groups if k != kind]:
            log.info("releasing the %s actors while the %s actors wait for resources", other, kind)
            self.release(other)

    def calibrate(self, cfg: Config) -> tuple[Config, int]:
        """Planning needs the backend-calibrated thresholds, which only an analyser knows
        (asked once per detect config and job, in a zero-CPU task so it needs no free core)."""
        from worker.cluster.ray_adapter import backend_thresholds
        from worker.config import with_backend_defaults

        if cfg.detect not in self._calibrated:
            self._calibrated[cfg.detect] = ray.get(backend_thresholds.remote(cfg))
        ident, track, dim = self._calibrated[cfg.detect]
        return with_backend_defaults(cfg, ident, track), dim

    def adapt(self, crops_by_identity: dict, cfg: Config) -> tuple:
        """RefSTAR adapted on one item's faces on a restore actor (its GPU when it has one):
        ``(net or None, manifest info)``, see ``worker.item.pipeline.adapt_net``."""
        group = self.restore
        group.wait_up()
        return unwrap_call(group.up[0].adapt.remote(crops_by_identity, cfg))

    @staticmethod
    def share(obj: object):
        """Put ``obj`` (e.g. an item's reference crops) in the object store once for many calls."""
        return ray.put(obj)

    def release(self, kind: str) -> None:
        """Close and kill the actors of ``kind`` (their resources go back to the cluster)."""
        group = self._groups.pop(kind, None)
        if group is None:
            return
        try:  # a dead or stuck actor keeps its input copies; kill anyway
            ray.get([a.close.remote() for a in group.up], timeout=CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001, S110
            pass
        for actor in group.actors:
            ray.kill(actor, no_restart=True)

    def shutdown(self) -> None:
        for kind in list(self._groups):
            self.release(kind)


def unwrap_call(ref) -> object:
    """``ray.get`` one call's result, raising its original exception."""
    try:
        return _owned(unwrap(ray.get(ref)))
    except ray.exceptions.RayTaskError as e:
        raise (e.cause if isinstance(e.cause, Exception) else e) from None


def _owned(value: object) -> object:
    """A copy that owns its arrays. ``ray.get`` hands numpy arrays back as zero-copy views of
    the object store; the driver keeps an item's face records (crops, landmarks) until the item
    ends, and those views would pin every segment's result in the store meanwhile, so the
    store would grow with video length."""
    return copy.deepcopy(value)


def fan_out(group: Group, method: str, calls: Iterable[tuple], per_actor: int = 2,
            on_result: Callable[[int, object], None] | None = None, tolerate: tuple = ()) -> list:
    """Run ``actor.method(*args)`` for every args tuple across the group's actors that are up
    (more join as they come up), at most ``per_actor`` calls queued on each (``ray.wait``
    backpressure); results in call order. A failed call whose original exception is one of
    ``tolerate`` gives that exception as its result; any other failure raises its original
    exception (a ``MediaError`` stays a ``MediaError``)."""
    load: dict[int, int] = {}
    pending: dict = {}
    results: dict[int, object] = {}
    todo = iter(enumerate(calls))
    more = True
    try:
        while True:
            group.poll()
            for i in range(len(group.up)):
                load.setdefault(i, 0)
            while more and load and len(pending) < per_actor * len(load):
                nxt = next(todo, None)
                if nxt is None:
                    more = False
                    break
                k, args = nxt
                a = min(load, key=load.get)
                load[a] += 1
                pending[getattr(group.up[a], method).remote(*args)] = (k, a)
            if not pending:
                if not more:
                    break
                group.wait_up()
                continue
            done, _ = ray.wait(list(pending) + group.booting, num_returns=1)
            if done[0] not in pending:  # an actor came up: give it work
                continue
            k, a = pending.pop(done[0])
            load[a] -= 1
            try:
                results[k] = unwrap_call(done[0])
            except tolerate as e:
                results[k] = e
            if on_result is not None:
                on_result(k, results[k])
    finally:
        for ref in pending:  # one failure fails the item; drop its other queued calls
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001, S110 - best effort; the calls are idempotent anyway
                pass
    return [results[k] for k in range(len(results))]

