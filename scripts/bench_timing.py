"""Timing and statistics of the benchmarks: CPU and memory from /proc, timed rounds, spreads.

The in-process benchmarks (overhead, remote, scaling, workers; their round loop is
`bench_harness.alternate_rounds`) time `process.next` inside one Python process. Next to
wall seconds they record CPU seconds (this process plus its TFF workers, read from
/proc), which other processes' load disturbs much less. Imports neither TensorFlow nor
TFF (the population benchmark and the tests use it from plain drivers).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from core import runtime

_CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid: int | None = None) -> float:
  """User + system CPU seconds of a process (this one by default) from /proc."""
  with open(f'/proc/{pid or os.getpid()}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def memory_mib(pid: int | None = None, field: str = 'VmHWM') -> float:
  """A memory figure of a process in MiB: VmHWM (peak resident set) or VmRSS (current)."""
  with open(f'/proc/{pid or os.getpid()}/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 1024
  raise ValueError(f'{field} not in /proc/{pid}/status')


def new_worker_pid(known: Iterable[int]) -> int | None:
  """The TFF worker this process started most recently that is not in `known`."""
  fresh = sorted(set(runtime.worker_pids(os.getpid())) - set(known))
  return fresh[-1] if fresh else None


@dataclasses.dataclass
class RoundTime:
  """One timed round: wall seconds, and CPU seconds of this process and of its workers."""

  wall: float
  cpu: float
  worker_cpu: float

  @property
  def total_cpu(self) -> float:
    return self.cpu + self.worker_cpu


def timed(fn: Callable[[], Any], worker_pids: Sequence[int] = ()) -> tuple[Any, RoundTime]:
  """Runs `fn()`; returns its result and how long it took.

  Args:
    fn: What to time.
    worker_pids: TFF workers whose CPU seconds count too (summed into `worker_cpu`).
  """
  workers_before = [cpu_seconds(pid) for pid in worker_pids]
  cpu_before = time.process_time()
  start = time.perf_counter()
  result = fn()
  wall = time.perf_counter() - start
  cpu = time.process_time() - cpu_before
  workers = sum(cpu_seconds(pid) - before for pid, before in zip(worker_pids, workers_before))
  return result, RoundTime(wall=wall, cpu=cpu, worker_cpu=workers)


def spread(values: Sequence[float]) -> dict[str, float]:
  """Median and quartiles (the spread the tables show), plus min/max and the count."""
  array = np.asarray(values, dtype=float)
  return {
      'median': float(np.median(array)),
      'p25': float(np.percentile(array, 25)),
      'p75': float(np.percentile(array, 75)),
      'min': float(array.min()),
      'max': float(array.max()),
      'n': int(array.size),
  }


def spread_with_values(values: Sequence[float]) -> dict[str, Any]:
  """Median, quartiles as q1/q3 (linear interpolation), min, max, mean and every value.

  The form of scripts/bench_vertical.py's results (`spread` has the same statistics under
  the names the other timing tables use).
  """
  q1, median, q3 = np.percentile(values, [25, 50, 75])
  return {'median': float(median), 'q1': float(q1), 'q3': float(q3), 'min': float(min(values)),
          'max': float(max(values)), 'mean': float(np.mean(values)), 'all': [float(v) for v in values]}


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
  """Least-squares line y = slope * x + intercept and its R^2 (1 = perfectly linear)."""
  x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
  slope, intercept = np.polyfit(x, y, 1)
  residual = float(np.sum((y - (slope * x + intercept)) ** 2))
  total = float(np.sum((y - y.mean()) ** 2))
  return {'slope': float(slope), 'intercept': float(intercept),
          'r2': 1.0 - residual / total if total > 0 else 1.0}


def rotate(items: Sequence[Any], offset: int) -> list[Any]:
  """`items` starting at `offset` (wrapping): who goes first changes every round."""
  offset %= max(len(items), 1)
  return list(items[offset:]) + list(items[:offset])


def fmt_spread(stats: Mapping[str, float], fmt: str = '.2f') -> str:
  """`median [p25-p75]`."""
  return f'{stats["median"]:{fmt}} [{stats["p25"]:{fmt}}-{stats["p75"]:{fmt}}]'
