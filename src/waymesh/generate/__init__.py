"""IR (`waymesh.model.ir`) -> Envoy xDS resources.

- `resources.ResourceBuilder.build(config)`: every LDS/RDS/CDS/EDS/SDS resource of a
  ProxyConfig, memoized per IR object, with content-derived versions;
- `type_urls`: the xDS type URLs;
- `envoy_listeners`, `envoy_routes`, `envoy_clusters`, `envoy_secrets`: one builder per
  resource type;
- `validate.static_bootstrap` / `validate.validate_with_envoy`: the same resources as a static
  bootstrap, checked by `envoy --mode validate`.
"""
