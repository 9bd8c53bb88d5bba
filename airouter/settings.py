"""AI Router settings. Every value can come from the environment (or a .env file);
with nothing set it runs on SQLite in debug-free dev mode. See .env.example."""

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from airouter.secret_key import local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # OS variables win over the file

# --- Core ---------------------------------------------------------------------
# Without SECRET_KEY in the environment, a random key is made once and kept in .secret_key
# (never committed), so `make run` needs no setup and no key is public. Production sets it
# (`check --deploy` says so: airouter.E002), the same on every instance.
SECRET_KEY_FROM_ENV = bool(env("SECRET_KEY", default=""))
SECRET_KEY = env("SECRET_KEY", default="") or local_secret_key(BASE_DIR / ".secret_key")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS and cookies ----------------------------------------------------------
# Off by default so `make run` works on plain http://127.0.0.1; production turns them
# on in the environment (.env.example lists the set that makes `check --deploy` clean).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients).
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Load balancers and orchestrators probe over plain HTTP, often straight to the instance.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

INSTALLED_APPS = [
    "groups.admin_site.AdminConfig",  # Django's admin with a "User Management" section
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "groups",
    "channels_app",
    "tokens",
    "billing",
    "axes",  # failed sign-ins, throttled (airouter/login.py)
    "corsheaders",  # browser clients of /v1 (CORS_ALLOWED_ORIGINS)
]

MIDDLEWARE = [
    # CORS on /v1 for the origins in CORS_ALLOWED_ORIGINS (none by default): outermost, so
    # every answer (the relay's error envelopes too) carries its headers; preflights end here.
    "corsheaders.middleware.CorsMiddleware",
    # /v1: x-request-id on every response, the OpenAI error envelope instead of HTML.
    "airouter.relay.errors.RelayMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "airouter.urls"
WSGI_APPLICATION = "airouter.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent streams write usage rows: take the write lock up front, wait for it.
    # WAL lets readers run beside the writer and commits without an fsync each (bench/).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            # A thousand streams starting at once queue for the one writer: wait up to 30 s
            # (sqlite3's own default gives up after 5 s).
            "timeout": 30,
            "init_command": "PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL; "
            "PRAGMA synchronous = NORMAL;",
        }
    )
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
elif env.int("DATABASE_POOL_MAX_SIZE", default=16):
    # psycopg's pool, one per worker process. A gthread worker runs hundreds of threads and
    # Django's persistent connections are per thread: 1,000 held streams would exhaust the
    # server's max_connections (bench/README.md).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool checks a connection before it lends it (one round trip): after a database
    # restart no request fails on a connection that died meanwhile.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=16),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        # psycopg_pool retries a lost connection at 1, 3, 7, 15 ... s for up to 5 minutes,
        # lending none meanwhile: give up after the pool timeout instead, so the next request
        # tries again at once and nothing waits long after the database is back.
        "reconnect_timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
else:  # DATABASE_POOL_MAX_SIZE=0: persistent connections, one per thread
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The test database. SQLite tests use a file, not memory, so live-server threads each get a
# connection of their own, as in a deployment; the name also keeps parallel runs apart.
_sqlite = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
_test_name = env("TEST_DATABASE_NAME", default="") or (
    str(BASE_DIR / "test-db.sqlite3") if _sqlite else ""
)
if _test_name:
    DATABASES["default"]["TEST"] = {"NAME": _test_name}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "groups.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Internationalization ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files -------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/keys/"
LOGOUT_REDIRECT_URL = "/login/"
# Whether a user's /usage/ page names the channel that served each request.
USAGE_SHOW_CHANNEL = env.bool("USAGE_SHOW_CHANNEL", default=False)

