"""gunicorn settings for `make run` and production. Every value can be overridden by env.

Threaded workers (gthread): a stream holds its thread for its whole length, so a worker needs
about as many threads as concurrent streams it should hold. bench/README.md has the figures
behind the worker class and the counts. The worker is gthread reading request heads in its
event loop (airouter/serving.py): a thread is taken only by a request whose head has arrived,
so connections that dribble their headers (slowloris) hold no thread, and gunicorn's own error
answers are the JSON envelope on /v1.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
# One process per core this may run on: two per core cost the same CPU and 80 MB more
# (bench/README.md).
workers = int(os.environ.get("WEB_CONCURRENCY", str(len(os.sched_getaffinity(0)))))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "airouter.serving.HeadFirstWorker")
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


# --- Prometheus metrics across workers (airouter/observability.py; README: Observability) ---
# Each worker writes its metrics to files in PROMETHEUS_MULTIPROC_DIR and /metrics, answered by
# any worker, sums them. Unset: a directory of this start's own, removed on exit (two instances
# on one host must not share one). Set: it is emptied at start (an earlier run's counts would
# be added in).
METRICS_DIR_PREFIX = "airouter-metrics-"
METRICS_FILES = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


def on_starting(server):
    """In the master, before any worker is forked: workers inherit the variable, which must be
    set before they import prometheus_client."""
    import glob
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
        return
    os.makedirs(path, exist_ok=True)
    for pattern in METRICS_FILES:
        for name in glob.glob(os.path.join(path, pattern)):
            os.remove(name)


def child_exit(server, worker):
    """A worker is gone: its counters stay summed in, its live gauges go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    import shutil
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.dirname(path) == tempfile.gettempdir() and os.path.basename(path).startswith(
        METRICS_DIR_PREFIX
    ):
        shutil.rmtree(path, ignore_errors=True)  # the one on_starting made
