"""Scaling: seconds per round and peak memory against clients per round and model size.

FedAvg on `mnist_digits` split IID into 200 clients (40 examples each), batch 20, one
local epoch, run through the recipes' own plumbing (`bench_harness.recipe_process`,
`training_loop.ClientDatasets`, `process.next`, timed by `bench_harness.alternate_rounds`):

* clients per round in (10, 50, 100, 200) with the `cnn` model;
* model size: `tiny` (7,850 parameters), `2nn` (199,210), `cnn_dropout` (1,199,882) and
  `cnn` (1,663,370), at 10 clients per round.

Each configuration runs in a fresh Python process with a fresh TFF worker, so that its
peak memory is its own: the peak resident set (VmHWM) of the Python process and of its
C++ worker, read from /proc. A least-squares line through each series gives the cost
per client (or per parameter) and R^2, how linear the growth is.

  python -m scripts.bench_scaling            # the benchmark (about 4 minutes on 2 idle cores)
  python -m scripts.bench_scaling --smoke    # a tiny wiring check (tests)

Outputs (default docs/benchmarks/scaling/): results.json, results.csv, table.md, scaling.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from absl import flags

from core.errors import UserError
from recipes import cli
from recipes import training_loop
from scripts import bench_common
from scripts import bench_harness
from scripts import bench_timing
from tasks.models import MODELS

# TFF at import (bench_harness imports it), as the recipes do: TensorFlow imported later,
# inside absl's app.run, built broken Keras models here ("Attempt to convert a value
# (None)" in Flatten).
tff = bench_harness.tff

bench_harness.define_flags(
    'scaling', smoke_help='Tiny settings (synthetic task, 2 configurations): a wiring check.',
    rounds=3, warmup_rounds=1,
    num_clients=200, num_clients_help='mnist_digits clients (IID split of 7,000 examples).',
    model=None, clients_per_round=None)
_CLIENTS = flags.DEFINE_list('clients_per_round', ['10', '50', '100', '200'], 'Client counts to sweep.')
_MODELS = flags.DEFINE_list('models', ['tiny', '2nn', 'cnn_dropout', 'cnn'], 'Models to sweep.')
_CLIENTS_MODEL = flags.DEFINE_enum('clients_model', 'cnn', list(MODELS),
                                   'Model of the clients-per-round sweep.')
_MODELS_CLIENTS = flags.DEFINE_integer('models_clients_per_round', 10,
                                      'Clients per round of the model sweep.', lower_bound=1)
_TIMEOUT = flags.DEFINE_float('timeout_seconds', 900, 'Limit per configuration (> 0).',
                              lower_bound=0.0)
_MEASURE = flags.DEFINE_string('measure', None, 'Internal: JSON of one configuration to measure in this process.')

SMOKE_SETTINGS = {'task': 'synthetic', 'num_clients': 8, 'clients_per_round': [2, 4],
                  'models': ['tiny'], 'clients_model': 'tiny', 'models_clients_per_round': 2,
                  'batch_size': 4, 'rounds': 1, 'warmup_rounds': 1}
_RESULT_PREFIX = 'SCALING_RESULT '


def measure_configuration(config: dict[str, Any]) -> dict[str, Any]:
  """Trains `config` for a few rounds in this process; returns its timings and peak memory."""
  task = bench_harness.create_task(config)
  recipes = bench_harness.FederatedContender(
      'recipes', bench_harness.recipe_process(task), training_loop.ClientDatasets(task),
      initial_weights=training_loop.initial_model_weights(task))
  recipes.start()
  worker = recipes.worker_pids[0]
  parameters = task.keras_model_fn().count_params()
  start_mib = {'python': bench_timing.memory_mib(field='VmRSS'),
               'worker': bench_timing.memory_mib(worker, 'VmRSS')}
  times = bench_harness.alternate_rounds(
      [recipes], list(task.train_data.client_ids), clients_per_round=config['clients_per_round'],
      rounds=config['rounds'], warmup_rounds=config['warmup_rounds'])[recipes.name]
  examples = int(recipes.output.metrics['client_work']['train']['num_examples'])
  peak = {'python': bench_timing.memory_mib(), 'worker': bench_timing.memory_mib(worker)}
  seconds = bench_timing.spread([t.wall for t in times])
  return {
      **config,
      'parameters': int(parameters),
      'examples_per_round': examples,
      'seconds_per_round': seconds['median'],
      'seconds_per_round_min': seconds['min'],
      'seconds_per_round_max': seconds['max'],
      'cpu_seconds_per_round': float(sorted(t.total_cpu for t in times)[len(times) // 2]),
      'python_start_mib': round(start_mib['python'], 1),
      'worker_start_mib': round(start_mib['worker'], 1),
      'python_peak_mib': round(peak['python'], 1),
      'worker_peak_mib': round(peak['worker'], 1),
      # The two peaks need not coincide: their sum bounds the peak of both together.
      'peak_mib': round(peak['python'] + peak['worker'], 1),
  }


def _run_child(config: dict[str, Any], timeout: float) -> dict[str, Any]:
  command = [sys.executable, '-m', 'scripts.bench_scaling', f'--measure={json.dumps(config)}']
  stdout, _ = bench_common.run_command(
      command, timeout=timeout, what=f'{config["model"]} x {config["clients_per_round"]} clients')
  lines = [l for l in stdout.splitlines() if l.startswith(_RESULT_PREFIX)]
  if not lines:
    raise UserError(f'the measurement of {config} printed no result')
  return json.loads(lines[-1][len(_RESULT_PREFIX):])


def _fits(rows: Sequence[dict[str, Any]], x_key: str) -> dict[str, Any]:
  if len(rows) < 2:
    return {}
  xs = [r[x_key] for r in rows]
  return {'seconds_per_round': bench_timing.fit_line(xs, [r['seconds_per_round'] for r in rows]),
          'cpu_seconds_per_round': bench_timing.fit_line(xs, [r['cpu_seconds_per_round'] for r in rows]),
          'peak_mib': bench_timing.fit_line(xs, [r['peak_mib'] for r in rows]),
          'worker_peak_mib': bench_timing.fit_line(xs, [r['worker_peak_mib'] for r in rows])}


def plot(by_clients: Sequence[dict[str, Any]], by_model: Sequence[dict[str, Any]],
         fits: dict[str, Any], path: Path, *, title: str) -> None:
  """Seconds per round and peak memory against clients per round and against parameters."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  with bench_common.figure(path, title=title, rows=2, columns=2, size=(11, 8)) as axes:
    panels = [
        (axes[0][0], by_clients, 'clients_per_round', 'seconds_per_round', 'seconds per round', 'clients per round'),
        (axes[0][1], by_clients, 'clients_per_round', 'peak_mib', 'peak memory, MiB (Python + worker)', 'clients per round'),
        (axes[1][0], by_model, 'parameters', 'seconds_per_round', 'seconds per round', 'model parameters'),
        (axes[1][1], by_model, 'parameters', 'peak_mib', 'peak memory, MiB (Python + worker)', 'model parameters'),
    ]
    for ax, rows, x_key, y_key, ylabel, xlabel in panels:
      if not rows:
        ax.set_visible(False)
        continue
      xs = np.array([r[x_key] for r in rows], dtype=float)
      ax.plot(xs, [r[y_key] for r in rows], 'o', label='measured')
      for r in rows:
        if x_key == 'parameters':
          ax.annotate(r['model'], (r[x_key], r[y_key]), fontsize=7, xytext=(3, 3), textcoords='offset points')
      fit = fits.get(x_key, {}).get(y_key)
      if fit:
        line = np.linspace(0, xs.max(), 50)
        ax.plot(line, fit['slope'] * line + fit['intercept'], '--',
                label=f'least squares, R^2 = {fit["r2"]:.3f}')
      if y_key == 'seconds_per_round':
        ax.errorbar(xs, [r['seconds_per_round'] for r in rows],
                    yerr=[[r['seconds_per_round'] - r['seconds_per_round_min'] for r in rows],
                          [r['seconds_per_round_max'] - r['seconds_per_round'] for r in rows]],
                    fmt='none', ecolor='gray', capsize=3)
      ax.set_xlabel(xlabel)
      ax.set_ylabel(ylabel)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)


