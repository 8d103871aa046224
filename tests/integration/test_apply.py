"""test_apply: `hookflow-engine apply FILE` against a real PostgreSQL.

Each test migrates a fresh database with `hookflow-engine migrate`, writes a secrets store holding
engine/token_key and applies deploy/local/demo.json (or a variant of it). What a user observes:
the rows, the summary lines, the exit status and the one error line; tokens are checked by
decrypting the stored bytes here with AES-256-GCM and the documented AAD.
"""

import base64
import copy
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import harness

PREFIX = "hookflow-engine: apply: "
TABLES = ("tenants", "branches", "role_mappings", "support_approvals", "connections",
          "workflows", "workflow_versions", "audit_log")
DEMO_TOKENS = {
    ("meta", "104877"): ("demo-page-token", None),
    ("hubspot", "33"): ("demo-hubspot-access-token", "demo-hubspot-refresh-token"),
    ("twilio", "AC0123456789abcdef0123456789abcdef"): ("demo-twilio-auth-token", None),
}


def engine():
    return harness.bin("hookflow-engine")


def demo():
    with open(os.path.join(harness.source_dir(), "deploy", "local", "demo.json")) as f:
        return json.load(f)


def env_for(url, secrets_dir=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOOKFLOW_DATABASE_URL", "HOOKFLOW_SECRETS_DIR", "HOOKFLOW_CONFIG_FILE",
                        "HOOKFLOW_CATALOG_DIR")}
    if url is not None:
        env["HOOKFLOW_DATABASE_URL"] = url
    if secrets_dir is not None:
        env["HOOKFLOW_SECRETS_DIR"] = secrets_dir
    env.update(extra)
    return harness.sanitizer_env(env)


def no_sanitizer_report(r):
    for marker in ("Sanitizer", "runtime error", "LeakSanitizer"):
        assert marker not in r.stderr, r.stderr


def run(args, env, stdin=None):
    r = subprocess.run([engine(), *args], env=env, capture_output=True, text=True, timeout=120,
                       input=stdin)
    no_sanitizer_report(r)
    return r


def write_doc(directory, doc, name="tenants.json"):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        if isinstance(doc, str):
            f.write(doc)
        else:
            json.dump(doc, f, indent=2)
    return path


