"""The backup and recovery blueprints, end to end on the lab.

Layout in every sandbox (the SSH login directory): application data in ``data/``,
configuration in ``etc/``, archives in ``backups/``. Each test seeds what it needs and the
``clean`` fixture removes it again, so the module's lab is left as it was found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from opsgate.lab import LabState
from tests.library.harness import Library, age, errors, lab_snapshot, sandbox, step

pytestmark = pytest.mark.anyio

LAB_HOSTS = ("web-1:web", "web-2:web", "db-1:db")
#: Everything the tests seed or the blueprints write in a sandbox.
WORK = ("data", "etc", "backups", "pre-restore", "run", "restore-test")


@pytest.fixture(autouse=True)
def clean(lab: LabState) -> Iterator[None]:
    yield
    for host in lab.hosts:
        for name in WORK:
            path = Path(host.sandbox) / name
            if path.is_dir() and not path.is_symlink():
                for folder, _, _ in os.walk(path):
                    os.chmod(folder, 0o755)
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def seed(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def tree(root: Path, *tops: str) -> dict[str, bytes]:
    """Every file under ``root/<top>`` (relative name → content)."""
    found: dict[str, bytes] = {}
    for top in tops:
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def archive_tree(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def gate_pending(library: Library, execution_id: str, step_id: str) -> None:
    """Wait until ``step_id``'s gate asks for a decision."""
    bob = library.principal("bob")
    with anyio.fail_after(60):
        while True:
            pending = (await library.service.list_pending_approvals(bob)).approvals
            if any(a.execution_id == execution_id and a.step_id == step_id for a in pending):
                return
            await anyio.sleep(0.05)


# --- fleet_backup_orchestration ------------------------------------------------------------

WEB_DATA = {
    "data/app.db": "orders 1..1000\n",
    "data/uploads/logo.png": "\x89PNG fake image\n",
    "etc/app.conf": "listen = 8080\nworkers = 4\n",
}


def seed_fleet(lab: LabState) -> None:
    """web-1 and web-2 hold data and configuration, db-1 holds nothing (it is skipped); web-1
    has a backup older than the retention, a recent one and an unrelated old file."""
    for host in ("web-1", "web-2"):
        seed(sandbox(lab, host), {k: f"{host}: {v}" for k, v in WEB_DATA.items()})
    backups = sandbox(lab, "web-1") / "backups"
    backups.mkdir()
    for name, days in (
        ("web-1-20250101T000000Z-exe_old.tar.gz", 10),
        ("web-1-20250108T000000Z-exe_recent.tar.gz", 3),
        ("notes.txt", 30),
    ):
        (backups / name).write_text(name)
        (backups / f"{name}.sha256").write_text(name)
        age(backups / name, days)
        age(backups / f"{name}.sha256", days)


FLEET_EXAMPLE = {
    "hosts": "*",
    "backup_retention_days": 7,
    "backup_compression": "gzip",
}


async def test_fleet_backup_archives_verifies_and_prunes(lab: LabState, library: Library) -> None:
    seed_fleet(lab)
    view = await library.run("fleet_backup_orchestration", FLEET_EXAMPLE)
    assert view.status == "succeeded", errors(view)

    verified = library.outputs_by_target(view.execution_id, "verify")
    for host in ("web-1", "web-2"):
        root = sandbox(lab, host)
        out = verified[host]
        archive = root / out["archive"]
        assert archive.name.startswith(f"{host}-") and archive.name.endswith(
            f"-{view.execution_id}.tar.gz"
        )
        # The outputs are the real size and sha256, and the checksum file says the same.
        assert out["bytes"] == archive.stat().st_size
        assert out["sha256"] == sha256(archive)
        assert (root / f"{out['archive']}.sha256").read_text() == (
            f"{sha256(archive)}  {archive.name}\n"
        )
        # The archive holds exactly the data and configuration.
        assert archive_tree(archive) == tree(root, "data", "etc")
        # No snapshot is left behind.
        assert not list((root / "backups").glob(".snapshot-*"))

    # db-1 holds nothing: skipped, nothing written.
    assert verified["db-1"]["archive"] == ""
    assert not (sandbox(lab, "db-1") / "backups").exists()

    # Retention: the 10-day-old archive and its checksum are gone; the 3-day-old one, the
    # unrelated file and this run's archive stay.
    kept = sorted(p.name for p in (sandbox(lab, "web-1") / "backups").iterdir())
    new = Path(verified["web-1"]["archive"]).name
    assert kept == sorted(
        [
            "notes.txt",
            "notes.txt.sha256",
            "web-1-20250108T000000Z-exe_recent.tar.gz",
            "web-1-20250108T000000Z-exe_recent.tar.gz.sha256",
            new,
            f"{new}.sha256",
        ]
    )
    assert library.outputs_by_target(view.execution_id, "prune")["web-1"]["removed"] == 1


