"""`cnnlab serve` under loopback load (issue 23's checks): memory under junk model names, memory and liveness
under huge uploads, latency of real predictions.

    python benchmarks/serve_load.py [--names 1000] [--uploads 8] [--predictions 200] [--clients 20]

Starts `cnnlab serve` on 127.0.0.1 (a free port, an empty runs folder, --threads 2, its defaults otherwise:
10 MB uploads, 25 MP, two decodes and two model slots at once) and sends it, only on loopback and bounded in
count and time (every request times out after 120 s):

1. `--names` POSTs to /api/predict, each naming a different unknown model (about 1 KB each): resident memory
   after them against after a warm-up (the names must leave nothing behind);
2. (the default model loaded first) `--uploads` concurrent uploads of a 9,000 x 9,000 PNG (81 MP in a few
   MB): each must be answered (413/400 or a prediction); the server's peak resident memory; /healthz polled
   every 100 ms, its slowest answer. Then the same with a 4,900 x 4,900 RGBA PNG (24 MP: under the cap, so
   decoded: at reduced size);
3. `--predictions` predictions of a photo (chelsea.png, 451 x 300) from `--clients` clients: latency p50/p95,
   throughput, peak memory, /healthz's slowest answer.

Writes benchmarks/results/serve-load-<CPU class>.md. Run it alone: the figures are the machine's.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLE = "# `cnnlab serve` under loopback load"
PHOTO = Path(os.environ.get("CNNLAB_DATA", ROOT.parent / "shared" / "data")) / "images" / "photos" / "chelsea.png"
TIMEOUT = 120.0


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """Samples the server's resident memory every 50 ms and /healthz every 100 ms while a phase runs."""

    def __init__(self, pid: int, client, base: str):
        self.pid, self.client, self.base = pid, client, base
        self.peak_mb, self.health_s, self.health_failures = 0.0, 0.0, 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak_mb, self.health_s, self.health_failures = _rss_mb(self.pid), 0.0, 0
        self._threads = [threading.Thread(target=self._memory), threading.Thread(target=self._health)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()

    def _memory(self):
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, _rss_mb(self.pid))

    def _health(self):
        while True:
            start = time.monotonic()
            try:
                ok = self.client.get(self.base + "/healthz", timeout=5).status_code == 200
            except Exception:  # noqa: BLE001 - a timeout is a failure to record, not to raise
                ok = False
            self.health_s = max(self.health_s, time.monotonic() - start)
            self.health_failures += not ok
            if self._stop.wait(0.1):
                return


