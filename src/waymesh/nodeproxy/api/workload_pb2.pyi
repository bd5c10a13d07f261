from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TunnelProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[TunnelProtocol]
    HBONE: _ClassVar[TunnelProtocol]
    SIDECAR_MTLS: _ClassVar[TunnelProtocol]

class PeerAuthMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSET: _ClassVar[PeerAuthMode]
    PERMISSIVE: _ClassVar[PeerAuthMode]
    STRICT: _ClassVar[PeerAuthMode]
    DISABLE: _ClassVar[PeerAuthMode]
NONE: TunnelProtocol
HBONE: TunnelProtocol
SIDECAR_MTLS: TunnelProtocol
MODE_UNSET: PeerAuthMode
PERMISSIVE: PeerAuthMode
STRICT: PeerAuthMode
DISABLE: PeerAuthMode

class Waypoint(_message.Message):
    __slots__ = ("gateway", "addresses", "hbone_port", "identity")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    HBONE_PORT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    hbone_port: int
    identity: str
    def __init__(self, gateway: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., hbone_port: _Optional[int] = ..., identity: _Optional[str] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("uid", "name", "namespace", "addresses", "node", "service_account", "trust_domain", "tunnel_protocol", "waypoint", "waypoint_identities", "peer_auth_mode", "port_peer_auth_modes", "authorization_policies", "canonical_name", "canonical_revision", "workload_name", "services")
    class PortPeerAuthModesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: PeerAuthMode
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[PeerAuthMode, str]] = ...) -> None: ...
    UID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    WAYPOINT_FIELD_NUMBER: _ClassVar[int]
    WAYPOINT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    PEER_AUTH_MODE_FIELD_NUMBER: _ClassVar[int]
    PORT_PEER_AUTH_MODES_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_POLICIES_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_NAME_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_REVISION_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    uid: str
    name: str
    namespace: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    node: str
    service_account: str
    trust_domain: str
    tunnel_protocol: TunnelProtocol
    waypoint: Waypoint
    waypoint_identities: _containers.RepeatedScalarFieldContainer[str]
    peer_auth_mode: PeerAuthMode
    port_peer_auth_modes: _containers.ScalarMap[int, PeerAuthMode]
    authorization_policies: _containers.RepeatedScalarFieldContainer[str]
    canonical_name: str
    canonical_revision: str
    workload_name: str
    services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uid: _Optional[str] = ..., name: _Optional[str] = ..., namespace: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., node: _Optional[str] = ..., service_account: _Optional[str] = ..., trust_domain: _Optional[str] = ..., tunnel_protocol: _Optional[_Union[TunnelProtocol, str]] = ..., waypoint: _Optional[_Union[Waypoint, _Mapping]] = ..., waypoint_identities: _Optional[_Iterable[str]] = ..., peer_auth_mode: _Optional[_Union[PeerAuthMode, str]] = ..., port_peer_auth_modes: _Optional[_Mapping[int, PeerAuthMode]] = ..., authorization_policies: _Optional[_Iterable[str]] = ..., canonical_name: _Optional[str] = ..., canonical_revision: _Optional[str] = ..., workload_name: _Optional[str] = ..., services: _Optional[_Iterable[str]] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("service_port", "target_port", "app_protocol")
    SERVICE_PORT_FIELD_NUMBER: _ClassVar[int]
    TARGET_PORT_FIELD_NUMBER: _ClassVar[int]
    APP_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    service_port: int
    target_port: int
    app_protocol: str
    def __init__(self, service_port: _Optional[int] = ..., target_port: _Optional[int] = ..., app_protocol: _Optional[str] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("name", "namespace", "hostname", "addresses", "ports", "waypoint", "endpoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    WAYPOINT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    hostname: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    waypoint: Waypoint
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., hostname: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ..., waypoint: _Optional[_Union[Waypoint, _Mapping]] = ..., endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class Authorization(_message.Message):
    __slots__ = ("name", "namespace", "action", "dry_run", "rules")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ALLOW: _ClassVar[Authorization.Action]
        DENY: _ClassVar[Authorization.Action]
        AUDIT: _ClassVar[Authorization.Action]
    ALLOW: Authorization.Action
    DENY: Authorization.Action
    AUDIT: Authorization.Action
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    action: Authorization.Action
    dry_run: bool
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., action: _Optional[_Union[Authorization.Action, str]] = ..., dry_run: _Optional[bool] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ...) -> None: ...

class StringMatch(_message.Message):
    __slots__ = ("exact", "prefix", "suffix", "presence")
    EXACT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    exact: str
    prefix: str
    suffix: str
    presence: bool
    def __init__(self, exact: _Optional[str] = ..., prefix: _Optional[str] = ..., suffix: _Optional[str] = ..., presence: _Optional[bool] = ...) -> None: ...

class IpBlock(_message.Message):
    __slots__ = ("address", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: str
    length: int
    def __init__(self, address: _Optional[str] = ..., length: _Optional[int] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("principals", "not_principals", "namespaces", "not_namespaces", "source_ips", "not_source_ips", "destination_ips", "not_destination_ips", "destination_ports", "not_destination_ports", "match_all")
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    NOT_PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    NOT_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IPS_FIELD_NUMBER: _ClassVar[int]
    NOT_SOURCE_IPS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_IPS_FIELD_NUMBER: _ClassVar[int]
    NOT_DESTINATION_IPS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORTS_FIELD_NUMBER: _ClassVar[int]
    NOT_DESTINATION_PORTS_FIELD_NUMBER: _ClassVar[int]
    MATCH_ALL_FIELD_NUMBER: _ClassVar[int]
    principals: _containers.RepeatedCompositeFieldContainer[StringMatch]
    not_principals: _containers.RepeatedCompositeFieldContainer[StringMatch]
    namespaces: _containers.RepeatedCompositeFieldContainer[StringMatch]
    not_namespaces: _containers.RepeatedCompositeFieldContainer[StringMatch]
    source_ips: _containers.RepeatedCompositeFieldContainer[IpBlock]
    not_source_ips: _containers.RepeatedCompositeFieldContainer[IpBlock]
    destination_ips: _containers.RepeatedCompositeFieldContainer[IpBlock]
    not_destination_ips: _containers.RepeatedCompositeFieldContainer[IpBlock]
    destination_ports: _containers.RepeatedScalarFieldContainer[int]
    not_destination_ports: _containers.RepeatedScalarFieldContainer[int]
    match_all: bool
    def __init__(self, principals: _Optional[_Iterable[_Union[StringMatch, _Mapping]]] = ..., not_principals: _Optional[_Iterable[_Union[StringMatch, _Mapping]]] = ..., namespaces: _Optional[_Iterable[_Union[StringMatch, _Mapping]]] = ..., not_namespaces: _Optional[_Iterable[_Union[StringMatch, _Mapping]]] = ..., source_ips: _Optional[_Iterable[_Union[IpBlock, _Mapping]]] = ..., not_source_ips: _Optional[_Iterable[_Union[IpBlock, _Mapping]]] = ..., destination_ips: _Optional[_Iterable[_Union[IpBlock, _Mapping]]] = ..., not_destination_ips: _Optional[_Iterable[_Union[IpBlock, _Mapping]]] = ..., destination_ports: _Optional[_Iterable[int]] = ..., not_destination_ports: _Optional[_Iterable[int]] = ..., match_all: _Optional[bool] = ...) -> None: ...
