#!/usr/bin/env python3
"""Checks behind deploy/check.sh (run that script, not this file).

  check_deploy.py manifests RENDERED.yaml...   schema + consistency of rendered kustomize output
  check_deploy.py configs                      every ftpgate config TOML under deploy/ parses
  check_deploy.py grafana FILE.json            dashboard JSON and metric names
  check_deploy.py dockerfile FILE              static Dockerfile rules
  check_deploy.py start RENDERED.yaml...       start the binary with each pod's environment

Environment: FTPGATE_BIN (the ftpgate binary; its `service-ports` subcommand parses and
validates each config and prints the Service port list), SKIP_BINARY=1 (skip every step
that needs the binary), K8S_VERSIONS (space-separated Kubernetes versions whose schemas
the manifests must satisfy).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = os.environ.get("FTPGATE_BIN", str(ROOT / "target/debug/ftpgate"))
SKIP_BINARY = os.environ.get("SKIP_BINARY") == "1"
K8S_VERSIONS = os.environ.get("K8S_VERSIONS", "1.30.0 1.35.0").split()
# Example users for configs that point users_file at a mounted Secret.
EXAMPLE_USERS = DEPLOY / "kubernetes/base/users.example.toml"
CONTROL_PORT = 21

# Custom resources: kubernetes-validate has no schema for them (its CLI only warns,
# which would also let a mistyped apiVersion of a built-in kind pass), so every kind
# not listed here must have a schema, and these get a shape check instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

METRICS = {
    "ftpgate_sessions_active",
    "ftpgate_sessions_total",
    "ftpgate_logins_total",
    "ftpgate_commands_total",
    "ftpgate_transfer_bytes_total",
    "ftpgate_transfers_total",
    "ftpgate_transfer_duration_seconds",
    "ftpgate_backend_operation_duration_seconds",
    "ftpgate_backend_errors_total",
    "ftpgate_ready",
}
HISTOGRAMS = {"ftpgate_transfer_duration_seconds", "ftpgate_backend_operation_duration_seconds"}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}", file=sys.stderr)


def ok(msg):
    print(f"  ok   {msg}")


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def expected_ports(cfg):
    """The Service port list `ftpgate service-ports` must print for this config."""
    items = [{"name": "ftp", "port": CONTROL_PORT, "targetPort": port_of(cfg["server"]["listen"]),
              "protocol": "TCP"}]
    passive = cfg.get("passive", {})
    if "ports" in passive:
        a, _, b = passive["ports"].partition("-")
        start, end = int(a), int(b or a)
        shared = passive.get("proxy_listen")
        for p in range(start, end + 1):
            items.append({"name": f"pasv-{p}", "port": p,
                          "targetPort": port_of(shared) if shared else p, "protocol": "TCP"})
    return items


def clean_env(cfg, tmp):
    """The environment for the binary: no FTPGATE_* from outside; files the config
    names (users_file, secret_access_key_file) are mounted Secrets in production, so
    point them at examples."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTPGATE_")}
    if "users_file" in cfg:
        env["FTPGATE_USERS_FILE"] = str(EXAMPLE_USERS)
    if "secret_access_key_file" in cfg.get("storage", {}):
        secret = Path(tmp or tempfile.mkdtemp()) / "secret"
        secret.write_text("example-secret\n")
        env["FTPGATE_STORAGE__SECRET_ACCESS_KEY_FILE"] = str(secret)
    return env


