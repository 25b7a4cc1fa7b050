# Site file of the compose cluster dc1 (mounted as /etc/peerplane/site.hcl).
datacenter = "dc1"
retry_join = ["dc1-server-1", "dc1-server-2", "dc1-server-3"]
