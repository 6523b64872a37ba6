"""The OpenAI Batch API: files, and batches that run their lines as jobs in the cheapest hours.

A batch moves through OpenAI's statuses: `validating` (every line parsed and checked as its
endpoint would check it alone), then `in_progress` (lines become jobs), `finalizing` (the output
and error files are written), and ends `completed`, `failed` (a line did not validate: nothing
ran), `expired` (the completion window passed; what finished is in the output) or `cancelled`
(through `cancelling`). `request_counts` says how many lines are done and failed.

How lines run:
- A batch with `completion_window` "24h" runs its lines as flex work (a line's own `tier` extra
  field may ask for another), with the window's end as their deadline: the scheduler runs them
  in the cheapest hours before it, at the flex price. This is where mine-or-serve pays the
  customer.
- Admission counts a batch as a batch: its lines are accepted whole when it is created (up to
  `max_lines`), and the runner keeps at most `in_flight` of them, and never more than the
  tenant's quota has room for, queued at a time. The per-request rate and burst do not apply.
- Each line's job has the idempotency key `<batch id>:<line>`, so a scheduler restarted in the
  middle resumes the batch (`start`) and gets the same jobs back, never a second copy.

Files are a tenant's own: another tenant's file or batch id answers 404, like one that never
existed. Files expire `retention_s` after they were written (the output too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.api.auth import Principal
from scheduler.api.convert import job_to_proto
from scheduler.api.customer_service import CustomerService, Refusal
from scheduler.api.openai.schema import (
    ENDPOINTS,
    ApiError,
    Endpoint,
    Knobs,
    invalid,
    job_error,
    parse,
)
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.models import Tier
from scheduler.core.scheduler import NodeState, Step
from scheduler.journal.base import BatchRow, FileRow, Journal

log = logging.getLogger("hashserve.scheduler.batches")

WINDOWS_S = {"24h": 24 * 3600.0}
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
SUBMIT_CHUNK = 256  # the gRPC SubmitJobs bound; one journal transaction each
RETRY_S = 1.0
SAVE_EVERY_S = 2.0


@dataclass(frozen=True)
class BatchLimits:
    max_lines: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
    in_flight: int = 1024
    retention_s: float = 30 * 86_400.0


def _new_id(prefix: str) -> str:
    # Time first, so ids sort by creation like OpenAI's; then 12 random bytes.
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(12)}"


def file_object(row: FileRow) -> dict[str, Any]:
    return {"id": row.file_id, "object": "file", "bytes": row.size_bytes,
            "created_at": int(row.created_s), "expires_at": int(row.expires_s),
            "filename": row.filename, "purpose": row.purpose, "status": "processed",
            "status_details": None}


@dataclass
class Line:
    index: int
    custom_id: str
    endpoint: Endpoint
    body: Knobs
    spec: jobs_pb2.JobSpec
    line_no: int  # in the file, from 1 (blank lines count)
    job_id: str = ""
    done: bool = False


def parse_lines(
    content: bytes, endpoint_path: str, default_tier: str, deadline_at_s: float, created_s: float,
    max_lines: int,
) -> tuple[list[Line], list[dict[str, Any]]]:
    """The input file's lines, or the errors (OpenAI's `{code, message, line, param}`, lines
    counted from 1) that fail the batch. Pure."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return [], [{"code": "invalid_file", "message": "the file is not UTF-8", "line": None,
                     "param": None}]
    raw_lines = [(n, r) for n, r in enumerate(text.splitlines(), start=1) if r.strip()]
    if not raw_lines:
        return [], [{"code": "empty_file", "message": "the file has no requests", "line": None,
                     "param": None}]
    if len(raw_lines) > max_lines:
        return [], [{"code": "too_many_requests",
                     "message": f"the file has {len(raw_lines)} requests; at most {max_lines}",
                     "line": None, "param": None}]
    for n, raw in raw_lines:
        def fail(code: str, message: str, param: str | None = None, line_no: int = n) -> None:
            errors.append({"code": code, "message": message, "line": line_no, "param": param})

        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as err:
            fail("invalid_json_line", f"line {n} is not JSON: {err.msg}")
            continue
        if not isinstance(doc, dict):
            fail("invalid_json_line", f"line {n} is not a JSON object")
            continue
        custom_id = doc.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            fail("missing_custom_id", "custom_id must be a non-empty string", "custom_id")
            continue
        if custom_id in seen:
            fail("duplicate_custom_id", f"custom_id {custom_id!r} is used twice", "custom_id")
            continue
        seen.add(custom_id)
        if doc.get("method", "POST") != "POST":
            fail("invalid_method", "method must be POST", "method")
            continue
        if doc.get("url") != endpoint_path:
            fail("mismatched_url", f"url must be the batch's endpoint {endpoint_path}", "url")
            continue
        endpoint = ENDPOINTS[endpoint_path]
        try:
            body = parse(endpoint.request, doc.get("body"))
            if getattr(body, "stream", False):
                raise invalid("stream is not supported in a batch", param="stream")
            spec = endpoint.spec(body, default_tier, deadline_at_s, created_s)
        except ApiError as err:
            fail("invalid_request", err.message, f"body.{err.param}" if err.param else "body")
            continue
        lines.append(Line(len(lines), custom_id, endpoint, body, spec, n))
    return lines, errors


