"""The catalog's schema: named migrations applied once and recorded, a catalog from a
newer pitreos refused, and SQLite's errors turned into one clear pitreos error."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils

from pitreos.catalog import Catalog, migration_steps, migrations, steps_in
from pitreos.errors import CatalogError
from pitreos.hashing import NewBlob

URL = "file:///store"


def applied(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    finally:
        db.close()


def test_a_new_catalog_records_every_migration(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.sqlite", URL).close()
    names = [name for name, _ in migration_steps()]
    assert names == ["0001_tables", "0002_blobs_missing_index", "0003_blobs_damaged",
                     "0004_retired_names", "0005_files_ctime"]
    assert applied(tmp_path / "c.sqlite") == names
    Catalog(tmp_path / "c.sqlite", URL).close()  # opening again applies nothing twice
    assert applied(tmp_path / "c.sqlite") == names


def test_an_installation_without_its_schema_files_is_an_error_not_an_empty_catalog(
        tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"schema files \(\*\.sql\) are missing"):
        steps_in(tmp_path)


def test_a_catalog_part_way_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    steps = migration_steps()
    db = sqlite_utils.Database(path)
    migrations(steps).apply(db, stop_before=steps[1][0])
    db.execute("INSERT INTO blobs (sha1, blake3, size, added_unix) VALUES ('a', 'b', 1, 0)")
    db.conn.commit()
    db.close()
    catalog = Catalog(path, URL)
    assert set(catalog.known_blobs(["a"])) == {"a"}
    catalog.add_blobs([NewBlob("c" * 40, "d" * 64, 10, 5)])
    catalog.close()
    assert applied(path) == [name for name, _ in steps]
    db2 = sqlite3.connect(path)
    assert db2.execute("SELECT name FROM sqlite_master WHERE name = 'blobs_missing'").fetchone()
    db2.close()


def test_a_catalog_of_pitreos_0_1_is_adopted(tmp_path: Path) -> None:
    """0.1 created the tables with one script and set user_version 2, recording no
    migration: every step is idempotent, so it passes them unharmed."""
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    for _, sql in migration_steps()[:2]:  # what 0.1 had
        db.executescript(sql)
    db.execute("INSERT INTO settings VALUES ('store_url', ?)", (URL,))
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    Catalog(path, URL).close()
    assert applied(path) == [name for name, _ in migration_steps()]


def test_a_catalog_from_a_newer_pitreos_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    Catalog(path, URL).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
               "VALUES ('pitreos-catalog', '9999_future', 'now')")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="schema version 9999_future, newer than this pitreos"):
        Catalog(path, URL)


def test_a_catalog_of_another_store_is_refused(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.sqlite", URL).close()
    with pytest.raises(CatalogError, match="mirrors store file:///store, not"):
        Catalog(tmp_path / "c.sqlite", "file:///elsewhere")


def test_garbage_is_a_catalog_error_that_says_how_to_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match=r"catalog sync --rebuild"):
        Catalog(path, URL)
    Catalog.remove(path)
    Catalog(path, URL).close()  # rebuilt from nothing


def test_errors_after_opening_are_catalog_errors(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", URL)
    outside = sqlite3.connect(tmp_path / "c.sqlite")
    outside.execute("DROP TABLE blobs")  # damage from outside
    outside.close()
    with pytest.raises(CatalogError, match="no such table: blobs"):
        catalog.missing_blobs()
    catalog.close()


def test_a_catalog_locked_by_another_process_is_one_error_with_its_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from pitreos import catalog as catalog_module
    from pitreos.errors import CatalogLocked

    path = tmp_path / "c.sqlite"
    Catalog(path, URL).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(catalog_module, "BUSY_TIMEOUT", 0.2)
        with pytest.raises(CatalogLocked, match="locked by another pitreos") as caught:
            Catalog(path, URL)
        assert caught.value.exit_code == 11
    finally:
        holder.kill()
        holder.wait()


def test_creating_a_catalog_imports_neither_pandas_nor_numpy(tmp_path: Path) -> None:
    """sqlite-utils imports pandas and numpy when they are installed, for column types
    the catalog never has; on a machine with them that was ~0.5 s of every first backup.
    Here both are installed (stand-ins that leave a mark when imported) in a fresh
    interpreter; creating a catalog must not import them, and they stay importable."""
    site = tmp_path / "site"
    for name in ("pandas", "numpy"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(
            f"import pathlib\npathlib.Path({str(tmp_path / name)!r}).touch()\n")
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pitreos.catalog import Catalog\n"
        f"Catalog(Path({str(tmp_path / 'c.sqlite')!r}), 'file:///store').close()\n"
        "assert 'pandas' not in sys.modules and 'numpy' not in sys.modules\n"
        f"assert not Path({str(tmp_path / 'pandas')!r}).exists()\n"
        f"assert not Path({str(tmp_path / 'numpy')!r}).exists()\n"
        "import pandas, numpy\n"
        "print('imported after')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", program], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported after\n"
    assert (tmp_path / "pandas").exists() and (tmp_path / "numpy").exists()
    assert applied(tmp_path / "c.sqlite") == [name for name, _ in migration_steps()]
