"""Writes the README's result tables from the committed `docs/benchmarks/*/results.json`.

    python -m scripts.readme_tables            # rewrite the generated README sections
    python -m scripts.readme_tables --check    # exit 1 if the README and the results differ

Every number that the README reports from a benchmark sits between a pair of markers,
`<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, and is rendered here from the
results file alone (no rounding done by hand, no number typed in), followed by where it
comes from: the file, the command, the commit, the machine load. `tests/test_readme.py`
runs the check, so a README edited by hand, or results re-run without regenerating the
README, fail the tests.

Pure JSON and string work: imports neither TensorFlow nor TFF.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from core import outputs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
RESULTS = ROOT / outputs.RESULTS_DIR
_MARKER = re.compile(r'(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)',
                     re.DOTALL)

Renderer = Callable[[], str]


def load(name: str) -> dict[str, Any]:
  """The results.json of benchmark folder `name` (e.g. 'communication/tuning')."""
  return json.loads((RESULTS / name / 'results.json').read_text())


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, Callable[[Mapping[str, Any]], str]]]) -> str:
  """A Markdown table; each column is (header, row -> cell text)."""
  lines = ['| ' + ' | '.join(h for h, _ in columns) + ' |', '|' + '|'.join('---' for _ in columns) + '|']
  lines += ['| ' + ' | '.join(cell(r) for _, cell in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def fmt(value: Any, spec: str = '', missing: str = '-') -> str:
  return missing if value is None else format(value, spec)


def provenance(name: str, record: Mapping[str, Any] | None = None) -> str:
  """One line: which file, command, commit, seed and load the numbers above come from."""
  record = record if record is not None else load(name)
  load_info = record.get('load', {})
  start, peak = load_info.get('load_average_1min_at_start'), load_info.get('load_average_1min_peak')
  if start is not None:  # Some files' peak leaves out the reading at the start.
    peak = max([start, peak or start, *load_info.get('load_average_1min_samples', [])])
  commit = record.get('git_commit')
  dirty = record.get('git_dirty') or (commit or '').endswith('-dirty')
  commit_text = (f'commit `{commit[:10]}`{" + uncommitted changes" if dirty else ""}'
                 if commit and commit != 'unknown' else 'commit not recorded (run before results recorded it)')
  parts = [f'`docs/benchmarks/{name}/results.json`', f'`{record.get("command", "?")}`', commit_text]
  if start is not None:
    parts.append(f'load average {start:.1f} at start, {peak:.1f} peak on {load_info.get("cores", "?")} cores')
  if record.get('finished'):
    parts.append(f'finished {record["finished"]}')
  return '<sub>From ' + '; '.join(parts) + '.</sub>'


# --- One renderer per generated section --------------------------------------------------------


def demo() -> str:
  record = load('demo')
  stats = record.get('statistics', {})

  def stat(key: str, spec: str) -> str:
    s = stats.get(key)
    return '-' if not s else f'{s["median"]:{spec}} [{s["p25"]:{spec}}-{s["p75"]:{spec}}]'

  rows = record['results']
  body = table(rows, [
      ('seed', lambda r: str(r['seed'])),
      ('rounds to 95% validation accuracy', lambda r: fmt(r['rounds_to_target'], '', f'not reached in {r["rounds_run"]}')),
      ('test accuracy there', lambda r: fmt(r['test_accuracy'], '.4f')),
      ('training s (sum of rounds)', lambda r: fmt(r['train_seconds'], '.0f')),
      ('whole process s', lambda r: fmt(r['process_seconds'], '.0f')),
  ])
  return (f'{body}\n\nMedian [quartiles] over {len(rows)} seed{"s" if len(rows) > 1 else ""}: {stat("rounds_to_target", ".0f")} '
          f'rounds, test accuracy {stat("test_accuracy", ".4f")}, {stat("train_seconds", ".0f")} s '
          f'of training, {stat("process_seconds", ".0f")} s for the whole process.\n\n'
          + provenance('demo', record))


# The main job's clients share the 7,000 training digits that are not validation digits.
_DEMO_TRAINING_DIGITS = 7_000
DEMO_TARGET_SECONDS = 90


def demo_speed() -> str:
  """Where the main job's time goes: its per-example cost beside Keras fit's (two results files)."""
  record, overhead_record = load('demo'), load('overhead')
  flags = dict(flag.removeprefix('--').split('=', 1) for flag in record['settings']['flags'])
  passes_per_round = (int(flags['clients_per_round']) * _DEMO_TRAINING_DIGITS // int(flags['num_clients'])
                      * int(flags['client_epochs_per_round']))
  rows = record['results']
  ms_per_pass = sorted(1000 * r['train_seconds'] / (r['rounds_run'] * passes_per_round) for r in rows)
  median_seconds = record['statistics']['process_seconds']['median']
  by_contender = {r['contender']: r for r in overhead_record['results']}
  keras_ms = 1000 / by_contender['keras_fit']['examples_per_second']
  recipes = by_contender['recipes']
  recipes_ms = 1000 / recipes['examples_per_second']
  rounds = record['statistics']['rounds_to_target']['median']
  return (
      f'- The main job takes {median_seconds:.0f} s (median of {len(rows)} seeds), {median_seconds / DEMO_TARGET_SECONDS:.1f}x '
      f'the {DEMO_TARGET_SECONDS} s it should. A round is {passes_per_round:,} example passes of the CNN '
      f'({flags["clients_per_round"]} clients x {_DEMO_TRAINING_DIGITS // int(flags["num_clients"])} digits x '
      f'{flags["client_epochs_per_round"]} epochs, batch {flags["client_batch_size"]}); per pass the job spent '
      f'{" / ".join(f"{v:.2f}" for v in ms_per_pass)} ms (seeds sorted), training time only.\n'
      f'- That is about Keras `fit`\'s own cost for this model on this machine: {keras_ms:.2f} ms per example '
      f'pass at batch 20 (a FedAvg round of the table above: {recipes_ms:.2f} ms). The time is the CNN\'s '
      f'arithmetic on 2 cores, not the federated plumbing, so no change to the plumbing can bring the '
      f'{rounds:.0f} rounds (median) down to {DEMO_TARGET_SECONDS} s. That needs about '
      f'{median_seconds / DEMO_TARGET_SECONDS:.0f}x fewer example passes (fewer rounds or epochs, or a smaller '
      f'model), which would change the experiment; it is kept as McMahan et al. ran it.\n'
      f'- Profile of the FedAvg round above (CPU seconds per round, medians): {recipes["cpu_seconds_per_round_median"]:.2f} '
      f'in all, of which {recipes["worker_cpu_seconds_per_round_median"]:.2f} in TFF\'s C++ worker (the model\'s '
      f'TensorFlow kernels) and {recipes["cpu_seconds_per_round_median"] - recipes["worker_cpu_seconds_per_round_median"]:.2f} '
      f'in the Python driver (sampling, datasets, metrics, logs); Keras `fit` uses '
      f'{by_contender["keras_fit"]["cpu_seconds_per_round_median"]:.2f}. The gap to Keras '
      f'({recipes["ratio_vs_keras_median"]:.2f}x its examples/s, median) is in the worker (its graph runs the client loop and the model), not in Python.\n\n'
      + provenance('demo', record) + '<br>\n' + provenance('overhead', overhead_record))


def _on_validation(record: Mapping[str, Any]) -> bool:
  """Whether a communication run stopped on validation (results before the split: test)."""
  return 'curve_validation_accuracy' in record['results'][0] or 'best_validation_accuracy' in record['results'][0]


def _communication_columns(record: Mapping[str, Any]) -> list:
  split = 'validation' if _on_validation(record) else 'test: before the validation split'
  return [
      ('algorithm', lambda r: r['algorithm']),
      ('E', lambda r: str(r['E'])),
      ('B', lambda r: str(r['B'])),
      ('learning rates', lambda r: r['learning_rates']),
      (f'rounds to target ({split})', lambda r: fmt(r['rounds_to_target'], '', f'not reached in {r["rounds_run"]}')),
  ]


def communication() -> str:
  record = load('communication')
  accuracy_key = 'final_test_accuracy'
  body = table(record['results'], [
      *_communication_columns(record),
      ('FedSGD rounds / rounds', lambda r: fmt(r.get('speedup_vs_fedsgd'), '.2f')),
      ('train + eval s', lambda r: fmt(r['train_seconds'], '.0f')),
      ('s / round', lambda r: fmt(r['seconds_per_round'], '.2f')),
      ('test accuracy at stop' if _on_validation(record) else 'final test acc',
       lambda r: fmt(r[accuracy_key], '.4f')),
  ])
  return body + '\n\n' + provenance('communication', record)


def communication_tuning() -> str:
  # One results file per `--tune` run (the grid may be run in parts, e.g. with --only).
  parts = sorted(p.parent.relative_to(RESULTS).as_posix()
                 for p in (RESULTS / 'communication' / 'tuning').rglob('results.json'))
  blocks = []
  # One table per file: a grid chosen on validation and one from before the split (chosen on
  # test) must not read as one table.
  for part in parts:
    record = load(part)
    rows = record['results']
    on_validation = 'best_validation_accuracy' in rows[0]
    best = 'best_validation_accuracy' if on_validation else 'best_test_accuracy'
    body = table(rows, [
        *_communication_columns(record),
        (f'best {"validation" if on_validation else "test"} acc', lambda r, best=best: fmt(r[best], '.4f')),
        ('s / round', lambda r: fmt(r['seconds_per_round'], '.2f')),
        ('chosen', lambda r: 'yes' if r['chosen'] else ''),
    ])
    chosen_on = 'validation accuracy' if on_validation else 'test accuracy (before the validation split)'
    blocks.append(f'`{part}`: chosen on {chosen_on}\n\n{body}\n\n{provenance(part, record)}')
  return '\n\n'.join(blocks)


def peer() -> str:
  record = load('peer')
  summary = record.get('summary', {})
  body = table(record['results'], [
      ('system', lambda r: r['system']),
      ('run', lambda r: str(r['repeat'])),
      ('s / round (rounds 2+)', lambda r: fmt(r['seconds_per_round'], '.3f')),
      ('s / round (all)', lambda r: fmt(r['seconds_per_round_all'], '.3f')),
      ('round 1 s', lambda r: fmt(r['first_round_seconds'], '.1f')),
      ('process s', lambda r: fmt(r['process_seconds'], '.0f')),
      ('final test acc', lambda r: fmt(r['final_test_accuracy'], '.4f')),
  ])
  line = (f'Mean over the runs: fedrecipes {summary["fedrecipes_seconds_per_round"]:.3f} s per round, '
          f'Flower {summary["flower_seconds_per_round"]:.3f} s: Flower / fedrecipes = '
          f'{summary["speedup_flower_over_fedrecipes"]:.2f}x (target {summary["target_speedup"]:g}x: '
          f'{"met" if summary["target_met"] else "not met"}); final test accuracy fedrecipes '
          f'{summary["fedrecipes_final_test_accuracy"]:.4f}, Flower {summary["flower_final_test_accuracy"]:.4f}.')
  return f'{body}\n\n{line}\n\n' + provenance('peer', record)


def robustness() -> str:
  record = load('robustness')
  runs = record['results']
  attacks = list(dict.fromkeys(r['attack'] for r in runs))
  aggregators = list(dict.fromkeys(r['aggregator'] for r in runs))
  accuracy = {(r['aggregator'], r['attack']): r['final_test_accuracy'] for r in runs}
  body = table([{'aggregator': a} for a in aggregators], [
      ('aggregator', lambda r: r['aggregator']),
      *[(attack.replace('_', ' ').replace(':', ' x'),
         (lambda attack: lambda r: fmt(accuracy.get((r['aggregator'], attack)), '.4f'))(attack))
        for attack in attacks],
  ])
  return body + '\n\n' + provenance('robustness', record)


def overhead() -> str:
  record = load('overhead')
  body = table(record['results'], [
      ('contender', lambda r: r['contender']),
      ('what it adds', lambda r: r.get('description', '')),
      ('examples/s vs Keras fit: median [quartiles]', lambda r: r['ratio_text']),
      ('best round vs Keras', lambda r: fmt(r.get('best_round_ratio_vs_keras'), '.2f')),
      ('s/round median', lambda r: fmt(r['seconds_per_round_median'], '.3f')),
      ('CPU ratio vs Keras', lambda r: fmt(r.get('cpu_ratio_vs_keras_median'), '.2f')),
  ])
  return body + '\n\n' + provenance('overhead', record)


def scaling() -> str:
  record = load('scaling')
  rows = [r for r in record['results'] if r['sweep'] == 'clients']
  body = table(rows, [
      ('clients/round', lambda r: str(r['clients_per_round'])),
      ('model', lambda r: r['model']),
      ('s/round (median)', lambda r: fmt(r['seconds_per_round'], '.2f')),
      ('CPU s/round', lambda r: fmt(r['cpu_seconds_per_round'], '.2f')),
      ('peak MiB, Python + worker', lambda r: fmt(r['peak_mib'], ',.0f')),
  ])
  return body + '\n\n' + provenance('scaling', record)


def remote() -> str:
  record = load('remote')
  body = table(record['results'], [
      ('worker', lambda r: r['worker']),
      ('s/round: median [quartiles]', lambda r: r['seconds_text']),
      ('best round s', lambda r: fmt(r['best_seconds'], '.3f')),
      ('remote/local per round', lambda r: r['ratio_text']),
      ('payload MB/round', lambda r: fmt(r['payload_mb_per_round'], '.1f')),
  ])
  return body + '\n\n' + provenance('remote', record)


def federated_eval() -> str:
  record = load('federated_eval')
  stats = ('mean', 'p10', 'p50', 'p90', 'min')
  body = table(record['results'], [
      ('partition', lambda r: r['partition']),
      ('rounds', lambda r: str(r['rounds'])),
      ('centralized validation acc', lambda r: fmt(r['validation_accuracy'], '.4f')),
      *[(f'per-client {s}', (lambda s: lambda r: fmt(r[f'fed_eval_accuracy_{s}'], '.4f'))(s))
        for s in stats],
      ('clients evaluated', lambda r: str(r['fed_eval_clients'])),
      ('test acc (end)', lambda r: fmt(r['test_accuracy'], '.4f')),
  ])
  return body + '\n\n' + provenance('federated_eval', record)


def population() -> str:
  record = load('population')

  def q(r: Mapping[str, Any], key: str, spec: str) -> str:
    return f'{r[key]:{spec}} [{r[key + "_p25"]:{spec}}-{r[key + "_p75"]:{spec}}]'

  body = table(record['results'], [
      ('clients', lambda r: f'{r["population"]:,}'),
      ('Python peak MiB', lambda r: q(r, 'python_peak_mib', '.0f')),
      ('worker peak MiB', lambda r: q(r, 'worker_peak_mib', '.0f')),
      ('peak MiB (sum)', lambda r: q(r, 'peak_mib', '.0f')),
      ('vs smallest', lambda r: f'{r["peak_ratio_vs_smallest"]:.2f}x'),
      ('start-up s', lambda r: q(r, 'startup_seconds', '.1f')),
      ('s/round', lambda r: q(r, 'median_round_seconds', '.2f')),
      ('create task KiB', lambda r: fmt(r.get('create_task_peak_kib'), '.0f')),
  ])
  return (body + '\n\n(median [quartiles] over the runs of each population.)\n\n'
          + provenance('population', record))


def vertical() -> str:
  record = load('vertical')
  h = record['headline']
  psi_load = h['psi_load_average_1min']
  rows = [
      (f'PSI, {h["psi_ids_per_party"]:,} vs {h["psi_ids_per_party"]:,} IDs (half shared), wall '
       f'seconds, median [quartiles] of {h["psi_repeats"]}',
       f'{h["psi_seconds_median"]} [{h["psi_seconds_q1"]}-{h["psi_seconds_q3"]}] (load average '
       f'{min(psi_load):.1f}-{max(psi_load):.1f}); target < 10 s on an idle machine: '
       + ('met' if h['psi_seconds_median'] < 10 and max(psi_load) < 1 else 'not verified')),
      ('PSI, same runs, CPU seconds of all 3 processes, median [quartiles]',
       f'{h["psi_cpu_seconds_median"]} [{h["psi_cpu_seconds_q1"]}-{h["psi_cpu_seconds_q3"]}]'),
      ('training time, secure aggregation / plain (digits, 4 parties), ratio of medians '
       '[per-pair quartiles]',
       f'{h["training_overhead_ratio_median"]} [{h["training_overhead_ratio_per_pair_q1"]}-'
       f'{h["training_overhead_ratio_per_pair_q3"]}]'),
      ('fusion per minibatch of 64, secure (3 masking parties) / plain, microseconds',
       f'{h["fusion_microseconds_secure_median"]} / {h["fusion_microseconds_plain_median"]}'),
      *[(f'{label}: vertical / centralized / label party only',
         ' / '.join(str(h[f'{key}_accuracy_{m}']) for m in ('vertical', 'centralized', 'label_party_only')))
        for key, label in (('digits', 'digits, 4 parties'), ('breast_cancer', 'breast cancer, 3 parties'))],
  ]
  body = table([{'m': m, 'r': r} for m, r in rows],
               [('measurement', lambda x: x['m']), ('result', lambda x: x['r'])])
  return (f'Accuracy is the mean of seeds {", ".join(map(str, h["accuracy_seeds"]))}; wall times '
          'are inflated by other jobs under load, the CPU time is the PSI\'s own work.\n\n'
          + body + '\n\n' + provenance('vertical', record))


def vertical_psi() -> str:
  """The PSI alone, timed when the machine was quiet (`bench_vertical --psi_only`)."""
  record = load('vertical_psi')
  h = record['headline']
  start = record['load']['load_average_1min_at_start']
  n = h['psi_ids_per_party']
  quiet = start < 1.5  # Before our own 3 processes: other jobs held less than one core.
  verdict = ('met' if h['psi_seconds_median'] < 10 else 'not met') if quiet else 'not verified (machine busy)'
  rows = [
      (f'PSI, {n:,} vs {n:,} IDs (half shared), wall seconds, median [quartiles] of {h["psi_repeats"]}, '
       f'min-max', f'{h["psi_seconds_median"]} [{h["psi_seconds_q1"]}-{h["psi_seconds_q3"]}], '
       f'{h["psi_seconds_min"]}-{h["psi_seconds_max"]}; target < 10 s: {verdict}'),
      ('same runs, CPU seconds of all 3 processes, median [quartiles]',
       f'{h["psi_cpu_seconds_median"]} [{h["psi_cpu_seconds_q1"]}-{h["psi_cpu_seconds_q3"]}]'),
      ('load average (1 min) before the runs / after each run',
       f'{start:.2f} / ' + ', '.join(f'{v:.2f}' for v in h['psi_load_average_1min'])),
  ]
  body = table([{'m': m, 'r': r} for m, r in rows],
               [('measurement', lambda x: x['m']), ('result', lambda x: x['r'])])
  return body + '\n\n' + provenance('vertical_psi', record)


def workers() -> str:
  record = load('workers')
  body = table(record['results'], [
      ('workers', lambda r: str(r['workers'])),
      ('clients/round', lambda r: str(r['clients_per_round'])),
      ('s/round: median [quartiles]', lambda r: r['seconds_text']),
      ('driver CPU s/round', lambda r: fmt(r['driver_cpu_seconds_median'], '.2f')),
      ('workers CPU s/round (sum)', lambda r: fmt(r['workers_cpu_seconds_median'], '.2f')),
      ('peak MiB per worker', lambda r: ', '.join(f'{m:.0f}' for m in r['worker_peak_mib'])),
      ('load (1 min)', lambda r: fmt(r['load_1min'], '.1f')),
  ])
  return body + '\n\n' + provenance('workers', record)


RENDERERS: dict[str, Renderer] = {
    'vertical': vertical,
    'vertical-psi': vertical_psi,
    'population': population,
    'federated-eval': federated_eval,
    'demo': demo,
    'demo-speed': demo_speed,
    'communication': communication,
    'communication-tuning': communication_tuning,
    'peer': peer,
    'robustness': robustness,
    'overhead': overhead,
    'scaling': scaling,
    'remote': remote,
    'workers': workers,
}


def render(readme: str, renderers: Mapping[str, Renderer] = RENDERERS) -> str:
  """`readme` with every generated section rewritten; unknown section names are errors."""
  def replace(match: re.Match[str]) -> str:
    name = match.group('name')
    if name not in renderers:
      raise KeyError(f'README section generated:{name} has no renderer in scripts/readme_tables.py')
    return f'{match.group(1)}{renderers[name]()}\n{match.group(4)}'
  return _MARKER.sub(replace, readme)


def sections(readme: str) -> list[str]:
  """Names of the generated sections in `readme`, in order."""
  return [m.group('name') for m in _MARKER.finditer(readme)]


def main(argv: Sequence[str]) -> int:
  text = README.read_text()
  fresh = render(text)
  if '--check' in argv:
    if fresh != text:
      print('README.md differs from docs/benchmarks/*/results.json; run '
            '`python -m scripts.readme_tables`', file=sys.stderr)
      return 1
    return 0
  README.write_text(fresh)
  print(f'README.md: {len(sections(fresh))} generated sections written')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
