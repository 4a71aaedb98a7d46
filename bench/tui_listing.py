"""Bench: FileList with a 100,000-entry listing (prints numbers, asserts nothing).

Measures, inside a headless Textual app (``run_test``, 80x24 unless --size):

* load: ``set_entries`` of N entries, and from that call to the first painted row (the
  first ``render_line`` of the new listing, i.e. the compositor drawing it);
* key-to-repaint: a key press (down, pagedown, end, home, ``s`` sort) to the first
  ``render_line`` after it, i.e. the moment the changed screen is drawn.

Run: ``python bench/tui_listing.py [--entries 100000] [--repeat 5] [--size 80x24]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from textual.app import App, ComposeResult
from textual.strip import Strip

from jettui.constants import LS_TYPE_DIRECTORY, LS_TYPE_REGULAR
from jettui.tui.widgets.file_list import STYLESHEET, FileList


def make_entries(count: int) -> list[dict[str, Any]]:
    """``count`` lsAsync-shaped entries in a scrambled (server) order; every 10th a directory."""
    base = 1_700_000_000
    return [
        {
            "name": f"file-{(i * 7919) % count:06d}.dat" if i % 10 else f"dir-{i:06d}",
            "type": LS_TYPE_REGULAR if i % 10 else LS_TYPE_DIRECTORY,
            "size": (i * 104_729) % 10_000_000,
            "mtime": base - i,
            "mtimeus": 0,
            "access": 6,
        }
        for i in range(count)
    ]


class TimedFileList(FileList):
    """Records when lines are painted, so the bench can see the first paint after an input."""

    painted_at: float | None = None

    def render_line(self, y: int) -> Strip:
        if self.painted_at is None:
            self.painted_at = time.perf_counter()
        return super().render_line(y)


class BenchApp(App[None]):
    CSS_PATH = [STYLESHEET]

    def compose(self) -> ComposeResult:
        yield TimedFileList(id="files")


async def wait_paint(file_list: TimedFileList, timeout: float = 5.0) -> float:
    deadline = time.perf_counter() + timeout
    while file_list.painted_at is None:
        if time.perf_counter() > deadline:
            raise TimeoutError("no repaint")
        await asyncio.sleep(0.0005)
    return file_list.painted_at


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


async def run(count: int, repeat: int, size: tuple[int, int]) -> None:
    entries = make_entries(count)
    app = BenchApp()
    async with app.run_test(size=size) as pilot:
        file_list = app.query_one(TimedFileList)
        file_list.focus()
        await pilot.pause()

        loads, paints = [], []
        for _ in range(repeat):
            file_list.set_entries([], at_root=False)
            await pilot.pause()
            file_list.painted_at = None
            start = time.perf_counter()
            file_list.set_entries(entries, at_root=False)
            loaded = time.perf_counter()
            painted = await wait_paint(file_list)
            loads.append(loaded - start)
            paints.append(painted - start)
            await pilot.pause()
        print(f"entries: {count:,}  terminal: {size[0]}x{size[1]}  repeats: {repeat}")
        print(f"set_entries                     median {ms(statistics.median(loads))}  max {ms(max(loads))}")
        print(f"set_entries -> first paint      median {ms(statistics.median(paints))}  max {ms(max(paints))}")

        async def key_latency(keys: tuple[str, ...], times: int) -> list[float]:
            # Keys cycle (end, home, ...) so every press changes the screen and repaints.
            samples = []
            for i in range(times):
                await pilot.pause()
                file_list.painted_at = None
                start = time.perf_counter()
                await pilot.press(keys[i % len(keys)])
                samples.append(await wait_paint(file_list) - start)
            return samples

        cases: tuple[tuple[tuple[str, ...], int], ...] = (
            (("down",), 40),
            (("up",), 20),
            (("pagedown",), 20),
            (("end", "home"), 10),
            (("space",), 20),
            (("s",), 6),
        )
        for keys, times in cases:
            samples = await key_latency(keys, times)
            label = "/".join(keys)
            print(
                f"key {label:<9} -> repaint         median {ms(statistics.median(samples))}"
                f"  max {ms(max(samples))}  (n={times})"
            )
        await pilot.press("end")
        print(f"after End: cursor {file_list.cursor:,} of {len(file_list.rows):,} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", default="80x24", help="terminal size, COLSxROWS")
    args = parser.parse_args()
    cols, rows = (int(v) for v in args.size.split("x"))
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    asyncio.run(run(args.entries, args.repeat, (cols, rows)))


if __name__ == "__main__":
    main()
