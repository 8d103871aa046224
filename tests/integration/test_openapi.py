"""schemas/openapi.yaml is true: it is a well-formed OpenAPI 3.1 description, it names exactly the
routes `hookflow-engine serve` routes (read from the route table in engine/api/server.c, so a
route added there without a spec entry fails here), every route it names answers on the running
server (no 404 "no such endpoint", no 405) with a status it documents, and every JSON answer
matches the schema documented for that status."""

import json
import os
import re
import uuid

import pytest
import yaml
from jsonschema import Draft202012Validator, RefResolver

import harness
from test_api_connections import (CLIENTS, TWILIO_SID, TWILIO_TOKEN, ApiStack, base_config,
                                  mint)

SPEC_PATH = os.path.join(harness.source_dir(), "schemas", "openapi.yaml")
SERVER_C = os.path.join(harness.source_dir(), "engine", "api", "server.c")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

DEFINITION = {"name": "Probe", "trigger": {"connector": "meta", "event": "message"},
              "nodes": [{"id": "sms", "type": "action", "connector": "twilio",
                         "action": "send_message",
                         "params": {"to": "+14155550100", "from": "+14155559876",
                                    "body": "{{event.payload.message.text}}"}}]}


def load_spec():
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


def spec_routes(spec):
    return {(m.upper(), path) for path, item in spec["paths"].items() for m in item
            if m in METHODS}


def server_routes():
    """(METHOD, pattern) of every entry of server.c's route table, plus the operations
    endpoints it serves beside them."""
    with open(SERVER_C) as f:
        text = f.read()
    table = re.search(r"static const api_route routes\[\] = \{(.*?)\n\};", text, re.S)
    assert table, "the route table of server.c was not found: update this test's regex"
    routes = set(re.findall(r'\{\s*"([A-Z]+)"\s*,\s*"(/[^"]*)"\s*,\s*\w+\s*,\s*ROUTE_\w+\s*\}',
                            table.group(1)))
    entries = len(re.findall(r"ROUTE_(?:ADMIN|ANY|OPEN)\s*\}", table.group(1)))
    assert len(routes) == entries, "an entry of the route table did not parse"
    ops = re.search(r"static const char \*const ops\[\] = \{([^}]*)\}", text)
    assert ops, "the operations endpoints of server.c were not found"
    for path in re.findall(r'"(/[^"]*)"', ops.group(1)):
        routes.add(("GET", path))
    return routes


def operations(spec):
    for path, item in spec["paths"].items():
        for m, op in item.items():
            if m in METHODS:
                yield m.upper(), path, item, op


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


# ---- the document --------------------------------------------------------------------------

