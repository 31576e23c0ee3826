"""The Ray backend of the `Executor` seam: each task is one Ray task on a cluster or on a local instance.

Generic over what a task is and what it returns: a worker calls `fn(task)` and sends back its result (a row,
or a list of rows for a stack of runs); `map` yields results in completion order (`ray.wait`), so the driver
writes each as soon as its task finishes. A worker that dies is retried by Ray (`max_retries`); an exception
raised by `fn` is not retried. Ray is imported only here, and only when a `RayExecutor` is made.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bench.errors import UserError

INSTALL_HINT = "pip install 'vaebench[ray]'"
MAX_RETRIES = 3
PROBE_TIMEOUT_S = 120.0
AUTH_HINT = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and give this machine the cluster's "
             "token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def exception_chain(err: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def vaebench_task(fn: Callable[[Any], Any], task: Any) -> Any:
    """What a Ray worker runs (its process title is `ray::vaebench_task`)."""
    return fn(task)


def probe_node(probe: str, token: str, reply: str, node_check: Callable[[], str] | None) -> tuple[str, str]:
    """On a worker: (why it cannot read the driver's probe file or write `reply` beside it, what `node_check`
    found wrong), each '' when fine and else prefixed with the host name."""
    host = socket.gethostname()
    try:
        if Path(probe).read_text() != token:
            return f"{host}: {probe} has other content", ""
        Path(reply).write_text(host)
    except OSError as err:
        return f"{host}: {type(err).__name__}: {err}", ""
    problem = node_check() if node_check else ""
    return "", f"{host}: {problem}" if problem else ""


class RayExecutor:
    """Runs tasks as Ray tasks with `cpus`/`gpus` each, on the cluster at `address` (None: a new local instance).

    A context manager: entering connects (or starts the local instance), leaving disconnects (or stops it).
    A Ray session this process already holds is used as it is and left open. `on_lost(task, error)` turns a
    task that returned nothing (its worker died more than `max_retries` times) into a result; without it the
    error is raised.
    """

    def __init__(self, address: str | None, cpus: float = 1.0, gpus: float = 0.0, max_retries: int = MAX_RETRIES,
                 on_lost: Callable[[Any, BaseException], Any] | None = None):
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self.max_retries, self.on_lost = max_retries, on_lost
        self.ray = import_ray()
        self.owned = False

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, configure_logging=False)
                else:  # "local": never attach to some other cluster found on this machine
                    ray.init(address="local", include_dashboard=False, configure_logging=False)
            except Exception as err:
                where = f"at {self.address}" if self.address else "on this machine"
                hint = AUTH_HINT if any("InvalidAuthToken" in str(c) or "Authentication" in type(c).__name__
                                        for c in exception_chain(err)) else ""
                raise UserError(f"cannot start or reach the Ray cluster {where}: "
                                f"{str(err).strip().splitlines()[0]}{hint}") from None
            self.owned = True
        try:
            self._check_resources()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.ray.shutdown()
            self.owned = False

    def _nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _fits(self, node: dict) -> bool:
        res = node.get("Resources", {})
        return res.get("CPU", 0.0) >= self.cpus and res.get("GPU", 0.0) >= self.gpus

    def _check_resources(self) -> None:
        nodes = self._nodes()
        if not any(self._fits(n) for n in nodes):
            most = max(((n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)) for n in nodes),
                       default=(0.0, 0.0))
            raise UserError(f"no node of the Ray cluster has {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) for one "
                            f"run (the largest has {most[0]:g} and {most[1]:g}); lower --cpus-per-run/--gpus-per-run")

    def describe(self) -> str:
        nodes = self._nodes()
        total = self.ray.cluster_resources()
        gpus = f", {total.get('GPU', 0):g} GPUs" if total.get("GPU") else ""
        per_run = f"{self.cpus:g} CPU" + (f" + {self.gpus:g} GPU" if self.gpus else "")
        where = self.address or "a local instance"
        return f"ray: {where}, {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs{gpus}; {per_run} per run"

    def check_nodes(self, folder: Path, node_check: Callable[[], str] | None = None) -> None:
        """On every node that can take a task, a worker must read a file the driver writes into `folder` and write
        one beside it; then `node_check()` (picklable) runs there and returns '' or what is wrong."""
        ray = self.ray
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = folder / f".vaebench-probe-{token}"
        probe.write_text(token)
        nodes = [n for n in self._nodes() if self._fits(n)]
        replies = [folder / f".vaebench-probe-{token}-{i}" for i in range(len(nodes))]
        shared, other = "", ""
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            remote = ray.remote(probe_node)
            refs = [remote.options(num_cpus=0, max_retries=1,
                                   scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe.resolve()), token, str(reply.resolve()), node_check)
                    for n, reply in zip(nodes, replies)]
            try:
                answers = ray.get(refs, timeout=PROBE_TIMEOUT_S)
                shared = next((a for a, _ in answers if a), "")
                shared = shared or next((f"{r.name} written by a worker is not there" for r in replies
                                         if not r.exists()), "")
                other = next((b for _, b in answers if b), "")
            except ray.exceptions.GetTimeoutError:
                other = f"no answer from the workers within {PROBE_TIMEOUT_S:g} s"
            except ray.exceptions.RayError as err:  # e.g. a worker cannot import bench
                other = f"a worker failed: {str(err).strip().splitlines()[-1]}"
        finally:
            for path in (probe, *replies):
                path.unlink(missing_ok=True)
            if shared or other:
                for path in created:
                    if path.exists() and not any(path.iterdir()):
                        path.rmdir()
        if shared:
            raise UserError(f"the Ray workers cannot use the results folder {folder.resolve()} ({shared}): "
                            f"it must be on storage every node sees at the same path (a shared filesystem)")
        if other:
            raise UserError(f"Ray workers are not ready: {other}")

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        """Submit every task, then yield each result as its task completes; closing the iterator (or Ctrl-C)
        cancels the tasks still pending or running."""
        ray = self.ray
        remote = ray.remote(vaebench_task).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                   max_retries=self.max_retries, retry_exceptions=False)
        pending = {remote.remote(fn, task): task for task in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        if self.on_lost is None:
                            raise
                        result = self.on_lost(task, err)
                    yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

