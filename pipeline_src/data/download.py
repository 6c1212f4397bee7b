"""Fetch raw files: mirrors first, then upstream URLs; sha256-verified and atomic.

For every file of a registry entry we try, in order:

1. each mirror directory (``$MASKBENCH_DATA_MIRRORS`` entries first, then config ``data.mirrors``)
   at ``<mirror>/<mirror_path>``;
2. each upstream URL of the entry (``https``; ``http`` only to a loopback host, for tests;
   ``file``), with a timeout, a retry and a size cap.

The bytes are copied into a temporary file beside the destination while their sha256 is
computed; the file is renamed into place only when the hash matches. Line endings: ``sha256``
is the hash of the exact bytes of the reference copy. Text files whose reference copy has CRLF
line endings also carry ``sha256_lf``, the hash of the same text with CRLF turned into LF; a copy
matching either is accepted and kept byte for byte as received (readers accept both endings).
A failure raises :class:`DownloadError` listing every place tried and why each failed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

CHUNK = 1 << 20
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_MAX_BYTES = 4 << 30


class DownloadError(RuntimeError):
    """No source gave a verified copy of a file; the message lists every attempt."""


@dataclass
class Attempt:
    source: str
    reason: str


def mirror_dirs(config_mirrors: Iterable[str | Path] = (), env: dict[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    from_env = [p for p in env.get("MASKBENCH_DATA_MIRRORS", "").split(":") if p]
    return [Path(p) for p in [*from_env, *config_mirrors]]


def _check_url(url: str) -> None:
    u = urllib.parse.urlparse(url)
    if u.scheme == "https" or u.scheme == "file":
        return
    if u.scheme == "http" and u.hostname in LOOPBACK:
        return
    raise ValueError(f"refusing URL scheme {u.scheme!r} (only https, file, and http to a loopback host)")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL that :func:`_check_url` accepts (no https -> http)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        try:
            _check_url(newurl)
        except ValueError as e:
            raise urllib.error.URLError(f"redirect to {newurl} refused: {e}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)


def _copy_verified(src, dest: Path, f: dict[str, Any], max_bytes: int) -> str:
    """Stream ``src`` (a binary file object) into a temp file beside ``dest``; verify; rename.

    Returns the matched hash kind ('sha256' or 'sha256_lf'); raises ValueError on mismatch.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ValueError(f"larger than the cap of {max_bytes} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        matched = None
        if got == f["sha256"]:
            matched = "sha256"
        elif f.get("sha256_lf"):
            data = Path(tmp).read_bytes().replace(b"\r\n", b"\n")
            if hashlib.sha256(data).hexdigest() == f["sha256_lf"]:
                matched = "sha256_lf"
        if matched is None:
            raise ValueError(f"sha256 mismatch: got {got}, expected {f['sha256']}")
        os.replace(tmp, dest)
        return matched
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_file(
    f: dict[str, Any],
    dest: Path,
    mirrors: Iterable[Path],
    timeout: float = 60.0,
    retries: int = 1,
    max_bytes: int = DEFAULT_MAX_BYTES,
    log=print,
) -> str:
    """Place a verified copy of registry file ``f`` at ``dest``; return where it came from."""
    attempts: list[Attempt] = []
    for m in mirrors:
        path = Path(m) / f["mirror_path"]
        if not path.is_file():
            attempts.append(Attempt(str(path), "not found"))
            continue
        try:
            with open(path, "rb") as src:
                kind = _copy_verified(src, dest, f, max_bytes)
            log(f"{dest.name}: from mirror {path} ({kind} ok)")
            return str(path)
        except (OSError, ValueError) as e:
            attempts.append(Attempt(str(path), str(e)))
    for url in f.get("urls", []):
        try:
            _check_url(url)
        except ValueError as e:
            attempts.append(Attempt(url, str(e)))
            continue
        for i in range(retries + 1):
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "maskbench"})
                with _OPENER.open(req, timeout=timeout) as src:
                    kind = _copy_verified(src, dest, f, max_bytes)
                log(f"{dest.name}: from {url} ({kind} ok)")
                return url
            except ValueError as e:  # checksum or size: retrying the same URL will not help
                attempts.append(Attempt(url, str(e)))
                break
            except (OSError, urllib.error.URLError) as e:
                attempts.append(Attempt(f"{url} (try {i + 1}/{retries + 1})", f"{type(e).__name__}: {e}"))
                if i < retries:
                    time.sleep(min(2.0 * (i + 1), 10.0))
    lines = "\n".join(f"  - {a.source}: {a.reason}" for a in attempts) or "  (no mirror and no URL configured)"
    raise DownloadError(f"could not get a verified copy of {f['name']} (sha256 {f['sha256'][:12]}…); tried:\n{lines}")


def fetch_dataset(
    name: str,
    entry: dict[str, Any],
    out_dir: Path,
    mirrors: Iterable[Path],
    timeout: float = 60.0,
    retries: int = 1,
    log=print,
) -> list[Path]:
    out_dir = Path(out_dir)
    mirrors = list(mirrors)
    names = [f["name"] for f in entry["files"]]
    for n in names:
        if n in (".", "..") or "/" in n or "\\" in n or n.startswith(".") or not n:
            raise DownloadError(f"dataset {name!r}: file name {n!r} is not a plain file name")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DownloadError(f"dataset {name!r}: file name(s) {dups} appear more than once in the registry entry")
    paths = []
    for f in entry["files"]:
        dest = out_dir / f["name"]
        fetch_file(f, dest, mirrors, timeout=timeout, retries=retries, log=log)
        paths.append(dest)
    return paths

