"""Integration: the deployment descriptors agree with the code (README "Configuration", "Secrets",
"Retention", "Deployment").

deploy/k8s/hookflow.yaml, deploy/compose/docker-compose.yml, the Dockerfile and .dockerignore are
read as data (PyYAML, a small Dockerfile parser) and checked against what the built executables
say about themselves (`--help` of hookflow-ingest and of every hookflow-engine command), the
connector catalog, the C sources and the README's secrets table. Nothing is deployed: no network,
docker or kubectl.

Each check collects every problem it finds and reports them together.
"""

import functools
import glob
import json
import math
import os
import re
import shlex
import subprocess
import urllib.parse

import yaml

import harness

BIN_DIR = "/usr/local/bin/"
# Every probe path an executable serves (README: "/healthz, /readyz, /metrics as everywhere").
READINESS_PATH, LIVENESS_PATH = "/readyz", "/healthz"
# What a stopped process needs beyond preStop + HOOKFLOW_SHUTDOWN_TIMEOUT_MS: ingest waits up to
# 2 s for purged deliveries' reports, flushes 5 s, then closes the producer (flush 5 s + 1 s)
# (ingest/ingest.c ingest_server_drain, common/kafka.c hf_producer_free).
SHUTDOWN_MARGIN_S = 15
# Ingest's memory limit must leave this factor of HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES for
# connection buffers, librdkafka and the heap's slack.
INGEST_MEMORY_FACTOR = 1.5
# The README secrets table's rows, by the program that reads them (`work --help`: engine/token_key
# and client ids; `serve --help`: api/jwt_key, engine/token_key, <provider>/client_id ...; ingest:
# each platform's row). Platform rows are those named after a catalog connector.
ENGINE_ROWS = {("hookflow-engine", "work"): {"engine"},
               ("hookflow-engine", "serve"): {"engine", "api"}}


# ---- sources -------------------------------------------------------------------------------------

def _src(*parts):
    return os.path.join(harness.source_dir(), *parts)


def _read(*parts):
    with open(_src(*parts), encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=None)
