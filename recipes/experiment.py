"""Shared recipe plumbing: the common flag groups, and flags -> task, optimizers, aggregator, run.

A recipe binary defines only its own flags and a `build_process(setup)` function; this
module does everything else:

    experiment.define_flags()
    def build_process(setup: experiment.Setup) -> tff.learning.templates.LearningProcess: ...
    def main(argv): experiment.run('fed_avg', build_process)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Callable

from absl import flags

import tasks
from core import outputs
from core import runtime
from core import tff_workers
from core.errors import UserError
from core.runtime import import_tff
from recipes import aggregator_registry
from recipes import benchmark_task_flags
from recipes import optimizers
from recipes import training_loop
from tasks.models import MODELS
from tasks.partition import PARTITIONS

tff = import_tff()

FLAGS = flags.FLAGS

# Flags that only steer a run (not what is learned): they may change on --resume.
_RUN_CONTROL_FLAGS = frozenset({
    'total_rounds', 'rounds_per_eval', 'rounds_per_checkpoint', 'target_accuracy', 'resume',
    'progress', 'experiment_name', 'root_output_dir', 'tff_worker', 'tff_worker_wait_seconds',
    'rounds_per_test',
})
_LOOPS = {
    'dataset_iterator': tff.learning.LoopImplementation.DATASET_ITERATOR,
    'dataset_reduce': tff.learning.LoopImplementation.DATASET_REDUCE,
}


def define_flags(
    *,
    client_optimizer: bool = True,
    client_learning_rate: float = 0.05,
    server_optimizer: str = 'sgd',
    server_learning_rate: float = 1.0,
    client_batch_size: int = 20,
    weighting: bool = True,
) -> None:
  """Defines the flag groups every recipe shares; arguments set recipe-specific defaults.

  Args:
    client_optimizer: Whether clients run an optimizer (False for FedSGD).
    client_learning_rate: Default client learning rate.
    server_optimizer: Default server optimizer.
    server_learning_rate: Default server learning rate.
    client_batch_size: Default local batch size (-1 = the client's whole dataset).
    weighting: Whether the recipe offers `--weighting` (example-weighted or uniform mean).
  """
  if 'task' in FLAGS:
    # Already defined (two recipe modules imported into one process, as in tests): only
    # the defaults differ between recipes.
    defaults = {'client_batch_size': client_batch_size, 'server_optimizer': server_optimizer,
                'server_learning_rate': server_learning_rate}
    if client_optimizer and 'client_learning_rate' in FLAGS:
      defaults['client_learning_rate'] = client_learning_rate
    for name, value in defaults.items():
      FLAGS.set_default(name, value)
    return
  if weighting:
    flags.DEFINE_enum(
        'weighting', 'num_examples', ['num_examples', 'uniform'],
        'num_examples: weight client updates by their example counts (FederatedWeightedAveraging); '
        'uniform: plain mean of client updates (FederatedAveraging).')
  # Task and data.
  flags.DEFINE_enum('task', 'mnist_digits', list(tasks.TASKS), 'Federated task (dataset + model).')
  flags.DEFINE_string('model', None, 'Model architecture; default: the task\'s own default.')
  flags.DEFINE_integer('num_clients', 100, 'mnist_digits/synthetic: number of clients to partition into.',
                       lower_bound=1)
  flags.DEFINE_enum('partition', 'shards', list(PARTITIONS),
                    'mnist_digits: how examples are split among clients (iid, shards = 2 labels '
                    'per client as in McMahan et al., dirichlet = label skew set by --alpha).')
  flags.DEFINE_float('alpha', 0.5, 'Dirichlet concentration for --partition=dirichlet (smaller = '
                     'more skew); > 0.', lower_bound=0.0)
  flags.DEFINE_string('cache_dir', None, 'emnist_character and the benchmark-suite tasks: '
                      'directory holding the dataset files (default ~/.tff).')
  flags.DEFINE_bool('only_digits', False, 'emnist_character / emnist_autoencoder: the 10-digit '
                    'subset instead of 62 classes.')
  benchmark_task_flags.define_flags()
  # Local training.
  flags.DEFINE_integer('client_epochs_per_round', 1, 'Local epochs per round.', lower_bound=1)
  flags.DEFINE_integer('client_batch_size', client_batch_size,
                       'Local batch size; -1 = whole client dataset.', lower_bound=-1)
  flags.DEFINE_integer('max_batches_per_client', None,
                       'Cap on local batches per round (default: no cap).', lower_bound=1)
  if client_optimizer:
    optimizers.define_optimizer_flags('client', learning_rate=client_learning_rate)
  optimizers.define_optimizer_flags(
      'server', optimizer=server_optimizer, learning_rate=server_learning_rate)
  # Training loop.
  flags.DEFINE_integer('clients_per_round', 10,
                       'Clients sampled per round (the expected number with Poisson sampling, '
                       'which the DP recipe uses).', lower_bound=1)
  flags.DEFINE_integer('total_rounds', 100, 'Round budget.', lower_bound=1)
  flags.DEFINE_integer('rounds_per_eval', 5,
                       'Evaluate on the validation set every this many rounds (and after the last).',
                       lower_bound=1)
  flags.DEFINE_integer('rounds_per_test', None,
                       'Also evaluate on the test set every this many rounds; default: only after '
                       'the last round (the test set never steers training).', lower_bound=1)
  flags.DEFINE_integer('rounds_per_checkpoint', 10, 'Checkpoint the server state every this many rounds.',
                       lower_bound=1)
  flags.DEFINE_float('target_accuracy', None,
                     'Stop once the validation value of the task\'s headline metric reaches '
                     'this, in (0, 1] (accuracy; stackoverflow_word: accuracy without '
                     'pad/OOV/EOS; stackoverflow_tag: recall@5; emnist_autoencoder: mean squared '
                     'error, reached by falling to it); the summary records the round, and the '
                     'test set is evaluated there.', lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_integer('federated_eval_clients', 0,
                       'Federated evaluation: at every evaluation, also evaluate the server model '
                       'on this many sampled clients\' own held-out examples and log the mean and '
                       'the spread over clients (0 = off).', lower_bound=0)
  flags.DEFINE_integer('federated_eval_holdout', 5,
                       'With --federated_eval_clients: every this-many-th example of each client '
                       'is held out from training for federated evaluation.', lower_bound=2)
  flags.DEFINE_integer('seed', 0,
                       'Decides every random choice of the run: the partition, client sampling, '
                       'each client\'s per-round shuffle, initial weights, dropout and DP noise.',
                       lower_bound=0, upper_bound=2**31 - 1)
  flags.DEFINE_enum('loop_implementation', 'dataset_iterator', list(_LOOPS),
                    'Client loop (dataset_iterator is faster on CPU).')
  flags.DEFINE_string('tff_worker', None,
                      'host:port of a TFF C++ worker started elsewhere (python -m '
                      'scripts.start_worker --port=N) that runs the computations, or several '
                      'comma-separated host:port: each round\'s clients are then split across '
                      'them; default: a worker on this machine, started and stopped by the recipe.')
  flags.DEFINE_float('tff_worker_wait_seconds', 10.0,
                     'With --tff_worker: how long to wait for every worker to answer before '
                     'giving up (raise it for workers that are still starting, e.g. on a '
                     'cluster).', lower_bound=1.0)
  # Outputs.
  flags.DEFINE_string('experiment_name', None, 'Name of the run directory; default: <recipe>-<task>-<time>.')
  flags.DEFINE_string('root_output_dir', 'runs', 'Parent directory of experiment directories.')
  flags.DEFINE_bool('resume', False, 'Continue the run in --experiment_name from its last checkpoint.')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')
  aggregator_registry.define_aggregator_flags()


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a recipe's `build_process` assembles into a `tff.learning` process.

  Attributes:
    task: The task (`training_loop.for_learning_process`); `task.model_fn` is the model
      function. Its Keras models start from zeros: the training loop puts random initial
      weights into the process's first state.
    weighted: Whether client updates are weighted by example counts.
    client_optimizer: Client optimizer (None for recipes without one, e.g. FedSGD).
    server_optimizer: Server optimizer.
    loop_implementation: Client training loop implementation.
  """

  task: tasks.Task
  weighted: bool
  client_optimizer: tff.learning.optimizers.Optimizer | None
  server_optimizer: tff.learning.optimizers.Optimizer
  loop_implementation: tff.learning.LoopImplementation
  _aggregator_fn: Callable[[bool], Any]

  def aggregator(self) -> Any:
    """The `--aggregator` factory: weighted if `self.weighted`, else unweighted."""
    return self._aggregator_fn(self.weighted)

  def builder_args(self) -> dict[str, Any]:
    """Keyword arguments that every `tff.learning.algorithms` builder of the FedAvg family
    (fed_avg, fed_prox, fed_sgd) takes: optimizers, aggregator, client loop."""
    args = {
        'server_optimizer_fn': self.server_optimizer,
        'model_aggregator': self.aggregator(),
        'loop_implementation': self.loop_implementation,
    }
    if self.client_optimizer is not None:
      args['client_optimizer_fn'] = self.client_optimizer
    return args


def setup_without_flags(
    task: tasks.Task,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer | None,
    server_optimizer: tff.learning.optimizers.Optimizer,
    aggregator: Any,
    weighted: bool = True,
    loop_implementation: tff.learning.LoopImplementation = _LOOPS['dataset_iterator'],
) -> Setup:
  """The `Setup` that `run` hands a recipe's `build_process`, from objects instead of flags.

  For code that builds a recipe's process without running its binary (the benchmarks).
  The task becomes `training_loop.for_learning_process(task)`, as in `run`: start the
  process from `training_loop.initial_model_weights(task)`.

  Args:
    task: The task, as `tasks.create_task` makes it.
    client_optimizer: Client optimizer (None for recipes without one, e.g. FedSGD).
    server_optimizer: Server optimizer.
    aggregator: The `tff.aggregators` factory, of the kind `weighted` asks for.
    weighted: Whether client updates are weighted by example counts.
    loop_implementation: Client training loop (the recipes' default).

  Returns:
    The `Setup`.
  """
  return Setup(task=training_loop.for_learning_process(task), weighted=weighted,
               client_optimizer=client_optimizer, server_optimizer=server_optimizer,
               loop_implementation=loop_implementation, _aggregator_fn=lambda _: aggregator)


def validate_flags() -> None:
  """Single-flag checks of the shared flags that absl's bounds cannot express.

  Runs right after parsing (every recipe passes it to `cli.run`), so a bad value stops
  the binary before any work; combinations are checked in `run`.

  Raises:
    UserError: For the first bad value.
  """
  if FLAGS.client_batch_size == 0:
    raise UserError('--client_batch_size must be positive or -1 (whole dataset), got 0')
  if FLAGS.alpha <= 0:
    raise UserError(f'--alpha must be positive, got {FLAGS.alpha}')
  if FLAGS.target_accuracy is not None and FLAGS.target_accuracy <= 0:
    raise UserError(f'--target_accuracy must be in (0, 1], got {FLAGS.target_accuracy}')
  if FLAGS.model is not None and FLAGS.model not in MODELS:
    raise UserError(f'unknown --model={FLAGS.model}; choose one of {", ".join(MODELS)}')
  for name in ('experiment_name', 'root_output_dir', 'cache_dir'):
    value = FLAGS[name].value
    if value is not None and not value.strip():
      raise UserError(f'--{name} must not be empty')
  name = FLAGS.experiment_name
  if name is not None and (os.sep in name or name in ('.', '..')):
    raise UserError(f'--experiment_name must be a plain directory name, got {name!r} '
                    '(use --root_output_dir for the parent directory)')
  if FLAGS.tff_worker is not None:
    try:
      runtime.parse_worker_addresses(FLAGS.tff_worker)
    except ValueError as e:
      raise UserError(f'--tff_worker: {e}') from None
  optimizers.validate_optimizer_flags()
  aggregator_registry.validate_aggregator_flags()


def _validate_common_flags() -> None:
  if FLAGS.resume and not FLAGS.experiment_name:
    raise UserError('--resume needs the --experiment_name of the run to continue')
  if FLAGS['tff_worker_wait_seconds'].present and not FLAGS.tff_worker:
    raise UserError('--tff_worker_wait_seconds applies only with --tff_worker')


def _create_task() -> tasks.Task:
  client_spec = tasks.ClientSpec(
      num_epochs=FLAGS.client_epochs_per_round,
      batch_size=FLAGS.client_batch_size,
      max_elements=FLAGS.max_batches_per_client,
  )
  # Only the task options the user set: `create_task` refuses those that do not apply to
  # the task (the one place that checks it) and picks its defaults for the others.
  options = {name: FLAGS[name].value
             for name in ('num_clients', 'partition', 'alpha', 'cache_dir', 'only_digits',
                          *benchmark_task_flags.names())
             if FLAGS[name].present}
  return tasks.create_task(FLAGS.task, model=FLAGS.model, client_spec=client_spec,
                           seed=FLAGS.seed, **options)


def recipe_hparams() -> dict[str, Any]:
  """Every flag defined by this project (recipes.* modules and the binary itself)."""
  hparams = {}
  for module, module_flags in FLAGS.flags_by_module_dict().items():
    if module.startswith(('recipes', '__main__')) or '/recipes/' in module:
      hparams.update({f.name: f.value for f in module_flags})
  return hparams


def _saved_hparams(out) -> dict[str, Any] | None:
  """The hparams.json of the run in `out`, or None if it has none (nothing ran yet)."""
  import json  # pylint: disable=g-import-not-at-top
  path = out / 'hparams.json'
  if not path.exists():
    return None
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is unreadable ({e}); it records the run\'s settings, so the run '
                    'cannot be resumed safely: start a new --experiment_name') from None
  if not isinstance(saved, dict):
    raise UserError(f'{path} is not a settings record; start a new --experiment_name')
  return saved


