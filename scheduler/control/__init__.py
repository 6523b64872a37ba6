"""The control loop: the edge that drives the pure core and carries out its decisions."""
