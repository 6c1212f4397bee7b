"""Extracting archives that come from elsewhere: zip and tar.gz, inside their target folder only.

Every member is checked before a byte is written:

* its path must stay inside the target folder: absolute paths, drive letters, ``..`` components
  and backslash tricks are refused;
* symbolic and hard links, device files and FIFOs are refused (a link could point outside the
  folder, or make a later member write through it);
* the number of members and the total uncompressed size are capped (archive bombs); for zip the
  bytes actually inflated are counted too, so a member that lies about its size is stopped.

Extraction is atomic: members go to a staging folder beside the target, which is renamed into
place only when every member is written; on any error the target is left as it was (or absent)
and :class:`ArchiveError` names the archive and the offending member.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

DEFAULT_MAX_BYTES = 8 << 30      # total uncompressed bytes
DEFAULT_MAX_MEMBERS = 100_000
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive is malformed, unsafe or too large; the message names the archive and member."""


def _safe_relpath(archive: Path, name: str) -> PurePosixPath:
    """The member path as a relative path that stays inside the target, or ArchiveError."""
    if "\x00" in name:
        raise ArchiveError(f"{archive}: member {name!r}: NUL byte in the name")
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or p.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r}: absolute path, refusing to extract outside the target")
    parts = [x for x in p.parts if x not in ("", ".")]
    if any(x == ".." for x in parts):
        raise ArchiveError(f"{archive}: member {name!r}: path escapes the target folder ('..')")
    if not parts:
        raise ArchiveError(f"{archive}: member {name!r}: empty path")
    return PurePosixPath(*parts)


def _copy_capped(src: BinaryIO, dst: BinaryIO, archive: Path, name: str, budget: int) -> int:
    """Copy at most ``budget`` bytes; more raises ArchiveError. Returns the bytes copied."""
    n = 0
    while chunk := src.read(CHUNK):
        n += len(chunk)
        if n > budget:
            raise ArchiveError(f"{archive}: member {name!r}: uncompressed size exceeds the cap "
                               f"(total limit reached while extracting)")
        dst.write(chunk)
    return n


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:*")
    except FileNotFoundError:
        raise ArchiveError(f"{archive}: file not found") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(f"{archive}: not a (compressed) tar file: {e}") from None


