"""The connector catalog: every data file satisfies schemas/catalog.schema.json, and
`hookflow-engine catalog` prints exactly the data files (in the fixed order) or fails with one
clear line when a file is broken."""

import json
import os
import shutil
import subprocess

import jsonschema
import pytest

SOURCE_DIR = os.environ["HOOKFLOW_SOURCE_DIR"]
ENGINE = os.path.join(os.environ["HOOKFLOW_BUILD_DIR"], "hookflow-engine")
CATALOG_DIR = os.path.join(SOURCE_DIR, "schemas", "catalog")
SCHEMA_PATH = os.path.join(SOURCE_DIR, "schemas", "catalog.schema.json")

ORDER = ["xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"]
TYPE_ERROR = ('xero.json: actions[0].inputs[1].type: "strng" is not one of '
              "string|number|integer|boolean|object|array")


def load_pairs(path):
    """The file as JSON with objects as lists of (key, value), so member order is compared too."""
    with open(path, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=list)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def validator():
    schema = load(SCHEMA_PATH)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def run_catalog(*args, env_extra=None):
    env = dict(os.environ)
    env.pop("HOOKFLOW_CATALOG_DIR", None)
    if env_extra:
        env.update(env_extra)
    return subprocess.run([ENGINE, "catalog", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def broken_copy(tmp_path, file, edit):
    """A copy of the real catalog in tmp_path with edit(doc) applied to one file."""
    dest = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, dest)
    doc = load(dest / file)
    edit(doc)
    with open(dest / file, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    return dest, doc


def test_data_files_are_the_six_connectors():
    files = sorted(f for f in os.listdir(CATALOG_DIR) if f.endswith(".json"))
    assert files == sorted(f"{i}.json" for i in ORDER)


@pytest.mark.parametrize("connector", ORDER)
def test_file_validates_against_schema(validator, connector):
    doc = load(os.path.join(CATALOG_DIR, f"{connector}.json"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    assert doc["id"] == connector


def test_metadata_choices():
    docs = {i: load(os.path.join(CATALOG_DIR, f"{i}.json")) for i in ORDER}
    assert {i: d["name"] for i, d in docs.items()} == {
        "xero": "Xero", "quickbooks": "QuickBooks Online", "hubspot": "HubSpot Journeys",
        "klaviyo": "Klaviyo Campaigns", "twilio": "Twilio Messaging", "meta": "Meta Messenger"}
    assert {i: d["category"] for i, d in docs.items()} == {
        "xero": "accounting", "quickbooks": "accounting", "hubspot": "marketing-automation",
        "klaviyo": "marketing-automation", "twilio": "messaging", "meta": "messaging"}
    assert [i for i, d in docs.items() if d["availability"] == "Beta"] == ["klaviyo", "meta"]
    events = {i: [e["name"] for e in d["webhook_events"]] for i, d in docs.items()}
    assert events == {
        "xero": ["invoices.created", "payments.applied"],
        "quickbooks": ["salesreceipt.create", "payment.create"],
        "hubspot": ["contact.created", "workflow.completed"],
        "klaviyo": ["message.delivered", "profile.updated"],
        "twilio": ["message.received", "message.failed"],
        "meta": ["message", "messaging_postbacks"]}
    not_sim = [(i, a["id"]) for i, d in docs.items() for a in d["actions"] if not a["simulatable"]]
    assert not_sim == [("quickbooks", "create_invoice")]
    assert docs["twilio"]["oauth"] == {"auth": "basic", "scopes": [], "pkce": False}
    assert docs["klaviyo"]["oauth"]["pkce"] is True
    assert "accounting.transactions" not in docs["xero"]["oauth"]["scopes"]
    for i, d in docs.items():
        for a in d["actions"]:
            assert set(a["scopes"]) <= set(d["oauth"]["scopes"]), (i, a["id"])
            assert a["idempotency"] == {"xero": "header:Idempotency-Key",
                                        "quickbooks": "query:requestid"}.get(i, "none")
            assert list(a["sample_output"]) == list(a["output"]["fields"]), (i, a["id"])


def test_command_prints_the_data_files_in_order():
    r = run_catalog("--dir", CATALOG_DIR)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1
    printed = json.loads(r.stdout, object_pairs_hook=list)
    assert [k for k, _ in printed] == ["connectors"]
    connectors = printed[0][1]
    assert [dict(c)["id"] for c in connectors] == ORDER
    for c, connector in zip(connectors, ORDER):
        assert c == load_pairs(os.path.join(CATALOG_DIR, f"{connector}.json"))


def test_command_default_dir_is_the_source_catalog():
    # Built-in default: HOOKFLOW_SOURCE_DIR/schemas/catalog of the build (ctest runs us with the
    # same source dir).
    r = run_catalog()
    assert r.returncode == 0, r.stderr
    assert r.stdout == run_catalog("--dir", CATALOG_DIR).stdout


def test_command_honours_dir_option_and_env(tmp_path):
    dest = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, dest)
    os.remove(dest / "twilio.json")
    for r in (run_catalog("--dir", str(dest)), run_catalog(f"--dir={dest}"),
              run_catalog(env_extra={"HOOKFLOW_CATALOG_DIR": str(dest)})):
        assert r.returncode == 0, r.stderr
        ids = [c["id"] for c in json.loads(r.stdout)["connectors"]]
        assert ids == ["xero", "quickbooks", "hubspot", "klaviyo", "meta"]


def test_command_usage():
    r = run_catalog("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: hookflow-engine catalog")
    r = run_catalog("--frobnicate")
    assert r.returncode == 2
    assert r.stderr == ("hookflow-engine: catalog: unknown option '--frobnicate' "
                        "(try --help)\n")
    assert r.stdout == ""
    assert run_catalog("--dir").returncode == 2


def set_input_type(doc):
    doc["actions"][0]["inputs"][1]["type"] = "strng"


def drop_availability(doc):
    del doc["availability"]


def swap_in_transactions_scope(doc):
    doc["actions"][0]["scopes"] = ["accounting.transactions"]


@pytest.mark.parametrize("file,edit,message,schema_path", [
    ("xero.json", set_input_type, TYPE_ERROR, ["actions", 0, "inputs", 1, "type"]),
    ("klaviyo.json", drop_availability, "klaviyo.json: availability: missing", []),
])
def test_broken_file_rejected_by_command_and_schema(tmp_path, validator, file, edit, message,
                                                    schema_path):
    dest, doc = broken_copy(tmp_path, file, edit)
    r = run_catalog("--dir", str(dest))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"hookflow-engine: catalog: {message}\n"
    errors = list(validator.iter_errors(doc))
    assert errors, "the schema accepted the broken file"
    assert schema_path in [list(e.absolute_path) for e in errors]
    if file == "klaviyo.json":
        assert any("'availability' is a required property" in e.message for e in errors)


def test_scope_outside_oauth_scopes_rejected(tmp_path):
    # JSON Schema cannot relate two fields, so this rule is the loader's alone.
    dest, _ = broken_copy(tmp_path, "xero.json", swap_in_transactions_scope)
    r = run_catalog("--dir", str(dest))
    assert r.returncode == 1
    assert r.stderr == ('hookflow-engine: catalog: xero.json: actions[0].scopes[0]: '
                        '"accounting.transactions" is not one of oauth.scopes\n')


def test_unreadable_and_malformed(tmp_path):
    missing = tmp_path / "nowhere"
    r = run_catalog("--dir", str(missing))
    assert r.returncode == 1
    assert r.stderr == (f"hookflow-engine: catalog: cannot open catalog directory {missing}: "
                        "No such file or directory\n")
    dest = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, dest)
    with open(dest / "meta.json", "a", encoding="utf-8") as f:
        f.write("{")
    r = run_catalog("--dir", str(dest))
    assert r.returncode == 1
    assert r.stderr.startswith("hookflow-engine: catalog: meta.json: malformed JSON: ")
    assert r.stderr.count("\n") == 1
