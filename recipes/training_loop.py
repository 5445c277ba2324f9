"""The federated training loop shared by every recipe.

One round: sample clients (a pure function of seed and round: `uniform` fixed-size cohorts,
or `poisson` for DP), build their datasets for this round (`ClientDatasets`: each client's
shuffle seeded by (seed, round, client)), run `process.next`, evaluate on the validation set
every `rounds_per_eval` rounds (plus federated evaluation if asked), write the metrics row;
only then is the round done. Every `rounds_per_checkpoint` rounds the state is saved with
`tff.program.FileProgramStateManager` under the round's number. The test set is evaluated
after the last round (and every `rounds_per_test` rounds if asked), never to decide anything.

Exact resume: an interrupt saves the last *done* round (never a state whose row is not
written), `--resume` restarts from the newest checkpoint and rewinds the CSV and TensorBoard
to it, and since every random choice derives from the seed, the resumed run ends with the
weights and metrics of an uninterrupted one (tests/test_reproducibility.py).

Simulation overhead (scripts/bench_overhead.py measures each step against Keras `fit`):

* The recipes' default client loop is `DATASET_ITERATOR` (`--loop_implementation`).
* `ClientDatasets` keeps each client's raw dataset (bounded cache) and adds the cheap
  shuffle / repeat / batch stages every round, with that round's seed.
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
import collections
import dataclasses
import hashlib
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tqdm

from core import metrics_log
from core import outputs
from core.errors import UserError
from core.runtime import import_tff
from tasks.base import Task

tff = import_tff()

CSV_COLUMNS = [
    'round', 'clients', 'train_loss', 'train_accuracy', 'train_examples',
    'validation_loss', 'validation_accuracy', 'test_loss', 'test_accuracy', 'round_seconds',
]
SAMPLINGS = ('uniform', 'poisson')
# Environment variable of the tests' pause hook (see `_test_hook`).
TEST_PAUSE_ENV = 'FEDRECIPES_TEST_PAUSE'


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How long to train, how to sample, how often to evaluate and checkpoint, where to write.

  Attributes:
    total_rounds: Round budget.
    clients_per_round: Clients per round: the cohort size (`uniform` sampling) or the
      expected cohort size (`poisson`).
    rounds_per_eval: Evaluate on the validation set every this many rounds (and at the end).
    rounds_per_checkpoint: Save the server state every this many rounds (and at the end).
    target_accuracy: If set, stop at the first evaluation whose validation accuracy
      reaches it.
    seed: Seeds client sampling, every client's per-round shuffle and the initial model.
    output_dir: The experiment directory.
    resume: Continue from the newest checkpoint in `output_dir`.
    progress: Show a tqdm progress bar.
    sampling: `uniform`: exactly `clients_per_round` clients drawn uniformly without
      replacement each round; `poisson`: each client joins independently with
      probability clients_per_round / num_clients (DP accounting assumes this).
    rounds_per_test: Also evaluate on the test set every this many rounds; None: only
      after the last round.
    federated_eval_clients: Evaluate the server model on this many sampled clients' own
      held-out examples at every evaluation (0: off).
    federated_eval_holdout: Every this-many-th example of each client is held out for
      federated evaluation (only when `federated_eval_clients` > 0).
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
  sampling: str = 'uniform'
  rounds_per_test: int | None = None
  federated_eval_clients: int = 0
  federated_eval_holdout: int = 5


def sample_clients(client_ids: Sequence[str], clients_per_round: int, seed: int,
                   round_num: int) -> list[str]:
  """Samples clients uniformly without replacement; a pure function of (seed, round)."""
  rng = np.random.default_rng([seed, round_num])
  return [client_ids[i] for i in rng.choice(len(client_ids), clients_per_round, replace=False)]


def poisson_sample_clients(client_ids: Sequence[str], sampling_rate: float, seed: int,
                           round_num: int) -> list[str]:
  """Poisson sampling: every client joins independently with probability `sampling_rate`.

  Drawn as a Binomial(N, q) cohort size and then that many distinct clients uniformly,
  which is the same distribution over cohorts and costs O(cohort) rather than O(N). A
  pure function of (seed, round); the cohort may be empty.
  """
  rng = np.random.default_rng([seed, round_num, 1])  # A stream apart from `sample_clients`.
  size = int(rng.binomial(len(client_ids), sampling_rate))
  return [client_ids[i] for i in sorted(rng.choice(len(client_ids), size, replace=False))]


def client_round_seed(seed: int, round_num: int, client_id: str) -> int:
  """The shuffle seed of one client in one round, derived from the run's seed."""
  digest = hashlib.sha256(f'{seed}/{round_num}/{client_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') >> 1  # tf.data wants a non-negative int64.


