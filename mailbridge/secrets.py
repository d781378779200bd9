"""Credential encryption at rest (Fernet; MultiFernet during a key rotation).

Only ciphertext is stored.  `Cipher.decrypt` is called by the code that logs in, right
before LOGIN; the plain password is never logged or returned by the API.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailbridge.errors import SecretError


class Cipher:
    """Encrypts with the newest key; decrypts with any configured key."""

    def __init__(self, keys: tuple[str, ...] | list[str]) -> None:
        if not keys:
            raise SecretError("no encryption key configured")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, plaintext: str) -> bytes:
        """Ciphertext of `plaintext` under the newest key."""
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        """The plaintext; SecretError when no configured key opens it."""
        try:
            return self._fernet.decrypt(bytes(token)).decode("utf-8")
        except InvalidToken:
            raise SecretError(
                "a stored password cannot be decrypted with MAILBRIDGE_ENCRYPTION_KEY: "
                "the key changed; put the old key after the new one (comma-separated) "
                "and run `mailbridge keys rotate`"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt `token` under the newest key (same plaintext)."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken:
            raise SecretError("a stored password cannot be decrypted with any configured key") from None


def generate_key() -> str:
    """A new Fernet key (44 characters of URL-safe base64)."""
    return Fernet.generate_key().decode()
