"""Bench: the commander on a 100,000-entry directory served by a real embedded server.

Prints numbers, asserts nothing.  Inside a headless Textual app (``make_app`` +
``run_test``), with the embedded server sandboxed on a scratch tree:

* Enter on the directory -> the listing's first reply (the first page of lsAsync with
  ``pageSize``, or the whole lsAsync result from a server without pages), the first
  painted row of the new listing (``render_line`` once the list holds entries of the new
  directory), and the full listing in the list (all entries in, sortable, filterable and
  scrollable, and painted);
* key-press-to-repaint latency (down, pagedown, end, home, ``s`` sort) measured from the
  key press to the first ``render_line`` after it, while a throttled transfer is running
  (its progress notifications keep the queue busy).

Issue targets: first rows <= 300 ms, full listing <= 1.5 s, key-to-repaint <= 50 ms.

Run: ``python bench/tui_commander.py [--entries 100000] [--repeat 3] [--keys 20] [--size 80x24]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jettui.api import connect  # noqa: E402
from jettui.server.embedded import EmbeddedProcess  # noqa: E402
from jettui.tui import make_app  # noqa: E402
from jettui.tui.app import JettuiApp  # noqa: E402


def make_tree(root: Path, entries: int, transfer_mb: int) -> None:
    big = root / "big"
    big.mkdir(parents=True)
    for i in range(entries):
        # Empty files: the listing cost is per entry, not per byte; every 10th a directory.
        if i % 10 == 0:
            (big / f"dir-{i:06d}").mkdir()
        else:
            (big / f"file-{(i * 7919) % entries:06d}.dat").touch()
    (root / "payload.bin").write_bytes(os.urandom(transfer_mb * 1_000_000))
    (root / "inbox").mkdir()


class Marks:
    """Timestamps recorded by the instrumented FileList."""

    def __init__(self) -> None:
        self.paint: float | None = None
        """First paint once the list holds ``min_rows`` entries (and, when set, ``first_name``)."""
        self.full_paint: float | None = None
        """First paint once the list holds ``full_rows`` entries."""
        self.entries_set: float | None = None
        """When the list first held ``full_rows`` entries."""
        self.min_rows = 0
        self.full_rows = 0
        self.first_name: str | None = None


def instrument(app: JettuiApp, marks: Marks) -> None:
    file_list = app.left.file_list
    render_line = file_list.render_line
    set_entries = file_list.set_entries
    extend_entries = getattr(file_list, "extend_entries", None)

    def new_listing() -> bool:
        rows = file_list.rows
        if len(file_list.entries) < marks.min_rows:
            return False
        first = rows[1] if len(rows) > 1 else None  # the first row after ".."
        return marks.first_name is None or (
            first is not None and str(first.get("name", "")).startswith(marks.first_name)
        )

    def timed_render(y: int) -> Any:
        now = time.perf_counter()
        if marks.paint is None and new_listing():
            marks.paint = now
        if marks.full_paint is None and marks.entries_set is not None:
            marks.full_paint = now
        return render_line(y)

    def check_full() -> None:
        if marks.entries_set is None and marks.full_rows and len(file_list.entries) >= marks.full_rows:
            marks.entries_set = time.perf_counter()

    def timed_set(*args: Any, **kwargs: Any) -> Any:
        result = set_entries(*args, **kwargs)
        check_full()
        return result

    def timed_extend(*args: Any, **kwargs: Any) -> Any:
        assert extend_entries is not None
        result = extend_entries(*args, **kwargs)
        check_full()
        return result

    file_list.render_line = timed_render  # type: ignore[method-assign]
    file_list.set_entries = timed_set  # type: ignore[method-assign]
    if extend_entries is not None:
        file_list.extend_entries = timed_extend  # type: ignore[method-assign]


async def wait(predicate: Any, pilot: Any, timeout: float = 60.0, *, light: bool = False) -> None:
    """Poll ``predicate``.  ``light``: with a plain sleep, for the long waits while a listing
    loads: ``pilot.pause`` posts a callback to every widget of the screen each time, and
    every 2 ms that is CPU (and GIL) taken from the embedded server in the same process,
    which a real user's terminal does not take.  The figures come from ``render_line``
    timestamps either way, not from the polling."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench step timed out")
        if light:
            await asyncio.sleep(0.005)
        else:
            await pilot.pause(0.002)


