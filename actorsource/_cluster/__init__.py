"""Running actors on a NATS cluster (partitions, leases, moves): to come."""
