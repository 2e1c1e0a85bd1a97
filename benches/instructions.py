#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: repeatable on a shared machine.

    python3 benches/instructions.py target/release/switchyard [OTHER_BINARY ...]

For each binary: a node on SQLite (auth, usage ledger, a provider route to a mock upstream on
loopback) runs under callgrind; after a warm-up the counters are zeroed, N requests go through it
one at a time over a keep-alive connection (non-streaming, then streaming), and the instructions the
node executed (every thread) are divided by N. With two binaries, it prints the A/B. `--top K`
prints each run's K costliest functions (inclusive), `--traced` adds a run of the last binary with trace export at
100 % (`TRACE_RATIO`) to a closed port (spans built, queued and dropped: the cost on the request path), or to
the OTLP/gRPC receiver at `OTLP_GRPC` (then the export thread's count includes encoding and sending).
Environment: `N` (default 400) requests per kind; `CONC` clients sending them at once (default 1); `KEEP=1` keeps the dumps (for callgrind_annotate);
`THREADS=1` counts each thread apart and splits the total into the request path (the HTTP workers,
where a request waits), the trace exporter's thread, and the rest (ledger writer, database pool);
`INGRESS=messages|responses` sends the same request as an Anthropic Messages or OpenAI Responses client
(translated to the Chat mock); `CACHE=1` (with `THREADS=1`) also simulates the caches and prints the request path's L1
instruction and data misses and last-level misses per request (what instructions alone miss).
"""

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

CHAT = json.dumps(
    {
        "id": "chatcmpl-b",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "qwen",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, friend."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }
).encode()


def sse_body():
    events = []
    for word in ["Hello", " there", ",", " friend", "."]:
        events.append(
            {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "qwen",
             "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        )
    events.append(
        {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "qwen",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    events.append(
        {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000, "model": "qwen",
         "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}
    )
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


SSE = sse_body()


class Mock(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        data, ctype = (SSE, "text/event-stream") if body.get("stream") else (CHAT, "application/json")
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(binary, cwd, *args):
    out = subprocess.run([binary, "--config", "bench.toml", "--json", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{binary} {args}: {out.returncode} {out.stdout.strip()} {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SEPARATE = (["--separate-threads=yes"] if os.environ.get("THREADS") else []) + (
    ["--cache-sim=yes"] if os.environ.get("CACHE") else []
)
misses = {}
splits = {}


def dump_total(path):
    """A callgrind dump's total instructions, and its function names (one string)."""
    total, names, events, counts = 0, [], [], []
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            if line.startswith("summary:") or line.startswith("totals:"):
                counts = [int(v) for v in line.split()[1:]]
                total = counts[0]
            elif line.startswith("fn=") or line.startswith("cfn="):
                names.append(line)
    dump_total.events = dict(zip(events, counts))
    return total, "".join(names)


def measure(binary, mock_port, n, top, traced):
    cwd = tempfile.mkdtemp(prefix="sy-instr-")
    port = free_port()
    extra = ""
    if traced:
        ratio = os.environ.get("TRACE_RATIO", "1.0")
        endpoint = os.environ.get("OTLP_GRPC") or f"http://127.0.0.1:{free_port()}"
        extra = f'[telemetry]\notlp_endpoint = "{endpoint}"\nsample_ratio = {ratio}\n'
    with open(os.path.join(cwd, "bench.toml"), "w") as f:
        f.write(
            f'[server]\nport = {port}\n[database]\nurl = "sqlite://bench.db?mode=rwc"\n[log]\nlevel = "error"\n{extra}'
            f'[[providers]]\nid = "local"\ntype = "openai"\nendpoint = "http://127.0.0.1:{mock_port}/v1"\n'
            'models = [{ name = "qwen" }]\n'
            '[[prices]]\nmodel = "qwen"\ninput_per_million = 0.1\noutput_per_million = 0.2\n'
        )
    cli(binary, cwd, "user", "create", "admin", "--role", "admin")
    token = cli(binary, cwd, "token", "create", "--user", "admin")["token"]
    out_file = os.path.join(cwd, "callgrind.out")
    def start():
        return subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", *SEPARATE, binary, "--config", "bench.toml", "serve"],
            cwd=cwd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(cwd, "node.log"), "ab"),
        )

    node = start()
    try:
        deadline = time.time() + 300
        tries = 1
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if node.poll() is not None and tries < 6 and time.time() < deadline:
                    # Under valgrind (slower still with CACHE=1) opening the database pool can
                    # outlast its 5 s acquire timeout: start again.
                    tries += 1
                    node = start()
                elif time.time() > deadline or node.poll() is not None:
                    with open(os.path.join(cwd, "node.log"), errors="replace") as log:
                        tail = [l for l in log.read().splitlines() if not l.startswith(("==", "--"))][-5:]
                    raise SystemExit(f"{binary}: the node did not start: " + " | ".join(tail))
                time.sleep(0.5)
        conc = int(os.environ.get("CONC", "1"))
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(conc)]

        # `INGRESS=messages` or `responses`: the same request from an Anthropic Messages or an
        # OpenAI Responses client (translated to the Chat mock), instead of a Chat client.
        ingress = os.environ.get("INGRESS", "chat")
        path = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}[ingress]

        def send(stream, conn=conns[0]):
            ask = "Say hello in one short sentence."
            if ingress == "responses":
                body = {"model": "qwen", "stream": stream, "input": ask}
            else:
                body = {"model": "qwen", "stream": stream, "messages": [{"role": "user", "content": ask}]}
                if ingress == "messages":
                    body["max_tokens"] = 64
            conn.request("POST", path, body=json.dumps(body),
                         headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise SystemExit(f"{binary}: {r.status} {data[:200]!r}")

        results = {}
        for stream in (False, True):
            for _ in range(50):
                send(stream)
            time.sleep(1.0)  # let the ledger's batch writer settle
            subprocess.run(["callgrind_control", "-z", str(node.pid)], check=True, capture_output=True)

            failures = []

            def client(c, count, stream=stream):
                try:
                    for _ in range(count):
                        send(stream, c)
                except BaseException as e:  # noqa: BLE001 - reported below
                    failures.append(repr(e))

            # New connections: idle ones may have reached the node's keep-alive timeout meanwhile.
            for c in conns:
                c.close()
            threads = [threading.Thread(target=client, args=(c, n // conc)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failures:
                raise SystemExit(f"{binary}: {len(failures)} clients failed: {failures[0]}")
            time.sleep(1.0)  # the records of these requests are written too: part of their cost
            subprocess.run(["callgrind_control", "-d", str(node.pid)], check=True, capture_output=True)
            kind = "streaming" if stream else "non-streaming"
            if SEPARATE:
                dumps = [(int(m.group(1)), f) for f in os.listdir(cwd) if (m := re.fullmatch(r"callgrind\.out\.(\d+)-\d+", f))]
                newest = max(d for d, _ in dumps)
                split = {"request path": 0, "trace export": 0, "other": 0}
                cache = {}
                for _, f in (x for x in dumps if x[0] == newest):
                    total, names = dump_total(os.path.join(cwd, f))
                    where = "request path" if "actix_server::worker" in names else "trace export" if "export_loop" in names else "other"
                    split[where] += total
                    if where == "request path":
                        for k, v in dump_total.events.items():
                            cache[k] = cache.get(k, 0) + v
                results[kind] = (sum(split.values()) / n, None)
                splits[kind] = {k: v / n for k, v in split.items()}
                if "I1mr" in cache:
                    misses[kind] = {k: cache.get(k, 0) / n for k in ("I1mr", "ILmr", "D1mr", "D1mw", "DLmr", "DLmw")}
                continue
            files = sorted((f for f in os.listdir(cwd) if f.startswith("callgrind.out.")), key=lambda f: os.path.getmtime(os.path.join(cwd, f)))
            last = os.path.join(cwd, files[-1])
            total, _ = dump_total(last)
            results[kind] = (total / n, last)
    finally:
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
    try:
        for kind, (_, path) in results.items():
            if kind in splits:
                print(f"{binary}{' (traced)' if traced else ''} {kind}: " + ", ".join(f"{k} {v:.0f}" for k, v in splits.pop(kind).items()))
            if kind in misses:
                print(f"{binary}{' (traced)' if traced else ''} {kind}, request path misses per request: " + ", ".join(f"{k} {v:.0f}" for k, v in misses.pop(kind).items()))
            if top and path:
                print(f"\n{binary} {kind}: costliest functions (inclusive instructions per request)")
                out = subprocess.run(["callgrind_annotate", "--inclusive=yes", path], capture_output=True, text=True).stdout
                rows = 0
                for line in out.splitlines():
                    m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)", line)
                    if m:
                        print(f"  {int(m.group(1).replace(',', '')) / n:>10.0f}  {m.group(2)[:150]}")
                        rows += 1
                        if rows >= top:
                            break
        return {k: v[0] for k, v in results.items()}
    finally:
        if os.environ.get("KEEP"):
            print(f"{binary}: callgrind dumps kept in {cwd}")
        else:
            shutil.rmtree(cwd, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("binaries", nargs="+")
    p.add_argument("--top", type=int, default=0)
    p.add_argument("--traced", action="store_true")
    a = p.parse_args()
    n = int(os.environ.get("N", "400"))
    mock = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    runs = [(b, False) for b in a.binaries] + ([(a.binaries[-1], True)] if a.traced else [])
    table = []
    for binary, traced in runs:
        label = binary + (f" (trace export, ratio {os.environ.get('TRACE_RATIO', '1.0')})" if traced else "")
        r = measure(binary, mock.server_address[1], n, a.top, traced)
        table.append((label, r))
    print(f"\nInstructions per request executed by the node (callgrind, {n} requests of each kind, all threads):")
    for label, r in table:
        print(f"  {label:<60} non-streaming {r['non-streaming']:>10.0f}   streaming {r['streaming']:>10.0f}")
    if len(table) > 1:
        base = table[0][1]
        for label, r in table[1:]:
            d = [(r[k] - base[k]) / base[k] * 100 for k in ("non-streaming", "streaming")]
            print(f"  {label} against {table[0][0]}: non-streaming {d[0]:+.1f} %, streaming {d[1]:+.1f} %")
    mock.shutdown()


if __name__ == "__main__":
    sys.exit(main())