class ClientDatasets:
  """Each sampled client's preprocessed training dataset for one round.

  A client's raw dataset is made once and kept in a bounded cache (least recently used
  out first), so memory does not grow with the population; the cheap part, shuffle /
  repeat / batch, is applied every round with a seed derived from (run seed, round,
  client): a run is reproducible, and every round shuffles anew.

  With `holdout` = k > 0, every k-th example of a client (by position in its raw data)
  is held out: training never sees it and `held_out(client)` returns it, for federated
  evaluation.
  """

  def __init__(self, task: Task, *, seed: int = 0, holdout: int = 0, max_cached: int = 1024) -> None:
    self._task = task
    self._seed = seed
    self._holdout = holdout
    self._max_cached = max_cached
    self._raw: collections.OrderedDict[str, tf.data.Dataset] = collections.OrderedDict()

  def _raw_dataset(self, client_id: str) -> tf.data.Dataset:
    if client_id in self._raw:
      self._raw.move_to_end(client_id)
      return self._raw[client_id]
    dataset = self._task.train_data.create_tf_dataset_for_client(client_id)
    self._raw[client_id] = dataset
    if len(self._raw) > self._max_cached:
      self._raw.popitem(last=False)
    return dataset

  def _split(self, dataset: tf.data.Dataset, keep_held_out: bool) -> tf.data.Dataset:
    k = self._holdout
    return (dataset.enumerate()
            .filter(lambda i, _: tf.equal(i % k, k - 1) if keep_held_out else tf.not_equal(i % k, k - 1))
            .map(lambda _, example: example))

  def __call__(self, client_ids: Sequence[str], round_num: int = 0) -> list[tf.data.Dataset]:
    """The preprocessed training datasets of `client_ids` for round `round_num`, in order."""
    datasets = []
    for cid in client_ids:
      raw = self._raw_dataset(cid)
      if self._holdout:
        raw = self._split(raw, keep_held_out=False)
      datasets.append(self._task.preprocess_train(
          raw, seed=client_round_seed(self._seed, round_num, cid)))
    return datasets

  def held_out(self, client_ids: Sequence[str]) -> list[tf.data.Dataset]:
    """The held-out examples of `client_ids`, batched for evaluation."""
    if not self._holdout:
      raise ValueError('no examples are held out (holdout=0)')
    return [self._task.preprocess_eval(self._split(self._raw_dataset(cid), keep_held_out=True))
            for cid in client_ids]


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
  `run_training(..., initial_weights=initial_model_weights(task, seed))`. A model that
  Keras cannot rebuild from its config keeps its initializers.

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


def initial_model_weights(task: Task, seed: int | None = None) -> Any:
  """Random initial weights of the task's model, as `tff.learning.models.ModelWeights`.

  With a seed, the same seed gives the same weights (Keras initializers draw from the
  global generators, which this seeds). Build the learning process first: tracing it
  invalidates Keras models made earlier.
  """
  if seed is not None:
    tf.keras.utils.set_random_seed(seed)
  model = task.keras_model_fn()
  return tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in model.trainable_weights],
      non_trainable=[v.numpy() for v in model.non_trainable_weights])