async def open_big(app: JettuiApp, pilot: Any, marks: Marks, entries: int) -> tuple[float, float, float]:
    """Enter on /big from /; returns (reply, first paint, full listing) in seconds."""
    pane = app.left
    rows = [str(e["name"]) for e in pane.file_list.rows]
    pane.file_list.cursor = rows.index("big")
    await pilot.pause()
    marks.paint = marks.full_paint = marks.entries_set = None
    # The new listing's first rows: entries of /big (its first row after ".." is a
    # "dir-" one; / holds "big", "inbox", "payload.bin").
    marks.min_rows, marks.first_name, marks.full_rows = 1, "dir-", entries
    reply: list[float] = []
    # Commanders from before progressive listings have only Backend.ls: time that instead.
    name = "ls_pages" if hasattr(app.backend, "ls_pages") else "ls"
    original = getattr(app.backend, name)

    async def timed_pages(key: str, path: str) -> Any:
        async for page in original(key, path):
            if not reply:
                reply.append(time.perf_counter())
            yield page

    async def timed_ls(key: str, path: str) -> Any:
        result = await original(key, path)
        reply.append(time.perf_counter())
        return result

    setattr(app.backend, name, timed_pages if name == "ls_pages" else timed_ls)
    start = time.perf_counter()
    await pilot.press("enter")
    await wait(lambda: marks.paint is not None and marks.full_paint is not None, pilot, light=True)
    setattr(app.backend, name, original)
    assert marks.paint is not None and marks.full_paint is not None
    result = (reply[0] - start, marks.paint - start, marks.full_paint - start)
    # Back up for the next round.
    marks.min_rows, marks.first_name, marks.full_rows = 0, None, 0
    await pilot.press("backspace")
    await wait(lambda: app.left.path == "/", pilot)
    return result


async def key_latency(app: JettuiApp, pilot: Any, marks: Marks, key: str, count: int) -> list[float]:
    out = []
    # Keys that change nothing when repeated (end at the end) get their opposite in between.
    reset = {"end": "home", "home": "end", "pagedown": "home"}.get(key)
    for _ in range(count):
        if reset is not None:
            await pilot.press(reset)
            await pilot.pause(0.01)
        marks.paint = None
        start = time.perf_counter()
        await pilot.press(key)
        await wait(lambda: marks.paint is not None, pilot, timeout=10)
        assert marks.paint is not None
        out.append(marks.paint - start)
        await pilot.pause(0.01)
    return out


def fmt(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms"


async def run(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="jettui-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_tree(root, args.entries, args.transfer_mb)
        print(f"tree: {args.entries:,} entries made in {time.perf_counter() - t0:.1f} s")
        # As the commander runs it: in a child process (see jettui.server.embedded).
        server = EmbeddedProcess(sandbox_dir=root, server_name="bench")
        info = server.start()
        try:
            app = make_app(embedded=info, path="/")
            async with app.run_test(size=(width, height)) as pilot:
                await wait(lambda: app.left.loaded and app.right.loaded, pilot)
                marks = Marks()
                instrument(app, marks)
                rounds = [await open_big(app, pilot, marks, args.entries) for _ in range(args.repeat)]
                print(f"\nEnter on a {args.entries:,}-entry directory ({args.repeat} runs, {args.size}):")
                print(f"  first reply        {fmt([r[0] for r in rounds])}")
                print(f"  first rows painted {fmt([r[1] for r in rounds])}   (target 300 ms)")
                print(f"  full listing       {fmt([r[2] for r in rounds])}   (target 1500 ms)")

                # A throttled transfer keeps running (and notifying) while keys are pressed.
                with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
                    api.server.auth(info.user, info.secret)
                    api.server.superuser()
                    api.server.updateBandwidthLimits(outgoingLimitActive=True, outgoingRateLimit=args.rate_kbits)
                app.right.load("/inbox")
                await wait(lambda: app.right.path == "/inbox", pilot)
                rows = [str(e["name"]) for e in app.left.file_list.rows]
                app.left.file_list.cursor = rows.index("payload.bin")
                await pilot.press("f5")
                await pilot.pause(0.2)
                await pilot.press("enter")
                await wait(lambda: any(t.get("status") == "sending" for _, t in app.queue.transfers.values()), pilot)
                rows = [str(e["name"]) for e in app.left.file_list.rows]
                app.left.file_list.cursor = rows.index("big")
                await pilot.press("enter")
                await wait(lambda: app.left.path == "/big" and len(app.left.file_list.entries) >= args.entries, pilot)
                await pilot.pause(0.2)
                print(f"\nKey press to repaint, {args.entries:,} entries, transfer running ({args.keys} presses each):")
                for key in ("down", "pagedown", "end", "home", "s"):
                    values = await key_latency(app, pilot, marks, key, args.keys)
                    print(f"  {key:<9}          {fmt(values)}   (target 50 ms)")
                statuses = {t.get("status") for _, t in app.queue.transfers.values()}
                print(f"\ntransfer status at the end: {', '.join(sorted(map(str, statuses)))}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--size", default="80x24")
    parser.add_argument("--transfer-mb", type=int, default=40)
    parser.add_argument("--rate-kbits", type=float, default=10_000, help="outgoing limit while keys are timed")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
