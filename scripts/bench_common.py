"""What the benchmark scripts (`scripts/bench_*.py`) share: running recipe binaries, results files.

Each benchmark runs real recipe binaries as subprocesses (so it also exercises them), reads
the `summary.json` and `metrics.csv` they leave, and writes into its results folder:
`results.json` (settings, machine, load, every run's numbers and curves), `results.csv`
(one row per run), PNG plots, and a Markdown table that it also prints (`publish`).

The timing drivers (overhead, remote, scaling, workers, population) also share their
flags from here (`define_flags`: `--smoke`, `--rounds`, `--warmup_rounds`,
`--results_dir`) and the way `--smoke` replaces settings (`settings_from_flags`); the
in-process ones take the rest of their harness from `scripts/bench_harness.py`.

Import-safe without TensorFlow Federated: `scripts/bench_flower.py` runs in the separate
Flower environment (`.venv-flower`) and uses these helpers too.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import flags

from core import outputs
from core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# Set only in a benchmark that the tests forked from their binary server (see run_command).
_TEST_FORK_SERVER = 'FEDRECIPES_TEST_FORK_SERVER'
# Committed results (small: JSON, CSV, PNG) and the runs' own outputs (checkpoints,
# TensorBoard: large, git-ignored under /runs/).
RESULTS_ROOT = ROOT / outputs.RESULTS_DIR
RUNS_ROOT = ROOT / 'runs' / 'benchmarks'
# The separate environment of the Flower peer (scripts/setup_flower.sh).
FLOWER_PYTHON = ROOT / '.venv-flower' / 'bin' / 'python'

# The flags that `define_flags` defines belong to the driver that calls it (its `--help`
# lists them), not to this module.
flags.disclaim_key_flags()

# (key in a result row, column header, format of a present value)
Column = tuple[str, str, str]


def define_flags(benchmark: str, *, smoke_help: str, rounds: int,
                 rounds_help: str = 'Timed rounds per configuration.',
                 warmup_rounds: int | None = None) -> None:
  """Defines the flags every timing driver has; call once, when the driver is imported.

  `--smoke` (tiny settings: a wiring check that a test runs), `--rounds`,
  `--warmup_rounds` (untimed rounds first; only if given a default) and `--results_dir`
  (default docs/benchmarks/<benchmark>). They belong to the calling driver: its
  `--help` lists them.

  Args:
    benchmark: The benchmark's name: its results folder.
    smoke_help: What `--smoke` shrinks, for `--help`.
    rounds: Default of `--rounds`.
    rounds_help: Help of `--rounds`.
    warmup_rounds: Default of `--warmup_rounds`; None: the driver has no such flag.
  """
  flags.DEFINE_bool('smoke', False, smoke_help)
  flags.DEFINE_integer('rounds', rounds, rounds_help, lower_bound=1)
  if warmup_rounds is not None:
    flags.DEFINE_integer('warmup_rounds', warmup_rounds,
                         'Untimed rounds first (tracing, compilation, caches).', lower_bound=0)
  flags.DEFINE_string('results_dir', str(RESULTS_ROOT / benchmark), 'Where results go.')


def validate_flags() -> None:
  """Checks of `define_flags`' flags that bounds cannot express (see `recipes.cli.run`)."""
  if not flags.FLAGS.results_dir.strip():
    raise UserError('--results_dir must not be empty')


def settings_from_flags(values: Mapping[str, Any], smoke_settings: Mapping[str, Any],
                        **fixed: Any) -> dict[str, Any]:
  """A driver's settings: `values` (read from its flags), `smoke_settings` over them under
  `--smoke`, then `fixed` (settings no flag changes), and `smoke` itself."""
  smoke = flags.FLAGS.smoke
  return {**values, **(smoke_settings if smoke else {}), **fixed, 'smoke': smoke}


def positive_ints(values: Sequence[str], flag: str) -> list[int]:
  """A list flag's values as positive integers.

  Raises:
    UserError: If one is not an integer, or not positive, or the list is empty.
  """
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    numbers = []
  if not numbers or min(numbers) < 1:
    raise UserError(f'--{flag} must be a list of positive integers, got {",".join(values)}')
  return numbers


def subprocess_env(**extra: str) -> dict[str, str]:
  """The environment of child runs: the project importable, TensorFlow's C++ chatter off."""
  pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH')) if p)
  return {**os.environ, 'PYTHONPATH': pythonpath, 'TF_CPP_MIN_LOG_LEVEL': '3', **extra}


