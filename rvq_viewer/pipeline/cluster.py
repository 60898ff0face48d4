"""A Dask cluster to audit on, from the command line's `--dask` address (the optional `dask` extra).

    with dask_client("local:4") as client:        # a LocalCluster of 4 worker processes, 1 thread each
        outcome = run_audit_spec(spec, executor=client)
    with dask_client("tcp://scheduler:8786") as client:   # an existing cluster
        ...

The feature files (and, for a plain process pool, the checkpoint) must be readable by every worker at
the same path: a shared filesystem.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from ..errors import RvqViewerError
from ..runtime import usable_cpus

INSTALL_HINT = "pip install 'rvq-viewer[dask]'"
CONNECT_TIMEOUT = "30s"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise RvqViewerError(f"--dask needs Dask's distributed package: {INSTALL_HINT}") from None
    return distributed


def parse_address(address: str) -> tuple[str, int | None]:
    """("local", N or None) for `local[:N]`, else ("remote", None) for a scheduler address."""
    text = address.strip()
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2]
        if not count:
            return "local", None
        if not count.isdigit() or int(count) < 1:
            raise RvqViewerError(f"--dask {address}: expected local, local:N (N workers, N >= 1) or a "
                                 "scheduler address such as tcp://host:8786")
        return "local", int(count)
    if not text:
        raise RvqViewerError("--dask: give local, local:N or a scheduler address such as tcp://host:8786")
    return "remote", None


def worker_environ() -> dict:
    """Dask's environment for new worker processes, less MALLOC_TRIM_THRESHOLD_.

    Setting that variable also turns off glibc's adaptive mmap threshold, so every chunk-sized tensor
    becomes a fresh mapping that is page-faulted in again: the audit ran 2.7x slower at D=128
    (benchmarks/scale.py --dask). The thread limits (OMP_NUM_THREADS=1...) are kept."""
    import dask
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    return {k: v for k, v in environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}


def _local_cluster(distributed, workers: int):
    """N worker processes of one thread each, torch single-threaded in them: the workers, not torch's
    thread pool, share the cores. No dashboard (its port may be taken; bokeh may be missing)."""
    import dask
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None,
                                        scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
                                        silence_logs=logging.ERROR)


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[object]:
    """A `distributed.Client` for `address`, closed (with the LocalCluster it started) afterwards."""
    kind, workers = parse_address(address)
    distributed = _distributed()
    cluster = None
    try:
        if kind == "local":
            cluster = _local_cluster(distributed, workers or usable_cpus())
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RvqViewerError(f"--dask {address}: cannot reach the scheduler: {reason}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
