"""Hypothesis variant of fuzz/fuzz_dispatch.py: random requests through dispatch() of an
in-process Server, as an anonymous, a sandboxed and a sandboxed-superuser session.  Only
JettuiError subclasses may come out; no request's work fails with an internal error;
nothing outside the sandbox changes."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import DispatchHarness

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=16)
    | st.sampled_from(["/", "..", "../outside", "out/canary", "/out", "x" * 300, "a:b", "%u", "\x00"])
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def harness() -> Iterator[DispatchHarness]:
    h = DispatchHarness()
    try:
        yield h
    finally:
        h.loop.close()
        shutil.rmtree(h.base, ignore_errors=True)


@st.composite
def requests(draw: st.DrawFn, harness: DispatchHarness) -> tuple[int, int, dict[str, Any]]:
    from jettui.server.dispatch import METHODS

    index = draw(st.integers(0, len(harness.methods) - 1))
    names = list(inspect.signature(METHODS[harness.methods[index]].handler).parameters)[1:]
    params = draw(st.dictionaries(st.sampled_from(names) if names else st.text(max_size=4), values, max_size=4))
    if draw(st.integers(0, 9)) == 0:
        params[draw(st.text(max_size=6))] = draw(values)  # an unknown parameter now and then
    return draw(st.integers(0, 2)), index, params


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.data())
def test_random_requests(harness: DispatchHarness, data: st.DataObject) -> None:
    role, index, params = data.draw(requests(harness))
    harness.one(role, index, params)