# --- Sign-in throttling (django-axes; airouter/login.py) -------------------------------------
# After LOGIN_FAILURE_LIMIT failed sign-ins from one address, or for one username, on /login/
# or /admin/login/, that address or username is refused for LOGIN_COOLOFF_MINUTES (429), even
# with the right password. Failures are rows in the database: every worker and instance counts
# them together. A success resets them; operators unlock in the admin or with
# `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`.
AUTHENTICATION_BACKENDS = [
    "airouter.login.SignInThrottle",  # axes' backend: refuses a locked-out sign-in first
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # either one locks
AXES_RESET_ON_SUCCESS = True
# The address token allowlists see: X-Forwarded-For only from RELAY_TRUSTED_PROXIES.
AXES_CLIENT_IP_CALLABLE = "tokens.authentication.client_ip"
# The login views answer a lockout themselves (airouter.login.sign_in): no AxesMiddleware.
SILENCED_SYSTEM_CHECKS = ["axes.W002"]
# No "AXES: BEGIN" line on every start (stderr of every manage.py command); failures and
# lockouts are still logged.
AXES_VERBOSE = False

# --- Secrets at rest ----------------------------------------------------------------
# Fernet keys (urlsafe base64, 32 bytes) that encrypt channel API keys. The first one
# encrypts; all of them decrypt, so a new key can be put in front of old ones and
# `manage.py rotate_channel_keys` re-encrypts. Empty: a key derived from SECRET_KEY.
CHANNEL_KEY_ENCRYPTION_KEYS = env.list("CHANNEL_KEY_ENCRYPTION_KEYS", default=[])

# --- Relay --------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
# How many upstream attempts one request may make before giving up.
RELAY_MAX_ATTEMPTS = env.int("RELAY_MAX_ATTEMPTS", default=3)
# Largest request body accepted on /v1, in bytes.
RELAY_MAX_BODY_BYTES = env.int("RELAY_MAX_BODY_BYTES", default=10 * 1024 * 1024)
# Completion tokens assumed for the hold when the request gives no max_tokens.
RELAY_DEFAULT_MAX_TOKENS = env.int("RELAY_DEFAULT_MAX_TOKENS", default=4096)
# Largest non-stream upstream answer read into memory; a larger one is a channel failure.
RELAY_MAX_RESPONSE_BYTES = env.int("RELAY_MAX_RESPONSE_BYTES", default=32 * 1024 * 1024)
# Where a settle the database refused is kept until it lands, without REDIS_URL (billing.spool).
SETTLE_SPOOL_DIR = env("SETTLE_SPOOL_DIR", default=str(BASE_DIR / "var" / "settle-spool"))
# Longest a stream may run, in seconds: then it ends with an error event (and is billed).
RELAY_MAX_STREAM_SECONDS = env.float("RELAY_MAX_STREAM_SECONDS", default=3600.0)
# Whether responses name the serving channel in x-airouter-channel.
RELAY_EXPOSE_CHANNEL = env.bool("RELAY_EXPOSE_CHANNEL", default=True)
# Browser clients: the origins (https://app.example.com) whose pages may call /v1 with a key
# (Access-Control-* headers, preflights answered without one). Empty (the default): none.
# Credentials are never allowed: a key travels in a header, not a cookie.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/v1(/.*)?$"
CORS_ALLOW_HEADERS = [
    "authorization",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "content-type",
    # What the official JavaScript SDKs send from a browser (dangerouslyAllowBrowser).
    "anthropic-dangerous-direct-browser-access",
    *(
        f"x-stainless-{name}"
        for name in (
            "arch",
            "lang",
            "os",
            "package-version",
            "runtime",
            "runtime-version",
            "retry-count",
            "timeout",
            "read-timeout",
            "helper-method",
        )
    ),
]
CORS_EXPOSE_HEADERS = [
    "x-request-id",
    "request-id",
    *(
        f"x-ratelimit-{what}-{kind}"
        for what in ("limit", "remaining", "reset")
        for kind in ("requests", "tokens")
    ),
    "x-airouter-group",
    "x-airouter-channel",
    "retry-after",
    "x-should-retry",
]
CORS_PREFLIGHT_MAX_AGE = 600
# Reverse proxies (IPs or CIDRs) trusted to name the client in X-Forwarded-For, for token IP
# allowlists. Empty: the client is whoever connects (REMOTE_ADDR).
RELAY_TRUSTED_PROXIES = [p.strip() for p in env.list("RELAY_TRUSTED_PROXIES", default=[])]
for _proxy in RELAY_TRUSTED_PROXIES:  # a typo stops the start, not every request
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"RELAY_TRUSTED_PROXIES: {_exc}") from None
# Circuit breakers (channels_app.breaker): consecutive failures that take a channel out of
# routing (0: breakers off), for how long (seconds, doubled at each re-open), and the longest.
CHANNEL_FAILURE_THRESHOLD = env.int("CHANNEL_FAILURE_THRESHOLD", default=3)
CHANNEL_COOLDOWN_SECONDS = env.float("CHANNEL_COOLDOWN_SECONDS", default=30.0)
CHANNEL_COOLDOWN_MAX_SECONDS = env.float("CHANNEL_COOLDOWN_MAX_SECONDS", default=600.0)
# Seconds a process may serve a stale routing table before re-reading it.
ROUTING_CACHE_TTL = env.float("ROUTING_CACHE_TTL", default=5.0)
# Optional: with Redis, routing changes reach every instance at once.
REDIS_URL = env("REDIS_URL", default="")

# --- Observability (README: Observability) ----------------------------------------------
# Empty: /metrics is open to whoever reaches it. Set: it needs `Authorization: Bearer <this>`.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# "text" (default) or "json": every log line one JSON object (airouter.log_format).
LOG_FORMAT = env("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")

# --- Logging ------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "airouter.log_format.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # Every 4xx the relay answers is the client's own business, not a warning for ops.
    "loggers": {"django.request": {"level": "ERROR"}},
}
