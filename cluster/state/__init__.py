"""The FSM's tables (one module each) and the peering transition table. See base.py."""
