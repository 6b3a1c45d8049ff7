"""Scoring a search's evaluation batches on Ray actors.

The driver runs the same NSGA-II as a local search; only the batches of plans that
``evo::Problem::evaluate`` receives are scored elsewhere. Each actor loads the model and
builds the FP references once (``qevo._qevo.Worker``), then scores the plans it is sent.
A batch is cut into one contiguous chunk per actor and the answers are put back in
batch order, so the same seed gives the same front as a local run.

Before the first batch every actor reports the fingerprint of its setup (model weights,
calibration tokens, search space, target); an actor whose fingerprint differs from the
driver's is refused. An actor that dies mid-batch is replaced by a new one and its chunk
is scored again; nothing is lost.

On a cluster, every node needs qevo installed and the model at the same path (or on a
shared filesystem); the embedded default model needs nothing.
"""

from __future__ import annotations

import json
import math
import os
import threading
from typing import Any, Callable, List, Optional

from ._qevo import QevoError


class RayExecutor:
    """Where to score: a Ray cluster and how many actors.

    - ``address``: "auto" (a running cluster found from this node), "ray://host:10001"
      (Ray Client), "host:6379", or None (a local Ray started for this process). When
      Ray is already initialised in this process, that connection is used.
    - ``workers``: actors, each holding the model and references once.
    - ``cpus_per_worker``: CPUs each actor reserves; also its Rust thread count.
    - ``connect_timeout_s``: an address that does not answer within this raises
      ``QevoError`` instead of hanging.
    - ``start_timeout_s``: time for the actors to load the model and build references.
    - ``model_path``: where the workers load the model from (default: the driver's
      path); for nodes that keep it elsewhere. Its weights must be the driver's.
    - ``after_submit``: called with the actor handles after each batch's chunks are
      submitted (fault-injection tests kill one here).
    """

    def __init__(
        self,
        address: Optional[str] = "auto",
        workers: int = 2,
        cpus_per_worker: float = 1,
        connect_timeout_s: float = 30.0,
        start_timeout_s: float = 600.0,
        max_retries: int = 3,
        model_path: Optional[str] = None,
        after_submit: Optional[Callable[[List[Any]], None]] = None,
    ):
        if workers < 1:
            raise ValueError(f"workers: must be at least 1, got {workers}")
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.connect_timeout_s = connect_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_retries = max_retries
        self.after_submit = after_submit
        self.model_path = model_path
        #: Actors replaced after dying, over every search this executor served.
        self.replaced = 0
        #: Plans scored remotely, over every search this executor served.
        self.jobs_scored = 0

    def _bind(self, model: Any, settings_json: str) -> "_Bridge":
        ray = _import_ray()
        _connect(ray, self.address, self.connect_timeout_s)
        return _Bridge(self, ray, model, settings_json)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, workers={self.workers})"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise QevoError("RayExecutor needs Ray: pip install ray") from e
    return ray


def _connect(ray: Any, address: Optional[str], timeout_s: float) -> None:
    """ray.init(address) in a helper thread, so an address that never answers becomes
    a QevoError after ``timeout_s`` rather than a hang."""
    if ray.is_initialized():
        return
    outcome: dict = {}

    def init() -> None:
        try:
            ray.init(address=address, include_dashboard=False, logging_level="ERROR")
            outcome["ok"] = True
        except BaseException as e:  # reported to the caller below
            outcome["error"] = e

    t = threading.Thread(target=init, name="qevo-ray-connect", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise QevoError(f"Ray address {address!r} did not answer within {timeout_s:.0f} s")
    if "error" in outcome:
        raise QevoError(f"Ray address {address!r}: {outcome['error']}") from outcome["error"]


class _ScoringActor:
    """One Ray actor: a ``qevo._qevo.Worker`` built once."""

    def __init__(self, model_path: Optional[str], settings_json: str, threads: int):
        # Before the first parallel section, so the Rust thread pool fits the actor's CPUs.
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        from qevo import _qevo

        self.worker = _qevo.Worker(model_path, settings_json)

    def fingerprint(self) -> str:
        return self.worker.fingerprint

    def score(self, jobs_json: str) -> str:
        return self.worker.score(jobs_json)


class _Bridge:
    """The object the Rust search calls: ``start(fingerprint)``, ``score(jobs_json)``."""

    def __init__(self, config: RayExecutor, ray: Any, model: Any, settings_json: str):
        self.config = config
        self.ray = ray
        self.model_path = config.model_path if config.model_path is not None else model.path
        self.settings_json = settings_json
        self.fingerprint: Optional[str] = None
        threads = max(1, int(math.ceil(config.cpus_per_worker)))
        self.actor_class = ray.remote(num_cpus=config.cpus_per_worker)(_ScoringActor)
        self.threads = threads
        self.actors: List[Any] = []

    def _spawn(self) -> Any:
        return self.actor_class.remote(self.model_path, self.settings_json, self.threads)

    def _check(self, actors: List[Any]) -> None:
        """Waits for the actors' setups and refuses any whose fingerprint differs."""
        ray = self.ray
        try:
            prints = ray.get([a.fingerprint.remote() for a in actors], timeout=self.config.start_timeout_s)
        except ray.exceptions.GetTimeoutError as e:
            raise QevoError(
                f"Ray workers did not finish loading the model within {self.config.start_timeout_s:.0f} s"
            ) from e
        except ray.exceptions.RayError as e:
            raise QevoError(f"a Ray worker failed to load the model: {e}") from e
        want_model = self.fingerprint.split("-")[0]
        for i, got in enumerate(prints):
            if got == self.fingerprint:
                continue
            what = "model" if got.split("-")[0] != want_model else "scoring setup (texts, space, target)"
            for a in actors:
                ray.kill(a)
            raise QevoError(
                f"Ray worker {i}: its {what} fingerprint {got} differs from the driver's "
                f"{self.fingerprint}; refused (every node needs the same model file at "
                f"{self.model_path or 'the embedded default'})"
            )

    def start(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.actors = [self._spawn() for _ in range(self.config.workers)]
        self._check(self.actors)
        return None

    def _replace(self, k: int) -> None:
        try:
            self.ray.kill(self.actors[k])
        except Exception:
            pass  # already gone
        fresh = self._spawn()
        self._check([fresh])
        self.actors[k] = fresh
        self.config.replaced += 1

    def score(self, jobs_json: str) -> List[str]:
        ray = self.ray
        jobs = json.loads(jobs_json)
        size = int(math.ceil(len(jobs) / len(self.actors)))
        chunks = [json.dumps(jobs[i : i + size]) for i in range(0, len(jobs), size)]
        answers: List[Optional[str]] = [None] * len(chunks)
        tries = [0] * len(chunks)
        pending = {self.actors[c].score.remote(chunks[c]): c for c in range(len(chunks))}
        if self.config.after_submit is not None:
            self.config.after_submit(list(self.actors))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            c = pending.pop(ref)
            try:
                answers[c] = ray.get(ref)
            except ray.exceptions.RayActorError:
                # The actor died mid-batch: a fresh one scores its chunk again.
                tries[c] += 1
                if tries[c] > self.config.max_retries:
                    raise QevoError(f"chunk {c} of a batch failed on {tries[c]} Ray workers in a row")
                self._replace(c)
                pending[self.actors[c].score.remote(chunks[c])] = c
        self.config.jobs_scored += len(jobs)
        return [a for a in answers if a is not None]

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass  # already gone
        self.actors = []
