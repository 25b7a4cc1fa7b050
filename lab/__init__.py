"""The consistency lab, shipped with peerplane: real clusters of `peerplane agent` processes, fault
injection (SIGKILL/SIGSTOP, network namespaces), a client workload that records every operation,
a linearizability checker, and the report and timeline of `peerplane lab <scenario>`.

It sits beside cluster/ and api/ and drives them only through the `peerplane` command and HTTP
(agents run as `python -m peerplane_cli agent`). The test suite uses it too (tests import lab,
never the reverse).
"""
