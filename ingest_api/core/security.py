"""Passwords (argon2id) and access tokens (HS256 JWTs whose `sub` is the customer id)."""

from __future__ import annotations

import time
import uuid

import anyio
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ALGORITHM = "HS256"

# argon2-cffi's defaults are the RFC 9106 "low memory" profile of argon2id.
_hasher = PasswordHasher()
# Verified against when the username does not exist, so that a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """Blocking (tens of ms of CPU, GIL released): call it in a worker thread."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Blocking, like hash_password. A missing hash still costs one verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class Passwords:
    """hash_password and verify_password for the event loop: in worker threads, a few at a time, as each
    takes tens of ms of CPU and memory."""

    def __init__(self, at_once: int = 2):
        self._limiter = anyio.CapacityLimiter(at_once)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(hash_password, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await anyio.to_thread.run_sync(verify_password, password_hash, password, limiter=self._limiter)


class InvalidToken(Exception):
    pass


class TokenCodec:
    """Issues and checks access tokens offline: no database read per request.

    Checking a JWT with PyJWT costs ~70 µs of pure Python per call, the biggest item on the purchase hot
    path, and clients send the same token many times. So a token that verified once is remembered
    (bounded) until it expires: the same bytes were signed by us, and expiry is checked on every use.
    """

    def __init__(self, secret: str, ttl_seconds: int, cache_size: int = 10_000):
        if not secret:
            raise RuntimeError("JWT_SECRET is empty: set it in the environment (`make up` generates one)")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, tuple[uuid.UUID, float]] = {}
        self._cache_size = cache_size

    def issue(self, customer_id: uuid.UUID) -> str:
        now = int(time.time())
        claims = {"sub": str(customer_id), "iat": now, "exp": now + self.ttl_seconds}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def customer_of(self, token: str) -> uuid.UUID:
        """The customer a token was issued to; raises InvalidToken if forged, tampered or expired."""
        known = self._verified.get(token)
        if known is not None:
            customer_id, expires_at = known
            if time.time() < expires_at:
                return customer_id
            del self._verified[token]
            raise InvalidToken("the token has expired")
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat"]})
            customer_id = uuid.UUID(claims["sub"])
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, AttributeError):
            raise InvalidToken("the token is not valid") from None
        if len(self._verified) >= self._cache_size:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = (customer_id, float(claims["exp"]))
        return customer_id
