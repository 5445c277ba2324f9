"""The federated training loop shared by every recipe.

One round: sample clients (seeded per round, so a resumed run samples the same clients),
build their preprocessed datasets (`ClientDatasets`: cached per client), run
`process.next`, log metrics; every `rounds_per_eval` rounds evaluate the server model on
the held-out test set; every `rounds_per_checkpoint` rounds save the state with
`tff.program.FileProgramStateManager`.

Simulation overhead (scripts/bench_overhead.py measures each step against Keras `fit`):

* The recipes' default client loop is `DATASET_ITERATOR` (`--loop_implementation`).
* `ClientDatasets` builds a client's tf.data pipeline once and hands the same dataset
  object back when the client is sampled again.
* `for_learning_process(task)` is the task that recipes build their process from:
  - its input spec is computed once, eagerly. `Task.input_spec` builds a client
    dataset, and TFF asks for it while tracing the model into a graph, where the
    in-memory tasks' datasets embed all their training examples as constants: every
    `process.next` then shipped those 25 MB (mnist_digits) to the worker, which parsed
    them again; the computation is now 0.24 MB.
  - its models start from zeros: TFF runs a client model's variable initializers on
    every client call, before it overwrites the variables with the server's weights;
    for the 1.7M-parameter CNN those random draws were about a tenth of the worker's
    CPU time. The loop puts random initial weights into the first state itself
    (`initial_model_weights`).

Outputs under the experiment directory: `metrics.csv`, `tensorboard/`, `checkpoints/`,
`summary.json` and `metrics.png` (hparams.json is written by the caller).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tqdm

from recipes import metrics_log
from recipes import outputs
from recipes.errors import UserError
from recipes.runtime import import_tff
from tasks.base import Task

tff = import_tff()

CSV_COLUMNS = [
    'round', 'train_loss', 'train_accuracy', 'train_examples',
    'test_loss', 'test_accuracy', 'round_seconds',
]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How long to train, how often to evaluate and checkpoint, where to write.

  Attributes:
    total_rounds: Round budget.
    clients_per_round: Clients sampled (without replacement) each round.
    rounds_per_eval: Evaluate on the test set every this many rounds (and at the end).
    rounds_per_checkpoint: Save the server state every this many rounds (and at the end).
    target_accuracy: If set, stop at the first evaluation whose test accuracy reaches it.
    seed: Seeds client sampling.
    output_dir: The experiment directory.
    resume: Continue from the newest checkpoint in `output_dir`.
    progress: Show a tqdm progress bar.
  """

  total_rounds: int
  clients_per_round: int
  rounds_per_eval: int
  rounds_per_checkpoint: int
  output_dir: Path
  target_accuracy: float | None = None
  seed: int = 0
  resume: bool = False
  progress: bool = True


def sample_clients(client_ids: list[str], clients_per_round: int, seed: int, round_num: int) -> list[str]:
  """Samples clients uniformly without replacement; a pure function of (seed, round)."""
  rng = np.random.default_rng([seed, round_num])
  return [client_ids[i] for i in rng.choice(len(client_ids), clients_per_round, replace=False)]


class ClientDatasets:
  """Each client's preprocessed training dataset, built on first use and then reused.

  Building a tf.data pipeline (slice the client's examples, shuffle, repeat, batch) is a
  fixed cost per client and round. A dataset is only a description of a pipeline: TFF
  serializes it and the worker iterates it afresh every round, so reusing the object
  still reshuffles the client's examples every round.
  """

  def __init__(self, task: Task) -> None:
    self._task = task
    self._datasets: dict[str, tf.data.Dataset] = {}

  def __call__(self, client_ids: list[str]) -> list[tf.data.Dataset]:
    """The preprocessed datasets of `client_ids`, in that order."""
    for cid in client_ids:
      if cid not in self._datasets:
        self._datasets[cid] = self._task.preprocess_train(
            self._task.train_data.create_tf_dataset_for_client(cid))
    return [self._datasets[cid] for cid in client_ids]


