"""Checks on the manifests `helm template` rendered from helm/sediment.

  chart_checks.py structure RENDERED.yaml
      Consistency a schema validator cannot see: per-broker configs agree with
      the StatefulSet, Services, probes, PDB, ServiceMonitor and dashboard.

  chart_checks.py check-config RENDERED.yaml DOCKERFILE SEDIMENT_BIN
      Runs the broker's own validation (`sediment serve ... --check-config`) on
      exactly what each broker pod would run: the image's ENTRYPOINT and ENV,
      the container's args and env (downward API values substituted for a
      concrete pod), and its volumes (ConfigMap files written out, mount paths
      mapped into a temporary root). Also checks that a broken config is
      rejected with exit code 2 and a message naming the key.

Exits 1 if any assertion failed.
"""

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

failures = 0
passes = 0


def ok(cond, what, detail=""):
    global failures, passes
    if cond:
        passes += 1
        print(f"  ok   {what}")
    else:
        failures += 1
        print(f"  FAIL {what}" + (f": {detail}" if detail else ""))
    return cond


def load(path):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return docs, by_kind


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def broker_parts(by_kind):
    sts = by_kind["StatefulSet"][0]
    pod = sts["spec"]["template"]
    c = pod["spec"]["containers"][0]
    cm_name = next(v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v)
    cm = next(m for m in by_kind["ConfigMap"] if m["metadata"]["name"] == cm_name)
    return sts, pod, c, cm


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------- structure


