"""LOG_FORMAT=json: every log line the process writes through Django's logging is one JSON
object (for log pipelines that index fields). settings.LOGGING picks this formatter.

A line carries time (UTC, ISO 8601), level, logger and message; a record logged with
`extra={"fields": {...}}` (the relay's per-request line: airouter.observability) carries those
fields at the top level too, and an exception its traceback under "exception". Python's
warnings are logged (logger "py.warnings") rather than printed.
"""

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Python's warnings (WhiteNoise's missing static directory...) go through logging
        # too, so that they are JSON lines as well, not bare text on stderr.
        logging.captureWarnings(True)

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for name, value in fields.items():
                line.setdefault(name, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a Decimal, a UUID or a lazy string in a field is written as its text.
        return json.dumps(line, ensure_ascii=False, default=str)
