"""The dependency graph of a plan: order, readiness, waves, critical path, cycles.

Built on the standard library's `graphlib` (Kahn's algorithm). It takes plain
`{task_id: dependency_ids}` mappings so the compiler can check raw model output
before any `Plan` exists.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping

from planner.errors import CycleError, SelfLoopError, UnknownDependencyError

__all__ = ["DependencyGraph", "find_cycle"]


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle as ``[a, b, c, a]`` (each task depends on the next), or None.

    Dependencies on ids missing from `edges` are ignored here; they are a
    different defect, reported on its own.
    """
    sorter = graphlib.TopologicalSorter(
        {node: [d for d in deps if d in edges] for node, deps in edges.items()}
    )
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists predecessors first; reverse to read as "depends on".
        ring = list(reversed(exc.args[1]))[:-1]
        start = ring.index(min(ring))
        ring = ring[start:] + ring[:start]
        return ring + [ring[0]]
    return None


class DependencyGraph:
    """An immutable DAG over task ids. Construction validates it.

    Raises `SelfLoopError`, `UnknownDependencyError` or `CycleError` (naming the
    cycle) when the edges are not a DAG.
    """

    def __init__(self, edges: Mapping[str, Iterable[str]]) -> None:
        self._deps: dict[str, tuple[str, ...]] = {n: tuple(d) for n, d in edges.items()}
        for node, deps in self._deps.items():
            for dep in deps:
                if dep == node:
                    raise SelfLoopError(node)
                if dep not in self._deps:
                    raise UnknownDependencyError(node, dep)
        cycle = find_cycle(self._deps)
        if cycle:
            raise CycleError(cycle)
        self._dependents: dict[str, list[str]] = {n: [] for n in self._deps}
        for node, deps in self._deps.items():
            for dep in deps:
                self._dependents[dep].append(node)
        self._order = self._kahn_order()

    def _kahn_order(self) -> tuple[str, ...]:
        sorter = graphlib.TopologicalSorter(self._deps)
        sorter.prepare()
        order: list[str] = []
        position = {n: i for i, n in enumerate(self._deps)}
        while sorter.is_active():
            # Sort each ready batch by plan position so the order is deterministic.
            batch = sorted(sorter.get_ready(), key=position.__getitem__)
            order.extend(batch)
            sorter.done(*batch)
        return tuple(order)

    def __len__(self) -> int:
        return len(self._deps)

    def __contains__(self, node: object) -> bool:
        return node in self._deps

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._deps)

    def dependencies(self, node: str) -> tuple[str, ...]:
        return self._deps[node]

    def dependents(self, node: str) -> tuple[str, ...]:
        return tuple(self._dependents[node])

    def topological_order(self) -> tuple[str, ...]:
        """Every node after all of its dependencies (Kahn's algorithm)."""
        return self._order

    def ready(self, done: Iterable[str], started: Iterable[str] = ()) -> list[str]:
        """Nodes not done or started whose dependencies are all done, in topological order."""
        done_set, started_set = set(done), set(started)
        return [
            n
            for n in self._order
            if n not in done_set
            and n not in started_set
            and all(d in done_set for d in self._deps[n])
        ]

    def waves(self) -> list[list[str]]:
        """Nodes grouped by level: wave k can run once waves 0..k-1 are done."""
        level: dict[str, int] = {}
        for node in self._order:
            level[node] = 1 + max((level[d] for d in self._deps[node]), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for node in self._order:
            waves[level[node]].append(node)
        return waves

    def critical_path(self, weight: Mapping[str, float] | None = None) -> list[str]:
        """The heaviest dependency chain (by node count unless `weight` is given)."""
        if not self._deps:
            return []
        best: dict[str, float] = {}
        via: dict[str, str | None] = {}
        for node in self._order:
            prev = max(self._deps[node], key=lambda d: best[d], default=None)
            best[node] = (weight[node] if weight else 1.0) + (best[prev] if prev is not None else 0.0)
            via[node] = prev
        node: str | None = max(self._order, key=lambda n: best[n])
        path: list[str] = []
        while node is not None:
            path.append(node)
            node = via[node]
        return path[::-1]

    def sinks(self) -> list[str]:
        """Nodes nothing depends on: their results make the final answer."""
        return [n for n in self._order if not self._dependents[n]]

    def descendants(self, node: str) -> set[str]:
        """Every node that depends on `node`, directly or not."""
        seen: set[str] = set()
        stack = list(self._dependents[node])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self._dependents[current])
        return seen
