"""The agent (`waymesh proxy <kind>`): writes Envoy's bootstrap, supervises Envoy, readiness, drain."""

import os

# The agent forks Envoy while grpc (SDS, CA client) runs; grpc's fork handlers only warn then.
# Read when grpc initialises, so it is set here, before any agent module imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from waymesh.agent.options import PROXY_KINDS, AgentOptions, parse_labels  # noqa: E402

__all__ = ["PROXY_KINDS", "AgentOptions", "parse_labels"]