def _png(side: int, mode: str) -> bytes:
    """A picture that compresses well (a few MB for 81 MP): what a bomb-sized upload under the limit looks like."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side].astype(np.uint16)
    channels = [(x // 37) % 256, (y // 41) % 256, ((x + y) // 53) % 256] + ([(x // 97) % 256] if mode == "RGBA" else [])
    picture = Image.fromarray(np.stack(channels, axis=2).astype(np.uint8), mode)
    out = io.BytesIO()
    picture.save(out, "PNG", compress_level=9)
    return out.getvalue()


def _start(runs: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs", str(runs),
                                 "--threads", "2"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"cnnlab serve exited:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"cnnlab serve did not listen in 120 s:\n{log.read_text()}") from None
            time.sleep(0.2)


def _post(client, base: str, data: bytes, model: str | None = None) -> tuple[int, float]:
    start = time.monotonic()
    try:
        response = client.post(base + "/api/predict", files={"image": ("upload.png", data, "image/png")},
                               data={"model": model} if model else None, timeout=TIMEOUT)
        status = response.status_code
    except Exception:  # noqa: BLE001 - no answer is a result here
        status = 0
    return status, time.monotonic() - start


def _counts(statuses: list[int]) -> str:
    return ", ".join(f"{n} x {s or 'no answer'}" for s, n in sorted({s: statuses.count(s) for s in statuses}.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--predictions", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    import httpx

    from _common import cpu_banner, save_result, table

    print(cpu_banner(), flush=True)
    photo = PHOTO.read_bytes()
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        proc, base = _start(Path(tmp) / "runs", Path(tmp) / "serve.log")
        client = httpx.Client(trust_env=False, limits=httpx.Limits(max_connections=64))
        try:
            pid = proc.pid
            tiny = _png(16, "RGB")
            for i in range(20):  # warm-up: the registry and the form parser imported
                _post(client, base, tiny, f"warm-up-{i}")
            start_mb = _rss_mb(pid)
            with Watch(pid, client, base) as watch:
                statuses = [_post(client, base, tiny, f"no-such-model-{i:05d}-" + "x" * 1000)[0]
                            for i in range(args.names)]
            end_mb = _rss_mb(pid)
            rows.append([f"{args.names:,} POSTs, each a different unknown model name (~1 KB)", _counts(statuses),
                         f"{start_mb:.0f} -> {end_mb:.0f} MB ({end_mb - start_mb:+.1f} MB)", f"{watch.peak_mb:.0f} MB",
                         f"{watch.health_s:.3f} s"])
            print("  " + " | ".join(rows[-1]), flush=True)
            _post(client, base, photo)  # the model loaded: the upload phases measure decoding, not loading
            for side, mode in ((9000, "RGB"), (4900, "RGBA")):
                data = _png(side, mode)
                before = _rss_mb(pid)
                with Watch(pid, client, base) as watch, ThreadPoolExecutor(args.uploads) as pool:
                    answers = list(pool.map(lambda _: _post(client, base, data), range(args.uploads)))
                statuses = [s for s, _ in answers]
                rows.append([f"{args.uploads} concurrent uploads of a {side:,} x {side:,} {mode} PNG "
                             f"({len(data) / 2**20:.1f} MB, {side * side / 1e6:.0f} MP)", _counts(statuses),
                             f"{before:.0f} MB before", f"{watch.peak_mb:.0f} MB",
                             f"{watch.health_s:.3f} s ({watch.health_failures} failed)"])
                print("  " + " | ".join(rows[-1]), flush=True)
            before = _rss_mb(pid)
            per_client = [args.predictions // args.clients + (i < args.predictions % args.clients)
                          for i in range(args.clients)]
            wall = time.monotonic()
            with Watch(pid, client, base) as watch, ThreadPoolExecutor(args.clients) as pool:
                answers = [a for batch in pool.map(lambda n: [_post(client, base, photo) for _ in range(n)], per_client)
                           for a in batch]
            wall = time.monotonic() - wall
            latencies = sorted(t for s, t in answers if s == 200)
            p50 = statistics.median(latencies) if latencies else float("nan")
            p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)] if latencies else float("nan")
            rows.append([f"{args.predictions} predictions of {PHOTO.name} from {args.clients} clients",
                         _counts([s for s, _ in answers]), f"{before:.0f} MB before", f"{watch.peak_mb:.0f} MB",
                         f"{watch.health_s:.3f} s"])
            print("  " + " | ".join(rows[-1]), flush=True)
            notes.append(f"Predictions: latency p50 {p50:.2f} s, p95 {p95:.2f} s (each request, queueing included: "
                         f"{args.clients} clients on one model); {len(latencies) / wall:.1f} predictions/s over "
                         f"{wall:.0f} s. Server peak resident memory over its whole life (VmHWM): "
                         f"{_rss_mb(pid, 'VmHWM'):.0f} MB.")
        finally:
            client.close()
            proc.terminate()
            proc.wait(timeout=30)
    text = table(["load", "answers", "resident memory", "peak memory", "slowest /healthz"], rows)
    print()
    print(text)
    print("\n" + "\n".join(notes))
    save_result("serve-load", f"{TITLE}\n\n{cpu_banner()}\n\nWritten by `python benchmarks/serve_load.py` "
                f"(`cnnlab serve --threads 2` with its defaults: 10 MB uploads, 25 MP, two decodes and two model "
                f"slots at once, efficientnet_lite0; all traffic on 127.0.0.1).\n\n{text}\n\n" + "\n\n".join(notes)
                + "\n")


if __name__ == "__main__":
    main()
