"""CHAP for iSCSI login (RFC 1994 with the RFC 7143 section 12.1.3 keys), MD5 only.

The target challenges the initiator (CHAP_A / CHAP_I / CHAP_C, answered by CHAP_N / CHAP_R).
With mutual CHAP the initiator sends its own CHAP_I / CHAP_C alongside the answer, and the
target answers with its own name and response. RFC 7143 requires refusing an initiator
challenge equal to the one the target sent (a reflection attack), and binary values may come
in hex (``0x``) or base64 (``0b``) form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

CHAP_MD5 = 5
CHALLENGE_LEN = 16
MAX_BINARY_LEN = 1024  # challenges/responses longer than this are refused


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    user: str
    secret: str


class ChapError(Exception):
    """Authentication failed (the login gets status 0x0201)."""


def response(identifier: int, secret: str | bytes, challenge: bytes) -> bytes:
    """RFC 1994: MD5 over the one-octet identifier, the secret and the challenge."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hashlib.md5(bytes([identifier & 0xFF]) + key + challenge).digest()


def encode_binary(value: bytes) -> str:
    return "0x" + value.hex()


def decode_binary(text: str) -> bytes:
    """A CHAP binary value in ``0x`` hex or ``0b`` base64 form (ChapError if malformed)."""
    if len(text) < 3 or text[0] != "0" or text[1] not in "xXbB":
        raise ChapError(f"malformed CHAP binary value {text[:20]!r}")
    body = text[2:]
    try:
        if text[1] in "xX":
            if len(body) % 2:
                body = "0" + body
            value = bytes.fromhex(body)
        else:
            value = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ChapError("malformed CHAP binary value") from exc
    if not value or len(value) > MAX_BINARY_LEN:
        raise ChapError("CHAP binary value of bad length")
    return value


class ChapExchange:
    """The target side of one CHAP exchange during one login."""

    def __init__(self, credentials: ChapCredentials, mutual: ChapCredentials | None) -> None:
        self.credentials = credentials
        self.mutual = mutual
        self.identifier = secrets.randbelow(256)
        self.challenge = secrets.token_bytes(CHALLENGE_LEN)

    def select_algorithm(self, offered: str) -> dict[str, str]:
        """Answer CHAP_A: pick MD5 and send our challenge."""
        algorithms = [a.strip() for a in offered.split(",")]
        if str(CHAP_MD5) not in algorithms:
            raise ChapError(f"no supported CHAP algorithm in {offered!r}")
        return {
            "CHAP_A": str(CHAP_MD5),
            "CHAP_I": str(self.identifier),
            "CHAP_C": encode_binary(self.challenge),
        }

    def verify(self, keys: dict[str, str]) -> dict[str, str]:
        """Check CHAP_N / CHAP_R; answer a mutual challenge. Returns the keys to send back."""
        name = keys.get("CHAP_N")
        answer = keys.get("CHAP_R")
        if name is None or answer is None:
            raise ChapError("CHAP_N and CHAP_R are required")
        expected = response(self.identifier, self.credentials.secret, self.challenge)
        got = decode_binary(answer)
        # Compare both before deciding, so timing does not tell which one was wrong.
        name_ok = hmac.compare_digest(name.encode(), self.credentials.user.encode())
        resp_ok = hmac.compare_digest(got, expected)
        if not (name_ok and resp_ok):
            raise ChapError("CHAP authentication failed")
        reply: dict[str, str] = {}
        if "CHAP_I" in keys or "CHAP_C" in keys:
            if self.mutual is None:
                raise ChapError("mutual CHAP requested but the target has no mutual credentials")
            try:
                ident = int(keys["CHAP_I"], 0)
            except (KeyError, ValueError) as exc:
                raise ChapError("bad CHAP_I") from exc
            if not 0 <= ident <= 255:
                raise ChapError("bad CHAP_I")
            challenge = decode_binary(keys.get("CHAP_C", ""))
            if challenge == self.challenge:
                raise ChapError("initiator reflected the target's CHAP challenge")
            reply["CHAP_N"] = self.mutual.user
            reply["CHAP_R"] = encode_binary(response(ident, self.mutual.secret, challenge))
        return reply
