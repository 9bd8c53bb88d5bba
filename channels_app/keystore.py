"""Channel API keys at rest: Fernet encryption with rotatable keys.

CHANNEL_KEY_ENCRYPTION_KEYS lists Fernet keys, newest first. The first encrypts, every one
decrypts, so an operator adds a new key in front, runs `rotate_channel_keys`, then drops the
old one. Without the setting a key derived from SECRET_KEY is used (fine for development).
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class KeyStoreError(Exception):
    pass


@cache
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        derived = hashlib.sha256(b"airouter-channel-keys:" + secret_key.encode()).digest()
        keys = (base64.urlsafe_b64encode(derived).decode(),)
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CHANNEL_KEY_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise KeyStoreError(
            "A channel key cannot be decrypted with CHANNEL_KEY_ENCRYPTION_KEYS."
        ) from exc


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the newest key."""
    try:
        return fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise KeyStoreError(
            "A channel key cannot be decrypted with CHANNEL_KEY_ENCRYPTION_KEYS."
        ) from exc
