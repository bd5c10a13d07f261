"""Mesh-wide settings, in Istio's MeshConfig shape (users paste their istio `mesh` config).

Keys waymesh implements are typed and validated. Other Istio MeshConfig keys are accepted with
a warning (they are legitimate Istio settings waymesh ignores); a key that is not an Istio key
at all is a typo and an error.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from waymesh.config.errors import LineMap, Path, format_path, translate
from waymesh.config.loader import yaml_documents
from waymesh.config.types import ConfigError
from waymesh.model.api.base import ApiModel, Duration

# Istio MeshConfig keys (istio.mesh.v1alpha1.MeshConfig) that waymesh does not implement.
ISTIO_MESH_KEYS = frozenset(
    """
    proxyListenPort proxyInboundListenPort proxyHttpPort connectTimeout
    tcpKeepalive ingressClass ingressService ingressControllerMode ingressSelector enableTracing
    accessLogFormat enableEnvoyAccessLogService disableEnvoyListenerLog inboundTrafficPolicy
    configSources enableAutoMtls trustDomainAliases caCertificates defaultServiceExportTo
    defaultVirtualServiceExportTo defaultDestinationRuleExportTo localityLbSetting dnsRefreshRate
    h2UpgradePolicy inboundClusterStatName outboundClusterStatName certificates thriftConfig
    serviceSettings enablePrometheusMerge verifyCertificateAtClient ca
    defaultProviders discoverySelectors defaultHttpRetryPolicy meshMTLS
    tlsDefaults serviceScopeConfigs
    """.split()
)
# Istio ProxyConfig keys (defaultConfig) that waymesh does not implement.
ISTIO_PROXY_KEYS = frozenset(
    """
    configPath binaryPath serviceCluster parentShutdownDuration discoveryRefreshDelay
    zipkinAddress statsdUdpAddress envoyMetricsServiceAddress proxyAdminPort availabilityZone
    controlPlaneAuthPolicy customConfigFile statNameLength concurrency proxyBootstrapTemplatePath
    interceptionMode tracing sds envoyAccessLogService envoyMetricsService proxyMetadata
    runtimeValues statusPort extraStatTags gatewayTopology terminationDrainDuration meshId
    readinessProbe proxyStatsMatcher holdApplicationUntilProxyStarts caCertificatesPem image
    privateKeyProvider proxyHeaders fileFlushInterval fileFlushMinSizeKb clusterName
    """.split()
)


class OutboundTrafficPolicy(ApiModel):
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


class ProxyConfig(ApiModel):
    # Where agents reach the control plane's xDS (15010: plaintext, file mode).
    discoveryAddress: str = "127.0.0.1:15010"
    # How long a proxy keeps serving existing connections while draining.
    drainDuration: Duration = "45s"


class ExtAuthzBody(ApiModel):
    maxRequestBytes: int | None = Field(default=None, ge=0)
    allowPartialMessage: bool | None = None
    packAsBytes: bool | None = None


class ExtAuthzHttp(ApiModel):
    """An ext_authz HTTP server (Istio's EnvoyExternalAuthorizationHttpProvider)."""

    service: str  # "[<namespace>/]<hostname>" of a Service or ServiceEntry
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None
    pathPrefix: str | None = None
    failOpen: bool | None = None
    clearRouteCache: bool | None = None
    statusOnError: str | None = None
    includeHeadersInCheck: list[str] = []
    includeRequestHeadersInCheck: list[str] = []
    includeAdditionalHeadersInCheck: dict[str, str] = {}
    includeRequestBodyInCheck: ExtAuthzBody | None = None
    headersToUpstreamOnAllow: list[str] = []
    headersToDownstreamOnDeny: list[str] = []
    headersToDownstreamOnAllow: list[str] = []


class ExtAuthzGrpc(ApiModel):
    """An ext_authz gRPC server (Istio's EnvoyExternalAuthorizationGrpcProvider)."""

    service: str
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None
    failOpen: bool | None = None
    clearRouteCache: bool | None = None
    statusOnError: str | None = None
    includeRequestBodyInCheck: ExtAuthzBody | None = None


# Provider kinds of other features (tracing, logging, metrics): accepted as written, used by
# whichever part of waymesh implements them.
_OTHER_PROVIDERS = ("zipkin", "lightstep", "datadog", "stackdriver", "opencensus", "skywalking",
                    "opentelemetry", "prometheus", "envoyFileAccessLog", "envoyHttpAls", "envoyTcpAls",
                    "envoyOtelAls", "sds")


class ExtensionProvider(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str = Field(min_length=1)
    envoyExtAuthzHttp: ExtAuthzHttp | None = None
    envoyExtAuthzGrpc: ExtAuthzGrpc | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ExtensionProvider:
        extra = set(self.model_extra or {})
        unknown = extra - set(_OTHER_PROVIDERS)
        if unknown:
            raise ValueError(f"unknown extension provider kind {sorted(unknown)[0]!r}")
        if (self.envoyExtAuthzHttp is not None) + (self.envoyExtAuthzGrpc is not None) + len(extra) != 1:
            raise ValueError(f"extension provider {self.name!r} must set exactly one provider kind")
        return self


class PathNormalization(ApiModel):
    # waymesh's default is DECODE_AND_MERGE_SLASHES, not Istio's BASE: see docs/security.md.
    normalization: Literal["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = "DEFAULT"

    @property
    def effective(self) -> str:
        return "DECODE_AND_MERGE_SLASHES" if self.normalization == "DEFAULT" else self.normalization


class MeshConfig(ApiModel):
    accessLogFile: str = ""
    accessLogEncoding: Literal["TEXT", "JSON"] = "TEXT"
    outboundTrafficPolicy: OutboundTrafficPolicy = Field(default_factory=OutboundTrafficPolicy)
    trustDomain: str = "cluster.local"
    rootNamespace: str = "istio-system"
    defaultConfig: ProxyConfig = Field(default_factory=ProxyConfig)
    extensionProviders: list[ExtensionProvider] = []
    pathNormalization: PathNormalization = Field(default_factory=PathNormalization)
    # How long a sidecar's inbound waits for a client's first bytes on a PERMISSIVE port (to
    # tell mesh mTLS from plaintext) before treating it as plaintext. Istio's default is 0s
    # (wait forever: server-first protocols hang); waymesh bounds it. "0s" means no bound.
    protocolDetectionTimeout: Duration = "5s"

    @model_validator(mode="after")
    def _unique_providers(self) -> MeshConfig:
        names = [p.name for p in self.extensionProviders]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"extensionProviders: duplicate name {sorted(dup)[0]!r}")
        return self


def _strip_ignored(
    raw: dict[str, Any], file: str, lines: LineMap, prefix: Path, errors: list[ConfigError]
) -> dict[str, Any]:
    """Remove Istio keys waymesh ignores (warning each); leave typos for the model to reject."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = (*prefix, key)
        ignored = ISTIO_PROXY_KEYS if prefix == ("defaultConfig",) else ISTIO_MESH_KEYS if not prefix else frozenset()
        if key in ignored:
            errors.append(
                ConfigError(file, lines.line_for(path), f"{key!r} is not supported by waymesh, ignored",
                            field_path=format_path(path), severity="warning")
            )
        elif key == "defaultConfig" and not prefix and isinstance(value, dict):
            out[key] = _strip_ignored(value, file, lines, path, errors)
        else:
            out[key] = value
    return out


def parse_mesh_config(text: str, file: str) -> tuple[MeshConfig, list[ConfigError]]:
    errors: list[ConfigError] = []
    docs = [d for d in yaml_documents(text, file, errors) if d.data is not None]
    if errors:
        return MeshConfig(), errors
    if not docs:
        return MeshConfig(), []
    if len(docs) > 1:
        errors.append(ConfigError(file, docs[1].line, "mesh config must be a single YAML document"))
        return MeshConfig(), errors
    raw, lines, prefix = docs[0].data, docs[0].lines, ()
    # Also accept the istio ConfigMap itself (data.mesh holds the MeshConfig as a string).
    if isinstance(raw, dict) and raw.get("kind") == "ConfigMap":
        mesh_text = (raw.get("data") or {}).get("mesh", "")
        offset = (lines.line_for(("data", "mesh")) or 1)
        sub, sub_errors = parse_mesh_config(mesh_text, file)
        # Lines inside the block scalar are relative to it: shift them to the file.
        shifted = [ConfigError(e.file, e.line + offset if e.line else offset, e.reason, e.key,
                               f"data.mesh: {e.field_path}" if e.field_path else "data.mesh", e.severity)
                   for e in sub_errors]
        return sub, shifted
    if not isinstance(raw, dict):
        return MeshConfig(), [ConfigError(file, docs[0].line, "mesh config must be a mapping")]
    body = _strip_ignored(raw, file, lines, prefix, errors)
    try:
        mesh = MeshConfig.model_validate(body)
    except ValidationError as e:
        for path, reason in translate(e, body, MeshConfig):
            errors.append(ConfigError(file, lines.line_for(path), reason, field_path=format_path(path)))
        return MeshConfig(), errors
    return mesh, errors


def load_mesh_config(path: str | FsPath | None) -> tuple[MeshConfig, list[ConfigError]]:
    """The mesh config from `path`, or the defaults when no path is given."""
    if path is None:
        return MeshConfig(), []
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return MeshConfig(), [ConfigError(str(path), None, f"cannot read mesh config: {reason}")]
    return parse_mesh_config(text, str(path))
