"""The ledger: the user's own queryable record of runs, plan versions, nodes and model calls.

Prefect keeps its state in its own database; this is the copy a person (or a
script) can query with plain SQL, and it outlives Prefect's retention. SQLite in
`PLANFLOW_HOME` by default; any SQLAlchemy URL via `PLANFLOW_DATABASE_URL`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import UniqueConstraint, event, func, inspect, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from planner.errors import RunInProgressError
from planner.liveness import HEARTBEAT_STALE_AFTER, Owner, is_alive
from planner.llm import LLMCall
from planner.models import Plan, Repair

__all__ = [
    "HEARTBEAT_STALE_AFTER",
    "DecisionRecord",
    "Ledger",
    "LLMCallRecord",
    "NodeRecord",
    "PlanVersionRecord",
    "RunRecord",
    "ToolCallRecord",
    "owner_is_alive",
    "this_owner",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def this_owner() -> str:
    """Who executes a run: `host:pid:start:boot:token` (see `planner.liveness`). The pid,
    its start time and the boot id find a dead local owner at once, zombie or pid reused;
    the token tells two runs of one process apart."""
    return str(Owner.current())


def owner_is_alive(owner: str | None, heartbeat_at: datetime | None, now: datetime | None = None) -> bool:
    """True if the owner may still be executing: that very local process (not a zombie,
    not a reused pid, this boot), or, when that cannot be told, a fresh heartbeat."""
    return is_alive(owner, heartbeat_at, now)


class RunRecord(SQLModel, table=True):
    __tablename__ = "runs"

    run_key: str = Field(primary_key=True)
    goal: str
    status: str = Field(default="running", index=True)  # running | completed | failed | crashed | cancelled
    flow_run_id: str | None = None
    prefect_api_url: str | None = None  # the Prefect API its flow run lives on (a temporary server's dies with it)
    owner: str | None = None  # host:pid:start:boot:token of the process executing it, while running
    heartbeat_at: datetime | None = None
    model: str | None = None
    answer: str | None = None
    error: str | None = None
    plan_version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # Who cancelled it and when they asked ("ctrl-c", "prefect" for the UI or `prefect flow-run
    # cancel`, a user name for `planflow runs cancel`); set while running, it is a pending request.
    cancelled_by: str | None = None
    cancelled_at: datetime | None = None


class PlanVersionRecord(SQLModel, table=True):
    __tablename__ = "plan_versions"

    id: int | None = Field(default=None, primary_key=True)
    run_key: str = Field(index=True)
    version: int
    reason: str
    action: str | None = None
    failed_node: str | None = None
    plan_json: str
    repairs_json: str = "[]"
    requested_by: str | None = None  # who asked for this version, when a person did (a rerun)
    rerun_json: str | None = None  # a rerun's from, nodes, flow_run_id, previous_results (planner.rerun)
    created_at: datetime = Field(default_factory=utcnow)


class NodeRecord(SQLModel, table=True):
    __tablename__ = "nodes"

    run_key: str = Field(primary_key=True)
    node_id: str = Field(primary_key=True)
    plan_version: int = 1
    position: int = 0
    description: str
    depends_on_json: str = "[]"
    status: str = "pending"  # pending | running | completed | cached | failed | skipped | cancelled
    attempts: int = 0
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    result: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    replan_pending: bool = False  # failed for good and the replanner was asked: a resume asks again, not the node


class LLMCallRecord(SQLModel, table=True):
    __tablename__ = "llm_calls"

    id: int | None = Field(default=None, primary_key=True)
    run_key: str = Field(index=True)
    purpose: str  # plan | node | synthesis | replan
    node_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None
    at: datetime = Field(default_factory=utcnow)


class ToolCallRecord(SQLModel, table=True):
    """One tool call of a node: written before the tool runs and again after, so a call
    that started and never ended is known after a crash (at most once for side effects)."""

    __tablename__ = "tool_calls"
    __table_args__ = (UniqueConstraint("run_key", "node_id", "rerun_version", "step", "call_index"),)

    id: int | None = Field(default=None, primary_key=True)
    run_key: str = Field(index=True)
    node_id: str
    rerun_version: int = 0  # a rerun's calls are calls of their own (planner.rerun); the earlier ones stay
    step: int
    call_index: int
    tool: str
    arguments: str
    idempotent: bool = False
    result: str | None = None
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    cached: bool = False  # replayed from Prefect's cache by a later run of the key


class DecisionRecord(SQLModel, table=True):
    """A pause for a person (`--approve-plan`, `--on-exhausted ask`) and what they decided.

    Written when the run pauses (what it waits for) and again when it is answered
    (who, what, when): a row with no `decided_at` is a pause still waiting.
    """

    __tablename__ = "decisions"

    id: int | None = Field(default=None, primary_key=True)
    run_key: str = Field(index=True)
    kind: str  # approval | failure
    pause_key: str  # Prefect's pause key, which names the run input the answer goes to
    plan_version: int
    node_id: str | None = None  # with a failure: the task that failed
    question: str  # what the run waits for, in one line
    asked_at: datetime = Field(default_factory=utcnow)
    action: str | None = None  # approve | edit | abort | replan | timed_out | unanswered
    detail: str = ""  # the hint, the reason, or what an edit changed
    decided_by: str | None = None  # a user name (the CLI's), or "ui" when the form gave none
    decided_at: datetime | None = None


def _tool_call_where(run_key: str, node_id: str, step: int, index: int, rerun_version: int = 0) -> Any:
    """The one row of a call: its place in the run (the table's unique key)."""
    c = ToolCallRecord.__table__.c
    place = (c.run_key == run_key) & (c.node_id == node_id) & (c.step == step) & (c.call_index == index)
    return place & (c.rerun_version == rerun_version)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the display read while nodes write; the busy timeout rides out write bursts.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: no fsync per commit, never corrupt
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Ledger:
    """Reads and writes the ledger. Safe to share between threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = self._make_engine(url)
        for attempt in range(10):
            try:
                self._create_schema()
                break
            except OperationalError:  # another process was creating it at the same moment
                if attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several runs starting at once on an empty database would race to create types.
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            SQLModel.metadata.create_all(conn)
        self._add_missing_columns()
        self._widen_tool_call_identity()

    def _add_missing_columns(self) -> None:
        """Bring a ledger made by an older Planflow up to date.

        Changes so far only add nullable (or defaulted) columns, so adding what is
        missing is the whole migration; `create_all` never alters existing tables.
        """
        inspector = inspect(self.engine)
        with self.engine.begin() as conn:
            for table in SQLModel.metadata.sorted_tables:
                existing = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in existing:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))

    def _widen_tool_call_identity(self) -> None:
        """A ledger made before reruns has tool calls unique by (run, node, step, index):
        rebuild that key with `rerun_version`, so a rerun's calls are rows of their own."""
        wanted = ["run_key", "node_id", "rerun_version", "step", "call_index"]
        old = ["run_key", "node_id", "step", "call_index"]

        def outdated() -> list[Any]:
            return [u for u in inspect(self.engine).get_unique_constraints("tool_calls") if u["column_names"] == old]

        if not outdated():
            return
        table = ToolCallRecord.__table__
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
                conn.execute(text("UPDATE tool_calls SET rerun_version = 0 WHERE rerun_version IS NULL"))
                for constraint in outdated():
                    conn.execute(text(f'ALTER TABLE tool_calls DROP CONSTRAINT IF EXISTS "{constraint["name"]}"'))
                conn.execute(text(f"ALTER TABLE tool_calls ADD UNIQUE ({', '.join(wanted)})"))
                return
            # SQLite cannot drop a constraint: copy the rows into a table made anew, in one transaction.
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # another process migrating waits, then finds it done
            if "rerun_version, step" in (conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tool_calls'"
            ).scalar() or ""):
                return
            conn.exec_driver_sql("ALTER TABLE tool_calls RENAME TO tool_calls_before_reruns")
            for index in table.indexes:
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index.name}"')
            table.create(conn)
            conn.exec_driver_sql(
                f"INSERT INTO tool_calls ({columns}) SELECT "
                + ", ".join("COALESCE(rerun_version, 0)" if c.name == "rerun_version" else f'"{c.name}"' for c in table.columns)
                + " FROM tool_calls_before_reruns"
            )
            conn.exec_driver_sql("DROP TABLE tool_calls_before_reruns")

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)

    def close(self) -> None:
        """Close the pooled connections (a process that runs many flows would keep them all)."""
        self.engine.dispose()

    def check(self) -> None:
        """Fail fast, with the database's own error, if the ledger is unreachable."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- runs --------------------------------------------------------------------

    def start_run(
        self,
        run_key: str,
        goal: str,
        *,
        flow_run_id: str | None,
        model: str,
        owner: str | None = None,
        prefect_api_url: str | None = None,
    ) -> RunRecord | None:
        """Claim the run for `owner`: create it, or take over one that is not running
        (a resume) or whose owner is dead. Returns the dead owner's record, if any.

        Raises `RunInProgressError` if a live process holds it, so one run key is
        never executed twice at once.
        """
        owner = owner or this_owner()
        now = utcnow()
        previous = self.run(run_key)
        if previous is not None and previous.status == "running" and previous.owner != owner:
            if owner_is_alive(previous.owner, previous.heartbeat_at, now):
                raise RunInProgressError(
                    f"run {run_key!r} is already running (flow run {previous.flow_run_id}, "
                    f"process {previous.owner}): wait for it, or pick another --run-key"
                )
        claim = dict(
            status="running", error=None, finished_at=None, flow_run_id=flow_run_id,
            prefect_api_url=prefect_api_url, model=model, started_at=now, owner=owner, heartbeat_at=now,
            cancelled_by=None, cancelled_at=None,
        )
        with self.engine.begin() as conn:
            if previous is None:
                try:
                    conn.execute(RunRecord.__table__.insert().values(run_key=run_key, goal=goal, created_at=now, **claim))
                except IntegrityError:
                    raise RunInProgressError(f"run {run_key!r} was started by another process a moment ago") from None
                return None
            # Compare-and-set on what we read, so two claimants cannot both win.
            result = conn.execute(
                update(RunRecord)
                .where(
                    RunRecord.run_key == run_key,
                    RunRecord.status == previous.status,
                    RunRecord.owner.is_(None) if previous.owner is None else RunRecord.owner == previous.owner,
                )
                .values(**claim)
            )
            if result.rowcount != 1:
                raise RunInProgressError(f"run {run_key!r} was claimed by another process a moment ago")
        return previous if previous.status == "running" else None

    def heartbeat(self, run_key: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(RunRecord)
                .where(RunRecord.run_key == run_key, RunRecord.owner == owner)
                .values(heartbeat_at=utcnow())
            )

    def mark_crashed(self, run_key: str, reason: str) -> None:
        """Record that a run's process died while running it (found by a later look)."""
        with Session(self.engine) as s:
            run = s.get(RunRecord, run_key)
            if run is not None and run.status == "running":
                run.status, run.error, run.owner = "crashed", reason, None
                s.add(run)
                s.commit()

    def stale_runs(self) -> list[RunRecord]:
        """Runs marked running whose owner is gone: crashed, though nobody said so yet."""
        with Session(self.engine, expire_on_commit=False) as s:
            running = s.exec(select(RunRecord).where(RunRecord.status == "running"))
            return [r for r in running if not owner_is_alive(r.owner, r.heartbeat_at)]

    def finish_run(self, run_key: str, *, status: str, answer: str | None = None, error: str | None = None) -> None:
        with Session(self.engine) as s:
            run = s.get(RunRecord, run_key)
            if run is None:
                return
            run.status, run.answer, run.error, run.finished_at = status, answer, error, utcnow()
            run.owner = None
            if status != "cancelled":  # a cancel asked for as it ended came too late
                run.cancelled_by = run.cancelled_at = None
            s.add(run)
            s.commit()

    def request_cancel(self, run_key: str, by: str | None) -> bool:
        """Note who asked to cancel a running run (None: withdraw the request), so the
        process that executes it records that name; False if it is not running."""
        values = {"cancelled_by": by, "cancelled_at": utcnow() if by else None}
        with self.engine.begin() as conn:
            result = conn.execute(
                update(RunRecord).where(RunRecord.run_key == run_key, RunRecord.status == "running").values(**values)
            )
        return result.rowcount == 1

    def cancel_run(self, run_key: str, *, by: str, at: datetime | None = None, flow_run_id: str | None = None) -> bool:
        """End a running run as cancelled: its running nodes become cancelled (finished ones
        keep their results), and a pause still waiting is closed as cancelled. A pending
        request's name and time win over `by` and `at`.
        With `flow_run_id`, only if that is still the run's flow run. False if nothing changed."""
        now = utcnow()
        with Session(self.engine) as s:
            run = s.get(RunRecord, run_key)
            if run is None or run.status != "running" or (flow_run_id and run.flow_run_id != flow_run_id):
                return False
            run.cancelled_by = run.cancelled_by or by
            run.cancelled_at = run.cancelled_at or at or now
            run.status, run.error, run.finished_at, run.owner = "cancelled", f"cancelled by {run.cancelled_by}", now, None
            s.add(run)
            s.exec(
                update(NodeRecord)
                .where(NodeRecord.run_key == run_key, NodeRecord.status == "running")
                .values(status="cancelled", error=f"cancelled by {run.cancelled_by}", finished_at=now)
            )
            s.exec(  # a pause still waiting for a person is answered by the cancel
                update(DecisionRecord)
                .where(DecisionRecord.run_key == run_key, DecisionRecord.decided_at.is_(None))
                .values(action="cancelled", detail=f"the run was cancelled by {run.cancelled_by}",
                        decided_by=run.cancelled_by, decided_at=now)
            )
            s.commit()
        return True

    def run(self, run_key: str) -> RunRecord | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.get(RunRecord, run_key)

    def run_by_flow_run(self, flow_run_id: str) -> RunRecord | None:
        """The run whose latest flow run is `flow_run_id`."""
        with Session(self.engine, expire_on_commit=False) as s:
            return s.exec(select(RunRecord).where(RunRecord.flow_run_id == flow_run_id)).first()

    def runs(self, limit: int = 50) -> list[RunRecord]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.exec(select(RunRecord).order_by(RunRecord.started_at.desc()).limit(limit)))

    # -- plan versions -----------------------------------------------------------

    def record_plan_version(
        self,
        run_key: str,
        version: int,
        plan: Plan,
        repairs: Iterable[Repair],
        *,
        reason: str,
        action: str | None = None,
        failed_node: str | None = None,
    ) -> None:
        """Store a plan version (once; a resume re-records the same version harmlessly)
        and register its tasks: new ones as pending; unfinished ones take the new
        version's description and dependencies; finished ones stay as they are."""
        with Session(self.engine) as s:
            existing = s.exec(
                select(PlanVersionRecord).where(
                    PlanVersionRecord.run_key == run_key, PlanVersionRecord.version == version
                )
            ).first()
            if existing is None:
                s.add(
                    PlanVersionRecord(
                        run_key=run_key,
                        version=version,
                        reason=reason,
                        action=action,
                        failed_node=failed_node,
                        plan_json=plan.model_dump_json(),
                        repairs_json=json.dumps([r.model_dump() for r in repairs]),
                    )
                )
            for position, task in enumerate(plan.tasks):
                node = s.get(NodeRecord, (run_key, task.id))
                if node is None:
                    node = NodeRecord(run_key=run_key, node_id=task.id, description=task.description)
                    node.plan_version, node.position = version, version * 10_000 + position
                elif node.status in ("completed", "cached") or node.plan_version > version:
                    continue
                elif node.plan_version < version:
                    node.plan_version, node.status, node.error = version, "pending", None
                node.description = task.description
                node.depends_on_json = json.dumps(list(task.depends_on))
                s.add(node)
            run = s.get(RunRecord, run_key)
            if run is not None:
                run.plan_version = max(run.plan_version, version)
                s.add(run)
            s.commit()

    def record_rerun(
        self,
        run_key: str,
        version: int,
        plan: Plan,
        *,
        node: str,
        nodes: Iterable[str],
        requested_by: str,
        flow_run_id: str | None,
    ) -> None:
        """Store a rerun's plan version and make its `nodes` pending again, in one transaction.

        Their results so far are kept in the version's `rerun_json` (`previous_results`);
        the new ones replace them in `nodes` as the nodes run. Once per version: recording
        the same version again changes nothing.
        """
        nodes = list(nodes)
        with Session(self.engine) as s:
            if s.exec(
                select(PlanVersionRecord).where(PlanVersionRecord.run_key == run_key, PlanVersionRecord.version == version)
            ).first() is not None:
                return
            previous = {n: r.result for n in nodes if (r := s.get(NodeRecord, (run_key, n))) is not None and r.result}
            rerun = {"from": node, "nodes": nodes, "flow_run_id": flow_run_id, "previous_results": previous}
            s.add(
                PlanVersionRecord(
                    run_key=run_key, version=version, reason=f"rerun from {node}", action="rerun",
                    plan_json=plan.model_dump_json(), requested_by=requested_by, rerun_json=json.dumps(rerun),
                )
            )
            for task in plan.tasks:
                record = s.get(NodeRecord, (run_key, task.id))
                if record is None:
                    continue
                if task.id in nodes:
                    record.status, record.cached, record.attempts, record.replan_pending = "pending", False, 0, False
                    record.result = record.error = record.started_at = record.finished_at = None
                    record.prompt_tokens = record.completion_tokens = 0
                    record.plan_version = version
                elif record.status not in ("completed", "cached"):
                    record.plan_version, record.status, record.error = version, "pending", None
                record.description = task.description
                s.add(record)
            run = s.get(RunRecord, run_key)
            if run is not None:
                run.plan_version = max(run.plan_version, version)
                s.add(run)
            s.commit()

    def plan_versions(self, run_key: str) -> list[PlanVersionRecord]:
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(PlanVersionRecord).where(PlanVersionRecord.run_key == run_key)
            return list(s.exec(query.order_by(PlanVersionRecord.version)))

    # -- nodes -------------------------------------------------------------------

    def _update_node(self, run_key: str, node_id: str, **changes: Any) -> None:
        """One UPDATE statement (no read first): this runs once or twice per node."""
        values: dict[str, Any] = dict(changes)
        if values.pop("attempts_increment", None):
            values["attempts"] = NodeRecord.attempts + 1
        with self.engine.begin() as conn:
            conn.execute(
                update(NodeRecord)
                .where(NodeRecord.run_key == run_key, NodeRecord.node_id == node_id)
                .values(**values)
            )

    def node_attempt_started(self, run_key: str, node_id: str) -> int:
        """Mark the node running; return its attempts so far, this one included (1: its first ever)."""
        where = (NodeRecord.run_key == run_key) & (NodeRecord.node_id == node_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(NodeRecord)
                .where(where)
                .values(status="running", attempts=NodeRecord.attempts + 1, started_at=utcnow(), error=None)
            )
            attempts = conn.execute(select(NodeRecord.attempts).where(where)).scalar()
        return int(attempts or 0)

    def node_completed(
        self, run_key: str, node_id: str, *, result: str, prompt_tokens: int, completion_tokens: int, cached: bool
    ) -> None:
        changes: dict[str, Any] = {"status": "cached" if cached else "completed", "cached": cached, "result": result}
        if not cached:  # a replayed node keeps the tokens and times of the run that paid for it
            changes.update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, finished_at=utcnow())
        self._update_node(run_key, node_id, **changes)

    def node_failed(self, run_key: str, node_id: str, error: str) -> None:
        self._update_node(run_key, node_id, status="failed", error=error, finished_at=utcnow())

    def node_replan_pending(self, run_key: str, node_id: str, pending: bool = True) -> None:
        """The node failed for good and the replanner is being asked about it (or no longer is)."""
        self._update_node(run_key, node_id, replan_pending=pending)

    def node_skipped(self, run_key: str, node_id: str, reason: str) -> None:
        self._update_node(run_key, node_id, status="skipped", error=reason)

    def nodes(self, run_key: str) -> list[NodeRecord]:
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(NodeRecord).where(NodeRecord.run_key == run_key)
            return list(s.exec(query.order_by(NodeRecord.position)))

    # -- model calls -------------------------------------------------------------

    def record_llm_call(self, run_key: str, call: LLMCall) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                LLMCallRecord.__table__.insert().values(
                    run_key=run_key,
                    purpose=call.purpose,
                    node_id=call.node_id,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                    seconds=call.seconds,
                    error=call.error,
                    at=utcnow(),
                )
            )

    def llm_totals(self, run_key: str) -> dict[str, int]:
        with Session(self.engine) as s:
            row = s.exec(
                select(
                    func.count(LLMCallRecord.id),
                    func.coalesce(func.sum(LLMCallRecord.prompt_tokens), 0),
                    func.coalesce(func.sum(LLMCallRecord.completion_tokens), 0),
                ).where(LLMCallRecord.run_key == run_key)
            ).one()
            return {"calls": int(row[0]), "prompt_tokens": int(row[1]), "completion_tokens": int(row[2])}

    # -- a person's decisions ----------------------------------------------------

    def pause_asked(
        self, run_key: str, *, kind: str, pause_key: str, plan_version: int, question: str, node_id: str | None = None
    ) -> int:
        """Record that the run now waits for a person; returns the decision's id.

        A run pauses once at a time, so a pause still open from an earlier process
        (killed while it waited) was never answered: it is closed as such.
        """
        table = DecisionRecord.__table__
        with self.engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.run_key == run_key, table.c.decided_at.is_(None))
                .values(action="unanswered", detail="the run's process ended while it waited", decided_at=utcnow())
            )
            inserted = conn.execute(
                table.insert().values(
                    run_key=run_key, kind=kind, pause_key=pause_key, plan_version=plan_version,
                    node_id=node_id, question=question, asked_at=utcnow(), detail="",
                )
            )
            return int(inserted.inserted_primary_key[0])

    def pause_answered(self, decision_id: int, *, action: str, detail: str, decided_by: str) -> None:
        """Record what a person decided (or that nobody did: `action="timed_out"`)."""
        table = DecisionRecord.__table__
        with self.engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == decision_id)
                .values(action=action, detail=detail, decided_by=decided_by, decided_at=utcnow())
            )

    def open_pause(self, run_key: str) -> DecisionRecord | None:
        """The pause the run waits in now (as far as the ledger knows), if any."""
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(DecisionRecord).where(DecisionRecord.run_key == run_key, DecisionRecord.decided_at.is_(None))
            return s.exec(query.order_by(DecisionRecord.id.desc())).first()

    def decisions(self, run_key: str) -> list[DecisionRecord]:
        """A run's pauses and their answers, oldest first (an open pause last, undecided)."""
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(DecisionRecord).where(DecisionRecord.run_key == run_key)
            return list(s.exec(query.order_by(DecisionRecord.id)))

    # -- tool calls ----------------------------------------------------------------

    def tool_call_started(
        self,
        run_key: str,
        node_id: str,
        step: int,
        index: int,
        *,
        tool: str,
        arguments: str,
        idempotent: bool,
        rerun_version: int = 0,
    ) -> None:
        """Record that a call is about to run (again, for an idempotent re-run after a crash)."""
        values = dict(tool=tool, arguments=arguments, idempotent=idempotent, started_at=utcnow(),
                      finished_at=None, result=None, error=None, cached=False)
        table = ToolCallRecord.__table__
        with self.engine.begin() as conn:
            where = _tool_call_where(run_key, node_id, step, index, rerun_version)
            if conn.execute(table.update().where(where).values(**values)).rowcount == 0:
                conn.execute(table.insert().values(
                    run_key=run_key, node_id=node_id, rerun_version=rerun_version, step=step, call_index=index, **values
                ))

    def tool_call_finished(
        self,
        run_key: str,
        node_id: str,
        step: int,
        index: int,
        *,
        result: str | None,
        error: str | None,
        rerun_version: int = 0,
    ) -> None:
        where = (run_key, node_id, step, index, rerun_version)
        self._update_tool_call(*where, result=result, error=error, finished_at=utcnow())

    def tool_call_replayed(self, run_key: str, node_id: str, step: int, index: int, *, rerun_version: int = 0) -> None:
        self._update_tool_call(run_key, node_id, step, index, rerun_version, cached=True)

    def _update_tool_call(
        self, run_key: str, node_id: str, step: int, index: int, rerun_version: int, **values: Any
    ) -> None:
        where = _tool_call_where(run_key, node_id, step, index, rerun_version)
        with self.engine.begin() as conn:
            conn.execute(ToolCallRecord.__table__.update().where(where).values(**values))

    def tool_call(
        self, run_key: str, node_id: str, step: int, index: int, *, rerun_version: int = 0
    ) -> ToolCallRecord | None:
        with Session(self.engine) as s:
            where = _tool_call_where(run_key, node_id, step, index, rerun_version)
            return s.exec(select(ToolCallRecord).where(where)).first()

    def tool_calls(self, run_key: str, node_id: str | None = None) -> list[ToolCallRecord]:
        """A run's tool calls (or one node's), in the order they were made (a rerun's after the earlier ones)."""
        with Session(self.engine) as s:
            query = select(ToolCallRecord).where(ToolCallRecord.run_key == run_key)
            if node_id is not None:
                query = query.where(ToolCallRecord.node_id == node_id)
            order = (ToolCallRecord.node_id, ToolCallRecord.rerun_version, ToolCallRecord.step, ToolCallRecord.call_index)
            return list(s.exec(query.order_by(*order)))
