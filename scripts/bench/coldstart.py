"""Cold start of `kiosk serve`: process start → ``/healthz`` 200 with the default models loaded,
and the resident memory when ready.

Targets (issue): ≤ 5 s on 2 cores after `kiosk models prepare`, resident memory ≤ 1.5 GB.
Reference in the same run: a bare Starlette app on uvicorn in a fresh Python process (the
floor: interpreter + web stack start), so a slow shared box shows up in both numbers.

Each run starts a fresh process on a free loopback port (``--port 0``) and polls /healthz
every 20 ms; it is stopped after measuring. Repeat with ``--runs``; the first run may pay
for a cold page cache, the table shows every run and the median.

    .venv/bin/python scripts/bench/coldstart.py                  # default config and models
    .venv/bin/python scripts/bench/coldstart.py --runs 3 --no-generator
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
KIOSK = [sys.executable, "-m", "runtime.cli"]
TARGET_S = 5.0
TARGET_RSS_MB = 1536.0

BARE = r"""
import socket, sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
async def healthz(request):
    return JSONResponse({"status": "ok"})
app = Starlette(routes=[Route("/healthz", healthz)])
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(128)
print(f"kiosk serving on http://127.0.0.1:{s.getsockname()[1]}/", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="error")).run(sockets=[s])
"""


def descendants(pid: int) -> list[int]:
    """The process and every process below it (the generator may run in a worker process)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, ()))
    return out


def rss_mb(pid: int) -> tuple[float, float, int]:
    """(VmRSS, VmHWM) in MiB summed over the process and its descendants, and their count.

    The sum of peaks is an upper bound of the tree's peak (they need not peak together)."""
    rss = hwm = 0.0
    procs = descendants(pid)
    for p in procs:
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m_rss, m_hwm = re.search(r"VmRSS:\s+(\d+)", text), re.search(r"VmHWM:\s+(\d+)", text)
        rss += int(m_rss.group(1)) / 1024 if m_rss else 0.0
        hwm += int(m_hwm.group(1)) / 1024 if m_hwm else 0.0
    return rss, hwm, len(procs)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used by the process and its descendants: on a shared box the
    wall time depends on what else runs, the CPU time much less."""
    total = 0.0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def one_run(cmd: list[str], timeout_s: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited ({proc.poll()}) before printing its address")
            m = re.search(r"(http://\S+?)/?$", line.strip())
            if m and "serving on" in line:
                url = m.group(1)
        listening_s = time.perf_counter() - t0
        status, body = 0, {}
        with httpx.Client(timeout=2) as c:
            while time.perf_counter() - t0 < timeout_s:
                try:
                    r = c.get(url + "/healthz")
                    status = r.status_code
                    if status == 200:
                        body = r.json()
                        break
                    if r.json().get("status") == "error":
                        body = r.json()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        ready_s = time.perf_counter() - t0
        rss, hwm, nproc = rss_mb(proc.pid)
        return {
            "ready": status == 200,
            "processes": nproc,
            "listening_s": round(listening_s, 3),
            "ready_s": round(ready_s, 3),
            "cpu_s": round(cpu_s(proc.pid), 2),
            "rss_mb": round(rss, 1),
            "peak_rss_mb": round(hwm, 1),
            "health": body,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="give up on one start after this long"
    )
    ap.add_argument(
        "--no-generator", action="store_true", help="serve without the generator (fast paths only)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "coldstart.json")
    args = ap.parse_args(argv)

    serve = [*KIOSK, "serve", "--port", "0"] + (["--no-generator"] if args.no_generator else [])
    rows: dict[str, list[dict]] = {"bare starlette (reference)": [], "kiosk serve": []}
    load_start = [round(x, 2) for x in os.getloadavg()]
    for _ in range(args.runs):
        rows["bare starlette (reference)"].append(
            one_run([sys.executable, "-c", BARE], args.timeout)
        )
        rows["kiosk serve"].append(one_run(serve, args.timeout))

    print(
        f"\n{'server':<28}{'listen s':>10}{'ready s':>10}{'CPU s':>8}"
        f"{'RSS MB':>9}{'peak MB':>9}  runs"
    )
    summary = {}
    for name, runs in rows.items():
        ok = [r for r in runs if r["ready"]]
        med = (
            {
                k: round(statistics.median(r[k] for r in ok), 3)
                for k in ("listening_s", "ready_s", "cpu_s", "rss_mb", "peak_rss_mb")
            }
            if ok
            else {}
        )
        summary[name] = {**med, "ready_runs": len(ok), "runs": len(runs)}
        if ok:
            print(
                f"{name:<28}{med['listening_s']:>10}{med['ready_s']:>10}{med['cpu_s']:>8}{med['rss_mb']:>9}"
                f"{med['peak_rss_mb']:>9}"
                f"  {len(ok)}/{len(runs)} ready; ready_s each: {[r['ready_s'] for r in runs]}"
            )
        else:
            print(f"{name:<28}{'never ready':>38}  {runs[-1]['health']}")
    k = summary["kiosk serve"]
    if k.get("ready_s") is not None:
        print(
            f"\ntarget: ready ≤ {TARGET_S} s → {'met' if k['ready_s'] <= TARGET_S else 'NOT met'} "
            f"({k['ready_s']} s); resident ≤ {TARGET_RSS_MB:.0f} MB → "
            f"{'met' if k['peak_rss_mb'] <= TARGET_RSS_MB else 'NOT met'} "
            f"({k['peak_rss_mb']} MB peak)"
        )
        print(
            "placement:",
            json.dumps(rows["kiosk serve"][-1]["health"].get("placements"), ensure_ascii=False),
        )
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(
        f"load average (1/5/15 min) at start {load_start}, at end {load_end}: above ~2 on "
        "2 cores, other work shared the CPU"
    )
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        },
        "command": serve,
        "summary": summary,
        "runs": rows,
        "targets": {"ready_s": TARGET_S, "peak_rss_mb": TARGET_RSS_MB},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
