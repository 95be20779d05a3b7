"""Link existing files to messages

Revision ID: 9a6b41d3e5f7
Revises: 7e3f05b6c8d2
Create Date: 2026-11-24 09:00:02

The guide's "Links files to messages" step. Each upload is linked to the user message
that carried it: among the user messages of the same session and user, a message that
already lists the file wins; else the message the upload's own `message_id` names, if it
is a user message within the link window; else the message whose `created_at` is nearest
to `uploaded_at` within the window (2 minutes; app_patch/rules/linking.py says why).
The upload's `message_id` becomes that message's hex id, and the message lists the file
in `file_ids` with `has_files: true`; a message that carried several files lists all of
them. Uploads with no plausible message are reported (orphaned) and left alone.

Counts in the log: linked (something was written), already linked (nothing to write),
ambiguous (linked by time while another message was as near: worth a look), orphaned.
Messages and uploads are read together, one session and user at a time. Downgrade puts
back the `message_id`, `file_ids` and `has_files` values this revision changed.
"""

from collections import Counter

from app_patch.rules import Outcome, link_session
from mongrate import Operations

revision = "9a6b41d3e5f7"
down_revision = "7e3f05b6c8d2"
branch_labels = None
depends_on = None

SAMPLES = 10  # orphaned and ambiguous upload file ids named in the log


def upgrade(op: Operations) -> None:
    tally = Counter({o.value: 0 for o in Outcome})
    samples = {Outcome.ORPHANED: [], Outcome.AMBIGUOUS: []}

    def link(key, messages, uploads):
        for decision in link_session(messages, uploads):
            tally[decision.outcome.value] += 1
            kept = samples.get(decision.outcome)
            if kept is not None and len(kept) < SAMPLES:
                kept.append(decision.upload.file_id)

    op.change_groups(
        link,
        messages=op.source("chat_messages", key=("session_id", "user_id"), order="created_at"),
        uploads=op.source("file_uploads", key=("session_id", "user_id"), order="uploaded_at"),
    )
    op.report(**tally)
    for outcome, ids in samples.items():
        if ids:
            op.log(f"{tally[outcome.value]} {outcome.value} uploads, e.g. file ids {', '.join(ids)}")


def downgrade(op: Operations) -> None:
    op.restore_undo()
