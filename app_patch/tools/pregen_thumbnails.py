"""Pre-generate the 100/200/300 thumbnails of the images already stored (after ``upgrade head``).

``python -m app_patch.tools.pregen_thumbnails [--url URL] [--database NAME] [--batch N]
[--jobs N] [-v]``

Walks the ``file_uploads`` rows marked ``is_image`` (the schema revision sets the flag) in
``_id`` order, ``--batch`` rows at a time. One query per batch finds which thumbnails are
already cached; only the missing ones are made, one decode per image, and stored in the
``thumbnails`` GridFS bucket exactly as the app stores them (same names, metadata and bytes).
Resumable: a run that is interrupted, or run again, skips what is cached. An image that cannot
be thumbnailed (corrupt, too many pixels, bytes missing) is skipped and counted (``-v`` names
each); the app then answers its thumbnail requests as it would have anyway.

The database: ``--url`` (default ``$MONGODB_URL``), its path naming the database, else
``--database`` (default ``$MONGODB_DATABASE_NAME``, else ``flowise_proxy``); as the service.
Memory stays within the decode budget (``THUMBNAIL_DECODE_BUDGET``), ``--jobs`` images at a
time. Exit 0 when done, 2 on bad arguments or an unreachable database.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bson import ObjectId
from gridfs import GridFSBucket
from gridfs.errors import CorruptGridFile, NoFile
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from app_patch.service import thumbnails
from app_patch.service.decodepool import DecodePool
from app_patch.service.settings import DEFAULT_DATABASE, DEFAULT_URL, Settings
from app_patch.service.storage import THUMB_BUCKET
from app_patch.service.thumbservice import cache_key, cache_metadata

EXIT_INVALID = 2
OWNER = "pregen"


class PregenError(Exception):
    """Bad arguments or no database: the one line shown."""


@dataclass
class Tally:
    images: int = 0  # rows looked at
    complete: int = 0  # already had every size
    made: int = 0  # thumbnails stored
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> images
    lock: threading.Lock = field(default_factory=threading.Lock)

    def skip(self, reason: str) -> None:
        with self.lock:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return (
            f"{self.images} images: {self.complete} already complete, {self.made} thumbnails "
            f"made, {skipped} skipped" + (f" ({why})" if why else "")
        )


def _limit(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise PregenError(f"{name}={raw!r} is not a positive integer; fix or unset it")
    return int(raw)


def pregenerate(
    db: Database,
    *,
    batch: int = 200,
    jobs: int = 2,
    verbose: bool = False,
    max_pixels: int | None = None,
    max_source_bytes: int | None = None,
    decoder: DecodePool | None = None,
) -> Tally:
    """Make the missing thumbnails of every image in ``db``; returns the counts.

    ``decoder`` None: a pool of ``jobs`` workers and ``THUMBNAIL_DECODE_BUDGET`` bytes."""
    if decoder is None:
        decoder = DecodePool(
            jobs, _limit("THUMBNAIL_DECODE_BUDGET", Settings.thumbnail_decode_budget)
        )
    max_pixels = max_pixels or _limit("THUMBNAIL_MAX_PIXELS", Settings.thumbnail_max_pixels)
    max_source_bytes = max_source_bytes or _limit(
        "THUMBNAIL_MAX_SOURCE_BYTES", Settings.thumbnail_max_source_bytes
    )
    tally = Tally()
    rows = db["file_uploads"]
    cache = db[f"{THUMB_BUCKET}.files"]
    last: Any = None
    common = (db, decoder, tally, verbose, max_pixels, max_source_bytes)
    with ThreadPoolExecutor(jobs, thread_name_prefix="pregen") as pool:
        while True:
            query: dict[str, Any] = {"is_image": True, "file_missing": {"$ne": True}}
            if last is not None:
                query["_id"] = {"$gt": last}
            page = list(rows.find(query, {"file_id": 1, "user_id": 1}).sort("_id", 1).limit(batch))
            if not page:
                break
            last = page[-1]["_id"]
            keys = [
                cache_key(str(r.get("file_id")), s)
                for r in page
                for s in thumbnails.THUMB_SIZES
            ]
            cached = {
                d["filename"] for d in cache.find({"filename": {"$in": keys}}, {"filename": 1})
            }
            work = []
            for row in page:
                file_id = str(row.get("file_id") or "")
                missing = [
                    s
                    for s in thumbnails.THUMB_SIZES
                    if cache_key(file_id, s) not in cached
                ]
                if missing:
                    work.append((file_id, str(row.get("user_id") or ""), missing))
                else:
                    tally.complete += 1
            tally.images += len(page)
            list(pool.map(lambda job: _one(*common, *job), work))
            print(f"pregen: {tally.line()}", flush=True)
    return tally


def _one(
    db: Database,
    decoder: DecodePool,
    tally: Tally,
    verbose: bool,
    max_pixels: int,
    max_source_bytes: int,
    file_id: str,
    user_id: str,
    sizes: list[int],
) -> None:
    def skip(reason: str, detail: str = "") -> None:
        tally.skip(reason)
        if verbose:
            print(f"pregen: skipped {file_id}: {detail or reason}", flush=True)

    if not ObjectId.is_valid(file_id):
        return skip("bad file id")
    oid = ObjectId(file_id)
    try:
        with GridFSBucket(db).open_download_stream(oid) as source:
            if source.length > max_source_bytes:
                return skip("too large", f"{source.length} bytes is over the source limit")
            head = source.read(thumbnails.ESTIMATE_HEAD)
            cost = thumbnails.estimate_cost(
                head, max(sizes), source_bytes=source.length, max_pixels=max_pixels
            )
            with decoder.slot_blocking(cost, OWNER):
                data = head + source.read()
                made = thumbnails.make_thumbnails(data, sizes, max_pixels=max_pixels)
                del data
    except NoFile:
        return skip("bytes missing")
    except CorruptGridFile as exc:
        return skip("bytes incomplete", str(exc))
    except thumbnails.ThumbnailError as exc:
        return skip("not renderable", exc.reason)
    bucket = GridFSBucket(db, bucket_name=THUMB_BUCKET)
    for size, thumb in made.items():
        metadata = cache_metadata(
            file_id, size, user_id, thumb.mime, width=thumb.width, height=thumb.height
        )
        bucket.upload_from_stream(
            cache_key(file_id, size), thumb.data, metadata=metadata
        )
    # Deleted meanwhile: the app removed what it could see, not what was stored just now.
    if db["fs.files"].count_documents({"_id": oid}, limit=1) == 0:
        for doc in db[f"{THUMB_BUCKET}.files"].find({"metadata.file_id": file_id}, {"_id": 1}):
            bucket.delete(doc["_id"])
        return skip("deleted meanwhile")
    with tally.lock:
        tally.made += len(made)
    return None


def _database(args: argparse.Namespace) -> tuple[MongoClient, Database]:
    url = args.url or os.environ.get("MONGODB_URL", "").strip() or DEFAULT_URL
    name = urlsplit(url).path.lstrip("/") or (
        args.database or os.environ.get("MONGODB_DATABASE_NAME", "").strip() or DEFAULT_DATABASE
    )
    client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise PregenError(
            f"cannot reach the database at {urlsplit(url).hostname}: {type(exc).__name__}; "
            "check --url / MONGODB_URL"
        ) from None
    if "file_uploads" not in client[name].list_collection_names():
        client.close()
        raise PregenError(
            f"database {name!r} has no file_uploads collection: check --database / the URL, "
            "and run mongrate upgrade head first"
        )
    return client, client[name]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app_patch.tools.pregen_thumbnails",
        description="Pre-generate the thumbnails of stored images (resumable).",
    )
    p.add_argument("--url", help="MongoDB URL (default $MONGODB_URL)")
    p.add_argument("--database", help="database when the URL names none")
    p.add_argument("--batch", type=_positive, default=200, help="rows per query (default 200)")
    p.add_argument("--jobs", type=_positive, default=2, help="images at a time (default 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="name each skipped image")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        decoder = DecodePool(
            args.jobs, _limit("THUMBNAIL_DECODE_BUDGET", Settings.thumbnail_decode_budget)
        )
        client, db = _database(args)
    except PregenError as exc:
        print(f"pregen: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    started = time.monotonic()
    try:
        tally = pregenerate(
            db, batch=args.batch, jobs=args.jobs, verbose=args.verbose, decoder=decoder
        )
    except KeyboardInterrupt:
        print("pregen: interrupted; run it again to go on where it stopped", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"pregen: done in {time.monotonic() - started:.1f}s: {tally.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
