"""The development SECRET_KEY: random, made on first use, kept in a file beside the code."""

import os
import secrets
from pathlib import Path


def local_secret_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Written whole to a file of its own, then linked into place: of two processes starting
    # at once, one link wins and both read a complete key.
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    draft.write_text(secrets.token_urlsafe(50))
    draft.chmod(0o600)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()
