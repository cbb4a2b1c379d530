"""opsgate engine benchmark: the peers' workload (5 sequential ``log`` steps) on the real worker.

    .venv/bin/python bench/engine.py --db both                      # 1000 executions, C=100, 3 reps
    .venv/bin/python bench/engine.py --db sqlite --executions 200 --concurrency 50 --repeat 1
    .venv/bin/python bench/engine.py --db both --peers bench-results  # + ratios vs the harness

Two modes, each repetition on a fresh database (SQLite file in a temporary directory, WAL and
``synchronous=FULL`` as opsgate configures it; or a fresh PostgreSQL schema, dropped afterwards):

* ``sequential``: create an execution (through ``Service.execute_workflow``, as the MCP tool
  does), run the worker until it is idle, N times;
* ``concurrent``: create C executions, run the worker (capacity >= C) until all are done, until
  N executions are done.

Every repetition starts with a few untimed warm-up executions, ends with one untimed probe
execution (statements, commits and thread hops it costs), then checks the whole database: every
execution succeeded, 5 step runs each (all succeeded at the first attempt), gapless events.
Persisted transitions are counted from the events: ``step.*`` events (started + succeeded, 10
per execution) and ``execution.*`` status changes (started + succeeded; ``execution.created``
is the creation, not a transition). The table shows medians of the repetitions; ``--json``
keeps every raw figure. ``--db both`` runs each database in a child process, so that peak RSS
(``getrusage``) is per database.

``--peers DIR`` reads the bench-peers harness's results (``dbos_sqlite.json``,
``dbos_postgres.json``, optional ``dbos_sqlite_c100.json`` / ``dbos_postgres_c100.json`` from
``dbos_bench.py --concurrent 100``, and ``limits.json``) and prints the ratios against the
targets: executions/s >= 1.5x DBOS on SQLite in both modes; a persisted step transition within
2x the raw SQLite commit (WAL, synchronous=FULL, UPDATE + INSERT + COMMIT).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from ruamel.yaml import YAML

from opsgate.actions.registry import ActionRegistry
from opsgate.catalog import Catalog
from opsgate.service import Principal, Service
from opsgate.spec.blueprints import parse_blueprint
from opsgate.spec.model import WorkflowSpec
from opsgate.stores import SQLStore
from opsgate.stores.tables import events, executions, step_runs
from opsgate.worker import Worker

T = TypeVar("T")

STEPS = 5
WORKFLOW = "bench_five_logs"
PRINCIPAL = Principal("bench")
POSTGRES_URL = os.environ.get(
    "OPSGATE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MODES = ("sequential", "concurrent")


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Complaints(logging.Handler):
    """Counts what opsgate logs at WARNING and above (a crashed runner, a lost lease) and
    prints one line each instead of a traceback: the run goes on, the table reports them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        cause = ""
        if record.exc_info and record.exc_info[1] is not None:
            cause = " (" + str(record.exc_info[1]).splitlines()[-1][:200] + ")"
        if self.count <= 20:
            note(f"opsgate {record.levelname.lower()}: {record.getMessage()}{cause}")


COMPLAINTS = Complaints()
logging.getLogger("opsgate").addHandler(COMPLAINTS)


# --------------------------------------------------------------------------- the workload


def blueprint(registry: ActionRegistry) -> WorkflowSpec:
    """5 sequential steps of the built-in ``log`` action, step k depending on step k-1."""
    steps: list[dict[str, Any]] = []
    for k in range(STEPS):
        step: dict[str, Any] = {"id": f"s{k}", "action": "log", "with": {"message": f"step {k}"}}
        if k:
            step["depends_on"] = [f"s{k - 1}"]
        steps.append(step)
    document = {
        "name": WORKFLOW,
        "version": "1.0.0",
        "description": "benchmark: five sequential no-op log steps",
        "steps": steps,
    }
    buffer = io.StringIO()
    YAML().dump(document, buffer)
    spec, issues = parse_blueprint(buffer.getvalue(), "bench.yaml", registry.infos())
    if spec is None:
        raise SystemExit("the benchmark blueprint is invalid: " + "; ".join(map(str, issues)))
    return spec