async def test_fleet_backup_without_compression_writes_a_plain_tar(
    lab: LabState, library: Library
) -> None:
    seed(sandbox(lab, "db-1"), {"data/pg/base.dat": "rows\n"})
    view = await library.run(
        "fleet_backup_orchestration",
        {"hosts": "db-1", "paths": ["data"], "backup_compression": "none"},
    )
    assert view.status == "succeeded", errors(view)
    archive = (
        sandbox(lab, "db-1")
        / library.outputs_by_target(view.execution_id, "verify")["db-1"]["archive"]
    )
    assert archive.suffix == ".tar"
    with tarfile.open(archive, "r:") as tar:  # not compressed
        assert "data/pg/base.dat" in tar.getnames()


async def test_fleet_backup_fails_clearly_when_space_is_short(
    lab: LabState, library: Library
) -> None:
    seed_fleet(lab)
    before = lab_snapshot(lab)
    view = await library.run(
        "fleet_backup_orchestration", {**FLEET_EXAMPLE, "min_free_mb": 10485760}
    )
    assert view.status == "rolled_back", errors(view)
    assert step(view, "check_space").status == "failed"
    assert "not enough free space for the backup" in errors(view)
    assert "min_free_mb=10485760" in errors(view)
    assert step(view, "snapshot").runs == []
    assert lab_snapshot(lab) == before


async def test_fleet_backup_with_nothing_to_back_up_fails(lab: LabState, library: Library) -> None:
    before = lab_snapshot(lab)
    view = await library.run("fleet_backup_orchestration", {"hosts": "*"})
    assert view.status == "rolled_back", errors(view)
    assert "nothing to back up" in errors(view)
    assert lab_snapshot(lab) == before


async def test_a_failed_snapshot_rolls_back_every_host_and_keeps_old_backups(
    lab: LabState, library: Library
) -> None:
    """web-2 still holds the snapshot of a crashed run: its snapshot step refuses after web-1's
    copy was made. The rollback removes web-1's copy; web-2's leftover and every old backup
    stay as they were."""
    seed_fleet(lab)
    stale = sandbox(lab, "web-2") / "backups" / ".snapshot-exe_crashed" / "data" / "app.db"
    stale.parent.mkdir(parents=True)
    stale.write_text("half a copy")
    before = lab_snapshot(lab)

    view = await library.run("fleet_backup_orchestration", {**FLEET_EXAMPLE, "max_parallel": 1})
    assert view.status == "rolled_back", errors(view)
    runs = {run.target: run.status for run in step(view, "snapshot").runs}
    # web-1's copy was made, then undone; web-2 refused before copying anything.
    assert runs["web-1"] == "rolled_back" and runs["web-2"] == "failed"
    assert "is left from an earlier run" in errors(view)
    assert lab_snapshot(lab) == before
    assert not (sandbox(lab, "web-1") / "backups" / f".snapshot-{view.execution_id}").exists()


# --- disaster_recovery ---------------------------------------------------------------------

GOOD = {
    "data/app.db": "orders 1..1000\n",
    "data/uploads/logo.png": "\x89PNG fake image\n",
    "etc/app.conf": "listen = 8080\n",
    "etc/tls/server.pem": "-----BEGIN CERTIFICATE-----\n",
}
ARCHIVE = "backups/web-1-20260327T220000Z-exe_nightly.tar.gz"


def make_archive(root: Path, name: str, *tops: str) -> Path:
    """A gzip tar of ``tops`` (relative to ``root``) with its ``.sha256`` beside it, as the
    backup blueprints write them."""
    archive = root / name
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for top in tops:
            tar.add(root / top, arcname=top)
    (root / f"{name}.sha256").write_text(f"{sha256(archive)}  {archive.name}\n")
    return archive