COLUMNS = [
    ('sweep', 'sweep', ''),
    ('model', 'model', ''),
    ('parameters', 'parameters', ','),
    ('clients_per_round', 'clients/round', ''),
    ('examples_per_round', 'examples/round', ''),
    ('seconds_per_round', 's/round (median)', '.2f'),
    ('cpu_seconds_per_round', 'CPU s/round', '.2f'),
    ('python_peak_mib', 'Python peak MiB', '.0f'),
    ('worker_peak_mib', 'worker peak MiB', '.0f'),
    ('peak_mib', 'peak MiB (sum)', '.0f'),
]


def _fit_table(fits: dict[str, Any]) -> str:
  rows = []
  for x_key, unit in (('clients_per_round', 'client'), ('parameters', 'parameter')):
    for y_key, label in (('seconds_per_round', 's/round'), ('cpu_seconds_per_round', 'CPU s/round'),
                         ('peak_mib', 'peak MiB')):
      fit = fits.get(x_key, {}).get(y_key)
      if fit:
        scale = 1e6 if x_key == 'parameters' else 1
        rows.append({'series': f'{label} vs {x_key}',
                     'slope': f'{fit["slope"] * scale:.4g} per {"million parameters" if scale > 1 else unit}',
                     'intercept': f'{fit["intercept"]:.3g}', 'r2': fit['r2']})
  return bench_common.markdown_table(
      rows, [('series', 'series', ''), ('slope', 'slope', ''), ('intercept', 'intercept', ''),
             ('r2', 'R^2', '.3f')])


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  bench_common.validate_flags()
  if _TIMEOUT.value <= 0:
    raise UserError(f'--timeout_seconds must be positive, got {_TIMEOUT.value}')
  unknown = sorted(set(_MODELS.value) - set(MODELS))
  if unknown:
    raise UserError(f'unknown --models={",".join(unknown)}; choose from {", ".join(MODELS)}')
  bench_common.positive_ints(_CLIENTS.value, 'clients_per_round')
  if _MEASURE.value is not None:
    try:
      json.loads(_MEASURE.value)
    except ValueError:
      raise UserError('--measure must be JSON (it is internal: the sweep passes it)') from None


