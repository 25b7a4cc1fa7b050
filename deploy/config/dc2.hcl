# Site file of the compose cluster dc2 (mounted as /etc/peerplane/site.hcl).
datacenter = "dc2"
retry_join = ["dc2-server-1", "dc2-server-2", "dc2-server-3"]