def test_spec_is_well_formed():
    spec = load_spec()
    assert spec["openapi"].startswith("3.1.")
    assert spec["info"]["title"] and spec["info"]["version"]
    bearer = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"], bearer["bearerFormat"]) == ("http", "bearer", "JWT")
    assert spec["security"] == [{"bearerAuth": []}]
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and "detail" in error["properties"]

    # Every $ref resolves.
    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)
    for ref in refs(spec):
        resolve(spec, {"$ref": ref})
    # Every schema is a valid JSON Schema (2020-12, the dialect of OpenAPI 3.1).
    for name, schema in spec["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)

    for method, path, item, op in operations(spec):
        where = f"{method} {path}"
        assert op.get("summary"), where
        assert op.get("responses"), where
        # Path parameters are declared.
        declared = {resolve(spec, p)["name"] for p in item.get("parameters", []) +
                    op.get("parameters", []) if resolve(spec, p)["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), where
        # Errors are the Error schema.
        for status, resp in op["responses"].items():
            resp = resolve(spec, resp)
            assert resp.get("description"), (where, status)
            if str(status)[0] in "45":
                schema = resp["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (where, status)
        # Security: /api routes take the bearer token except the documented exceptions.
        security = op.get("security", spec["security"])
        if path.startswith("/api/") and not path.endswith("/oauth/callback"):
            assert security == [{"bearerAuth": []}], where
            assert "401" in op["responses"], where
        else:
            assert security == [], where


def test_spec_names_exactly_the_servers_routes():
    server = server_routes()
    spec = spec_routes(load_spec())
    assert len(server) >= 20
    assert not server - spec, f"routes the server serves but the spec lacks: {sorted(server - spec)}"
    assert not spec - server, f"routes in the spec the server does not serve: {sorted(spec - server)}"


# ---- against the running server ------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(postgres):
    wf = {"name": "Probe", "enabled": False, "definition": DEFINITION}
    doomed = {"name": "Doomed", "enabled": False, "definition": dict(DEFINITION, name="Doomed")}
    s = ApiStack(postgres, base_config(
        workflows_prod=[wf, doomed],
        connections_prod=[{"connector": "twilio", "account": TWILIO_SID, "status": "active",
                           "scopes": [], "access_token": TWILIO_TOKEN},
                          {"connector": "hubspot", "account": "77", "status": "active",
                           "scopes": [], "access_token": "hs-at"}]))
    yield s
    s.stop()


def probes(stack):
    """A meaningful request per documented route: (path, body, token, headers)."""
    wf = dict(stack.query("SELECT name, id::text FROM workflows"))
    run = stack.query(
        "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key,"
        " ordering_seq, status, trigger, error, finished_at) VALUES (%s, %s, 1, 'meta:m_probe',"
        " 'meta:1', 1, 'failed', '{\"payload\": {}}', 'node sms: HTTP 400', now())"
        " RETURNING id::text", stack.prod, wf["Probe"])[0][0]
    stack.query("INSERT INTO node_attempts (run_id, node_id, attempt, status, error, finished_at)"
                " VALUES (%s, 'sms', 1, 'failed', 'HTTP 400', now())", run)
    admin = stack.admin()
    pid, rid = wf["Probe"], run
    return {
        ("GET", "/healthz"): ("/healthz", None, None),
        ("GET", "/readyz"): ("/readyz", None, None),
        ("GET", "/metrics"): ("/metrics", None, None),
        ("GET", "/api/workflows/catalog"): ("/api/workflows/catalog", None, admin),
        ("GET", "/api/workflows"): ("/api/workflows?limit=5", None, admin),
        ("POST", "/api/workflows"): ("/api/workflows", {"name": "Created by probe",
                                                        "definition": DEFINITION}, admin),
        ("GET", "/api/workflows/{id}"): (f"/api/workflows/{pid}", None, admin),
        ("PUT", "/api/workflows/{id}"): (f"/api/workflows/{pid}",
                                         {"definition": dict(DEFINITION, name="Probe v2")},
                                         admin),
        ("DELETE", "/api/workflows/{id}"): (f"/api/workflows/{wf['Doomed']}", None, admin),
        ("POST", "/api/workflows/{id}/enable"): (f"/api/workflows/{pid}/enable", None, admin),
        ("POST", "/api/workflows/{id}/disable"): (f"/api/workflows/{pid}/disable", None, admin),
        ("POST", "/api/workflows/{id}/validate"): (f"/api/workflows/{pid}/validate", {}, admin),
        ("POST", "/api/workflows/{id}/simulate"): (f"/api/workflows/{pid}/simulate",
                                                   {"event": {"message": {"text": "hi"}}},
                                                   admin),
        ("GET", "/api/workflows/{id}/runs"): (f"/api/workflows/{pid}/runs?status=failed", None,
                                              admin),
        ("GET", "/api/runs/{id}"): (f"/api/runs/{rid}", None, admin),
        ("POST", "/api/runs/{id}/retry"): (f"/api/runs/{rid}/retry", {"from": "start"}, admin),
        ("GET", "/api/integrations"): ("/api/integrations", None, admin),
        ("GET", "/api/integrations/{connector}"): ("/api/integrations/hubspot", None, admin),
        ("POST", "/api/integrations/{connector}/oauth/start"): (
            "/api/integrations/xero/oauth/start", {}, admin),
        ("GET", "/api/integrations/{connector}/oauth/callback"): (
            "/api/integrations/xero/oauth/callback?code=c&state=unknown", None, None),
        ("PUT", "/api/integrations/{connector}/credentials"): (
            "/api/integrations/twilio/credentials",
            {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}, admin),
        ("POST", "/api/integrations/{connector}/enable"): (
            "/api/integrations/hubspot/enable", None, admin),
        ("POST", "/api/integrations/{connector}/disable"): (
            "/api/integrations/hubspot/disable", None, admin),
        ("POST", "/api/integrations/{connector}/approval"): (
            "/api/integrations/klaviyo/approval", {"note": "probe"},
            stack.support()),
    }


def generic_probe(stack, method, path):
    """For a route without a tailored probe: sample values for its parameters."""
    concrete = path.replace("{id}", str(uuid.uuid4())).replace("{connector}", "xero")
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return concrete, body, stack.admin()


def check_answer(spec, method, path, op, status, headers, data):
    where = f"{method} {path} -> {status}"
    responses = op["responses"]
    assert str(status) in responses or "default" in responses, \
        f"{where}: status not documented (documented: {sorted(responses)}); body {data[:300]!r}"
    resp = resolve(spec, responses.get(str(status), responses.get("default")))
    content = resp.get("content", {})
    if not data:
        return
    ctype = headers.get("content-type", "")
    if ctype.startswith("application/json"):
        assert "application/json" in content, f"{where}: JSON answer not documented"
        body = json.loads(data)
        schema = content["application/json"]["schema"]
        validator = Draft202012Validator(schema, resolver=RefResolver.from_schema(spec))
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, (f"{where}: answer does not match the spec: "
                            f"{errors[0].message} at {list(errors[0].path)}; "
                            f"body {json.dumps(body)[:500]}")
    else:
        media = ctype.split(";")[0].strip()
        assert media in content, f"{where}: {media} answer not documented"


def test_every_documented_route_answers_as_documented(stack):
    spec = load_spec()
    tailored = probes(stack)
    stack.fakes.tokens("xero", client_id=CLIENTS["xero"][0], client_secret=CLIENTS["xero"][1])
    ops = list(operations(spec))
    # Deletions last, so the other probes still find their objects.
    ops.sort(key=lambda o: o[0] == "DELETE")
    answered = set()
    for method, path, item, op in ops:
        concrete, body, token = tailored.get((method, path)) or generic_probe(stack, method, path)
        status, headers, data = harness.http(
            method, stack.base + concrete, body=body,
            headers={"Authorization": "Bearer " + token} if token else {})
        where = f"{method} {concrete} -> {status}"
        assert status != 405, where
        if status == 404:
            assert json.loads(data).get("detail") != "no such endpoint", where
        assert status < 500, f"{where}: {data[:300]!r}"
        check_answer(spec, method, path, op, status, headers, data)
        answered.add((method, path))
        # The documented errors of the auth layer really are what the server answers.
        if op.get("security", spec["security"]) and path.startswith("/api/"):
            status, headers, data = harness.http(method, stack.base + concrete, body=body)
            assert status == 401, where
            check_answer(spec, method, path, op, status, headers, data)
    assert answered == spec_routes(spec)

    # Tailored probes reached their handlers (not just "some documented status").
    status, _, data = harness.http("GET", stack.base + "/api/integrations/klaviyo",
                                   headers={"Authorization": "Bearer " + stack.admin()})
    assert json.loads(data)["approval"]["approved"] is True
    assert stack.query("SELECT count(*) FROM connections WHERE connector = 'twilio'") == [(1,)]

    # A path the spec does not name is the router's 404; a wrong method its 405 (with Allow).
    status, _, data = harness.http("GET", stack.base + "/api/not-a-route",
                                   headers={"Authorization": "Bearer " + stack.admin()})
    assert status == 404 and json.loads(data)["detail"] == "no such endpoint"
    status, headers, data = harness.http("DELETE", stack.base + "/api/integrations",
                                         headers={"Authorization": "Bearer " + stack.admin()})
    assert status == 405 and headers["allow"] == "GET"


def test_error_answers_match_the_error_schema(stack):
    """A sample of failures across the API validate against the documented Error schema."""
    spec = load_spec()
    admin = stack.admin()
    cases = [("GET", "/api/workflows/not-a-uuid", None, admin, "/api/workflows/{id}"),
             ("POST", "/api/workflows", b"{\"name\": ", admin, "/api/workflows"),
             ("POST", "/api/workflows", {"nme": 1, "definition": DEFINITION}, admin,
              "/api/workflows"),
             ("GET", f"/api/workflows/{uuid.uuid4()}/runs?limit=0", None, admin,
              "/api/workflows/{id}/runs"),
             ("POST", f"/api/runs/{uuid.uuid4()}/retry", {"from": "x"}, admin,
              "/api/runs/{id}/retry"),
             ("POST", "/api/integrations/klaviyo/enable", None, admin,
              "/api/integrations/{connector}/enable"),
             ("POST", "/api/integrations/klaviyo/approval", {}, mint("mia@prod.test",
                                                                     stack.prod),
              "/api/integrations/{connector}/approval"),
             ("GET", "/api/integrations", None, mint("mia@prod.test", stack.prod),
              "/api/integrations")]
    for method, concrete, body, token, path in cases:
        headers = {"Authorization": "Bearer " + token}
        if isinstance(body, bytes):
            headers["Content-Type"] = "application/json"
        status, rh, data = harness.http(method, stack.base + concrete, body=body,
                                        headers=headers)
        assert 400 <= status < 500, (concrete, status, data)
        op = load_spec()["paths"][path][method.lower()]
        check_answer(spec, method, path, op, status, rh, data)


def test_every_route_with_a_body_documents_its_size_and_media_type_errors(stack):
    """Every operation that takes a body answers an oversized one 413 and one that is not JSON
    415, as the spec says it does (the server checks both for every route)."""
    spec = load_spec()
    with_body = [(m, p, op) for m, p, _, op in operations(spec) if "requestBody" in op]
    assert with_body
    for method, path, op in with_body:
        concrete, _, token = generic_probe(stack, method, path)
        if path.endswith("/approval"):
            token = stack.support()
        headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
        big = b'{"pad": "' + b"x" * (1 << 20) + b'"}'
        status, rh, data = harness.http(method, stack.base + concrete, body=big, headers=headers)
        assert status == 413, (method, concrete, status, data[:200])
        check_answer(spec, method, path, op, status, rh, data)
        headers["Content-Type"] = "text/plain"
        status, rh, data = harness.http(method, stack.base + concrete, body=b"hello",
                                        headers=headers)
        assert status == 415, (method, concrete, status, data[:200])
        check_answer(spec, method, path, op, status, rh, data)
