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
import os
from typing import Iterator

from ..errors import RvqViewerError

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


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[object]:
    """A `distributed.Client` for `address`, closed (with the LocalCluster it started) afterwards."""
    kind, workers = parse_address(address)
    distributed = _distributed()
    cluster = None
    try:
        if kind == "local":
            # One thread per worker process, and torch single-threaded in it (Dask's nanny also sets
            # OMP_NUM_THREADS=1): the workers, not torch's thread pool, share the cores.
            cluster = distributed.LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                               processes=True, dashboard_address=None,
                                               scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
                                               silence_logs=logging.ERROR)
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
