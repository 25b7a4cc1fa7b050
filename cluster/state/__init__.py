"""FSM tables: each module holds one table's records, its indexes and its commands (see
base.py for the Table protocol), plus the peering transition table (transitions.py)."""