# --------------------------------------------------------------------------- databases


@contextmanager
def fresh_database(db: str, tmpdir: str | None) -> Iterator[str]:
    """A URL of an empty database, removed afterwards."""
    if db == "sqlite":
        directory = tempfile.mkdtemp(prefix="opsgate-bench-", dir=tmpdir)
        try:
            yield f"sqlite:///{directory}/opsgate.db"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    schema = f"opsgate_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = sa.make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# --------------------------------------------------------------------------- one repetition


@dataclass
class Run:
    """The raw figures of one repetition of one mode on one database."""

    db: str
    mode: str
    executions: int
    concurrency: int
    wall_s: float
    create_s: float
    batch_s: list[float]
    events_per_execution: float
    step_transitions: int
    execution_transitions: int
    probe: dict[str, float]
    complaints: int
    first_last_ms: tuple[float, float] | None
    rss_mib: float
    peak_rss_mib: float
    loadavg: tuple[float, float]

    @property
    def per_second(self) -> float:
        return self.executions / self.wall_s

    @property
    def ms_per_execution(self) -> float:
        return 1000 * self.wall_s / self.executions

    @property
    def transitions(self) -> int:
        return self.step_transitions + self.execution_transitions


class Bench:
    """A fresh store, a service to create executions through and a worker to run them."""

    def __init__(self, url: str, spec: WorkflowSpec, registry: ActionRegistry, capacity: int):
        self.store = SQLStore.open(url)
        self.store.migrate()
        self.worker = Worker(self.store, registry, capacity=capacity)
        catalog = Catalog(blueprints={spec.name: spec})
        self.service = Service(self.store, catalog, wake=self.worker.wake)
        self.created: list[str] = []

    async def create(self) -> str:
        started = await self.service.execute_workflow(PRINCIPAL, WORKFLOW, {})
        self.created.append(started.execution_id)
        return started.execution_id

    async def sequential(self, n: int) -> tuple[float, float, list[float]]:
        """n times: create one execution, run the worker until idle.

        (wall, creating, each execution's seconds)"""
        creating = 0.0
        each: list[float] = []
        begin = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await self.create()
            creating += time.perf_counter() - t
            await self.worker.run(until_idle=True)
            each.append(time.perf_counter() - t)
        return time.perf_counter() - begin, creating, each

    async def concurrent(self, n: int, c: int) -> tuple[float, float, list[float]]:
        """Batches of c: create them, run the worker until idle. (wall, creating, batches)"""
        creating = 0.0
        batches: list[float] = []
        begin = time.perf_counter()
        done = 0
        while done < n:
            size = min(c, n - done)
            t = time.perf_counter()
            for _ in range(size):
                await self.create()
            creating += time.perf_counter() - t
            await self.worker.run(until_idle=True)
            batches.append(time.perf_counter() - t)
            done += size
        return time.perf_counter() - begin, creating, batches

    async def probe(self) -> dict[str, float]:
        """One untimed execution with counters: statements, commits, thread hops."""
        counts: Counter[str] = Counter()
        engine = self.store.engine

        def statement(*_: Any, **__: Any) -> None:
            counts["statements"] += 1

        def commit(*_: Any, **__: Any) -> None:
            counts["commits"] += 1

        original = anyio.to_thread.run_sync

        async def hop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
            counts["thread_hops"] += 1
            return await original(function, *args, **kwargs)

        sa.event.listen(engine, "before_cursor_execute", statement)
        sa.event.listen(engine, "commit", commit)
        anyio.to_thread.run_sync = hop  # type: ignore[assignment]
        try:
            await self.create()
            await self.worker.run(until_idle=True)
        finally:
            anyio.to_thread.run_sync = original
            sa.event.remove(engine, "before_cursor_execute", statement)
            sa.event.remove(engine, "commit", commit)
        return {key: float(value) for key, value in counts.items()}

    def verify(self, timed: set[str]) -> tuple[float, int, int]:
        """Every execution succeeded with 5 first-attempt step runs and gapless events.

        Returns events per execution, and the step / execution transitions of ``timed``."""
        with self.store.engine.connect() as conn:
            statuses: dict[str, Any] = {
                row.id: row.status
                for row in conn.execute(sa.select(executions.c.id, executions.c.status))
            }
            runs = conn.execute(
                sa.select(step_runs.c.execution_id, step_runs.c.status, step_runs.c.attempt)
            ).all()
            rows = conn.execute(
                sa.select(events.c.execution_id, events.c.type, events.c.seq).order_by(
                    events.c.execution_id, events.c.seq
                )
            ).all()
        problems: list[str] = []
        if set(statuses) != set(self.created):
            problems.append(f"{len(statuses)} executions stored, {len(self.created)} created")
        bad = {i: str(s) for i, s in statuses.items() if str(s) != "succeeded"}
        if bad:
            problems.append(f"{len(bad)} executions did not succeed: {sorted(bad.items())[:3]}")
        per_execution: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for execution_id, status, attempt in runs:
            per_execution[execution_id].append((str(status), attempt))
        wrong = [i for i in statuses if per_execution[i] != [("succeeded", 1)] * STEPS]
        if wrong:
            problems.append(f"{len(wrong)} executions without 5 succeeded first-attempt runs")
        seqs: dict[str, list[int]] = defaultdict(list)
        kinds: dict[str, Counter[str]] = defaultdict(Counter)
        for execution_id, kind, seq in rows:
            seqs[execution_id].append(seq)
            kinds[execution_id][str(kind)] += 1
        gaps = [i for i, s in seqs.items() if s != list(range(1, len(s) + 1))]
        if gaps:
            problems.append(f"{len(gaps)} executions with gaps in their event numbers")
        if len(seqs) != len(statuses):
            problems.append("some executions have no events")
        for execution_id in statuses:
            kind = kinds[execution_id]
            if kind["step.started"] != STEPS or kind["step.succeeded"] != STEPS:
                problems.append(f"{execution_id}: step events {dict(kind)}")
                break
        if problems:
            raise SystemExit("verification failed: " + "; ".join(problems))
        step = sum(n for i in timed for k, n in kinds[i].items() if k.startswith("step."))
        execution = sum(
            n
            for i in timed
            for k, n in kinds[i].items()
            if k.startswith("execution.") and k != "execution.created"
        )
        return len(rows) / len(statuses), step, execution

    def close(self) -> None:
        self.store.close()