def run_command(command: Sequence[str], *, timeout: float, what: str) -> tuple[str, float]:
  """Runs a command with piped output; returns (stdout, wall seconds).

  Pipes are deliberate: a child that leaked a TFF worker holding them open would hang
  (and hit the timeout) here instead of passing unnoticed. (Under the tests, a benchmark
  forked by their binary server has its `python -m` runs forked by it too, into files;
  the tests look for leaked workers themselves.)

  Raises:
    UserError: If the command fails or times out; the message ends with its last stderr line.
  """
  started = time.perf_counter()
  try:
    if os.environ.get(_TEST_FORK_SERVER) and list(command[:2]) == [sys.executable, '-m']:
      # Under the tests: the benchmark itself was forked by their binary server, which
      # forks its runs too (tests/binary_server.py), without seconds of imports per run.
      from tests import binary_server  # pylint: disable=g-import-not-at-top
      result = binary_server.run_forked(command, cwd=ROOT, env=subprocess_env(), timeout=timeout)
    else:
      result = subprocess.run(
          list(command), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
          env=subprocess_env(), stdin=subprocess.DEVNULL)
  except subprocess.TimeoutExpired as e:
    raise UserError(f'{what} did not finish within {timeout:.0f} s') from e
  seconds = time.perf_counter() - started
  if result.returncode != 0:
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    last = lines[-1] if lines else '(no output)'
    raise UserError(f'{what} failed with exit code {result.returncode}: {last}')
  return result.stdout, seconds


def run_recipe(
    module: str,
    flags: Sequence[str],
    *,
    runs_dir: Path,
    name: str,
    timeout: float = 3600,
    reuse: bool = False,
) -> dict[str, Any]:
  """Runs `python -m <module> <flags>` into `runs_dir/name`; returns what the run left.

  Args:
    reuse: Resuming a benchmark: a run already finished in `runs_dir/name` by the same
      command at the same commit (clean work tree) is read back instead of run again; an
      unfinished one (killed with the benchmark) is moved aside and run again from round 0.

  Returns:
    {'summary': summary.json, 'rows': metrics.csv rows, 'process_seconds': wall seconds
    of the whole process (start-up included, None for a reused run), 'output_dir': the
    run directory, 'reused': whether it was read back}.
  """
  command = [sys.executable, '-m', module, *flags, '--progress=false',
             f'--root_output_dir={runs_dir}', f'--experiment_name={name}']
  out = runs_dir / name
  reused = reuse and _finished_run(out, command)
  seconds = None
  if not reused:
    if reuse and out.exists():
      aside = out.with_name(f'{name}.unfinished-{datetime.datetime.now():%Y%m%d-%H%M%S}')
      out.rename(aside)
      print(f'  {name}: unfinished run moved to {aside.name}; running it again', flush=True)
    _, seconds = run_command(command, timeout=timeout, what=f'{module} ({name})')
  return {
      'summary': json.loads((out / 'summary.json').read_text()),
      'rows': outputs.read_csv(out / 'metrics.csv'),
      'process_seconds': seconds,
      'output_dir': out,
      'reused': reused,
  }


def _finished_run(out: Path, command: Sequence[str]) -> bool:
  """Whether `out` holds a finished run of `command` at this commit, with a clean tree.

  Raises:
    UserError: If `out` holds a finished run of another command or commit (reusing it
      would mix settings or code in one table).
  """
  try:
    summary = json.loads((out / 'summary.json').read_text())
  except (OSError, ValueError):
    return False  # Not there, or cut off mid-write: the run did not finish.
  here = outputs.git_commit()
  expected = ' '.join(['python', *command[1:]])
  if summary.get('command') != expected:
    raise UserError(f'cannot reuse {out}: it ran another command ({summary.get("command")})')
  if summary.get('git_dirty') or here['git_dirty'] or summary.get('git_commit') != here['git_commit']:
    raise UserError(f'cannot reuse {out}: it ran at commit {summary.get("git_commit")} '
                    f'(dirty: {summary.get("git_dirty")}), this is {here["git_commit"]} '
                    f'(dirty: {here["git_dirty"]})')
  print(f'  {out.name}: finished before, reused', flush=True)
  return True


def curve(rows: Sequence[Mapping[str, str]], column: str = 'test_accuracy') -> tuple[list[int], list[float]]:
  """(rounds, values) of the rows where `column` was recorded."""
  pairs = [(int(r['round']), float(r[column])) for r in rows if r.get(column) not in (None, '')]
  return [p[0] for p in pairs], [p[1] for p in pairs]


