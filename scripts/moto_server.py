"""moto server (DynamoDB, S3, SNS and SQS on one port) with one DynamoDB or S3 request inside
moto at a time, answering LocalStack's health path as LocalStack does, so it can stand in for it.

moto's DynamoDB backend is not thread-safe: two TransactWriteItems on one table at once can fail
inside moto with "dictionary changed size during iteration" (an HTTP 500 page). DynamoDB and
LocalStack isolate concurrent writes themselves; a lock around moto's application gives the test
stand-in the same guarantee, while connections are still accepted and read concurrently. SNS and
SQS requests stay outside the lock: an SQS receive may wait up to 20 s for a message (long
polling) inside moto, and under the lock no publish could reach it meanwhile.

Usage: python moto_server.py <host> <port>
"""

import re
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


# The service a SigV4-signed request is for, from its credential scope.
SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([a-z0-9-]+)/aws4_request")
UNLOCKED = {"sns", "sqs"}


def service_of(environ) -> str:
    found = SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found.group(1) if found else ""


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        if environ.get("PATH_INFO") == "/_localstack/health":
            # What LocalStack's probes (and the manifests') ask: the services it runs.
            start_response("200 OK", [("Content-Type", "application/json")])
            return [
                b'{"services": {"dynamodb": "running", "s3": "running", '
                b'"sns": "running", "sqs": "running"}}'
            ]
        if service_of(environ) in UNLOCKED:
            return list(app(environ, start_response))
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
