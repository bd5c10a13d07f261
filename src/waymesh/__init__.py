"""waymesh: a service mesh whose control plane is Python and whose L7 data plane is real Envoy."""

__version__ = "0.1.0"