@dataclass
class _Run:
    """A batch being run: its object, its lines, and who it acts for."""

    row: BatchRow
    doc: dict[str, Any]
    principal: Principal
    lines: list[Line] = field(default_factory=list)
    waiting: dict[str, Line] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    saved_s: float = 0.0


class BatchService:
    """Files and batches for the HTTP front; a control-loop observer, to learn when a line's job
    ends without polling."""

    def __init__(self, customers: CustomerService, journal: Journal,
                 limits: BatchLimits = BatchLimits(),
                 clock: Callable[[], float] = time.time) -> None:
        self.customers = customers
        self.journal = journal
        self.limits = limits
        self.clock = clock
        self._runs: dict[str, _Run] = {}
        self._by_job: dict[str, _Run] = {}
        self._pruner: asyncio.Task[None] | None = None
        customers.loop.observers.append(self)

    # ----- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the batches a stopped scheduler left open, and prune expired files hourly."""
        for row in await asyncio.to_thread(self.journal.open_batches):
            self._launch(row, json.loads(row.doc))
        self._pruner = asyncio.create_task(self._prune(), name="batch-file-pruner")

    async def stop(self) -> None:
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        if self._pruner is not None:
            tasks.append(self._pruner)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runs.clear()
        self._by_job.clear()

    async def _prune(self) -> None:
        while True:
            gone = await asyncio.to_thread(self.journal.forget_files_expired, self.clock())
            if gone:
                log.info("removed %d expired batch file(s)", gone)
            await asyncio.sleep(3600.0)

    # ----- files -------------------------------------------------------------------------------

    async def create_file(self, principal: Principal, filename: str, purpose: str,
                          content: bytes) -> dict[str, Any]:
        if purpose != "batch":
            raise invalid("purpose must be batch (the only one this server keeps files for)",
                          param="purpose")
        if len(content) > self.limits.max_file_bytes:
            raise invalid(f"the file has {len(content)} bytes; at most "
                          f"{self.limits.max_file_bytes}", param="file")
        if not content.strip():
            raise invalid("the file is empty", param="file")
        return file_object(await self._write_file(principal.tenant, filename, purpose, content))

    async def _write_file(self, tenant: str, filename: str, purpose: str,
                          content: bytes) -> FileRow:
        now_s = self.clock()
        row = FileRow(_new_id("file-"), tenant, purpose, filename or "upload.jsonl",
                      len(content), now_s, now_s + self.limits.retention_s, content)
        await asyncio.to_thread(self.journal.put_file, row)
        return row

    async def own_file(self, principal: Principal, file_id: str) -> FileRow:
        row = await asyncio.to_thread(self.journal.get_file, file_id)
        if row is None or row.tenant != principal.tenant or row.expires_s <= self.clock():
            raise ApiError(404, "not_found_error", f"no file {file_id}", param="file_id")
        return row

    async def list_files(self, principal: Principal, purpose: str = "") -> list[dict[str, Any]]:
        now_s = self.clock()
        rows = await asyncio.to_thread(self.journal.list_files, principal.tenant, purpose)
        return [file_object(r) for r in rows if r.expires_s > now_s]

    async def delete_file(self, principal: Principal, file_id: str) -> dict[str, Any]:
        await self.own_file(principal, file_id)
        await asyncio.to_thread(self.journal.delete_file, file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # ----- batches -----------------------------------------------------------------------------

    async def create_batch(self, principal: Principal, input_file_id: str, endpoint: str,
                           completion_window: str,
                           metadata: Mapping[str, str] | None) -> dict[str, Any]:
        if endpoint not in ENDPOINTS:
            raise invalid(f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        window_s = WINDOWS_S.get(completion_window)
        if window_s is None:
            raise invalid(f"completion_window must be one of {', '.join(WINDOWS_S)}",
                          param="completion_window")
        source = await self.own_file(principal, input_file_id)
        if source.purpose != "batch":
            raise invalid(f"file {input_file_id} is not a batch input", param="input_file_id")
        now_s = self.clock()
        batch_id = _new_id("batch_")
        doc: dict[str, Any] = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": input_file_id, "completion_window": completion_window,
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": int(now_s), "in_progress_at": None,
            "expires_at": int(now_s + window_s), "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": dict(metadata) if metadata else None,
        }
        row = BatchRow(batch_id, principal.tenant, principal.key_id, "validating", now_s,
                       json.dumps(doc))
        await asyncio.to_thread(self.journal.put_batch, row)
        self._launch(row, doc)
        return doc

    async def own_batch(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        run = self._runs.get(batch_id)
        if run is not None and run.row.tenant == principal.tenant:
            return dict(run.doc)
        row = await asyncio.to_thread(self.journal.get_batch, batch_id)
        if row is None or row.tenant != principal.tenant:
            raise ApiError(404, "not_found_error", f"no batch {batch_id}", param="batch_id")
        doc: dict[str, Any] = json.loads(row.doc)
        return doc

    async def list_batches(self, principal: Principal, limit: int,
                           after: str) -> tuple[list[dict[str, Any]], bool]:
        rows = await asyncio.to_thread(self.journal.list_batches, principal.tenant, limit + 1,
                                       after)
        docs = []
        for row in rows[:limit]:
            run = self._runs.get(row.batch_id)
            docs.append(dict(run.doc) if run is not None else json.loads(row.doc))
        return docs, len(rows) > limit

    async def cancel_batch(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        doc = await self.own_batch(principal, batch_id)
        if doc["status"] in FINAL or doc["status"] == "cancelling":
            if doc["status"] in ("cancelled", "cancelling"):
                return doc
            raise ApiError(409, "conflict_error",
                           f"batch {batch_id} is already {doc['status']}")
        run = self._runs[batch_id]
        await self._set(run, "cancelling", save=True)
        run.wake.set()
        return dict(run.doc)

    # ----- the runner --------------------------------------------------------------------------

    def _launch(self, row: BatchRow, doc: dict[str, Any]) -> None:
        run = _Run(row, doc, Principal(row.tenant, row.key_id, False))
        self._runs[row.batch_id] = run
        run.task = asyncio.create_task(self._run(run), name=f"batch-{row.batch_id}")

    async def _set(self, run: _Run, status: str, save: bool = False) -> None:
        run.doc["status"] = status
        run.doc[f"{status}_at"] = int(self.clock())
        if save:
            await self._save(run)

    async def _save(self, run: _Run) -> None:
        run.row = BatchRow(run.row.batch_id, run.row.tenant, run.row.key_id, run.doc["status"],
                           run.row.created_s, json.dumps(run.doc))
        run.saved_s = self.clock()
        await asyncio.to_thread(self.journal.put_batch, run.row)

    async def _run(self, run: _Run) -> None:
        batch_id = run.row.batch_id
        try:
            await self._drive(run)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug or the journal gone: say so, fail the batch, go on
            log.exception("batch %s failed", batch_id)
            run.doc["errors"] = {"object": "list", "data": [
                {"code": "internal_error", "message": f"{type(err).__name__}: {err}",
                 "line": None, "param": None}]}
            with contextlib.suppress(Exception):
                await self._set(run, "failed", save=True)
        finally:
            for line in run.waiting.values():
                self._by_job.pop(line.job_id, None)
            if run.doc["status"] in FINAL:
                self._runs.pop(batch_id, None)

    async def _drive(self, run: _Run) -> None:
        doc = run.doc
        if doc["status"] == "validating" or not run.lines:
            source = await asyncio.to_thread(self.journal.get_file, doc["input_file_id"])
            if source is None or source.content is None:
                doc["errors"] = {"object": "list", "data": [
                    {"code": "missing_file", "message": "the input file is gone",
                     "line": None, "param": "input_file_id"}]}
                await self._set(run, "failed", save=True)
                return
            # Parsing 50,000 lines takes seconds: off the event loop.
            lines, errors = await asyncio.to_thread(
                parse_lines, source.content, doc["endpoint"], "flex", float(doc["expires_at"]),
                float(doc["created_at"]), self.limits.max_lines,
            )
            # A line the parse refused is not in `lines`; one the scheduler refuses is.
            total = len(lines) + sum(1 for e in errors if e["line"] is not None)
            errors += await self._check(run.principal, lines)
            if errors:
                doc["errors"] = {"object": "list", "data": errors[:1000]}
                doc["request_counts"]["total"] = total
                await self._set(run, "failed", save=True)
                return
            run.lines = lines
            # Counted again from the jobs (a resumed batch gets its lines' jobs back).
            doc["request_counts"].update(total=len(lines), completed=0, failed=0)
            if doc["status"] == "finalizing":
                doc["status"] = "in_progress"
        if doc["status"] == "validating":
            await self._set(run, "in_progress", save=True)
        if doc["status"] == "in_progress":
            await self._feed(run)
        if doc["status"] == "cancelling":
            await self._cancel_open(run)
            await self._finish(run, "cancelled")
        elif doc["status"] == "in_progress":
            expired = self.clock() >= doc["expires_at"]
            if expired:
                await self._cancel_open(run)
            await self._finish(run, "expired" if expired else "completed")
        elif doc["status"] == "finalizing":
            await self._finish(run, "completed")

    async def _check(self, principal: Principal, lines: Sequence[Line]) -> list[dict[str, Any]]:
        """Each line's job as the scheduler would validate it (model, sizes, regions...), a
        few hundred at a time so the event loop keeps serving."""
        errors = []
        for line in lines:
            if line.index % 500 == 499:
                await asyncio.sleep(0)
            try:
                self.customers.check(self._request(run_id="", line=line), principal)
            except Refusal as refusal:
                errors.append({"code": "invalid_request", "message": refusal.message,
                               "line": line.line_no, "param": "body"})
        return errors

    @staticmethod
    def _request(run_id: str, line: Line) -> customer_pb2.SubmitJobRequest:
        key = f"{run_id}:{line.index}" if run_id else ""
        return customer_pb2.SubmitJobRequest(spec=line.spec, idempotency_key=key)

    async def _feed(self, run: _Run) -> None:
        """Submit lines as the tenant's quota allows, until every line's job has ended, the
        batch is cancelled, or its window passes."""
        doc = run.doc
        pending = [line for line in run.lines if not line.done]
        next_i = 0
        admission = self.customers.admission
        while doc["status"] == "in_progress":
            if self.clock() >= doc["expires_at"]:
                return
            room = min(self.limits.in_flight - len(run.waiting),
                       admission.room(run.row.tenant))
            if next_i < len(pending) and room > 0:
                chunk = pending[next_i:next_i + min(room, SUBMIT_CHUNK)]
                try:
                    answers = await self.customers.submit(
                        run.principal, [self._request(run.row.batch_id, ln) for ln in chunk],
                        batch=True,
                    )
                except Refusal as refusal:
                    if refusal.code in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        grpc.StatusCode.UNAVAILABLE):
                        await self._pause(run)
                        continue
                    raise
                next_i += len(chunk)
                for line, answer in zip(chunk, answers, strict=True):
                    line.job_id = answer.job.id
                    if answer.job.state in (jobs_pb2.JOB_STATE_SUCCEEDED,
                                            jobs_pb2.JOB_STATE_FAILED,
                                            jobs_pb2.JOB_STATE_CANCELLED,
                                            jobs_pb2.JOB_STATE_EXPIRED):
                        # A resumed batch: this line's job had ended before the restart.
                        self._ended(run, line, answer.job)
                    else:
                        run.waiting[line.job_id] = line
                        self._by_job[line.job_id] = run
                continue
            if next_i >= len(pending) and not run.waiting:
                await self._set(run, "finalizing", save=True)
                return
            await self._pause(run)
            if self.clock() - run.saved_s >= SAVE_EVERY_S:
                await self._save(run)

    async def _pause(self, run: _Run) -> None:
        run.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.wake.wait(), RETRY_S)

    def _ended(self, run: _Run, line: Line, job: jobs_pb2.Job) -> None:
        line.done = True
        counts = run.doc["request_counts"]
        if job.state == jobs_pb2.JOB_STATE_SUCCEEDED:
            counts["completed"] += 1
        else:
            counts["failed"] += 1

    async def _cancel_open(self, run: _Run) -> None:
        for job_id in list(run.waiting):
            with contextlib.suppress(Exception):
                self.customers.loop.cancel(job_id)
        deadline = time.monotonic() + 30.0
        while run.waiting and time.monotonic() < deadline:
            await self._pause(run)

    async def _finish(self, run: _Run, final: str) -> None:
        """Write the output and error files from the lines' jobs, then the final status."""
        if run.doc["status"] != "finalizing" and final == "completed":
            await self._set(run, "finalizing", save=True)
        output, errors = await self._results(run)
        tenant = run.row.tenant
        if output:
            row = await self._write_file(tenant, f"{run.row.batch_id}_output.jsonl",
                                         "batch_output", output)
            run.doc["output_file_id"] = row.file_id
        if errors:
            row = await self._write_file(tenant, f"{run.row.batch_id}_error.jsonl",
                                         "batch_output", errors)
            run.doc["error_file_id"] = row.file_id
        await self._set(run, final, save=True)
        counts = run.doc["request_counts"]
        log.info("batch %s %s: %d of %d lines completed, %d failed", run.row.batch_id, final,
                 counts["completed"], counts["total"], counts["failed"])

    async def _results(self, run: _Run) -> tuple[bytes, bytes]:
        out: list[str] = []
        err: list[str] = []
        completed = failed = 0
        status = run.doc["status"]
        for line in run.lines:
            rec = None
            if line.job_id:
                rec = await asyncio.to_thread(self.customers.loop.get, line.job_id)
            result = self._line_result(run, line, rec, status)
            if result["error"] is None and result["response"]["status_code"] == 200:
                out.append(json.dumps(result))
                completed += 1
            else:
                err.append(json.dumps(result))
                failed += 1
        run.doc["request_counts"].update(completed=completed, failed=failed)
        return ("\n".join(out) + "\n" if out else "").encode(), (
            "\n".join(err) + "\n" if err else "").encode()

    def _line_result(self, run: _Run, line: Line, rec: JobRecord | None,
                     status: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": f"batch_req_{run.row.batch_id[6:]}_{line.index}",
                                 "custom_id": line.custom_id, "response": None, "error": None}
        # A line the batch's end stopped (never run, cancelled with the batch, or expired
        # with its window) is the batch's error, not the job's.
        ended_by_batch = rec is None or not rec.terminal or (
            status == "cancelling" and rec.state is JobState.CANCELLED) or (
            status != "cancelling" and rec.state is JobState.EXPIRED)
        if ended_by_batch:
            code = "batch_cancelled" if status == "cancelling" else "batch_expired"
            entry["error"] = {"code": code, "message": "this request did not run before the "
                              + ("batch was cancelled" if code == "batch_cancelled"
                                 else "batch's completion window ended")}
            return entry
        assert rec is not None
        job = job_to_proto(rec)
        failure = job_error(job)
        if failure is None:
            body = line.endpoint.respond(line.body, job, int(rec.finished_s or self.clock()))
            entry["response"] = {"status_code": 200, "request_id": job.id, "body": body}
        else:
            entry["response"] = {"status_code": failure.status, "request_id": job.id,
                                 "body": failure.body()}
        return entry

    # ----- a LoopObserver: a line's job ended --------------------------------------------------

    def on_submitted(self, records: Sequence[JobRecord]) -> None:
        return None

    def on_step(self, step: Step, now_s: float, decide_s: float) -> None:
        if not self._by_job:
            return
        for rec in step.changed:
            if not rec.terminal:
                continue
            run = self._by_job.pop(rec.job_id, None)
            if run is None:
                continue
            line = run.waiting.pop(rec.job_id, None)
            if line is not None:
                self._ended(run, line, job_to_proto(rec, include_result=False))
            run.wake.set()

    def on_node_forgotten(self, node_id: str) -> None:
        return None

    def on_commit(self, submits: int, seconds: float) -> None:
        return None

    def on_node(self, node: NodeState, now_s: float) -> None:
        return None

    def on_queue(self, jobs: Mapping[str, JobRecord],
                 queued_by_tier: Mapping[Tier, int]) -> None:
        return None


__all__ = ["BatchLimits", "BatchService", "file_object", "parse_lines"]
