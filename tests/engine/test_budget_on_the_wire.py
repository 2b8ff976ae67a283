"""A URL audit killed with SIGKILL and resumed stays within its query budget, counted by the server,
and ends with the results of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

SRC = str(Path(__file__).resolve().parents[2] / "src")


class CountingServer:
    """A scoring API around the demo CNN that counts every sample it receives."""

    def __init__(self, model):
        self.model = model.eval()
        self.received = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                x = torch.tensor(body["inputs"], dtype=torch.float32)
                with server.lock:
                    server.received += len(x)
                with torch.no_grad():
                    out = json.dumps({"scores": server.model(x).tolist()}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server(demo):
    model, _ = demo
    s = CountingServer(model)
    yield s
    s.httpd.shutdown()


def _audit(url, data, out, budget):
    cmd = [sys.executable, "-m", "assay", "audit", url, "--num-classes", "10", "--input-shape", "1,8,8",
           "--query-budget", str(budget), "--data", str(data), "--probe", "robustness.blackbox",
           "--param", "robustness.blackbox.max_samples=30", "--param", "robustness.blackbox.queries_per_sample=150",
           "--param", "robustness.blackbox.eps_linf=0.05,0.1", "--out", str(out), "--quiet"]
    return subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=SRC), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _robust(out):
    r = json.loads((Path(out) / "report.json").read_text())
    f = r["findings"][0]
    return {m["name"]: m["value"] for m in f["metrics"] if m["name"].startswith("robust_accuracy")}, r


def test_kill_and_resume_stays_within_budget_with_equal_results(server, demo, tmp_path):
    _, s = demo
    data = tmp_path / "d.npz"
    np.savez(data, x=s.x_test[:120].numpy(), y=s.y_test[:120].numpy())
    budget = 2500  # binding: 30 samples x 150 queries x 2 epsilons could use far more

    server.received = 0
    p = _audit(server.url, data, tmp_path / "whole", budget)
    assert p.wait(timeout=600) in (0, 1), p.stderr.read()
    whole_sent = server.received
    whole, whole_report = _robust(tmp_path / "whole")
    assert whole_sent <= budget

    server.received = 0
    p = _audit(server.url, data, tmp_path / "killed", budget)
    deadline = time.time() + 600
    while server.received < whole_sent // 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    first = server.received
    assert 0 < first < whole_sent
    p = _audit(server.url, data, tmp_path / "killed", budget)
    assert p.wait(timeout=600) in (0, 1), p.stderr.read()
    resumed, report = _robust(tmp_path / "killed")
    assert server.received <= budget  # across the kill and the resumed run together
    assert resumed == whole
    assert report["accounting"]["queries"] <= budget and report["accounting"]["queries_earlier_runs"] >= first