def _zero_initializers(config: Any) -> Any:
  """A Keras config in which every `*_initializer` is `Zeros` (nested configs included)."""
  if isinstance(config, dict):
    return {key: ({'class_name': 'Zeros', 'config': {}}
                  if key.endswith('_initializer') and value is not None
                  else _zero_initializers(value))
            for key, value in config.items()}
  if isinstance(config, (list, tuple)):
    return type(config)(_zero_initializers(v) for v in config)
  return config


def _zero_initialized_builder(
    keras_model_fn: Callable[[], tf.keras.Model]) -> Callable[[], tf.keras.Model] | None:
  """Builds the same architecture with zero initializers, or None if Keras cannot.

  Works for Sequential and functional models (rebuilt from their config); a subclassed
  model or a custom layer Keras cannot rebuild gives None.
  """
  template = keras_model_fn()
  try:
    config = _zero_initializers(template.get_config())
    model_class = type(template)
    rebuilt = model_class.from_config(config)
  except Exception:  # pylint: disable=broad-except  # Any failure: keep the original builder.
    return None
  if [w.shape for w in rebuilt.weights] != [w.shape for w in template.weights]:
    return None
  return lambda: model_class.from_config(config)


@dataclasses.dataclass(frozen=True)
class _ProcessTask(Task):
  """A `Task` whose input spec was computed once, outside any graph (see the module docstring)."""

  fixed_input_spec: Any = None

  @property
  def input_spec(self) -> Any:
    return self.fixed_input_spec


def for_learning_process(task: Task, *, skip_initializer_draws: bool = True) -> Task:
  """The copy of `task` to build a learning process from (see the module docstring).

  Its `model_fn` gives the same model as `task.model_fn`, but tracing it into TFF's graph
  adds neither the task's training data (its input spec is fixed here, eagerly) nor,
  with `skip_initializer_draws`, random initializers: its Keras models start from
  zeros, and so does the process's `initialize`; pair it with
  `run_training(..., initial_weights=initial_model_weights(task))`. A model that Keras
  cannot rebuild from its config keeps its initializers.

  Args:
    task: The task.
    skip_initializer_draws: Whether the models start from zeros.

  Returns:
    A `Task` for `tff.learning` builders only (evaluate with `task` itself).
  """
  keras_model_fn = task.keras_model_fn
  with tf.init_scope():  # Eager even if called while TFF traces a computation.
    input_spec = task.input_spec
    if skip_initializer_draws:
      keras_model_fn = _zero_initialized_builder(task.keras_model_fn) or task.keras_model_fn
  fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(Task)}
  return _ProcessTask(**{**fields, 'keras_model_fn': keras_model_fn},
                      fixed_input_spec=input_spec)


def initial_model_weights(task: Task) -> Any:
  """Fresh random initial weights of the task's model, as `tff.learning.models.ModelWeights`.

  Build the learning process first: tracing it invalidates Keras models made earlier.
  """
  model = task.keras_model_fn()
  return tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in model.trainable_weights],
      non_trainable=[v.numpy() for v in model.non_trainable_weights])


class _Evaluator:
  """Evaluates server weights on the test set with a Keras copy of the model.

  Built after the learning process: building a process traces the model in a graph,
  which invalidates Keras models created before it (Keras 2 / TF 2.14).
  """

  def __init__(self, task: Task) -> None:
    self._model = task.keras_model_fn()
    self._model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )
    self._data = task.preprocess_eval(task.test_data).cache()

  def __call__(self, model_weights: Any) -> dict[str, float]:
    model_weights.assign_weights_to(self._model)
    result = self._model.evaluate(self._data, verbose=0, return_dict=True)
    return {'test_loss': float(result['loss']),
            'test_accuracy': float(result['sparse_categorical_accuracy'])}


