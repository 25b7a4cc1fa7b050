# What every peerplane server of the compose and Kubernetes deployments shares. The image carries
# this file as /etc/peerplane/server.hcl (deploy/build.sh copies it in); each deployment adds its
# site file (/etc/peerplane/site.hcl: datacenter, retry_join) and, per server, PEERPLANE_NODE /
# PEERPLANE_ADVERTISE / PEERPLANE_ADVERTISE_WAN. The container command is always
# `peerplane agent --config-dir=/etc/peerplane`. Check a change with `peerplane validate`.
data_dir            = "/data"
bind_addr           = "0.0.0.0"
bootstrap_expect    = 3
cluster_secret_file = "/run/secrets/cluster_secret"

ports {
  http     = 8500
  server   = 8300
  grpc_tls = 8503
}
