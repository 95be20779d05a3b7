"""What a person reads: the human format of ``upgrade``, ``current -v`` and ``backup list``
(``--json`` keeps the data). No Python dict or list repr in any of them."""

from __future__ import annotations

import json
import re

import pytest

UP_ITEMS = """
op.backup_collection("items")
op.report(seen=12, skipped=0, kind="plain")
op.update_many("items", {}, {"$set": {"a": 1}})  # last: a rewrite defers its count to the end
"""


def shape(text: str) -> str:
    """``text`` with what changes from run to run (durations, dates, host, pid, backup
    stamps) replaced by fixed marks."""
    text = re.sub(r"\d{8}_\d{6}", "<stamp>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<date>", text)
    text = re.sub(r" +\d+\.\d\ds\b", " <s>", text)  # durations (right-aligned: any width)
    return re.sub(r"\S+:\d+$", "<host:pid>", text, flags=re.M)


@pytest.fixture
def reported(project, mongo_db):
    mongo_db["items"].insert_many([{"n": i} for i in range(12)])
    project.add("aaaa1111", None, body_up=UP_ITEMS, message="back up and set a")
    return project


def test_upgrade_prints_aligned_counts(reported):
    r = reported.run("upgrade", "head")
    assert r.code == 0, r.err
    assert shape(r.out) == (
        "upgraded aaaa1111 in <s>\n"
        "    items backed up: 12\n"
        "    backup_id:       <stamp>\n"
        "    seen:            12\n"
        "    skipped:          0\n"
        "    kind:            plain\n"
        "    items updated:   12\n"
        "now at aaaa1111\n")


def test_current_verbose_prints_the_log_with_counts(reported):
    assert reported.run("upgrade", "head").code == 0
    r = reported.run("current", "-v")
    assert r.code == 0, r.err
    assert shape(r.out.replace(str(reported.versions), "<versions>")) == (
        "<base> -> aaaa1111 (head) (current), back up and set a\n"
        "    Revision ID: aaaa1111\n"
        "    Revises: <base>\n"
        "    Path: <versions>/aaaa1111_r.py\n"
        "    Create Date: <date>\n"
        "\n"
        "    back up and set a\n"
        "log of aaaa1111:\n"
        "  <date> upgrade   succeeded <s> <host:pid>\n"
        "      items backed up: 12\n"
        "      backup_id:       <stamp>\n"
        "      seen:            12\n"
        "      skipped:          0\n"
        "      kind:            plain\n"
        "      items updated:   12\n")


def test_backup_list_is_columns_under_a_header(reported, mongo_db):
    assert reported.run("backup", "list").out == "no backups\n"
    assert reported.run("upgrade", "head").code == 0
    r = reported.run("backup", "list")
    assert r.code == 0, r.err
    assert shape(r.out) == (
        "backup           source  snapshot                      status    documents  revision"
        "  created (UTC)\n"
        "<stamp>  items   items_backup_<stamp>  complete         12  aaaa1111  <date>\n")
    data = json.loads(reported.run("--json", "backup", "list").out)
    assert [(b["source"], b["count"]) for b in data] == [("items", 12)]