def main(argv: Sequence[str]) -> None:
  del argv
  if _MEASURE.value:
    print(_RESULT_PREFIX + json.dumps(measure_configuration(json.loads(_MEASURE.value))), flush=True)
    return
  settings = bench_common.settings_from_flags({
      'task': 'mnist_digits', 'num_clients': flags.FLAGS.num_clients,
      'clients_per_round': bench_common.positive_ints(_CLIENTS.value, 'clients_per_round'),
      'models': list(_MODELS.value), 'clients_model': _CLIENTS_MODEL.value,
      'models_clients_per_round': _MODELS_CLIENTS.value, 'batch_size': flags.FLAGS.batch_size,
      'rounds': flags.FLAGS.rounds, 'warmup_rounds': flags.FLAGS.warmup_rounds,
  }, SMOKE_SETTINGS, partition='iid', client_epochs=1)
  if max(settings['clients_per_round'] + [settings['models_clients_per_round']]) > settings['num_clients']:
    raise UserError(f'clients per round cannot exceed --num_clients={settings["num_clients"]}')
  base = {k: settings[k] for k in ('task', 'num_clients', 'batch_size', 'rounds', 'warmup_rounds')}
  plan = [('clients', {**base, 'model': settings['clients_model'], 'clients_per_round': c})
          for c in settings['clients_per_round']]
  plan += [('model', {**base, 'model': m, 'clients_per_round': settings['models_clients_per_round']})
           for m in settings['models']]

  load = bench_common.LoadMonitor()
  measured: dict[str, dict[str, Any]] = {}
  rows = []
  for sweep, config in plan:
    key = json.dumps(config, sort_keys=True)
    if key not in measured:  # A configuration in both sweeps runs once.
      print(f'scaling: {config["model"]}, {config["clients_per_round"]} clients per round', flush=True)
      measured[key] = _run_child(config, _TIMEOUT.value)
      load.sample()
    rows.append({'sweep': sweep, **measured[key]})
  by_clients = sorted((r for r in rows if r['sweep'] == 'clients'), key=lambda r: r['clients_per_round'])
  by_model = sorted((r for r in rows if r['sweep'] == 'model'), key=lambda r: r['parameters'])
  fits = {'clients_per_round': _fits(by_clients, 'clients_per_round'),
          'parameters': _fits(by_model, 'parameters')}

  title = (f'FedAvg on {settings["task"]} ({settings["num_clients"]} IID clients), batch '
           f'{settings["batch_size"]}, 1 epoch; clients sweep with {settings["clients_model"]}, '
           f'model sweep at {settings["models_clients_per_round"]} clients/round')
  bench_common.publish(
      Path(flags.FLAGS.results_dir), benchmark='scaling', settings=settings, rows=rows,
      table=bench_common.markdown_table(rows, COLUMNS) + '\n\nLinear fits:\n\n' + _fit_table(fits),
      title=title, load=load, extra={'fits': fits}, plot_name='scaling.png',
      plot=lambda path: plot(by_clients, by_model, fits, path, title=title))


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
