"""moto server (DynamoDB and S3 on one port) with one request inside moto at a time, answering
LocalStack's health path as LocalStack does, so it can stand in for it.

moto's DynamoDB backend is not thread-safe: two TransactWriteItems on one table at once can fail
inside moto with "dictionary changed size during iteration" (an HTTP 500 page). DynamoDB and
LocalStack isolate concurrent writes themselves; a lock around moto's application gives the test
stand-in the same guarantee, while connections are still accepted and read concurrently.

Usage: python moto_server.py <host> <port>
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        if environ.get("PATH_INFO") == "/_localstack/health":
            # What LocalStack's probes (and the manifests') ask: the services it runs.
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"services": {"dynamodb": "running", "s3": "running"}}']
        with lock:
            # The whole body is produced under the lock: moto builds it from shared state.
            return list(app(environ, start_response))

    run_simple(
        host,
        port,
        one_at_a_time,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
