"""Create necessary indexes

Revision ID: c2d8e9f0a1b3
Revises: 9a6b41d3e5f7
Create Date: 2026-11-24 09:00:03

The guide's "Creates indexes" step: the indexes the history and file queries need, with the
names and keys fixed in notes/SCHEMA.md. Each is created only if absent (an index with the
same keys under another name is kept and serves instead); the downgrade drops only the
indexes this revision created, and a collection only if creating an index made it (e.g.
thumbnails.files, which the app fills lazily) and it is still empty.
"""

from pymongo.errors import OperationFailure

from mongrate.operations.ops import OpError

revision = "c2d8e9f0a1b3"
down_revision = "9a6b41d3e5f7"
branch_labels = None
depends_on = None

#: (collection, keys, name, options), as notes/SCHEMA.md fixes them.
INDEXES = (
    ("chat_messages", [("session_id", 1), ("created_at", 1)], "session_created", {}),
    ("chat_messages", [("session_id", 1), ("has_files", 1), ("created_at", 1)],
     "session_files_created", {}),
    ("chat_messages", [("user_id", 1), ("has_files", 1), ("created_at", -1)],
     "user_files_created", {}),
    ("file_uploads", [("file_id", 1)], "file_id_unique", {"unique": True}),
    ("file_uploads", [("message_id", 1), ("user_id", 1)], "message_user", {}),
    ("file_uploads", [("session_id", 1), ("user_id", 1), ("uploaded_at", -1)],
     "session_user_uploaded", {}),
    ("fs.files", [("metadata.user_id", 1), ("metadata.session_id", 1)],
     "metadata_user_session", {}),
    ("thumbnails.files", [("filename", 1)], "thumb_key", {}),
)
CREATED = "created_collection_if_empty"  # undo-record kind of this revision's own


def upgrade(op):
    absent = {c for c, *_ in INDEXES} - set(op.db.list_collection_names())
    for collection in sorted(absent):
        if op.dry_run:
            break
        # remembered before an index creates it, so the downgrade can remove it again
        op.undo.update_one({"revision": op.revision, "collection": collection, "kind": CREATED,
                             "doc_id": f"collection:{collection}"},
                            {"$setOnInsert": {"created": True}}, upsert=True)
    created = []
    for collection, keys, name, options in op.progress(INDEXES, len(INDEXES), "indexes"):
        try:
            if op.create_index(collection, keys, name=name, **options):
                created.append(name)
        except OperationFailure as exc:
            if options.get("unique") and _is_duplicate_error(exc):
                raise OpError(_duplicates_message(op, collection, keys[0][0], name)) from None
            raise
    op.results.update({"indexes_created": len(created),
                       "indexes_present": len(INDEXES) - len(created)})


def _is_duplicate_error(exc: OperationFailure) -> bool:
    # MongoDB says E11000 (code 11000); FerretDB's SQLite backend an InternalError
    return exc.code == 11000 or "UNIQUE constraint failed" in str(exc)


def _duplicates_message(op, collection: str, field: str, name: str) -> str:
    dups = list(op.db[collection].aggregate([
        {"$group": {"_id": f"${field}", "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}},
    ]))
    example = f" (e.g. {dups[0]['_id']!r} x{dups[0]['n']})" if dups else ""
    return (f"{collection} holds {len(dups)} duplicate {field} value(s){example}, so the unique "
            f"index {name} cannot be built: remove or merge the duplicate rows, then run "
            "'mongrate upgrade head' again")


def downgrade(op):
    marks = list(op.undo.find({"revision": op.revision, "kind": CREATED}))
    op.restore_undo()  # drops the indexes this revision created, and forgets the marks
    names = set(op.db.list_collection_names())
    for mark in marks:
        coll = op.db[mark["collection"]]
        if coll.name in names and coll.find_one({}, {"_id": 1}) is None \
                and set(coll.index_information()) <= {"_id_"}:
            op.db.drop_collection(coll.name)
