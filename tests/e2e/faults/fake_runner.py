"""A runner that breaks the protocol on purpose (stdlib only).

Started as `python3 fake_runner.py [args...] --tcp-socket 127.0.0.1:PORT`.
The handler name picks the fault; it is committed while the attempt number
is at most params["bad_attempts"] (default 1), then the runner behaves:

  garbage    a frame whose payload is not JSON
  oversize   a header announcing a frame of almost 4 GiB
  truncated  half a frame, then the socket is closed
  wrong_id   a response carrying another request_id
  close      the socket is closed without an answer
  argv       (never faulty) answers with its argv and the params it got
  slow       (never faulty) appends {job_id, attempt, pid} to params["marker"],
             sleeps params["seconds"], then answers
  hang       (never faulty) appends to params["marker"], then never answers

A good answer is {"handler": name, "attempt": n}.
"""

import json
import os
import socket
import struct
import sys
import threading
import time

ADDR = sys.argv[sys.argv.index("--tcp-socket") + 1]
HOST, PORT = ADDR.rsplit(":", 1)


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def frame(payload):
    data = json.dumps({"type": "response", "payload": payload}).encode()
    return struct.pack(">I", len(data)) + data


def outcome(req, result, request_id=None):
    return {
        "job_id": req["job_id"],
        "request_id": request_id or req["request_id"],
        "status": "success",
        "result": result,
        "error": None,
        "retry_after_seconds": None,
    }


def serve(conn):
    with conn:
        while True:
            header = read_exact(conn, 4)
            if header is None:
                return
            body = read_exact(conn, struct.unpack(">I", header)[0])
            if body is None:
                return
            message = json.loads(body)
            if message.get("type") != "request":
                continue
            req = message["payload"]
            name = req["function_name"]
            params = req.get("params") or {}
            attempt = req["context"]["attempt"]
            if name in ("slow", "hang"):
                with open(params["marker"], "a") as f:
                    f.write(json.dumps({"job_id": req["job_id"], "attempt": attempt, "pid": os.getpid()}) + "\n")
                if name == "hang":
                    threading.Event().wait()
                time.sleep(params.get("seconds", 0))  # sleep-ok: the job's simulated run time
                conn.sendall(frame(outcome(req, {"handler": name, "attempt": attempt})))
                continue
            if name == "argv":
                conn.sendall(frame(outcome(req, {"argv": sys.argv[1:], "params": params})))
                continue
            if attempt <= params.get("bad_attempts", 1):
                if name == "garbage":
                    conn.sendall(struct.pack(">I", 11) + b"not json!!!")
                    continue
                if name == "oversize":
                    conn.sendall(struct.pack(">I", 0xFFFFFFF0))
                    continue
                if name == "truncated":
                    conn.sendall(struct.pack(">I", 100) + b'{"type":')
                    return
                if name == "wrong_id":
                    conn.sendall(frame(outcome(req, "stray", request_id="not-" + req["request_id"])))
                    continue
                if name == "close":
                    return
            conn.sendall(frame(outcome(req, {"handler": name, "attempt": attempt})))


def main():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, int(PORT)))
    server.listen(16)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
