"""Small protobuf builders shared by the listener, route, cluster and secret generators."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from waymesh.model import ir

from .type_urls import type_url


class GenerateError(ValueError):
    """The IR asks for something Envoy cannot express (a translator bug, not a user error)."""


def typed(message: Message) -> any_pb2.Any:
    # Deterministic bytes, so equal configs give equal versions (maps inside Struct/metadata).
    return any_pb2.Any(type_url=type_url(message), value=message.SerializeToString(deterministic=True))


def duration(seconds: float) -> duration_pb2.Duration:
    nanos = round(seconds * 1_000_000_000)
    return duration_pb2.Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def fractional_percent(percent: float) -> percent_pb2.FractionalPercent:
    # HUNDRED reads best in config dumps; MILLION keeps fractions like 0.5 %.
    if float(percent).is_integer():
        return percent_pb2.FractionalPercent(
            numerator=int(percent), denominator=percent_pb2.FractionalPercent.HUNDRED
        )
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )


def ads_config_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def agent_sds_source() -> config_source_pb2.ConfigSource:
    """The agent's SDS (workload certificate and roots), on its local socket, as in Istio."""
    return config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            set_node_on_first_message_only=True,
            grpc_services=[grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=ir.AGENT_SDS_CLUSTER))],
        ),
        resource_api_version=config_source_pb2.V3,
    )


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    source = agent_sds_source() if name in ir.AGENT_SECRETS else ads_config_source()
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def regex(pattern: str, ignore_case: bool = False) -> regex_pb2.RegexMatcher:
    # StringMatcher.ignore_case has no effect on safe_regex: RE2's inline flag does the job.
    return regex_pb2.RegexMatcher(regex=("(?i)" + pattern) if ignore_case else pattern)


def string_matcher(match: ir.StringMatch) -> string_pb2.StringMatcher:
    kind, value = match.kind, match.value
    if kind is ir.MatchKind.EXACT:
        return string_pb2.StringMatcher(exact=value, ignore_case=match.ignore_case)
    if kind in (ir.MatchKind.PREFIX, ir.MatchKind.PATH_SEPARATED_PREFIX):
        # Path-separated prefix only means something for paths; on headers it is a prefix.
        return string_pb2.StringMatcher(prefix=value, ignore_case=match.ignore_case)
    if kind is ir.MatchKind.SUFFIX:
        return string_pb2.StringMatcher(suffix=value, ignore_case=match.ignore_case)
    if kind is ir.MatchKind.REGEX:
        return string_pb2.StringMatcher(safe_regex=regex(value, match.ignore_case))
    raise GenerateError(f"unknown match kind {kind!r}")


def exact(value: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=value)


def metadata(namespace: str, fields: dict[str, str]) -> base_pb2.Metadata:
    md = base_pb2.Metadata()
    if fields:
        st = struct_pb2.Struct()
        st.update(fields)
        md.filter_metadata[namespace].CopyFrom(st)
    return md


_HOST_HEADERS = ("host", ":authority")


def split_host(mutation: ir.HeaderMutation) -> tuple[str | None, ir.HeaderMutation]:
    """Take a request `set` of Host out of a mutation: Envoy only changes it by host rewrite."""
    host = None
    rest = []
    for k, v in mutation.set:
        if k.lower() in _HOST_HEADERS:
            host = v
        else:
            rest.append((k, v))
    if host is None:
        return None, mutation
    return host, ir.HeaderMutation(set=tuple(rest), add=mutation.add, remove=mutation.remove)


def header_options(mutation: ir.HeaderMutation) -> list[base_pb2.HeaderValueOption]:
    """`set` overwrites (or adds), `add` appends to any existing value."""
    for name in [k for k, _ in mutation.set] + [k for k, _ in mutation.add] + list(mutation.remove):
        if name.startswith(":") or name.lower() == "host":
            # Envoy rejects the whole route table for this; the translator must not emit it.
            raise GenerateError(f"header {name!r} cannot be modified (set Host with a host rewrite)")
    opts = [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for k, v in mutation.set
    ]
    opts += [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v),
            append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
        )
        for k, v in mutation.add
    ]
    return opts


def san_matchers(names: tuple[str, ...]) -> list[common_pb2.SubjectAltNameMatcher]:
    """Exact SAN matchers; the SAN type is guessed from the value's shape."""
    return [common_pb2.SubjectAltNameMatcher(san_type=_san_type(n), matcher=exact(n)) for n in names]


def _san_type(name: str) -> int:
    san = common_pb2.SubjectAltNameMatcher
    if "://" in name:  # spiffe://..., https://...
        return san.URI
    try:
        ipaddress.ip_address(name)
        return san.IP_ADDRESS
    except ValueError:
        pass
    if "@" in name:
        return san.EMAIL
    return san.DNS


def add_validation(common: tls_pb2.CommonTlsContext, ca_secret: str, sans: tuple[str, ...]) -> None:
    """Verify the peer's certificate against an SDS CA bundle (and its SANs, if any are given)."""
    if sans:
        # The combined context is how SAN checks join a CA that comes over SDS.
        combined = common.combined_validation_context
        combined.default_validation_context.match_typed_subject_alt_names.extend(san_matchers(sans))
        combined.validation_context_sds_secret_config.CopyFrom(sds_secret(ca_secret))
    else:
        common.validation_context_sds_secret_config.CopyFrom(sds_secret(ca_secret))


_TLS_VERSIONS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSv1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSv1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSv1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSv1_3": common_pb2.TlsParameters.TLSv1_3,
}


def tls_params(
    min_version: str | None, max_version: str | None, ciphers: tuple[str, ...]
) -> common_pb2.TlsParameters | None:
    if not (min_version or max_version or ciphers):
        return None
    params = common_pb2.TlsParameters(cipher_suites=ciphers)
    try:
        if min_version:
            params.tls_minimum_protocol_version = _TLS_VERSIONS[min_version]
        if max_version:
            params.tls_maximum_protocol_version = _TLS_VERSIONS[max_version]
    except KeyError as e:
        raise GenerateError(f"unknown TLS version {e.args[0]!r}; use one of {sorted(_TLS_VERSIONS)}") from None
    return params
