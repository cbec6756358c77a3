#!/usr/bin/env python3
"""A do-nothing OTLP/HTTP receiver for loadtests/tracing-bench: accepts POST /v1/traces,
reads the body, answers 200 with an empty (valid) protobuf response, and on SIGTERM prints
how many export requests and bytes arrived. It does not decode: the bench measures the
services' side, and the decoding receiver is the test's (testkit/src/otlp.rs)."""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

posts = 0
received = 0


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global posts, received
        length = int(self.headers.get("content-length", "0"))
        received += len(self.rfile.read(length))
        posts += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(f"otlp sink: {posts} export requests, {received} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
