"""Which GraphQL subscriptions a node holds, grouped by distinct input.

Many clients subscribed to the same thing share one input (the origin's digest says which), so a
publish is executed once per input, not once per client. Keys index the inputs they trigger.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Subscriber = tuple[str, str]  # (connection ID, operation ID)


@dataclass(slots=True)
class SubscriptionInput:
    """What re-executing one distinct subscription needs, and who receives the result."""

    digest: str
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    input_context: Any
    subscribers: dict[Subscriber, tuple[str, ...]] = field(default_factory=dict)


class SubscriptionIndex:
    def __init__(self) -> None:
        self._inputs: dict[str, SubscriptionInput] = {}
        self._by_key: dict[str, Counter[str]] = {}  # key -> digest -> subscriptions with both
        self._by_connection: dict[str, dict[str, str]] = {}  # connection -> operation -> digest

    def add(
        self,
        subscriber: Subscriber,
        digest: str,
        keys: tuple[str, ...],
        *,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        input_context: Any,
    ) -> None:
        """Subscribe; an input already held keeps the query and context it was created with."""
        self.remove(subscriber)
        held = self._inputs.get(digest)
        if held is None:
            held = SubscriptionInput(digest, query, variables, operation_name, input_context)
            self._inputs[digest] = held
        held.subscribers[subscriber] = keys
        for key in keys:
            self._by_key.setdefault(key, Counter())[digest] += 1
        connection_id, operation_id = subscriber
        self._by_connection.setdefault(connection_id, {})[operation_id] = digest

    def remove(self, subscriber: Subscriber) -> bool:
        connection_id, operation_id = subscriber
        operations = self._by_connection.get(connection_id)
        if operations is None or operation_id not in operations:
            return False
        digest = operations.pop(operation_id)
        if not operations:
            del self._by_connection[connection_id]
        held = self._inputs[digest]
        keys = held.subscribers.pop(subscriber)
        if not held.subscribers:
            del self._inputs[digest]
        for key in keys:
            counts = self._by_key[key]
            counts[digest] -= 1
            if counts[digest] <= 0:
                del counts[digest]
                if not counts:
                    del self._by_key[key]
        return True

    def remove_connection(self, connection_id: str) -> int:
        operations = list(self._by_connection.get(connection_id, ()))
        for operation_id in operations:
            self.remove((connection_id, operation_id))
        return len(operations)

    def matching(self, keys: tuple[str, ...]) -> list[SubscriptionInput]:
        """The distinct inputs any of `keys` triggers, each once."""
        digests: dict[str, None] = {}
        for key in keys:
            counts = self._by_key.get(key)
            if counts:
                digests.update(dict.fromkeys(counts))
        return [self._inputs[digest] for digest in digests]

    def get(self, digest: str) -> SubscriptionInput | None:
        return self._inputs.get(digest)

    def keys(self) -> list[str]:
        return list(self._by_key)

    def inputs(self) -> int:
        return len(self._inputs)

    def __len__(self) -> int:
        return sum(len(operations) for operations in self._by_connection.values())
