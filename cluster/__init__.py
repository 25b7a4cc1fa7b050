"""peerplane cluster side: FSM, Raft node, leader routines, agent and CLI."""
