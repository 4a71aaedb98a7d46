#!/usr/bin/env python3
"""Coverage-guided fuzzing of the UDP packet codec (jettui.transfer.packet decoders and the
varint range decoder they use).

    pip install atheris
    python fuzz/fuzz_packet.py -runs=1000000 fuzz/corpus/packet

Contract: a value or PacketError (ValueError for RangeSet.from_bytes), never anything else.
"""

from __future__ import annotations

import _common  # noqa: F401  (sys.path)
import atheris

with atheris.instrument_imports(include=["jettui", "fuzz"]):
    from fuzz.targets import packet_one_input


def test_one_input(data: bytes) -> None:
    packet_one_input(data)


if __name__ == "__main__":
    _common.run(test_one_input)
