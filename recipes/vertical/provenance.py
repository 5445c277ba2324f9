"""Where a result came from: the project's git commit, for summaries and benchmark results."""

from __future__ import annotations

from core import outputs


def git_commit() -> str:
  """`git rev-parse HEAD` of the project checkout, or 'unknown' outside one.

  A checkout with uncommitted changes to tracked files gets a '-dirty' suffix: its results
  do not match the commit exactly. (`core.outputs.git_commit` has the same facts as two
  fields.)
  """
  info = outputs.git_commit()
  return info['git_commit'] + ('-dirty' if info['git_dirty'] else '')
