"""Vertical federated learning: parties hold different features of the same people.

Modules, in the order a run uses them:

* `data`: scikit-learn tables split by feature columns into per-party tables with their
  own (overlapping, differently ordered) ID lists.
* `psi`: Diffie-Hellman private set intersection over Curve25519 (X25519) to align rows
  by ID; IDs hash onto the curve, every received message is checked.
* `secure_sum`: pairwise-masked fixed-point sums, so the coordinator sees only the sum of
  the non-label parties' embeddings.
* `models`, `split_model`: bottom models per party, a top model at the coordinator (the
  label party, party 0), and the split-learning training loop.
* `transcript`: the record of every message sent, on which the tests check the claims.
* `baselines`: the centralized and label-party-only models on the same split.
* `metrics`: accuracy, precision, recall, F1 and AUC.
* `experiment`: ties the above together for the binary and the benchmark.
* `provenance`: the git commit recorded beside results.

Roles and what each party learns are stated once, in the README's "Threat model"
(Vertical federated learning section); `split_model` and `psi` repeat the parts they
implement.

Only `split_model`, `models`, `baselines` and `experiment` import TensorFlow.
"""
