"""The suite's run order (tests/schedule.py): every test once, the long ones first in each
xdist worker's slice with the slices' seconds about even, the rest in collection order."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, cast

import pytest

from tests import schedule
from tests.conftest import ROOT


@dataclass(frozen=True)
class Fake:
    nodeid: str


def fakes(*ids: str) -> list[pytest.Item]:
    return cast(list[pytest.Item], [Fake(i) for i in ids])


def ids(items: list[Any]) -> list[str]:
    return [item.nodeid for item in items]


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = {"m.py::long": 30.0, "m.py::mid": 20.0, "m.py::short_long": 10.0}
    monkeypatch.setattr(schedule, "SECONDS", seconds)
    monkeypatch.setattr(schedule, "WHOLE_MODULES", {"w.py": 25.0})


def test_slices_are_the_sizes_worksteal_hands_out() -> None:
    assert schedule.slice_sizes(10, 2) == [5, 5]
    assert schedule.slice_sizes(11, 2) == [5, 6]
    assert schedule.slice_sizes(10, 3) == [3, 3, 4]
    assert schedule.slice_sizes(3, 1) == [3]


@pytest.mark.usefixtures("table")
def test_long_tests_lead_each_slice_and_the_rest_keep_their_order() -> None:
    items = fakes(
        "a.py::t1",
        "m.py::short_long",
        "a.py::t2",
        "m.py::long[x]",
        "a.py::t3",
        "m.py::mid",
        "a.py::t4",
        "a.py::t5",
    )
    ordered = ids(schedule.arrange(items, 2))
    # slice 1: long (30); slice 2: mid (20) then short_long (10): 30 each
    assert ordered == [
        "m.py::long[x]",
        "a.py::t1",
        "a.py::t2",
        "a.py::t3",
        "m.py::mid",
        "m.py::short_long",
        "a.py::t4",
        "a.py::t5",
    ]


@pytest.mark.usefixtures("table")
def test_a_module_with_a_shared_fixture_moves_as_one_block() -> None:
    items = fakes("a.py::t1", "w.py::one", "a.py::t2", "w.py::two", "a.py::t3", "a.py::t4")
    ordered = ids(schedule.arrange(items, 2))
    assert ordered == ["w.py::one", "w.py::two", "a.py::t1", "a.py::t2", "a.py::t3", "a.py::t4"]


@pytest.mark.usefixtures("table")
def test_nothing_is_lost_or_doubled_whatever_the_worker_count() -> None:
    items = fakes(*(f"a.py::t{i}" for i in range(7)), "m.py::long", "m.py::mid", "w.py::x")
    for workers in (1, 2, 3, 4, 16):
        assert sorted(ids(schedule.arrange(items, workers))) == sorted(ids(items))


def test_every_test_the_table_names_exists() -> None:
    """A renamed or removed test must leave the table too (a stale entry balances nothing)."""
    names = [*schedule.SECONDS, *schedule.WHOLE_MODULES]
    missing = []
    for name in names:
        path, _, rest = name.partition("::")
        file = ROOT / path
        if not file.is_file():
            missing.append(name)
            continue
        if not rest:
            continue
        tree = ast.parse(file.read_text())
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        } | {  # a test class made by assignment (a hypothesis state machine's TestCase)
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        if rest.split("::", 1)[0] not in defined:
            missing.append(name)
    assert missing == []
