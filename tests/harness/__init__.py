"""Test harness: real peerplane agent processes, plain HTTP, fault injection."""