class Evaluator:
  """Evaluates server weights on one centralized dataset with a Keras copy of the model.

  Built after the learning processes: building a process traces the model in a graph,
  which invalidates Keras models created before it (Keras 2 / TF 2.14).
  """

  def __init__(self, task: Task, dataset: tf.data.Dataset, prefix: str) -> None:
    """Compiles a Keras copy of `task`'s model; results are keyed `<prefix>_loss/_accuracy`."""
    self._model = task.keras_model_fn()
    self._model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )
    self._data = task.preprocess_eval(dataset).cache()
    self._prefix = prefix

  def __call__(self, model_weights: Any) -> dict[str, float]:
    """Loss and accuracy of `model_weights` (`tff.learning.models.ModelWeights`)."""
    model_weights.assign_weights_to(self._model)
    result = self._model.evaluate(self._data, verbose=0, return_dict=True)
    return {f'{self._prefix}_loss': float(result['loss']),
            f'{self._prefix}_accuracy': float(result['sparse_categorical_accuracy'])}


FEDERATED_EVAL_COLUMNS = ('fed_eval_accuracy_mean', 'fed_eval_accuracy_p10',
                          'fed_eval_accuracy_p50', 'fed_eval_accuracy_p90',
                          'fed_eval_accuracy_min', 'fed_eval_loss_mean', 'fed_eval_clients')


class _FederatedEvaluator:
  """TFF federated evaluation of the server model on sampled clients' held-out examples.

  `tff.learning.algorithms.build_fed_eval`, called once per sampled client so that each
  client's own metrics come back (the distribution over clients, not only the
  example-weighted mean). TFF's `FinalizeThenSampleFactory`, which would return them in
  one call, has a state whose type changes after the first round, which `build_fed_eval`
  rejects in TFF 0.87.
  """

  def __init__(self, process_task: Task, datasets: ClientDatasets, client_ids: Sequence[str],
               num_clients: int, seed: int) -> None:
    self._process = tff.learning.algorithms.build_fed_eval(process_task.model_fn)
    self._datasets = datasets
    self._client_ids = client_ids
    self._num_clients = num_clients
    self._seed = seed

  def __call__(self, model_weights: Any, round_num: int) -> dict[str, float]:
    # A stream of its own: which clients evaluate never changes who trains.
    rng = np.random.default_rng([self._seed, round_num, 2])
    sampled = [self._client_ids[i]
               for i in rng.choice(len(self._client_ids), self._num_clients, replace=False)]
    state = self._process.set_model_weights(self._process.initialize(), model_weights)
    accuracy, loss = [], []
    for dataset in self._datasets.held_out(sampled):
      metrics = self._process.next(state, [dataset]).metrics['client_work']['eval']
      client = metrics['current_round_metrics']
      accuracy.append(float(client['sparse_categorical_accuracy']))
      loss.append(float(client['loss']))
    accuracy, loss = np.asarray(accuracy), np.asarray(loss)
    return {
        'fed_eval_accuracy_mean': float(accuracy.mean()),
        'fed_eval_accuracy_p10': float(np.percentile(accuracy, 10)),
        'fed_eval_accuracy_p50': float(np.percentile(accuracy, 50)),
        'fed_eval_accuracy_p90': float(np.percentile(accuracy, 90)),
        'fed_eval_accuracy_min': float(accuracy.min()),
        'fed_eval_loss_mean': float(loss.mean()),
        'fed_eval_clients': len(accuracy),
    }


class _Checkpoints:
  """Synchronous face of `tff.program.FileProgramStateManager` (whose API is async).

  The manager writes a version into a temporary directory and renames it when complete,
  so a kill during a save leaves the previous versions intact.
  """

  def __init__(self, directory: Path) -> None:
    self._directory = directory
    self._manager = tff.program.FileProgramStateManager(
        str(directory), prefix='round_', keep_total=3, keep_first=False
    )

  def save(self, state: Any, round_num: int) -> None:
    asyncio.run(self._manager.save(state, round_num))

  def load_latest(self, structure: Any) -> tuple[Any, int] | None:
    """Newest loadable (state, round); an unreadable checkpoint is skipped with a warning."""
    versions = asyncio.run(self._manager.get_versions()) or []
    for version in reversed(versions):
      try:
        return asyncio.run(self._manager.load(version, structure)), version
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('checkpoint of round %d is unreadable (%s); trying an older one', version, e)
    if versions:
      raise UserError(f'no checkpoint in {self._directory} can be read (rounds {versions}); '
                      'start a new run under another --experiment_name')
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


