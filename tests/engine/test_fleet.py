"""Many databases in one command, on the real server: each with its own version collection
and lock, failures isolated (or stopping the rest with --fail-fast), re-runs resume, and
the closing table as text and JSON."""

from __future__ import annotations

import json

import pytest
from pymongo import monitoring

from mongrate.commands.fleet import match_databases, run_fleet
from mongrate.config import load_config
from mongrate.progress import Reporter
from mongrate.runtime.lock import Leases, Lock

FLAGGED = """
if op.db.flags.find_one({"fail": True}):
    raise RuntimeError("this tenant is flagged to fail")
op.update_many("items", {}, {"$set": {"v": 2}})
"""


@pytest.fixture
def tenants(project, mongo_client):
    """Four tenant databases with items, named after this test's database."""
    prefix = project.url.rsplit("/", 1)[1]
    names = [f"{prefix}_tenant_{i}" for i in range(4)]
    for name in names:
        mongo_client[name].items.insert_many([{"n": j} for j in range(5)])
    project.add("aaaa1111", None, body_up=FLAGGED)
    project.add("bbbb2222", "aaaa1111", body_up='op.create_index("items", [("v", 1)], name="by_v")')
    yield project, names, f"{prefix}_tenant_*"
    for name in names:
        mongo_client.drop_database(name)


def heads(client, name):
    return sorted(client[name].mongrate_version.distinct("_id"))


def rows(out: str) -> dict[str, list[str]]:
    """The table's lines by database (database, from, to, status..., duration)."""
    return {ln.split()[0]: ln.split() for ln in out.splitlines()[1:] if "_tenant_" in ln.split()[0]}


def test_one_failure_leaves_the_others_done_and_a_rerun_finishes(tenants, mongo_client):
    project, names, pattern = tenants
    mongo_client[names[2]].flags.insert_one({"fail": True})
    r = project.run("upgrade", "head", "--databases", pattern, "--jobs", "2")
    assert r.code == 1
    table = rows(r.out)
    assert [table[n][3] for n in names] == ["upgraded", "upgraded", "failed", "upgraded"]
    assert table[names[2]][1:3] == ["base", "base"] and table[names[0]][1:3] == ["base", "bbbb2222"]
    assert f"{names[2]}: upgrade of aaaa1111" in r.out and "flagged to fail" in r.out
    assert r.err.strip().endswith(f"1 of 4 database(s) did not succeed: {names[2]}")
    assert [heads(mongo_client, n) for n in names] == [["bbbb2222"], ["bbbb2222"], [], ["bbbb2222"]]
    # each database has its own log: the failure is recorded only where it happened
    assert mongo_client[names[2]].mongrate_log.count_documents({"status": "failed"}) == 1
    assert mongo_client[names[0]].mongrate_log.count_documents({"status": "failed"}) == 0

    mongo_client[names[2]].flags.delete_many({})
    r = project.run("--json", "upgrade", "head", "--databases", pattern, "--jobs", "3")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["ok"] is True and data["jobs"] == 3
    assert [(d["database"], d["from"], d["to"], d["status"]) for d in data["databases"]] == [
        (names[0], ["bbbb2222"], ["bbbb2222"], "up to date"),
        (names[1], ["bbbb2222"], ["bbbb2222"], "up to date"),
        (names[2], [], ["bbbb2222"], "upgraded 2"),
        (names[3], ["bbbb2222"], ["bbbb2222"], "up to date"),
    ]
    assert all(mongo_client[n].items.count_documents({"v": 2}) == 5 for n in names)


def test_fail_fast_starts_no_further_database(tenants, mongo_client):
    project, names, pattern = tenants
    mongo_client[names[0]].flags.insert_one({"fail": True})
    r = project.run("upgrade", "head", "--databases", pattern, "--fail-fast")
    assert r.code == 1
    assert [rows(r.out)[n][3] for n in names] == ["failed", "skipped", "skipped", "skipped"]
    assert all(heads(mongo_client, n) == [] for n in names)


def test_a_database_whose_lock_is_held_is_reported_locked(tenants, mongo_client):
    project, names, pattern = tenants
    leases = Leases(mongo_client[names[1]], "mongrate_lock")
    with Lock(leases, lease=30, timeout=1, command="another replica", reporter=Reporter(quiet=True)):
        r = project.run("upgrade", "head", "--databases", pattern, "--jobs", "4",
                        "--lock-timeout", "0.3")
    assert r.code == 1
    table = rows(r.out)
    assert table[names[1]][3] == "locked" and "another replica" in r.out
    assert {table[n][3] for n in names if n != names[1]} == {"upgraded"}


def test_current_check_stamp_downgrade_from_the_ini_list(tenants, mongo_client):
    project, names, _ = tenants
    project.write_ini(databases=f"{names[0]}, {names[1]}", jobs="2")
    r = project.run("current")
    assert r.code == 0 and [rows(r.out)[n][3:5] for n in names[:2]] == [["2", "pending"]] * 2
    assert project.run("upgrade", "head").code == 0
    assert heads(mongo_client, names[2]) == []  # not in the list
    r = project.run("check")
    assert r.code == 0 and {rows(r.out)[n][3] for n in names[:2]} == {"ok"}
    r = project.run("downgrade", "aaaa1111")
    assert r.code == 0 and all(heads(mongo_client, n) == ["aaaa1111"] for n in names[:2])
    assert all("by_v" not in mongo_client[n].items.index_information() for n in names[:2])
    r = project.run("stamp", "bbbb2222")
    assert r.code == 0 and all(heads(mongo_client, n) == ["bbbb2222"] for n in names[:2])
    r = project.run("check")
    assert r.code == 0


