"""Runs a recipe binary with TensorFlow's global seed set: `python -m tests.seeded_run MODULE ARGS...`.

Until the recipes seed their model initialization themselves (`--seed` covers the
partition and client sampling today), tests that compare two runs start them through
this: the initial weights, and the seeds TensorFlow derives for the client datasets'
shuffles, are then the same in both runs.
"""

import runpy
import sys

import tensorflow as tf

if __name__ == '__main__':
  tf.keras.utils.set_random_seed(0)
  module = sys.argv[1]
  sys.argv = [module.rsplit('.', 1)[-1] + '.py', *sys.argv[2:]]
  runpy.run_module(module, run_name='__main__', alter_sys=True)
