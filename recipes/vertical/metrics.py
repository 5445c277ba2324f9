"""Classification metrics for held-out rows: accuracy, precision, recall, F1 and AUC.

Binary tasks score the positive class (label 1); multi-class tasks use macro averages and
one-vs-rest AUC, so every class counts alike whatever its frequency.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import exceptions as sklearn_exceptions
from sklearn import metrics as sklearn_metrics

METRIC_NAMES = ('accuracy', 'precision', 'recall', 'f1', 'auc')


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
  """Scores predicted class probabilities against true labels.

  Args:
    labels: Integer labels, shape [rows].
    probabilities: Class probabilities, shape [rows, num_classes]; the prediction is the
      most probable class.

  Returns:
    `METRIC_NAMES` -> value. AUC is NaN when the labels hold a single class (it is
    undefined then).
  """
  labels = np.asarray(labels)
  probabilities = np.asarray(probabilities, dtype=np.float64)
  num_classes = probabilities.shape[1]
  predictions = probabilities.argmax(axis=1)
  average = 'binary' if num_classes == 2 else 'macro'
  precision, recall, f1, _ = sklearn_metrics.precision_recall_fscore_support(
      labels, predictions, average=average, labels=None if num_classes == 2 else range(num_classes),
      zero_division=0)
  with warnings.catch_warnings():
    # sklearn warns and returns NaN if one class is missing, which is what we report.
    warnings.simplefilter('ignore', sklearn_exceptions.UndefinedMetricWarning)
    try:
      if num_classes == 2:
        auc = sklearn_metrics.roc_auc_score(labels, probabilities[:, 1])
      else:
        # Rows of softmax outputs sum to 1 up to float error, which sklearn checks strictly.
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        auc = sklearn_metrics.roc_auc_score(labels, probabilities, multi_class='ovr', average='macro',
                                            labels=range(num_classes))
    except ValueError:  # A multi-class test set missing a class: AUC is undefined.
      auc = float('nan')
  return {
      'accuracy': float(sklearn_metrics.accuracy_score(labels, predictions)),
      'precision': float(precision),
      'recall': float(recall),
      'f1': float(f1),
      'auc': float(auc),
  }
