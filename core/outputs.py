"""Small, dependency-light writers for experiment outputs: JSON, CSV and PNG plots."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


def experiment_dir(root_output_dir: str | os.PathLike[str], experiment_name: str) -> Path:
  """Returns (and creates) `root_output_dir/experiment_name`."""
  path = Path(root_output_dir).expanduser() / experiment_name
  path.mkdir(parents=True, exist_ok=True)
  return path


def _publish(tmp_name: str, path: Path) -> None:
  # Temporary files are created 0600; give the result the usual umask-based mode.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp_name, 0o666 & ~umask)
  os.replace(tmp_name, path)


def _atomic_write_text(path: Path, text: str) -> None:
  # Write-then-rename so a killed run never leaves a half-written file behind.
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile('w', dir=path.parent, delete=False, suffix='.tmp') as f:
    f.write(text)
    tmp_name = f.name
  _publish(tmp_name, path)


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
  """Writes `value` as indented JSON (atomically); non-JSON scalars become floats/str."""
  path = Path(path)

  def default(obj: Any) -> Any:
    if hasattr(obj, 'item'):  # numpy / tf scalars
      return obj.item()
    if hasattr(obj, 'tolist'):
      return obj.tolist()
    return str(obj)

  _atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True, default=default) + '\n')
  return path


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
  """Writes rows (dicts) as CSV; the header is the union of keys in first-seen order."""
  path = Path(path)
  fieldnames: list[str] = []
  for row in rows:
    fieldnames.extend(k for k in row if k not in fieldnames)
  with tempfile.NamedTemporaryFile('w', dir=path.parent, delete=False, suffix='.tmp', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    tmp_name = f.name
  _publish(tmp_name, path)
  return path


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
  """Reads a CSV written by `write_csv` (or TFF's CSV release manager) into dicts."""
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


_ROOT = Path(__file__).resolve().parents[1]


# Where the benchmarks' committed results live, relative to the project root (the one
# definition: scripts/bench_common and scripts/readme_tables build their paths from it).
RESULTS_DIR = 'docs/benchmarks'


def git_commit() -> dict[str, Any]:
  """The project's git commit and whether the work tree had uncommitted changes.

  Returns:
    {'git_commit': sha or 'unknown' (not a git checkout), 'git_dirty': bool or None}.
  """
  def git(*args: str) -> str | None:
    try:
      result = subprocess.run(['git', '-C', str(_ROOT), *args], capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
      return None
    return result.stdout.strip() if result.returncode == 0 else None

  commit = git('rev-parse', 'HEAD')
  if commit is None:
    return {'git_commit': 'unknown', 'git_dirty': None}
  # Tracked files only: run outputs and caches are not the code that made a result; nor
  # are the committed benchmark results, which a benchmark rewrites as it finishes (its
  # plot used to make the results it was about to write say "uncommitted changes").
  status = git('status', '--porcelain', '--untracked-files=no', '--', '.',
               f':(exclude){RESULTS_DIR}')
  return {'git_commit': commit, 'git_dirty': bool(status) if status is not None else None}


def provenance() -> dict[str, Any]:
  """What reproduces a result: the command line as typed and the project's commit."""
  # orig_argv keeps `-m module` (argv[0] would be the module's file path).
  return {'command': ' '.join(['python', *sys.orig_argv[1:]]), **git_commit()}


def machine_description() -> dict[str, Any]:
  """Facts about the machine that produced a result, for benchmark outputs."""
  info: dict[str, Any] = {
      'hostname': platform.node(),
      'platform': platform.platform(),
      'python': platform.python_version(),
      'cpu_count': os.cpu_count(),
  }
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          info['cpu_model'] = line.split(':', 1)[1].strip()
          break
    with open('/proc/meminfo') as f:
      info['memory_gib'] = round(int(f.readline().split()[1]) / 2**20, 1)
  except OSError:
    pass
  return info


def plot_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    panels: Iterable[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]] = (),
) -> Path:
  """Draws one or more line panels to a PNG.

  Args:
    series: Label -> (x values, y values) for the first panel.
    path: Output PNG path.
    title: Figure title.
    xlabel: X axis label (shared).
    ylabel: Y axis label of the first panel.
    panels: Further (ylabel, series) panels drawn side by side.

  Returns:
    The PNG path.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  all_panels = [(ylabel, series), *panels]
  fig, axes = plt.subplots(1, len(all_panels), figsize=(5.5 * len(all_panels), 4), squeeze=False)
  for ax, (panel_ylabel, panel_series) in zip(axes[0], all_panels):
    for label, (xs, ys) in panel_series.items():
      ax.plot(list(xs), list(ys), label=label, marker='.' if len(xs) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(panel_ylabel)
    ax.grid(alpha=0.3)
    if len(panel_series) > 1 or panel_series:
      ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
