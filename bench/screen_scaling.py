"""``dxr-node screen`` throughput on 1 and 2 Dask worker processes over the same phantom films.

Usage::

    .venv/bin/python bench/screen_scaling.py [--films 200] [--distinct 10] [--workers 1 2] [--json]

Writes ``--films`` DICOM files (``--distinct`` different phantom hands from tests/phantom.py,
2400 x 1800 px at 0.1 mm like a real CR hand film, copied under different names so every file
is a separate input), then for each worker count:

* starts a LocalCluster of that many single-threaded worker processes and registers the
  screen's worker plugin (numba kernels loaded, reference set): the *start-up* time;
* screens every film exactly as ``dxr-node screen`` does (:func:`node.screen.run._screen_items`,
  bounded task window, Parquet batches): the *steady* rate in images/s, and the mean wall and
  CPU seconds of one task on its worker (wall above CPU: the worker waited for a core);

and prints images/s per worker count and the scaling efficiency ``rate(N) / (N * rate(1))``.
The machine may be shared: the 1-minute load average before and after each run is printed, and
the cores in use during the screen, by this benchmark (client, scheduler, workers) and by every
other process (from /proc/stat), so the figures can be read against what else ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _make_films(folder: Path, films: int, distinct: int) -> list[Path]:
    from tests.phantom import make_dataset, make_hand

    originals = []
    for k in range(distinct):
        image, truth = make_hand(k, spacing_mm=0.1, field_mm=(240.0, 180.0), cortical_scale=1.0 - 0.03 * (k % 10))
        path = folder / f"original-{k:02d}.dcm"
        make_dataset(image, truth, patient_id=f"BENCH-{k:02d}", sex="F", age="062Y").save_as(path,
                                                                                            enforce_file_format=True)
        originals.append(path)
    paths = []
    for i in range(films):
        path = folder / "films" / f"film-{i:04d}.dcm"
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(originals[i % distinct], path)
        paths.append(path)
    return paths


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine since boot, CPU seconds of this process and its children).

    Their differences over a run give the CPU the other users of the machine took meanwhile.
    """
    import psutil

    with open("/proc/stat") as fh:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, fh.readline().split()[1:9])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    mine = 0.0
    me = psutil.Process()
    for proc in (me, *me.children(recursive=True)):
        try:
            times = proc.cpu_times()
            mine += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return busy, mine


def _run(n_workers: int, films_dir: Path, out_dir: Path) -> dict:
    """One screen of every film on a fresh LocalCluster of ``n_workers`` processes; timings."""
    from distributed import Client, LocalCluster

    from node.reference import DEFAULT_TABLE, load_reference_dir
    from node.research import DEFAULT_REFERENCE_DIR
    from node.screen.results import ResultWriter, read_results
    from node.screen.run import Progress, _screen_items
    from node.screen.sources import file_items
    from node.screen.worker import ScreenPlugin

    items = file_items([str(films_dir)])
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        reference = load_reference_dir(DEFAULT_REFERENCE_DIR, DEFAULT_TABLE)
        writer = ResultWriter(out_dir)
        client.register_plugin(ScreenPlugin(writer.run_id, reference, {"pixel_spacing_mm": None, "dest": None}))
        t1 = time.perf_counter()
        busy1, mine1 = _cpu_seconds()
        _screen_items(client, items, writer, Progress(len(items), enabled=False))
        writer.close()
        t2 = time.perf_counter()
        busy2, mine2 = _cpu_seconds()
    rows = read_results(out_dir).to_pylist()
    return {"workers": n_workers, "images": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
            "startup_s": round(t1 - t0, 2), "screen_s": round(t2 - t1, 2),
            "images_per_s": round(len(rows) / (t2 - t1), 3),
            "task_wall_s": round(sum(r["task_wall_seconds"] for r in rows) / len(rows), 3),
            "task_cpu_s": round(sum(r["task_cpu_seconds"] for r in rows) / len(rows), 3),
            "bench_cores": round((mine2 - mine1) / (t2 - t1), 2),
            "other_cores": round(max((busy2 - busy1) - (mine2 - mine1), 0.0) / (t2 - t1), 2),
            "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--films", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=10, help="different phantom hands among the films")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--films-dir", type=Path, help="keep the films here and reuse them when already there")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="screen-bench-") as tmp:
        folder = args.films_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if len(list((folder / "films").glob("*.dcm"))) != args.films:
            t = time.perf_counter()
            shutil.rmtree(folder / "films", ignore_errors=True)
            _make_films(folder, args.films, args.distinct)
            print(f"{args.films} films ({args.distinct} distinct phantoms, 2400 x 1800 px) written in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        print(f"{os.cpu_count()} cores; 1-minute load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        results = [_run(n, folder / "films", Path(tmp) / f"out-{n}") for n in args.workers]
    base = next((r["images_per_s"] for r in results if r["workers"] == 1), None)
    for r in results:
        r["speedup"] = round(r["images_per_s"] / base, 3) if base else None
        r["efficiency"] = round(r["images_per_s"] / (base * r["workers"]), 3) if base else None
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(f"{'workers':>7} {'images':>6} {'ok':>4} {'startup s':>9} {'screen s':>8} {'images/s':>8} {'speedup':>7} "
          f"{'efficiency':>10} {'task wall/cpu s':>15} {'cores bench/others':>18} {'load before/after':>17}")
    for r in results:
        print(f"{r['workers']:>7} {r['images']:>6} {r['ok']:>4} {r['startup_s']:>9} {r['screen_s']:>8} "
              f"{r['images_per_s']:>8} {r['speedup']!s:>7} {r['efficiency']!s:>10} "
              f"{r['task_wall_s']:>7}/{r['task_cpu_s']:<7} {r['bench_cores']:>9}/{r['other_cores']:<8} "
              f"{r['load_1min_before']:>8}/{r['load_1min_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