def seed_disaster(lab: LabState) -> tuple[Path, dict[str, bytes]]:
    """web-1's good data and configuration are archived, then damaged: a file overwritten, one
    deleted, one added. Returns the archive and the good files."""
    root = sandbox(lab, "web-1")
    seed(root, GOOD)
    archive = make_archive(root, ARCHIVE, "data", "etc")
    good = tree(root, "data", "etc")
    seed(root, {"data/app.db": "CORRUPTED\n", "data/junk.tmp": "x", "etc/app.conf": "listen =\n"})
    (root / "data/uploads/logo.png").unlink()
    return archive, good


DR_EXAMPLE = {
    "host": "web-1",
    "backup_archive": ARCHIVE,
    "recovery_type": "full",
    "validation_level": "thorough",
}


async def test_disaster_recovery_restores_data_and_configuration(
    lab: LabState, library: Library
) -> None:
    archive, good = seed_disaster(lab)
    root = sandbox(lab, "web-1")
    damaged = tree(root, "data", "etc")
    view = await library.run("disaster_recovery", DR_EXAMPLE)
    assert view.status == "succeeded", errors(view)

    assert tree(root, "data", "etc") == good == archive_tree(archive)
    assert not (root / "data/junk.tmp").exists()
    # The service runs again, and its health was checked.
    assert not (root / "run/maintenance").exists()
    assert library.outputs_by_target(view.execution_id, "check_health")["web-1"]["status"] == 200
    # What the restore replaced is kept, untouched, for inspection.
    kept = root / "pre-restore" / view.execution_id
    assert tree(kept, "data", "etc") == damaged
    # Nothing else was left behind.
    assert sorted(p.name for p in kept.iterdir()) == ["data", "etc"]
    # The restore was gated: bob (ops-manager) approved stop_service.
    gated = [e for e in library.events(view.execution_id) if e.type.startswith("approval.")]
    assert any(e.step_id == "stop_service" for e in gated)


@pytest.mark.parametrize(
    ("recovery_type", "restored", "left"),
    [("data_only", "data", "etc"), ("config_only", "etc", "data")],
)
async def test_a_partial_recovery_restores_only_its_part(
    lab: LabState, library: Library, recovery_type: str, restored: str, left: str
) -> None:
    _, good = seed_disaster(lab)
    root = sandbox(lab, "web-1")
    untouched = tree(root, left)
    view = await library.run(
        "disaster_recovery",
        {**DR_EXAMPLE, "recovery_type": recovery_type, "validation_level": "basic"},
    )
    assert view.status == "succeeded", errors(view)
    assert tree(root, restored) == {k: v for k, v in good.items() if k.startswith(f"{restored}/")}
    assert tree(root, left) == untouched  # still damaged: not this recovery's part
    skipped = {"data_only": "restore_config", "config_only": "restore_data"}[recovery_type]
    assert step(view, skipped).status == "skipped"
    kept = root / "pre-restore" / view.execution_id
    assert sorted(p.name for p in kept.iterdir()) == [restored]


async def test_disaster_recovery_refuses_a_corrupt_archive_before_changing_anything(
    lab: LabState, library: Library
) -> None:
    archive, _ = seed_disaster(lab)
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte; the .sha256 still names the original
    archive.write_bytes(bytes(damaged))
    before = lab_snapshot(lab)
    view = await library.run("disaster_recovery", DR_EXAMPLE)
    assert view.status == "rolled_back", errors(view)
    assert step(view, "validate_backup").status == "failed"
    assert "is corrupt" in errors(view)
    assert step(view, "stop_service").runs == []  # never even asked for approval
    assert lab_snapshot(lab) == before


async def test_a_rejected_restore_leaves_the_host_untouched(
    lab: LabState, library: Library
) -> None:
    seed_disaster(lab)
    before = lab_snapshot(lab)
    view = await library.run("disaster_recovery", DR_EXAMPLE, reject=frozenset({"stop_service"}))
    assert view.status == "rolled_back", errors(view)
    assert lab_snapshot(lab) == before
    assert step(view, "set_aside_data").runs == []


