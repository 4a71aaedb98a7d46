#!/usr/bin/env python3
"""Coverage-guided fuzzing of the frame decoder: wire.Connection.receive_data / next_event.

    pip install atheris
    python fuzz/fuzz_frames.py -runs=1000000 fuzz/corpus/frames

Contract: events or RemoteProtocolError, in either role, whatever the chunking.
"""

from __future__ import annotations

import _common  # noqa: F401  (sys.path)
import atheris

with atheris.instrument_imports(include=["jettui", "msgpack", "fuzz"]):
    from fuzz.targets import frames_one_input


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    server_role = fdp.ConsumeBool()
    sizes = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    frames_one_input(fdp.ConsumeBytes(fdp.remaining_bytes()), server_role, sizes)


if __name__ == "__main__":
    _common.run(test_one_input)