def first_last(each: list[float]) -> tuple[float, float] | None:
    """Median ms per execution of the first and the last tenth (does it slow down as the
    tables grow?)."""
    if len(each) < 20:
        return None
    tenth = len(each) // 10
    return 1000 * median(each[:tenth]), 1000 * median(each[-tenth:])


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_run(args: argparse.Namespace, db: str, mode: str, spec: WorkflowSpec) -> Run:
    load_before = os.getloadavg()[0]
    registry = ActionRegistry.builtin()
    capacity = max(args.concurrency, 64)
    with fresh_database(db, args.tmpdir) as url:
        bench = Bench(url, spec, registry, capacity)
        timed: set[str] = set()
        try:

            async def main() -> tuple[float, float, list[float], list[float], dict[str, float]]:
                for _ in range(args.warmup):
                    await bench.create()
                    await bench.worker.run(until_idle=True)
                warm = len(bench.created)
                each: list[float] = []
                batches: list[float] = []
                if mode == "sequential":
                    wall, creating, each = await bench.sequential(args.executions)
                else:
                    wall, creating, batches = await bench.concurrent(
                        args.executions, args.concurrency
                    )
                timed.update(bench.created[warm:])
                probe = await bench.probe()
                return wall, creating, batches, each, probe

            COMPLAINTS.count = 0
            wall, creating, batches, each, probe = anyio.run(main)
            complaints = COMPLAINTS.count
            per_execution, step, execution = bench.verify(timed)
        finally:
            bench.close()
    return Run(
        db=db,
        mode=mode,
        executions=args.executions,
        concurrency=1 if mode == "sequential" else args.concurrency,
        wall_s=wall,
        create_s=creating,
        batch_s=batches,
        events_per_execution=per_execution,
        step_transitions=step,
        execution_transitions=execution,
        probe=probe,
        complaints=complaints,
        first_last_ms=first_last(each),
        rss_mib=rss_mib(),
        peak_rss_mib=peak_rss_mib(),
        loadavg=(load_before, os.getloadavg()[0]),
    )


