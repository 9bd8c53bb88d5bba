"""gunicorn settings for `make run` and production. Every value can be overridden by env.

Threaded workers (gthread): a stream holds its thread for its whole length, so a worker needs
about as many threads as concurrent streams it should hold. bench/README.md has the figures
behind the worker class and the counts.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
# One process per core this may run on: two per core cost the same CPU and 80 MB more
# (bench/README.md).
workers = int(os.environ.get("WEB_CONCURRENCY", str(len(os.sched_getaffinity(0)))))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
# Threads are started on demand: this is a ceiling, and each worker alone can hold a
# thousand streams however the kernel spreads the connections.
threads = int(os.environ.get("GUNICORN_THREADS", "1024"))
# Connections beyond the threads are kept-alive idle ones (gthread closes every connection
# after its response when there is no room for them).
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads + 256)))
backlog = 4096
# A stream holds its worker thread for its whole length: allow long ones.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "600"))
# On a restart, streams in flight get this long to finish (and settle) before being cut.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", str(timeout)))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG", None)
# No runtime control socket: one fixed path would clash between instances on one host.
control_socket_disable = True
