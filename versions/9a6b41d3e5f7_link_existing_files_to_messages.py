"""Link existing files to messages

Revision ID: 9a6b41d3e5f7
Revises: 7e3f05b6c8d2
Create Date: 2026-11-24 09:00:02

The guide's "Links files to messages" step. Each upload is linked to the user message
that carried it: among the user messages of the same session and user, a message that
already lists the file wins; else the message the upload's own `message_id` names, if it
is a user message within the link window; else the message whose `created_at` is nearest
to `uploaded_at` within the window (2 minutes; app_patch/migration_rules.py says why).
The upload's `message_id` becomes that message's hex id, and the message lists the file
in `file_ids` with `has_files: true`; a message that carried several files lists all of
them. Uploads with no plausible message are reported (orphaned) and left alone.

Counts in the log: linked (something was written), already linked (nothing to write),
ambiguous (linked by time while another message was as near: worth a look), orphaned.

Uploads and messages are read once each in (session, user) order and merged, and both
collections are rewritten in that pass (mongrate/rewrite.py): memory holds one session at
a time. Uploads are sorted by the server; messages are read as stored, since the backup
and schema revisions stored them in that order, so writing starts with the first batch
instead of after a sort of the whole collection. The order is checked document by
document: if it does not hold (messages were added or moved since), the pass starts over
with the server sorting them. When the schema revision ran just before in the same
`upgrade`, its message change is folded into this pass (`absorbs`): each message is
normalised as it is read, then linked, and written once. Safe to re-run after an
interruption. Downgrade puts back the `message_id`, `file_ids` and `has_files` values
this revision changed (the schema revision's own record undoes its part).
"""

from collections.abc import Iterator
from datetime import datetime
from itertools import groupby
from typing import Any

from bson import ObjectId

from app_patch.rules import (
    GroupLinks,
    MessageRef,
    Outcome,
    UploadRef,
    link_group,
    normalise_file_ids,
)
from mongrate.mongo.pipeline import read_ahead
from mongrate.operations.ops import RAW
from mongrate.operations.rewrite import (
    CollectionRewrite,
    OrderError,
    bson_order_key,
    fast_count,
)

revision = "9a6b41d3e5f7"
down_revision = "7e3f05b6c8d2"
branch_labels = None
depends_on = None
#: the schema revision's message change is written by this revision's pass when both run
absorbs = ("chat_messages",)

GROUP = ("session_id", "user_id")
SAMPLES = 10  # orphaned / ambiguous upload ids named in the log


def upgrade(op):
    messages = op.rewrite("chat_messages")
    uploads = op.rewrite("file_uploads")
    # Either may be done already (an interrupted run swapped one): it is then only read.
    write_messages, write_uploads = messages.start(), uploads.start()
    if not (write_messages or write_uploads):
        op.results["linking"] = "already done"
        return
    result = None
    try:
        # The earlier revisions stored chat_messages in merge order: read it as stored, so
        # writing starts at once instead of after the server has sorted everything.
        result = link(op, messages, uploads, write_messages, write_uploads, stored_order=True)
    except OrderError as exc:
        if exc.collection != "chat_messages":
            raise
    if result is None:  # (outside the except: the abandoned pass's readers are gone by now)
        op.log("chat_messages is not stored in (session, user, time) order: the server sorts it")
        for rw, started in ((messages, write_messages), (uploads, write_uploads)):
            if started:
                rw.restart()
        result = link(op, messages, uploads, write_messages, write_uploads, stored_order=False)
    tally, samples = result
    changed = {"messages_changed": messages.finish() if write_messages else "already done",
               "uploads_changed": uploads.finish() if write_uploads else "already done"}
    op.results.update(tally, **changed)
    for outcome, ids in samples.items():
        if ids:
            op.log(f"{tally[outcome]} {outcome} uploads, e.g. file ids {', '.join(ids)}")


def link(op, messages: CollectionRewrite, uploads: CollectionRewrite, write_messages: bool,
         write_uploads: bool, *, stored_order: bool) -> tuple[dict, dict]:
    """One merge pass: decide every group's links and write both new collections."""
    tally = {o.value: 0 for o in Outcome}
    samples: dict[str, list[str]] = {Outcome.ORPHANED.value: [], Outcome.AMBIGUOUS.value: []}
    groups = merged_groups(op, stored_order=stored_order,
                           messages=messages if write_messages else None)
    try:
        for msg_docs, up_docs in groups:
            links = decide(msg_docs, up_docs)
            for decision in links.decisions:
                tally[decision.outcome.value] += 1
                kept = samples.get(decision.outcome.value)
                if kept is not None and len(kept) < SAMPLES:
                    kept.append(decision.upload.file_id)
            if write_uploads:
                write_upload_links(uploads, up_docs, links)
            if write_messages:
                write_message_lists(messages, msg_docs, links)
    finally:
        groups.close()  # stops the read-ahead threads of an abandoned pass at once
    return tally, samples


