"""Load test of a running labelling server: concurrent labellers over HTTP, each asking for its next pair and
labelling it, and what the database holds afterwards. Used by the tests and the benchmark."""

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(url: str, path: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data,
                                     headers={"content-type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def label_concurrently(urls: list[str], labellers: int, labels: int) -> dict:
    """`labellers` threads (spread over the servers in `urls`) submit `labels` pair labels in all; returns the
    acknowledged label ids, the rate and any errors."""
    per = [labels // labellers + (k < labels % labellers) for k in range(labellers)]
    acknowledged, errors, lock = [], [], threading.Lock()

    def work(k: int) -> None:
        url, name = urls[k % len(urls)], f"load-{k}"
        for n in range(per[k]):
            try:
                pair = call(url, f"/api/next?labeller={name}")["episodes"]
                if pair is None:
                    raise RuntimeError(f"{name} ran out of pairs after {n} labels")
                got = call(url, "/api/labels", {"labeller": name, "kind": "pair", "episodes": pair,
                                                "scores": [1.0, 0.0] if n % 2 else [0.0, 1.0]})
                with lock:
                    acknowledged.append(got["id"])
            except Exception as e:  # reported, and the test fails on any
                with lock:
                    errors.append(f"{name}: {type(e).__name__}: {e}")
                return

    start = time.perf_counter()
    with ThreadPoolExecutor(labellers) as pool:
        list(pool.map(work, range(labellers)))
    seconds = time.perf_counter() - start
    return {"labellers": labellers, "servers": len(urls), "labels_acknowledged": len(acknowledged),
            "ids": acknowledged, "errors": errors, "seconds": seconds, "labels_per_s": len(acknowledged) / seconds}
