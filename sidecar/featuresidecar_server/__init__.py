"""Feature Sidecar server: gRPC feature serving from Redis under a signed access policy."""

__version__ = "0.1.0"
