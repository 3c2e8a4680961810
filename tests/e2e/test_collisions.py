"""A real sha1 collision (the two SHAttered PDFs) is caught by blake3 everywhere a blob
is shared: in one backup, across two machines, after a catalog rebuild, and by copy."""

import hashlib
import shutil
from pathlib import Path

import pytest

from .helpers import Runner
from .servers import Backend

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def pdfs(tmp_path: Path) -> tuple[Path, Path]:
    one, two = DATA / "shattered-1.pdf", DATA / "shattered-2.pdf"
    first, second = one.read_bytes(), two.read_bytes()
    assert len(first) == len(second) == 422_435 and first != second
    assert first[:192] == second[:192] and first[192] != second[192]  # byte 193 differs
    assert hashlib.sha1(first).digest() == hashlib.sha1(second).digest()
    return one, two


def source(tmp_path: Path, name: str, *files: Path) -> Path:
    src = tmp_path / name
    src.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, src / f"doc-{i}.pdf")
    return src


def test_both_in_one_backup(cli: Runner, store: Backend, tmp_path: Path,
                            pdfs: tuple[Path, Path]) -> None:
    src = source(tmp_path, "both", *pdfs)
    cli("backup", str(src)).fails("sha1 collision", "38762cf7f55934b34d179ae6a4c80cadccbb7f0a",
                                  code=1)
    assert cli("list").ok().stdout == ""


def test_two_machines(cli: Runner, store: Backend, tmp_path: Path,
                      pdfs: tuple[Path, Path]) -> None:
    cli("backup", str(source(tmp_path, "a", pdfs[0])), catalog=tmp_path / "a.sqlite").ok()
    # machine B has never synced: its catalog knows nothing; the store's blob does
    b_catalog = tmp_path / "b.sqlite"
    cli("backup", str(source(tmp_path, "b", pdfs[1])),
        catalog=b_catalog).fails("sha1 collision", code=1)
    assert len(cli("list", catalog=b_catalog).ok().stdout.splitlines()) == 1
    cli("verify", "--all", "--deep", catalog=b_catalog).ok()  # the first is intact


def test_after_a_catalog_rebuild(cli: Runner, store: Backend, tmp_path: Path,
                                 pdfs: tuple[Path, Path]) -> None:
    name = cli("backup", str(source(tmp_path, "a", pdfs[0]))).ok().stdout.strip()
    cli("catalog", "sync", "--rebuild").ok()
    cli("backup", str(source(tmp_path, "b", pdfs[1]))).fails("sha1 collision", code=1)
    dest = tmp_path / "dest"
    cli("restore", name, str(dest)).ok()
    assert (dest / "doc-0.pdf").read_bytes() == pdfs[0].read_bytes()


def test_through_copy(cli: Runner, store: Backend, tmp_path: Path,
                      pdfs: tuple[Path, Path]) -> None:
    name = cli("backup", str(source(tmp_path, "b", pdfs[1])),
               "--tag", "second").ok().stdout.strip()
    other = tmp_path / "other-store"
    other_catalog = tmp_path / "other.sqlite"
    cli("init", env={"PITREOS_STORE": other.as_uri()}, catalog=other_catalog).ok()
    cli("backup", str(source(tmp_path, "a", pdfs[0])), "--tag", "first",
        env={"PITREOS_STORE": other.as_uri()}, catalog=other_catalog).ok()
    cli("copy", name, "--to", other.as_uri(), "--to-catalog",
        str(other_catalog)).fails("sha1 collision", code=1)
    listed = cli("list", env={"PITREOS_STORE": other.as_uri()}, catalog=other_catalog)
    assert len(listed.ok().stdout.splitlines()) == 1  # no manifest left behind
    # and with a destination catalog rebuilt from that store
    fresh = tmp_path / "fresh.sqlite"
    cli("copy", name, "--to", other.as_uri(), "--to-catalog",
        str(fresh)).fails("sha1 collision", code=1)
