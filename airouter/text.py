"""Text from outside (upstream messages, client-chosen names) made safe to store."""


def storable(text: str) -> str:
    """Without NUL characters (PostgreSQL text refuses them) and lone surrogates (not UTF-8):
    a message an upstream echoes back must never make a record impossible to write."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text
