"""Vertical federated learning: parties hold different features of the same people.

Modules, in the order a run uses them:

* `data`: scikit-learn tables split by feature columns into per-party tables with their
  own (overlapping, differently ordered) ID lists.
* `psi`: Diffie-Hellman private set intersection over X25519 to align rows by ID.
* `secure_sum`: pairwise-masked fixed-point sums, so the coordinator sees only the sum of
  the parties' embeddings.
* `models`, `split_model`: bottom models per party, a top model at the coordinator, and
  the split-learning training loop.
* `baselines`: the centralized and label-party-only models on the same split.
* `metrics`: accuracy, precision, recall, F1 and AUC.
* `experiment`: ties the above together for the binary and the benchmark.

Only `split_model`, `models`, `baselines` and `experiment` import TensorFlow.
"""
