"""The link rule of the image-rendering revisions: which user message carried an upload.

Pure (no database, no I/O): decided from documents already read. The link revision
streams the data and calls these; the tests call them directly on hand-made cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bson import ObjectId

#: How far a user message's ``created_at`` may be from an upload's ``uploaded_at`` for the
#: time rule to link them. The old service stored the upload while the user sent the
#: message, so the two stamps are seconds apart (CHAT_DATABASE.md); slow mobile uploads and
#: retries stretch that to tens of seconds. Two minutes keeps a 4x margin over that, and
#: stays below the gap at which the next turn starts (a user reads the reply before asking
#: again), so an upload whose send was abandoned is reported as orphaned instead of being
#: pinned on an unrelated later question.
LINK_WINDOW = timedelta(minutes=2)

#: Two candidate messages whose distances to the upload differ by less than this are
#: indistinguishable by time alone (the stamps are taken at different moments of one send).
AMBIGUITY_MARGIN = timedelta(seconds=1)

# ---------------------------------------------------------------------------- linking
class Outcome(StrEnum):
    LINKED = "linked"                  # message_id and/or the message's file_ids were set
    ALREADY_LINKED = "already_linked"  # both already said so (message_id as a hex string)
    AMBIGUOUS = "ambiguous"            # linked, but another message was as near in time
    ORPHANED = "orphaned"              # no plausible message: reported and left alone


@dataclass(frozen=True)
class UploadRef:
    """What the link rule needs of one ``file_uploads`` row."""

    id: Any
    file_id: str
    message_id: Any
    uploaded_at: datetime | None


@dataclass(frozen=True)
class MessageRef:
    """What the link rule needs of one user message of the same session and user."""

    id: ObjectId
    created_at: datetime | None
    file_ids: tuple[str, ...] = ()


@dataclass
class LinkDecision:
    upload: UploadRef
    message: MessageRef | None
    outcome: Outcome
    evidence: str  # "listed", "message_id", "nearest" or "none"


@dataclass
class GroupLinks:
    """Decisions for one (session, user) and the ids each carrying message must list."""

    decisions: list[LinkDecision] = field(default_factory=list)
    additions: dict[ObjectId, list[str]] = field(default_factory=dict)


def _distance(msg: MessageRef, when: datetime) -> timedelta:
    assert msg.created_at is not None
    return abs(msg.created_at - when)


def choose_carrier(upload: UploadRef, messages: Sequence[MessageRef],
                   window: timedelta = LINK_WINDOW) -> tuple[MessageRef | None, str, bool]:
    """The user message that carried ``upload``: ``(message, evidence, ambiguous)``.

    ``messages`` are the user messages of the upload's session and user. Evidence, strongest
    first: a message that already lists the file (at any time: the message says so); the
    message the upload's own ``message_id`` names, if it is a candidate within ``window``;
    else the message nearest in time within ``window`` (ties: the first one sent at or after
    the upload, since the client uploads before it sends). ``ambiguous`` is True when the
    time rule decided and another candidate was within :data:`AMBIGUITY_MARGIN` as near.
    """
    when = upload.uploaded_at
    listing = [m for m in messages if upload.file_id in m.file_ids]
    if listing:
        if when is None or any(m.created_at is None for m in listing):
            return listing[0], "listed", len(listing) > 1
        return min(listing, key=lambda m: _distance(m, when)), "listed", False
    if when is None:
        return None, "none", False
    near = [m for m in messages if m.created_at is not None and _distance(m, when) <= window]
    if not near:
        return None, "none", False
    named = str(upload.message_id) if upload.message_id is not None else ""
    for m in near:
        if str(m.id) == named:
            return m, "message_id", False
    # nearest first; at equal distance the message sent after the upload wins
    near.sort(key=lambda m: (_distance(m, when), m.created_at < when))
    ambiguous = len(near) > 1 and _distance(near[1], when) - _distance(near[0], when) < AMBIGUITY_MARGIN
    return near[0], "nearest", ambiguous


def link_group(uploads: Iterable[UploadRef], messages: Sequence[MessageRef],
               window: timedelta = LINK_WINDOW) -> GroupLinks:
    """Decide every upload of one (session, user); collect what each carrier must list.

    A message that carried several files lists all of them, in upload order after the ids
    it already had.
    """
    result = GroupLinks()
    listed: dict[ObjectId, list[str]] = {m.id: list(m.file_ids) for m in messages}
    for up in sorted(uploads, key=_upload_order):
        msg, evidence, ambiguous = choose_carrier(up, messages, window)
        if msg is None:
            result.decisions.append(LinkDecision(up, None, Outcome.ORPHANED, evidence))
            continue
        lists_it = up.file_id in listed[msg.id]
        if not lists_it:
            listed[msg.id].append(up.file_id)
            result.additions.setdefault(msg.id, []).append(up.file_id)
        if ambiguous:
            outcome = Outcome.AMBIGUOUS
        elif lists_it and up.message_id == str(msg.id):
            outcome = Outcome.ALREADY_LINKED
        else:
            outcome = Outcome.LINKED
        result.decisions.append(LinkDecision(up, msg, outcome, evidence))
    return result


def _upload_order(u: UploadRef) -> tuple:
    return (u.uploaded_at is None, u.uploaded_at or datetime.min, str(u.id))


def link_session(messages: list[dict[str, Any]], uploads: list[dict[str, Any]],
                 window: timedelta = LINK_WINDOW) -> list[LinkDecision]:
    """Decide the links of one session and user's uploads and write them into the
    documents: an upload's ``message_id`` becomes its carrier's hex id, and the carrier
    lists the file in ``file_ids`` with ``has_files: true``. Returns the decisions."""
    from app_patch.rules.file_fields import normalise_file_ids

    if not uploads:
        return []
    session = uploads[0].get("session_id")
    by_id = {d["_id"]: d for d in messages
             if d.get("role") == "user" and isinstance(d["_id"], ObjectId)}
    candidates = [] if session is None else [
        MessageRef(d["_id"], _when(d.get("created_at")),
                   tuple(normalise_file_ids(d.get("file_ids"))))
        for d in by_id.values()]
    refs = [UploadRef(d["_id"], "" if d.get("file_id") is None else str(d["file_id"]),
                      d.get("message_id"), _when(d.get("uploaded_at"))) for d in uploads]
    links = link_group(refs, candidates, window)
    carrier = {id(d.upload): d.message for d in links.decisions}
    for ref, doc in zip(refs, uploads, strict=True):
        msg = carrier.get(id(ref))
        if msg is not None and doc.get("message_id") != str(msg.id):
            doc["message_id"] = str(msg.id)
    for msg_id, added in links.additions.items():
        doc = by_id[msg_id]
        doc["file_ids"] = normalise_file_ids(doc.get("file_ids")) + list(added)
        doc["has_files"] = True
    return links.decisions


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None
