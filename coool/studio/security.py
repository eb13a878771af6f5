"""Safe by default: loopback binding, a per-install secret, CSRF tokens, confined file paths."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path

SECRET_BYTES = 32
COOKIE = "coool_studio"  # the browser session id; CSRF tokens are derived from it


def load_or_create_secret(path: Path) -> bytes:
    """The install's secret, created once with mode 0600 (O_EXCL: two starting servers agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(SECRET_BYTES))
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    # Tighten a copied/loosened file rather than fail: the secret must not be world-readable.
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    for _ in range(50):  # another process may be between create and write
        text = path.read_text(encoding="ascii").strip()
        if text:
            return bytes.fromhex(text)
        time.sleep(0.02)
    raise RuntimeError(f"{path}: empty studio secret")


def new_session_id() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, session_id: str) -> str:
    """The token every POST of this browser session must carry (HMAC of the session id)."""
    return hmac.new(secret, b"csrf:" + session_id.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, session_id: str | None, token: str | None) -> bool:
    if not session_id or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, session_id), token)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str, allow_remote: bool = False) -> None:
    """Refuse a non-loopback bind address unless explicitly allowed (votes and files would be exposed)."""
    if not allow_remote and not is_loopback(host):
        raise ValueError(
            f"refusing to bind the studio to {host!r}: it serves your results without authentication; "
            "use a loopback address (127.0.0.1) or pass allow_remote=True"
        )


def host_name(header: str) -> str:
    """The host part of a Host header: 'localhost:8765' -> 'localhost', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str, extra: Iterable[str] = ()) -> bool:
    """A loopback Host header (or one listed): what DNS-rebinding attacks can't send."""
    name = host_name(header)
    return is_loopback(name) or name in {h.lower() for h in extra}


def confined(root: Path, relative: str) -> Path | None:
    """The existing regular file ``root/relative`` after resolving symlinks, if it stays under root.

    None for anything else: '..' escapes, absolute paths, symlinks leading out,
    hidden components (.prefect, dotfiles), NUL bytes, folders, missing files.
    """
    if not relative or "\0" in relative or "\\" in relative:
        return None
    parts = Path(relative).parts
    if Path(relative).is_absolute() or any(p == ".." or p.startswith(".") for p in parts):
        return None
    try:
        base = root.resolve(strict=True)
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target