async def test_a_restore_failing_midway_is_undone(lab: LabState, library: Library) -> None:
    """The archive is truncated while the gate waits: the service is stopped and the data set
    aside, then the restore refuses the archive. The rollback puts everything back."""
    archive, _ = seed_disaster(lab)
    before = lab_snapshot(lab)
    original = archive.read_bytes()
    started = await library.service.execute_workflow(
        library.requester, "disaster_recovery", DR_EXAMPLE
    )
    await gate_pending(library, started.execution_id, "stop_service")
    archive.write_bytes(original[: len(original) // 2])
    view = await library.finish(started.execution_id, {}, frozenset(), 120)

    assert view.status == "rolled_back", errors(view)
    assert step(view, "set_aside_data").runs[0].status == "rolled_back"
    assert step(view, "restore_data").status == "failed"
    assert "changed since it was validated" in errors(view)
    archive.write_bytes(original)
    assert lab_snapshot(lab) == before


async def test_an_unhealthy_service_after_the_restore_undoes_it(
    lab: LabState, library: Library
) -> None:
    """The restore completes but the service's health URL does not answer 200: the restored
    files are removed, the previous ones put back, the flag removed."""
    seed_disaster(lab)
    before = lab_snapshot(lab)
    view = await library.run(
        "disaster_recovery",
        {**DR_EXAMPLE, "health_url": f"{lab.health_url}/no-such-health"},
    )
    assert view.status == "rolled_back", errors(view)
    assert step(view, "restore_config").runs[0].status == "rolled_back"
    assert step(view, "check_health").status == "failed"
    assert "404" in errors(view)
    assert lab_snapshot(lab) == before


async def test_a_fleet_backup_is_what_disaster_recovery_restores(
    lab: LabState, library: Library
) -> None:
    """The two blueprints agree on the archive: a fleet backup of web-2 restores it."""
    root = sandbox(lab, "web-2")
    seed(root, GOOD)
    good = tree(root, "data", "etc")
    backup = await library.run("fleet_backup_orchestration", {"hosts": "web-2"})
    assert backup.status == "succeeded", errors(backup)
    archive = library.outputs_by_target(backup.execution_id, "verify")["web-2"]["archive"]
    shutil.rmtree(root / "data")
    (root / "etc/app.conf").write_text("broken\n")

    view = await library.run(
        "disaster_recovery", {**DR_EXAMPLE, "host": "web-2", "backup_archive": archive}
    )
    assert view.status == "succeeded", errors(view)
    assert tree(root, "data", "etc") == good
    # The data did not exist before the restore: a marker says so instead of a copy.
    kept = root / "pre-restore" / view.execution_id
    assert sorted(p.name for p in kept.iterdir()) == ["data.absent", "etc"]


# --- backup_and_recovery -------------------------------------------------------------------

BR_EXAMPLE = {"hosts": "web-1", "source_path": "data", "backup_compression": "gzip"}


async def test_backup_and_recovery_proves_the_backup_restores(
    lab: LabState, library: Library
) -> None:
    root = sandbox(lab, "web-1")
    seed(root, GOOD)
    view = await library.run("backup_and_recovery", BR_EXAMPLE)
    assert view.status == "succeeded", errors(view)

    made = library.outputs_by_target(view.execution_id, "backup")["web-1"]
    archive = root / made["archive"]
    assert archive.name.startswith("web-1-data-") and archive.name.endswith(
        f"-{view.execution_id}.tar.gz"
    )
    assert made["sha256"] == sha256(archive) and made["bytes"] == archive.stat().st_size
    assert (
        root / f"{made['archive']}.sha256"
    ).read_text() == f"{sha256(archive)}  {archive.name}\n"
    assert archive_tree(archive) == tree(root, "data")
    compared = library.outputs_by_target(view.execution_id, "compare")["web-1"]
    assert compared == {"identical": True, "files": 2}
    # The scratch copy is gone; only the archive and its checksum are left in backups/.
    assert sorted(p.name for p in (root / "backups").iterdir()) == sorted(
        [archive.name, f"{archive.name}.sha256"]
    )


async def test_a_failed_test_restore_removes_the_new_backup(
    lab: LabState, library: Library
) -> None:
    """The scratch location is taken by a file, so the test restore cannot unpack: the run is
    rolled back and the archive it wrote is removed."""
    root = sandbox(lab, "web-1")
    seed(root, GOOD)
    (root / "backups").mkdir()
    (root / "backups/.restore-test").write_text("not a folder")
    before = lab_snapshot(lab)
    view = await library.run("backup_and_recovery", BR_EXAMPLE)
    assert view.status == "rolled_back", errors(view)
    assert step(view, "test_restore").status == "failed"
    assert step(view, "backup").runs[0].status == "rolled_back"
    assert lab_snapshot(lab) == before
