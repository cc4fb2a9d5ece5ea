# Minimal image of the sidecar; hardening and Kubernetes manifests come with issue 5/7.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY client ./client
COPY sidecar ./sidecar
RUN pip install --no-cache-dir '.[server]' \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin sidecar

USER 65532
EXPOSE 50051 9464
ENTRYPOINT ["feature-sidecar", "serve"]
CMD ["--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
