"""RoSE's algorithm and the pool's logic, free of gRPC and of any storage engine."""