def _stage_for(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.extract-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    return stage


def _commit(stage: Path, target: Path) -> None:
    """Rename the finished staging folder to ``target`` (an existing one is swapped out)."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(stage, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _zip_members(archive: Path, zf: zipfile.ZipFile, max_members: int, max_bytes: int):
    infos = zf.infolist()
    if len(infos) > max_members:
        raise ArchiveError(f"{archive}: {len(infos)} members, more than the limit of {max_members}")
    declared = 0
    out = []
    for info in infos:
        rel = _safe_relpath(archive, info.filename)
        mode = (info.external_attr >> 16) & 0xFFFF  # unix mode, when the archive was made on unix
        if stat.S_IFMT(mode) and stat.S_ISLNK(mode):
            raise ArchiveError(f"{archive}: member {info.filename!r}: symbolic link, refused")
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise ArchiveError(f"{archive}: member {info.filename!r}: not a regular file or folder, refused")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{archive}: member {info.filename!r}: encrypted, refused")
        declared += info.file_size
        if declared > max_bytes:
            raise ArchiveError(f"{archive}: member {info.filename!r}: total uncompressed size "
                               f"{declared} bytes exceeds the cap of {max_bytes}")
        out.append((info, rel))
    return out


def extract_zip(archive: str | Path, target: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                max_members: int = DEFAULT_MAX_MEMBERS) -> list[Path]:
    """Extract a zip file into ``target`` (created or replaced atomically); return the files."""
    archive, target = Path(archive), Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise ArchiveError(f"{archive}: file not found") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"{archive}: not a zip file: {e}") from None
    with zf:
        members = _zip_members(archive, zf, max_members, max_bytes)
        stage = _stage_for(target)
        written: list[Path] = []
        try:
            budget = max_bytes
            for info, rel in members:
                dest = stage / rel
                try:
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if dest.exists():
                        raise ArchiveError(f"{archive}: member {info.filename!r}: duplicate path")
                    with zf.open(info) as src, open(dest, "xb") as dst:
                        budget -= _copy_capped(src, dst, archive, info.filename, budget)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                    raise ArchiveError(f"{archive}: member {info.filename!r}: cannot extract: {e}") from None
                written.append(target / rel)
            _commit(stage, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return written


def extract_tar(archive: str | Path, target: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                max_members: int = DEFAULT_MAX_MEMBERS) -> list[Path]:
    """Extract a tar (``.tar``, ``.tar.gz``, ``.tgz``) into ``target`` atomically; return the files.

    Only regular files and folders are extracted; links and special files are refused. File
    modes are not taken from the archive (plain 0644 files), nor owners or times.
    """
    archive, target = Path(archive), Path(target)
    tf = _open_tar(archive)
    written: list[Path] = []
    with tf:
        stage = _stage_for(target)
        try:
            count, total = 0, 0
            try:
                for m in tf:  # streaming: members are checked one by one as they are read
                    count += 1
                    if count > max_members:
                        raise ArchiveError(f"{archive}: more than the limit of {max_members} members")
                    rel = _safe_relpath(archive, m.name)
                    if m.issym() or m.islnk():
                        raise ArchiveError(f"{archive}: member {m.name!r}: "
                                           f"{'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}, refused")
                    if m.isdir():
                        try:
                            (stage / rel).mkdir(parents=True, exist_ok=True)
                        except OSError as e:
                            raise ArchiveError(f"{archive}: member {m.name!r}: cannot extract: {e}") from None
                        continue
                    if not m.isfile():
                        raise ArchiveError(f"{archive}: member {m.name!r}: not a regular file or folder, refused")
                    total += m.size
                    if total > max_bytes:
                        raise ArchiveError(f"{archive}: member {m.name!r}: total uncompressed size {total} "
                                           f"bytes exceeds the cap of {max_bytes}")
                    dest = stage / rel
                    try:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        if dest.exists():
                            raise ArchiveError(f"{archive}: member {m.name!r}: duplicate path")
                        src = tf.extractfile(m)
                        if src is None:
                            raise ArchiveError(f"{archive}: member {m.name!r}: cannot be read")
                        with src, open(dest, "xb") as dst:
                            _copy_capped(src, dst, archive, m.name, m.size)
                    except OSError as e:
                        raise ArchiveError(f"{archive}: member {m.name!r}: cannot extract: {e}") from None
                    written.append(target / rel)
            except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise ArchiveError(f"{archive}: damaged or truncated tar: {e}") from None
            _commit(stage, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return written


def extract(archive: str | Path, target: str | Path, **limits) -> list[Path]:
    """Extract ``archive`` by its name: ``.zip``, ``.tar``, ``.tar.gz`` / ``.tgz``."""
    name = Path(archive).name.lower()
    if name.endswith(".zip"):
        return extract_zip(archive, target, **limits)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return extract_tar(archive, target, **limits)
    raise ArchiveError(f"{archive}: unknown archive type (expected .zip, .tar, .tar.gz or .tgz)")


def read_zip_member(archive: str | Path, info: zipfile.ZipInfo, zf: zipfile.ZipFile,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of one zip member, refusing more than ``max_bytes`` (declared or inflated)."""
    archive = Path(archive)
    if info.file_size > max_bytes:
        raise ArchiveError(f"{archive}: member {info.filename!r}: {info.file_size} bytes uncompressed, "
                           f"more than the cap of {max_bytes} bytes")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{archive}: member {info.filename!r}: encrypted, refused")
    parts: list[bytes] = []
    n = 0
    with zf.open(info) as src:
        while chunk := src.read(CHUNK):
            n += len(chunk)
            if n > max_bytes:
                raise ArchiveError(f"{archive}: member {info.filename!r}: inflates past the cap of {max_bytes} bytes")
            parts.append(chunk)
    return b"".join(parts)


def read_tar_member(archive: str | Path, member: str, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_members: int = DEFAULT_MAX_MEMBERS) -> bytes:
    """The bytes of the regular-file member ``member`` of a tar (``.tar``, ``.tar.gz``, ``.tgz``).

    Members are scanned in order with the checks of :func:`extract_tar` (safe path, no links or
    special files, member-count cap); the named member is read with at most ``max_bytes``. A
    missing member raises :class:`ArchiveError` listing the archive's files.
    """
    archive = Path(archive)
    want = _safe_relpath(archive, member)
    seen: list[str] = []
    tf = _open_tar(archive)
    with tf:
        try:
            for count, m in enumerate(tf, start=1):
                if count > max_members:
                    raise ArchiveError(f"{archive}: more than the limit of {max_members} members")
                rel = _safe_relpath(archive, m.name)
                if rel != want:
                    if m.isfile():
                        seen.append(m.name)
                    continue
                if m.issym() or m.islnk():
                    raise ArchiveError(f"{archive}: member {m.name!r}: "
                                       f"{'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}, refused")
                if not m.isfile():
                    raise ArchiveError(f"{archive}: member {m.name!r}: not a regular file, refused")
                if m.size > max_bytes:
                    raise ArchiveError(f"{archive}: member {m.name!r}: {m.size} bytes uncompressed, "
                                       f"more than the cap of {max_bytes} bytes")
                src = tf.extractfile(m)
                if src is None:
                    raise ArchiveError(f"{archive}: member {m.name!r}: cannot be read")
                with src:
                    data = src.read(m.size + 1)
                if len(data) != m.size:
                    raise ArchiveError(f"{archive}: member {m.name!r}: truncated ({len(data)} of {m.size} bytes)")
                return data
        except (tarfile.TarError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ArchiveError(f"{archive}: damaged or truncated tar: {e}") from None
    raise ArchiveError(f"{archive}: no member {member!r}; the archive holds {seen[:20]}"
                       + (" ..." if len(seen) > 20 else ""))


def list_members(archive: str | Path, max_members: int = DEFAULT_MAX_MEMBERS) -> list[str]:
    """The regular-file members of a zip or tar archive (names as stored), checked like extraction."""
    archive = Path(archive)
    name = archive.name.lower()
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(archive) as zf:
                return [i.filename for i, _ in _zip_members(archive, zf, max_members, 1 << 62) if not i.is_dir()]
        except FileNotFoundError:
            raise ArchiveError(f"{archive}: file not found") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise ArchiveError(f"{archive}: not a zip file: {e}") from None
    out: list[str] = []
    try:
        with tarfile.open(archive, mode="r:*") as tf:
            for count, m in enumerate(tf, start=1):
                if count > max_members:
                    raise ArchiveError(f"{archive}: more than the limit of {max_members} members")
                _safe_relpath(archive, m.name)
                if m.isfile():
                    out.append(m.name)
    except FileNotFoundError:
        raise ArchiveError(f"{archive}: file not found") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArchiveError(f"{archive}: not a (compressed) tar file: {e}") from None
    return out
