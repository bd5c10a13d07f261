"""Install assets for Kubernetes: CRDs, RBAC, the control-plane Deployment, webhook, Helm chart."""
