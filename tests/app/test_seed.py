"""The seeder writes the pre-change chat database with every untidy case, reproducibly."""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
import uuid
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import gridfs
import pytest
from bson import ObjectId
from deepdiff import DeepDiff
from PIL import Image

from app_patch.testdata.answers import Answers
from app_patch.testdata.samples import KINDS, VARIANTS, make_sample, sample_files, sample_variant
from app_patch.testdata.seed import ALL_CASES, COLLECTIONS, add_session, main, seed
from mongrate.config import with_database

SMALL = {"sessions": 20, "messages_per_session": 10, "uploads": 80}
PNGS = {"png", "png_palette_transparent", "png_16bit"}
JPEGS = {"jpeg", "jpeg_cmyk", "jpeg_exif_rotated"}
PLACEHOLDERS = ["pending", "undefined", "null", "None", "temp"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeded(mongo_client):
    """One small seeded database shared by the read-only checks of this module."""
    name = f"t_seed_{uuid.uuid4().hex[:10]}"
    db = mongo_client[name]
    report = seed(db, seed=11, **SMALL)
    yield db, report
    mongo_client.drop_database(name)


def dump(db) -> dict[str, list[dict]]:
    return {c: list(db[c].find().sort("_id", 1)) for c in COLLECTIONS}


# --- samples ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_samples_are_what_they_claim(kind):
    for variant in range(VARIANTS):
        s = sample_variant(kind, variant)
        assert s.kind == kind and s.variant == variant
        if s.is_image:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    im = Image.open(io.BytesIO(s.data))
                except Image.DecompressionBombError:
                    assert kind == "large_dims_png"
                    continue
                assert im.size == (s.width, s.height)
                assert Image.MIME[im.format] in (s.true_mime, "image/x-icon")
                if s.decodable:
                    im.load()
                    assert im.width * im.height <= 640 * 480  # small: seeding stays fast
                elif kind == "large_dims_png":  # opens with a warning; too big to load here
                    assert im.width * im.height > Image.MAX_IMAGE_PIXELS
                else:
                    with pytest.raises((OSError, SyntaxError, Image.DecompressionBombError)):
                        im.load()
        else:
            assert s.width is None and not s.decodable
            with pytest.raises(Image.UnidentifiedImageError):
                Image.open(io.BytesIO(s.data))


def test_sample_formats_have_their_special_features():
    rng = random.Random(5)
    by_kind = {s.kind: s for s in sample_files(rng)}
    assert [s.kind for s in sample_files(rng)] == list(KINDS)
    assert Image.open(io.BytesIO(by_kind["jpeg_cmyk"].data)).mode == "CMYK"
    rotated = by_kind["jpeg_exif_rotated"]
    assert Image.open(io.BytesIO(rotated.data)).getexif()[0x0112] == 6
    assert rotated.width != rotated.height
    assert rotated.display_size == (rotated.height, rotated.width)
    pal = Image.open(io.BytesIO(by_kind["png_palette_transparent"].data))
    assert pal.mode == "P" and "transparency" in pal.info
    assert Image.open(io.BytesIO(by_kind["png_16bit"].data)).mode.startswith("I;16")
    for kind in ("gif_animated", "webp_animated"):
        assert Image.open(io.BytesIO(by_kind[kind].data)).n_frames > 1
    big = by_kind["large_dims_png"]
    assert big.width * big.height >= 10**8 and len(big.data) < 100_000
    assert by_kind["pdf"].data.startswith(b"%PDF-") and b"%%EOF" in by_kind["pdf"].data
    assert by_kind["zero_byte"].data == b""
    # Deterministic and cached: the same (kind, variant) is the same object.
    assert make_sample("png", random.Random(1)) is make_sample("png", random.Random(1))
    with pytest.raises(ValueError, match="unknown sample kind"):
        make_sample("heic", rng)


# --- seed(): determinism ----------------------------------------------------------------


def test_same_seed_gives_identical_documents_and_another_seed_does_not(mongo_client):
    names = [f"t_det_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    try:
        small = {"sessions": 6, "messages_per_session": 6, "uploads": 20}
        r1 = seed(mongo_client[names[0]], seed=42, **small)
        r2 = seed(mongo_client[names[1]], seed=42, **small)
        seed(mongo_client[names[2]], seed=43, **small)
        a, b, c = (dump(mongo_client[n]) for n in names)
        assert all(a[coll] for coll in COLLECTIONS if coll != "fs.chunks")
        assert DeepDiff(a, b) == {}
        assert r1.truth == r2.truth and r1.cases == r2.cases
        assert DeepDiff(a, c) != {}
        # Reseeding with drop=True reproduces the same database.
        seed(mongo_client[names[1]], seed=42, drop=True, **small)
        assert DeepDiff(a, dump(mongo_client[names[1]])) == {}
    finally:
        for n in names:
            mongo_client.drop_database(n)


def test_refuses_to_mix_into_existing_chat_data(mongo_db):
    mongo_db.chat_messages.insert_one({"role": "user"})
    with pytest.raises(Exception, match="--drop"):
        seed(mongo_db, sessions=1, messages_per_session=2, uploads=0)


def test_shapes_and_times_follow_chat_database_md(seeded):
    db, report = seeded
    assert db.chat_sessions.count_documents({}) == report.sessions == SMALL["sessions"]
    assert db.chat_messages.count_documents({}) == report.messages == 200
    assert db.file_uploads.count_documents({}) == report.uploads == SMALL["uploads"]
    for m in db.chat_messages.find():
        assert m["role"] in ("user", "assistant")
        assert isinstance(m["created_at"], datetime) and m["created_at"].tzinfo is None
        assert m["_id"].generation_time.replace(tzinfo=None) == m["created_at"].replace(
            microsecond=0
        )
    for s in db.chat_sessions.find():
        times = [m["created_at"] for m in db.chat_messages.find({"session_id": s["session_id"]})]
        assert len(times) == SMALL["messages_per_session"] and min(times) > s["created_at"]
    up = db.file_uploads.find_one()
    assert set(up) == {
        "_id",
        "file_id",
        "original_name",
        "mime_type",
        "message_id",
        "session_id",
        "user_id",
        "chatflow_id",
        "file_size",
        "upload_type",
        "file_hash",
        "processed",
        "processing_error",
        "uploaded_at",
        "processed_at",
        "metadata",
    }
    assert "session_id_1" in db.chat_sessions.index_information()
    assert "created_at_1" in db.chat_messages.index_information()


# --- seed(): assistant answers as long and as varied as real ones ------------------------

CJK = re.compile("[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")
ARABIC = re.compile("[\u0600-\u06ff]")
EMOJI = re.compile("[\U0001f300-\U0001faff]")


def test_assistant_answers_have_a_realistic_spread(seeded):
    db, report = seeded
    texts = [m["content"] for m in db.chat_messages.find({"role": "assistant"})]
    sizes = sorted(len(t.encode("utf-8")) for t in texts)
    assert sizes[len(sizes) // 2] < 1000  # most a few hundred characters
    assert 60 * 1024 <= sizes[-1] <= 64 * 1024  # the tail reaches 64 KiB, never past it
    long = sum(n >= 4096 for n in sizes)
    assert 1 <= long < len(sizes) // 4
    assert any("```" in t for t in texts)
    assert any(CJK.search(t) for t in texts) and any(ARABIC.search(t) for t in texts)
    assert any(EMOJI.search(t) for t in texts)
    st = report.answers
    assert (st.answers, st.long, st.longest) == (len(texts), long, sizes[-1])
    assert st.with_code == sum("```" in t for t in texts)
    assert st.with_emoji == sum(bool(EMOJI.search(t)) for t in texts)


def test_answers_are_deterministic_and_spread_at_scale():
    first = Answers(1, 4000)
    texts = [first.next() for _ in range(4000)]
    again = Answers(1, 4000)
    assert [again.next() for _ in range(4000)] == texts
    other = Answers(2, 4000)
    assert [other.next() for _ in range(50)] != texts[:50]
    sizes = [len(t.encode("utf-8")) for t in texts]
    assert sum(n < 1000 for n in sizes) > 0.7 * len(sizes)
    assert 0.02 * len(sizes) < sum(n >= 4096 for n in sizes) < 0.1 * len(sizes)
    assert max(sizes) <= 64 * 1024
    assert sum(n >= 32 * 1024 for n in sizes) >= 10  # the tail is not a single outlier


def test_even_a_tiny_seed_holds_a_64k_answer(mongo_db):
    report = seed(mongo_db, sessions=1, messages_per_session=2, uploads=0, seed=9)
    (answer,) = mongo_db.chat_messages.find({"role": "assistant"})
    size = len(answer["content"].encode("utf-8"))
    assert 60 * 1024 <= size <= 64 * 1024 and report.answers.longest == size


# --- seed(): every untidy case, in the counts and in the data ---------------------------


def test_every_untidy_case_and_kind_is_present(seeded):
    _, report = seeded
    assert set(report.cases) == set(ALL_CASES)
    assert [c for c, n in report.cases.items() if n == 0] == []
    assert [k for k, n in report.kind_counts.items() if n == 0] == []
    assert sum(report.kind_counts.values()) == report.uploads
    # Low rates: the untidy cases are the exception, not the rule.
    assert report.cases["upload_message_id_wrong_message"] < report.uploads // 4
    assert report.cases["upload_orphan"] < report.uploads // 4


def test_message_file_fields_in_the_data_match_the_counts(seeded):
    db, report = seeded
    msgs = db.chat_messages
    cases = report.cases
    assert (
        msgs.count_documents({"file_ids": {"$exists": False}, "has_files": {"$exists": False}})
        == cases["msg_no_file_fields"]
    )
    assert msgs.count_documents({"file_ids": {"$type": "null"}}) == cases["msg_file_ids_null"]
    assert (
        msgs.count_documents(
            {
                "has_files": True,
                "$or": [
                    {"file_ids": {"$exists": False}},
                    {"file_ids": {"$type": "null"}},
                    {"file_ids": {"$size": 0}},
                ],
            }
        )
        == cases["msg_has_files_without_ids"]
    )
    assert (
        msgs.count_documents({"file_ids.0": {"$exists": True}, "has_files": {"$ne": True}})
        == cases["msg_ids_without_has_files"]
    )
    assert msgs.count_documents({"metadata": {"$exists": True}}) == cases["msg_with_metadata"]
    gridfs_only = set(report.gridfs_without_upload)
    carried: dict[str, set[str]] = {}
    for fid, mid in report.truth.items():
        if mid:
            carried.setdefault(mid, set()).add(fid)
    partial = lists_orphan = 0
    for m in msgs.find({"file_ids.0": {"$exists": True}}):
        ids = set(m["file_ids"])
        lists_orphan += bool(ids & gridfs_only)
        ours = ids - gridfs_only
        assert m["role"] == "user" and ours <= carried[str(m["_id"])]  # never someone else's
        partial += ours < carried[str(m["_id"])]
    assert partial == cases["msg_partial_file_ids"]
    assert lists_orphan == cases["msg_lists_gridfs_without_upload"]
    assert sum(len(v) >= 2 for v in carried.values()) == cases["message_with_several_uploads"]


def test_upload_links_in_the_data_match_the_truth_and_counts(seeded):
    db, report = seeded
    messages = {str(m["_id"]): m for m in db.chat_messages.find()}
    uploads = list(db.file_uploads.find())
    n = {"empty": 0, "placeholder": 0, "nonexistent": 0, "wrong": 0, "far": 0, "before": 0}
    for up in uploads:
        mid, truth = up["message_id"], report.truth[up["file_id"]]
        if mid == "":
            n["empty"] += 1
        elif mid in PLACEHOLDERS:
            n["placeholder"] += 1
        elif mid not in messages:
            assert re.fullmatch(r"[0-9a-f]{24}", mid)
            n["nonexistent"] += 1
        elif mid != truth:
            n["wrong"] += 1
            assert messages[mid]["session_id"] == up["session_id"]
        session_msgs = [m for m in messages.values() if m["session_id"] == up["session_id"]]
        if truth is None:  # genuinely orphaned: no user message anywhere near it
            assert all(
                abs(m["created_at"] - up["uploaded_at"]) > timedelta(minutes=5)
                for m in session_msgs
            )
            continue
        carrier = messages[truth]
        assert carrier["role"] == "user" and carrier["session_id"] == up["session_id"]
        gap = up["uploaded_at"] - carrier["created_at"]
        assert abs(gap) <= timedelta(seconds=30)
        n["far"] += abs(gap) > timedelta(seconds=5)
        n["before"] += gap <= timedelta(0)
    cases = report.cases
    assert n["empty"] == cases["upload_message_id_empty"]
    assert n["placeholder"] == cases["upload_message_id_placeholder"]
    assert n["nonexistent"] == cases["upload_message_id_nonexistent"]
    assert n["wrong"] == cases["upload_message_id_wrong_message"]
    assert n["far"] == cases["upload_far_from_message"]
    assert n["before"] == cases["upload_before_message"]
    assert sum(t is None for t in report.truth.values()) == cases["upload_orphan"]
    # Burst sessions: user messages seconds apart, and uploads inside them.
    bursts = set()
    for s in db.chat_sessions.find():
        times = sorted(
            m["created_at"]
            for m in messages.values()
            if m["session_id"] == s["session_id"] and m["role"] == "user"
        )
        if any(b - a < timedelta(seconds=10) for a, b in zip(times, times[1:], strict=False)):
            bursts.add(s["session_id"])
    assert len(bursts) == cases["session_burst"]
    assert (
        sum(1 for up in uploads if up["session_id"] in bursts and report.truth[up["file_id"]])
        == cases["upload_in_burst_session"]
    )


def test_upload_contents_names_and_gridfs_match_the_counts(seeded):
    db, report = seeded
    uploads = list(db.file_uploads.find())
    files = {str(f["_id"]): f for f in db["fs.files"].find()}
    kind = {fid: report.samples[fid][0] for fid in report.samples}
    cases = report.cases
    missing = {u["file_id"] for u in uploads} - set(files)
    assert missing == set(report.missing_gridfs) and len(missing) == cases["upload_gridfs_missing"]
    without_row = set(files) - {u["file_id"] for u in uploads}
    assert without_row == set(report.gridfs_without_upload)
    assert len(without_row) == cases["gridfs_without_upload"]

    def count(pred) -> int:
        return sum(1 for u in uploads if pred(u))

    assert (
        count(lambda u: kind[u["file_id"]] in PNGS and u["mime_type"] == "image/jpeg")
        == cases["mime_png_as_jpeg"]
    )
    assert (
        count(
            lambda u: kind[u["file_id"]] in JPEGS and u["mime_type"] == "application/octet-stream"
        )
        == cases["mime_jpeg_as_octet"]
    )
    assert (
        count(lambda u: kind[u["file_id"]] == "pdf" and u["mime_type"] == "image/png")
        == cases["mime_pdf_as_png"]
    )
    assert (
        count(lambda u: u["file_size"] != len(sample_variant(*report.samples[u["file_id"]]).data))
        == cases["file_size_mismatch"]
    )
    assert (
        count(lambda u: any(ord(ch) > 127 for ch in u["original_name"])) == cases["name_non_ascii"]
    )
    assert count(lambda u: re.search("[\"'`]", u["original_name"])) == cases["name_quotes"]
    assert (
        count(lambda u: re.search(r"\.\.[/\\]", u["original_name"])) == cases["name_path_traversal"]
    )
    assert count(lambda u: re.search("[\r\n]", u["original_name"])) == cases["name_line_break"]
    assert count(lambda u: u["upload_type"] == "url") == cases["upload_type_url"]
    assert count(lambda u: u["file_hash"] is None) == cases["file_hash_null"]
    assert sum("contentType" in f for f in files.values()) == cases["gridfs_content_type"]
    for u in uploads:
        f = files.get(u["file_id"])
        if f is not None:
            assert f["length"] == len(sample_variant(*report.samples[u["file_id"]]).data)
            assert f["metadata"] == {
                "user_id": u["user_id"],
                "session_id": u["session_id"],
                "original_name": u["original_name"],
            }
            assert f["filename"] == u["original_name"]


def test_gridfs_files_are_readable_with_pymongo(seeded):
    db, report = seeded
    bucket = gridfs.GridFSBucket(db)
    for fid, (kind, variant) in report.samples.items():
        if fid in report.missing_gridfs:
            with pytest.raises(gridfs.errors.NoFile):
                bucket.open_download_stream(ObjectId(fid))
            continue
        out = bucket.open_download_stream(ObjectId(fid))
        assert out.read() == sample_variant(kind, variant).data
        assert out.chunk_size == 261120
    for fid in report.gridfs_without_upload:
        assert bucket.open_download_stream(ObjectId(fid)).read()


def test_multi_chunk_file_and_pymongo_writes_after_seeding(seeded):
    db, _ = seeded
    big = sample_variant("bmp", 2).data
    assert len(big) > 261120
    t0 = datetime(2025, 7, 1, 12, 0, 0)
    added = add_session(
        db,
        messages=[("user", "look", t0), ("assistant", "ok", t0 + timedelta(seconds=3))],
        uploads=[
            {
                "data": big,
                "message": 0,
                "name": "big.bmp",
                "mime": "image/bmp",
                "content_type": "image/bmp",
            }
        ],
    )
    fid = ObjectId(added.file_ids[0])
    assert db["fs.chunks"].count_documents({"files_id": fid}) == 2
    bucket = gridfs.GridFSBucket(db)
    out = bucket.open_download_stream(fid)
    assert out.read() == big
    assert db["fs.files"].find_one({"_id": fid})["contentType"] == "image/bmp"
    new_id = bucket.upload_from_stream("again.bmp", big)  # PyMongo's own writer still works
    assert bucket.open_download_stream(new_id).read() == big


# --- add_session ------------------------------------------------------------------------


def test_add_session_writes_the_links_it_is_told(mongo_db):
    t0 = datetime(2025, 8, 1, 9, 30, 0, 123456)
    added = add_session(
        mongo_db,
        user_id="u1",
        messages=[
            ("user", "first", t0),
            ("assistant", "reply", t0 + timedelta(seconds=4)),
            ("user", "second", t0 + timedelta(seconds=9), {"has_files": False}),
        ],
        uploads=[
            {"kind": "jpeg", "message": 0},
            {"kind": "pdf", "message": 2, "message_id": "pending", "mime": "image/png"},
            {"kind": "png", "message": 0, "listed": False, "gridfs": False, "file_size": 7},
        ],
    )
    m0, m1, m2 = (mongo_db.chat_messages.find_one({"_id": ObjectId(i)}) for i in added.message_ids)
    assert m0["file_ids"] == [added.file_ids[0]] and m0["has_files"] is True
    assert "file_ids" not in m1
    assert m2["file_ids"] == [added.file_ids[1]] and m2["has_files"] is False
    assert m0["created_at"] == t0.replace(microsecond=123000)
    ups = {u["file_id"]: u for u in mongo_db.file_uploads.find()}
    assert ups[added.file_ids[0]]["message_id"] == added.message_ids[0]
    assert ups[added.file_ids[1]]["message_id"] == "pending"
    assert ups[added.file_ids[1]]["mime_type"] == "image/png"
    assert ups[added.file_ids[2]]["file_size"] == 7
    assert mongo_db["fs.files"].count_documents({}) == 2
    assert mongo_db.chat_sessions.find_one({"session_id": added.session_id})["user_id"] == "u1"


# --- command line -----------------------------------------------------------------------


def args(url: str, *extra: str) -> list[str]:
    return [
        "--url",
        url,
        "--sessions",
        "2",
        "--messages-per-session",
        "4",
        "--uploads",
        "3",
        *extra,
    ]


def test_cli_database_in_url_wins_over_option(mongo_url, mongo_db, mongo_client, capsys):
    other = f"t_other_{uuid.uuid4().hex[:8]}"
    try:
        assert main(args(mongo_url, "--database", other)) == 0
        assert mongo_db.chat_messages.count_documents({}) == 8
        assert other not in mongo_client.list_database_names()
        assert f"seeded {mongo_db.name}:" in capsys.readouterr().out
        # Without a database in the URL, --database is used.
        assert main(args(with_database(mongo_url, ""), "--database", other)) == 0
        assert mongo_client[other].file_uploads.count_documents({}) == 3
    finally:
        mongo_client.drop_database(other)


@pytest.mark.parametrize(
    "bad",
    [
        ["--sessions", "-1", "--messages-per-session", "2", "--uploads", "0"],
        ["--sessions", "1", "--messages-per-session", "two", "--uploads", "0"],
        ["--sessions", "0", "--messages-per-session", "2", "--uploads", "5"],
    ],
)
def test_cli_bad_counts_exit_2_with_one_line(bad, mongo_url, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(["--url", mongo_url, *bad])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err


def test_cli_existing_data_needs_drop(mongo_url, capsys):
    assert main(args(mongo_url)) == 0
    assert main(args(mongo_url)) == 2
    assert "--drop" in capsys.readouterr().err
    assert main(args(mongo_url, "--drop")) == 0


def test_cli_unreachable_server_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "app_patch.testdata.seed", *args("mongodb://127.0.0.1:9/x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "within 5 s" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
