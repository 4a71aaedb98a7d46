#!/usr/bin/env python3
"""Coverage-guided fuzzing of the request dispatcher: a Server in-process (not listening)
with an unauthenticated, a sandboxed and a sandboxed-superuser session; each input picks a
session and a method of jettui.server.dispatch.METHODS and carries msgpack parameters.

    pip install atheris
    python fuzz/fuzz_dispatch.py -runs=20000 fuzz/corpus/dispatch

Contract: dispatch() returns or raises a JettuiError; the request's work never fails with
an internal error; nothing outside the sandbox changes.
"""

from __future__ import annotations

import _common  # noqa: F401  (sys.path)
import atheris

with atheris.instrument_imports(include=["jettui", "fuzz"]):
    import jettui.server  # noqa: F401  (the handlers: instrumented, so coverage guides the fuzzer)
    from fuzz.targets import DispatchHarness
    from jettui.errors import RemoteProtocolError
    from jettui.wire.framing import unpack

HARNESS: DispatchHarness | None = None


def test_one_input(data: bytes) -> None:
    global HARNESS
    if HARNESS is None:
        HARNESS = DispatchHarness()
    if len(data) < 2:
        return
    # Byte 0: the session, byte 1: the method, then the msgpack parameters.
    role, method = data[0] % 3, data[1]
    try:
        params = unpack(data[2:], 1 << 16)
    except RemoteProtocolError:
        return
    HARNESS.one(role, method, params)


if __name__ == "__main__":
    _common.run(test_one_input)
