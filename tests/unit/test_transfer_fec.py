"""Tail parity (jettui.transfer.fec): any one block of a group is rebuilt from the others."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jettui.transfer.fec import ParityGroup, group_size, parity_of


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 64).flatmap(
        lambda size: st.tuples(
            st.lists(st.binary(min_size=size, max_size=size), min_size=1, max_size=15),
            st.binary(min_size=1, max_size=size),  # the file's last block may be shorter
        )
    ),
    st.data(),
)
def test_any_one_missing_block_is_rebuilt(blocks_and_last, data):
    whole, last = blocks_and_last
    blocks = [*whole, last]
    parity = parity_of(blocks)
    assert len(parity) == max(len(b) for b in blocks)
    lost = data.draw(st.integers(0, len(blocks) - 1))
    group = ParityGroup(7, range(100, 100 + len(blocks)), parity)
    order = data.draw(st.permutations([i for i in range(len(blocks)) if i != lost]))
    for i in order:
        group.absorb(100 + i, blocks[i])
    assert group.missing == {100 + lost}
    assert group.rebuild(len(blocks[lost])) == blocks[lost]


def test_no_parity_until_something_was_lost_and_smaller_groups_as_loss_grows():
    assert group_size(0, 10_000) == 0
    assert group_size(1, 0) == 0
    assert group_size(10, 10_000) == 16  # 0.1 %
    assert group_size(100, 10_000) == 8  # 1 %
    assert group_size(500, 10_000) == 4  # 5 %
    assert group_size(9_000, 10_000) == 4
