"""Source files in the layouts researchers receive, generated from the real fixture rows.

Molecules come from the BBBP and ESOL fixtures (SMILES, labels), sequences from the TAPE stability
fixture; extra label columns are computed with RDKit. Every builder is deterministic (gzip mtime 0,
fixed zip / tar timestamps), so two runs give the same bytes and checksums.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIRROR = FIXTURES / "mirror"
CONTAINERS = ("plain", "gz", "zip", "tar.gz")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fold_of(i: int) -> str:
    """A fixed fold per row position: 7 train, 1 valid, 2 test of every 10."""
    return "train" if i % 10 < 7 else "valid" if i % 10 == 7 else "test"


def molecules(n: int | None = None) -> pd.DataFrame:
    """Parsable BBBP fixture molecules: smiles, p_np (binary), and two RDKit-derived binary labels
    (heavy: MolWt > 300; aromatic_n: an aromatic nitrogen), plus the fixed fold per row."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import Descriptors

    _block = rdBase.BlockLogs()  # noqa: F841
    df = pd.read_csv(MIRROR / "chemistry/moleculenet/BBBP.csv", dtype=str, keep_default_na=False)
    rows = []
    for s, y in zip(df["smiles"], df["p_np"]):
        m = Chem.MolFromSmiles(s)
        if m is None:
            continue
        rows.append({"smiles": Chem.MolToSmiles(m), "p_np": int(y), "heavy": int(Descriptors.MolWt(m) > 300),
                     "aromatic_n": int(any(a.GetSymbol() == "N" and a.GetIsAromatic() for a in m.GetAtoms()))})
    out = pd.DataFrame(rows).drop_duplicates("smiles").reset_index(drop=True)
    if n is not None:
        out = out.iloc[:n].reset_index(drop=True)
    out["fold"] = [fold_of(i) for i in range(len(out))]
    return out


def solubility(n: int | None = None) -> pd.DataFrame:
    """ESOL fixture: smiles, solubility (regression), and the fixed fold per row."""
    df = pd.read_csv(MIRROR / "chemistry/moleculenet/delaney-processed.csv", dtype=str, keep_default_na=False)
    out = pd.DataFrame({"smiles": df["smiles"], "solubility": df["measured log solubility in mols per litre"].astype(float)})
    if n is not None:
        out = out.iloc[:n].reset_index(drop=True)
    out["fold"] = [fold_of(i) for i in range(len(out))]
    return out


def sequences(n: int | None = None) -> pd.DataFrame:
    """TAPE stability fixture (train + valid + test files): seq, stability, fold per row."""
    parts = [pd.read_csv(MIRROR / f"protein/tape_stability/{f}.csv") for f in ("train", "valid", "test")]
    df = pd.concat(parts, ignore_index=True).rename(columns={"label": "stability"})
    if n is not None:
        df = df.iloc[:n].reset_index(drop=True)
    df["fold"] = [fold_of(i) for i in range(len(df))]
    df["id"] = [f"P{i:05d}" for i in range(len(df))]
    return df


# ---------------------------------------------------------------------------------- formats

def csv_bytes(df: pd.DataFrame, sep: str = ",", header: bool = True) -> bytes:
    return df.to_csv(sep=sep, header=header, index=False, lineterminator="\n").encode("utf-8")


def parquet_bytes(df: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def sdf_bytes(smiles: list[str], props: dict[str, list], titles: list[str] | None = None) -> bytes:
    """An SD file: one 2D record per SMILES (coordinates from RDKit), the ``props`` as data items
    (a ``None`` value leaves the item out of that record)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    out = io.StringIO()
    w = Chem.SDWriter(out)
    for i, s in enumerate(smiles):
        m = Chem.MolFromSmiles(s)
        AllChem.Compute2DCoords(m)
        m.SetProp("_Name", titles[i] if titles else f"mol{i}")
        for k, vals in props.items():
            if vals[i] is not None:
                m.SetProp(k, str(vals[i]))
        w.write(m)
    w.close()
    return out.getvalue().encode("utf-8")


def fasta_bytes(headers: list[str], seqs: list[str], width: int = 60) -> bytes:
    lines = []
    for h, s in zip(headers, seqs):
        lines.append(f">{h}")
        lines += [s[i:i + width] for i in range(0, len(s), width)] or [""]
    return ("\n".join(lines) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------- containers

def write_source(data: bytes, inner: str, container: str, folder: Path, stem: str = "bundle") -> tuple[Path, str | None]:
    """Write ``data`` (a file named ``inner``) as ``plain``, ``gz``, or a member of a ``zip`` /
    ``tar.gz`` (beside a README member, so the member must be named). Returns the path and the
    member name (``None`` outside an archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    if container == "plain":
        p = folder / inner
        p.write_bytes(data)
        return p, None
    if container == "gz":
        p = folder / f"{inner}.gz"
        p.write_bytes(gzip.compress(data, mtime=0))
        return p, None
    member = f"{stem}/{inner}"
    readme = b"files of the bundle\n"
    if container == "zip":
        p = folder / f"{stem}.zip"
        with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, b in ((f"{stem}/README.txt", readme), (member, data)):
                zi = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
                zi.compress_type = zipfile.ZIP_DEFLATED
                zi.external_attr = 0o644 << 16
                zf.writestr(zi, b)
        return p, member
    if container == "tar.gz":
        p = folder / f"{stem}.tar.gz"
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tf:
            for name, b in ((f"{stem}/README.txt", readme), (member, data)):
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(b), 0, 0o644
                tf.addfile(ti, io.BytesIO(b))
        p.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
        return p, member
    raise ValueError(container)


def file_entry(path: Path, mirror: Path, member: str | None = None, **extra) -> dict:
    f = {"name": path.name, "mirror_path": path.relative_to(mirror).as_posix(), "sha256": sha256(path), "urls": []}
    if member:
        f["member"] = member
    f.update(extra)
    return f


def blank_some(values: list, every: int, offset: int = 0) -> list:
    """``values`` with every ``every``-th one (from ``offset``) set to ``None`` (a missing label)."""
    return [None if (i - offset) % every == 0 else v for i, v in enumerate(values)]


def with_missing(df: pd.DataFrame, columns: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """``columns``: name -> (every, offset) rows blanked (NaN)."""
    out = df.copy()
    for c, (every, offset) in columns.items():
        out[c] = pd.array(blank_some(out[c].tolist(), every, offset), dtype="Int64" if out[c].dtype.kind == "i" else "Float64")
    return out


def npz_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def higgs_features(n_features: int = 8) -> pd.DataFrame:
    """HIGGS fixture rows (h2o train file): the first ``n_features`` features, the label, the fixed fold."""
    df = pd.read_csv(MIRROR / "physics/higgs/h2o_higgs_train_10k.csv")
    out = df[[f"x{j}" for j in range(1, n_features + 1)]].copy()
    out["signal"] = df["response"].astype(int)
    out["fold"] = [fold_of(i) for i in range(len(out))]
    return out
