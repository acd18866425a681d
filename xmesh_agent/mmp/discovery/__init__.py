"""How a node finds peers: mDNS and the same-host registry."""
