import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from pipeline_src.data.download import DownloadError, fetch_dataset, fetch_file, mirror_dirs

CRLF_TEXT = b"smiles,label\r\nCCO,1\r\nc1ccccc1,0\r\n"


def entry_for(data: bytes, name="x.csv", mirror_path="chem/x.csv", urls=(), lf=True):
    f = {"name": name, "mirror_path": mirror_path, "sha256": hashlib.sha256(data).hexdigest(), "urls": list(urls)}
    if lf and b"\r\n" in data:
        f["sha256_lf"] = hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()
    return f


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def no_temp_files(d: Path) -> bool:
    return not any(p.name.endswith(".part") for p in d.rglob("*")) if d.exists() else True


def test_from_mirror_verifies_and_copies(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "chem").mkdir(parents=True)
    (mirror / "chem" / "x.csv").write_bytes(CRLF_TEXT)
    dest = tmp_path / "raw" / "x.csv"
    src = fetch_file(entry_for(CRLF_TEXT), dest, [tmp_path / "empty", mirror], log=lambda *_: None)
    assert src == str(mirror / "chem" / "x.csv")
    assert dest.read_bytes() == CRLF_TEXT


def test_lf_copy_of_crlf_reference_is_accepted_as_is(tmp_path):
    mirror = tmp_path / "m"
    (mirror / "chem").mkdir(parents=True)
    lf = CRLF_TEXT.replace(b"\r\n", b"\n")
    (mirror / "chem" / "x.csv").write_bytes(lf)
    dest = tmp_path / "raw" / "x.csv"
    fetch_file(entry_for(CRLF_TEXT), dest, [mirror], log=lambda *_: None)
    assert dest.read_bytes() == lf  # kept byte for byte as received
    # without the sha256_lf entry the same copy is refused
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch_file(entry_for(CRLF_TEXT, lf=False), tmp_path / "raw2" / "x.csv", [mirror], log=lambda *_: None)


def test_url_fallback_over_local_http(tmp_path, http_dir):
    root, base = http_dir
    (root / "x.csv").write_bytes(CRLF_TEXT)
    dest = tmp_path / "raw" / "x.csv"
    f = entry_for(CRLF_TEXT, urls=[f"{base}/missing.csv", f"{base}/x.csv"])
    src = fetch_file(f, dest, [tmp_path / "no-mirror"], timeout=5, retries=0, log=lambda *_: None)
    assert src == f"{base}/x.csv"
    assert dest.read_bytes() == CRLF_TEXT


def test_checksum_mismatch_everywhere_lists_every_attempt_and_leaves_nothing(tmp_path, http_dir):
    root, base = http_dir
    bad = b"smiles,label\nCCO,0\n"
    (root / "x.csv").write_bytes(bad)
    mirror = tmp_path / "m"
    (mirror / "chem").mkdir(parents=True)
    (mirror / "chem" / "x.csv").write_bytes(bad)
    dest_dir = tmp_path / "raw"
    f = entry_for(CRLF_TEXT, urls=[f"{base}/x.csv", f"{base}/gone.csv"])
    with pytest.raises(DownloadError) as e:
        fetch_file(f, dest_dir / "x.csv", [tmp_path / "nowhere", mirror], timeout=5, retries=1, log=lambda *_: None)
    msg = str(e.value)
    assert f"{tmp_path / 'nowhere'}/chem/x.csv: not found" in msg
    assert f"{mirror}/chem/x.csv: sha256 mismatch" in msg
    assert f"{base}/x.csv: sha256 mismatch" in msg
    assert f"{base}/gone.csv (try 1/2): HTTPError" in msg and "(try 2/2)" in msg
    assert not (dest_dir / "x.csv").exists()
    assert no_temp_files(dest_dir)


def test_plain_http_to_a_remote_host_is_refused(tmp_path):
    f = entry_for(CRLF_TEXT, urls=["http://example.org/x.csv", "ftp://example.org/x.csv"])
    with pytest.raises(DownloadError) as e:
        fetch_file(f, tmp_path / "x.csv", [], log=lambda *_: None)
    assert "refusing URL scheme 'http'" in str(e.value) and "refusing URL scheme 'ftp'" in str(e.value)


def test_size_cap(tmp_path):
    mirror = tmp_path / "m"
    (mirror / "chem").mkdir(parents=True)
    (mirror / "chem" / "x.csv").write_bytes(CRLF_TEXT)
    with pytest.raises(DownloadError, match="larger than the cap"):
        fetch_file(entry_for(CRLF_TEXT), tmp_path / "raw" / "x.csv", [mirror], max_bytes=10, log=lambda *_: None)
    assert no_temp_files(tmp_path / "raw")


def test_env_mirrors_come_first():
    dirs = mirror_dirs(["cfg1", "cfg2"], env={"MASKBENCH_DATA_MIRRORS": "/a:/b"})
    assert [str(d) for d in dirs] == ["/a", "/b", "cfg1", "cfg2"]


def test_fetch_dataset_from_the_real_mirror(tmp_path, repo_root):
    """Every file of a registry entry, verified against the shared mirror when it is present."""
    from pipeline_src.config import load_registry

    mirror = repo_root.parent / "shared" / "datasets"
    if not mirror.is_dir():
        pytest.skip("the shared dataset mirror is not beside this checkout")
    reg = load_registry(repo_root / "config" / "datasets.yaml")
    paths = fetch_dataset("freesolv", reg["freesolv"], tmp_path, [mirror], log=lambda *_: None)
    assert [p.name for p in paths] == ["SAMPL.csv"]
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() == reg["freesolv"]["files"][0]["sha256"]
