"""WAN benchmark matrix: jettui and its peers across the emulated link (see bench/README.md).

    sudo python3 bench/wan.py --quick            # one cell: 100 Mbit/s, 100 ms, 1 %, 50 MB file
    sudo python3 bench/wan.py                    # issue 7: RTT 20/100/300 x loss 0/0.1/1/5 %,
                                                 # 200 MB file + 2,000-file tree, NONE + ENCRYPTED_256
    sudo python3 bench/wan.py --quick --losses 0,1 --peers uftp,scp-bbr --runs 1

Each (RTT, loss) cell gets a fresh ``netlink.Link`` (checked with ``Link.verify`` unless --no-verify);
every peer runs ``--runs`` times (interleaved), the row shows the median run by goodput. Output: a table
on stdout, ``bench/results/<name>.csv`` (one row per cell/dataset/cipher/peer), ``<name>-runs.csv``
(every run), ``<name>-link.csv`` (emulator self-checks) and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from netlink import BENCH_DIR, Link, LinkError, check_environment, list_namespaces, sigterm_as_interrupt  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / ".build" / "data"
DEFAULT_PEERS = [
    "jettui",
    "iperf3-udp",
    "iperf3-bbr",
    "iperf3-cubic",
    "uftp",
    "rsync-bbr",
    "rsync-cubic",
    "scp-bbr",
    "scp-cubic",
]
CSV_FIELDS = [
    "rate_mbit", "rtt_ms", "loss_pct", "dataset", "cipher", "peer", "runs", "status", "ok",
    "goodput_mbit", "goodput_min", "goodput_max", "seconds", "payload_bytes", "retrans_bytes",
    "retrans_pct", "forward_bytes", "reverse_bytes", "reverse_pct", "cpu_a", "cpu_b", "cpu_emu", "note",
]  # fmt: skip


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one cell: 100 Mbit/s, 100 ms, 1 %%, 50 MB file")
    ap.add_argument("--rate", type=float, default=100.0, help="link rate cap, Mbit/s (default 100)")
    ap.add_argument("--rtts", type=floats, default=None, help="RTTs in ms (default 20,100,300)")
    ap.add_argument("--losses", type=floats, default=None, help="loss in %% (default 0,0.1,1,5)")
    ap.add_argument(
        "--reverse-loss",
        default="same",
        help="loss B->A: 'same' as A->B (default) or a percentage, e.g. 0 for data-direction-only loss",
    )
    ap.add_argument("--queue-ms", type=float, default=None, help="queue limit (default: one RTT, >= 20 ms)")
    ap.add_argument("--datasets", default=None, help="file,tree (default both; --quick: file)")
    ap.add_argument("--file-mb", type=float, default=None, help="file size in MB (default 200; --quick 50)")
    ap.add_argument("--tree-files", type=int, default=2000)
    ap.add_argument("--tree-mb", type=float, default=50.0, help="total size of the tree in MB")
    ap.add_argument("--ciphers", default="NONE,ENCRYPTED_256", help="for peers that take a cipher")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS), help="comma-separated; see --list-peers")
    ap.add_argument("--list-peers", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="runs per peer; the median is reported")
    ap.add_argument("--max-seconds", type=float, default=None, help="per transfer (default 120; --quick 60)")
    ap.add_argument("--iperf-seconds", type=float, default=10.0)
    ap.add_argument("--no-verify", action="store_true", help="skip the link self-check per cell")
    ap.add_argument("--name", default=None, help="output name under bench/results/ (default wan-quick/wan-matrix)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get/pip install missing tools")
    a = ap.parse_args(argv)
    a.rtts = a.rtts or ([100.0] if a.quick else [20.0, 100.0, 300.0])
    a.losses = a.losses if a.losses is not None else ([1.0] if a.quick else [0.0, 0.1, 1.0, 5.0])
    a.datasets = (a.datasets or ("file" if a.quick else "file,tree")).split(",")
    a.file_mb = a.file_mb or (50.0 if a.quick else 200.0)
    a.max_seconds = a.max_seconds or (60.0 if a.quick else 120.0)
    a.ciphers = [c.strip().upper() for c in a.ciphers.split(",") if c.strip()]
    a.peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    a.name = a.name or ("wan-quick" if a.quick else "wan-matrix")
    return a


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        pass
    req = BENCH_DIR / "requirements.txt"
    print(f"installing bench requirements ({req}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(req)], check=False, timeout=600)
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        print("matplotlib unavailable: no plot", file=sys.stderr)
        return False


def run_one(peer: peers.Peer, link: Link, src: Path, cipher: str, args: argparse.Namespace) -> dict[str, Any]:
    dst = Path(tempfile.mkdtemp(prefix="jt-wan-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        kw: dict[str, Any] = dict(peer.opts, max_seconds=args.max_seconds, iperf_seconds=args.iperf_seconds)
        if peer.uses_cipher:
            kw["cipher"] = cipher
        return peer.func(link, src, dst, **kw)
    except NotImplementedError as exc:
        return {"status": f"SKIPPED: {exc}", "ok": None, "goodput_mbit": None}
    except (LinkError, subprocess.SubprocessError, OSError, ValueError) as exc:
        return {"status": f"failed: {type(exc).__name__}: {exc}"[:300], "ok": False, "goodput_mbit": None}
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median goodput, plus the min/max goodput over the runs."""
    good = [r for r in runs if isinstance(r.get("goodput_mbit"), (int, float))]
    if not good:
        return dict(runs[-1], runs=len(runs))
    good.sort(key=lambda r: r["goodput_mbit"])
    med = dict(good[(len(good) - 1) // 2])
    if len(good) % 2 == 0 and len(good) > 1:
        med["goodput_mbit"] = statistics.median(r["goodput_mbit"] for r in good)
    med["goodput_min"] = good[0]["goodput_mbit"]
    med["goodput_max"] = good[-1]["goodput_mbit"]
    med["runs"] = len(runs)
    statuses = {r["status"] for r in runs}
    if len(statuses) > 1:
        med["status"] = "/".join(sorted(s.split(":")[0] for s in statuses))
    return med


def pct(num: Any, den: Any) -> float | None:
    if not isinstance(num, (int, float)) or not isinstance(den, (int, float)) or not den:
        return None
    return 100.0 * num / den


def fmt(v: Any, spec: str = ".1f", none: str = "-") -> str:
    return none if v is None or v == "" else format(v, spec)


TABLE_NOTE = (
    "goodput: payload / wall time of the client (handshakes included; iperf3: receiver rate over its\n"
    "test). retrans%: bytes sent again / payload. rev%: IP bytes B->A / IP bytes A->B. cpuA/cpuB: % of\n"
    "one core per side; emu: the forwarder. A 'timeout' row's goodput is the partial rate (a lower bound)."
)


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    cols = [
        ("RTT", ">5"), ("loss%", ">5"), ("data", "<5"), ("cipher", "<13"), ("peer", "<13"),
        ("goodput Mbit/s", ">22"), ("time s", ">7"), ("retrans%", ">8"), ("rev%", ">6"), ("rev MB", ">7"),
        ("cpuA%", ">6"), ("cpuB%", ">6"), ("emu%", ">5"), ("status", "<"),
    ]  # fmt: skip
    head = " ".join(format(name, spec) for name, spec in cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        gp = "-"
        if r.get("goodput_mbit") is not None:
            gp = f"{r['goodput_mbit']:.2f}"
            if r.get("runs", 1) > 1 and r.get("goodput_min") is not None:
                gp += f" [{r['goodput_min']:.1f}-{r['goodput_max']:.1f}]"
        rev = r.get("reverse_bytes")
        vals = [
            f"{r['rtt_ms']:g}", f"{r['loss_pct']:g}", r["dataset"], r["cipher"], r["peer"], gp,
            fmt(r.get("seconds")), fmt(r.get("retrans_pct"), ".2f"), fmt(r.get("reverse_pct"), ".2f"),
            fmt(None if rev is None else rev / 1e6, ".2f"), fmt(r.get("cpu_a")), fmt(r.get("cpu_b")),
            fmt(r.get("cpu_emu")), str(r.get("status", "")),
        ]  # fmt: skip
        lines.append(" ".join(format(v, spec) for v, (_, spec) in zip(vals, cols, strict=True)))
    return lines


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    print("\n".join(table_lines(rows)))
    print()
    print(TABLE_NOTE)


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})


def plot(path: Path, rows: list[dict[str, Any]], rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if isinstance(r.get("goodput_mbit"), (int, float)) and r["goodput_mbit"] > 0]
    if not rows:
        return

    def label(r: dict[str, Any]) -> str:
        return r["peer"] + ("" if r["cipher"] in ("-", "ssh") else f" {r['cipher']}")

    cells = sorted({(r["rtt_ms"], r["loss_pct"]) for r in rows})
    datasets = sorted({r["dataset"] for r in rows})
    if len(cells) <= 2:
        fig, axes = plt.subplots(len(cells) * len(datasets), 1, figsize=(9, 1.5 + 0.35 * len(rows)), squeeze=False)
        for ax, (cell, ds) in zip(axes[:, 0], itertools.product(cells, datasets), strict=False):
            sel = [r for r in rows if (r["rtt_ms"], r["loss_pct"]) == cell and r["dataset"] == ds]
            sel.sort(key=lambda r: r["goodput_mbit"])
            names = [label(r) + (" (timeout)" if r.get("status") == "timeout" else "") for r in sel]
            vals = [r["goodput_mbit"] for r in sel]
            ax.barh(names, vals, color=["tab:red" if r.get("status") == "timeout" else "tab:blue" for r in sel])
            for i, v in enumerate(vals):
                ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
            ax.set_xscale("log")
            ax.set_xlim(0.5, rate * 2)
            ax.axvline(rate, color="grey", ls=":", lw=1)
            ax.set_title(f"{rate:g} Mbit/s link, RTT {cell[0]:g} ms, loss {cell[1]:g} %, {ds}", fontsize=10)
            ax.set_xlabel("goodput, Mbit/s (log)")
    else:
        rtts = sorted({c[0] for c in cells})
        fig, axes = plt.subplots(len(datasets), len(rtts), figsize=(5 * len(rtts), 4 * len(datasets)), squeeze=False)
        for (i, ds), (j, rtt) in itertools.product(enumerate(datasets), enumerate(rtts)):
            ax = axes[i][j]
            sel = [r for r in rows if r["dataset"] == ds and r["rtt_ms"] == rtt]
            for name in sorted({label(r) for r in sel}):
                pts = sorted((r["loss_pct"], r["goodput_mbit"]) for r in sel if label(r) == name)
                ax.plot([str(p[0]) for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.set_yscale("log")
            ax.set_ylim(0.5, rate * 1.5)
            ax.axhline(rate, color="grey", ls=":", lw=1)
            ax.set_title(f"{ds}, RTT {rtt:g} ms", fontsize=10)
            ax.set_xlabel("loss, %")
            ax.set_ylabel("goodput, Mbit/s (log)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle("jettui WAN bench (median of runs; timeouts are lower bounds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def link_check_row(rate: float, rtt: float, loss: float, loss_ba: float, v: dict[str, Any]) -> dict[str, Any]:
    return {
        "rate_mbit": rate,
        "rtt_ms": rtt,
        "loss_pct": loss,
        "loss_ba_pct": loss_ba,
        "rtt_min_ms": v["rtt_ms"]["min"],
        "rtt_avg_ms": v["rtt_ms"]["avg"],
        "loss_ab_probe_pct": 100 * v["loss_ab"],
        "loss_ba_probe_pct": 100 * v["loss_ba"],
        "loss_ab_emulator_pct": 100 * v["emulator_loss_ab"],
        "rate_expected_mbit": v["expected_payload_mbit"],
        "rate_measured_mbit": v["rate"]["received_mbit"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry = peers.registry()
    if args.list_peers:
        for p in registry.values():
            print(f"{p.name:<14} {p.func.__module__}.{p.func.__name__} {p.opts or ''}")
        return 0
    unknown = [p for p in args.peers if p not in registry]
    if unknown:
        print(f"unknown peers: {unknown}; known: {list(registry)}", file=sys.stderr)
        return 2
    selected = [registry[p] for p in args.peers]
    check_environment()
    if not args.no_install:
        tools = ["ping", "ss", "iperf3"] + [t for p in selected for t in p.tools]
        peers.ensure_tools(tools)
    can_plot = not args.no_plot and (ensure_matplotlib() if not args.no_install else True)

    sources: dict[str, Path] = {}
    if "file" in args.datasets:
        size = int(args.file_mb * 1e6)
        sources["file"] = peers.make_file(DATA_DIR / f"file-{args.file_mb:g}MB.bin", size)
    if "tree" in args.datasets:
        sources["tree"] = peers.make_tree(
            DATA_DIR / f"tree-{args.tree_files}x-{args.tree_mb:g}MB", args.tree_files, int(args.tree_mb * 1e6)
        )

    jobs: list[tuple[str, peers.Peer, str]] = []
    for ds in args.datasets:
        for p in selected:
            if ds == "tree" and not p.trees:
                continue
            for cipher in args.ciphers if p.uses_cipher else [p.fixed_cipher]:
                jobs.append((ds, p, cipher))
    budget = args.runs * len(jobs) * (args.max_seconds + 20) + 120

    all_runs: list[dict[str, Any]] = []
    link_checks: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            for rtt, loss in itertools.product(args.rtts, args.losses):
                loss_ba = loss if args.reverse_loss == "same" else float(args.reverse_loss)
                with Link(args.rate, rtt, loss / 100, loss_ba / 100, queue_ms=args.queue_ms, seconds=budget) as link:
                    if not args.no_verify:
                        v = link.verify()
                        link_checks.append(link_check_row(args.rate, rtt, loss, loss_ba, v))
                    cell_runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
                    for run in range(args.runs):
                        for ds, p, cipher in jobs:
                            res = run_one(p, link, sources[ds], cipher, args)
                            key = (ds, cipher, p.name)
                            res.update(
                                rate_mbit=args.rate, rtt_ms=rtt, loss_pct=loss, dataset=ds, cipher=cipher,
                                peer=p.name, run=run + 1,
                            )  # fmt: skip
                            res["retrans_pct"] = pct(res.get("retrans_bytes"), res.get("payload_bytes"))
                            res["reverse_pct"] = pct(res.get("reverse_bytes"), res.get("forward_bytes"))
                            cell_runs.setdefault(key, []).append(res)
                            all_runs.append(res)
                            gp = fmt(res.get("goodput_mbit"), ".2f")
                            print(
                                f"[{time.monotonic() - t_start:6.0f} s] RTT {rtt:g} loss {loss:g} {ds} "
                                f"{p.name} {cipher} run {run + 1}: {gp} Mbit/s {res.get('status')}",
                                flush=True,
                            )
                    for key in cell_runs:
                        rows.append(summarise(cell_runs[key]))
    except KeyboardInterrupt:
        print("\ninterrupted: writing what was measured", file=sys.stderr)
        for r in all_runs:  # partial cells: one row per run
            if not any(x["rtt_ms"] == r["rtt_ms"] and x["loss_pct"] == r["loss_pct"] for x in rows):
                rows.append(dict(r, runs=1))
    finally:
        left = [ns for ns in list_namespaces() if ns.startswith("jt-")]
        if left:
            print(f"warning: namespaces left: {left}", file=sys.stderr)

    print_table(rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS_DIR / f"{args.name}.csv"
    write_csv(csv_path, rows, CSV_FIELDS)
    write_csv(RESULTS_DIR / f"{args.name}-runs.csv", all_runs, ["run", *CSV_FIELDS])
    if link_checks:
        write_csv(RESULTS_DIR / f"{args.name}-link.csv", link_checks, list(link_checks[0]))
    print(f"wrote {csv_path}")
    if can_plot:
        png = RESULTS_DIR / f"{args.name}.png"
        plot(png, rows, args.rate)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