def one_error_line(r):
    """The run failed with exit 1 and exactly one line on stderr; returns it without prefix."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(PREFIX), lines[0]
    assert r.stdout == "", r.stdout
    return lines[0][len(PREFIX):]


class Env:
    """A migrated database plus a secrets store with a token key, and helpers around them."""

    def __init__(self, postgres):
        self.pg = postgres
        self.url = postgres.fresh_db("apply")
        r = subprocess.run([engine(), "migrate"], env=env_for(self.url), capture_output=True,
                           text=True, timeout=180)
        no_sanitizer_report(r)
        assert r.returncode == 0, r.stderr
        self.dir = harness.temp_dir("apply")
        self.secrets = os.path.join(self.dir, "secrets")
        self.key = os.urandom(32)
        self.write_key(self.key)

    def write_key(self, key, name="token_key", form="base64"):
        os.makedirs(os.path.join(self.secrets, "engine"), exist_ok=True)
        text = base64.b64encode(key).decode() if form == "base64" else key.hex()
        with open(os.path.join(self.secrets, "engine", name), "w") as f:
            f.write(text + "\n")

    def apply(self, doc, *args, secrets=True, extra_env=None, name="tenants.json"):
        path = write_doc(self.dir, doc, name)
        env = env_for(self.url, self.secrets if secrets else None, **(extra_env or {}))
        return run(["apply", path, *args], env)

    def apply_ok(self, doc, *args, **kw):
        r = self.apply(doc, *args, **kw)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert r.stderr == "", r.stderr
        return r.stdout.splitlines()

    def query(self, sql, params=None):
        conn = self.pg.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def snapshot(self):
        """Every row of every table apply writes, as sorted JSON text: equal snapshots mean
        nothing changed (timestamps and ciphertexts included)."""
        return {t: sorted(r[0] for r in self.query(f"SELECT to_jsonb(x)::text FROM {t} x"))
                for t in TABLES}

    def connections(self):
        rows = self.query("SELECT connector, account, status, granted_scopes, access_token_enc,"
                          " refresh_token_enc, token_version, token_expires_at FROM connections")
        return {(r[0], r[1]): r for r in rows}


def open_token(key, connector, account, slot, sealed):
    sealed = bytes(sealed)
    aad = f"hookflow-token:v1:{connector}:{account}:{slot}".encode()
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad).decode()


def check_sealed(key, connector, account, slot, sealed, plain):
    """The stored bytes are nonce || ciphertext || tag of plain under key, bound to the row."""
    assert sealed is not None, (connector, account, slot)
    sealed = bytes(sealed)
    assert plain.encode() not in sealed
    assert len(sealed) == 12 + len(plain.encode()) + 16
    assert open_token(key, connector, account, slot, sealed) == plain
    other = "refresh" if slot == "access" else "access"
    with pytest.raises(Exception):
        open_token(key, connector, account, other, sealed)


@pytest.fixture
def env(postgres):
    return Env(postgres)


DEMO_FIRST = ("demo-laundry: tenant created, 1 branch created, 1 role granted, 1 support approval "
              "granted, 3 connections created, 1 workflow created (version 1)")


def test_demo_applies_with_sealed_tokens(env):
    assert env.apply_ok(demo()) == [DEMO_FIRST]

    assert env.query("SELECT slug, name, environment FROM tenants") == [
        ("demo-laundry", "Demo Laundry", "sandbox")]
    assert env.query("SELECT branch, name FROM branches") == [("main", "Main street")]
    assert env.query("SELECT branch, subject, role FROM role_mappings") == [
        ("main", "alice@example.com", "admin")]
    assert env.query("SELECT connector, approved_by FROM support_approvals") == [
        ("meta", "support@hookflow.dev")]

    conns = env.connections()
    assert set(conns) == set(DEMO_TOKENS)
    assert conns[("meta", "104877")][2:4] == ("active", ["pages_messaging"])
    for (connector, account), (access, refresh) in DEMO_TOKENS.items():
        row = conns[(connector, account)]
        assert row[6] == 0  # token_version
        check_sealed(env.key, connector, account, "access", row[4], access)
        if refresh is None:
            assert row[5] is None
        else:
            check_sealed(env.key, connector, account, "refresh", row[5], refresh)

    wf = env.query("SELECT w.name, w.enabled, w.current_version, w.trigger_connector,"
                   " w.trigger_event, v.definition, v.created_by FROM workflows w"
                   " JOIN workflow_versions v ON v.workflow_id = w.id")
    assert len(wf) == 1
    name, enabled, version, tc, te, definition, created_by = wf[0]
    assert (name, enabled, version, tc, te, created_by) == (
        "Pickup confirmation", True, 1, "meta", "message", "apply")
    assert definition == demo()["tenants"][0]["workflows"][0]["definition"]

    audit = env.query("SELECT actor, action FROM audit_log ORDER BY id")
    assert {a for a, _ in audit} == {"apply"}
    assert [a for _, a in audit] == [
        "tenant.created", "branch.created", "role.granted", "support_approval.granted",
        "connection.created", "connection.created", "connection.created", "workflow.created"]
    # No token in the audit trail.
    details = " ".join(r[0] for r in env.query("SELECT detail::text FROM audit_log"))
    for access, refresh in DEMO_TOKENS.values():
        assert access not in details


def test_second_apply_changes_nothing(env):
    env.apply_ok(demo())
    before = env.snapshot()
    assert env.apply_ok(demo()) == ["demo-laundry: no changes"]
    assert env.snapshot() == before
    # Member order and whitespace of the definition do not make a new version.
    doc = demo()
    definition = doc["tenants"][0]["workflows"][0]["definition"]
    doc["tenants"][0]["workflows"][0]["definition"] = dict(reversed(list(definition.items())))
    assert env.apply_ok(doc) == ["demo-laundry: no changes"]
    assert env.snapshot() == before


def test_expiry_is_compared_as_a_time(env):
    doc = demo()
    doc["tenants"][0]["connections"][1]["expires_at"] = "2030-01-01T00:00:00Z"
    assert env.apply_ok(doc) == [DEMO_FIRST]
    before = env.snapshot()
    # The same instant written another way is no change.
    doc["tenants"][0]["connections"][1]["expires_at"] = "2030-01-01T01:00:00+01:00"
    assert env.apply_ok(doc) == ["demo-laundry: no changes"]
    assert env.snapshot() == before
    doc["tenants"][0]["connections"][1]["expires_at"] = None
    assert env.apply_ok(doc) == ["demo-laundry: 1 connection updated"]
    assert env.connections()[("hubspot", "33")][7] is None
    # Only the expiry changed: the tokens were not sealed again.
    assert env.connections()[("hubspot", "33")][6] == 0


def test_summary_names_every_new_version_however_many(env):
    doc = demo()
    template = doc["tenants"][0]["workflows"][0]
    doc["tenants"][0]["workflows"] = []
    for i in range(120):
        wf = json.loads(json.dumps(template))
        wf["name"] = wf["definition"]["name"] = f"Pickup SMS {i:03d}"
        doc["tenants"][0]["workflows"].append(wf)
    env.apply_ok(doc)
    for wf in doc["tenants"][0]["workflows"]:
        wf["definition"]["nodes"][0]["params"]["body"] = "Changed: {{event.payload.message.text}}"
    line, = env.apply_ok(doc)
    # Far past 256 bytes: nothing cut off.
    assert line == "demo-laundry: 120 workflows updated (versions " + ", ".join(["2"] * 120) + ")"


def test_concurrent_applies_create_once(env):
    path = write_doc(env.dir, demo())
    procs = [subprocess.Popen([engine(), "apply", path], env=env_for(env.url, env.secrets),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Sanitizer" not in err, err
    assert sorted(out.strip() for out, _ in outs) == sorted(
        [DEMO_FIRST, "demo-laundry: no changes", "demo-laundry: no changes"])
    assert env.query("SELECT count(*) FROM tenants") == [(1,)]
    assert env.query("SELECT count(*) FROM workflow_versions") == [(1,)]


def test_changed_definition_makes_a_new_version(env):
    env.apply_ok(demo())
    doc = demo()
    node = doc["tenants"][0]["workflows"][0]["definition"]["nodes"][0]
    node["params"]["body"] = "Pickup requested: {{event.payload.message.text}}"
    assert env.apply_ok(doc) == ["demo-laundry: 1 workflow updated (version 2)"]
    rows = env.query("SELECT v.version, v.definition FROM workflow_versions v ORDER BY version")
    assert [v for v, _ in rows] == [1, 2]
    assert rows[0][1] == demo()["tenants"][0]["workflows"][0]["definition"]
    assert rows[1][1] == doc["tenants"][0]["workflows"][0]["definition"]
    assert env.query("SELECT current_version, enabled FROM workflows") == [(2, True)]
    assert env.query("SELECT count(*) FROM audit_log WHERE action = 'workflow.updated'") == [(1,)]

    # Unchanged again: same version.
    assert env.apply_ok(doc) == ["demo-laundry: no changes"]
    assert env.query("SELECT current_version FROM workflows") == [(2,)]

    # Only the enabled flag: no new version.
    doc["tenants"][0]["workflows"][0]["enabled"] = False
    assert env.apply_ok(doc) == ["demo-laundry: 1 workflow disabled"]
    assert env.query("SELECT current_version, enabled FROM workflows") == [(2, False)]

    # Going back to the first definition is a change too: version 3, trigger copied.
    assert env.apply_ok(demo()) == [
        "demo-laundry: 1 workflow updated (version 3), 1 workflow enabled"]
    assert env.query("SELECT current_version, enabled, trigger_connector, trigger_event"
                     " FROM workflows") == [(3, True, "meta", "message")]
    assert env.query("SELECT count(*) FROM workflow_versions") == [(3,)]


def test_changed_token_is_sealed_again(env):
    env.apply_ok(demo())
    doc = demo()
    doc["tenants"][0]["connections"][0]["access_token"] = "rotated-page-token"
    doc["tenants"][0]["connections"][1]["refresh_token"] = None
    assert env.apply_ok(doc) == ["demo-laundry: 2 connections updated"]
    conns = env.connections()
    meta = conns[("meta", "104877")]
    check_sealed(env.key, "meta", "104877", "access", meta[4], "rotated-page-token")
    assert meta[6] == 1
    hubspot = conns[("hubspot", "33")]
    assert hubspot[5] is None and hubspot[6] == 1
    check_sealed(env.key, "hubspot", "33", "access", hubspot[4], "demo-hubspot-access-token")
    # Left out means "keep": a document without token members touches no token.
    for c in doc["tenants"][0]["connections"]:
        for member in ("access_token", "refresh_token", "expires_at", "scopes"):
            c.pop(member, None)
    before = env.snapshot()
    assert env.apply_ok(doc) == ["demo-laundry: no changes"]
    assert env.snapshot() == before


def test_tokens_from_env_and_file(env):
    doc = demo()
    os.makedirs(os.path.join(env.dir, "tokens"), exist_ok=True)
    with open(os.path.join(env.dir, "tokens", "hubspot-refresh"), "w") as f:
        f.write("refresh-from-file\n")
    conns = doc["tenants"][0]["connections"]
    conns[0]["access_token"] = {"env": "HF_TEST_META_TOKEN"}
    conns[1]["refresh_token"] = {"file": "tokens/hubspot-refresh"}  # relative to the file
    lines = env.apply_ok(doc, extra_env={"HF_TEST_META_TOKEN": "page-token-from-env"})
    assert lines == [DEMO_FIRST]
    rows = env.connections()
    check_sealed(env.key, "meta", "104877", "access", rows[("meta", "104877")][4],
                 "page-token-from-env")
    check_sealed(env.key, "hubspot", "33", "refresh", rows[("hubspot", "33")][5],
                 "refresh-from-file")
    # The same sources again: no change.
    assert env.apply_ok(doc, extra_env={"HF_TEST_META_TOKEN": "page-token-from-env"}) == [
        "demo-laundry: no changes"]
    # An unset variable is an error naming the member, and the token is not printed anywhere.
    before = env.snapshot()
    r = env.apply(doc)
    line = one_error_line(r)
    assert line.startswith("tenants[0].connections[0].access_token.env: "), line
    assert "HF_TEST_META_TOKEN" in line and "is not set" in line
    assert env.snapshot() == before


def test_token_key_rotation(env):
    env.apply_ok(demo())
    old = env.key
    new = os.urandom(32)
    env.write_key(old, "token_key.previous", form="hex")
    env.write_key(new)
    # Every managed token opens only with the previous key: sealed again under the new one.
    assert env.apply_ok(demo()) == ["demo-laundry: 3 connections updated"]
    for (connector, account), row in env.connections().items():
        access, refresh = DEMO_TOKENS[(connector, account)]
        check_sealed(new, connector, account, "access", row[4], access)
        if refresh is not None:
            check_sealed(new, connector, account, "refresh", row[5], refresh)
    assert env.apply_ok(demo()) == ["demo-laundry: no changes"]


def test_dry_run_changes_nothing(env):
    before = env.snapshot()
    lines = env.apply_ok(demo(), "--dry-run")
    assert lines == [DEMO_FIRST, "dry run: rolled back, nothing was changed"]
    assert env.snapshot() == before
    assert env.query("SELECT count(*) FROM tenants") == [(0,)]

    env.apply_ok(demo())
    before = env.snapshot()
    doc = demo()
    doc["tenants"][0]["workflows"][0]["definition"]["nodes"][0]["params"]["body"] = "changed"
    assert env.apply_ok(doc, "--dry-run") == [
        "demo-laundry: 1 workflow updated (version 2)", "dry run: rolled back, nothing was changed"]
    assert env.snapshot() == before


def broken(mutate):
    doc = demo()
    mutate(doc)
    return doc


def _set(path, value):
    def mutate(doc):
        target = doc
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
    return mutate


T0 = ["tenants", 0]
CONN = T0 + ["connections"]
WF = T0 + ["workflows", 0, "definition"]

BROKEN = {
    "unknown connector": (
        _set(CONN + [1, "connector"], "shopfy"),
        'tenants[0].connections[1].connector: "shopfy" is not a catalog connector'),
    "unknown trigger event": (
        _set(WF + ["trigger", "event"], "mesage"),
        'tenants[0].workflows[0].definition.trigger.event: "mesage" is not an event of meta'),
    "unknown action": (
        _set(WF + ["nodes", 0, "action"], "send_fax"),
        'tenants[0].workflows[0].definition.nodes[0].action: "send_fax" is not an action of '
        'twilio'),
    "workflow edge to a missing node": (
        _set(WF + ["edges"], [{"from": "notify_staff", "to": "nowhere"}]),
        "tenants[0].workflows[0].definition"),
    "workflow nodes not an array": (
        _set(WF + ["nodes"], {"id": "x"}),
        "tenants[0].workflows[0].definition"),
    "workflow definition not an object": (
        _set(T0 + ["workflows", 0, "definition"], "Pickup confirmation"),
        "tenants[0].workflows[0].definition: must be an object, not a string"),
    "missing required action input": (
        lambda doc: doc["tenants"][0]["workflows"][0]["definition"]["nodes"][0]["params"].pop(
            "from"),
        "tenants[0].workflows[0].definition.nodes[0].params"),
    "typo in a member": (
        lambda doc: doc["tenants"][0]["connections"][0].update(
            acount=doc["tenants"][0]["connections"][0].pop("account")),
        'tenants[0].connections[0]: unknown member "acount"'),
    "bad role": (
        _set(T0 + ["branches", 0, "roles", 0, "role"], "owner"),
        'tenants[0].branches[0].roles[0].role: "owner" is not one of admin, member, viewer'),
    "bad slug": (
        _set(T0 + ["slug"], "Demo Laundry"),
        'tenants[0].slug: "Demo Laundry" is not a slug'),
    "bad expiry": (
        _set(CONN + [2, "expires_at"], "next tuesday"),
        "tenants[0].connections[2].expires_at: must be an RFC 3339 time with an offset"),
    "duplicate connection": (
        lambda doc: doc["tenants"][0]["connections"].append(
            copy.deepcopy(doc["tenants"][0]["connections"][0])),
        "tenants[0].connections[3]: meta account 104877 is listed twice"),
    "token of the wrong type": (
        _set(CONN + [0, "access_token"], 42),
        "tenants[0].connections[0].access_token: must be a string, null"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_file_changes_nothing(env, case):
    env.apply_ok(demo())
    mutate, want = BROKEN[case]
    doc = broken(mutate)
    # Earlier members change too, so a partial apply would show.
    doc["tenants"][0]["name"] = "Renamed Laundry"
    doc["tenants"][0]["connections"][0]["status"] = "disabled"
    before = env.snapshot()
    line = one_error_line(env.apply(doc))
    assert line.startswith(want), line
    for access, refresh in DEMO_TOKENS.values():
        assert access not in line
    assert env.snapshot() == before


def test_beta_connector_needs_support_approval(env):
    doc = demo()
    doc["tenants"][0]["support_approvals"] = []
    line = one_error_line(env.apply(doc))
    assert line.startswith("tenants[0].connections[0].status: meta is a Beta connector"), line
    assert env.query("SELECT count(*) FROM tenants") == [(0,)]
    # A disabled connection needs no approval; activating it later does.
    doc["tenants"][0]["connections"][0]["status"] = "disabled"
    env.apply_ok(doc)
    doc["tenants"][0]["connections"][0]["status"] = "active"
    line = one_error_line(env.apply(doc))
    assert line.startswith("tenants[0].connections[0].status: meta is a Beta connector"), line
    assert env.apply_ok(demo()) == [
        "demo-laundry: 1 support approval granted, 1 connection updated"]
    assert env.connections()[("meta", "104877")][2] == "active"


def test_malformed_json_names_the_position(env):
    before = env.snapshot()
    text = '{\n  "tenants": [\n    {"slug": "x",, "name": "y"}\n  ]\n}\n'
    line = one_error_line(env.apply(text))
    assert line.startswith("line 3, column "), line
    assert "malformed JSON" in line or "JSON" in line, line
    line = one_error_line(env.apply('{"tenants": ['))
    assert line.startswith("line 1, column "), line
    assert env.snapshot() == before


def test_missing_token_key(env):
    before = env.snapshot()
    os.remove(os.path.join(env.secrets, "engine", "token_key"))
    line = one_error_line(env.apply(demo()))
    assert line.startswith("tenants[0].connections[0].access_token: no token key"), line
    assert "engine/token_key is missing" in line, line
    # A malformed key: the reason, never the key's text.
    with open(os.path.join(env.secrets, "engine", "token_key"), "w") as f:
        f.write("not-a-valid-key-but-secret-looking\n")
    line = one_error_line(env.apply(demo()))
    assert "engine/token_key holds 34 characters" in line, line
    assert "secret-looking" not in line
    # No secrets dir at all.
    line = one_error_line(env.apply(demo(), secrets=False))
    assert "HOOKFLOW_SECRETS_DIR is not set" in line, line
    assert env.snapshot() == before
    # A document without tokens needs no key.
    doc = demo()
    for c in doc["tenants"][0]["connections"]:
        for member in ("access_token", "refresh_token"):
            c.pop(member)
    assert env.apply_ok(doc, secrets=False) == [DEMO_FIRST]
    assert all(r[4] is None for r in env.connections().values())


def test_connection_of_another_tenant(env):
    env.apply_ok(demo())
    doc = demo()
    other = copy.deepcopy(doc["tenants"][0])
    other.update(slug="other-laundry", name="Other", workflows=[], branches=[])
    other["connections"] = [other["connections"][1]]  # hubspot 33, which demo-laundry holds
    before = env.snapshot()
    line = one_error_line(env.apply({"tenants": [other]}))
    assert line == ("tenants[0].connections[0]: hubspot account 33 is already connected to "
                    "tenant demo-laundry"), line
    assert env.snapshot() == before


def test_usage_and_configuration_errors(env):
    path = write_doc(env.dir, demo())
    r = run(["apply", path], env_for(None, env.secrets))
    assert one_error_line(r).startswith("HOOKFLOW_DATABASE_URL is not set")
    r = run(["apply"], env_for(env.url, env.secrets))
    assert r.returncode == 2 and "FILE is missing" in r.stderr
    r = run(["apply", path, "--frobnicate"], env_for(env.url, env.secrets))
    assert r.returncode == 2
    r = run(["apply", os.path.join(env.dir, "missing.json")], env_for(env.url, env.secrets))
    assert "missing.json" in one_error_line(r)
    r = run(["apply", "--help"], env_for(None))
    assert r.returncode == 0 and "--dry-run" in r.stdout
    # --database-url and standard input.
    r = run(["apply", "-", "--database-url", env.url], env_for(None, env.secrets),
            stdin=json.dumps(demo()))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [DEMO_FIRST]
    # An unmigrated database.
    bare = env.pg.fresh_db("bare")
    r = run(["apply", path], env_for(bare, env.secrets))
    assert "hookflow-engine migrate" in one_error_line(r)
