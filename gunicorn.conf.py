"""gunicorn settings for `make run` and production. Every value can be overridden by env."""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# A stream holds its worker thread for its whole length: allow long ones.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "600"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG", None)