def service_ports_from_binary(cfg_path, cfg, label=None):
    """Runs `ftpgate service-ports` (which loads and validates the config); returns the
    parsed list, or None after reporting a failure."""
    label = label or cfg_path
    with tempfile.TemporaryDirectory() as tmp:
        env = clean_env(cfg, tmp)
        cmd = [BIN, "service-ports", "--config", str(cfg_path), "--control-port", str(CONTROL_PORT)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        fail(f"{label}: `ftpgate service-ports` exited {r.returncode}: "
             f"{(r.stderr or r.stdout).strip()}")
        return None
    try:
        items = yaml.safe_load(r.stdout)
    except yaml.YAMLError as e:
        fail(f"{label}: `ftpgate service-ports` printed no YAML list: {e}")
        return None
    if not isinstance(items, list):
        fail(f"{label}: `ftpgate service-ports` printed no YAML list: {r.stdout[:200]!r}")
        return None
    return items


def norm_ports(items):
    return [{k: i.get(k) for k in ("name", "port", "targetPort", "protocol")} for i in items]


def diff_ports(a, b):
    a, b = norm_ports(a), norm_ports(b)
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            return f"item {i}: {x} != {y}"
    return None


def load_toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


# ---------------------------------------------------------------------- configs


def is_users_file(cfg):
    return set(cfg) <= {"users"}


def cmd_configs():
    print("ftpgate configs under deploy/ (parsed and validated by `ftpgate service-ports`)")
    paths = sorted(DEPLOY.rglob("*.toml"))
    for path in paths:
        rel = path.relative_to(ROOT)
        try:
            cfg = load_toml(path)
        except tomllib.TOMLDecodeError as e:
            fail(f"{rel}: not TOML: {e}")
            continue
        if is_users_file(cfg):
            if not cfg.get("users"):
                fail(f"{rel}: users file without [[users]]")
            else:
                ok(f"{rel}: users file, {len(cfg['users'])} users (parsed by ftpgate via users_file)")
            continue
        if SKIP_BINARY:
            ok(f"{rel}: TOML parses (SKIP_BINARY=1: not validated by ftpgate)")
            continue
        if "ports" not in cfg.get("passive", {}):
            # Not meant for a Service: ftpgate loads and validates the config, then
            # refuses to list ephemeral passive ports. Anything else is an error.
            r = subprocess.run([BIN, "service-ports", "--config", str(path)], capture_output=True,
                               text=True, timeout=60, env=clean_env(cfg, None))
            if r.returncode == 2 and "passive.ports is not set" in r.stderr:
                ok(f"{rel}: valid (no passive.ports: not a Kubernetes config)")
            else:
                fail(f"{rel}: `ftpgate service-ports` exited {r.returncode}: {r.stderr.strip()}")
            continue
        items = service_ports_from_binary(path, cfg, label=rel)
        if items is None:
            continue
        d = diff_ports(items, expected_ports(cfg))
        if d:
            fail(f"{rel}: `service-ports` output differs from the config's ports: {d}")
        else:
            ok(f"{rel}: valid; service-ports lists {len(items)} ports")


# -------------------------------------------------------------------- manifests


def schema_check(path, docs):
    import kubernetes_validate.utils as kv

    passed = []
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = f"{kind}/{doc.get('metadata', {}).get('name')}"
        if (api, kind) in CRD_KINDS:
            spec = doc.get("spec") or {}
            if kind == "ServiceMonitor" and not (spec.get("selector") and spec.get("endpoints")):
                fail(f"{path}: {name}: needs spec.selector and spec.endpoints")
            else:
                passed.append(f"{kind} (CRD {api}: shape only)")
            continue
        good = True
        for v in K8S_VERSIONS:
            try:
                kv.validate(doc, v, strict=True)
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                fail(f"{path}: {name} against Kubernetes {v}: {where}: {e.message}")
                good = False
            except kv.SchemaNotFoundError as e:
                fail(f"{path}: {name}: {e.message} (a typo in apiVersion/kind, or a CRD "
                     f"missing from CRD_KINDS)")
                good = False
            except kv.VersionNotSupportedError:
                fail(f"kubernetes-validate has no schemas for Kubernetes {v}")
                return
        if good:
            passed.append(kind)
    if passed:
        ok(f"{path}: schemas ok: {', '.join(passed)}")


def one(docs, kind, pred=lambda d: True):
    found = [d for d in docs if d.get("kind") == kind and pred(d)]
    return found[0] if len(found) == 1 else None


def consistency_check(path, docs):
    """The rendered objects fit together and fit the ftpgate config they carry."""
    dep = one(docs, "Deployment")
    cm = one(docs, "ConfigMap", lambda d: d["metadata"]["name"].startswith("ftpgate-config"))
    svc = one(docs, "Service", lambda d: d["spec"].get("type") == "LoadBalancer")
    if not (dep and cm and svc):
        fail(f"{path}: expected one Deployment, one ftpgate-config ConfigMap and one "
             f"LoadBalancer Service")
        return
    if "ftpgate.toml" not in cm.get("data", {}):
        fail(f"{path}: ConfigMap {cm['metadata']['name']} has no key ftpgate.toml")
        return
    text = cm["data"]["ftpgate.toml"]
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{path}: ftpgate.toml in the ConfigMap is not TOML: {e}")
        return
    errors = []
    pod = dep["spec"]["template"]["spec"]
    ctr = next((c for c in pod["containers"] if c["name"] == "ftpgate"), None)
    if ctr is None:
        fail(f"{path}: no container named ftpgate")
        return
    mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}

    def mounted_file(file_path, what):
        """file_path must be a key of a Secret/ConfigMap volume mounted at its directory."""
        d, _, key = file_path.rpartition("/")
        vol = next((n for n, mp in mounts.items() if mp.rstrip("/") == d), None)
        if vol is None:
            errors.append(f"{what} {file_path}: no volume mounted at {d}")
            return
        v = volumes.get(vol, {})
        if "secret" in v:
            sname = v["secret"]["secretName"]
            s = secrets.get(sname)
            if s is None:
                errors.append(f"{what} {file_path}: Secret {sname} is not in the output")
            elif key not in (s.get("data") or {}) and key not in (s.get("stringData") or {}):
                errors.append(f"{what} {file_path}: Secret {sname} has no key {key}")
        elif "configMap" in v:
            if v["configMap"]["name"] != cm["metadata"]["name"] or key not in cm["data"]:
                errors.append(f"{what} {file_path}: ConfigMap volume {vol} has no key {key}")
        else:
            errors.append(f"{what} {file_path}: volume {vol} is neither a Secret nor a ConfigMap")

    args = ctr.get("args", [])
    if "--config" not in args:
        errors.append("container args carry no --config")
    else:
        mounted_file(args[args.index("--config") + 1], "--config")
    if "users_file" in cfg:
        mounted_file(cfg["users_file"], "users_file")
    elif not cfg.get("users"):
        errors.append("config has neither users_file nor [[users]]")
    skf = cfg.get("storage", {}).get("secret_access_key_file")
    if skf:
        mounted_file(skf, "storage.secret_access_key_file")
    if cfg.get("storage", {}).get("secret_access_key"):
        errors.append("storage.secret_access_key in a ConfigMap: use secret_access_key_file")

    # Ports and probes.
    cports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    if cports.get("ftp") != port_of(cfg["server"]["listen"]):
        errors.append(f"containerPort ftp {cports.get('ftp')} != server.listen {cfg['server']['listen']}")
    http = cfg.get("http", {}).get("listen")
    if not http:
        errors.append("config has no [http] listen: probes and metrics need it")
    elif cports.get("http") != port_of(http):
        errors.append(f"containerPort http {cports.get('http')} != http.listen {http}")
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = (ctr.get(probe) or {}).get("httpGet") or {}
        if g.get("path") != want or g.get("port") not in ("http", cports.get("http")):
            errors.append(f"{probe} must be GET {want} on the http port, is {g}")
    pl = cfg.get("passive", {}).get("proxy_listen")
    if pl and port_of(pl) not in cports.values():
        errors.append(f"passive.proxy_listen {pl} has no containerPort")

    # Shutdown: Kubernetes must not SIGKILL before ftpgate's delay + grace (+ the 5 s
    # it waits for cut transfers) is over.
    grace = cfg.get("server", {}).get("shutdown_grace_secs", 30)
    delay = cfg.get("server", {}).get("shutdown_delay_secs", 5)
    tgp = pod.get("terminationGracePeriodSeconds", 30)
    if tgp <= delay + grace + 5:
        errors.append(f"terminationGracePeriodSeconds {tgp} <= server.shutdown_delay_secs {delay} "
                      f"+ server.shutdown_grace_secs {grace} + 5")
    # Readiness must notice a shutdown before the listeners close.
    rp = ctr.get("readinessProbe") or {}
    noticed = rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3)
    if noticed > delay:
        errors.append(f"readinessProbe notices a shutdown after up to {noticed} s "
                      f"(periodSeconds x failureThreshold) > server.shutdown_delay_secs {delay}")
    if pod.get("enableServiceLinks") is not False:
        errors.append("enableServiceLinks is not false (Services named ftpgate* inject "
                      "FTPGATE_* variables)")

    # Hardening.
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        errors.append("runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        errors.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        errors.append("allowPrivilegeEscalation is not false")
    if "ALL" not in (csc.get("capabilities") or {}).get("drop", []):
        errors.append("capabilities.drop lacks ALL")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        errors.append(f"seccompProfile is {seccomp}, not RuntimeDefault")
    if not any(d.get("kind") == "PodDisruptionBudget" for d in docs):
        errors.append("no PodDisruptionBudget")

    # The Service: routing scheme and port list.
    spec = svc["spec"]
    if cfg.get("server", {}).get("proxy_protocol"):
        ann = svc["metadata"].get("annotations", {})
        if ann.get("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol") != "*":
            errors.append("proxy_protocol = true but the Service does not ask the NLB for "
                          "PROXY protocol on every port")
    else:
        if spec.get("sessionAffinity") != "ClientIP" or spec.get("externalTrafficPolicy") != "Local":
            errors.append("without PROXY protocol the Service needs sessionAffinity ClientIP "
                          "and externalTrafficPolicy Local")
    if spec.get("sessionAffinity", "None") == "None" and "sessionAffinityConfig" in spec:
        errors.append("sessionAffinityConfig is set without sessionAffinity ClientIP "
                      "(the API server rejects it)")
    want = expected_ports(cfg)
    d = diff_ports(spec.get("ports", []), want)
    if d:
        errors.append(f"Service ports do not match the config's ports: {d}")
    if not SKIP_BINARY:
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(text)
            f.flush()
            items = service_ports_from_binary(f.name, cfg, label=f"{path}: ConfigMap ftpgate.toml")
            if items is not None:
                d = diff_ports(spec.get("ports", []), items)
                if d:
                    errors.append(f"Service ports differ from `ftpgate service-ports`: {d}")
    metrics = one(docs, "Service", lambda s: s["metadata"]["name"] == "ftpgate-metrics")
    if metrics is None or not any(p.get("targetPort") in ("http", cports.get("http"))
                                  for p in metrics["spec"]["ports"]):
        errors.append("no ftpgate-metrics Service targeting the http port")

    for e in errors:
        fail(f"{path}: {e}")
    if not errors:
        ok(f"{path}: Deployment, ConfigMap, Secrets and Service agree with ftpgate.toml "
           f"({len(want)} Service ports{'' if SKIP_BINARY else ', as `ftpgate service-ports` prints'})")


def cmd_manifests(paths):
    print(f"rendered manifests (kubernetes-validate --strict, Kubernetes {', '.join(K8S_VERSIONS)})")
    for full in paths:
        p = Path(full).stem  # base, overlay-NAME, base+COMPONENT
        try:
            with open(full) as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
        except yaml.YAMLError as e:
            fail(f"{p}: not YAML: {e}")
            continue
        if not docs:
            fail(f"{p}: rendered nothing")
            continue
        schema_check(p, docs)
        consistency_check(p, docs)


# ---------------------------------------------------------------------- grafana


def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)


