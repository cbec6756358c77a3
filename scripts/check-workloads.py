#!/usr/bin/env python3
"""Checks the workloads of rendered Kustomize builds (scripts/check-deploy.sh runs it).

  scripts/check-workloads.py BUILD=RENDERED.yaml [...]   # BUILD: base, local or aks

For every build:
  1. Scaling: a Deployment that a HorizontalPodAutoscaler scales sets no `replicas` (every
     `kubectl apply` would reset the HPA's count to it: a sale scaled to 20 back to 3 at
     once); the HPA names its target and sets `minReplicas` itself (it carries the floor).
  2. Secrets: each pod sees exactly its workload's set in SECRETS (as environment variables
     from Secrets, Secret volumes, Key Vault CSI volumes), every key file its configuration
     names is in a secret volume it mounts, and on AKS each workload reads Key Vault with its
     own identity (service account, federated client id, SecretProviderClass of its own).
     The base defines no Secrets (the overlays do): there only the Secret names are checked.
  3. Probes: every stockgate Deployment's liveness probe is `GET /healthz` on its admin
     listener (gateway `server.admin_listen`, settlement `settlement.admin_listen_addr`), never
     on the public one, whose threads a sale's traffic shares: a slow answer there would
     restart pods under load. Settlement's readiness probe is `GET /readyz` on its admin
     listener too (its API port serves only the API). The gateway's readiness stays on the
     public listener by design: it says whether this pod serves buyers, and failing it only
     takes the pod out of the Service (deploy/k8s/base/gateway.yaml).
  4. Client addresses: a LoadBalancer or NodePort Service in front of the gateway sets
     `externalTrafficPolicy: Local` (with Cluster, kube-proxy replaces the buyer's address with
     a node's, and every per-IP rate limit sees a handful of clients); the gateway's
     `client_ip.trusted_proxies` (file or STOCKGATE_TRUSTED_PROXIES) are valid CIDRs with no
     host bits, and none trusts every address (then anyone could write their own
     X-Forwarded-For).
  5. Settlement's ingress: a NetworkPolicy selects the settlement pods for Ingress (so all
     else is denied), and every rule that admits its API port (`http`, 8081, or all ports)
     admits only gateway pods of the same namespace: no namespace selector, no ipBlock, no
     rule without `from`.
  6. HTTPS only from outside: a LoadBalancer or NodePort Service of the gateway exposes only
     its TLS listener (`server.tls.listen`): bearer tokens never cross the internet in clear.
Exits non-zero listing every failure.
"""

import ipaddress
import os
import sys
import tomllib

import yaml

