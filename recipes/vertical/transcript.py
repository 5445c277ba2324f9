"""Recorded messages: what crosses the wire between vertical-FL parties, for tests and reports.

Both protocols of the recipe (`psi`, `secure_sum` through `split_model`) send every value
that leaves a party through a `Transcript`, so tests can check the claims of the threat
model on what was actually sent (not on what the binary prints), and a test can subclass
`Transcript` to tamper with a message in flight.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence


@dataclasses.dataclass(frozen=True)
class Message:
  """One transmission: who sent what to whom. The payload is all that crosses the wire."""

  sender: str
  receiver: str
  kind: str
  payload: tuple[bytes, ...]

  @property
  def num_bytes(self) -> int:
    return sum(len(item) for item in self.payload)


class Transcript:
  """Every message of a protocol run, in order."""

  def __init__(self) -> None:
    self.messages: list[Message] = []

  def send(self, sender: str, receiver: str, kind: str, payload: Sequence[bytes]) -> tuple[bytes, ...]:
    """Records a message and returns its payload, as the receiver gets it.

    Args:
      sender: Name of the sending party.
      receiver: Name of the receiving party.
      kind: What the message is (a short description, constant per protocol step).
      payload: The bytes sent, one item per value.

    Returns:
      The payload the receiver works with (a subclass may alter it, to test tampering).
    """
    message = Message(sender, receiver, kind, tuple(payload))
    self.messages.append(message)
    return message.payload

  def __iter__(self) -> Iterator[Message]:
    return iter(self.messages)

  @property
  def num_bytes(self) -> int:
    return sum(message.num_bytes for message in self.messages)
