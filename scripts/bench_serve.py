"""Benchmark the policy server: requests/s and p50/p99 latency at 1, 4 and 16 concurrent clients, with
dynamic batching off (max_batch 1) and on, through a real protocol (REST /act by default, or openpi's
websocket), the server in its own process. Also checks that every answer is the same with batching
on and off (token ids are exact). JSON with machine, versions and command goes to --out.

    # tiny reference checkpoint on CPU
    .venv/bin/python scripts/bench_serve.py --model tiny --device cpu --out bench_results/serve_cpu_tiny.json
    # the full openvla-7b architecture with random weights, built on a GPU (needs a lent GPU)
    .venv/bin/python scripts/bench_serve.py --model 7b --device cuda --dtype bfloat16 --out bench_results/serve_gpu_7b.json

Each client sends its requests back to back (closed loop) over one keep-alive connection; requests/s
is all answers over the wall time of a level, latency is per request as the client sees it (encode,
network, queueing, the model, decode). The two servers (batching off, on) run side by side and are
measured in alternating turns, so load from other jobs weighs on both alike (on a GPU both hold the
weights: 2 x 15 GB for the 7B model in bf16).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing
sys.path.insert(0, str(REPO / "scripts"))

from bench_common import machine_info  # noqa: E402
from bench_inference import TINY  # noqa: E402  (bench_inference.build: one owner for building the benchmark model)

INSTRUCTIONS = ["put the carrot on the plate", "pick up the spoon and place it in the pot", "wipe the table",
                "open the drawer"]  # fmt: skip
KEY = "bridge_orig"


def _serve(
    model: str,
    device: str,
    dtype: str,
    quantize: str | None,
    decode: str,
    threads: int,
    max_batch: int,
    window_ms: float,
    port_pipe,
) -> None:
    """The server process: build the model, bind a free port, report it, serve until SIGTERM."""
    import torch
    from bench_inference import build

    from prismatic.serve import ServeConfig, ServedModel
    from prismatic.serve.app import create_app
    from prismatic.serve.server import bind, run

    if threads:
        torch.set_num_threads(threads)
    vla = build(model, device, getattr(torch, dtype), quantize)
    vla.decode = decode
    config = ServeConfig(checkpoint=model, port=0, max_batch=max_batch, batch_window_ms=window_ms,
                         unnorm_key=KEY, log_level="warning")  # fmt: skip
    app = create_app(ServedModel(vla, model, default_unnorm_key=KEY), config)
    sock = bind("127.0.0.1", 0)
    port_pipe.send(sock.getsockname()[1])
    port_pipe.close()
    # uvicorn re-raises SIGTERM after its graceful shutdown: exit normally then, so the process cleans up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(app, config, sock)


class Server:
    def __init__(self, args, max_batch: int) -> None:
        ctx = mp.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_serve, args=(args.model, args.device, args.dtype, args.quantize, args.decode, args.threads, max_batch,
                                                     args.window_ms, sender), daemon=True)  # fmt: skip
        self.proc.start()
        sender.close()
        if not receiver.poll(1800):
            raise RuntimeError("the benchmark server did not report its port")
        self.port = receiver.recv()
        receiver.close()
        self.url = f"http://127.0.0.1:{self.port}"
        import requests

        for _ in range(6000):
            try:
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the benchmark server did not start")

    def stats(self) -> dict:
        import requests

        return requests.get(f"{self.url}/health", timeout=30).json()["batching"]

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: uvicorn's graceful shutdown
        self.proc.join(120)
        if self.proc.is_alive():
            self.proc.kill()


class RestClient:
    def __init__(self, url: str) -> None:
        import requests

        self.session, self.url = requests.Session(), f"{url}/act"

    def act(self, image: np.ndarray, instruction: str) -> np.ndarray:
        import json_numpy

        body = json_numpy.dumps({"image": image, "instruction": instruction})
        r = self.session.post(self.url, data=body, headers={"Content-Type": "application/json"}, timeout=600)
        r.raise_for_status()
        return np.asarray(json_numpy.loads(r.text))

    def close(self) -> None:
        self.session.close()


class OpenpiClient:
    def __init__(self, url: str) -> None:
        import websockets.sync.client

        self.ws = websockets.sync.client.connect("ws" + url[4:] + "/openpi", max_size=None, compression=None)
        self.ws.recv()  # metadata

    def act(self, image: np.ndarray, instruction: str) -> np.ndarray:
        from prismatic.serve.codec import pack_openpi, unpack_msgpack

        self.ws.send(pack_openpi({"observation/image": image, "prompt": instruction}))
        reply = self.ws.recv(timeout=600)
        if isinstance(reply, str):
            raise RuntimeError(reply)
        return unpack_msgpack(reply)["actions"][0]

    def close(self) -> None:
        self.ws.close()


CLIENTS = {"rest": RestClient, "openpi": OpenpiClient}


def run_level(server: Server, protocol: str, concurrency: int, total: int, images: list[np.ndarray]) -> dict:
    """`total` requests from `concurrency` closed-loop clients: latencies, wall time, model calls, answers."""
    per_client = -(-total // concurrency)
    latencies: list[float] = []
    answers: dict[tuple[int, int], np.ndarray] = {}
    errors: list[str] = []
    lock = threading.Lock()
    clients = [CLIENTS[protocol](server.url) for _ in range(concurrency)]
    for c in clients:  # warm-up: connections open, first-call costs paid before timing
        c.act(images[0], INSTRUCTIONS[0])
    before = server.stats()
    start = threading.Barrier(concurrency + 1)

    def work(k: int) -> None:
        start.wait()
        for j in range(per_client):
            i = (k * per_client + j) % (len(images) * len(INSTRUCTIONS))
            image, instruction = images[i % len(images)], INSTRUCTIONS[i // len(images)]
            t = time.perf_counter()
            try:
                action = clients[k].act(image, instruction)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t)
                answers.setdefault((i % len(images), i // len(images)), action)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = server.stats()
    for c in clients:
        c.close()
    return {"latencies": latencies, "wall": wall, "errors": errors, "answers": answers,
            "calls": after["batches"] - before["batches"], "served": after["requests"] - before["requests"]}  # fmt: skip


def summarize(concurrency: int, rounds: list[dict]) -> dict:
    latencies = [x for r in rounds for x in r["latencies"]]
    errors = [e for r in rounds for e in r["errors"]]
    wall, calls = sum(r["wall"] for r in rounds), sum(r["calls"] for r in rounds)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 1),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1e3, 1),
        "model_calls": calls,
        "mean_batch": round(sum(r["served"] for r in rounds) / max(calls, 1), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="tiny", help="'tiny' (reference checkpoint), '7b' (random weights) or a path"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument(
        "--quantize", default=None, choices=["8bit", "4bit"], help="bitsandbytes weights (default: none)"
    )
    ap.add_argument("--decode", default="auto", choices=["auto", "eager", "static", "graphs"])
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads in the server (0: torch's choice)"
    )
    ap.add_argument("--protocol", default="rest", choices=sorted(CLIENTS))
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--requests", type=int, default=160, help="requests per concurrency level (and mode)")
    ap.add_argument("--rounds", type=int, default=2, help="turns per level and mode, alternating off/on")
    ap.add_argument("--max-batch", type=int, default=16, help="max_batch with batching on")
    ap.add_argument("--window-ms", type=float, default=5.0, help="batch_window_ms with batching on")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "serve.json")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    load_before = os.getloadavg()  # the machine may be shared: record how busy it was

    from PIL import Image

    images = [
        np.asarray(Image.open(p).convert("RGB").resize((224, 224)))
        for p in sorted((TINY / "cases").glob("*.png"))
    ]
    results, answers = [], {"off": {}, "on": {}}
    # Both servers run side by side and are measured in turns (off, on, on, off, ...) at every level, so a
    # change in the machine's load during the run weighs on both alike.
    servers = {"off": Server(args, 1), "on": Server(args, args.max_batch)}
    try:
        for c in levels:
            rounds: dict[str, list[dict]] = {"off": [], "on": []}
            for r in range(args.rounds):
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    rounds[mode].append(
                        run_level(servers[mode], args.protocol, c, args.requests // args.rounds, images)
                    )
                    answers[mode].update(rounds[mode][-1]["answers"])
            for mode in ("off", "on"):
                summary = summarize(c, rounds[mode])
                results.append({"batching": mode, **summary})
                print(f"batching {mode:3s} clients {c:2d}: {summary['requests_per_s']:7.2f} req/s  "
                      f"p50 {summary['p50_ms']:7.1f} ms  p99 {summary['p99_ms']:7.1f} ms  "
                      f"mean batch {summary['mean_batch']:.2f}  errors {summary['errors']}", file=sys.stderr)  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    shared = sorted(set(answers["off"]) & set(answers["on"]))
    same = bool(shared) and all(np.array_equal(answers["off"][k], answers["on"][k]) for k in shared)
    rps = {(r["batching"], r["concurrency"]): r["requests_per_s"] for r in results}
    report = {
        "benchmark": "serve",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {
            "model": args.model,
            "device": args.device,
            "dtype": args.dtype,
            "quantize": args.quantize,
            "decode": args.decode,
            "threads": args.threads,
            "protocol": args.protocol,
            "requests_per_level": args.requests,
            "rounds": args.rounds,
            "max_batch_on": args.max_batch,
            "window_ms_on": args.window_ms,
        },  # fmt: skip
        "machine": {
            **machine_info(args.device),
            "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
        },
        "results": results,
        "speedup_batching_on_vs_off": {str(c): round(rps[("on", c)] / rps[("off", c)], 2) for c in levels},
        "same_answers_batching_on_and_off": same,
        "answers_compared": len(shared),
    }
    from prismatic.util.io import atomic_write_json

    atomic_write_json(args.out, report)
    print(json.dumps(report["speedup_batching_on_vs_off"]), f"same answers: {same}; written to {args.out}",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