# The secrets each workload is given, by Secret key or file name; a pod sees these and
# nothing else. What reads them (stockgate/src/cli.rs, gateway/src/config/mod.rs):
#   gateway     redis-url (store, cache, limits), reservation-key.pem (signs reservation
#               tokens), reservation-jwks.json (verifies them at the confirm: the signing key
#               and, during a rotation, the previous one; it must publish the signing key or
#               the gateway does not start), locally idp-jwks.json (buyers' JWTs; on AKS the
#               keys come from Entra ID by OpenID discovery, no Secret)
#   settlement  redis-url, database-url, reservation-jwks.json (verifies reservation tokens);
#               `stockgate reconcile` run in its pod needs the same two URLs
#   migrate     database-url
# To give a workload another secret: add it here, to the workload's Secret in
# overlays/local/kustomization.yaml and to its SecretProviderClass in
# overlays/aks/secret-provider.yaml (and KEY_FILES below when the config names the file).
# Service authentication: the gateway's gateway-assertion-key.pem signs the per-request
# assertions (settlement_auth.signing_key_file), settlement verifies them with
# gateway-assertion-jwks.json (settlement_auth.gateway_jwks_file); neither gets the other's.
SECRETS = {
    "stockgate-gateway": {
        "redis-url", "reservation-key.pem", "reservation-jwks.json", "gateway-assertion-key.pem",
    },
    "stockgate-settlement": {"redis-url", "database-url", "reservation-jwks.json", "gateway-assertion-jwks.json"},
    "stockgate-migrate": {"database-url"},
}
# Per build additions. Local only: the dev identity key (committed, worthless elsewhere), so
# `kubectl exec deploy/stockgate-gateway -- stockgate token` mints buyer tokens, and its JWKS.
# AKS only: the gateway's TLS certificate and key (one PEM), its public listener there; the
# collector's Application Insights connection string.
EXTRA = {
    "local": {"stockgate-gateway": {"dev-idp-key.pem", "idp-jwks.json"}},
    "aks": {
        "stockgate-gateway": {"tls.pem"},
        # The OpenTelemetry Collector's Application Insights connection string (otel-collector.yaml).
        "otel-collector": {"appinsights-connection-string"},
    },
}
# The configuration fields that name a key file the workload reads (unset fields are skipped).
KEY_FILES = {
    "stockgate-gateway": [
        "auth.jwks_file",
        "reservations.signing_key_file",
        "reservations.public_jwks_file",
        "auth.dev_signing_key",
        "settlement_auth.signing_key_file",
        "server.tls.cert_file",
        "server.tls.key_file",
    ],
    "stockgate-settlement": ["reservations.public_jwks_file", "settlement_auth.gateway_jwks_file"],
    "stockgate-migrate": [],
}
# Environment overrides of key-file fields (stockgate/src/config/mod.rs, ENV_OVERRIDES).
ENV_FILES = {
    "STOCKGATE_JWKS_FILE": "auth.jwks_file",
    "STOCKGATE_RESERVATION_KEY_FILE": "reservations.signing_key_file",
    "STOCKGATE_RESERVATION_JWKS_FILE": "reservations.public_jwks_file",
    "STOCKGATE_ASSERTION_KEY_FILE": "settlement_auth.signing_key_file",
    "STOCKGATE_GATEWAY_JWKS_FILE": "settlement_auth.gateway_jwks_file",
    "STOCKGATE_TLS_CERT_FILE": "server.tls.cert_file",
    "STOCKGATE_TLS_KEY_FILE": "server.tls.key_file",
}
# Key Vault object behind each file name (the SecretProviderClass aliases the object to the
# file); names not listed are the object's own name.
VAULT_OBJECT = {
    "reservation-key.pem": "reservation-key",
    "reservation-jwks.json": "reservation-jwks",
    "idp-jwks.json": "idp-jwks",
    "gateway-assertion-key.pem": "gateway-assertion-key",
    "gateway-assertion-jwks.json": "gateway-assertion-jwks",
    "tls.pem": "gateway-tls",
}
# Each workload's probes: (probe, path or None when not checked) and its admin and public
# listeners' config fields. A stockgate Deployment missing here is reported.
PROBES = {
    "stockgate-gateway": {
        "probes": [("livenessProbe", "/healthz")],
        "admin": "server.admin_listen",
        "public": "server.listen",
    },
    "stockgate-settlement": {
        "probes": [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")],
        "admin": "settlement.admin_listen_addr",
        "public": "settlement.listen_addr",
    },
}
CSI_DRIVER = "secrets-store.csi.k8s.io"
CLIENT_ID = "azure.workload.identity/client-id"


def load(path):
    with open(path) as f:
        return [o for o in yaml.safe_load_all(f) if o]


class Build:
    def __init__(self, name, objects):
        self.name = name
        self.objects = objects
        self.errors = []
        # Secret name -> its keys: rendered Secrets, and the ones a SecretProviderClass syncs.
        self.secrets = {}
        # SecretProviderClass name -> (client id, file/object names it mounts).
        self.providers = {}
        for o in self.objects:
            if o["kind"] == "Secret":
                keys = set(o.get("data") or {}) | set(o.get("stringData") or {})
                self.secrets[o["metadata"]["name"]] = keys
            elif o["kind"] == "SecretProviderClass":
                self.add_provider(o)

    def fail(self, message):
        self.errors.append(f"{self.name}: {message}")

    def find(self, kind, name):
        return next(
            (o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name), None
        )

    def add_provider(self, spc):
        name = spc["metadata"]["name"]
        params = spc["spec"].get("parameters", {})
        files = set()
        for text in yaml.safe_load(params.get("objects", "array: []"))["array"]:
            obj = yaml.safe_load(text)
            file = obj.get("objectAlias", obj["objectName"])
            if obj["objectName"] != VAULT_OBJECT.get(file, file):
                self.fail(
                    f"SecretProviderClass {name} mounts vault object {obj['objectName']} as "
                    f"{file}, which is vault object {VAULT_OBJECT.get(file, file)}"
                )
            files.add(file)
        self.providers[name] = (params.get("clientID"), files)
        for synced in spc["spec"].get("secretObjects", []):
            keys = set()
            for item in synced.get("data", []):
                if item["objectName"] not in files:
                    self.fail(f"SecretProviderClass {name} syncs {item['objectName']}, not one of its objects")
                keys.add(item["key"])
            self.secrets[synced["secretName"]] = keys

    def pods(self):
        """(workload, kind/name, pod spec) of every object with a pod template."""
        for o in self.objects:
            spec = o.get("spec", {})
            if o["kind"] == "CronJob":
                spec = spec["jobTemplate"]["spec"]
            template = spec.get("template") if isinstance(spec, dict) else None
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob") and template:
                workload = template["metadata"]["labels"].get("app.kubernetes.io/name", "?")
                yield workload, f"{o['kind']} {o['metadata']['name']}", template["spec"]


# --- 1. scaling ---------------------------------------------------------------------------


def check_scaling(build):
    for hpa in (o for o in build.objects if o["kind"] == "HorizontalPodAutoscaler"):
        name = hpa["metadata"]["name"]
        ref = hpa["spec"]["scaleTargetRef"]
        target = build.find(ref["kind"], ref["name"])
        if target is None:
            build.fail(f"HPA {name} scales {ref['kind']} {ref['name']}, which this build does not have")
            continue
        if "replicas" in target["spec"]:
            build.fail(
                f"{ref['kind']} {ref['name']} sets replicas: {target['spec']['replicas']} but HPA "
                f"{name} scales it; every `kubectl apply` would reset the running count to that. "
                "Remove it: the HPA's minReplicas is the floor"
            )
        if "minReplicas" not in hpa["spec"]:
            build.fail(f"HPA {name} sets no minReplicas: the floor must be explicit")


# --- 2. secrets ---------------------------------------------------------------------------


def volume_contents(build, volume, where):
    """The secret names a volume puts in the pod, or None when it holds no secret; a Secret
    this build does not define is an error (except in the base, which defines none)."""
    if "secret" in volume:
        secret = volume["secret"]
        if secret.get("items"):
            return {item["key"] for item in secret["items"]}
        return secret_keys(build, secret["secretName"], where)
    csi = volume.get("csi")
    if csi and csi.get("driver") == CSI_DRIVER:
        provider = csi.get("volumeAttributes", {}).get("secretProviderClass")
        if provider not in build.providers:
            build.fail(f"{where} mounts SecretProviderClass {provider}, which this build does not have")
            return set()
        return set(build.providers[provider][1])
    if "projected" in volume:
        names = set()
        for source in volume["projected"].get("sources", []):
            if "secret" in source:
                names |= volume_contents(build, {"secret": {"secretName": source["secret"]["name"],
                                                            "items": source["secret"].get("items")}}, where)
        return names
    return None


def secret_keys(build, secret, where):
    if secret in build.secrets:
        return set(build.secrets[secret])
    if build.name != "base":
        build.fail(f"{where} uses Secret {secret}, which this build does not define")
    return set()


def secret_names(pod):
    """Every Secret and SecretProviderClass name the pod refers to."""
    names = set()
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        csi = volume.get("csi") or {}
        if csi.get("driver") == CSI_DRIVER:
            names.add(csi.get("volumeAttributes", {}).get("secretProviderClass"))
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    return names


def pod_config(build, pod, container):
    """The stockgate.toml the container runs with (STOCKGATE_CONFIG, from its ConfigMap)."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    path = env.get("STOCKGATE_CONFIG")
    if not path:
        return None
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        configmap = volumes.get(mount["name"], {}).get("configMap")
        if not configmap:
            continue
        if mount["mountPath"] == path:
            key = mount.get("subPath", os.path.basename(path))
        elif os.path.dirname(path) == mount["mountPath"].rstrip("/"):
            key = os.path.basename(path)
        else:
            continue
        found = build.find("ConfigMap", configmap["name"])
        if found and key in found.get("data", {}):
            config = tomllib.loads(found["data"][key])
            for name, field in (("STOCKGATE_LISTEN", "listen"), ("STOCKGATE_ADMIN_LISTEN", "admin_listen")):
                if env.get(name):
                    config.setdefault("server", {})[field] = env[name]
            for name, dotted in ENV_FILES.items():
                if env.get(name):
                    section, key = dotted.split(".")
                    config.setdefault(section, {})[key] = env[name]
            if env.get("STOCKGATE_SETTLEMENT_ADMIN_LISTEN"):
                config.setdefault("settlement", {})["admin_listen_addr"] = env["STOCKGATE_SETTLEMENT_ADMIN_LISTEN"]
            return config
    return None


def field(config, dotted):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_secrets(build):
    owned = {}  # SecretProviderClass -> workload
    for workload, where, pod in build.pods():
        allowed = SECRETS.get(workload, set()) | EXTRA.get(build.name, {}).get(workload, set())
        if build.name == "base":
            # No Secret is defined here: each one a pod uses must at least be its workload's own.
            for name in secret_names(pod):
                if not name.startswith(f"{workload}-"):
                    build.fail(f"{where} uses Secret {name}, which is not {workload}'s own")
            continue
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        seen = {}
        contents = {}
        for volume in volumes.values():
            names = volume_contents(build, volume, where)
            if names is not None:
                contents[volume["name"]] = names
                for name in names:
                    seen.setdefault(name, f"volume {volume['name']}")
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret_keys(build, ref["name"], where)  # defined?
                    seen.setdefault(ref["key"], f"env {env['name']}")
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    for name in secret_keys(build, source["secretRef"]["name"], where):
                        seen.setdefault(name, f"envFrom {source['secretRef']['name']}")
        for name in sorted(set(seen) - allowed):
            build.fail(f"{where} ({workload}) gets secret {name} ({seen[name]}); it may have only {sorted(allowed)}")
        for name in sorted(allowed - set(seen)):
            build.fail(f"{where} ({workload}) lacks secret {name}")
        # The key files its configuration names are where the pod mounts its secrets.
        for container in pod.get("containers", []):
            config = pod_config(build, pod, container)
            for dotted in KEY_FILES.get(workload, []) if config else []:
                path = field(config, dotted)
                if path and not provides(container, contents, path):
                    build.fail(f"{where}: {dotted} = {path}, which no secret volume of the pod provides")
        # AKS: the workload reads Key Vault with an identity of its own.
        for volume in volumes.values():
            csi = volume.get("csi") or {}
            provider = csi.get("volumeAttributes", {}).get("secretProviderClass")
            if csi.get("driver") != CSI_DRIVER or provider not in build.providers:
                continue
            if owned.setdefault(provider, workload) != workload:
                build.fail(f"SecretProviderClass {provider} is mounted by {owned[provider]} and {workload}")
            account = build.find("ServiceAccount", pod.get("serviceAccountName", "default"))
            client_id = ((account or {}).get("metadata", {}).get("annotations") or {}).get(CLIENT_ID)
            if client_id != build.providers[provider][0]:
                build.fail(
                    f"{where} runs as service account {pod.get('serviceAccountName', 'default')} "
                    f"(client id {client_id}) but SecretProviderClass {provider} reads the vault "
                    f"as {build.providers[provider][0]}"
                )
    identities = {}
    for provider, workload in owned.items():
        client_id = build.providers[provider][0]
        if identities.setdefault(client_id, workload) != workload:
            build.fail(f"{identities[client_id]} and {workload} read Key Vault with the same identity {client_id}")


def provides(container, contents, path):
    for mount in container.get("volumeMounts", []):
        names = contents.get(mount["name"])
        if names is None:
            continue
        if mount["mountPath"] == path and mount.get("subPath") in names:
            return True
        if "subPath" not in mount and os.path.dirname(path) == mount["mountPath"].rstrip("/"):
            if os.path.basename(path) in names:
                return True
    return False


# --- 3. liveness --------------------------------------------------------------------------


def container_port(container, port):
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return declared["containerPort"]
    return None


def listen_port(config, dotted):
    value = field(config, dotted)
    return int(value.rsplit(":", 1)[1]) if value else None


def check_liveness(build):
    for workload, where, pod in build.pods():
        if not where.startswith("Deployment ") or not workload.startswith("stockgate-"):
            continue
        if workload not in PROBES:
            build.fail(f"{where}: workload {workload} has no entry in PROBES (scripts/check-workloads.py)")
            continue
        spec = PROBES[workload]
        for container in pod.get("containers", []):
            config = pod_config(build, pod, container)
            if config is None:
                build.fail(f"{where}: no stockgate.toml found for container {container['name']}")
                continue
            admin, public = listen_port(config, spec["admin"]), listen_port(config, spec["public"])
            for kind, path in spec["probes"]:
                probe = (container.get(kind) or {}).get("httpGet")
                if not probe:
                    build.fail(f"{where}: container {container['name']} has no HTTP {kind}")
                    continue
                port = container_port(container, probe.get("port"))
                if port == public:
                    build.fail(
                        f"{where}: the {kind} hits the public listener ({spec['public']}, port "
                        f"{public}), which a sale's traffic shares: a slow answer restarts the pod"
                    )
                elif port != admin:
                    build.fail(f"{where}: the {kind} hits port {probe.get('port')}, not {spec['admin']} ({admin})")
                if probe.get("path") != path:
                    build.fail(f"{where}: the {kind} asks {probe.get('path')}, not {path}")


# --- 4. client addresses ------------------------------------------------------------------

GATEWAY = "stockgate-gateway"


def check_client_addresses(build):
    for service in (o for o in build.objects if o["kind"] == "Service"):
        spec = service.get("spec", {})
        if spec.get("selector", {}).get("app.kubernetes.io/name") != GATEWAY:
            continue
        kind = spec.get("type", "ClusterIP")
        policy = spec.get("externalTrafficPolicy", "Cluster")
        if kind in ("LoadBalancer", "NodePort") and policy != "Local":
            build.fail(
                f"Service {service['metadata']['name']} is a {kind} with externalTrafficPolicy "
                f"{policy}: kube-proxy replaces the buyer's address with a node's, so per-IP "
                "limits see one client per node (set externalTrafficPolicy: Local)"
            )
    for workload, where, pod in build.pods():
        if workload != GATEWAY:
            continue
        for container in pod.get("containers", []):
            config = pod_config(build, pod, container)
            if config is None:
                continue  # reported by the liveness check
            trusted = field(config, "client_ip.trusted_proxies") or []
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if env.get("STOCKGATE_TRUSTED_PROXIES"):
                trusted = [t.strip() for t in env["STOCKGATE_TRUSTED_PROXIES"].split(",") if t.strip()]
            for entry in trusted:
                try:
                    network = ipaddress.ip_network(entry, strict=True)
                except ValueError as e:
                    build.fail(f"{where}: client_ip.trusted_proxies entry {entry!r} is not a CIDR ({e})")
                    continue
                if network.prefixlen == 0:
                    build.fail(
                        f"{where}: client_ip.trusted_proxies has {entry}, which trusts every address: "
                        "any client could pick its own X-Forwarded-For"
                    )


# --- 6. HTTPS only from outside ---------------------------------------------------------


def check_https_only(build):
    pods = [(where, pod) for workload, where, pod in build.pods() if workload == GATEWAY and where.startswith("Deployment ")]
    for service in (o for o in build.objects if o["kind"] == "Service"):
        spec = service.get("spec", {})
        if spec.get("selector", {}).get("app.kubernetes.io/name") != GATEWAY:
            continue
        if spec.get("type", "ClusterIP") not in ("LoadBalancer", "NodePort"):
            continue
        for where, pod in pods:
            for container in pod.get("containers", []):
                config = pod_config(build, pod, container)
                if config is None:
                    continue  # reported by the liveness check
                tls = listen_port(config, "server.tls.listen")
                for port in spec.get("ports", []):
                    target = container_port(container, port.get("targetPort", port.get("port")))
                    if tls is None or target != tls:
                        build.fail(
                            f"Service {service['metadata']['name']} ({spec.get('type')}) exposes port "
                            f"{port.get('port')} → {port.get('targetPort')}, which is not the gateway's TLS "
                            f"listener (server.tls.listen{'' if tls is None else f', port {tls}'}): "
                            "bearer tokens would cross the network in clear"
                        )


# --- 5. settlement's ingress ------------------------------------------------------------

SETTLEMENT = "stockgate-settlement"
GATEWAY_ONLY = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": GATEWAY}}}


def selects(policy, workload):
    labels = policy["spec"].get("podSelector", {}).get("matchLabels", {})
    return all(v == workload for k, v in labels.items() if k == "app.kubernetes.io/name") and not (
        set(labels) - {"app.kubernetes.io/name"}
    )


def check_settlement_ingress(build):
    deployment = build.find("Deployment", SETTLEMENT)
    if deployment is None:
        return
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    api = {"http", container_port(container, "http")}
    policies = [
        o for o in build.objects
        if o["kind"] == "NetworkPolicy" and selects(o, SETTLEMENT) and "Ingress" in o["spec"].get("policyTypes", [])
    ]
    if not policies:
        build.fail(f"no NetworkPolicy selects {SETTLEMENT} for Ingress: any pod in the cluster reaches its API")
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") in api for p in ports):
                continue
            sources = rule.get("from")
            if not sources or any(source != GATEWAY_ONLY for source in sources):
                build.fail(
                    f"NetworkPolicy {policy['metadata']['name']} admits settlement's API port from "
                    f"{sources or 'everyone'}: only gateway pods ({GATEWAY_ONLY}) may reach it"
                )


def check(name, objects):
    build = Build(name, objects)
    check_scaling(build)
    check_secrets(build)
    check_liveness(build)
    check_client_addresses(build)
    check_settlement_ingress(build)
    check_https_only(build)
    return build


# --- the checks' own test -----------------------------------------------------------------
# Each mistake below, made in a copy of a good build, must be reported: a check that cannot
# fail proves nothing.


def pod_of(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)["spec"]["template"]["spec"]


def provider_of(objects, name):
    return next(o for o in objects if o["kind"] == "SecretProviderClass" and o["metadata"]["name"] == name)


def add_vault_object(objects, provider, text):
    params = provider_of(objects, provider)["spec"]["parameters"]
    listed = yaml.safe_load(params["objects"])
    listed["array"].append(text)
    params["objects"] = yaml.safe_dump(listed)


def set_replicas(objects):
    next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "stockgate-gateway")["spec"]["replicas"] = 3


def gateway_env_from_settlement_secret(objects):
    gateway = pod_of(objects, "Deployment", "stockgate-gateway")["containers"][0]
    settlement = pod_of(objects, "Deployment", "stockgate-settlement")["containers"][0]
    secret = next(e for e in settlement["env"] if e["name"] == "STOCKGATE_DATABASE_URL")
    gateway["env"].append(secret)


def settlement_mounts_gateway_secret(objects):
    gateway_keys = next(v for v in pod_of(objects, "Deployment", "stockgate-gateway")["volumes"] if v["name"] == "keys")
    volumes = pod_of(objects, "Deployment", "stockgate-settlement")["volumes"]
    volumes[:] = [gateway_keys if v["name"] == "keys" else v for v in volumes]


def settlement_gets_assertion_key(objects):
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("stockgate-settlement-secrets"))
    secret["data"]["gateway-assertion-key.pem"] = "eA=="


def gateway_without_assertion_key(objects):
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("stockgate-gateway-secrets"))
    secret["data"].pop("gateway-assertion-key.pem")


def assertion_jwks_elsewhere(objects):
    container = pod_of(objects, "Deployment", "stockgate-settlement")["containers"][0]
    env = next(e for e in container["env"] if e["name"] == "STOCKGATE_GATEWAY_JWKS_FILE")
    env["value"] = "/etc/gateway/gateway-assertion-jwks.json"


def gateway_without_reservation_jwks(objects):
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith("stockgate-gateway-secrets"))
    secret["data"].pop("reservation-jwks.json")


def liveness_on_public_port(objects):
    container = pod_of(objects, "Deployment", "stockgate-gateway")["containers"][0]
    container["livenessProbe"]["httpGet"]["port"] = "http"


def settlement_liveness_on_public_port(objects):
    container = pod_of(objects, "Deployment", "stockgate-settlement")["containers"][0]
    container["livenessProbe"]["httpGet"]["port"] = "http"


def settlement_readiness_on_public_port(objects):
    container = pod_of(objects, "Deployment", "stockgate-settlement")["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = 8081


def liveness_on_other_path(objects):
    container = pod_of(objects, "Deployment", "stockgate-gateway")["containers"][0]
    container["livenessProbe"]["httpGet"]["path"] = "/metrics"


def jwks_file_elsewhere(objects):
    configmap = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("stockgate-config"))
    text = configmap["data"]["stockgate.toml"]
    configmap["data"]["stockgate.toml"] = text.replace("/etc/stockgate/keys/idp-jwks.json", "/etc/idp/idp-jwks.json")


def hpa_without_floor(objects):
    next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")["spec"].pop("minReplicas")


def gateway_mounts_shared_secret(objects):
    keys = next(v for v in pod_of(objects, "Deployment", "stockgate-gateway")["volumes"] if v["name"] == "keys")
    keys["secret"]["secretName"] = "stockgate-keys"


def gateway_service_policy_cluster(objects):
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == GATEWAY)
    service["spec"].pop("externalTrafficPolicy", None)


def gateway_service_nodeport(objects):
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == GATEWAY)
    service["spec"]["type"] = "NodePort"


def gateway_service_cleartext_port(objects):
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == GATEWAY)
    service["spec"]["ports"].append({"name": "http", "port": 80, "targetPort": "http"})


def trust_everyone(objects):
    container = pod_of(objects, "Deployment", GATEWAY)["containers"][0]
    container.setdefault("env", []).append({"name": "STOCKGATE_TRUSTED_PROXIES", "value": "10.0.0.0/8, ::/0"})


def trust_host_bits(objects):
    configmap = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("stockgate-config"))
    configmap["data"]["stockgate.toml"] += '\n[client_ip]\ntrusted_proxies = ["10.1.2.3/8"]\n'


def settlement_policy(objects):
    return next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == SETTLEMENT)


def no_settlement_policy(objects):
    objects.remove(settlement_policy(objects))


def api_from_any_namespace(objects):
    settlement_policy(objects)["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})


def scraper_on_every_port(objects):
    settlement_policy(objects)["spec"]["ingress"][1].pop("ports")


def api_from_everyone(objects):
    settlement_policy(objects)["spec"]["ingress"].append({"ports": [{"protocol": "TCP", "port": 8081}]})


MISTAKES = {
    "base": [
        (no_settlement_policy, "no NetworkPolicy selects stockgate-settlement"),
        (api_from_any_namespace, "admits settlement's API port from"),
        (scraper_on_every_port, "admits settlement's API port from"),
        (api_from_everyone, "admits settlement's API port from everyone"),
        (set_replicas, "sets replicas: 3 but HPA"),
        (gateway_mounts_shared_secret, "uses Secret stockgate-keys, which is not stockgate-gateway's own"),
        (liveness_on_public_port, "livenessProbe hits the public listener (server.listen"),
        (settlement_liveness_on_public_port, "livenessProbe hits the public listener (settlement.listen_addr"),
        (settlement_readiness_on_public_port, "readinessProbe hits the public listener (settlement.listen_addr"),
        (gateway_service_nodeport, "is a NodePort with externalTrafficPolicy Cluster"),
        (trust_everyone, "has ::/0, which trusts every address"),
        (trust_host_bits, "entry '10.1.2.3/8' is not a CIDR"),
    ],
    "local": [
        (no_settlement_policy, "no NetworkPolicy selects stockgate-settlement"),
        (api_from_any_namespace, "admits settlement's API port from"),
        (scraper_on_every_port, "admits settlement's API port from"),
        (api_from_everyone, "admits settlement's API port from everyone"),
        (set_replicas, "sets replicas: 3 but HPA"),
        (hpa_without_floor, "sets no minReplicas"),
        (gateway_env_from_settlement_secret, "gets secret database-url (env STOCKGATE_DATABASE_URL)"),
        (settlement_mounts_gateway_secret, "gets secret reservation-key.pem"),
        (gateway_without_reservation_jwks, "lacks secret reservation-jwks.json"),
        (settlement_gets_assertion_key, "gets secret gateway-assertion-key.pem"),
        (gateway_without_assertion_key, "lacks secret gateway-assertion-key.pem"),
        (assertion_jwks_elsewhere, "settlement_auth.gateway_jwks_file = /etc/gateway/gateway-assertion-jwks.json"),
        (liveness_on_public_port, "hits the public listener"),
        (liveness_on_other_path, "asks /metrics, not /healthz"),
        (settlement_readiness_on_public_port, "readinessProbe hits the public listener (settlement.listen_addr"),
        (jwks_file_elsewhere, "auth.jwks_file = /etc/idp/idp-jwks.json, which no secret volume"),
    ],
    "aks": [
        (no_settlement_policy, "no NetworkPolicy selects stockgate-settlement"),
        (api_from_any_namespace, "admits settlement's API port from"),
        (scraper_on_every_port, "admits settlement's API port from"),
        (api_from_everyone, "admits settlement's API port from everyone"),
        (set_replicas, "sets replicas: 3 but HPA"),
        (lambda o: add_vault_object(o, "stockgate-gateway-keyvault", "objectName: database-url\nobjectType: secret"),
         "gets secret database-url (volume keys)"),
        (lambda o: add_vault_object(o, "stockgate-settlement-keyvault",
                                    "objectName: gateway-assertion-key\nobjectType: secret\nobjectAlias: gateway-assertion-key.pem"),
         "gets secret gateway-assertion-key.pem (volume keys)"),
        (lambda o: add_vault_object(o, "stockgate-settlement-keyvault",
                                    "objectName: database-url\nobjectType: secret\nobjectAlias: idp-jwks.json"),
         "mounts vault object database-url as idp-jwks.json"),
        (lambda o: provider_of(o, "stockgate-settlement-keyvault")["spec"]["parameters"].update(
            clientID="<gateway identity client id>"), "reads the vault as <gateway identity client id>"),
        (lambda o: pod_of(o, "Job", "stockgate-migrate").update(serviceAccountName="stockgate-gateway"),
         "runs as service account stockgate-gateway"),
        (lambda o: pod_of(o, "Job", "stockgate-migrate")["volumes"][-1]["csi"]["volumeAttributes"].update(
            secretProviderClass="stockgate-settlement-keyvault"), "is mounted by stockgate-settlement and stockgate-migrate"),
        (liveness_on_public_port, "hits the public listener"),
        (settlement_liveness_on_public_port, "livenessProbe hits the public listener (settlement.listen_addr"),
        (gateway_service_policy_cluster, "is a LoadBalancer with externalTrafficPolicy Cluster"),
        (gateway_service_cleartext_port, "exposes port 80 → http, which is not the gateway's TLS listener"),
        (trust_everyone, "has ::/0, which trusts every address"),
    ],
}


def self_test(builds):
    failures = []
    for name, path in builds:
        for mistake, expected in MISTAKES.get(name, []):
            objects = load(path)
            mistake(objects)
            errors = check(name, objects).errors
            if not any(expected in error for error in errors):
                failures.append(f"{name}: {getattr(mistake, '__name__', 'mistake')} not reported as {expected!r}; got {errors}")
        print(f"{name}: {len(MISTAKES.get(name, []))} planted mistakes each reported")
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        sys.exit(1)


def main(args):
    test = args[:1] == ["--self-test"]
    args = args[1:] if test else args
    if not args or any("=" not in a for a in args):
        sys.exit("usage: check-workloads.py [--self-test] BUILD=RENDERED.yaml [...]  (BUILD: base, local, aks)")
    builds = [tuple(arg.split("=", 1)) for arg in args]
    if test:
        self_test(builds)
        return
    errors = []
    for name, path in builds:
        build = check(name, load(path))
        if build.errors:
            errors += build.errors
        else:
            pods = sum(1 for _ in build.pods())
            print(
                f"{name}: HPA targets set no replicas; {pods} pod specs see only their secrets; "
                "liveness (and settlement's readiness) on the admin listeners; gateway Services keep client addresses; "
                "settlement's API admits gateway pods only; gateway Services reachable from outside serve HTTPS only"
            )
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
