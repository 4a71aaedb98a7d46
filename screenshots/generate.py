"""Screenshots of the real commander: SVG and PNG of the main screens at 80x24 and 120x40.

Drives the app built by ``make_app()`` with Pilot, exactly as the tests do: an embedded
server (sandboxed on a sample tree, so the paths read ``/projects/...``), a selection, a
transfer in flight (throttled with the server's own bandwidth limit so it is still
running when the picture is taken), and the screens.  SVGs come from
``App.export_screenshot``; PNGs from cairosvg with the terminal font swapped for DejaVu Sans
Mono (the SVG asks for Fira Code from a CDN, see shared/notes/textual-and-testing.md §3).

Run: ``python screenshots/generate.py [--out screenshots] [--no-png]``  (needs ``cairosvg``
for the PNGs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jettui.api import connect  # noqa: E402
from jettui.server.config import ServerConfig  # noqa: E402
from jettui.server.embedded import EmbeddedInfo, EmbeddedServer  # noqa: E402
from jettui.tui import make_app  # noqa: E402
from jettui.tui.app import JettuiApp  # noqa: E402
from jettui.tui.screens.server_info import ServerInfoScreen  # noqa: E402

#: 2024-06-03 09:41 UTC, and a spread of earlier times for the sample files.
BASE = 1_717_407_660
SIZES = [(80, 24), (120, 40)]

#: path -> (size in bytes or None for a directory, age in hours).  Files are sparse.
SAMPLE: dict[str, tuple[int | None, float]] = {
    "projects": (None, 1),
    "projects/genome-2024": (None, 2),
    "projects/genome-2024/raw": (None, 30),
    "projects/genome-2024/reports": (None, 50),
    "projects/genome-2024/.cache": (None, 3),
    "projects/genome-2024/sample-A01.fastq.gz": (2_871_331_840, 26),
    "projects/genome-2024/sample-A02.fastq.gz": (2_940_133_376, 26),
    "projects/genome-2024/sample-B01.fastq.gz": (3_012_521_984, 25),
    "projects/genome-2024/checksums.md5": (4_311, 24),
    "projects/genome-2024/pipeline.sh": (8_904, 100),
    "projects/genome-2024/README.md": (2_210, 340),
    "projects/genome-2024/reference.fa": (3_221_225_472, 900),
    "projects/genome-2024/latest-run.log": (182_004, 1),
    "projects/renders": (None, 70),
    "projects/renders/final_cut_v7.mov": (48_318_382_080, 70),
    "projects/renders/final_cut_v7.srt": (81_223, 70),
    "projects/renders/trailer.mp4": (734_003_200, 200),
    "archive": (None, 2000),
    "archive/2023-q4.tar.zst": (118_111_600_640, 2000),
    "archive/2023-q3.tar.zst": (96_636_764_160, 4000),
    "inbox": (None, 5),
    "inbox/from-lab": (None, 5),
    "inbox/transfer-test.bin": (10_485_760, 5),
}
#: The file whose transfer is in flight (real bytes, so the receiver writes them).
IN_FLIGHT = "projects/genome-2024/latest-run.bin"


def build_sample(root: Path) -> None:
    for rel, (size, _) in SAMPLE.items():
        path = root / rel
        if size is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            with open(path, "wb") as f:
                f.truncate(size)
    (root / "projects/genome-2024/pipeline.sh").chmod(0o755)
    (root / IN_FLIGHT).write_bytes(os.urandom(24_000_000))
    ages = {rel: age for rel, (_, age) in SAMPLE.items()} | {IN_FLIGHT: 0.5}
    for rel in sorted(ages, key=lambda r: -r.count("/")):
        when = BASE - ages[rel] * 3600
        os.utime(root / rel, (when, when))


def to_png(svg: str, target: Path, width: int) -> None:
    import cairosvg

    svg = svg.replace("Fira Code, monospace", "DejaVu Sans Mono, monospace").replace(
        'font-family: "Fira Code"', 'font-family: "DejaVu Sans Mono"'
    )
    cairosvg.svg2png(bytestring=svg.encode(), write_to=str(target), output_width=width)


def stable_info(info: dict[str, Any]) -> dict[str, Any]:
    """The machine's own identifiers replaced, so the picture shows no real host or key."""
    out = dict(info)
    out.update(
        hostName="ops-eu-1",
        serverId="5e1c0a93d27f4b6c8e0a1f2d3c4b5a69",
        serverUid="9a8b7c6d5e4f40312a1b2c3d4e5f6071",
        platformDetail="Linux-6.8-x86_64",
        publicKey="4f1d3c2b5a69788796a5b4c3d2e1f0ffeeddccbbaa99887766554433221100aa",
        serverTime=BASE * 1_000_000,
        apiControlPort=8886,
    )
    out["receiver"] = {**info.get("receiver", {}), "receiverPort": 8886, "receiverIP": "0.0.0.0"}
    out["user"] = {**info.get("user", {}), "userName": "ops"}
    return out


