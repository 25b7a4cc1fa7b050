"""Cluster peering: tokens, the TLS identity, the peer stream, and the leader's reconciler."""