def structure(rendered):
    docs, by_kind = load(rendered)
    ok(len(by_kind.get("StatefulSet", [])) == 1, "exactly one StatefulSet")
    sts, pod, c, cm = broker_parts(by_kind)
    name = sts["metadata"]["name"]
    ns = sts["metadata"]["namespace"]
    replicas = sts["spec"]["replicas"]
    labels = pod["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    ok(all(d["metadata"].get("namespace") for d in docs), "every object names its namespace")
    ok(sts["spec"]["podManagementPolicy"] == "Parallel", "brokers start in parallel (a Raft cluster forms only with a quorum)")
    ok(matches(sts["spec"]["selector"]["matchLabels"], labels), "StatefulSet selector matches its pods")
    ok("command" not in c, "no command override: the image ENTRYPOINT (/sediment) runs")
    ok(c["args"][:3] == ["serve", "--config", "/etc/sediment/$(POD_NAME).toml"], "brokers run `serve --config <own file>`")
    ok(any(e["name"] == "POD_NAME" and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
           for e in c["env"]), "POD_NAME comes from the downward API")
    ok(mounts.get("/etc/sediment") and mounts["/etc/sediment"] in
       [v["name"] for v in pod["spec"]["volumes"] if "configMap" in v], "broker config mounted from the ConfigMap")

    # Services
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(sts["spec"]["serviceName"])
    ok(headless is not None, f"serviceName {sts['spec']['serviceName']} is a rendered Service")
    if headless:
        ok(headless["spec"].get("clusterIP") == "None", "peer Service is headless")
        ok(headless["spec"].get("publishNotReadyAddresses") is True, "peers resolve before they are ready")
    for s in services.values():
        sel = {k: v for k, v in s["spec"]["selector"].items() if k != "statefulset.kubernetes.io/pod-name"}
        pod_sel = s["spec"]["selector"].get("statefulset.kubernetes.io/pod-name")
        ok(matches(sel, labels) and (pod_sel is None or re.fullmatch(re.escape(name) + r"-\d+", pod_sel)),
           f"Service {s['metadata']['name']} selects broker pods")
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort")
            ok(tp in ports or tp in ports.values(), f"Service {s['metadata']['name']} port {p['name']} targets a container port")

    # Per-broker configs
    node_ids, seen_peers = {}, None
    for i in range(replicas):
        key = f"{name}-{i}.toml"
        text = cm["data"].get(key)
        if not ok(text is not None, f"ConfigMap has {key}"):
            continue
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            ok(False, f"{key} is valid TOML", str(e))
            continue
        ok(True, f"{key} is valid TOML")
        node_ids[i] = conf.get("node_id")
        peers = dict(p.split("=", 1) for p in conf["peers"].split(","))
        if seen_peers is None:
            seen_peers = peers
        ok(peers == seen_peers, f"{key}: same peer list as broker 0")
        # the first len(peers) brokers form the cluster; a broker beyond them (scale-out) is not
        # in the list and joins through `sediment cluster add-broker`
        voter = i < len(peers)
        ok((str(conf["node_id"]) in peers) == voter,
           f"{key}: node {conf['node_id']} {'is one of the initial voters' if voter else 'joins (not in peers)'}")
        if voter:
            host, port = parse_hostport(peers.get(str(conf["node_id"]), ":0"))
            ok(host == f"{name}-{i}.{headless['metadata']['name']}.{ns}.svc.cluster.local" if headless else False,
               f"{key}: its peer address is its own stable DNS name", host)
            ok(port == ports["raft"], f"{key}: peer port is the raft container port")
        else:
            ok(len(peers) >= 2, f"{key}: a joining broker names at least two voters", str(len(peers)))
        for k, pname in [("listen", "kafka"), ("admin_listen", "admin"), ("raft_listen", "raft")]:
            ok(parse_hostport(conf[k])[1] == ports[pname], f"{key}: {k} uses the {pname} container port")
        ok(conf["data_dir"] in mounts, f"{key}: data_dir {conf['data_dir']} is a mounted volume")
        ok(conf["cache_dir"] in mounts, f"{key}: cache_dir {conf['cache_dir']} is a mounted volume")
        ok(isinstance(conf.get("cache_size"), str) and conf["cache_size"].isdigit(),
           f"{key}: cache_size is a byte count (as the broker's size string)")
        hot = pod_hot_log_bytes(pod, sts, conf["data_dir"])
        mlb = conf.get("max_local_bytes")
        ok(hot is None or (isinstance(mlb, str) and mlb.isdigit() and int(mlb) < hot),
           f"{key}: max_local_bytes ({mlb}) keeps the hot log below its volume ({hot})")
        ok(all(isinstance(v, str) for v in conf.get("topic_defaults", {}).values()),
           f"{key}: topic_defaults values are strings (Kafka config values)")
        adv_arg = "--advertised-listener" in c["args"]
        ok(("advertised_listener" in conf) != adv_arg, f"{key}: advertised listener set exactly once (file or args)")
        if "advertised_listener" in conf:
            ahost, aport = parse_hostport(conf["advertised_listener"])
            ext = [s for s in services.values()
                   if s["spec"]["selector"].get("statefulset.kubernetes.io/pod-name") == f"{name}-{i}"]
            if ext:
                s = ext[0]
                p = s["spec"]["ports"][0]
                want = p.get("nodePort") if s["spec"]["type"] == "NodePort" else p["port"]
                ok(aport == want, f"{key}: advertised port {aport} is its external Service's port", str(want))
            else:
                ok(ahost == f"{name}-{i}.{headless['metadata']['name']}.{ns}.svc.cluster.local" and aport == ports["kafka"],
                   f"{key}: advertises its stable in-cluster name", conf["advertised_listener"])
    ok(len(set(node_ids.values())) == replicas, f"node ids are unique: {sorted(node_ids.values())}")
    voters = len(seen_peers or {})
    ok(set(seen_peers or {}) == {str(node_ids[i]) for i in range(voters) if i in node_ids},
       "voters are exactly the first brokers")

    # Probes
    for probe, path in [("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")]:
        p = c.get(probe, {}).get("httpGet", {})
        ok(p.get("path") == path and p.get("port") in ("admin", ports["admin"]), f"{probe} GET {path} on the admin port")

    # Security
    sc, psc = c.get("securityContext", {}), pod["spec"].get("securityContext", {})
    ok(psc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
       and "ALL" in sc.get("capabilities", {}).get("drop", []), "non-root, read-only root, no privilege escalation, no capabilities")
    ok(pod["spec"].get("automountServiceAccountToken") is False, "no Kubernetes API token mounted")
    ok(pod["spec"].get("enableServiceLinks") is False, "no Service-link variables (they would look like SEDIMENT_* config)")
    ok(not [e["name"] for e in c.get("env", []) if e["name"].startswith("SEDIMENT_")],
       "no SEDIMENT_* env: the per-broker config file is the single source")
    sa_name = pod["spec"]["serviceAccountName"]
    sas = [s for s in by_kind.get("ServiceAccount", []) if s["metadata"]["name"] == sa_name]
    ok(len(sas) == 1, f"ServiceAccount {sa_name} rendered")

    # PDB
    for pdb in by_kind.get("PodDisruptionBudget", []):
        mu = pdb["spec"].get("maxUnavailable")
        ok(mu == 1, f"PDB allows one broker down at a time ({mu} of {replicas}): a partition of "
           "replication factor 3 keeps its quorum")
        ok(matches(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selects the brokers")
    if replicas >= 3:
        ok(len(by_kind.get("PodDisruptionBudget", [])) == 1, "a PodDisruptionBudget protects the quorum")

    # Placement
    tsc = pod["spec"].get("topologySpreadConstraints", [])
    for t in tsc:
        ok(t["topologyKey"] == "topology.kubernetes.io/zone" and matches(t["labelSelector"]["matchLabels"], labels),
           f"zone spread ({t['whenUnsatisfiable']}) over the brokers")

    # NetworkPolicy
    for np in by_kind.get("NetworkPolicy", []):
        allowed = {p["port"] for r in np["spec"]["ingress"] for p in r.get("ports", [])}
        ok({ports["kafka"], ports["raft"], ports["admin"]} <= allowed, "NetworkPolicy admits kafka, raft and admin ports")

    # ServiceMonitor (no schema for its CRD in kubernetes-validate: check it here)
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        targets = [s for s in services.values() if matches(sel, s["metadata"]["labels"])]
        ok(len(targets) == 1, "ServiceMonitor selects exactly one Service", str([t["metadata"]["name"] for t in targets]))
        for ep in sm["spec"]["endpoints"]:
            ok(targets and ep["port"] in [p["name"] for p in targets[0]["spec"]["ports"]] and ep["path"] == "/metrics",
               f"ServiceMonitor scrapes /metrics on port {ep['port']}")
        ok(ns in sm["spec"]["namespaceSelector"]["matchNames"], "ServiceMonitor looks in the release namespace")
        ok(sm["apiVersion"] == "monitoring.coreos.com/v1" and set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel", "podTargetLabels", "targetLabels"},
           "ServiceMonitor uses known spec fields")

    # Grafana dashboard
    for d in by_kind.get("ConfigMap", []):
        if "sediment.json" not in d.get("data", {}):
            continue
        dash = json.loads(d["data"]["sediment.json"])
        exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
        ok(len([p for p in dash["panels"] if p["type"] != "row"]) >= 8, "dashboard has panels")
        for m in ["sediment_produce_bytes_total", "sediment_request_latency_seconds_bucket", "sediment_tier_upload_lag_bytes",
                  "sediment_fetch_bytes_total"]:
            ok(m in exprs, f"dashboard queries {m}")
        ok({"Throughput", "Latency", "Storage and tiering", "Replication"} <= {p["title"] for p in dash["panels"] if p["type"] == "row"},
           "dashboard has throughput, latency, storage and replication rows")
        ok(all(p.get("datasource", {}).get("uid") == "${datasource}" for p in dash["panels"] if p["type"] != "row"),
           "every panel uses the datasource variable")


# ---------------------------------------------------------------- check-config


def quantity_bytes(q):
    units = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(q))
    return int(m.group(1)) * units[m.group(2)] if m and m.group(2) in units else None


def pod_hot_log_bytes(pod, sts, data_dir):
    """Size of the data volume (emptyDir sizeLimit, ephemeral or claim request), if set."""
    c = pod["spec"]["containers"][0]
    data = next((m["name"] for m in c["volumeMounts"] if m["mountPath"] == data_dir), None)
    for v in pod["spec"].get("volumes", []):
        if v["name"] == data:
            if "emptyDir" in v:
                return quantity_bytes(v["emptyDir"].get("sizeLimit"))
            if "ephemeral" in v:
                return quantity_bytes(v["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"])
    for t in sts["spec"].get("volumeClaimTemplates", []):
        if t["metadata"]["name"] == data:
            return quantity_bytes(t["spec"]["resources"]["requests"]["storage"])
    return None


def hot_log_claim(rendered):
    """The default values keep the hot log on a volume claim of the StatefulSet (it outlives the
    pod), not on an emptyDir or ephemeral volume that a new pod gets empty."""
    _, by_kind = load(rendered)
    sts = by_kind["StatefulSet"][0]
    pod = sts["spec"]["template"]
    c = pod["spec"]["containers"][0]
    data_dir = "/var/lib/sediment"
    data = next((m["name"] for m in c["volumeMounts"] if m["mountPath"] == data_dir), None)
    ok(data is not None, f"a volume is mounted at {data_dir}")
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
    ok(data in claims, f"the hot log ({data}) is a volumeClaimTemplate", f"claims: {claims}")
    ok(not any(v["name"] == data for v in pod["spec"].get("volumes", [])), "no pod-scoped volume shadows it")
    ok(sts["spec"].get("persistentVolumeClaimRetentionPolicy", {}).get("whenDeleted") == "Retain",
       "deleting the StatefulSet keeps the claims")


def image_runtime(dockerfile):
    """ENV, ENTRYPOINT, USER and WORKDIR of the Dockerfile's final stage."""
    text = Path(dockerfile).read_text().replace("\\\n", " ")
    stage = re.split(r"(?mi)^FROM\s", text)[-1]
    env, entrypoint, workdir = {}, None, "/"
    for line in stage.splitlines():
        line = line.strip()
        if line.upper().startswith("ENV "):
            for tok in shlex.split(line[4:]):
                k, _, v = tok.partition("=")
                env[k] = v
        elif line.upper().startswith("ENTRYPOINT "):
            entrypoint = json.loads(line[len("ENTRYPOINT "):])
        elif line.upper().startswith("WORKDIR "):
            workdir = line.split(None, 1)[1]
    return env, entrypoint, workdir


def expand(s, env):
    """Kubernetes $(VAR) expansion ($$ escapes, unknown references stay)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)


def check_config(rendered, dockerfile, binary):
    docs, by_kind = load(rendered)
    sts, pod, c, cm = broker_parts(by_kind)
    name, ns = sts["metadata"]["name"], sts["metadata"]["namespace"]
    img_env, entrypoint, workdir = image_runtime(dockerfile)
    ok(entrypoint == ["/sediment"], "image ENTRYPOINT is /sediment", str(entrypoint))
    configmaps = {m["metadata"]["name"]: m for m in by_kind.get("ConfigMap", [])}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    def run_pod(i, tmp, mutate=None):
        pod_name = f"{name}-{i}"
        root = Path(tmp) / pod_name
        mounts = sorted({m["mountPath"] for m in c["volumeMounts"]} | {workdir}, key=len, reverse=True)
        pat = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(m) for m in mounts) + r")(?=$|[/\"'\s,])")
        remap = lambda s: pat.sub(lambda m: str(root) + m.group(1), s)
        for m in c["volumeMounts"]:
            d = root / m["mountPath"].lstrip("/")
            d.mkdir(parents=True, exist_ok=True)
            v = volumes.get(m["name"]) or {}
            if "secret" in v:
                # the chart's own Secret, decoded; an existing Secret named in values: a stand-in
                sec = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}.get(v["secret"]["secretName"])
                for item in v["secret"].get("items") or []:
                    raw = (sec or {}).get("data", {}).get(item["key"])
                    value = base64.b64decode(raw).decode() if raw else "secret-" + item["key"] + "-stand-in"
                    (d / item["path"]).write_text(value)
            if "configMap" in v:
                for k, text in configmaps[v["configMap"]["name"]]["data"].items():
                    if mutate and k == f"{pod_name}.toml":
                        text = mutate(text)
                    (d / k).write_text(remap(text))
        (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        field = {"metadata.name": pod_name, "metadata.namespace": ns, "status.hostIP": "10.0.0.10",
                 "status.podIP": "10.1.0.10", "spec.nodeName": "node-0", "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "")}
        env = {k: remap(v) for k, v in img_env.items()}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = remap(expand(e["value"], env))
            elif "fieldRef" in e.get("valueFrom", {}):
                env[e["name"]] = field[e["valueFrom"]["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                env[e["name"]] = "secret-" + e["valueFrom"]["secretKeyRef"]["key"].lower()
            elif "configMapKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["configMapKeyRef"]
                env[e["name"]] = configmaps[ref["name"]]["data"][ref["key"]]
        args = [remap(expand(a, env)) for a in c.get("args", [])]
        env["HOME"] = str(root / "home" / "nonroot")
        env["PATH"] = "/usr/bin:/bin"
        cmd = [binary] + args + ["--check-config"]
        p = subprocess.run(cmd, env=env, cwd=root / workdir.lstrip("/"), capture_output=True, text=True, timeout=60)
        return p, cmd, env

    replicas = sts["spec"]["replicas"]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(replicas):
            p, cmd, env = run_pod(i, tmp)
            shown = " ".join(shlex.quote(x) for x in cmd)
            ok(p.returncode == 0, f"{name}-{i}: `sediment {' '.join(cmd[1:])}` accepted",
               f"exit {p.returncode}\n    env: {' '.join(f'{k}={v}' for k, v in sorted(env.items()) if k not in ('PATH',))}"
               f"\n    cmd: {shown}\n    stdout: {p.stdout.strip()}\n    stderr: {p.stderr.strip()}")
        # The validation must not be a no-op: a bad node_id is refused, naming the key.
        bad = lambda t: re.sub(r"(?m)^node_id = .*$", 'node_id = "not-a-number"', t)
        p, cmd, _ = run_pod(0, tmp + "/bad", mutate=bad)
        msg = (p.stderr + p.stdout).strip()
        ok(p.returncode == 2 and "node_id" in msg and len(msg.splitlines()) == 1,
           "a config with node_id = \"not-a-number\" is refused with exit 2 and one line naming node_id",
           f"exit {p.returncode}: {msg}")


if __name__ == "__main__":
    if sys.argv[1] == "structure":
        structure(sys.argv[2])
    elif sys.argv[1] == "hot-log-claim":
        hot_log_claim(sys.argv[2])
    elif sys.argv[1] == "check-config":
        check_config(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
    print(f"{passes} assertions passed, {failures} failed")
    sys.exit(1 if failures else 0)