class _Checkpoints:
  """Synchronous face of `tff.program.FileProgramStateManager` (whose API is async)."""

  def __init__(self, directory: Path) -> None:
    self._manager = tff.program.FileProgramStateManager(
        str(directory), prefix='round_', keep_total=3, keep_first=False
    )

  def save(self, state: Any, round_num: int) -> None:
    asyncio.run(self._manager.save(state, round_num))

  def load_latest(self, structure: Any) -> tuple[Any, int] | None:
    """Newest loadable (state, round); a checkpoint cut short by a kill is skipped."""
    versions = asyncio.run(self._manager.get_versions()) or []
    for version in reversed(versions):
      try:
        return asyncio.run(self._manager.load(version, structure)), version
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('checkpoint of round %d is unreadable (%s); trying an older one', version, e)
    return None

  def any(self) -> bool:
    return bool(asyncio.run(self._manager.get_versions()))


def check_fresh_output(out: Path) -> None:
  """Refuses to start a new run where one already left results (nothing gets overwritten)."""
  if (out / 'metrics.csv').exists() or _Checkpoints(out / 'checkpoints').any():
    raise UserError(
        f'{out} already holds a run; pass --resume to continue it or choose another '
        '--experiment_name'
    )


def run_training(
    process: tff.learning.templates.LearningProcess,
    task: Task,
    config: LoopConfig,
    *,
    description: str = '',
    initial_weights: Any = None,
) -> dict[str, Any]:
  """Trains `process` on `task`; returns (and writes) the run summary.

  Args:
    process: The learning process.
    task: Its task (data, evaluation model).
    config: Rounds, evaluation, checkpoints, outputs.
    description: Label of the progress bar.
    initial_weights: If set, replaces the model weights of `process.initialize()` (see
      `for_learning_process`); a resumed run starts from its checkpoint instead.

  Raises:
    UserError: Inconsistent settings or an output directory that would be overwritten.
  """
  client_ids = list(task.train_data.client_ids)
  if config.clients_per_round > len(client_ids):
    raise UserError(
        f'--clients_per_round={config.clients_per_round} exceeds the {len(client_ids)} '
        f'clients of task {task.name}'
    )
  out = config.output_dir
  csv_path = out / 'metrics.csv'
  checkpoints = _Checkpoints(out / 'checkpoints')
  if not config.resume:
    check_fresh_output(out)

  state = process.initialize()
  if initial_weights is not None:
    state = process.set_model_weights(state, initial_weights)
  start_round = 0
  if config.resume:
    restored = checkpoints.load_latest(state)
    if restored is not None:
      state, start_round = restored
  log = metrics_log.MetricsCsv(csv_path, CSV_COLUMNS)
  if csv_path.exists():
    log.rewind(start_round)
  if start_round >= config.total_rounds:
    raise UserError(
        f'the checkpoint in {out} is at round {start_round}; raise --total_rounds above it to continue'
    )

  evaluator = _Evaluator(task)
  tensorboard = tf.summary.create_file_writer(str(out / 'tensorboard'))
  datasets_for = ClientDatasets(task)

  status = 'completed'
  target_round: int | None = None
  best_accuracy = -math.inf
  last: dict[str, float] = {}
  round_seconds: list[float] = []
  saved_round = start_round
  round_num = start_round
  started = time.perf_counter()
  bar = tqdm.tqdm(
      total=config.total_rounds, initial=start_round, unit='round', desc=description or task.name,
      disable=not config.progress, file=sys.stderr, dynamic_ncols=True,
  )
  try:
    for round_num in range(start_round + 1, config.total_rounds + 1):
      round_start = time.perf_counter()
      sampled = sample_clients(client_ids, config.clients_per_round, config.seed, round_num)
      output = process.next(state, datasets_for(sampled))
      state = output.state
      seconds = time.perf_counter() - round_start
      round_seconds.append(seconds)
      row = metrics_log.training_row(round_num, output.metrics)
      row['round_seconds'] = seconds
      if round_num % config.rounds_per_eval == 0 or round_num == config.total_rounds:
        row.update(evaluator(process.get_model_weights(state)))
        best_accuracy = max(best_accuracy, row['test_accuracy'])
      if not all(math.isfinite(v) for v in row.values()):
        status = 'diverged'
      log.append(row)
      with tensorboard.as_default(step=round_num):
        for key, value in row.items():
          if key != 'round':
            tf.summary.scalar(key, value)
      last = row
      bar.update(1)
      bar.set_postfix({k.replace('_accuracy', '_acc'): f'{row[k]:.4f}'
                       for k in ('train_loss', 'train_accuracy', 'test_accuracy') if k in row})
      reached = (config.target_accuracy is not None
                 and row.get('test_accuracy', -1.0) >= config.target_accuracy)
      if reached:
        status, target_round = 'target_reached', round_num
      if (round_num % config.rounds_per_checkpoint == 0 or round_num == config.total_rounds
          or reached or status == 'diverged'):
        checkpoints.save(state, round_num)
        saved_round = round_num
      if reached or status == 'diverged':
        break
  except (KeyboardInterrupt, SystemExit):
    status = 'interrupted'
    raise
  except Exception:
    status = 'failed'
    raise
  finally:
    bar.close()
    tensorboard.flush()
    completed = round_num if last.get('round') == round_num else round_num - 1
    if status == 'interrupted' and completed > saved_round:
      # Keep every finished round: a resumed run continues right after it.
      try:
        checkpoints.save(state, completed)
      except tff.program.ProgramStateExistsError:
        # The signal came while this very round was being saved: that save stands, and
        # a resumed run skips it if it was cut short (see _Checkpoints.load_latest).
        pass
    summary = _write_summary(
        out, task, config, status=status, rounds_completed=completed, last=last,
        best_accuracy=best_accuracy, target_round=target_round, round_seconds=round_seconds,
        wall_seconds=time.perf_counter() - started,
    )
  return summary


