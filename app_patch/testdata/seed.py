"""Realistic PRE-change chat data (CHAT_DATABASE.md), untidy cases included, for tests and demos.

``python -m app_patch.testdata.seed --url URL [--database NAME] --sessions N --messages-per-session M
--uploads U [--seed S] [--drop]``. The database named in the URL path wins over
``--database`` (default ``flowise_proxy``). The same seed gives identical documents,
ObjectIds included. Ground truth (which user message really carried each upload) is
returned in :class:`SeedReport`, never stored in the database.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bson import ObjectId
from pymongo.database import Database

from app_patch.testdata.answers import Answers, AnswerStats
from app_patch.testdata.samples import (
    KINDS,
    SampleFile,
    make_sample,
    random_kind,
    sample_name,
    sample_variant,
)

COLLECTIONS = ("chat_sessions", "chat_messages", "file_uploads", "fs.files", "fs.chunks")
CHUNK_SIZE = 261120  # PyMongo's GridFS default
BATCH = 1000
_EPOCH = datetime(1970, 1, 1)
_BASE_MS = int((datetime(2025, 6, 2) - _EPOCH).total_seconds() * 1000)
_PLACEHOLDERS = ("pending", "undefined", "null", "None", "temp")

# Every untidy case the data must contain; SeedReport.cases counts each.
MESSAGE_CASES = (
    "msg_no_file_fields", "msg_file_ids_null", "msg_has_files_without_ids",
    "msg_ids_without_has_files", "msg_partial_file_ids", "msg_lists_gridfs_without_upload",
    "msg_with_metadata", "message_with_several_uploads",
)
UPLOAD_CASES = (
    "upload_message_id_empty", "upload_message_id_placeholder", "upload_message_id_nonexistent",
    "upload_message_id_wrong_message", "upload_orphan", "upload_before_message",
    "upload_after_message", "upload_far_from_message", "upload_gridfs_missing",
    "gridfs_without_upload", "mime_png_as_jpeg", "mime_jpeg_as_octet", "mime_pdf_as_png",
    "mime_generic", "file_size_mismatch", "name_non_ascii", "name_quotes",
    "name_path_traversal", "name_line_break", "upload_type_url", "file_hash_null",
    "gridfs_content_type",
)
SESSION_CASES = ("session_burst", "upload_in_burst_session")
ALL_CASES = MESSAGE_CASES + UPLOAD_CASES + SESSION_CASES

_PNGS = ("png", "png_palette_transparent", "png_16bit")
_JPEGS = ("jpeg", "jpeg_cmyk", "jpeg_exif_rotated")
_KIND_FOR_CASE = {"mime_png_as_jpeg": "png", "mime_jpeg_as_octet": "jpeg", "mime_pdf_as_png": "pdf"}
_PROMPTS = ("Can you describe this image?", "What does this document say?", "Summarise this",
            "hi", "Translate the text in the picture to English, please.", "Is this a bug?",
            "Compare these two", "What's wrong with my chart?", "ok thanks", "and now?")
_ANSWERS = ("The image shows a gradient with a few coloured shapes.", "Sure, here is a summary.",
            "I could not read that file.", "Here are the differences:\n- colour\n- size",
            "You're welcome!")


class SeedError(Exception):
    """Bad arguments or a database that cannot be seeded; ``str()`` is the one-line reason."""


@dataclass
class SeedReport:
    """What :func:`seed` wrote. ``truth`` maps each file_uploads ``file_id`` to the hex
    ``_id`` of the user message that really carried it (None: orphaned, no such message)."""

    database: str
    sessions: int = 0
    messages: int = 0
    user_messages: int = 0
    uploads: int = 0
    gridfs_files: int = 0
    seconds: float = 0.0
    cases: dict[str, int] = field(default_factory=dict)
    kind_counts: dict[str, int] = field(default_factory=dict)
    truth: dict[str, str | None] = field(default_factory=dict)
    samples: dict[str, tuple[str, int]] = field(default_factory=dict)
    missing_gridfs: list[str] = field(default_factory=list)
    gridfs_without_upload: list[str] = field(default_factory=list)
    answers: AnswerStats = field(default_factory=AnswerStats)


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _oid(rng: random.Random, ms: int) -> ObjectId:
    """An ObjectId whose timestamp matches ``ms`` and whose other 8 bytes come from ``rng``."""
    return ObjectId((ms // 1000).to_bytes(4, "big") + rng.getrandbits(64).to_bytes(8, "big"))


class _Planner:
    """Low-rate random cases, plus a schedule that forces each case once if chance has not
    produced it by its (random) position, so even small seeds contain every case."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.due: dict[str, int] = {}

    def schedule(self, cases: Sequence[str], total: int) -> None:
        for case in cases:
            self.due[case] = self.rng.randrange(max(1, total // 2))

    def is_due(self, case: str, pos: int) -> bool:
        return self.counts[case] == 0 and pos >= self.due.get(case, 1 << 62)

    def pick(self, pos: int, options: Sequence[tuple[str, float]], allowed=None) -> str | None:
        """At most one of mutually exclusive ``options`` (case, probability); counted."""
        ok = allowed or (lambda c: True)
        chosen = next((c for c, _ in options if self.is_due(c, pos) and ok(c)), None)
        if chosen is None:
            x, acc = self.rng.random(), 0.0
            for case, p in options:
                acc += p
                if x < acc:
                    chosen = case if ok(case) else None
                    break
        if chosen:
            self.counts[chosen] += 1
        return chosen

    def hit(self, case: str, p: float, pos: int) -> bool:
        """Roll for ``case`` (probability ``p``, or forced when due); count it when it hits."""
        if self.rng.random() < p or self.is_due(case, pos):
            self.counts[case] += 1
            return True
        return False

    def note(self, case: str, n: int = 1) -> None:
        self.counts[case] += n


class _Writer:
    """Buffers documents per collection and writes them with insert_many in batches."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.buf: dict[str, list[dict]] = {c: [] for c in COLLECTIONS}
        self.chunk_bytes = 0

    def add(self, coll: str, doc: dict) -> None:
        self.buf[coll].append(doc)
        if len(self.buf[coll]) >= BATCH:
            self.flush(coll)

    def add_gridfs(self, rng: random.Random, file_id: ObjectId, data: bytes, filename: str,
                   upload_ms: int, metadata: dict, content_type: str | None) -> None:
        """fs.files + fs.chunks documents exactly as PyMongo's GridFS writes them."""
        doc: dict = {"_id": file_id, "filename": filename}
        if content_type is not None:
            doc["contentType"] = content_type
        doc.update(metadata=metadata, chunkSize=CHUNK_SIZE, length=len(data),
                   uploadDate=_dt(upload_ms))
        for n, start in enumerate(range(0, len(data), CHUNK_SIZE)):
            piece = data[start:start + CHUNK_SIZE]
            self.buf["fs.chunks"].append(
                {"_id": _oid(rng, upload_ms), "files_id": file_id, "n": n, "data": piece})
            self.chunk_bytes += len(piece)
        if len(self.buf["fs.chunks"]) >= BATCH or self.chunk_bytes >= 8 << 20:
            self.flush("fs.chunks")
        self.add("fs.files", doc)  # after its chunks: a reader never sees a file without data

    def flush(self, coll: str | None = None) -> None:
        for name in [coll] if coll else ["fs.chunks", *COLLECTIONS]:
            if self.buf[name]:
                self.db[name].insert_many(self.buf[name], ordered=False)
                self.buf[name] = []
                if name == "fs.chunks":
                    self.chunk_bytes = 0


def _prepare(db: Database, drop: bool) -> None:
    if drop:
        for name in COLLECTIONS:
            db.drop_collection(name)
        return
    for name in COLLECTIONS:
        if db[name].find_one({}, {"_id": 1}) is not None:
            raise SeedError(f"database {db.name!r} already has documents in {name}; "
                            "pass --drop (drop=True) to replace the chat data")


def _create_indexes(db: Database) -> None:
    # The pre-change service's indexes (CHAT_DATABASE.md) and the ones PyMongo's GridFS makes.
    db.chat_sessions.create_index("session_id")
    db.chat_messages.create_index("created_at")
    db["fs.files"].create_index([("filename", 1), ("uploadDate", 1)])
    db["fs.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)


def seed(db: Database, *, sessions: int, messages_per_session: int, uploads: int,
         seed: int = 0, drop: bool = False) -> SeedReport:
    """Write the pre-change chat data into ``db``; see the module docstring."""
    for name, value in (("sessions", sessions), ("messages_per_session", messages_per_session),
                        ("uploads", uploads)):
        if not isinstance(value, int) or value < 0:
            raise SeedError(f"{name} must be a non-negative integer, got {value!r}")
    if uploads and not sessions:
        raise SeedError("uploads need at least one session to belong to; raise --sessions")
    started = time.perf_counter()
    _prepare(db, drop)
    gen = _Generator(random.Random(seed), _Writer(db), sessions, messages_per_session, uploads,
                     Answers(seed, sessions * messages_per_session // 2))
    gen.run()
    gen.out.flush()
    _create_indexes(db)
    report = gen.report
    report.database = db.name
    report.seconds = time.perf_counter() - started
    counts = gen.plan.counts
    report.cases = {c: counts[c] for c in ALL_CASES}
    report.kind_counts = {k: counts[f"kind_{k}"] for k in KINDS}
    report.answers = gen.answers.stats
    return report


class _Generator:
    def __init__(self, rng: random.Random, out: _Writer, n_sessions: int, per_session: int,
                 n_uploads: int, answers: Answers) -> None:
        self.rng, self.out, self.answers = rng, out, answers
        self.n_sessions, self.per_session, self.n_uploads = n_sessions, per_session, n_uploads
        self.plan = _Planner(rng)
        self.report = SeedReport(database="")
        self.users = [str(_oid(rng, _BASE_MS - 86_400_000 * 30)) for _ in range(max(1, n_sessions // 4))]
        self.flows = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3)]
        self.pos_u = 0  # uploads planned so far (positions for the forcing schedule)
        self.pos_m = 0  # messages written so far
        self.gridfs_only: set[str] = set()  # GridFS ids with no file_uploads row
        self.plan.schedule(UPLOAD_CASES + ("upload_in_burst_session",), n_uploads)
        self.plan.schedule([f"kind_{k}" for k in KINDS], n_uploads)
        self.plan.schedule(MESSAGE_CASES, n_uploads)  # mostly decided per carrier message
        self.plan.schedule(("session_burst",), n_sessions)
        per = [0] * n_sessions
        for _ in range(n_uploads):
            per[rng.randrange(n_sessions)] += 1
        self.uploads_per_session = per

    def run(self) -> None:
        for s in range(self.n_sessions):
            self._session(s)

    # --- sessions and messages --------------------------------------------------------

    def _session(self, s: int) -> None:
        rng, plan = self.rng, self.plan
        start = _BASE_MS + rng.randrange(120 * 86_400_000)
        # A burst session is also forced when uploads-in-a-burst is still missing.
        burst = plan.hit("session_burst", 0.05, s)
        if not burst and self.uploads_per_session[s] and self.per_session > 1 and plan.is_due(
                "upload_in_burst_session", self.pos_u):
            burst = True
            plan.note("session_burst")
        ctx = {
            "chatflow_id": rng.choice(self.flows),
            "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": rng.choice(self.users),
        }
        msgs = self._messages(start, burst)
        legacy = rng.random() < 0.2  # written before the service had file_ids/has_files
        sess = {"_id": _oid(rng, start), "session_id": ctx["session_id"], "user_id": ctx["user_id"],
                "chatflow_id": ctx["chatflow_id"],
                "topic": None if rng.random() < 0.3 else rng.choice(_PROMPTS)[:40],
                "is_active": rng.random() < 0.85, "created_at": _dt(start),
                "last_activity_at": _dt(msgs[-1][2]) if msgs and rng.random() < 0.9 else None}
        self.out.add("chat_sessions", sess)
        self.report.sessions += 1
        groups = self._assign_uploads(msgs, self.uploads_per_session[s])
        if burst and any(k is not None for k in groups):
            plan.note("upload_in_burst_session", sum(n for c, n in groups.items() if c is not None))
        docs = []
        for role, oid, _ms in msgs:
            # drawn for answers too: the rest of the data stays what it was before answers
            # came from their own generator
            content = rng.choice(_PROMPTS if role == "user" else _ANSWERS)
            if role == "assistant":
                content = self.answers.next()
            doc = {"_id": oid, **ctx, "role": role, "content": content}
            if role == "assistant" and rng.random() < 0.3:
                doc["metadata"] = [{"event": "usedTools", "data": [
                    {"tool": "calculator", "toolInput": {"input": "2+2"}, "toolOutput": "4"}]},
                    {"event": "agentFlowExecutedData", "data": {"nodes": rng.randrange(1, 9)}}]
                self.plan.note("msg_with_metadata")
            docs.append(doc)
        listed: dict[int | None, list[str]] = {}  # carrier -> GridFS ids it should list
        for carrier, count in groups.items():
            for _ in range(count):
                self._upload(ctx, msgs, carrier, listed)
        for i, doc in enumerate(docs):
            self._file_fields(doc, listed.get(i), legacy)
            doc["created_at"] = _dt(msgs[i][2])
            self.out.add("chat_messages", doc)
            self.pos_m += 1
        self.report.messages += len(docs)
        self.report.user_messages += sum(1 for m in msgs if m[0] == "user")

    def _messages(self, start: int, burst: bool) -> list[tuple[str, ObjectId, int]]:
        rng = self.rng
        out, t = [], start + rng.randrange(500, 20_000)
        for i in range(self.per_session):
            role = "user" if i % 2 == 0 else "assistant"
            if burst and role == "assistant" and rng.random() < 0.3:
                role = "user"  # the reply never came: user messages seconds apart
            out.append((role, _oid(rng, t), t))
            if burst:
                t += rng.randrange(800, 4_000)
            elif role == "user":
                t += rng.randrange(2_000, 40_000)
            else:
                t += rng.randrange(20_000, 900_000)
        return out

    def _assign_uploads(self, msgs: list, k: int) -> dict[int | None, int]:
        """carrier message index (None: orphaned) -> number of uploads it carried."""
        rng, plan = self.rng, self.plan
        users = [i for i, m in enumerate(msgs) if m[0] == "user"]
        groups: Counter[int | None] = Counter()
        left = k
        while left > 0:
            pos = self.pos_u + (k - left)
            if not users or plan.hit("upload_orphan", 0.01, pos):
                groups[None] += 1
                left -= 1
                continue
            size = 1 if rng.random() < 0.85 else rng.randint(2, 4)
            if left >= 2 and plan.is_due("message_with_several_uploads", pos):
                size = max(size, 2)
            size = min(size, left)
            free = [u for u in users if u not in groups]  # prefer a message not yet used
            groups[rng.choice(free or users)] += size
            left -= size
        plan.note("message_with_several_uploads", sum(1 for c, n in groups.items()
                                                      if c is not None and n >= 2))
        return dict(sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))

    def _file_fields(self, doc: dict, ids: list[str] | None, legacy: bool) -> None:
        """Set file_ids/has_files on a message the way the old service (and its bugs) did."""
        rng, plan, pos = self.rng, self.plan, self.pos_u
        if ids:
            state = plan.pick(pos, (("msg_no_file_fields", 0.08), ("msg_file_ids_null", 0.03),
                                    ("msg_has_files_without_ids", 0.03),
                                    ("msg_ids_without_has_files", 0.04),
                                    ("msg_partial_file_ids", 0.04)),
                              allowed=lambda c: c != "msg_partial_file_ids" or len(ids) >= 2)
            if state == "msg_no_file_fields":
                pass
            elif state == "msg_file_ids_null":
                doc.update(file_ids=None, has_files=True)
                plan.note("msg_has_files_without_ids")
            elif state == "msg_has_files_without_ids":
                doc.update(file_ids=[], has_files=True)
            elif state == "msg_ids_without_has_files":
                doc["file_ids"] = list(ids)
                if rng.random() < 0.5:
                    doc["has_files"] = False
            elif state == "msg_partial_file_ids":
                doc.update(file_ids=ids[: rng.randrange(1, len(ids))], has_files=True)
            else:
                doc.update(file_ids=list(ids), has_files=True)
            if any(i in self.gridfs_only for i in doc.get("file_ids") or ()):
                plan.note("msg_lists_gridfs_without_upload")
            return
        old = legacy or rng.random() < 0.01
        state = plan.pick(self.pos_m, (("msg_file_ids_null", 0.02),
                                       ("msg_has_files_without_ids", 0.01)))
        if state == "msg_file_ids_null":
            doc["file_ids"] = None
            if not old:
                doc["has_files"] = False
        elif state == "msg_has_files_without_ids":
            doc.update(file_ids=[], has_files=True)
        elif old:
            plan.note("msg_no_file_fields")
        else:
            doc.update(file_ids=[], has_files=False)

    # --- uploads ----------------------------------------------------------------------

    def _kind(self, pos: int) -> str:
        for case, kind in _KIND_FOR_CASE.items():
            if self.plan.is_due(case, pos):
                return kind
        for kind in KINDS:
            if self.plan.is_due(f"kind_{kind}", pos):
                return kind
        return random_kind(self.rng)

    def _upload(self, ctx: dict, msgs: list, carrier: int | None,
                listed: dict[int | None, list[str]]) -> None:
        """Write one file_uploads row (and its GridFS file); add its id to ``listed``."""
        rng, plan, pos = self.rng, self.plan, self.pos_u
        self.pos_u += 1
        kind = self._kind(pos)
        plan.note(f"kind_{kind}")
        sample = make_sample(kind, rng)
        # When it was uploaded, relative to the message that carried it.
        if carrier is None:
            if msgs and rng.random() < 0.5:
                up_ms = msgs[-1][2] + rng.randrange(3_600_000, 6 * 3_600_000)
            else:
                up_ms = (msgs[0][2] if msgs else _BASE_MS) - rng.randrange(600_000, 3_600_000)
        else:
            far = plan.hit("upload_far_from_message", 0.1, pos)
            delta = rng.randrange(5_000, 30_001) if far else rng.randrange(0, 5_000)
            before = rng.random() < 0.7
            up_ms = msgs[carrier][2] + (-delta if before else delta)
            plan.note("upload_before_message" if before else "upload_after_message")
        gid = _oid(rng, up_ms)
        file_id = str(gid)
        name = self._name(kind, pos)
        claimed = self._claimed_mime(sample, pos)
        size = len(sample.data)
        if plan.hit("file_size_mismatch", 0.03, pos):
            size = size + rng.choice((-1, 1)) * rng.randrange(1, 4096) if size else 1024
            size = size if size > 0 else len(sample.data) + 1
        processed = rng.random() < 0.9
        error = None
        if processed and not sample.decodable and sample.is_image and rng.random() < 0.6:
            error = "cannot identify image file"
        hashed = not plan.hit("file_hash_null", 0.1, pos)
        url_type = plan.hit("upload_type_url", 0.03, pos)
        doc = {
            "_id": _oid(rng, up_ms + 5), "file_id": file_id, "original_name": name,
            "mime_type": claimed, "message_id": self._message_id(msgs, carrier, pos),
            "session_id": ctx["session_id"], "user_id": ctx["user_id"],
            "chatflow_id": ctx["chatflow_id"], "file_size": size,
            "upload_type": "url" if url_type else "file",
            "file_hash": hashlib.sha256(sample.data).hexdigest() if hashed else None,
            "processed": processed, "processing_error": error, "uploaded_at": _dt(up_ms),
            "processed_at": _dt(up_ms + rng.randrange(200, 3_000)) if processed else None,
            "metadata": rng.choice((None, None, {}, {"source": "chat", "client": "web"},
                                    {"source": "chat", "client": "mobile", "retries": 1})),
        }
        meta = {"user_id": ctx["user_id"], "session_id": ctx["session_id"], "original_name": name}
        if plan.hit("upload_gridfs_missing", 0.02, pos):
            self.report.missing_gridfs.append(file_id)
        else:
            self._gridfs(gid, sample, name, up_ms, meta, claimed, pos)
        self.out.add("file_uploads", doc)
        self.report.uploads += 1
        self.report.truth[file_id] = None if carrier is None else str(msgs[carrier][1])
        self.report.samples[file_id] = (sample.kind, sample.variant)
        listed.setdefault(carrier, []).append(file_id)
        # The user attached a second file; it reached GridFS but its file_uploads row was
        # never written. Forced again until some message lists such a file.
        if carrier is not None and (plan.rng.random() < 0.01 or plan.is_due(
                "gridfs_without_upload", pos) or plan.is_due("msg_lists_gridfs_without_upload", pos)):
            plan.note("gridfs_without_upload")
            oid = _oid(rng, up_ms + 40)
            self._gridfs(oid, make_sample(random_kind(rng), rng), name + " (2)", up_ms + 40,
                         dict(meta), None, pos)
            self.report.gridfs_without_upload.append(str(oid))
            self.gridfs_only.add(str(oid))
            if rng.random() < 0.5 or plan.is_due("msg_lists_gridfs_without_upload", pos):
                listed[carrier].append(str(oid))

    def _gridfs(self, gid: ObjectId, sample: SampleFile, name: str, up_ms: int, meta: dict,
                claimed: str | None, pos: int) -> None:
        ctype = None
        if claimed is not None and self.plan.hit("gridfs_content_type", 0.5, pos):
            ctype = claimed
        self.out.add_gridfs(self.rng, gid, sample.data, name, up_ms - 3, meta, ctype)
        self.report.gridfs_files += 1

    def _message_id(self, msgs: list, carrier: int | None, pos: int) -> str:
        rng, plan = self.rng, self.plan
        if carrier is None:  # orphaned: whatever the client sent, never a real message
            state = rng.choice(("upload_message_id_empty", "upload_message_id_placeholder",
                                "upload_message_id_nonexistent"))
            plan.note(state)
            return {"upload_message_id_empty": "",
                    "upload_message_id_placeholder": rng.choice(_PLACEHOLDERS),
                    "upload_message_id_nonexistent": str(_oid(rng, _BASE_MS))}[state]
        others = [i for i in range(len(msgs)) if i != carrier]
        state = plan.pick(pos, (("upload_message_id_empty", 0.05),
                                ("upload_message_id_placeholder", 0.02),
                                ("upload_message_id_nonexistent", 0.02),
                                ("upload_message_id_wrong_message", 0.04)),
                          allowed=lambda c: c != "upload_message_id_wrong_message" or bool(others))
        if state == "upload_message_id_empty":
            return ""
        if state == "upload_message_id_placeholder":
            return rng.choice(_PLACEHOLDERS)
        if state == "upload_message_id_nonexistent":
            return str(_oid(rng, msgs[carrier][2]))
        if state == "upload_message_id_wrong_message":
            after = carrier + 1
            if after < len(msgs) and msgs[after][0] == "assistant" and rng.random() < 0.6:
                return str(msgs[after][1])  # the reply, the classic bug
            return str(msgs[rng.choice(others)][1])
        return str(msgs[carrier][1])

    def _name(self, kind: str, pos: int) -> str:
        case = self.plan.pick(pos, (("name_non_ascii", 0.05), ("name_quotes", 0.02),
                                    ("name_path_traversal", 0.01), ("name_line_break", 0.01)))
        return sample_name(kind, self.rng, case)

    def _claimed_mime(self, sample: SampleFile, pos: int) -> str:
        kind, plan = sample.kind, self.plan
        case = plan.pick(pos, (("mime_png_as_jpeg", 0.04), ("mime_jpeg_as_octet", 0.05),
                               ("mime_pdf_as_png", 0.10), ("mime_generic", 0.03)),
                         allowed=lambda c: {"mime_png_as_jpeg": kind in _PNGS,
                                            "mime_jpeg_as_octet": kind in _JPEGS,
                                            "mime_pdf_as_png": kind == "pdf",
                                            "mime_generic": kind not in _JPEGS
                                            and kind != "zero_byte"}[c])
        if case == "mime_png_as_jpeg":
            return "image/jpeg"
        if case == "mime_pdf_as_png":
            return "image/png"
        if case in ("mime_jpeg_as_octet", "mime_generic"):
            return "application/octet-stream"
        if kind == "ico":
            return self.rng.choice(("image/x-icon", "image/vnd.microsoft.icon"))
        return sample.true_mime


# --- hand-crafted sessions for linking tests ------------------------------------------

@dataclass
class AddedSession:
    """Ids written by :func:`add_session`, in the order given."""

    session_id: str
    message_ids: list[str]
    file_ids: list[str]


def _ms(dt: datetime) -> int:
    return int((dt - _EPOCH) // timedelta(milliseconds=1))


def add_session(db: Database, *, messages: Sequence[tuple], uploads: Sequence[dict] = (),
                user_id: str = "user-1", chatflow_id: str = "flow-1",
                session_id: str | None = None) -> AddedSession:
    """Write one hand-made session (pre-change shapes) and return its ids.

    ``messages``: ``(role, content, created_at)`` or ``(role, content, created_at, extra)``
    where ``extra`` is a dict of fields set last (e.g. ``{"file_ids": None}``).
    ``uploads``: dicts with optional keys ``kind`` and ``variant`` (a sample, default
    ``("png", 0)``) or ``data`` (bytes); ``message`` (index of the carrying message, default None);
    ``message_id`` (stored value; default the carrier's hex id, else ``""``); ``listed``
    (default True with a carrier: the carrier's ``file_ids`` gets the id and ``has_files``
    True); ``uploaded_at`` (default carrier time + 2 s); ``gridfs`` (default True: store
    the bytes); ``name``; ``mime`` (claimed; default the true type); ``content_type``
    (GridFS contentType, default none); any other key overrides that file_uploads field.
    Datetimes are stored to the millisecond, as MongoDB does.
    """
    rng = random.Random(os.urandom(16))
    session_id = session_id or str(uuid.uuid4())
    ctx = {"chatflow_id": chatflow_id, "session_id": session_id, "user_id": user_id}
    out = _Writer(db)
    times = [_ms(m[2]) for m in messages]
    start = min(times, default=_ms(datetime.now(UTC).replace(tzinfo=None)))
    out.add("chat_sessions", {
        "_id": _oid(rng, start), "session_id": session_id, "user_id": user_id,
        "chatflow_id": chatflow_id, "topic": None, "is_active": True, "created_at": _dt(start),
        "last_activity_at": _dt(max(times)) if times else None})
    msg_ids = [_oid(rng, t) for t in times]
    listed: dict[int, list[str]] = {}
    file_ids = []
    for up in uploads:
        up = dict(up)
        carrier = up.pop("message", None)
        data = up.pop("data", None)
        sample = (sample_variant(up.pop("kind", "png"), up.pop("variant", 0))
                  if data is None else None)
        data = sample.data if sample else data
        up_ms = _ms(up.pop("uploaded_at")) if "uploaded_at" in up else (
            (times[carrier] if carrier is not None else start) + 2_000)
        gid = _oid(rng, up_ms)
        name = up.pop("name", f"upload-{len(file_ids)}.{sample.ext if sample else 'bin'}")
        mime = up.pop("mime", sample.true_mime if sample else "application/octet-stream")
        if up.pop("gridfs", True):
            meta = {"user_id": user_id, "session_id": session_id, "original_name": name}
            out.add_gridfs(rng, gid, data, name, up_ms, meta, up.pop("content_type", None))
        up.pop("content_type", None)
        if carrier is not None and up.pop("listed", True):
            listed.setdefault(carrier, []).append(str(gid))
        up.pop("listed", None)
        doc = {"_id": _oid(rng, up_ms), "file_id": str(gid), "original_name": name,
               "mime_type": mime,
               "message_id": str(msg_ids[carrier]) if carrier is not None else "", **ctx,
               "file_size": len(data), "upload_type": "file",
               "file_hash": hashlib.sha256(data).hexdigest(), "processed": True,
               "processing_error": None, "uploaded_at": _dt(up_ms),
               "processed_at": _dt(up_ms + 500), "metadata": None}
        doc.update(up)
        out.add("file_uploads", doc)
        file_ids.append(str(gid))
    for i, m in enumerate(messages):
        doc = {"_id": msg_ids[i], **ctx, "role": m[0], "content": m[1]}
        if i in listed:
            doc.update(file_ids=listed[i], has_files=True)
        doc["created_at"] = _dt(times[i])
        doc.update(m[3] if len(m) > 3 else {})
        out.add("chat_messages", doc)
    out.flush()
    return AddedSession(session_id, [str(i) for i in msg_ids], file_ids)


# --- command line ---------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; counts must be 0 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2: bad input or unreachable server)."""
    from pymongo import MongoClient
    from pymongo.errors import ConfigurationError, InvalidName, OperationFailure, PyMongoError

    from mongrate.config import database_from_url

    parser = _Parser(prog="python -m app_patch.testdata.seed",
                     description="Seed realistic pre-change chat data (see CHAT_DATABASE.md).")
    parser.add_argument("--url", required=True, help="MongoDB URL; a database in its path wins")
    parser.add_argument("--database", default="flowise_proxy",
                        help="database when the URL names none (default flowise_proxy)")
    parser.add_argument("--sessions", type=_count, required=True)
    parser.add_argument("--messages-per-session", type=_count, required=True)
    parser.add_argument("--uploads", type=_count, required=True)
    parser.add_argument("--seed", type=int, default=0, help="same seed, same documents")
    parser.add_argument("--drop", action="store_true", help="drop the chat collections first")
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        client = MongoClient(args.url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                             tz_aware=False)
    except (ConfigurationError, ValueError) as exc:
        print(f"{prog}: error: bad --url: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            client.admin.command("ping")
        except OperationFailure as exc:
            print(f"{prog}: error: the server refused us: {str(exc).splitlines()[0]}",
                  file=sys.stderr)
            return 2
        except PyMongoError:
            print(f"{prog}: error: cannot reach a MongoDB server at {args.url} within 5 s; "
                  "start it or fix --url", file=sys.stderr)
            return 2
        name = database_from_url(args.url) or args.database
        try:
            report = seed(client[name], sessions=args.sessions,
                          messages_per_session=args.messages_per_session,
                          uploads=args.uploads, seed=args.seed, drop=args.drop)
        except (SeedError, InvalidName) as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        except PyMongoError as exc:
            print(f"{prog}: error: seeding {name} failed: {str(exc).splitlines()[0]}",
                  file=sys.stderr)
            return 1
    finally:
        client.close()
    print(f"seeded {report.database}: {report.sessions} sessions, {report.messages} messages "
          f"({report.user_messages} from users), {report.uploads} uploads, "
          f"{report.gridfs_files} GridFS files in {report.seconds:.1f} s")
    print(f"untidy cases present: {sum(1 for v in report.cases.values() if v)}"
          f"/{len(report.cases)}; orphaned uploads {report.cases['upload_orphan']}, "
          f"GridFS missing {len(report.missing_gridfs)}, "
          f"GridFS without row {len(report.gridfs_without_upload)}")
    print(f"assistant answers: {report.answers.long} of {report.answers.answers} are 4 KiB or "
          f"more, the longest {report.answers.longest / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