def _k8s():
    with open(_src("deploy", "k8s", "hookflow.yaml"), encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


@functools.lru_cache(maxsize=None)
def _compose():
    with open(_src("deploy", "compose", "docker-compose.yml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.lru_cache(maxsize=None)
def _catalog():
    """{connector id: catalog document} of schemas/catalog."""
    out = {}
    for path in sorted(glob.glob(_src("schemas", "catalog", "*.json"))):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        out[doc.get("id") or os.path.splitext(os.path.basename(path))[0]] = doc
    assert out, "no connector in schemas/catalog"
    return out


def _oauth_providers():
    return sorted(c for c, d in _catalog().items() if d.get("oauth", {}).get("auth") == "oauth2")


@functools.lru_cache(maxsize=None)
def _c_sources():
    text = []
    for d in ("common", "ingest", "engine"):
        for root, _, files in os.walk(_src(d)):
            for name in files:
                if name.endswith((".c", ".h")):
                    with open(os.path.join(root, name), encoding="utf-8") as f:
                        text.append(f.read())
    return "\n".join(text)


@functools.lru_cache(maxsize=None)
def _project_version():
    m = re.search(r"project\(hookflow\s+VERSION\s+([0-9][^\s)]*)", _read("CMakeLists.txt"))
    assert m, "CMakeLists.txt: project(hookflow VERSION x.y.z) not found"
    return m.group(1)


# ---- what the executables read -------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _help(binary, command=None):
    args = [harness.bin(binary)] + ([command] if command else []) + ["--help"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}: {out.stderr}"
    return out.stdout


@functools.lru_cache(maxsize=None)
def _engine_commands():
    text = _help("hookflow-engine")
    m = re.search(r"^commands:\n((?:  \S.*\n)+)", text, re.M)
    assert m, f"hookflow-engine --help lists no commands:\n{text}"
    return frozenset(re.findall(r"^  ([a-z][a-z-]*)\s", m.group(1), re.M))


@functools.lru_cache(maxsize=None)
def _settings(program):
    """(names, patterns, defaults) of the HOOKFLOW_* settings `program` lists in --help."""
    text = _help(*program)
    names, patterns, defaults = set(), [], {}
    ids = "|".join(c.upper() for c in _catalog())
    for line in text.splitlines():
        m = re.match(r"^\s+(HOOKFLOW_[A-Z0-9_<>]+)(.*)$", line)
        if not m:
            continue
        name, rest = m.groups()
        if "<" in name:
            rx = re.sub(r"<ID>", f"(?:{ids})", name)
            rx = re.sub(r"<[A-Z]+>", "[A-Z0-9_]+", rx)
            patterns.append(re.compile(f"^{rx}$"))
        else:
            names.add(name)
            d = re.search(r"\(default: ([^()]*)\)\s*$", rest)
            if d:
                defaults[name] = d.group(1)
    if "HOOKFLOW_CONFIG_FILE" in text:
        names.add("HOOKFLOW_CONFIG_FILE")
    return names, patterns, defaults


def _reads(program, var):
    names, patterns, _ = _settings(program)
    if var in names:
        return True
    # common/config.c: HOOKFLOW_KAFKA_BROKERS is no librdkafka property; only programs that list
    # it read it.
    if var == "HOOKFLOW_KAFKA_BROKERS":
        return False
    return any(p.match(var) for p in patterns)


def _listen_var(program):
    listen = sorted(n for n in _settings(program)[0] if n.endswith("_LISTEN"))
    assert len(listen) <= 1, f"{program}: several listen settings {listen}"
    return listen[0] if listen else None


def _port(addr):
    return int(addr.rsplit(":", 1)[1])


# ---- Dockerfile ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _dockerfile():
    """[stage, ...], each a list of (INSTRUCTION, arguments) with continuations joined."""
    stages, logical, cur = [], [], ""
    for line in _read("Dockerfile").splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        logical.append(cur + line)
        cur = ""
    for line in logical:
        instr, _, args = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append([])
        assert stages, "Dockerfile: an instruction before FROM"
        stages[-1].append((instr, args.strip()))
    assert stages, "Dockerfile: no FROM"
    return stages


def _runtime_stage():
    return _dockerfile()[-1]


def _instr(stage, name):
    return [a for i, a in stage if i == name]


def _image_entrypoint():
    eps = _instr(_runtime_stage(), "ENTRYPOINT")
    assert eps, "Dockerfile: the runtime stage has no ENTRYPOINT"
    return json.loads(eps[-1])


def _image_cmd():
    cmds = _instr(_runtime_stage(), "CMD")
    return json.loads(cmds[-1]) if cmds else []


def _image_env():
    env = {}
    for args in _instr(_runtime_stage(), "ENV"):
        for word in shlex.split(args):
            k, eq, v = word.partition("=")
            assert eq, f"Dockerfile: ENV {args!r}: use KEY=VALUE"
            env[k] = v
    return env


def _image_binaries():
    """Names of the executables the runtime stage copies into BIN_DIR."""
    out = set()
    for args in _instr(_runtime_stage(), "COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if len(words) >= 2 and words[-1].rstrip("/") + "/" == BIN_DIR:
            out.update(os.path.basename(w) for w in words[:-1])
    return out


# ---- programs a descriptor starts ----------------------------------------------------------------

def _program(argv, where, errors):
    """(binary, command) that argv runs in the image, or None after adding to errors."""
    if not argv or not str(argv[0]).startswith(BIN_DIR):
        errors.append(f"{where}: runs {argv}, not an executable in {BIN_DIR}")
        return None
    binary = argv[0][len(BIN_DIR):]
    if binary not in _image_binaries():
        errors.append(f"{where}: {argv[0]} is not copied into the image by the Dockerfile")
        return None
    try:
        harness.bin(binary)
    except harness.HarnessError as e:
        errors.append(f"{where}: {e}")
        return None
    if binary == "hookflow-engine":
        if len(argv) < 2 or argv[1] not in _engine_commands():
            errors.append(f"{where}: {argv}: hookflow-engine needs one of the commands "
                          f"{sorted(_engine_commands())}")
            return None
        return (binary, argv[1])
    if binary == "hookflow-ingest":
        if len(argv) > 1:
            errors.append(f"{where}: {argv}: hookflow-ingest takes no arguments")
            return None
        return (binary, None)
    errors.append(f"{where}: {binary} is a development tool, not a production process")
    return None


def _pod_specs():
    """(kind/name, pod metadata, pod spec) of every workload in the k8s file."""
    for doc in _k8s():
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        spec = doc.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            tpl = spec.get("template", {})
        elif kind == "CronJob":
            tpl = spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
        else:
            continue
        yield f"{kind}/{name}", tpl.get("metadata", {}), tpl.get("spec", {})


def _k8s_containers():
    """(where, pod spec, container, is_init) of every container in the k8s file."""
    for wl, _, pod in _pod_specs():
        for init in (True, False):
            for c in pod.get("initContainers" if init else "containers") or []:
                role = "initContainer" if init else "container"
                yield f"{wl} {role} {c.get('name')}", pod, c, init


def _k8s_argv(c):
    if c.get("command"):
        return list(c["command"]) + list(c.get("args") or [])
    return _image_entrypoint() + list(c.get("args") or _image_cmd())


def _configmap(name):
    for doc in _k8s():
        if doc.get("kind") == "ConfigMap" and doc.get("metadata", {}).get("name") == name:
            return doc.get("data") or {}
    return None


def _k8s_env(c, where, errors):
    """{name: value or the env entry} the manifest sets for container c."""
    env = {}
    for src in c.get("envFrom") or []:
        ref = src.get("configMapRef")
        data = _configmap(ref["name"]) if ref else None
        if data is None:
            errors.append(f"{where}: envFrom {src} is not a ConfigMap of this file (its names "
                          "could not be checked)")
            continue
        env.update({src.get("prefix", "") + k: v for k, v in data.items()})
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value", e)
    return env


def _k8s_programs(errors):
    """[(where, pod, container, is_init, program, env)] for the k8s containers."""
    out = []
    for where, pod, c, init in _k8s_containers():
        prog = _program(_k8s_argv(c), where, errors)
        out.append((where, pod, c, init, prog, _k8s_env(c, where, errors)))
    return out


def _hookflow_compose_service(svc):
    build = svc.get("build")
    if isinstance(build, dict):
        build = build.get("context")
    if build:
        ctx = os.path.normpath(os.path.join(_src("deploy", "compose"), build))
        return ctx == os.path.normpath(harness.source_dir())
    return "hookflow" in str(svc.get("image", "")).split("/")[-1].split(":")[0]


def _compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def _compose_argv(svc):
    ep = svc.get("entrypoint")
    cmd = svc.get("command")
    if isinstance(ep, str):
        ep = shlex.split(ep)
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    if ep is not None:
        return list(ep) + list(cmd or [])  # an entrypoint override drops the image's CMD
    return _image_entrypoint() + list(cmd if cmd is not None else _image_cmd())


def _compose_programs(errors):
    """[(service name, service, program, env)] for the services running the hookflow image."""
    out = []
    for name, svc in (_compose().get("services") or {}).items():
        if _hookflow_compose_service(svc):
            prog = _program(_compose_argv(svc), f"compose service {name}", errors)
            out.append((name, svc, prog, _compose_env(svc)))
    return out


def _effective(program, env, name):
    """The value program sees for name: the descriptor's, else the image's, else the default."""
    if name in env and isinstance(env[name], str):
        return env[name]
    if name in _image_env():
        return _image_env()[name]
    return _settings(program)[2].get(name)


def _depends_on(svc):
    dep = svc.get("depends_on") or {}
    if isinstance(dep, list):
        return {d: "service_started" for d in dep}
    return {d: (v or {}).get("condition", "service_started") for d, v in dep.items()}


def _seconds(duration):
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts, f"not a duration: {duration!r}"
    for n, unit in parts:
        total += float(n) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def _cpu(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _bytes(q):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|[kE]?)", str(q))
    assert m, f"not a memory quantity: {q!r}"
    n, unit = float(m.group(1)), m.group(2)
    mult = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    return n * mult


def _fail_on(errors):
    assert not errors, "\n".join(errors)


# ---- the README's secrets ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _readme_secrets():
    """[(row, path template)] of the README's Secrets table, e.g.
    ("engine", "<provider>/client_id")."""
    readme = _read("README.md")
    m = re.search(r"^### Secrets\n(.*?)(?=^##)", readme, re.M | re.S)
    assert m, "README has no '### Secrets' section"
    out = []
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("provider", "") or set(cells[0]) <= set("-"):
            continue
        for path in re.findall(r"`([^`\s]+/[^`\s]+)`", cells[1]):
            out.append((cells[0], path))
    assert out, "README's Secrets table lists no file"
    return out


def _secret_regex(template):
    rx = re.escape(template)
    rx = rx.replace(re.escape("<provider>"), "(?:" + "|".join(_oauth_providers()) + ")")
    rx = re.sub(re.escape("<") + r"[A-Za-z]+" + re.escape(">"), "[A-Za-z0-9_-]+", rx)
    # README: "a `<name>.previous` file beside any secret is accepted too"
    return re.compile(f"^{rx}(?:\\.previous)?$")


def _secret_rows(program):
    if program == ("hookflow-ingest", None):
        return set(_catalog())
    return ENGINE_ROWS.get(program, set())


def _concrete_secrets(rows):
    """Every path of those README rows, <provider> expanded to the OAuth connectors; paths with
    another placeholder (per-account Twilio tokens) are per installation and left out."""
    out = set()
    for row, t in _readme_secrets():
        if row not in rows:
            continue
        for p in ([t.replace("<provider>", c) for c in _oauth_providers()]
                  if "<provider>" in t else [t]):
            if "<" not in p:
                out.add(p)
    return out


# ==== checks ======================================================================================

# Every HOOKFLOW_* name a descriptor sets is read by the program it is set for (k8s containers,
# compose services), and every one the Dockerfile sets by some program of the image.
def test_every_setting_is_read_by_its_program():
    errors = []
    runs = [(w, prog, env) for w, _, _, _, prog, env in _k8s_programs(errors)]
    runs += [(f"compose service {n}", prog, env) for n, _, prog, env in _compose_programs(errors)]
    assert runs, "no hookflow container found"
    for where, prog, env in runs:
        if prog is None:
            continue
        for var in sorted(env):
            if var.startswith("HOOKFLOW_") and not _reads(prog, var):
                errors.append(f"{where}: sets {var}, which `{' '.join(filter(None, prog))} "
                              "--help` does not list")
    image_programs = [("hookflow-ingest", None)] + [("hookflow-engine", c)
                                                    for c in sorted(_engine_commands())]
    for var in sorted(_image_env()):
        if var.startswith("HOOKFLOW_") and not any(_reads(p, var) for p in image_programs):
            errors.append(f"Dockerfile: ENV {var} is read by no program of the image")
    _fail_on(errors)


# Every container and compose service runs a binary the image holds, with a real subcommand; the
# long-running three and migrate/prune are all there.
def test_every_command_is_a_built_binary_and_subcommand():
    errors = []
    progs = {p[4] for p in _k8s_programs(errors)}
    cprogs = {p[2] for p in _compose_programs(errors)}
    _fail_on(errors)
    for prog in [("hookflow-ingest", None), ("hookflow-engine", "work"),
                 ("hookflow-engine", "serve"), ("hookflow-engine", "migrate"),
                 ("hookflow-engine", "prune")]:
        assert prog in progs, f"k8s: nothing runs {prog}"
    for prog in [("hookflow-ingest", None), ("hookflow-engine", "work"),
                 ("hookflow-engine", "serve"), ("hookflow-engine", "migrate")]:
        assert prog in cprogs, f"compose: nothing runs {prog}"


# Probes: readiness on /readyz, liveness on /healthz, both on the port the process listens on
# (its *_LISTEN setting); containerPort, Services' targetPort and the prometheus.io/port
# annotation agree with it.
def test_k8s_probes_and_ports_match_what_the_process_listens_on():
    errors = []
    listen_ports = {}  # pod labels (frozen) -> {container port numbers}
    for where, pod, c, init, prog, env in _k8s_programs(errors):
        if prog is None or init:
            continue
        var = _listen_var(prog)
        named = {p.get("name"): p["containerPort"] for p in c.get("ports") or [] if p.get("name")}
        declared = {p["containerPort"] for p in c.get("ports") or []}
        if var is None:
            if c.get("readinessProbe") or c.get("livenessProbe"):
                errors.append(f"{where}: probes a program that serves no HTTP")
            continue
        port = _port(_effective(prog, env, var))
        if port not in declared:
            errors.append(f"{where}: listens on {port} ({var}) but declares ports "
                          f"{sorted(declared)}")
        for kind, path in (("readinessProbe", READINESS_PATH), ("livenessProbe", LIVENESS_PATH)):
            probe = (c.get(kind) or {}).get("httpGet")
            if not probe:
                errors.append(f"{where}: no {kind} httpGet")
                continue
            pport = named.get(probe.get("port"), probe.get("port"))
            if probe.get("path") != path or pport != port:
                errors.append(f"{where}: {kind} probes {probe.get('path')} on {probe.get('port')}"
                              f", not {path} on {port}")
    for wl, meta, pod in _pod_specs():
        ports = set()
        for c in pod.get("containers") or []:
            ps = [p["containerPort"] for p in c.get("ports") or []]
            ports.update(ps)
            ports.update(p.get("name") for p in c.get("ports") or [] if p.get("name"))
        listen_ports[frozenset((meta.get("labels") or {}).items())] = ports
        ann = meta.get("annotations") or {}
        if ann.get("prometheus.io/scrape") == "true":
            if not str(ann.get("prometheus.io/port", "")).isdigit() or \
                    int(ann["prometheus.io/port"]) not in ports:
                errors.append(f"{wl}: prometheus.io/port {ann.get('prometheus.io/port')} is not "
                              f"a port its containers listen on")
        elif any(c.get("readinessProbe") for c in pod.get("containers") or []):
            errors.append(f"{wl}: serves /metrics but has no prometheus.io/scrape annotation")
    for doc in _k8s():
        if doc.get("kind") != "Service":
            continue
        sel = set((doc["spec"].get("selector") or {}).items())
        pods = [p for labels, p in listen_ports.items() if sel and sel <= labels]
        if not pods:
            errors.append(f"Service/{doc['metadata']['name']}: selects no pod of this file")
        for sp in doc["spec"].get("ports") or []:
            target = sp.get("targetPort", sp.get("port"))
            if not any(target in p for p in pods):
                errors.append(f"Service/{doc['metadata']['name']}: targetPort {target} is no "
                              "port of the pods it selects")
    _fail_on(errors)


# Secret volumes map keys to the README's <provider>/<name> paths with `items` (key = path with
# '/' as '.'), optional; each program mounts exactly the rows it reads, at HOOKFLOW_SECRETS_DIR.
def test_k8s_secrets_are_the_documented_paths():
    errors = []
    templates = _readme_secrets()
    for where, pod, c, init, prog, env in _k8s_programs(errors):
        if prog is None:
            continue
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        mounted = {}
        for vm in c.get("volumeMounts") or []:
            sec = (volumes.get(vm["name"]) or {}).get("secret")
            if sec is None:
                continue
            if not sec.get("items"):
                errors.append(f"{where}: secret volume {vm['name']} has no items: a flat mount "
                              "cannot give the <provider>/<name> layout")
            if sec.get("optional") is not True:
                errors.append(f"{where}: secret volume {vm['name']} is not optional: a missing "
                              ".previous or unused key would block the pod")
            secrets_dir = _effective(prog, env, "HOOKFLOW_SECRETS_DIR")
            if vm["mountPath"].rstrip("/") != (secrets_dir or "").rstrip("/"):
                errors.append(f"{where}: secrets mounted at {vm['mountPath']}, but the program "
                              f"reads HOOKFLOW_SECRETS_DIR={secrets_dir}")
            for item in sec.get("items") or []:
                mounted[item["path"]] = item["key"]
        rows = _secret_rows(prog)
        allowed = [_secret_regex(t) for r, t in templates if r in rows]
        for path, key in sorted(mounted.items()):
            if key != path.replace("/", "."):
                errors.append(f"{where}: secret key {key} for {path}: the key must be the path "
                              "with '/' written as '.'")
            if not any(rx.match(path) for rx in allowed):
                known = any(_secret_regex(t).match(path) for _, t in templates)
                errors.append(f"{where}: mounts {path}, " + (
                    f"which {' '.join(filter(None, prog))} does not read (least privilege)"
                    if known else "which is not a secret path of README 'Secrets'"))
        for path in sorted(_concrete_secrets(rows) - set(mounted)):
            errors.append(f"{where}: does not mount {path}, which it reads")
    _fail_on(errors)


# The README's secret paths are the code's: each is a string literal of the C sources
# (placeholders as %s).
def test_readme_secret_paths_are_in_the_sources():
    src = _c_sources()
    missing = []
    for _, t in _readme_secrets():
        literal = re.sub(r"<[A-Za-z]+>", "%s", t)
        if f'"{literal}"' not in src and not (literal.startswith("%s/") and
                                              f'"{literal[3:]}"' in src):
            missing.append(t)
    assert not missing, f"README 'Secrets' lists paths no source reads: {missing}"


# No :latest (nor an untagged image); every hookflow container runs the release of CMakeLists.txt.
def test_images_are_pinned():
    errors = []
    hookflow_images = set()
    images = [(w, c.get("image"), c) for w, _, c, _ in _k8s_containers()]
    images += [(f"compose service {n}", s.get("image"), None)
               for n, s in (_compose().get("services") or {}).items()
               if s.get("image") or not s.get("build")]
    for where, image, c in images:
        if not image:
            errors.append(f"{where}: no image")
            continue
        name, _, digest = image.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        if not digest and (tag is None or tag == "latest"):
            errors.append(f"{where}: image {image} is not pinned (a version tag or a digest)")
        if c is not None and str(_k8s_argv(c)[0]).startswith(BIN_DIR + "hookflow-"):
            hookflow_images.add(image)
    if len(hookflow_images) != 1:
        errors.append(f"k8s: hookflow containers run different images {sorted(hookflow_images)}")
    for image in hookflow_images:
        if not image.split("@")[0].endswith(":" + _project_version()):
            errors.append(f"k8s: {image} is not tagged with the project version "
                          f"{_project_version()} (CMakeLists.txt)")
    _fail_on(errors)


# Every k8s container using the database starts after a migrate initContainer of the same image
# and database; nothing else runs migrate (no separate Job to race the rollout).
def test_k8s_database_users_run_after_migrate():
    errors = []
    db_refs = set()
    runs = _k8s_programs(errors)
    for where, pod, c, init, prog, env in runs:
        if "HOOKFLOW_DATABASE_URL" not in env:
            if prog and "HOOKFLOW_DATABASE_URL" in _settings(prog)[2] and \
                    _settings(prog)[2]["HOOKFLOW_DATABASE_URL"] == "required":
                errors.append(f"{where}: {prog[1]} requires HOOKFLOW_DATABASE_URL, not set")
            continue
        db_refs.add(json.dumps(env["HOOKFLOW_DATABASE_URL"], sort_keys=True))
        if prog == ("hookflow-engine", "migrate"):
            if not init:
                errors.append(f"{where}: migrate runs as a container: run it as an "
                              "initContainer of the pods that use the database")
            continue
        before = [(ic, _k8s_env(ic, where, errors)) for ic in pod.get("initContainers") or []]
        ok = [ic for ic, ienv in before
              if _program(_k8s_argv(ic), where, errors) == ("hookflow-engine", "migrate") and
              ic.get("image") == c.get("image") and
              ienv.get("HOOKFLOW_DATABASE_URL") == env["HOOKFLOW_DATABASE_URL"]]
        if init or not ok:
            errors.append(f"{where}: uses the database without a migrate initContainer of the "
                          "same image and database before it")
    if len(db_refs) != 1:
        errors.append(f"k8s: HOOKFLOW_DATABASE_URL comes from different places: {sorted(db_refs)}")
    _fail_on(errors)


# Retention runs daily in k8s, never two at once.
def test_k8s_prune_cronjob():
    errors = []
    progs = _k8s_programs(errors)
    _fail_on(errors)
    crons = {d["metadata"]["name"]: d for d in _k8s() if d.get("kind") == "CronJob"}
    prune = [w for w, _, _, init, prog, _ in progs
             if prog == ("hookflow-engine", "prune") and not init]
    assert prune and all(w.startswith("CronJob/") for w in prune), \
        f"prune must run from a CronJob: {prune}"
    for w in prune:
        cj = crons[w.split()[0].split("/", 1)[1]]
        assert cj["spec"].get("concurrencyPolicy") == "Forbid", f"{w}: concurrencyPolicy"
        fields = cj["spec"]["schedule"].split()
        assert cj["spec"]["schedule"] == "@daily" or (
            len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit() and
            fields[2:] == ["*", "*", "*"]), f"{w}: schedule {cj['spec']['schedule']} is not daily"


# SIGTERM has time to drain: the grace period covers preStop + HOOKFLOW_SHUTDOWN_TIMEOUT_MS + a
# margin, and pods behind a Service sleep in preStop until their endpoint is gone.
def test_k8s_shutdown_budget():
    errors = []
    served = [set((d["spec"].get("selector") or {}).items()) for d in _k8s()
              if d.get("kind") == "Service"]
    for wl, meta, pod in _pod_specs():
        labels = set((meta.get("labels") or {}).items())
        behind_service = any(sel and sel <= labels for sel in served)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod.get("containers") or []:
            where = f"{wl} container {c.get('name')}"
            prog = _program(_k8s_argv(c), where, errors)
            if prog is None:
                continue
            env = _k8s_env(c, where, errors)
            timeout = _effective(prog, env, "HOOKFLOW_SHUTDOWN_TIMEOUT_MS")
            if timeout is None:
                continue
            cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}) \
                .get("command") or []
            sleep = float(cmd[1]) if len(cmd) == 2 and cmd[0] in ("sleep", "/bin/sleep") else 0
            if behind_service and sleep < 1:
                errors.append(f"{where}: behind a Service without a preStop sleep: requests "
                              "still routed to it are refused once SIGTERM arrives")
            need = sleep + int(timeout) / 1000 + SHUTDOWN_MARGIN_S
            if grace < need:
                errors.append(f"{where}: terminationGracePeriodSeconds {grace} < preStop {sleep}"
                              f" s + HOOKFLOW_SHUTDOWN_TIMEOUT_MS {timeout} + "
                              f"{SHUTDOWN_MARGIN_S} s")
    _fail_on(errors)


# Thread counts are explicit (the default is the node's core count) and match the CPU limit;
# long-running containers have requests and a memory limit; ingest's memory limit covers
# HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES, set explicitly.
def test_k8s_threads_and_resources():
    errors = []
    for where, pod, c, init, prog, env in _k8s_programs(errors):
        if prog is None:
            continue
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if not init and (not req.get("cpu") or not req.get("memory") or not lim.get("memory")):
            errors.append(f"{where}: needs cpu and memory requests and a memory limit")
        for var in sorted(n for n in _settings(prog)[0] if n.endswith("_THREADS")):
            value = env.get(var)
            if not (isinstance(value, str) and value.isdigit() and int(value) > 0):
                errors.append(f"{where}: {var} not set to a thread count (the default is one "
                              "per core of the node)")
            elif "cpu" not in lim or math.ceil(_cpu(lim["cpu"])) != int(value):
                errors.append(f"{where}: {var}={value} does not match the CPU limit "
                              f"{lim.get('cpu')}")
        if "HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES" in _settings(prog)[0]:
            value = env.get("HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES")
            if not (isinstance(value, str) and value.isdigit()):
                errors.append(f"{where}: set HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES explicitly")
            elif "memory" in lim and _bytes(lim["memory"]) < INGEST_MEMORY_FACTOR * int(value):
                errors.append(f"{where}: memory limit {lim['memory']} leaves too little above "
                              f"HOOKFLOW_INGEST_MAX_IN_FLIGHT_BYTES={value}")
    _fail_on(errors)


# The HPA scales a Deployment of this file on a metric the code exports.
def test_k8s_autoscaler_targets_and_metric():
    deployments = {d["metadata"]["name"] for d in _k8s() if d.get("kind") == "Deployment"}
    hpas = [d for d in _k8s() if d.get("kind") == "HorizontalPodAutoscaler"]
    assert hpas, "no HorizontalPodAutoscaler"
    for h in hpas:
        assert h["spec"]["scaleTargetRef"]["name"] in deployments, h["spec"]["scaleTargetRef"]
        for m in h["spec"].get("metrics") or []:
            name = (m.get("external") or m.get("pods") or {}).get("metric", {}).get("name")
            if name:
                assert f'"{name}"' in _c_sources(), f"HPA metric {name} is exported by no source"


# compose: database users start after migrate completed, migrate after PostgreSQL is healthy,
# Kafka users after the topics exist; the URLs carry a password mechanism the server needs, from
# a secret the service mounts; HOOKFLOW_SECRETS_DIR is mounted; stop_grace_period covers the drain.
def test_compose_order_database_and_shutdown():
    errors = []
    c = _compose()
    services = c.get("services") or {}
    pg = services.get("postgres") or {}
    pg_env = _compose_env(pg)
    needs_password = (("POSTGRES_PASSWORD" in pg_env or "POSTGRES_PASSWORD_FILE" in pg_env) and
                      pg_env.get("POSTGRES_HOST_AUTH_METHOD") != "trust")
    if not (pg.get("healthcheck") or {}).get("test"):
        errors.append("compose: postgres has no healthcheck")
    for name, svc, prog, env in _compose_programs(errors):
        if prog is None:
            continue
        deps = _depends_on(svc)
        url = env.get("HOOKFLOW_DATABASE_URL")
        if prog == ("hookflow-engine", "migrate"):
            if deps.get("postgres") != "service_healthy":
                errors.append(f"compose service {name}: migrate must wait for postgres healthy")
        elif url is not None and deps.get("migrate") != "service_completed_successfully":
            errors.append(f"compose service {name}: uses the database but does not wait for "
                          "migrate to complete")
        if "HOOKFLOW_KAFKA_BROKERS" in env and \
                deps.get("kafka-topics") != "service_completed_successfully":
            errors.append(f"compose service {name}: uses Kafka but does not wait for "
                          "kafka-topics to complete")
        if url is not None:
            u = urllib.parse.urlsplit(url)
            q = urllib.parse.parse_qs(u.query)
            if u.hostname not in services:
                errors.append(f"compose service {name}: database host {u.hostname} is no service")
            if needs_password and not u.password and "password" not in q and "passfile" not in q:
                errors.append(f"compose service {name}: postgres requires a password, the URL "
                              "gives none")
            for pf in q.get("passfile", []):
                targets = {}
                for s in svc.get("secrets") or []:
                    sname = s if isinstance(s, str) else s["source"]
                    target = s.get("target", sname) if isinstance(s, dict) else sname
                    targets[target if target.startswith("/") else "/run/secrets/" + target] = sname
                sname = targets.get(pf)
                if sname is None or sname not in (c.get("secrets") or {}):
                    errors.append(f"compose service {name}: passfile {pf} is no secret it mounts")
        if "HOOKFLOW_SECRETS_DIR" in _settings(prog)[0] and prog[1] != "apply":
            sdir = _effective(prog, env, "HOOKFLOW_SECRETS_DIR")
            targets = [str(v).split(":")[1] if isinstance(v, str) else v.get("target")
                       for v in svc.get("volumes") or []]
            if sdir not in targets:
                errors.append(f"compose service {name}: nothing mounted at its "
                              f"HOOKFLOW_SECRETS_DIR {sdir}")
        timeout = _effective(prog, env, "HOOKFLOW_SHUTDOWN_TIMEOUT_MS")
        if timeout is not None:
            grace = _seconds(svc.get("stop_grace_period", "10s"))
            if grace < int(timeout) / 1000 + SHUTDOWN_MARGIN_S:
                errors.append(f"compose service {name}: stop_grace_period {grace} s < "
                              f"HOOKFLOW_SHUTDOWN_TIMEOUT_MS {timeout} + {SHUTDOWN_MARGIN_S} s")
    _fail_on(errors)


# Dockerfile: the dependency layer is cached apart from the sources, the user is numeric (and the
# one k8s runs as), the listen ports are exposed, the copied binaries and schema dirs exist.
def test_dockerfile():
    errors = []
    build = _dockerfile()[0]
    copy_all = next((i for i, (ins, a) in enumerate(build) if ins == "COPY" and
                     shlex.split(a)[-2:] == [".", "."]), None)
    deps = next((i for i, (ins, a) in enumerate(build) if ins == "RUN" and
                 "install-deps.sh" in a), None)
    deps_copy = next((i for i, (ins, a) in enumerate(build) if ins == "COPY" and
                      "deploy/local/install-deps.sh" in shlex.split(a)), None)
    if copy_all is None or deps is None or deps_copy is None or not deps_copy < deps < copy_all:
        errors.append("Dockerfile: COPY deploy/local/install-deps.sh and RUN it before COPY . .")
    users = _instr(_runtime_stage(), "USER")
    m = re.fullmatch(r"(\d+):(\d+)", users[-1]) if users else None
    if not m or int(m.group(1)) == 0:
        errors.append(f"Dockerfile: USER {users[-1] if users else None} is not a numeric "
                      "non-root uid:gid")
    else:
        for wl, _, pod in _pod_specs():
            uid = (pod.get("securityContext") or {}).get("runAsUser")
            if uid is not None and uid != int(m.group(1)):
                errors.append(f"{wl}: runAsUser {uid} is not the image's user {m.group(1)}")
    exposed = {int(p.split("/")[0]) for a in _instr(_runtime_stage(), "EXPOSE") for p in a.split()}
    for prog in [("hookflow-ingest", None)] + [("hookflow-engine", c)
                                               for c in sorted(_engine_commands())]:
        var = _listen_var(prog)
        if var and _port(_settings(prog)[2][var]) not in exposed:
            errors.append(f"Dockerfile: EXPOSE misses {var}'s port")
    for name in sorted(_image_binaries()):
        if not os.access(os.path.join(harness.build_dir(), name), os.X_OK):
            errors.append(f"Dockerfile: copies {name}, which the build does not make")
    entry = _image_entrypoint()
    if os.path.basename(entry[0]) not in _image_binaries():
        errors.append(f"Dockerfile: ENTRYPOINT {entry} is not a copied binary")
    for args in _instr(_runtime_stage(), "COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if words[0].startswith("/src/"):
            for var, value in _image_env().items():
                if value.startswith(words[-1].rstrip("/") + "/"):
                    rel = words[0][len("/src/"):] + value[len(words[-1].rstrip("/")):]
                    if not os.path.isdir(_src(rel)):
                        errors.append(f"Dockerfile: {var}={value} is {rel}, not in the sources")
    _fail_on(errors)


def _dockerignore_rx(pattern):
    """A .dockerignore pattern as a regex over '/'-separated paths (Go filepath.Match plus '**':
    '*' and '?' stay within one path element, '**' spans any number of them)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            j = pattern.index("]", i)
            out, i = out + pattern[i:j + 1], j + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path, patterns):
    """Whether Docker leaves path (relative to the context) out: the last matching pattern wins,
    and a pattern matching a directory leaves out what is under it."""
    parts = path.split("/")
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = _dockerignore_rx(os.path.normpath(pat.lstrip("!").strip()).lstrip("/"))
        if any(rx.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not neg
    return excluded


# .dockerignore keeps local secrets, PostgreSQL data, build trees and VCS data out of the build
# context, and keeps what the build needs in.
def test_dockerignore():
    path = _src(".dockerignore")
    assert os.path.isfile(path), ".dockerignore is missing"
    with open(path, encoding="utf-8") as f:
        patterns = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    out = [".hookflow/secrets/engine/token_key", ".hookflow/pg/data/PG_VERSION", ".git/HEAD",
           "build/gcc/hookflow-ingest", "build-release/CMakeCache.txt", "node_modules/x/y.js",
           "tests/integration/__pycache__/harness.cpython-311.pyc",
           "deploy/compose/pgpass", "deploy/compose/pg_password",
           "deploy/compose/secrets/xero/webhook_key"]
    keep = ["CMakeLists.txt", "common/config.c", "deploy/local/install-deps.sh",
            "deploy/local/devbroker.c", "schemas/migrations", "schemas/catalog/xero.json",
            "engine/main.c", "ingest/main.c"]
    errors = [f".dockerignore: {p} is sent to the build" for p in out
              if not _dockerignored(p, patterns)]
    errors += [f".dockerignore: {p} is left out, the build needs it" for p in keep
               if _dockerignored(p, patterns)]
    _fail_on(errors)
