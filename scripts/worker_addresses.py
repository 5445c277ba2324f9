"""Prints the `--tff_worker` list of the workers behind one DNS name, once all of them are up.

A Kubernetes headless Service (deploy/k8s) gives no address per worker: its name resolves
to the IP of every ready worker pod. The driver Job runs

  python -m scripts.worker_addresses --service=fedrecipes-worker:8000 --expect=3

which waits until at least 3 addresses resolve and prints them as the recipes'
`--tff_worker` value (10.0.0.5:8000,10.0.0.6:8000,10.0.0.7:8000), sorted so that the
same pods always get the same slice of a round's clients.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Sequence

from absl import flags

from core import runtime
from core.errors import UserError
from recipes import cli

_SERVICE = flags.DEFINE_string(
    'service', 'fedrecipes-worker:8000',
    'host:port: the DNS name of the workers (default: the Service of deploy/k8s) and their port.')
_EXPECT = flags.DEFINE_integer('expect', 1, 'Wait until at least this many addresses resolve.',
                               lower_bound=1)
_TIMEOUT = flags.DEFINE_float('timeout_seconds', 300, 'Give up after this long.', lower_bound=0)
_FAMILY = flags.DEFINE_enum('family', 'ipv4', ['ipv4', 'ipv6'], 'Address family to resolve.')


def validate_flags() -> None:
  """Checks what the flags' bounds cannot express."""
  try:
    runtime.parse_worker_address(_SERVICE.value)
  except ValueError as e:
    raise UserError(f'--service: {e}') from None


def resolve(host: str, port: int, family: str) -> list[str]:
  """`ip:port` (`[ip]:port` for IPv6) of every address `host` resolves to, sorted."""
  af = socket.AF_INET6 if family == 'ipv6' else socket.AF_INET
  try:
    infos = socket.getaddrinfo(host, port, af, socket.SOCK_STREAM)
  except socket.gaierror:
    return []
  ips = sorted({ipaddress.ip_address(info[4][0]) for info in infos})
  return [f'[{ip}]:{port}' if ip.version == 6 else f'{ip}:{port}' for ip in ips]


def wait_for(host: str, port: int, *, expect: int, timeout_seconds: float, family: str) -> list[str]:
  """Resolves `host` until `expect` addresses answer; raises UserError after the timeout."""
  deadline = time.monotonic() + timeout_seconds
  while True:
    addresses = resolve(host, port, family)
    if len(addresses) >= expect:
      return addresses
    if time.monotonic() >= deadline:
      raise UserError(f'{len(addresses)} of the {expect} expected workers resolve at {host} after '
                      f'{timeout_seconds:g} s ({", ".join(addresses) or "none"}); are the worker '
                      'pods ready?')
    time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def main(argv: Sequence[str]) -> None:
  del argv
  host, port = runtime.parse_worker_address(_SERVICE.value)
  print(','.join(wait_for(host, port, expect=_EXPECT.value, timeout_seconds=_TIMEOUT.value,
                          family=_FAMILY.value)))


if __name__ == '__main__':
  cli.run(main, validate=validate_flags)