def _check_resume_matches(saved: dict[str, Any], hparams: dict[str, Any]) -> None:
  """Refuses a resume whose settings change what is learned (run-control flags may change)."""
  ignored = _RUN_CONTROL_FLAGS | {'command', 'git_commit', 'git_dirty', 'resumes', 'frozen'}
  changed = sorted(k for k in set(hparams) | set(saved)
                   if k not in ignored and saved.get(k) != hparams.get(k))
  if changed:
    diffs = ', '.join(f'--{k}={hparams.get(k)} (the run has {saved.get(k)})' for k in changed)
    raise UserError(f'--resume cannot change what the run learns: {diffs}; rerun with the '
                    'run\'s own values or start a new --experiment_name')


def run(
    recipe: str,
    build_process: Callable[[Setup], Any],
    *,
    weighted: bool | None = None,
    not_applicable: tuple[str, ...] = (),
    report: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
    sampling: str = 'uniform',
    frozen: Callable[[dict[str, Any] | None, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Builds the task, optimizers and aggregator from flags, then trains and writes outputs.

  Args:
    recipe: The recipe's name (used in the default experiment name and hparams).
    build_process: Assembles the `tff.learning` process from a `Setup`.
    weighted: Whether the recipe weights client updates; None reads `--weighting`.
    not_applicable: Shared flags this recipe ignores: setting one is an error.
    report: Given the frozen settings (see `frozen`) and the summary, returns
      recipe-specific results (e.g. privacy spent) to add to the summary.
    sampling: How clients are drawn each round (`training_loop.SAMPLINGS`).
    frozen: Settings fixed once for the whole run (e.g. the DP noise multiplier that
      --target_epsilon calibrates at the start): given those saved by an earlier part of
      the run (None when starting) and the population size, returns them; they are kept
      in hparams.json under 'frozen', and a resume that would change them is refused.

  Returns:
    The run summary (also written to summary.json).
  """
  for name in not_applicable:
    if FLAGS[name].present:
      raise UserError(f'--{name} does not apply to {recipe}')
  _validate_common_flags()
  if FLAGS.tff_worker:
    # Before any computation runs, so that TFF never starts a local worker.
    runtime.use_remote_worker(FLAGS.tff_worker,
                              connect_timeout_seconds=FLAGS.tff_worker_wait_seconds)
  task = _create_task()
  num_clients = len(task.train_data.client_ids)

  fixed: dict[str, Any] = {}  # The run's frozen settings, once known (below).

  def aggregator_fn(weighted: bool) -> Any:
    return aggregator_registry.aggregator_from_flags(
        weighted=weighted, clients_per_round=FLAGS.clients_per_round, num_clients=num_clients,
        total_rounds=FLAGS.total_rounds, noise_multiplier=fixed.get('noise_multiplier'),
        noise_seed=aggregator_registry.dp_noise_seed(FLAGS.seed))

  if weighted is None:
    weighted = FLAGS.weighting == 'num_examples'
  setup = Setup(
      task=training_loop.for_learning_process(task),
      weighted=weighted,
      client_optimizer=(optimizers.optimizer_from_flags('client')
                        if 'client_optimizer' in FLAGS else None),
      server_optimizer=optimizers.optimizer_from_flags('server'),
      loop_implementation=_LOOPS[FLAGS.loop_implementation],
      _aggregator_fn=aggregator_fn,
  )
  name = FLAGS.experiment_name or (
      f'{recipe}-{task.name}-{datetime.datetime.now().strftime("%Y%m%d-%H%M%S")}')
  out = outputs.experiment_dir(FLAGS.root_output_dir, name)
  hparams = {'recipe': recipe, **recipe_hparams(), 'model': task.model_name,
             'sampling': sampling, **outputs.provenance()}
  saved = _saved_hparams(out) if FLAGS.resume else None
  if saved is not None:
    _check_resume_matches(saved, hparams)
  if frozen is not None:
    hparams['frozen'] = frozen(saved.get('frozen') if saved else None, num_clients)
    fixed.update(hparams['frozen'])
  process = build_process(setup)
  # Several workers: refuse a round that TFF cannot split before training starts.
  tff_workers.check_splittable(
      process.next, what=f'{recipe} with --aggregator={FLAGS.aggregator}')
  config = training_loop.LoopConfig(
      total_rounds=FLAGS.total_rounds, clients_per_round=FLAGS.clients_per_round,
      rounds_per_eval=FLAGS.rounds_per_eval, rounds_per_checkpoint=FLAGS.rounds_per_checkpoint,
      target_accuracy=FLAGS.target_accuracy, seed=FLAGS.seed, output_dir=out,
      resume=FLAGS.resume, progress=FLAGS.progress, sampling=sampling,
      rounds_per_test=FLAGS.rounds_per_test, federated_eval_clients=FLAGS.federated_eval_clients,
      federated_eval_holdout=FLAGS.federated_eval_holdout,
  )

  def record_and_announce() -> None:
    # Called by run_training once it has checked the settings against the task and the
    # output directory (clients per round, an existing run): a refused run writes nothing.
    if saved is None:
      outputs.write_json(out / 'hparams.json', hparams)
    else:  # The run's own record stays; each resume is appended to it.
      saved.setdefault('resumes', []).append(
          {key: hparams[key] for key in ('command', 'git_commit', 'git_dirty', 'total_rounds')})
      outputs.write_json(out / 'hparams.json', saved)
    workers = tff_workers.addresses_in_use()
    where = (f', on the TFF worker at {workers[0]}' if len(workers) == 1 else
             f', split across {len(workers)} TFF workers at {", ".join(workers)}' if workers
             else '')
    print(f'{recipe}: training on {task.name} ({num_clients} clients, {FLAGS.clients_per_round} '
          f'per round, model {task.model_name}{where}); outputs in {out}', flush=True)

  summary = training_loop.run_training(
      process, task, config, description=recipe,
      initial_weights=training_loop.initial_model_weights(task, FLAGS.seed),
      process_task=setup.task, on_start=record_and_announce)
  summary = {'recipe': recipe, **summary}
  if report is not None:
    summary.update(report(hparams.get('frozen', {}), summary))
  outputs.write_json(out / 'summary.json', summary)
  _print_summary(summary, out)
  return summary


def _print_summary(summary: dict[str, Any], out) -> None:
  line = (f'{summary["recipe"]} on {summary["task"]}: {summary["status"]} after '
          f'{summary["rounds_completed"]} rounds')
  headline = summary.get('headline_metric', 'accuracy')
  label = headline.replace('_', ' ')
  if summary.get(f'final_validation_{headline}') is not None:
    line += (f', validation {label} {summary[f"final_validation_{headline}"]:.4f} '
             f'(best {summary[f"best_validation_{headline}"]:.4f})')
  if summary.get(f'final_test_{headline}') is not None:
    line += f', test {label} {summary[f"final_test_{headline}"]:.4f}'
  if summary.get('target_reached_round'):
    line += (f'; validation reached {summary["target_accuracy"]} at round '
             f'{summary["target_reached_round"]}')
  print(line)
  print(f'outputs: {out} (metrics.csv, metrics.png, summary.json, hparams.json, tensorboard/, checkpoints/)')
