"""The `peerplane` command: argument parsing, the client commands, and the agent's composition
root (peerplane_cli/agent.py builds every part and wires them)."""
