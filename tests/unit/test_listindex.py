"""ListIndex answers what a walk over every item with the filter would, byte
for byte and in the source's order; it follows the source by version,
encodes an item again only when it changed, and forgets removed items
(their labels too)."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from podrt.api.runtime import v1 as cri
from podrt.cri.listcache import whole
from podrt.cri.listindex import Listed, ListIndex


@attrs.frozen
class Item:
    id: str
    state: int
    labels: dict[str, str]
    pod: str


def message(item: Item) -> cri.Container:
    return cri.Container(id=item.id, pod_sandbox_id=item.pod, state=cri.ContainerState(item.state), labels=item.labels)


def listed(item: Item) -> Listed:
    return Listed(item.id, item, item.state, item.labels, item.pod)


def index() -> ListIndex[Item]:
    return ListIndex(message, listed)


def answer(found: list[bytes]) -> bytes:
    return bytes(whole(cri.ListContainersResponse, found))


def reference(items: list[Item], *, ids: Any = None, state: Any = None, labels: Any = None, group: Any = None) -> bytes:
    chosen = [i for i in items if (ids is None or i.id in ids) and (state is None or i.state == state)
              and all(i.labels.get(k) == v for k, v in (labels or {}).items())
              and (group is None or i.pod.startswith(group))]
    return bytes(cri.ListContainersResponse(containers=[message(i) for i in chosen]))


ITEMS = st.lists(st.builds(
    Item, id=st.sampled_from([f"c{n:02d}" for n in range(30)]), state=st.integers(0, 3),
    labels=st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=2),
    pod=st.sampled_from(["pa1", "pa2", "pb1"])), max_size=25, unique_by=lambda i: i.id)
FILTERS = st.fixed_dictionaries({}, optional={
    "ids": st.lists(st.sampled_from([f"c{n:02d}" for n in range(30)]), max_size=4),
    "state": st.integers(0, 3),
    "labels": st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=2),
    "group": st.sampled_from(["pa1", "pa", "p", "pc"])})


@given(ITEMS, st.lists(FILTERS, min_size=1, max_size=4))
def test_every_filter_answers_what_a_walk_would(items: list[Item], filters: list[dict[str, Any]]) -> None:
    idx = index()
    idx.sync(1, lambda: items)
    for f in filters:
        assert answer(idx.select(**f)) == reference(items, **f)


@given(ITEMS, ITEMS, FILTERS)
def test_after_a_change_of_version_it_answers_for_the_new_items(before: list[Item], after: list[Item],
                                                                f: dict[str, Any]) -> None:
    idx = index()
    idx.sync(1, lambda: before)
    idx.select(**f)
    idx.sync(2, lambda: after)
    assert answer(idx.select(**f)) == reference(after, **f)
    assert answer(idx.select()) == reference(after)


def test_items_are_encoded_once_while_unchanged_and_again_when_changed() -> None:
    encoded: list[str] = []

    def counting(item: Item) -> cri.Container:
        encoded.append(item.id)
        return message(item)

    idx: ListIndex[Item] = ListIndex(counting, listed)
    a, b = Item("a", 1, {"k": "v"}, "p"), Item("b", 1, {}, "p")
    idx.sync(1, lambda: [a, b])
    idx.sync(2, lambda: [a, b])
    assert encoded == ["a", "b"]
    a2 = attrs.evolve(a, state=2)
    idx.sync(3, lambda: [a2, b])
    assert encoded == ["a", "b", "a"]
    assert answer(idx.select(state=2)) == reference([a2, b], state=2)


def test_the_same_version_is_not_walked_again() -> None:
    idx = index()
    idx.sync(1, lambda: [Item("a", 1, {}, "p")])
    idx.sync(1, lambda: [])  # the source's version says nothing changed
    assert answer(idx.select()) == reference([Item("a", 1, {}, "p")])


def test_update_between_versions_changes_the_state_in_place() -> None:
    items = [Item("a", 1, {}, "p"), Item("b", 1, {}, "p"), Item("c", 1, {}, "p")]
    idx = index()
    idx.sync(1, lambda: items)
    assert answer(idx.select(state=1)) == reference(items, state=1)  # the list by state is made
    idx.update(attrs.evolve(items[1], state=2))
    now = [items[0], attrs.evolve(items[1], state=2), items[2]]
    for f in ({}, {"state": 1}, {"state": 2}, {"group": "p"}):
        assert answer(idx.select(**f)) == reference(now, **f)
    idx.update(Item("z", 2, {}, "p"))  # not in the index: not added
    assert answer(idx.select()) == reference(now)


def test_removed_items_leave_no_trace_in_the_indexes() -> None:
    idx = index()
    idx.sync(1, lambda: [Item(f"i{n}", 1, {"n": str(n), "app": "x"}, f"p{n}") for n in range(50)])
    idx.sync(2, lambda: [])
    assert idx.select(labels={"app": "x"}) == [] and idx.select(group="p1") == []
    assert idx._by_label == {} and idx._by_group == {}