def _test_hook(phase: str, round_num: int, out: Path) -> None:
  """Lets the tests interrupt a run at a known phase of a known round.

  With FEDRECIPES_TEST_PAUSE=phase@round, reaching that phase of that round writes the
  phase's name to `<out>/test_phase` and then (except for `next`, which the test
  interrupts while it runs) waits for the test's signal. Unset in normal runs.
  """
  wanted = os.environ.get(TEST_PAUSE_ENV)
  if not wanted or wanted != f'{phase}@{round_num}':
    return
  (out / 'test_phase').write_text(phase)
  if phase != 'next':
    time.sleep(120)


def _replay_tensorboard(directory: Path, rows: Sequence[dict[str, str]]) -> Any:
  """A fresh TensorBoard log holding exactly `rows` (a resumed run drops the rounds it redoes)."""
  if directory.exists():
    for event_file in directory.glob('events.out.tfevents.*'):
      event_file.unlink()
  writer = tf.summary.create_file_writer(str(directory))
  for row in rows:
    with writer.as_default(step=int(float(row['round']))):
      for key, value in row.items():
        if key != 'round' and value not in (None, ''):
          tf.summary.scalar(key, float(value))
  writer.flush()
  return writer


def target_reached(accuracy: float, target: float) -> bool:
  """Whether `accuracy` reaches `target`, compared at the float32 precision Keras computes in.

  950 correct of 1,000 is 0.94999999 in float32 and must count as reaching 0.95.
  """
  return bool(np.float32(accuracy) >= np.float32(target))


