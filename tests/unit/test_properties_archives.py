"""Property test: an archive with arbitrary member names extracts inside its target folder or is
refused with ArchiveError — nothing is ever written outside, and nothing is left half done."""
from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline_src.data.archives import ArchiveError, extract_tar, extract_zip

PART = st.sampled_from(["a", "b", "..", ".", "", "c.txt", "/", "\\", "C:", "..\\x", " "])
NAME = st.lists(PART, min_size=1, max_size=4).map("/".join)


@settings(max_examples=int(__import__("os").environ.get("PROP_N", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.tuples(NAME, st.binary(max_size=64)), min_size=1, max_size=6),
       kind=st.sampled_from(["zip", "tar"]), cap=st.sampled_from([10**6, 100]))
def test_extraction_stays_inside_or_is_refused(members, kind, cap):
    assume(kind == "tar" or all(n for n, _ in members))  # zipfile cannot even write an empty name
    root = Path(tempfile.mkdtemp(prefix="arcprops-"))
    try:
        box = root / "box"
        box.mkdir()
        arc = root / f"a.{'zip' if kind == 'zip' else 'tar.gz'}"
        if kind == "zip":
            with warnings.catch_warnings(), zipfile.ZipFile(arc, "w") as zf:
                warnings.simplefilter("ignore")  # duplicate names are part of the test
                for n, data in members:
                    zf.writestr(n, data)
        else:
            with tarfile.open(arc, "w:gz") as tf:
                for n, data in members:
                    info = tarfile.TarInfo(n)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        target = box / "out"
        try:
            files = (extract_zip if kind == "zip" else extract_tar)(arc, target, max_bytes=cap)
        except ArchiveError as e:
            assert str(arc) in str(e)
            assert sorted(p.name for p in box.iterdir()) == []  # nothing half done
        else:
            for f in files:
                assert f.resolve().is_relative_to(target.resolve())
                assert f.is_file()
            assert sum(f.stat().st_size for f in files) <= cap
        assert sorted(p.name for p in root.iterdir()) == sorted(["box", arc.name])  # nothing outside
    finally:
        shutil.rmtree(root, ignore_errors=True)