Scene = Callable[[JettuiApp, Any], Awaitable[None]]


async def wait(pilot: Any, predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("screenshot scene timed out")
        await pilot.pause(0.05)


async def cursor(pilot: Any, app: JettuiApp, name: str, side: str = "left") -> None:
    pane = app.left if side == "left" else app.right
    pane.file_list.cursor = [str(e["name"]) for e in pane.file_list.rows].index(name)
    await pilot.pause()


async def main_scene(app: JettuiApp, pilot: Any) -> None:
    """A transfer in flight in the queue, a selection on the left, the inbox on the right."""
    await cursor(pilot, app, "latest-run.bin")
    await pilot.press("f5")
    await pilot.pause(0.3)
    await pilot.press("enter")
    await wait(pilot, lambda: any(t.get("status") == "sending" for _, t in app.queue.transfers.values()))
    await cursor(pilot, app, "sample-A01.fastq.gz")
    await pilot.press("insert", "insert")
    await wait(pilot, lambda: any((t.get("blocksAcked") or 0) > 60 for _, t in app.queue.transfers.values()))
    await pilot.pause(1.0)  # a rate estimate between two progress updates


async def copy_dialog(app: JettuiApp, pilot: Any) -> None:
    await cursor(pilot, app, "sample-A01.fastq.gz")
    await pilot.press("insert", "insert", "insert", "f5")
    await pilot.pause(0.3)


async def details(app: JettuiApp, pilot: Any) -> None:
    await cursor(pilot, app, "checksums.md5")
    await pilot.press("f3", "m")
    values = getattr(app.screen, "values", {})
    await wait(pilot, lambda: "MD5" in values and "calc" not in str(values["MD5"]))
    await pilot.pause(0.2)


async def help_screen(app: JettuiApp, pilot: Any) -> None:
    await pilot.press("f1")
    await pilot.pause(0.3)


async def server_info(app: JettuiApp, pilot: Any) -> None:
    await pilot.press("i")
    screen = app.screen
    assert isinstance(screen, ServerInfoScreen)
    await wait(pilot, lambda: screen.info is not None)
    assert screen.info is not None
    screen.show_info(stable_info(screen.info))
    await pilot.pause(0.2)


async def event_log(app: JettuiApp, pilot: Any) -> None:
    await pilot.press("e")
    await wait(pilot, lambda: len(getattr(app.screen, "events", [])) > 2)
    await pilot.pause(0.2)


async def admin(app: JettuiApp, pilot: Any) -> None:
    from textual.widgets import Button, Input

    await pilot.press("a")
    await pilot.pause(0.5)
    for count, description in enumerate(("nightly sync to backup", "lab uploads"), start=1):
        app.screen.query_one("#token-description", Input).value = description
        app.screen.query_one("#token-create", Button).press()
        await wait(pilot, lambda n=count: app.screen.query_one("#tokens").row_count == n)
    await pilot.pause(0.3)


async def palette(app: JettuiApp, pilot: Any) -> None:
    await pilot.press("f2")
    await pilot.pause(0.3)
    await pilot.press(*"tra")
    await pilot.pause(0.5)


async def connect_screen(app: JettuiApp, pilot: Any) -> None:
    await pilot.press("f9")
    await pilot.pause(0.3)
    await pilot.press(*"backup.example.net")
    await pilot.pause(0.2)


#: name -> (scene, sizes, throttle the outgoing rate for an in-flight transfer)
SCENES: dict[str, tuple[Scene, list[tuple[int, int]], bool]] = {
    "main": (main_scene, SIZES, True),
    "copy-dialog": (copy_dialog, [(80, 24)], False),
    "details": (details, [(80, 24)], False),
    "help": (help_screen, SIZES, False),
    "server-info": (server_info, SIZES, False),
    "event-log": (event_log, [(120, 40)], False),
    "admin": (admin, [(120, 40)], False),
    "palette": (palette, [(80, 24)], False),
    "connect": (connect_screen, [(80, 24)], False),
}


def reset(info: EmbeddedInfo, root: Path, kbits: float | None) -> None:
    """Between shots: no transfers left from the previous one, no copy in the inbox, and the
    outgoing limit that keeps this shot's transfer in flight (or none)."""
    with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
        api.server.auth(info.user, info.secret)
        api.server.superuser()
        for transfer in api.send.getTransfers():
            if transfer.get("status") in ("pending", "sending", "suspended"):
                api.send.cancelTransfer(transfer["transferId"])
            api.send.deleteTransfer(transfer["transferId"])
        keep = {rel.split("/", 1)[1] for rel in SAMPLE if rel.startswith("inbox/")}
        for leftover in (root / "inbox").iterdir():
            if leftover.name not in keep:
                leftover.unlink()
        if kbits is None:
            api.server.updateBandwidthLimits(outgoingLimitActive=False)
        else:
            api.server.updateBandwidthLimits(outgoingLimitActive=True, outgoingRateLimit=kbits)


async def shoot(info: EmbeddedInfo, name: str, scene: Scene, size: tuple[int, int], out: Path, png: bool) -> Path:
    app = make_app(embedded=info, left_path="/projects/genome-2024", right_path="/inbox")
    async with app.run_test(size=size) as pilot:
        await wait(pilot, lambda: app.left.loaded and app.right.loaded)
        await pilot.pause(0.2)
        await scene(app, pilot)
        svg = app.export_screenshot(title="jettui")
    stem = out / f"{name}-{size[0]}x{size[1]}"
    stem.with_suffix(".svg").write_text(svg)
    if png:
        to_png(svg, stem.with_suffix(".png"), width=size[0] * 16 + 40)
    return stem


async def run(out: Path, png: bool, only: list[str]) -> None:
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    os.environ["TEXTUAL_ANIMATIONS"] = "none"
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    with tempfile.TemporaryDirectory(prefix="jettui-shots-") as tmp:
        os.environ["JETTUI_CONFIG_DIR"] = str(Path(tmp) / "config")
        root = Path(tmp) / "data"
        root.mkdir()
        build_sample(root)
        config = ServerConfig(api_port=0, recv_port=0, recv_host="127.0.0.1", sandbox_dir=root, server_name="ops-eu-1")
        server = EmbeddedServer(config)
        info = server.start()
        try:
            for name, (scene, sizes, slow) in SCENES.items():
                if only and name not in only:
                    continue
                for size in sizes:
                    reset(info, root, 16_000 if slow else None)
                    stem = await shoot(info, name, scene, size, out, png)
                    print(f"{stem}.svg" + (" + .png" if png else ""))
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Write SVG and PNG screenshots of the commander.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--no-png", action="store_true", help="SVG only (no cairosvg needed)")
    parser.add_argument("scenes", nargs="*", help=f"only these scenes ({', '.join(SCENES)})")
    args = parser.parse_args()
    asyncio.run(run(args.out, not args.no_png, args.scenes))


if __name__ == "__main__":
    main()