def run_training(
    process: tff.learning.templates.LearningProcess,
    task: Task,
    config: LoopConfig,
    *,
    description: str = '',
    initial_weights: Any = None,
    process_task: Task | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
  """Trains `process` on `task`; returns (and writes) the run summary.

  A round is done when its metrics row is in metrics.csv; only then does its state
  become the one that later rounds start from, that an interrupt saves (Ctrl-C, SIGTERM,
  SIGHUP) and that a checkpoint holds under that round's number. `--resume` restarts
  from the newest checkpoint and rewinds the CSV (and TensorBoard) to it, so every
  round appears exactly once and, since every random choice derives from the seed,
  the resumed run ends where an uninterrupted one would.

  Args:
    process: The learning process.
    task: Its task (data, evaluation model).
    config: Rounds, sampling, evaluation, checkpoints, outputs.
    description: Label of the progress bar.
    initial_weights: If set, replaces the model weights of `process.initialize()` (see
      `for_learning_process`); a resumed run starts from its checkpoint instead.
    process_task: The task the process was built from (`for_learning_process`); needed
      for federated evaluation (default: `task`).
    on_start: Called once the settings are checked against the task and the output
      directory, before the first round: where a caller writes its own records, so that
      a refused run leaves nothing behind.

  Raises:
    UserError: Inconsistent settings or an output directory that would be overwritten.
  """
  client_ids = task.train_data.client_ids
  num_clients = len(client_ids)
  if config.sampling not in SAMPLINGS:
    raise UserError(f'unknown sampling {config.sampling!r}; choose one of {", ".join(SAMPLINGS)}')
  if config.clients_per_round > num_clients:
    raise UserError(
        f'--clients_per_round={config.clients_per_round} exceeds the {num_clients} '
        f'clients of task {task.name}'
    )
  if config.federated_eval_clients > num_clients:
    raise UserError(f'--federated_eval_clients={config.federated_eval_clients} exceeds the '
                    f'{num_clients} clients of task {task.name}')
  out = config.output_dir
  csv_path = out / 'metrics.csv'
  checkpoints = _Checkpoints(out / 'checkpoints')
  if not config.resume:
    check_fresh_output(out)
  if on_start is not None:
    on_start()
  tf.keras.utils.set_random_seed(config.seed)

  state = process.initialize()
  if initial_weights is not None:
    state = process.set_model_weights(state, initial_weights)
  start_round = 0
  if config.resume:
    restored = checkpoints.load_latest(state)
    if restored is not None:
      state, start_round = restored
  if start_round >= config.total_rounds:
    raise UserError(
        f'the checkpoint in {out} is at round {start_round}; raise --total_rounds above it to continue'
    )
  columns = CSV_COLUMNS + (list(FEDERATED_EVAL_COLUMNS) if config.federated_eval_clients else [])
  log = metrics_log.MetricsCsv(csv_path, columns)
  if csv_path.exists() or start_round:
    kept = log.rewind(start_round)
    if kept != start_round:
      raise UserError(f'{csv_path} holds rows for {kept} of the {start_round} rounds in the '
                      'checkpoint (was it edited or deleted?); resume needs them all')
  tensorboard = _replay_tensorboard(out / 'tensorboard', log.rows())

  holdout = config.federated_eval_holdout if config.federated_eval_clients else 0
  datasets_for = ClientDatasets(task, seed=config.seed, holdout=holdout)
  federated_evaluator = (
      _FederatedEvaluator(process_task or task, datasets_for, client_ids,
                          config.federated_eval_clients, config.seed)
      if config.federated_eval_clients else None)
  # After every process is built (see Evaluator).
  validation = Evaluator(task, task.validation_data, 'validation')
  test = Evaluator(task, task.test_data, 'test')
  sampling_rate = config.clients_per_round / num_clients

  status = 'completed'
  target_round: int | None = None
  last: dict[str, float] = {}
  round_seconds: list[float] = []
  # The last round that is done (see the docstring) and its state.
  done_round, done_state = start_round, state
  saved_round = start_round
  started = time.perf_counter()
  bar = tqdm.tqdm(
      total=config.total_rounds, initial=start_round, unit='round', desc=description or task.name,
      disable=not config.progress, file=sys.stderr, dynamic_ncols=True,
  )
  try:
    for round_num in range(start_round + 1, config.total_rounds + 1):
      round_start = time.perf_counter()
      if config.sampling == 'poisson':
        sampled = poisson_sample_clients(client_ids, sampling_rate, config.seed, round_num)
      else:
        sampled = sample_clients(client_ids, config.clients_per_round, config.seed, round_num)
      _test_hook('next', round_num, out)
      if sampled:
        output = process.next(done_state, datasets_for(sampled, round_num))
        new_state = output.state
        row = metrics_log.training_row(round_num, output.metrics)
      else:  # An empty Poisson cohort: a round without an update.
        new_state = done_state
        row = {'round': round_num, 'train_examples': 0}
      row['clients'] = len(sampled)
      seconds = time.perf_counter() - round_start
      last_round = round_num == config.total_rounds
      weights = None
      if round_num % config.rounds_per_eval == 0 or last_round:
        _test_hook('eval', round_num, out)
        weights = process.get_model_weights(new_state)
        row.update(validation(weights))
        if federated_evaluator is not None:
          row.update(federated_evaluator(weights, round_num))
      reached = (config.target_accuracy is not None and 'validation_accuracy' in row
                 and target_reached(row['validation_accuracy'], config.target_accuracy))
      diverged = not all(math.isfinite(v) for v in row.values())
      if (last_round or reached or diverged
          or (config.rounds_per_test and round_num % config.rounds_per_test == 0)):
        if weights is None:
          weights = process.get_model_weights(new_state)
        row.update(test(weights))
      row['round_seconds'] = seconds
      round_seconds.append(seconds)
      log.append(row)
      _test_hook('csv', round_num, out)
      with tensorboard.as_default(step=round_num):
        for key, value in row.items():
          if key != 'round':
            tf.summary.scalar(key, value)
      _test_hook('tensorboard', round_num, out)
      done_round, done_state, last = round_num, new_state, row
      bar.update(1)
      bar.set_postfix({k.replace('_accuracy', '_acc'): f'{row[k]:.4f}'
                       for k in ('train_loss', 'validation_accuracy') if k in row})
      if reached:
        status, target_round = 'target_reached', round_num
      if diverged:
        status = 'diverged'
      if (round_num % config.rounds_per_checkpoint == 0 or last_round or reached or diverged):
        _test_hook('checkpoint', round_num, out)
        checkpoints.save(done_state, round_num)
        saved_round = round_num
        _test_hook('saved', round_num, out)
      if reached or diverged:
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
    if status == 'interrupted' and done_round > saved_round:
      # Keep every finished round: a resumed run continues right after it.
      try:
        checkpoints.save(done_state, done_round)
      except tff.program.ProgramStateExistsError:
        # The signal came while this very round was being saved: that save stands (the
        # manager renames a save into place only when it is complete).
        pass
    summary = _write_summary(
        out, task, config, status=status, rounds_completed=done_round, last=last,
        target_round=target_round, round_seconds=round_seconds,
        wall_seconds=time.perf_counter() - started,
    )
  return summary


def _write_summary(out: Path, task: Task, config: LoopConfig, *, status: str, rounds_completed: int,
                   last: dict[str, float], target_round: int | None,
                   round_seconds: list[float], wall_seconds: float) -> dict[str, Any]:
  rows = metrics_log.MetricsCsv(out / 'metrics.csv', CSV_COLUMNS).rows()

  def column(name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, '')]

  validated, tested = column('validation_accuracy'), column('test_accuracy')
  summary = {
      'task': task.name,
      'status': status,
      'rounds_completed': rounds_completed,
      'total_rounds': config.total_rounds,
      'seed': config.seed,
      'sampling': config.sampling,
      **outputs.provenance(),
      'final_metrics': last,
      'final_validation_accuracy': validated[-1] if validated else None,
      'best_validation_accuracy': max(validated) if validated else None,
      # The test set is evaluated after the last round (and every --rounds_per_test):
      # tables report this number; tuning and early stopping read validation only.
      'final_test_accuracy': tested[-1] if tested else None,
      'target_accuracy': config.target_accuracy,
      'target_metric': 'validation_accuracy',
      'target_reached_round': target_round,
      'wall_seconds_this_run': round(wall_seconds, 3),
      'mean_round_seconds_this_run': (round(float(np.mean(round_seconds)), 4)
                                      if round_seconds else None),
      'outputs': {name: str(out / name) for name in
                  ('metrics.csv', 'metrics.png', 'summary.json', 'hparams.json', 'tensorboard',
                   'checkpoints')},
  }
  if config.federated_eval_clients:
    summary['final_federated_eval'] = {k: last.get(k) for k in FEDERATED_EVAL_COLUMNS}
  outputs.write_json(out / 'summary.json', summary)
  if rows:
    _plot(rows, out / 'metrics.png', title=f'{out.name} ({task.name})')
  return summary


def _plot(rows: list[dict[str, str]], path: Path, *, title: str) -> None:
  def column(name: str) -> tuple[list[float], list[float]]:
    pairs = [(float(r['round']), float(r[name])) for r in rows if r.get(name)]
    return [p[0] for p in pairs], [p[1] for p in pairs]

  accuracy = {'train accuracy': column('train_accuracy'),
              'validation accuracy': column('validation_accuracy'),
              'test accuracy': column('test_accuracy')}
  panels = [('loss', {'train loss': column('train_loss'),
                      'validation loss': column('validation_loss')})]
  if any(r.get('fed_eval_accuracy_p50') for r in rows):
    panels.append(('federated evaluation: per-client accuracy', {
        'p10': column('fed_eval_accuracy_p10'), 'median': column('fed_eval_accuracy_p50'),
        'p90': column('fed_eval_accuracy_p90'), 'worst client': column('fed_eval_accuracy_min'),
        'centralized validation': column('validation_accuracy')}))
  outputs.plot_curves({k: v for k, v in accuracy.items() if v[0]}, path, title=title,
                      xlabel='round', ylabel='accuracy', panels=panels)
