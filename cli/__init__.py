"""The `peerplane` command: argument parsing, the client commands, and the agent's composition
root (cli/agent.py builds every part and wires them)."""