def cmd_grafana(path):
    print(f"Grafana dashboard {path}")
    try:
        dash = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: not JSON: {e}")
        return
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        fail(f"{path}: no `datasource` variable of type datasource")
    used = set()
    unknown = set()
    n = 0
    for e in exprs(dash):
        if e == "prometheus":  # the datasource variable's plugin id
            continue
        n += 1
        for name in re.findall(r"\bftpgate_[a-z0-9_]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in METRICS:
                used.add(name)
            elif base in HISTOGRAMS:
                used.add(base)
            else:
                unknown.add(name)
        if "histogram_quantile" in e and "_bucket" not in e:
            fail(f"{path}: histogram_quantile over something other than a _bucket series: {e}")
    for name in sorted(unknown):
        fail(f"{path}: unknown metric {name} (ftpgate exports: {', '.join(sorted(METRICS))})")
    for name in sorted(METRICS - used):
        fail(f"{path}: metric {name} is not shown on any panel")
    for p in dash.get("panels", []):
        ds = p.get("datasource")
        if p.get("type") != "row" and (not isinstance(ds, dict) or ds.get("uid") != "${datasource}"):
            fail(f"{path}: panel {p.get('title')!r} does not use the $datasource variable")
    if not unknown and used == METRICS:
        ok(f"{path}: {n} queries, all {len(METRICS)} metrics used, no unknown names")


# ------------------------------------------------------------------- dockerfile


def cmd_dockerfile(path):
    print(f"Dockerfile {path} (static rules; no Docker engine here)")
    text = Path(path).read_text()
    rust_version = load_toml(ROOT / "Cargo.toml")["workspace"]["package"]["rust-version"]
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    errors = []
    if len(froms) < 2:
        errors.append("not multi-stage")
    for image, _ in froms:
        if ":" not in image.split("/")[-1] or image.endswith(":latest"):
            errors.append(f"base image {image} is not pinned by tag")
    if froms and not froms[0][0].startswith(f"rust:{rust_version}-"):
        errors.append(f"builder {froms[0][0]} does not match rust-version {rust_version} (Cargo.toml)")
    if froms and "distroless" not in froms[-1][0]:
        errors.append(f"final stage {froms[-1][0]} is not distroless (no shell)")
    if "cargo build --release --locked -p ftpgate" not in text:
        errors.append("no `cargo build --release --locked -p ftpgate`")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        errors.append("the final stage does not switch to a non-root USER")
    if 'ENTRYPOINT ["/usr/local/bin/ftpgate"]' not in text:
        errors.append('ENTRYPOINT is not ["/usr/local/bin/ftpgate"] (exec form)')
    if not re.search(r'^CMD \["--config",\s*"/etc/ftpgate/config.toml"\]', text, re.M):
        errors.append('CMD is not ["--config", "/etc/ftpgate/config.toml"]')
    for port in ("2121", "9100"):
        if not re.search(rf"^EXPOSE .*\b{port}\b", text, re.M):
            errors.append(f"port {port} not EXPOSEd")
    ignore = ROOT / ".dockerignore"
    if not ignore.exists() or not re.search(r"^/?target/?$", ignore.read_text(), re.M):
        errors.append(".dockerignore at the repository root must exclude target/")
    for e in errors:
        fail(f"{path}: {e}")
    if not errors:
        ok(f"{path}: multi-stage, rust:{rust_version} builder, distroless non-root final stage, "
           f"pinned tags, exec-form ENTRYPOINT/CMD")


# ------------------------------------------------------------------ start pods


def service_links(svc, ip):
    """The variables kubelet injects for a Service (pkg/kubelet/envvars: service
    links), given its cluster IP."""
    name = svc["metadata"]["name"].upper().replace("-", "_")
    ports = svc["spec"].get("ports", [])
    env = {f"{name}_SERVICE_HOST": ip}
    if ports:
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
    for p in ports:
        if p.get("name"):
            env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
    for i, p in enumerate(ports):
        proto = p.get("protocol", "TCP")
        url = f"{proto.lower()}://{ip}:{p['port']}"
        if i == 0:
            env[f"{name}_PORT"] = url
        pre = f"{name}_PORT_{p['port']}_{proto.upper()}"
        env[pre] = url
        env[f"{pre}_PROTO"] = proto.lower()
        env[f"{pre}_PORT"] = str(p["port"])
        env[f"{pre}_ADDR"] = ip
    return env


def pod_env(docs, links):
    """The environment of the ftpgate container: image defaults, HOSTNAME, the
    `kubernetes` master Service (always injected), the container's literal env and,
    with `links`, the service links of every Service rendered with it."""
    dep = one(docs, "Deployment")
    ctr = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "ftpgate")
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOSTNAME": "ftpgate-5d9c7b8f6-x2x9q"}
    env.update(service_links({"metadata": {"name": "kubernetes"},
                              "spec": {"ports": [{"name": "https", "port": 443}]}}, "10.96.0.1"))
    if links:
        services = [d for d in docs if d.get("kind") == "Service"
                    and d["spec"].get("clusterIP") != "None"]
        for i, svc in enumerate(services):
            env.update(service_links(svc, f"10.96.0.{10 + i}"))
    for e in ctr.get("env", []):
        env[e["name"]] = e.get("value", "placeholder-from-valueFrom")
    return env


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port, path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def cmd_start(paths):
    """Starts the binary as each rendered pod would run: the ConfigMap's ftpgate.toml
    and the pod's environment (service links as rendered, and again with service
    links forced on), then SIGTERM. Only what cannot work outside a cluster is
    redirected, through documented FTPGATE_SECTION__KEY variables: every address to
    127.0.0.1, the S3 endpoint to a local moto server (bucket created), credentials
    and mounted Secret files to test values. Each must answer /healthz and /readyz,
    turn /readyz 503 at once on SIGTERM while still accepting FTP connections, and
    exit 0 within its delay + grace."""
    import shutil
    import signal
    import socket
    import time
    import urllib.request

    print("start the binary with each pod's environment (moto as S3, loopback addresses)")
    if SKIP_BINARY:
        ok("SKIP_BINARY=1: not started")
        return
    moto = shutil.which("moto_server")
    if not moto:
        if os.environ.get("CI") == "true":
            fail("moto_server not installed (python3 -m pip install 'moto[server]')")
        else:
            print("  SKIPPED: moto_server not installed")
        return
    mport = free_port()
    mproc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(mport)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp()
    runs = []
    try:
        deadline = time.time() + 60
        while http_status(mport, "/") is None:
            if time.time() > deadline or mproc.poll() is not None:
                fail("moto_server did not start")
                return
            time.sleep(0.2)
        for full in paths:
            label = Path(full).stem
            with open(full) as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
            dep = one(docs, "Deployment")
            cm = one(docs, "ConfigMap", lambda d: d["metadata"]["name"].startswith("ftpgate-config"))
            if not (dep and cm):
                fail(f"{label}: no Deployment or ftpgate-config ConfigMap")
                continue
            text = cm["data"]["ftpgate.toml"]
            cfg = tomllib.loads(text)
            storage = cfg.get("storage", {})
            bucket = storage.get("bucket")
            if bucket:
                req = urllib.request.Request(f"http://127.0.0.1:{mport}/{bucket}", method="PUT")
                try:
                    urllib.request.urlopen(req, timeout=10).close()
                except OSError:
                    pass  # already there (another render uses the same bucket)
            links_rendered = dep["spec"]["template"]["spec"].get("enableServiceLinks", True)
            for links in sorted({bool(links_rendered), True}):
                name = f"{label} ({'with' if links else 'without'} service links)"
                cfg_path = Path(tmp) / f"{label}-{links}.toml"
                cfg_path.write_text(text)
                env = pod_env(docs, links)
                http = free_port()
                env.update({
                    "FTPGATE_SERVER__LISTEN": "127.0.0.1:0",
                    "FTPGATE_HTTP__LISTEN": f"127.0.0.1:{http}",
                    "FTPGATE_PASSIVE__ADVERTISE": "127.0.0.1",
                    "FTPGATE_LOG__FORMAT": "text",
                })
                if "proxy_listen" in cfg.get("passive", {}):
                    env["FTPGATE_PASSIVE__PROXY_LISTEN"] = "127.0.0.1:0"
                if cfg.get("server", {}).get("proxy_protocol"):
                    env["FTPGATE_SERVER__PROXY_TRUSTED"] = '["127.0.0.1/32"]'
                if "users_file" in cfg:
                    env["FTPGATE_USERS_FILE"] = str(EXAMPLE_USERS)
                if storage.get("kind") == "s3":
                    env.update({
                        "FTPGATE_STORAGE__ENDPOINT": f"http://127.0.0.1:{mport}",
                        "FTPGATE_STORAGE__FORCE_PATH_STYLE": "true",
                        "FTPGATE_STORAGE__ALLOW_HTTP": "true",
                        "FTPGATE_STORAGE__ACCESS_KEY_ID": "testing",
                    })
                    if "secret_access_key_file" in storage:
                        secret = Path(tmp) / f"{label}-secret"
                        secret.write_text("testing\n")
                        env["FTPGATE_STORAGE__SECRET_ACCESS_KEY_FILE"] = str(secret)
                    else:
                        env["FTPGATE_STORAGE__SECRET_ACCESS_KEY"] = "testing"
                n_links = sum(1 for k in env if k.startswith("FTPGATE") and
                              ("_SERVICE_" in k or k.endswith("_PORT") or "_PORT_" in k))
                log = open(Path(tmp) / f"{label}-{links}.log", "w+")
                proc = subprocess.Popen([str(Path(BIN).resolve()), "--config", str(cfg_path)], env=env,
                                        stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
                server = cfg.get("server", {})
                limit = server.get("shutdown_delay_secs", 5) + server.get("shutdown_grace_secs", 30) + 15
                runs.append({"name": name, "proc": proc, "http": http, "log": log,
                             "limit": limit, "links": n_links, "bad": False,
                             "proxy": bool(cfg.get("server", {}).get("proxy_protocol"))})

        def logs(r):
            r["log"].flush()
            r["log"].seek(0)
            return r["log"].read()[-3000:]

        def control_port(r):
            m = re.search(r"listening.*addr=127\.0\.0\.1:(\d+)", logs(r))
            return int(m.group(1)) if m else None

        def greets(port, proxy):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    if proxy:
                        s.sendall(f"PROXY TCP4 203.0.113.7 127.0.0.1 40000 {port}\r\n".encode())
                    return s.recv(64).startswith(b"220")
            except OSError:
                return False

        def bad(r, msg):
            r["bad"] = True
            fail(f"{r['name']}: {msg}")

        started = []
        deadline = time.time() + 60
        for r in runs:
            while http_status(r["http"], "/healthz") != 200 and r["proc"].poll() is None \
                    and time.time() < deadline:
                time.sleep(0.2)
            if http_status(r["http"], "/healthz") != 200:
                fail(f"{r['name']}: did not start (exit {r['proc'].poll()}): {logs(r)}")
                continue
            if http_status(r["http"], "/readyz") != 200:
                fail(f"{r['name']}: /readyz is not 200 after start: {logs(r)}")
                continue
            started.append(r)
        for r in started:
            r["port"] = control_port(r)
            r["proc"].send_signal(signal.SIGTERM)
            r["term"] = time.time()
        for r in started:
            # The signal arrives asynchronously: 503 within a second.
            until = time.time() + 1
            while (st := http_status(r["http"], "/readyz")) != 503 and time.time() < until:
                time.sleep(0.05)
            if st != 503:
                bad(r, f"/readyz answered {st} after SIGTERM, not 503")
            elif r["port"] is None or not greets(r["port"], r["proxy"]):
                bad(r, f"stopped accepting at SIGTERM (server.shutdown_delay_secs): {logs(r)}")
        waiting = list(started)
        while waiting:
            time.sleep(0.1)
            for r in list(waiting):
                code = r["proc"].poll()
                took = time.time() - r["term"]
                if code is None and took < r["limit"]:
                    continue
                waiting.remove(r)
                if code is None:
                    bad(r, f"still running {r['limit']} s after SIGTERM")
                elif code != 0:
                    bad(r, f"exit {code} after SIGTERM: {logs(r)}")
                elif not r["bad"]:
                    ok(f"{r['name']}: started with {r['links']} FTPGATE_* service-link "
                       f"variables, ready; on SIGTERM 503 and still accepting, exit 0 after "
                       f"{took:.0f} s")
    finally:
        for r in runs:
            if r["proc"].poll() is None:
                r["proc"].kill()
                r["proc"].wait()
            r["log"].close()
        mproc.terminate()
        try:
            mproc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            mproc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[1], argv[2:]
    if cmd == "manifests":
        cmd_manifests(rest)
    elif cmd == "start":
        cmd_start(rest)
    elif cmd == "configs":
        cmd_configs()
    elif cmd == "grafana":
        cmd_grafana(rest[0])
    elif cmd == "dockerfile":
        cmd_dockerfile(rest[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
