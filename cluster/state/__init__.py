"""FSM tables: each module holds one table's records, its indexes and its commands."""