def test_run_fleet_is_a_python_call_that_returns_the_table(tenants, mongo_client):
    project, names, pattern = tenants
    mongo_client[names[3]].flags.insert_one({"fail": True})
    result = run_fleet(load_config(project.ini), "upgrade", [pattern], jobs=2,
                       reporter=Reporter(quiet=True), target="head")
    assert not result.ok and [r.database for r in result.failed] == [names[3]]
    assert [r.after for r in result.rows] == [("bbbb2222",)] * 3 + [()]


def test_patterns_match_globs_and_exact_names_but_not_system_databases():
    names = ["admin", "config", "local", "tenant_a", "tenant_b", "other"]
    assert match_databases(names, ["tenant_*"]) == ["tenant_a", "tenant_b"]
    assert match_databases(names, ["*"]) == ["other", "tenant_a", "tenant_b"]
    assert match_databases(names, ["t*_b", "new_one"]) == ["new_one", "tenant_b"]
    with pytest.raises(Exception, match=r"no database on the server matches x_\*"):
        match_databases(names, ["x_*"])


def test_autogenerate_compares_the_first_tenant_and_the_fleet_applies_it(tenants, mongo_client):
    project, names, pattern = tenants
    server_url = project.url.rsplit("/", 1)[0] + "/"
    (project.path / "schema.yaml").write_text(
        "collections:\n  items:\n    indexes:\n      - {name: by_v, keys: {v: 1}}\n"
        "      - {name: by_n, keys: {n: -1}}\n")
    project.write_ini(url=server_url, databases=pattern, schema="schema.yaml")
    assert project.run("upgrade", "head").code == 0
    r = project.run("check")
    assert r.code == 1
    assert all(f"{n}: schema drift: items: index by_n missing (declared in schema.yaml)" in r.out
               for n in names)
    r = project.run("revision", "--autogenerate", "-m", "index n")
    assert r.code == 0 and f"comparing with {names[0]}" in r.err
    assert project.run("upgrade", "head").code == 0
    r = project.run("check")
    assert r.code == 0, r.out
    assert all("by_n" in mongo_client[n].items.index_information() for n in names)


class _Counter(monitoring.CommandListener):
    """Counts the commands of clients made while ``active`` (a real pymongo listener;
    pymongo has no way to unregister one, so it stays inert outside the test)."""

    active = False
    names: list[str] = []

    def started(self, event) -> None:
        if _Counter.active:
            _Counter.names.append(event.command_name)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def _upgrade_listened(listener: type, project, pattern: str):
    """``upgrade head`` over the tenants, two jobs, with ``listener`` (a class switched on
    by its ``active``) registered for the clients the run makes."""
    if not any(isinstance(x, listener) for x in monitoring._LISTENERS.command_listeners):  # noqa: SLF001
        monitoring.register(listener())
    listener.active = True
    try:
        return project.run("upgrade", "head", "--databases", pattern, "--jobs", "2")
    finally:
        listener.active = False


def test_server_facts_are_asked_once_per_fleet_run(tenants):
    """buildInfo (and the write probe) describe the server, not a database: the jobs
    share one client, so a fleet run asks once, not once or twice per database."""
    project, names, pattern = tenants
    _Counter.names = []
    r = _upgrade_listened(_Counter, project, pattern)
    assert r.code == 0, r.err
    assert _Counter.names.count("buildInfo") == 1


class _Recorder(monitoring.CommandListener):
    """Records (database, command name, command, failed) of clients made while ``active``
    (a real pymongo listener, inert outside the test that switches it on)."""

    active = False
    events: list[list] = []

    def started(self, event) -> None:
        if _Recorder.active:
            _Recorder.events.append([event.database_name, event.command_name,
                                     dict(event.command), event.request_id, False])

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        for e in _Recorder.events:
            if e[3] == event.request_id:
                e[4] = True


def test_a_tenant_takes_no_round_trip_it_can_do_without(tenants, mongo_client):
    """Through a network a fleet's time is its round trips: a tenant's upgrade reads its
    heads once under the lock, prunes no leases that cannot exist, lets the client (not
    each database) measure the server's clock and learn that a rename cannot replace its
    target, asks once whether a collection it
    creates exists, and records what it creates in one upsert each."""
    project, names, pattern = tenants
    project.add("cccc3333", "bbbb2222", body_up='op.create_collection("audit")')
    _Recorder.events = []
    r = _upgrade_listened(_Recorder, project, pattern)
    assert r.code == 0, r.err
    events = _Recorder.events
    assert all(mongo_client[n].audit.name in mongo_client[n].list_collection_names()
               for n in names)

    def count(name, test=lambda cmd: True, *, db=None):
        return sum(1 for d, c, cmd, _, _ in events
                   if c == name and (db is None or d == db) and test(cmd))

    for n in names:
        assert count("find", lambda c: c["find"] == "mongrate_version", db=n) == 2
        assert count("delete", lambda c: c["delete"] == "mongrate_lock", db=n) == 0
        assert count("listCollections", lambda c: c.get("filter") == {"name": "audit"}, db=n) == 1
        # the record of what a revision created is one upsert, not a read then an insert
        assert count("find", lambda c: c["find"] == "mongrate_undo"
                     and c["filter"].get("kind") in ("index_created", "collection_created"),
                     db=n) == 0
    assert count("hello") <= 1 and count("isMaster") <= 1  # the clock, once per client
    refused = sum(1 for _, c, cmd, _, failed in events
                  if c == "renameCollection" and cmd.get("dropTarget") and failed)
    # FerretDB v1: learned once per client (jobs renaming at the same first moment may
    # each be refused once), then drop + rename
    assert refused <= 2
