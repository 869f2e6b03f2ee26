"""Load test of a running labelling server: concurrent labellers over HTTP, each asking for its next pair and
labelling it, and what the database holds afterwards. Used by the tests and scripts/benchmark.py; not part of
the package."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def status(url: str, path: str, body: dict | str | None = None, headers: dict | None = None,
           timeout: float = 30) -> tuple[int, bytes]:
    """(HTTP status, body) of one request, errors included; a str body is sent as it is (JSON json.dumps cannot
    write, such as 1e309)."""
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def call(url: str, path: str, body: dict | None = None, timeout: float = 60) -> dict:
    """The JSON answer of one request; any status but 200 raises with the server's reason."""
    code, answer = status(url, path, body, timeout=timeout)
    if code != 200:
        raise RuntimeError(f"{path}: HTTP {code}: {answer[:200]!r}")
    return json.loads(answer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`hf-agents label` in its own process, as a designer starts it; `kill()` is SIGKILL (no shutdown hook)."""

    def __init__(self, dataset, db, labeller: str = "alice", *extra, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "hf_agents", "label", str(dataset), "--labeller", labeller, "--db", str(db),
                     "--port", str(self.port), *map(str, extra)]
        self.proc = None

    def start(self, timeout: float = 120) -> "Server":
        return self.launch().wait_until_up(timeout)

    def launch(self) -> "Server":
        """Start the process without waiting for it to answer (several servers start side by side)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        return self

    def wait_until_up(self, timeout: float = 120) -> "Server":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"labelling server exited {self.proc.returncode}: {self.proc.stdout.read()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                if status(self.url, "/api/progress?labeller=probe")[0] in (200, 401):  # up (401: a token is set)
                    return self
            time.sleep(0.3)
        self.kill()
        raise TimeoutError(f"labelling server did not answer within {timeout:.0f} s: {' '.join(self.args)}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def running(*servers: Server, wait: bool = True):
    """The servers started side by side and, with `wait`, up; killed on the way out. Without `wait` the caller does
    other work while they start, then calls `wait_until_up()` on each."""
    try:
        for s in servers:
            s.launch()
        yield [s.wait_until_up() for s in servers] if wait else list(servers)
    finally:
        for s in servers:
            s.kill()


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
