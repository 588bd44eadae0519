"""RoSE's algorithm and the pool's domain types, free of gRPC and of any storage engine."""