def downgrade(op):
    op.results["uploads_restored"] = op.restore_rewrite("file_uploads")
    op.results["messages_restored"] = op.restore_rewrite("chat_messages")
    op.restore_undo()


# --------------------------------------------------------------------- the merge
def _sorted_groups(op, collection: str, time_field: str, *, stored_order: bool = False,
                   rewrite: CollectionRewrite | None = None) -> Iterator[tuple[tuple, list]]:
    """Documents of each (session, user), sorted by (session_id, user_id, time_field): by
    the server, or (``stored_order``) as stored, checked as they come (OrderError)."""
    coll = op.db.get_collection(collection, codec_options=RAW)
    cursor = coll.find().batch_size(op.batch_size)
    if not stored_order:
        cursor = cursor.sort([(GROUP[0], 1), (GROUP[1], 1), (time_field, 1)]).allow_disk_use(True)
    fields = (*GROUP, time_field) if stored_order else GROUP  # the server orders mixed types

    def keyed() -> Iterator[tuple[tuple, Any]]:
        last = None
        docs = read_ahead(cursor, op.batch_size)
        # an earlier revision's folded change is applied as the documents are read
        for doc in rewrite.absorb(docs) if rewrite is not None else docs:
            key = tuple(bson_order_key(doc.get(f)) for f in fields)
            if last is not None and key < last:
                raise OrderError(f"{collection}: documents are not in (session_id, user_id"
                                 f"{', ' + time_field if stored_order else ''}) order; nothing "
                                 "was swapped", collection=collection)
            last = key
            yield key, doc

    for key, group in groupby(keyed(), key=lambda kd: kd[0][:2]):
        yield key, [doc for _, doc in group]


def merged_groups(op, *, stored_order: bool = False, messages: CollectionRewrite | None = None
                  ) -> Iterator[tuple[list, list]]:
    """(messages, uploads) of each (session, user), in (session, user) order; either may
    be empty. Every document of both collections appears exactly once. ``messages``: the
    rewrite whose folded changes apply to the messages read."""
    rewrite = messages
    total = fast_count(op.db, "chat_messages")
    messages = op.progress(_sorted_groups(op, "chat_messages", "created_at",
                                          stored_order=stored_order, rewrite=rewrite), total,
                           "link uploads (messages)", weight=lambda kv: len(kv[1]))
    uploads = _sorted_groups(op, "file_uploads", "uploaded_at")
    try:
        up = next(uploads, None)
        for key, msg_docs in messages:
            while up is not None and up[0] < key:
                yield [], up[1]
                up = next(uploads, None)
            if up is not None and up[0] == key:
                yield msg_docs, up[1]
                up = next(uploads, None)
            else:
                yield msg_docs, []
        while up is not None:
            yield [], up[1]
            up = next(uploads, None)
    finally:  # stop both read-ahead threads now, even when a stream failed
        messages.close()
        uploads.close()


# ---------------------------------------------------------------- the decisions
def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def decide(msg_docs: list, up_docs: list) -> GroupLinks:
    """The link rule (app_patch.migration_rules.link_group) on one session's documents."""
    if not up_docs:
        return GroupLinks()
    session = up_docs[0].get("session_id")
    candidates = [] if session is None else [
        MessageRef(d["_id"], _when(d.get("created_at")),
                   tuple(normalise_file_ids(d.get("file_ids"))))
        for d in msg_docs if d.get("role") == "user" and isinstance(d["_id"], ObjectId)
    ]
    refs = [UploadRef(d["_id"], _file_id(d.get("file_id")), d.get("message_id"),
                      _when(d.get("uploaded_at"))) for d in up_docs]
    return link_group(refs, candidates)


def _file_id(value: Any) -> str:
    return str(value) if value is not None else ""


def write_upload_links(rw: CollectionRewrite, up_docs: list, links: GroupLinks) -> None:
    carrier = {d.upload.id: d.message for d in links.decisions}
    for doc in up_docs:
        msg = carrier.get(doc["_id"])
        if msg is not None and doc.get("message_id") != str(msg.id):
            rw.change(doc, {"message_id": str(msg.id)})
        else:
            rw.keep(doc)


def write_message_lists(rw: CollectionRewrite, msg_docs: list, links: GroupLinks) -> None:
    for doc in msg_docs:
        added = links.additions.get(doc["_id"]) if links.additions else None
        if added:
            ids = normalise_file_ids(doc.get("file_ids")) + [f for f in added]
            rw.change(doc, {"file_ids": ids, "has_files": True})
        else:
            rw.keep(doc)