def raw_sqlite_commit_ms(tmpdir: str | None, n: int = 1000) -> float:
    """In-process sanity figure: raw sqlite3, WAL + FULL, UPDATE + INSERT + COMMIT (like the
    harness's ``raw_sqlite3_wal_full_transition``), in the same directory as the runs."""
    directory = tempfile.mkdtemp(prefix="opsgate-bench-raw-", dir=tmpdir)
    try:
        conn = sqlite3.connect(Path(directory) / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE step (id INTEGER PRIMARY KEY, state TEXT, updated REAL)")
        conn.execute(
            "CREATE TABLE event (id INTEGER PRIMARY KEY, run_id TEXT, kind TEXT, payload TEXT, "
            "ts REAL)"
        )
        conn.execute("INSERT INTO step VALUES (1, 'pending', 0)")
        begin = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE step SET state=?, updated=? WHERE id=1", (f"s{i % 4}", i))
            conn.execute(
                "INSERT INTO event (run_id, kind, payload, ts) VALUES ('r', 'step', '{}', ?)",
                (time.time(),),
            )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - begin
        conn.close()
        return 1000 * elapsed / n
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- summaries


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Medians over the repetitions of one (db, mode)."""
    first = runs[0]

    def med(get: Callable[[Run], float]) -> float:
        return median([get(r) for r in runs])

    ms = med(lambda r: r.ms_per_execution)
    transitions_per_execution = first.transitions / first.executions
    return {
        "db": first.db,
        "mode": first.mode,
        "executions": first.executions,
        "concurrency": first.concurrency,
        "repeats": len(runs),
        "wall_s": med(lambda r: r.wall_s),
        "executions_per_s": med(lambda r: r.per_second),
        "ms_per_execution": ms,
        "ms_per_step": ms / STEPS,
        "create_ms_per_execution": med(lambda r: 1000 * r.create_s / r.executions),
        "batch_s": med(lambda r: median(r.batch_s)) if first.batch_s else None,
        "step_transitions_per_s": med(lambda r: r.step_transitions / r.wall_s),
        "transitions_per_s": med(lambda r: r.transitions / r.wall_s),
        "transitions_per_execution": transitions_per_execution,
        "ms_per_transition": med(lambda r: 1000 * r.wall_s / r.transitions),
        "events_per_execution": first.events_per_execution,
        "statements_per_execution": first.probe.get("statements", 0.0),
        "commits_per_execution": first.probe.get("commits", 0.0),
        "thread_hops_per_execution": first.probe.get("thread_hops", 0.0),
        "peak_rss_mib": max(r.peak_rss_mib for r in runs),
        "max_loadavg": max(max(r.loadavg) for r in runs),
        "complaints": sum(r.complaints for r in runs),
        "first_last_ms": tenths(runs),
        "runs_executions_per_s": [round(r.per_second, 2) for r in runs],
    }


def tenths(runs: list[Run]) -> list[float] | None:
    """Medians over the repetitions of the first- and last-tenth ms per execution."""
    pairs = [r.first_last_ms for r in runs if r.first_last_ms is not None]
    if not pairs:
        return None
    return [median([p[0] for p in pairs]), median([p[1] for p in pairs])]


def table(summaries: list[dict[str, Any]]) -> str:
    """Two markdown tables: throughput, then what one execution costs."""
    lines = [
        "| db | mode | N | exec/s | exec/s per rep | ms/exec | ms/step | C done (s) | "
        "step transitions/s | transitions/s | ms/transition |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        batch = f"{s['batch_s']:.2f}" if s["batch_s"] is not None else "-"
        lines.append(
            f"| {s['db']} | {mode_label(s)} | {s['executions']} | {s['executions_per_s']:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in s['runs_executions_per_s'])} | "
            f"{s['ms_per_execution']:.2f} | {s['ms_per_step']:.2f} | {batch} | "
            f"{s['step_transitions_per_s']:,.0f} | {s['transitions_per_s']:,.0f} | "
            f"{s['ms_per_transition']:.3f} |"
        )
    lines += [
        "",
        "| db | mode | events/exec | transitions/exec | commits/exec | statements/exec | "
        "thread hops/exec | ms/exec first / last tenth | opsgate warnings+errors | "
        "peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        tenths = s["first_last_ms"]
        drift = f"{tenths[0]:.1f} / {tenths[1]:.1f}" if tenths else "-"
        lines.append(
            f"| {s['db']} | {mode_label(s)} | {s['events_per_execution']:.0f} | "
            f"{s['transitions_per_execution']:.0f} | {s['commits_per_execution']:.0f} | "
            f"{s['statements_per_execution']:.0f} | {s['thread_hops_per_execution']:.0f} | "
            f"{drift} | {s['complaints']} | {s['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def mode_label(summary: dict[str, Any]) -> str:
    if summary["mode"] == "sequential":
        return "one after another"
    return f"{summary['concurrency']} at once"


def load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def compare(summaries: list[dict[str, Any]], peers: Path, raw_ms: float | None) -> list[str]:
    """Ratios against the harness's DBOS and raw-commit figures, with the targets."""
    lines = [
        "| comparison | opsgate | reference | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    by = {(s["db"], s["mode"]): s for s in summaries}
    for db in ("sqlite", "postgres"):
        dbos = load_json(peers / f"dbos_{db}.json")
        if dbos is None:
            continue
        target = 1.5 if db == "sqlite" else None
        seq = by.get((db, "sequential"))
        if seq:
            ref = dbos["seq_runs_per_s"]
            ratio = seq["executions_per_s"] / ref
            lines.append(
                f"| {db}, one after another: exec/s vs DBOS | {seq['executions_per_s']:.1f} | "
                f"{ref:.1f} | {ratio:.2f}x | {'>= 1.5x' if target else '-'} | "
                f"{('yes' if ratio >= 1.5 else 'no') if target else '-'} |"
            )
        conc = by.get((db, "concurrent"))
        if conc:
            for name in (f"dbos_{db}_c{conc['concurrency']}", f"dbos_{db}"):
                peer = load_json(peers / f"{name}.json")
                if peer is None:
                    continue
                c = peer["params"]["concurrent"]
                ref = c / peer["concurrent_start_workflow_s"]["median"]
                ratio = conc["executions_per_s"] / ref
                lines.append(
                    f"| {db}, {conc['concurrency']} at once vs DBOS {c} at once "
                    f"(start_workflow): exec/s | {conc['executions_per_s']:.1f} | {ref:.1f} | "
                    f"{ratio:.2f}x | {'>= 1.5x' if target else '-'} | "
                    f"{('yes' if ratio >= 1.5 else 'no') if target else '-'} |"
                )
    limits = load_json(peers / "limits.json")
    references: list[tuple[str, float]] = []
    if limits is not None:
        rate = limits["results"]["raw_sqlite3_wal_full_transition"]["median"]
        references.append(("harness raw sqlite3 WAL FULL commit", 1000 / rate))
    if raw_ms is not None:
        references.append(("in-process raw sqlite3 WAL FULL commit", raw_ms))
    for mode in MODES:
        s = by.get(("sqlite", mode))
        if s is None:
            continue
        for label, ref_ms in references:
            ratio = s["ms_per_transition"] / ref_ms
            lines.append(
                f"| sqlite, {mode}: ms per persisted transition vs {label} | "
                f"{s['ms_per_transition']:.3f} | {ref_ms:.3f} | {ratio:.2f}x | <= 2x | "
                f"{'yes' if ratio <= 2 else 'no'} |"
            )
    return lines


# --------------------------------------------------------------------------- entry point


def run_database(args: argparse.Namespace, db: str) -> dict[str, Any]:
    spec = blueprint(ActionRegistry.builtin())
    runs: dict[str, list[Run]] = {mode: [] for mode in args.modes}
    raw_ms = raw_sqlite_commit_ms(args.tmpdir) if db == "sqlite" else None
    for rep in range(args.repeat):
        for mode in args.modes:
            run = one_run(args, db, mode, spec)
            runs[mode].append(run)
            note(
                f"[{db}/{mode}] rep {rep + 1}/{args.repeat}: {run.per_second:.1f} exec/s, "
                f"{run.ms_per_execution:.2f} ms/exec, {run.transitions / run.wall_s:,.0f} "
                f"transitions/s, verified; load {run.loadavg[0]:.1f} -> {run.loadavg[1]:.1f}"
            )
    return {
        "db": db,
        "raw_sqlite_commit_ms": raw_ms,
        "summaries": [summarize(runs[mode]) for mode in args.modes],
        "runs": [asdict(r) for mode in args.modes for r in runs[mode]],
        "peak_rss_mib": peak_rss_mib(),
    }


def in_child(args: argparse.Namespace, db: str) -> dict[str, Any]:
    """Run one database in a child process (its own peak RSS)."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "out.json"
        command = [
            sys.executable,
            __file__,
            "--db",
            db,
            "--executions",
            str(args.executions),
            "--concurrency",
            str(args.concurrency),
            "--repeat",
            str(args.repeat),
            "--warmup",
            str(args.warmup),
            "--modes",
            ",".join(args.modes),
            "--child-json",
            str(out),
        ]
        if args.tmpdir:
            command += ["--tmpdir", args.tmpdir]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    def git(*command: str) -> str:
        done = subprocess.run(
            ["git", *command], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return done.stdout.strip()

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_changed_since_commit": bool(git("status", "--porcelain", "--", "../src")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": version("sqlalchemy"),
        "psycopg": version("psycopg"),
        "anyio": version("anyio"),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--executions", type=int, default=1000, help="N per mode and repetition")
    parser.add_argument("--concurrency", type=int, default=100, help="C executions at once")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians reported)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed executions first")
    parser.add_argument("--modes", default=",".join(MODES), help="sequential,concurrent")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--peers", type=Path, default=None, help="bench-peers results dir")
    parser.add_argument("--tmpdir", default=None, help="where the SQLite files go")
    parser.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if args.executions < 1 or args.concurrency < 1 or args.repeat < 1:
        parser.error("--executions, --concurrency and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child_json is not None:
        args.child_json.write_text(json.dumps(run_database(args, args.db), default=str))
        return
    env = environment()
    databases = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if len(databases) > 1:
        results = [in_child(args, db) for db in databases]
    else:
        results = [run_database(args, databases[0])]
    summaries = [s for r in results for s in r["summaries"]]
    raw_ms = next((r["raw_sqlite_commit_ms"] for r in results if r["raw_sqlite_commit_ms"]), None)
    loads = [s["max_loadavg"] for s in summaries]
    say(
        f"opsgate engine, {STEPS} sequential log steps; medians of {args.repeat}; "
        f"{env['cpus']} CPUs; {env['time']}; commit {env['commit']}"
        f"{' + uncommitted src changes' if env['src_changed_since_commit'] else ''}; "
        f"highest 1-min load average seen {max(loads):.1f}"
    )
    say()
    say(table(summaries))
    if raw_ms is not None:
        say()
        say(f"in-process raw sqlite3 (WAL, FULL) UPDATE+INSERT+COMMIT: {raw_ms:.3f} ms")
    comparison = compare(summaries, args.peers, raw_ms) if args.peers else []
    if len(comparison) > 2:
        say()
        say("\n".join(comparison))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"env": env, "params": vars(args), "results": results}
        args.json.write_text(json.dumps(document, indent=2, default=str))
        note(f"wrote {args.json}")


if __name__ == "__main__":
    main()