def run_directory(root: Path) -> Path:
  """A fresh, timestamped directory under `root` (recipes refuse to overwrite a run)."""
  path = root / datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  path.mkdir(parents=True, exist_ok=False)
  return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
                   missing: str = '-') -> str:
  """Renders rows as a Markdown table; a value that is None (or absent) shows `missing`."""

  def cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
      return missing
    return format(value, fmt) if fmt else str(value)

  lines = ['| ' + ' | '.join(header for _, header, _ in columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  lines += ['| ' + ' | '.join(cell(r, key, fmt) for key, _, fmt in columns) + ' |' for r in rows]
  return '\n'.join(lines)


class LoadMonitor:
  """Records the machine's load average over a benchmark: how noisy its timings may be."""

  def __init__(self) -> None:
    self.start = os.getloadavg()
    self._samples: list[float] = []
    self._started = time.monotonic()

  def sample(self) -> None:
    """Records the 1-minute load average now (call between runs)."""
    self._samples.append(os.getloadavg()[0])

  def describe(self) -> dict[str, Any]:
    self.sample()
    cores = os.cpu_count() or 1
    peak = max([self.start[0], *self._samples])
    return {
        'cores': cores,
        'load_average_1min_at_start': round(self.start[0], 2),
        'load_average_1min_samples': [round(s, 2) for s in self._samples],
        'load_average_1min_peak': round(peak, 2),
        'benchmark_minutes': round((time.monotonic() - self._started) / 60, 1),
        'note': ('the machine was shared: load above the core count means other processes '
                 'competed for the CPUs, so absolute seconds are inflated; ratios measured '
                 'in the same run are the numbers to compare') if peak > cores else
                'load stayed within the core count',
    }


def write_results(
    results_dir: Path,
    *,
    benchmark: str,
    settings: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    table: str,
    load: LoadMonitor,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
  """Writes results.json (everything), results.csv (rows) and table.md (the printed table)."""
  results_dir.mkdir(parents=True, exist_ok=True)
  record = {
      'benchmark': benchmark,
      'finished': datetime.datetime.now().isoformat(timespec='seconds'),
      **outputs.provenance(),  # command, git commit
      'machine': outputs.machine_description(),
      'load': load.describe(),
      'settings': dict(settings),
      'results': list(rows),
      **(extra or {}),
  }
  paths = {
      'json': outputs.write_json(results_dir / 'results.json', record),
      'csv': outputs.write_csv(results_dir / 'results.csv', _flat_rows(rows)),
      'table': results_dir / 'table.md',
  }
  paths['table'].write_text(table + '\n')
  return paths


def publish(results_dir: Path, *, title: str, plot: Callable[[Path], Any], plot_name: str,
            **results: Any) -> dict[str, Path]:
  """Writes the results and the plot, then prints the title and the table.

  Args:
    results_dir: The results folder.
    title: Printed above the table (and usually the plot's title).
    plot: Draws the plot into the PNG path it is given.
    plot_name: The PNG's file name in `results_dir`.
    **results: The keyword arguments of `write_results` (benchmark, settings, rows,
      table, load, extra).

  Returns:
    The paths written: 'json', 'csv', 'table' and 'plot'.
  """
  paths = write_results(results_dir, **results)
  paths['plot'] = results_dir / plot_name
  plot(paths['plot'])
  print(f'\n{title}\n\n{results["table"]}\n')
  print('results: ' + ', '.join(str(p) for p in paths.values()), flush=True)
  return paths


def _flat_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  # Curves and other lists belong in the JSON, not in CSV cells.
  return [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


@contextlib.contextmanager
def figure(path: Path, *, title: str, rows: int = 1, columns: int = 1,
           size: tuple[float, float] = (6.5, 4.5), **subplots: Any) -> Iterator[Any]:
  """A matplotlib figure of `rows` x `columns` panels, saved to `path` (PNG) on exit.

  Yields the 2-D array of axes (`squeeze=False`); `subplots` go to `plt.subplots`
  (e.g. `sharey=True`). The title goes above all panels.
  """
  plt = _pyplot()
  fig, axes = plt.subplots(rows, columns, figsize=size, squeeze=False, **subplots)
  try:
    yield axes
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
  finally:
    plt.close(fig)


def _draw(ax, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], ylabel: str) -> None:
  for label, (xs, ys) in curves.items():
    ax.plot(list(xs), list(ys), label=label, linewidth=1.2, marker='.' if len(xs) < 30 else None)
  ax.set_xlabel('round')
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3, which='both')


def plot_accuracy_vs_rounds(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    *,
    title: str,
    target: float | None = None,
    zoom_below: float = 0.08,
) -> Path:
  """Test accuracy vs rounds of several runs; with a target, also a zoom near it.

  Args:
    curves: Label -> (rounds, test accuracies).
    path: PNG to write.
    title: Figure title.
    target: Draws a horizontal line at this accuracy, and adds a panel zoomed onto
      [target - zoom_below, 1].
    zoom_below: How far below the target the zoomed panel reaches.
  """
  panels = 2 if target is not None else 1
  with figure(path, title=title, columns=panels, size=(6.5 * panels, 4.5)) as axes:
    for i, ax in enumerate(axes[0]):
      _draw(ax, curves, 'test accuracy')
      if target is not None:
        ax.axhline(target, color='black', linestyle='--', linewidth=1, label=f'target {target:g}')
        if i == 1:
          ax.set_ylim(target - zoom_below, 1.0)
          ax.set_title('zoom near the target', fontsize=9)
    axes[0][-1].legend(fontsize=7, loc='lower right')
  return path


def plot_lines(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: Path, *,
               title: str, ylabel: str, log_y: bool = False) -> Path:
  """One panel of per-round values (e.g. seconds per round), optionally on a log axis."""
  with figure(path, title=title) as axes:
    ax = axes[0][0]
    _draw(ax, curves, ylabel)
    if log_y:
      ax.set_yscale('log')
    ax.legend(fontsize=8)
  return path
