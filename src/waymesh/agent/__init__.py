"""The agent (`waymesh proxy <kind>`): writes Envoy's bootstrap, supervises Envoy, readiness, drain."""

from waymesh.agent.options import PROXY_KINDS, AgentOptions, parse_labels

__all__ = ["PROXY_KINDS", "AgentOptions", "parse_labels"]
