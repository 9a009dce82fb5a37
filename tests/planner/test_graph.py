"""`planner.graph`: order, readiness, waves, critical path, cycles and graph errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.errors import CycleError, PlanError, SelfLoopError, UnknownDependencyError
from planner.graph import DependencyGraph, find_cycle

# a -> {b, c} -> d, plus an independent e and a tail f after d.
DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": [], "f": ["d"]}


def _assert_topological(graph: DependencyGraph, order: tuple[str, ...]) -> None:
    position = {n: i for i, n in enumerate(order)}
    assert sorted(order) == sorted(graph.nodes), "every node exactly once"
    for node in graph.nodes:
        for dep in graph.dependencies(node):
            assert position[dep] < position[node], f"{dep} must come before {node}"


class TestTopologicalOrder:
    def test_respects_dependencies(self) -> None:
        graph = DependencyGraph(DIAMOND)
        _assert_topological(graph, graph.topological_order())

    def test_exact_order_is_kahn_batches_sorted_by_plan_position(self) -> None:
        # Ready batch 1 = {c, b} (plan positions 0 and 2) -> c, b; then a.
        assert DependencyGraph({"c": [], "a": ["c"], "b": []}).topological_order() == ("c", "b", "a")
        assert DependencyGraph(DIAMOND).topological_order() == ("a", "e", "b", "c", "d", "f")

    def test_plan_position_breaks_ties_not_alphabetical(self) -> None:
        assert DependencyGraph({"z": [], "y": [], "x": []}).topological_order() == ("z", "y", "x")

    def test_long_chain_given_in_reverse(self) -> None:
        edges = {f"n{i}": ([f"n{i - 1}"] if i else []) for i in reversed(range(200))}
        order = DependencyGraph(edges).topological_order()
        assert order == tuple(f"n{i}" for i in range(200))

    def test_same_order_across_processes_with_different_hash_seeds(self) -> None:
        # Resume must rebuild the very same order in a new process; string hashing
        # (and so set iteration) differs between processes.
        edges = {f"t{i}": [f"t{j}" for j in range(i) if (i * 7 + j) % 3 == 0] for i in range(30)}
        expected = list(DependencyGraph(edges).topological_order())
        script = (
            "import json, sys\n"
            "from planner.graph import DependencyGraph\n"
            "edges = json.loads(sys.argv[1])\n"
            "print(json.dumps(list(DependencyGraph(edges).topological_order())))\n"
        )
        root = Path(__file__).resolve().parents[2]
        for seed in ("1", "4242"):
            out = subprocess.run(
                [sys.executable, "-c", script, json.dumps(edges)],
                env={**os.environ, "PYTHONHASHSEED": seed},
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            assert json.loads(out.stdout) == expected, f"order differs with PYTHONHASHSEED={seed}"

    def test_repeated_construction_gives_identical_order(self) -> None:
        orders = {DependencyGraph(DIAMOND).topological_order() for _ in range(5)}
        assert len(orders) == 1


class TestReady:
    def test_initially_only_roots_in_order(self) -> None:
        assert DependencyGraph(DIAMOND).ready(done=[]) == ["a", "e"]

    def test_node_ready_only_when_all_deps_done(self) -> None:
        graph = DependencyGraph(DIAMOND)
        assert graph.ready(done=["a", "b"]) == ["e", "c"]
        assert "d" not in graph.ready(done=["a", "b"])
        assert graph.ready(done=["a", "b", "c"]) == ["e", "d"]

    def test_started_nodes_are_not_ready_again(self) -> None:
        graph = DependencyGraph(DIAMOND)
        assert graph.ready(done=["a"], started=["b", "e"]) == ["c"]

    def test_done_nodes_are_not_ready(self) -> None:
        graph = DependencyGraph(DIAMOND)
        assert graph.ready(done=list(DIAMOND)) == []

    def test_accepts_any_iterables(self) -> None:
        graph = DependencyGraph(DIAMOND)
        assert graph.ready(done=iter({"a"}), started=(n for n in ["e"])) == ["b", "c"]


class TestWaves:
    def test_diamond_levels(self) -> None:
        assert DependencyGraph(DIAMOND).waves() == [["a", "e"], ["b", "c"], ["d"], ["f"]]

    def test_level_is_longest_path_not_shortest(self) -> None:
        # c depends on a directly and via b: it belongs after b.
        assert DependencyGraph({"a": [], "b": ["a"], "c": ["a", "b"]}).waves() == [["a"], ["b"], ["c"]]

    def test_independent_tasks_are_one_wave(self) -> None:
        assert DependencyGraph({"x": [], "y": [], "z": []}).waves() == [["x", "y", "z"]]

    def test_empty_graph_has_no_waves(self) -> None:
        assert DependencyGraph({}).waves() == []


class TestCriticalPath:
    def test_unweighted_longest_chain(self) -> None:
        assert DependencyGraph(DIAMOND).critical_path() == ["a", "b", "d", "f"]

    def test_unweighted_picks_the_longer_of_two_chains(self) -> None:
        edges = {"s1": [], "s2": ["s1"], "l1": [], "l2": ["l1"], "l3": ["l2"]}
        assert DependencyGraph(edges).critical_path() == ["l1", "l2", "l3"]

    def test_weighted_prefers_heavier_branch(self) -> None:
        graph = DependencyGraph(DIAMOND)
        weight = {"a": 1, "b": 1, "c": 10, "d": 1, "e": 1, "f": 1}
        assert graph.critical_path(weight) == ["a", "c", "d", "f"]

    def test_weighted_single_heavy_node_beats_long_light_chain(self) -> None:
        graph = DependencyGraph({"a": [], "b": ["a"], "c": ["b"], "h": []})
        assert graph.critical_path({"a": 1, "b": 1, "c": 1, "h": 100}) == ["h"]
        assert graph.critical_path() == ["a", "b", "c"]

    def test_empty_graph(self) -> None:
        assert DependencyGraph({}).critical_path() == []

    def test_weighted_with_empty_string_id(self) -> None:
        graph = DependencyGraph({"": [], "b": [""], "c": []})
        assert graph.critical_path({"": 10, "b": 1, "c": 5}) == ["", "b"]


class TestSinksAndDescendants:
    def test_sinks(self) -> None:
        assert DependencyGraph(DIAMOND).sinks() == ["e", "f"]

    def test_descendants_transitive(self) -> None:
        graph = DependencyGraph(DIAMOND)
        assert graph.descendants("a") == {"b", "c", "d", "f"}
        assert graph.descendants("c") == {"d", "f"}
        assert graph.descendants("f") == set()
        assert graph.descendants("e") == set()

    def test_dependents_and_dependencies(self) -> None:
        graph = DependencyGraph(DIAMOND)
        assert graph.dependents("a") == ("b", "c")
        assert graph.dependencies("d") == ("b", "c")
        assert len(graph) == 6 and "d" in graph and "zz" not in graph
        assert graph.nodes == ("a", "b", "c", "d", "e", "f")


class TestFindCycle:
    @pytest.mark.parametrize(
        "edges",
        [
            {"a": ["b"], "b": ["c"], "c": ["a"]},
            {"c": ["a"], "b": ["c"], "a": ["b"]},
            {"b": ["c"], "c": ["a"], "a": ["b"]},
        ],
    )
    def test_names_cycle_rotated_to_smallest_id(self, edges: dict[str, list[str]]) -> None:
        assert find_cycle(edges) == ["a", "b", "c", "a"]

    def test_cycle_not_containing_global_minimum(self) -> None:
        # x depends on z, z on y, y on x; 'a' is outside the cycle.
        assert find_cycle({"a": [], "z": ["y"], "y": ["x"], "x": ["z"]}) == ["x", "z", "y", "x"]

    def test_two_cycle_and_self_loop(self) -> None:
        assert find_cycle({"b": ["a"], "a": ["b"]}) == ["a", "b", "a"]
        assert find_cycle({"a": ["a"]}) == ["a", "a"]

    def test_each_listed_node_depends_on_the_next(self) -> None:
        edges = {"p": ["q"], "q": ["r"], "r": ["s"], "s": ["p"], "t": ["p"]}
        cycle = find_cycle(edges)
        assert cycle is not None and cycle[0] == cycle[-1] == "p"
        for node, nxt in zip(cycle, cycle[1:]):
            assert nxt in edges[node]

    def test_acyclic_returns_none(self) -> None:
        assert find_cycle(DIAMOND) is None

    def test_unknown_dependencies_ignored(self) -> None:
        assert find_cycle({"a": ["ghost"], "b": ["a"]}) is None


class TestGraphErrors:
    def test_cycle_error_message_names_cycle(self) -> None:
        with pytest.raises(CycleError) as info:
            DependencyGraph({"c": ["a"], "a": ["b"], "b": ["c"], "d": []})
        assert info.value.cycle == ["a", "b", "c", "a"]
        assert "a -> b -> c -> a" in str(info.value)
        assert isinstance(info.value, PlanError) and isinstance(info.value, ValueError)

    def test_self_loop_names_the_task(self) -> None:
        with pytest.raises(SelfLoopError) as info:
            DependencyGraph({"a": [], "loopy": ["a", "loopy"]})
        assert info.value.task_id == "loopy"
        assert "'loopy'" in str(info.value)

    def test_unknown_dependency_names_both_ids(self) -> None:
        with pytest.raises(UnknownDependencyError) as info:
            DependencyGraph({"a": [], "b": ["a", "ghost"]})
        assert (info.value.task_id, info.value.missing) == ("b", "ghost")
        assert "'b'" in str(info.value) and "'ghost'" in str(info.value)
