"""Where a result came from: the project's git commit, for summaries and benchmark results."""

from __future__ import annotations

from pathlib import Path
import subprocess

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = PROJECT_ROOT) -> str:
  """`git rev-parse HEAD` of the project checkout, or 'unknown' outside one.

  A checkout with uncommitted changes gets a '-dirty' suffix: its results do not match
  the commit exactly.
  """
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                            capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return f'{commit}-dirty' if status else commit
