"""The schema revision's GridFS reads that the streams cannot pair: legacy ``file_id``
shapes (upper-case hex, an ObjectId) and first chunks shorter than the sniffer wants."""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from deepdiff import DeepDiff
from gridfs import GridFSBucket

from app_patch.rules import first_chunk_facts, gridfs_file_facts
from app_patch.sniff import JPEG, OCTET, PDF, PNG, sniff_mime
from app_patch.testdata.samples import sample_variant
from app_patch.testdata.seed import add_session
from tests.versions.conftest import SCHEMA, dump, run_revision

T0 = datetime(2025, 7, 1, 9, 0, 0)
PNG_DATA = sample_variant("png", 0).data
JPEG_DATA = sample_variant("jpeg", 0).data
#: ``%PDF-`` at byte 1010: a PDF to the sniffer, but not in a first chunk of 1000 bytes
LATE_PDF = b"\0" * 1010 + sample_variant("pdf", 0).data


def upload_facts(db, file_id) -> dict:
    doc = db.file_uploads.find_one({"file_id": file_id})
    return {k: doc.get(k) for k in ("mime_type", "claimed_mime_type", "is_image", "file_size",
                                    "file_missing")}


def rechunk(db, hex_id: str, data: bytes, chunk_size: int) -> None:
    """Store the GridFS file again with ``chunk_size``-byte chunks (same id, same bytes)."""
    db["fs.files"].delete_one({"_id": ObjectId(hex_id)})
    db["fs.chunks"].delete_many({"files_id": ObjectId(hex_id)})
    GridFSBucket(db, chunk_size_bytes=chunk_size).upload_from_stream_with_id(
        ObjectId(hex_id), "late.pdf", data)


def test_legacy_file_ids_and_short_first_chunks_get_their_files_facts(mongo_db):
    assert sniff_mime(LATE_PDF[:1000]) == OCTET and sniff_mime(LATE_PDF) == PDF
    s = add_session(mongo_db, messages=[("user", "files", T0)], uploads=[
        {"message": 0, "data": PNG_DATA, "mime": JPEG},       # file_id in upper case
        {"message": 0, "data": JPEG_DATA, "mime": JPEG},      # file_id an ObjectId
        {"message": 0, "data": LATE_PDF, "mime": PNG},        # 1000-byte chunks
        {"message": 0, "data": b"", "mime": PNG},             # an empty file
        {"message": 0, "data": PNG_DATA, "mime": PNG, "gridfs": False},  # upper case, gone
    ])
    upper, as_oid, chunked, empty, gone = s.file_ids
    uploads = mongo_db.file_uploads
    uploads.update_one({"file_id": upper}, {"$set": {"file_id": upper.upper()}})
    uploads.update_one({"file_id": as_oid}, {"$set": {"file_id": ObjectId(as_oid)}})
    uploads.update_one({"file_id": gone}, {"$set": {"file_id": gone.upper()}})
    rechunk(mongo_db, chunked, LATE_PDF, 1000)
    before = dump(mongo_db)

    results = run_revision(mongo_db, SCHEMA)

    assert upload_facts(mongo_db, upper.upper()) == {
        "mime_type": PNG, "claimed_mime_type": JPEG, "is_image": True,
        "file_size": len(PNG_DATA), "file_missing": False}
    assert upload_facts(mongo_db, ObjectId(as_oid)) == {
        "mime_type": JPEG, "claimed_mime_type": None, "is_image": True,
        "file_size": len(JPEG_DATA), "file_missing": False}
    assert upload_facts(mongo_db, chunked) == {
        "mime_type": PDF, "claimed_mime_type": PNG, "is_image": False,
        "file_size": len(LATE_PDF), "file_missing": False}
    assert upload_facts(mongo_db, empty) == {
        "mime_type": OCTET, "claimed_mime_type": PNG, "is_image": False, "file_size": 0,
        "file_missing": False}
    assert upload_facts(mongo_db, gone.upper()) == {  # flagged; claims kept
        "mime_type": PNG, "claimed_mime_type": None, "is_image": False,
        "file_size": len(PNG_DATA), "file_missing": True}
    assert (results["files_missing"], results["mime_corrected"], results["images"]) == (1, 3, 2)

    run_revision(mongo_db, SCHEMA, "downgrade")
    assert DeepDiff(before, dump(mongo_db)) == {}


def test_gridfs_file_facts_reads_what_the_streams_did_not_bring(mongo_db):
    s = add_session(mongo_db, messages=[("user", "files", T0)],
                    uploads=[{"message": 0, "data": PNG_DATA}, {"message": 0, "data": LATE_PDF}])
    png_id, pdf_id = s.file_ids
    rechunk(mongo_db, pdf_id, LATE_PDF, 1000)
    pdf_file = mongo_db["fs.files"].find_one({"_id": ObjectId(pdf_id)}, {"length": 1})
    first = mongo_db["fs.chunks"].find_one({"files_id": ObjectId(pdf_id), "n": 0})
    head = first_chunk_facts(first)
    assert head == {"mime": OCTET, "head": 1000}
    # a canonical id with what the streams brought: the short first chunk is read past
    assert gridfs_file_facts(mongo_db, pdf_id, [pdf_file], [head]) == (len(LATE_PDF), PDF)
    # legacy shapes are looked up by themselves, whatever the streams paired with them
    assert gridfs_file_facts(mongo_db, png_id.upper(), [], []) == (len(PNG_DATA), PNG)
    assert gridfs_file_facts(mongo_db, ObjectId(png_id), [], []) == (len(PNG_DATA), PNG)
    assert gridfs_file_facts(mongo_db, str(ObjectId()).upper(), [], []) == (None, None)
    assert gridfs_file_facts(mongo_db, "not-an-id", [], []) == (None, None)
    assert gridfs_file_facts(mongo_db, png_id, [], []) == (None, None)  # nothing streamed
