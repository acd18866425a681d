# xmesh-agent: one image for peers (`xmesh-agent run`) and the relay (`xmesh-agent relay`).
# Peer state (keys, CMB store, wake ledger, safety.db) lives in XMESH_HOME=/data: mount a volume there.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XMESH_HOME=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY xmesh_agent ./xmesh_agent
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY scenarios ./scenarios
RUN pip install . && useradd --create-home --uid 10001 xmesh && mkdir -p /data && chown xmesh /data

USER xmesh
VOLUME ["/data"]
# The relay's port; peers need no published port when they meet over the relay.
EXPOSE 8765
ENTRYPOINT ["xmesh-agent"]
CMD ["--help"]
