"""Files that are not trusted: archives, checkpoints, downloads and config files."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from pipeline_src.config import ConfigError, load_config, load_registry
from pipeline_src.data import readers
from pipeline_src.data.archives import ArchiveError, extract, extract_tar, extract_zip
from pipeline_src.data.download import DownloadError, fetch_file
from pipeline_src.train.checkpoint import (DIGEST_KEY, CheckpointCorrupt, CheckpointMismatch, atomic_save,
                                           load_checkpoint, load_verified, save_checkpoint)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------ archives

def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_zip_and_tar_extract_inside_the_target(tmp_path):
    z = make_zip(tmp_path / "a.zip", {"x.csv": b"a,b\n", "sub/y.txt": b"y"})
    files = extract(z, tmp_path / "out")
    assert sorted(p.name for p in files) == ["x.csv", "y.txt"]
    assert (tmp_path / "out" / "sub" / "y.txt").read_bytes() == b"y"
    t = make_tar(tmp_path / "a.tar.gz", [("d/x.csv", b"1"), ("./d/z", b"22")])
    extract(t, tmp_path / "out2")
    assert (tmp_path / "out2" / "d" / "z").read_bytes() == b"22"
    assert listing(tmp_path) == sorted(["a.zip", "a.tar.gz", "out", "out/x.csv", "out/sub", "out/sub/y.txt",
                                        "out2", "out2/d", "out2/d/x.csv", "out2/d/z"])


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt", "C:/evil.txt"])
def test_member_escaping_the_target_is_refused_and_named(tmp_path, name):
    z = make_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(ArchiveError, match="member") as e:
        extract_zip(z, tmp_path / "out")
    assert repr(name) in str(e.value) and str(z) in str(e.value)
    t = make_tar(tmp_path / "bad.tar.gz", [("ok.txt", b"fine"), (name, b"evil")])
    with pytest.raises(ArchiveError) as e:
        extract_tar(t, tmp_path / "out")
    assert repr(name) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "bad.zip"]  # nothing extracted
    assert not (tmp_path.parent / "evil.txt").exists()


def test_links_are_refused(tmp_path):
    z = make_zip(tmp_path / "l.zip", {"a": b"1"}, symlinks={"link": "/etc/passwd"})
    with pytest.raises(ArchiveError, match="'link'.*symbolic link"):
        extract_zip(z, tmp_path / "out")
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info = tarfile.TarInfo("link")
        info.type = kind
        info.linkname = "../../outside"
        t = make_tar(tmp_path / f"l{kind!r}.tar.gz", [("a", b"1"), info])
        with pytest.raises(ArchiveError, match="'link'.*link to '../../outside'"):
            extract_tar(t, tmp_path / "out")
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(ArchiveError, match="'dev'.*not a regular file"):
        extract_tar(make_tar(tmp_path / "dev.tar.gz", [dev]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_bombs_are_refused_by_size_and_member_count(tmp_path):
    z = make_zip(tmp_path / "big.zip", {"zeros": b"\0" * 2_000_000})
    assert z.stat().st_size < 20_000
    with pytest.raises(ArchiveError, match="'zeros'.*exceeds the cap"):
        extract_zip(z, tmp_path / "out", max_bytes=1_000_000)
    many = make_zip(tmp_path / "many.zip", {f"f{i}": b"" for i in range(50)})
    with pytest.raises(ArchiveError, match="50 members, more than the limit of 10"):
        extract_zip(many, tmp_path / "out", max_members=10)
    t = make_tar(tmp_path / "big.tar.gz", [("a", b"\0" * 600_000), ("b", b"\0" * 600_000)])
    with pytest.raises(ArchiveError, match="'b'.*exceeds the cap"):
        extract_tar(t, tmp_path / "out", max_bytes=1_000_000)
    with pytest.raises(ArchiveError, match="more than the limit of 1 members"):
        extract_tar(t, tmp_path / "out", max_members=1)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_zip_member_lying_about_its_size_is_stopped(tmp_path):
    z = make_zip(tmp_path / "lie.zip", {"zeros": b"\0" * 3_000_000})
    data = bytearray(z.read_bytes())
    # patch the declared uncompressed size (local header and central directory) to 1000 bytes
    real = (3_000_000).to_bytes(4, "little")
    assert data.count(real) == 2
    data = data.replace(real, (1000).to_bytes(4, "little"))
    z.write_bytes(bytes(data))
    with pytest.raises(ArchiveError):
        extract_zip(z, tmp_path / "out", max_bytes=100_000)
    assert not (tmp_path / "out").exists()


def test_extraction_is_atomic_and_replaces_the_old_folder(tmp_path):
    out = tmp_path / "out"
    extract_zip(make_zip(tmp_path / "v1.zip", {"a": b"1", "b": b"1"}), out)
    bad = make_zip(tmp_path / "v2.zip", {"a": b"2", "../x": b"2"})
    with pytest.raises(ArchiveError):
        extract_zip(bad, out)
    assert listing(out) == ["a", "b"] and (out / "a").read_bytes() == b"1"  # untouched
    extract_zip(make_zip(tmp_path / "v3.zip", {"c": b"3"}), out)
    assert listing(out) == ["c"]
    trunc = tmp_path / "t.tar.gz"
    make_tar(trunc, [("a", os.urandom(200_000))])
    trunc.write_bytes(trunc.read_bytes()[:50_000])
    with pytest.raises(ArchiveError, match="t.tar.gz"):
        extract_tar(trunc, out)
    assert listing(out) == ["c"]
    with pytest.raises(ArchiveError, match="unknown archive type"):
        extract(tmp_path / "x.rar", out)


def test_lines_zip_reader_caps_the_bytes_it_inflates(tmp_path):
    z = make_zip(tmp_path / "c.zip", {"chembl.txt": b"CCO\n" * 100_000})
    assert len(readers.read_lines_zip(z)) == 100_000
    with pytest.raises(readers.ReadError, match="chembl.txt.*cap of 1000 bytes"):
        readers.read_lines_zip(z, max_bytes=1000)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(readers.ReadError, match="junk.zip"):
        readers.read_lines_zip(tmp_path / "junk.zip")


# --------------------------------------------------------------------------------- checkpoints

def test_every_torch_load_in_the_package_is_weights_only():
    import re

    for p in (ROOT / "pipeline_src").rglob("*.py"):
        text = p.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{p.relative_to(ROOT)}: {m.group(0)}"


def test_checkpoint_records_content_sha256_and_refuses_a_modified_file(tmp_path):
    path = tmp_path / "model.pt"
    atomic_save({"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "meta": {"method": "sma", "x": [1, 2.5]}}, path)
    blob = load_verified(path)
    assert DIGEST_KEY not in blob and torch.equal(blob["state_dict"]["w"], torch.arange(6.0).reshape(2, 3))
    # tamper: same structure, one weight changed, the old digest kept
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["w"][0, 0] = 99.0
    torch.save(raw, path)
    with pytest.raises(CheckpointCorrupt, match="differs from the .* recorded when it was written"):
        load_verified(path)
    # a file without a recorded digest (not written by this package) is refused too
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {}}, path)
    with pytest.raises(CheckpointCorrupt, match="records no content sha256"):
        load_verified(path)
    assert load_verified(path, require_digest=False)["meta"] == {}
    # truncated or not a checkpoint at all
    atomic_save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointCorrupt, match="cannot be loaded"):
        load_verified(path)


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointCorrupt, match="cannot be loaded as a weights-only checkpoint"):
        load_verified(path)


def test_resume_from_another_method_or_config_names_the_difference(tmp_path):
    path = tmp_path / "last.pt"
    cfg = {"method": "sma", "model_cfg": {"dim": 32, "depth": 2}, "train_cfg": {"lr": 1e-3}, "seed": 0}
    save_checkpoint(path, {"run_hash": "aaa", "method": "sma", "config": cfg, "step": 4})
    assert load_checkpoint(path, "aaa", expected_config=cfg)["step"] == 4
    other = {**cfg, "method": "random", "model_cfg": {"dim": 64, "depth": 2}}
    with pytest.raises(CheckpointMismatch) as e:
        load_checkpoint(path, "bbb", expected_config=other)
    msg = str(e.value)
    assert "written by method 'sma', this run is method 'random'" in msg
    assert "model_cfg.dim: 32 -> 64" in msg and "depth" not in msg
    with pytest.raises(CheckpointMismatch, match="another run"):
        load_checkpoint(path, "bbb")


# ----------------------------------------------------------------------------------- downloads

def _entry(data: bytes, urls) -> dict:
    return {"name": "x.csv", "mirror_path": "x.csv", "sha256": hashlib.sha256(data).hexdigest(), "urls": list(urls)}


@pytest.mark.parametrize("url", ["ftp://example.org/x.csv", "http://example.org/x.csv", "gopher://h/x",
                                 "data:text/plain,abc", "http://10.0.0.1/x.csv"])
def test_only_https_file_and_loopback_http_urls_are_tried(tmp_path, url):
    with pytest.raises(DownloadError, match="refusing URL scheme"):
        fetch_file(_entry(b"x", [url]), tmp_path / "raw" / "x.csv", [], log=lambda *_: None)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_file_url_mirror_is_accepted(tmp_path):
    src = tmp_path / "src.csv"
    src.write_bytes(b"a,b\n")
    dest = tmp_path / "raw" / "x.csv"
    fetch_file(_entry(b"a,b\n", [src.as_uri()]), dest, [], log=lambda *_: None)
    assert dest.read_bytes() == b"a,b\n"


def test_download_times_out_on_a_server_that_never_answers(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])  # accept and never answer
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/x.csv"
        with pytest.raises(DownloadError, match="(?i)timed out"):
            fetch_file(_entry(b"x", [url]), tmp_path / "raw" / "x.csv", [], timeout=0.5, retries=0,
                       log=lambda *_: None)
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()
    assert not any(p.name.endswith(".part") for p in tmp_path.rglob("*"))


def test_size_cap_applies_to_urls(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(b"\0" * 5000)
    with pytest.raises(DownloadError, match="larger than the cap of 1000 bytes"):
        fetch_file(_entry(b"\0" * 5000, [src.as_uri()]), tmp_path / "raw" / "big.bin", [], max_bytes=1000,
                   log=lambda *_: None)
    assert not any((tmp_path / "raw").iterdir())


# ------------------------------------------------------------------------------ config/registry

def _write(tmp_path: Path, name: str, data) -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_config_files_are_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    evil = _write(tmp_path, "evil.yaml", f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)
    with pytest.raises(ConfigError):
        load_registry(evil)
    assert not marker.exists()


def test_use_yte_key_is_refused_in_config_and_registry(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/ci.yaml").read_text())
    cfg["__use_yte__"] = True
    cfg["seeds"] = "?range(3)"
    p = _write(tmp_path, "c.yaml", cfg)
    with pytest.raises(ConfigError, match="__use_yte__"):
        load_config(p)
    reg = yaml.safe_load((ROOT / "tests/fixtures/datasets.yaml").read_text())
    reg["__use_yte__"] = True
    with pytest.raises(ConfigError, match="__use_yte__"):
        load_registry(_write(tmp_path, "r.yaml", reg))
    # also as an override file
    base = _write(tmp_path, "base.yaml", yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    with pytest.raises(ConfigError, match="__use_yte__"):
        load_config(base, [_write(tmp_path, "o.yaml", {"__use_yte__": False})])


def test_redirect_to_a_refused_scheme_is_not_followed(tmp_path):
    import http.server

    hits = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/x.csv")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/x.csv"
        with pytest.raises(DownloadError, match="redirect to http://example.invalid/x.csv refused"):
            fetch_file(_entry(b"x", [url]), tmp_path / "raw" / "x.csv", [], timeout=5, retries=0,
                       log=lambda *_: None)
    finally:
        srv.shutdown()
        srv.server_close()
    assert hits == ["/x.csv"]


def test_registry_file_names_must_be_plain_and_unique(tmp_path):
    from pipeline_src.data.download import fetch_dataset
    from pipeline_src.data.prepare import PrepareError, prepare_dataset

    f = _entry(b"x", [])
    for bad in ("..", ".hidden", "a\\b"):
        with pytest.raises(DownloadError, match="not a plain file name"):
            fetch_dataset("toy", {"files": [{**f, "name": bad}]}, tmp_path / "raw", [], log=lambda *_: None)
    with pytest.raises(DownloadError, match="more than once"):
        fetch_dataset("toy", {"files": [f, f]}, tmp_path / "raw", [], log=lambda *_: None)
    entry = {"role": "task", "format": "csv", "task": "regression", "labels": ["y"],
             "input": {"column": "s", "kind": "smiles"}, "files": [{"name": "a.csv"}, {"name": "a.csv"}]}
    with pytest.raises(PrepareError, match="more than once"):
        prepare_dataset("toy", entry, tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "raw").exists()


def test_conflicting_and_duplicate_members_are_refused(tmp_path):
    z = make_zip(tmp_path / "c.zip", {"a": b"1", "a/b": b"2"})
    with pytest.raises(ArchiveError, match="member 'a/b'"):
        extract_zip(z, tmp_path / "out")
    t = make_tar(tmp_path / "d.tar.gz", [("x", b"1"), ("./x", b"2")])
    with pytest.raises(ArchiveError, match="member './x'.*duplicate"):
        extract_tar(t, tmp_path / "out")
    t = make_tar(tmp_path / "e.tar.gz", [("x", b"1"), ("x/y", b"2")])
    with pytest.raises(ArchiveError, match="member 'x/y'"):
        extract_tar(t, tmp_path / "out")
    assert not (tmp_path / "out").exists()
