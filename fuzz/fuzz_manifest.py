#!/usr/bin/env python3
"""Coverage-guided fuzzing of the manifest decoder: the reliable control stream
(ControlStream.receive) and FileEntry.from_wire on every manifest entry it yields.

    pip install atheris
    python fuzz/fuzz_manifest.py -runs=1000000 fuzz/corpus/manifest

FUZZ_CHECKPOINT=1 also feeds the decoded object to Checkpoint.from_wire (resume state).
Contract: ControlError / ValueError, never anything else.
"""

from __future__ import annotations

import os

import _common  # noqa: F401  (sys.path)
import atheris

with atheris.instrument_imports(include=["jettui", "msgpack", "fuzz"]):
    from fuzz.targets import checkpoint_one_input, manifest_one_input
    from jettui.errors import RemoteProtocolError
    from jettui.wire.framing import unpack

CHECKPOINT = os.environ.get("FUZZ_CHECKPOINT") == "1"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    offsets = [fdp.ConsumeIntInRange(0, 1 << 20) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    manifest_one_input(rest, offsets)
    if CHECKPOINT:
        try:
            obj = unpack(rest, 1 << 16)
        except RemoteProtocolError:
            return
        checkpoint_one_input(obj)


if __name__ == "__main__":
    _common.run(test_one_input)