def _write_summary(out: Path, task: Task, config: LoopConfig, *, status: str, rounds_completed: int,
                   last: dict[str, float], best_accuracy: float, target_round: int | None,
                   round_seconds: list[float], wall_seconds: float) -> dict[str, Any]:
  rows = metrics_log.MetricsCsv(out / 'metrics.csv', CSV_COLUMNS).rows()
  tested = [r for r in rows if r.get('test_accuracy')]
  if tested:
    best_accuracy = max(float(r['test_accuracy']) for r in tested)
  summary = {
      'task': task.name,
      'status': status,
      'rounds_completed': rounds_completed,
      'total_rounds': config.total_rounds,
      'final_metrics': last,
      'final_test_accuracy': float(tested[-1]['test_accuracy']) if tested else None,
      'best_test_accuracy': best_accuracy if tested else None,
      'target_accuracy': config.target_accuracy,
      'target_reached_round': target_round,
      'wall_seconds_this_run': round(wall_seconds, 3),
      'mean_round_seconds_this_run': (round(float(np.mean(round_seconds)), 4)
                                      if round_seconds else None),
      'outputs': {name: str(out / name) for name in
                  ('metrics.csv', 'metrics.png', 'summary.json', 'hparams.json', 'tensorboard',
                   'checkpoints')},
  }
  outputs.write_json(out / 'summary.json', summary)
  if rows:
    _plot(rows, out / 'metrics.png', title=f'{out.name} ({task.name})')
  return summary


def _plot(rows: list[dict[str, str]], path: Path, *, title: str) -> None:
  def column(name: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r['round']), float(r[name])) for r in rows if r.get(name)]
    return [p[0] for p in pairs], [p[1] for p in pairs]

  outputs.plot_curves(
      {'train accuracy': column('train_accuracy'), 'test accuracy': column('test_accuracy')},
      path, title=title, xlabel='round', ylabel='accuracy',
      panels=[('loss', {'train loss': column('train_loss'), 'test loss': column('test_loss')})],
  )
