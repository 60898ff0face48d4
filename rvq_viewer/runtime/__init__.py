"""Where the work runs: devices and their memory, and the process's CPU workers. Torch only."""

from .cpu_pool import (PIECE_ROWS, CpuWorkers, cpu_workers, in_worker, lower_thread_priority, piece_rows,
                       stop_cpu_workers, work_alone)
from .cpu_quota import usable_cpus
from .devices import available_devices, free_memory, is_out_of_memory, release_cached_memory, resolve_device

__all__ = ["PIECE_ROWS", "CpuWorkers", "available_devices", "cpu_workers", "free_memory", "in_worker",
           "is_out_of_memory", "lower_thread_priority", "piece_rows", "release_cached_memory", "resolve_device",
           "stop_cpu_workers", "usable_cpus", "work_alone"]
