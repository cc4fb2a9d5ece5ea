"""The Feature Sidecar client."""
