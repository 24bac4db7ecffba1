"""moto server (DynamoDB, S3, SNS and SQS on one port) with one DynamoDB or S3 request inside
moto at a time, answering LocalStack's health path as LocalStack does, so it can stand in for it.

moto's DynamoDB backend is not thread-safe: two TransactWriteItems on one table at once can fail
inside moto with "dictionary changed size during iteration" (an HTTP 500 page). DynamoDB and
LocalStack isolate concurrent writes themselves; a lock around moto's application gives the test
stand-in the same guarantee, while connections are still accepted and read concurrently. SNS and
SQS requests stay outside that lock: an SQS receive may wait up to 20 s for a message (long
polling) inside moto, and under the lock no publish could reach it meanwhile. moto's SQS receive
is not atomic either: two receivers at once can both take one message, which SQS hides from
others the moment it hands it out. So the calls that take or settle a queue's messages (receive,
delete, change visibility) hold a lock of that queue's own.

Usage: python moto_server.py <host> <port>
"""

import io
import json
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


# The SQS calls (JSON protocol) that take or settle a queue's messages.
QUEUE_CALLS = {
    "AmazonSQS." + name
    for name in (
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    )
}


class QueueLocks:
    """One lock per queue URL, made when first asked for."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks: dict[str, threading.Lock] = {}

    def of(self, queue: str) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(queue, threading.Lock())


def queue_of(environ) -> str:
    """The QueueUrl of a JSON-protocol SQS call; the body is put back for moto to read."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        return str(json.loads(body or b"{}").get("QueueUrl", ""))
    except ValueError:
        return ""


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()
    queues = QueueLocks()

    def one_at_a_time(environ, start_response):
        if environ.get("PATH_INFO") == "/_localstack/health":
            # What LocalStack's probes (and the manifests') ask: the services it runs.
            start_response("200 OK", [("Content-Type", "application/json")])
            return [
                b'{"services": {"dynamodb": "running", "s3": "running", '
                b'"sns": "running", "sqs": "running"}}'
            ]
        if service_of(environ) in UNLOCKED:
            if environ.get("HTTP_X_AMZ_TARGET") in QUEUE_CALLS:
                with queues.of(queue_of(environ)):
                    return list(app(environ, start_response))
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
